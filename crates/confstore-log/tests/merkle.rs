//! The Merkle tree over the log (docs/format.md §19; docs/testing.md row 8): extended in batches
//! after appends (each event checked to link to the chain, up to an anchor), rebuilt for a
//! database from before it, checked against the events, refusing a tampered row, and every
//! proof served from it verifies while every mutated proof fails.
//!
//! `MERKLE_EVENTS` (default 2,000) events are appended in changesets of random size, then
//! `MERKLE_CASES` (default 1,000) random cases each take a tree size, an event and an older
//! size: the inclusion and consistency proofs from the database must verify against roots
//! computed from the events by RFC 6962's definition, and each proof mutated (a bit flipped,
//! a hash dropped, added, or swapped, the wrong seq or size claimed) must fail.

#![allow(clippy::cast_possible_truncation)] // test sizes of a few thousand events index vectors

mod common;

use common::{draft, register, set, temp_store};
use confstore_core::Hash32;
use confstore_core::tlog::{self, ProofError};
use confstore_log::{DbOptions, Store};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// xorshift64*: the cases are reproducible from the seed printed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn event_hashes(store: &Store) -> Vec<Hash32> {
    let reader = store.reader().expect("reader");
    let mut out = Vec::new();
    reader
        .for_each_event(1, |ev| {
            out.push(ev.hash);
            Ok(true)
        })
        .expect("read events");
    out
}

/// A store of about `n` events, appended in changesets of 1-7 changes.
fn store_of(n: u64, rng: &mut Rng) -> (common::TempStore, Store) {
    let (tmp, store) = temp_store();
    store.append(draft(vec![register("web")])).expect("register");
    let mut k = 0u64;
    while store.reader().expect("reader").last_seq().expect("seq") < n {
        let changes = (0..rng.range(1, 7))
            .map(|_| {
                k += 1;
                set("web", &format!("k{}", k % 50), serde_json::json!(k))
            })
            .collect();
        store.append(draft(changes)).expect("append");
    }
    (tmp, store)
}

