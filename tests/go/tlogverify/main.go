// tlogverify checks confstore's signed checkpoints and Merkle-tree proofs with Go's own
// transparency-log packages (golang.org/x/mod/sumdb/note and sumdb/tlog, the reference
// implementation of the Go checksum database, installed from Debian's
// golang-golang-x-mod-dev), so the test of docs/format.md §19 does not rely on code written
// in this repository. tests/tests/tlog.rs runs it:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go run ./tests/go/tlogverify < cases.json
//
// Input: one JSON object {"vkey": "<signed-note verifier key>", "cases": [...]}; each case
// is {"kind": "checkpoint", "note": "..."} (opened with the key; its origin, size and base64
// root are printed), {"kind": "inclusion", "size", "root", "index", "leaf", "proof"} (leaf =
// the event hash, hex; root and proof base64) or {"kind": "consistency", "size", "root",
// "old_size", "old_root", "proof"}. Output: one line per case, "ok ..." or "fail: <error>".
package main

import (
	"bufio"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type tcase struct {
	Kind    string   `json:"kind"`
	Note    string   `json:"note"`
	Size    int64    `json:"size"`
	Root    string   `json:"root"`
	Index   int64    `json:"index"`
	Leaf    string   `json:"leaf"`
	OldSize int64    `json:"old_size"`
	OldRoot string   `json:"old_root"`
	Proof   []string `json:"proof"`
}

type input struct {
	Vkey  string  `json:"vkey"`
	Cases []tcase `json:"cases"`
}

func hash(b64 string) (tlog.Hash, error) {
	var h tlog.Hash
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return h, err
	}
	if len(b) != tlog.HashSize {
		return h, fmt.Errorf("hash of %d bytes", len(b))
	}
	copy(h[:], b)
	return h, nil
}

func hashes(list []string) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, 0, len(list))
	for _, s := range list {
		h, err := hash(s)
		if err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, nil
}

func run(v note.Verifier, c tcase) (string, error) {
	switch c.Kind {
	case "checkpoint":
		n, err := note.Open([]byte(c.Note), note.VerifierList(v))
		if err != nil {
			return "", err
		}
		lines := strings.Split(n.Text, "\n")
		if len(lines) != 4 || lines[3] != "" {
			return "", fmt.Errorf("checkpoint text has %d lines", len(lines))
		}
		return fmt.Sprintf("%s %s %s", lines[0], lines[1], lines[2]), nil
	case "inclusion":
		root, err := hash(c.Root)
		if err != nil {
			return "", err
		}
		proof, err := hashes(c.Proof)
		if err != nil {
			return "", err
		}
		leaf, err := hex.DecodeString(c.Leaf)
		if err != nil {
			return "", err
		}
		return "", tlog.CheckRecord(tlog.RecordProof(proof), c.Size, root, c.Index, tlog.RecordHash(leaf))
	case "consistency":
		root, err := hash(c.Root)
		if err != nil {
			return "", err
		}
		old, err := hash(c.OldRoot)
		if err != nil {
			return "", err
		}
		proof, err := hashes(c.Proof)
		if err != nil {
			return "", err
		}
		return "", tlog.CheckTree(tlog.TreeProof(proof), c.Size, root, c.OldSize, old)
	}
	return "", fmt.Errorf("unknown kind %q", c.Kind)
}

func main() {
	var in input
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		fmt.Fprintln(os.Stderr, "tlogverify: bad input:", err)
		os.Exit(2)
	}
	v, err := note.NewVerifier(in.Vkey)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tlogverify: bad verifier key:", err)
		os.Exit(2)
	}
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	for _, c := range in.Cases {
		out, err := run(v, c)
		if err != nil {
			fmt.Fprintf(w, "fail: %v\n", err)
		} else {
			fmt.Fprintf(w, "ok %s\n", out)
		}
	}
}