#[test]
fn every_proof_from_the_store_verifies_and_every_mutated_proof_fails() {
    let seed = std::env::var("MERKLE_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed_cafe_u64);
    eprintln!("MERKLE_SEED={seed}");
    let mut rng = Rng(seed | 1);
    let (_tmp, store) = store_of(env("MERKLE_EVENTS", 2000), &mut rng);
    let hashes = event_hashes(&store);
    let n = hashes.len() as u64;
    let reader = store.reader().expect("reader");
    // Extended in two steps, the second anchored on the last event's hash.
    reader.extend_tree(Some((n / 2, hashes[n as usize / 2 - 1]))).expect("extend half");
    assert_eq!(reader.tree_size().expect("tree size"), n / 2);
    reader.extend_tree(Some((n, hashes[n as usize - 1]))).expect("extend");
    assert_eq!(reader.tree_size().expect("tree size"), n);
    // Roots at every size, from the definition (RootBuilder is checked against root_of in
    // confstore-core).
    let mut roots = vec![tlog::EMPTY_HASH.0];
    let mut b = tlog::RootBuilder::default();
    for h in &hashes {
        b.push(h);
        roots.push(b.root());
    }
    assert_eq!(reader.tree_root(n).expect("root"), tlog::root_of(&hashes));
    let cases = env("MERKLE_CASES", 1000);
    let (mut mutations, mut empty_proofs) = (0u64, 0u64);
    for case in 0..cases {
        let size = rng.range(1, n);
        let seq = rng.range(1, size);
        let old = rng.range(1, size);
        let root = &roots[size as usize];
        assert_eq!(&reader.tree_root(size).expect("root"), root, "case {case}: root at {size}");
        let inc = reader.inclusion_proof(seq, size).expect("inclusion proof");
        let leaf = &hashes[seq as usize - 1];
        tlog::verify_inclusion(&inc, size, root, seq, leaf)
            .unwrap_or_else(|e| panic!("case {case}: inclusion of {seq} in {size}: {e}"));
        let con = reader.consistency_proof(old, size).expect("consistency proof");
        let old_root = &roots[old as usize];
        tlog::verify_consistency(&con, size, root, old, old_root)
            .unwrap_or_else(|e| panic!("case {case}: consistency {old} -> {size}: {e}"));

        // Mutations of the inclusion proof.
        for bad in mutate(&inc, &mut rng) {
            mutations += 1;
            assert!(tlog::verify_inclusion(&bad, size, root, seq, leaf).is_err(), "case {case}: mutated inclusion");
        }
        if inc.is_empty() {
            empty_proofs += 1;
        }
        if size > 1 {
            let other = if seq == size { seq - 1 } else { seq + 1 };
            assert!(tlog::verify_inclusion(&inc, size, root, other, leaf).is_err(), "case {case}: wrong seq");
            assert!(
                tlog::verify_inclusion(&inc, size, root, seq, &hashes[other as usize - 1]).is_err(),
                "case {case}: another event"
            );
        }
        // Mutations of the consistency proof.
        for bad in mutate(&con, &mut rng) {
            mutations += 1;
            assert!(
                tlog::verify_consistency(&bad, size, root, old, old_root).is_err(),
                "case {case}: mutated consistency {old} -> {size}"
            );
        }
        if old < size {
            assert!(tlog::verify_consistency(&con, size, root, old, root).is_err(), "case {case}: wrong old root");
            assert!(
                tlog::verify_consistency(&con, size, old_root, old, old_root).is_err(),
                "case {case}: wrong new root"
            );
        }
    }
    eprintln!("{cases} cases over {n} events: {mutations} mutated proofs refused ({empty_proofs} empty proofs)");
    assert!(mutations > cases, "the mutations ran");
}

/// A proof changed in each way a tamperer or a bug could: every hash with a bit flipped, one
/// hash dropped, one added, two swapped.
fn mutate(proof: &[[u8; 32]], rng: &mut Rng) -> Vec<Vec<[u8; 32]>> {
    let mut out = Vec::new();
    for i in 0..proof.len() {
        let mut p = proof.to_vec();
        p[i][rng.range(0, 31) as usize] ^= 1 << rng.range(0, 7);
        out.push(p);
        let mut p = proof.to_vec();
        p.remove(i);
        out.push(p);
    }
    let mut p = proof.to_vec();
    p.push(tlog::sha256(b"extra"));
    out.push(p);
    if proof.len() >= 2 {
        let (i, j) = (rng.range(0, proof.len() as u64 - 1) as usize, rng.range(0, proof.len() as u64 - 1) as usize);
        if proof[i] != proof[j] {
            let mut p = proof.to_vec();
            p.swap(i, j);
            out.push(p);
        }
    }
    out
}

#[test]
fn a_store_from_before_the_tree_gets_it_built_and_it_matches_the_events() {
    let mut rng = Rng(7);
    let (tmp, store) = store_of(300, &mut rng);
    let reader = store.reader().expect("reader");
    assert_eq!(reader.tree_size().expect("size"), 0, "appends do not extend the tree");
    let n = reader.extend_tree(None).expect("extend");
    let root = reader.tree_root(300).expect("root");
    drop((reader, store));
    // As a database from before migration 0009 has it: no rows.
    let conn = rusqlite::Connection::open(&tmp.path).expect("open");
    conn.execute_batch("DELETE FROM merkle_hashes; DELETE FROM merkle_tree;").expect("delete");
    drop(conn);
    let reopened = Store::open(&tmp.path, Some(common::key(1)), common::clock(), &DbOptions::default()).expect("open");
    let reader = reopened.reader().expect("reader");
    assert_eq!(reader.tree_size().expect("size"), 0);
    assert_eq!(reader.extend_tree(None).expect("rebuild"), n);
    assert_eq!(reader.tree_root(300).expect("root"), root);
    let check = reader.check_tree(&mut |_| {}).expect("read").expect("the tree matches");
    assert_eq!((check.size, check.stored), (n, n));
    assert_eq!(check.root, tlog::root_of(&event_hashes(&reopened)));
    // Appends go on; the check covers the stored part and gives the whole log's root.
    reopened.append(draft(vec![set("web", "after", serde_json::json!(1))])).expect("append");
    let check = reader.check_tree(&mut |_| {}).expect("read").expect("the tree still matches");
    assert_eq!((check.size, check.stored), (n + 1, n));
    assert_eq!(check.root, tlog::root_of(&event_hashes(&reopened)));
    assert_eq!(reader.extend_tree(None).expect("extend"), n + 1);
}

#[test]
fn a_damaged_tree_row_is_found_by_the_check_and_its_proofs_fail() {
    let mut rng = Rng(11);
    let (tmp, store) = store_of(64, &mut rng);
    let hashes = event_hashes(&store);
    let n = hashes.len() as u64;
    store.reader().expect("reader").extend_tree(None).expect("extend");
    let root = tlog::root_of(&hashes);
    drop(store);
    let conn = rusqlite::Connection::open(&tmp.path).expect("open");
    // The root of the subtree of events 5 and 6.
    let idx = i64::try_from(tlog::stored_hash_index(1, 2)).expect("idx");
    assert_eq!(conn.execute("UPDATE merkle_hashes SET hash = zeroblob(32) WHERE idx = ?1", [idx]).expect("damage"), 1);
    drop(conn);
    let store = Store::open(&tmp.path, None, common::clock(), &DbOptions::default()).expect("open");
    let reader = store.reader().expect("reader");
    let (seq, err) = reader.check_tree(&mut |_| {}).expect("read").expect_err("the damage is found");
    assert_eq!(seq, 6, "{err}");
    assert!(err.contains("stored hash") && err.contains("event 6"), "{err}");
    // A proof for event 7 (whose path has that subtree) from the damaged rows does not verify.
    let proof = reader.inclusion_proof(7, n).expect("proof");
    assert_eq!(tlog::verify_inclusion(&proof, n, &root, 7, &hashes[6]), Err(ProofError::Invalid));
}

#[test]
fn an_event_row_edited_before_the_tree_reaches_it_is_refused_and_nothing_is_written() {
    let mut rng = Rng(13);
    let (tmp, store) = store_of(40, &mut rng);
    let hashes = event_hashes(&store);
    let n = hashes.len() as u64;
    let reader = store.reader().expect("reader");
    reader.extend_tree(Some((20, hashes[19]))).expect("extend to 20");
    // A body edited in place (its stored hash left alone; the table's triggers dropped, as a
    // tamperer with the file would): the recomputed hash no longer matches.
    let conn = rusqlite::Connection::open(&tmp.path).expect("open");
    let triggers: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'events'")
        .expect("triggers")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("names");
    for t in &triggers {
        conn.execute_batch(&format!("DROP TRIGGER {t}")).expect("drop trigger");
    }
    conn.execute("UPDATE events SET body = CAST(body || x'00' AS BLOB) WHERE seq = 25", []).expect("tamper");
    drop(conn);
    let err = reader.extend_tree(None).expect_err("refused");
    assert!(matches!(err, confstore_log::LogError::Tampered(_)), "{err}");
    assert!(err.to_string().contains("25"), "{err}");
    // The chunk with the bad event was rolled back: the tree is where it was.
    assert_eq!(reader.tree_size().expect("size"), 20);
    // An anchor that is not the event's hash is refused as well.
    let err = reader.extend_tree(Some((22, hashes[0]))).expect_err("wrong anchor");
    assert!(err.to_string().contains("verified"), "{err}");
    assert_eq!(reader.tree_size().expect("size"), 20);
    assert!(n > 25);
}

#[test]
fn proofs_outside_the_tree_are_refused_with_a_clear_error() {
    let (_tmp, store) = temp_store();
    let reader = store.reader().expect("reader");
    assert_eq!(reader.extend_tree(None).expect("extend"), 1);
    for (what, err) in [
        ("seq 0", reader.inclusion_proof(0, 1).expect_err("seq 0")),
        ("past the tree", reader.inclusion_proof(1, 2).expect_err("size 2")),
        ("old > new", reader.consistency_proof(2, 1).expect_err("2 -> 1")),
        ("root past the tree", reader.tree_root(5).map(|_| ()).expect_err("root 5")),
    ] {
        assert!(matches!(err, confstore_log::LogError::OutOfRange(_)), "{what}: {err}");
    }
    assert_eq!(reader.consistency_proof(0, 1).expect("empty"), Vec::<[u8; 32]>::new());
}
