//! The Merkle tree over the log and its signed checkpoints (docs/format.md §19, ADR 0027).
//!
//! **The tree** is RFC 6962's Merkle tree. Leaf `i` (0-based) is event `seq = i + 1`; its leaf
//! data is the event's 32-byte hash (format.md §4), so
//!
//! ```text
//! leaf(seq) = SHA-256(0x00 || hash(seq))
//! node      = SHA-256(0x01 || left || right)
//! ```
//!
//! and the root of a tree of `n` leaves is RFC 6962's `MTH(D[0:n])`. A tree of `n` leaves
//! commits to events `1..=n`; its size is the seq of its newest event. The log keeps the tree's
//! hashes in the "stored hash" order of Go's `sumdb/tlog` (Crosby and Wallach's post-order), so
//! appending leaf `n` writes about two hashes and any proof reads at most `2·log₂ n` of them;
//! the arithmetic and the proofs are `tlog_tiles`, Cloudflare's port of that package.
//!
//! **A checkpoint** is a C2SP `tlog-checkpoint` note (origin line, decimal size, base64 root),
//! the origin being `confstore/<store id hex>`, signed as a C2SP `signed-note` by the store's
//! Ed25519 signing key under the key name = origin. Any checkpoint verifier of that ecosystem
//! (Go's `golang.org/x/mod/sumdb/note`, tlog witnesses) reads it.
//!
//! Verification here is strict Ed25519 (`verify_strict`, ADR 0003) with full public keys
//! compared; proofs longer than any real one are refused before they are run.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::ids::{Hash32, StoreId};
use crate::keys::{SigningKey, VerifyingKey};

pub use tlog_tiles::{
    EMPTY_HASH, Error as TlogError, Hash as TreeHash, HashReader, prove_record as prove_inclusion,
    prove_tree as prove_consistency, split_stored_hash_index, stored_hash_count, stored_hash_index,
    stored_hashes_for_record_hash as stored_hashes_for_leaf, tree_hash as tree_root,
};

/// Longest proof accepted (limits.rs).
pub const PROOF_HASHES_MAX: usize = crate::limits::TLOG_PROOF_HASHES_MAX;

/// Signature algorithm byte of an Ed25519 signed-note key (c2sp.org/signed-note).
const ALG_ED25519: u8 = 0x01;

/// The leaf hash of the event whose hash is `event_hash`: `SHA-256(0x00 || event_hash)`.
pub fn leaf_hash(event_hash: &Hash32) -> TreeHash {
    tlog_tiles::record_hash(&event_hash.0)
}

/// The checkpoint origin of a store: `confstore/<store id hex>`.
pub fn origin(store_id: &StoreId) -> String {
    format!("confstore/{}", store_id.to_hex())
}

/// The signed-note key id of `key` under the key name `name`:
/// `SHA-256(name || "\n" || 0x01 || public key)[0..4]`, big-endian.
pub fn note_key_id(name: &str, key: &VerifyingKey) -> u32 {
    let mut encoded = Vec::with_capacity(33);
    encoded.push(ALG_ED25519);
    encoded.extend_from_slice(&key.to_bytes());
    signed_note::key_id(name, &encoded)
}

/// The signed-note verifier key text of `key` (`<name>+<key id hex>+<base64(0x01 || key)>`),
/// the form Go's `note.NewVerifier` and witnesses are configured with.
pub fn note_verifier_key(name: &str, key: &VerifyingKey) -> String {
    use base64::Engine as _;
    let mut encoded = Vec::with_capacity(33);
    encoded.push(ALG_ED25519);
    encoded.extend_from_slice(&key.to_bytes());
    format!("{name}+{:08x}+{}", note_key_id(name, key), base64::engine::general_purpose::STANDARD.encode(encoded))
}

/// The root of the tree whose leaves are the events with these hashes, in seq order, computed
/// directly from RFC 6962's definition (no stored hashes): for audits of a whole log and for
/// tests of the stored form.
pub fn root_of(event_hashes: &[Hash32]) -> [u8; 32] {
    fn mth(leaves: &[Hash32]) -> TreeHash {
        match leaves.len() {
            0 => EMPTY_HASH,
            1 => leaf_hash(&leaves[0]),
            n => {
                // The largest power of two smaller than n.
                let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
                tlog_tiles::node_hash(mth(&leaves[..k]), mth(&leaves[k..]))
            }
        }
    }
    mth(event_hashes).0
}

/// The root of a growing tree, one leaf at a time, in `O(log n)` memory: for checking a whole
/// log's stored tree against its events in one pass.
#[derive(Clone, Debug, Default)]
pub struct RootBuilder {
    /// Roots of the complete subtrees along the right edge, largest (leftmost) first, with
    /// their heights.
    frontier: Vec<(u32, TreeHash)>,
    size: u64,
}

impl RootBuilder {
    /// Adds the next event's leaf. Returns the hashes a stored tree writes for it, in stored
    /// order: the leaf hash, then the root of each subtree the leaf completes.
    pub fn push(&mut self, event_hash: &Hash32) -> Vec<[u8; 32]> {
        let (mut height, mut h) = (0u32, leaf_hash(event_hash));
        let mut stored = vec![h.0];
        while let Some(&(top, left)) = self.frontier.last() {
            if top != height {
                break;
            }
            self.frontier.pop();
            h = tlog_tiles::node_hash(left, h);
            stored.push(h.0);
            height += 1;
        }
        self.frontier.push((height, h));
        self.size += 1;
        stored
    }

    /// Leaves so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The root of the tree of the leaves so far.
    pub fn root(&self) -> [u8; 32] {
        let mut it = self.frontier.iter().rev();
        let Some(&(_, mut h)) = it.next() else { return EMPTY_HASH.0 };
        for &(_, left) in it {
            h = tlog_tiles::node_hash(left, h);
        }
        h.0
    }
}

/// A tree head: the tree of the first `size` events of the store named by `origin`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// `confstore/<store id hex>` ([`origin`]).
    pub origin: String,
    /// Number of leaves: the seq of the newest event it covers.
    pub size: u64,
    /// The tree's root hash.
    pub root: [u8; 32],
}

/// Why a checkpoint note was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// Not a well-formed signed note or checkpoint text.
    #[error("malformed checkpoint: {0}")]
    Malformed(String),
    /// No signature by a trusted key for this origin.
    #[error("the checkpoint has no valid signature by a trusted key of {origin}")]
    Unsigned {
        /// The origin the signature was looked for under.
        origin: String,
    },
    /// A signature by a trusted key's name and id that does not verify.
    #[error("a checkpoint signature by {name}+{id:08x} does not verify")]
    BadSignature {
        /// Key name of the signature line.
        name: String,
        /// Key id of the signature line.
        id: u32,
    },
    /// The checkpoint is of another log.
    #[error("the checkpoint is of {found}, not of {expected}")]
    WrongOrigin {
        /// The origin expected.
        expected: String,
        /// The origin the checkpoint names.
        found: String,
    },
}

impl Checkpoint {
    /// The checkpoint text (the note's body): `<origin>\n<size>\n<base64 root>\n`.
    pub fn text(&self) -> String {
        use base64::Engine as _;
        format!("{}\n{}\n{}\n", self.origin, self.size, base64::engine::general_purpose::STANDARD.encode(self.root))
    }

    /// The checkpoint as a signed note, signed by `key` under the key name = origin.
    pub fn sign(&self, key: &SigningKey) -> String {
        let text = self.text();
        let sig = key.sign(text.as_bytes());
        let id = note_key_id(&self.origin, &key.verifying_key());
        let mut blob = Vec::with_capacity(68);
        blob.extend_from_slice(&id.to_be_bytes());
        blob.extend_from_slice(&sig);
        use base64::Engine as _;
        format!("{text}\n\u{2014} {} {}\n", self.origin, base64::engine::general_purpose::STANDARD.encode(blob))
    }

    /// Parses a signed checkpoint note of the log named `origin` and checks that at least one
    /// of its signatures is by one of `keys` (strict Ed25519). Signatures by other keys (a
    /// witness's cosignature, say) are kept in the note but not judged here.
    ///
    /// # Errors
    ///
    /// [`CheckpointError`]: malformed note or text, another origin, no signature by a trusted
    /// key, or a signature under a trusted key's name and id that does not verify.
    pub fn open(note: &[u8], origin: &str, keys: &[VerifyingKey]) -> Result<Self, CheckpointError> {
        let parsed = signed_note::Note::from_bytes(note).map_err(|e| CheckpointError::Malformed(e.to_string()))?;
        let cp = Self::parse_text(parsed.text())?;
        if cp.origin != origin {
            return Err(CheckpointError::WrongOrigin { expected: origin.to_owned(), found: cp.origin });
        }
        let verifiers = signed_note::VerifierList::new(
            keys.iter().map(|k| Box::new(StrictVerifier::new(origin, *k)) as Box<dyn signed_note::Verifier>).collect(),
        );
        match parsed.verify(&verifiers) {
            Ok(_) => Ok(cp),
            Err(signed_note::NoteError::InvalidSignature { name, id }) => {
                Err(CheckpointError::BadSignature { name, id })
            }
            Err(signed_note::NoteError::UnverifiedNote) => Err(CheckpointError::Unsigned { origin: origin.to_owned() }),
            Err(e) => Err(CheckpointError::Malformed(e.to_string())),
        }
    }

    /// Parses checkpoint text (no signatures): exactly three lines, no extension lines (this
    /// log writes none, and a verifier should not trust what it does not understand).
    ///
    /// # Errors
    ///
    /// [`CheckpointError::Malformed`].
    pub fn parse_text(text: &[u8]) -> Result<Self, CheckpointError> {
        let cp = tlog_tiles::Checkpoint::from_bytes(text)
            .map_err(|e| CheckpointError::Malformed(format!("{e} (expected origin, size and root lines)")))?;
        if !cp.extension().is_empty() {
            return Err(CheckpointError::Malformed("unexpected extension lines".into()));
        }
        Ok(Self { origin: cp.origin().to_owned(), size: cp.size(), root: cp.hash().0 })
    }
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at size {} (root {})", self.origin, self.size, hex::encode(self.root))
    }
}

/// A signed-note verifier with strict Ed25519 (signed_note's own uses `verify`, which accepts
/// the malleable encodings ADR 0003 refuses).
struct StrictVerifier {
    name: String,
    id: u32,
    key: VerifyingKey,
}

impl StrictVerifier {
    fn new(name: &str, key: VerifyingKey) -> Self {
        Self { name: name.to_owned(), id: note_key_id(name, &key), key }
    }
}

impl signed_note::Verifier for StrictVerifier {
    fn name(&self) -> &str {
        &self.name
    }

    fn key_id(&self) -> u32 {
        self.id
    }

    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        <&[u8; 64]>::try_from(sig).is_ok_and(|sig| self.key.verify_strict(msg, sig))
    }
}

/// Signature type byte of a C2SP `cosignature/v1` key (c2sp.org/tlog-cosignature).
const ALG_COSIGNATURE_V1: u8 = 0x04;

/// A witness's public key: its name and Ed25519 key, as in its verifier key text
/// `<name>+<key id, 8 hex>+<base64(0x04 || public key)>` (c2sp.org/tlog-cosignature).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WitnessKey {
    /// The witness's name (the key name of its signature lines).
    pub name: String,
    /// Its Ed25519 public key.
    pub key: VerifyingKey,
}

impl WitnessKey {
    /// Parses a verifier key text; the key id must be the one the name and key give, and the
    /// type byte 0x04.
    ///
    /// # Errors
    ///
    /// A message naming what is wrong.
    pub fn parse(vkey: &str) -> Result<Self, String> {
        use base64::Engine as _;
        // The name and the id hold no `+`; the base64 key may.
        let mut parts = vkey.trim().splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err("expected <name>+<key id hex>+<base64 key>".into());
        };
        if !signed_note::is_key_name_valid(name) {
            return Err(format!("{name:?} is not a valid key name"));
        }
        let id = u32::from_str_radix(id, 16).ok().filter(|_| id.len() == 8).ok_or("the key id is not 8 hex digits")?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(key).map_err(|e| format!("key: {e}"))?;
        let (Some(&ALG_COSIGNATURE_V1), Some(raw)) = (bytes.first(), bytes.get(1..)) else {
            return Err("not a cosignature/v1 key (type byte 0x04)".into());
        };
        let key = VerifyingKey::from_bytes(raw).map_err(|e| format!("key: {e}"))?;
        let parsed = Self { name: name.to_owned(), key };
        if parsed.key_id() != id {
            return Err(format!("the key id {id:08x} is not the one of this name and key ({:08x})", parsed.key_id()));
        }
        Ok(parsed)
    }

    /// `SHA-256(name || "\n" || 0x04 || public key)[0..4]`, big-endian.
    pub fn key_id(&self) -> u32 {
        let mut encoded = Vec::with_capacity(33);
        encoded.push(ALG_COSIGNATURE_V1);
        encoded.extend_from_slice(&self.key.to_bytes());
        signed_note::key_id(&self.name, &encoded)
    }

    /// The verifier key text.
    pub fn verifier_key(&self) -> String {
        use base64::Engine as _;
        let mut encoded = Vec::with_capacity(33);
        encoded.push(ALG_COSIGNATURE_V1);
        encoded.extend_from_slice(&self.key.to_bytes());
        format!("{}+{:08x}+{}", self.name, self.key_id(), base64::engine::general_purpose::STANDARD.encode(encoded))
    }
}

/// A witness a log submits its checkpoints to (`serve --witness URL=VKEY`): its base URL
/// (`/add-checkpoint` is appended) and its cosignature key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WitnessEndpoint {
    /// Base URL, `http://` or `https://`, without a trailing `/`.
    pub url: String,
    /// Its cosignature key.
    pub key: WitnessKey,
}

impl WitnessEndpoint {
    /// Parses `URL=VKEY` (the witness's verifier key text).
    ///
    /// # Errors
    ///
    /// What is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (url, vkey) = text.split_once('=').ok_or("expected URL=VERIFIER_KEY")?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("{url:?}: expected an http:// or https:// URL"));
        }
        let key = WitnessKey::parse(vkey).map_err(|e| format!("verifier key: {e}"))?;
        Ok(Self { url: url.trim_end_matches('/').to_owned(), key })
    }
}

/// What a `cosignature/v1` signs: `cosignature/v1\ntime <timestamp>\n` and the checkpoint
/// text.
pub fn cosignature_message(timestamp: u64, checkpoint_text: &[u8]) -> Vec<u8> {
    let mut msg = format!("cosignature/v1\ntime {timestamp}\n").into_bytes();
    msg.extend_from_slice(checkpoint_text);
    msg
}

/// A cosignature line by `key` under `name` at `timestamp` (unix seconds) on `cp`:
/// `— <name> base64(key id || timestamp (8 bytes, big-endian) || signature)\n`.
pub fn cosign(key: &SigningKey, name: &str, timestamp: u64, cp: &Checkpoint) -> String {
    use base64::Engine as _;
    let witness = WitnessKey { name: name.to_owned(), key: key.verifying_key() };
    let sig = key.sign(&cosignature_message(timestamp, cp.text().as_bytes()));
    let mut blob = Vec::with_capacity(76);
    blob.extend_from_slice(&witness.key_id().to_be_bytes());
    blob.extend_from_slice(&timestamp.to_be_bytes());
    blob.extend_from_slice(&sig);
    format!("\u{2014} {name} {}\n", base64::engine::general_purpose::STANDARD.encode(blob))
}

/// The witnesses among `witnesses` whose valid cosignature the note carries, with their
/// timestamps. A line by a listed witness's name and key id that does not verify is an
/// error; lines by others are ignored.
///
/// # Errors
///
/// [`CheckpointError::Malformed`], [`CheckpointError::BadSignature`].
pub fn cosigned_by(note: &[u8], witnesses: &[WitnessKey]) -> Result<Vec<(String, u64)>, CheckpointError> {
    let parsed = signed_note::Note::from_bytes(note).map_err(|e| CheckpointError::Malformed(e.to_string()))?;
    let verifiers = signed_note::VerifierList::new(
        witnesses.iter().map(|w| Box::new(CosignatureVerifier(w.clone())) as Box<dyn signed_note::Verifier>).collect(),
    );
    match parsed.verify(&verifiers) {
        Ok((verified, _)) => Ok(verified
            .iter()
            .filter_map(|s| {
                let ts = <[u8; 8]>::try_from(s.signature().get(..8)?).ok()?;
                Some((s.name().to_owned(), u64::from_be_bytes(ts)))
            })
            .collect()),
        Err(signed_note::NoteError::UnverifiedNote) => Ok(Vec::new()),
        Err(signed_note::NoteError::InvalidSignature { name, id }) => Err(CheckpointError::BadSignature { name, id }),
        Err(e) => Err(CheckpointError::Malformed(e.to_string())),
    }
}

/// Verifies `cosignature/v1` lines (strict Ed25519) of one witness.
struct CosignatureVerifier(WitnessKey);

impl signed_note::Verifier for CosignatureVerifier {
    fn name(&self) -> &str {
        &self.0.name
    }

    fn key_id(&self) -> u32 {
        self.0.key_id()
    }

    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        let (Some(ts), Some(sig)) = (sig.get(..8), sig.get(8..)) else { return false };
        let (Ok(ts), Ok(sig)) = (<[u8; 8]>::try_from(ts), <&[u8; 64]>::try_from(sig)) else { return false };
        self.0.key.verify_strict(&cosignature_message(u64::from_be_bytes(ts), msg), sig)
    }
}

/// Why a proof was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The sizes asked for make no proof (seq 0 or past the tree, an empty tree, a
    /// consistency proof to a smaller tree).
    #[error("no such proof: {0}")]
    Range(String),
    /// More hashes than any proof of this size has.
    #[error("the proof has {0} hashes, more than any proof can have")]
    TooLong(usize),
    /// The proof does not lead to the root.
    #[error("the proof does not verify against the root")]
    Invalid,
}

/// Checks that `proof` shows the event `seq` with hash `event_hash` in the tree of `size`
/// leaves whose root is `root` (RFC 6962 §2.1.1 audit path, leaf index `seq - 1`).
///
/// # Errors
///
/// [`ProofError`].
pub fn verify_inclusion(
    proof: &[[u8; 32]],
    size: u64,
    root: &[u8; 32],
    seq: u64,
    event_hash: &Hash32,
) -> Result<(), ProofError> {
    if seq == 0 || seq > size {
        return Err(ProofError::Range(format!("event {seq} is not in a tree of {size} events")));
    }
    if proof.len() > PROOF_HASHES_MAX {
        return Err(ProofError::TooLong(proof.len()));
    }
    let p: Vec<TreeHash> = proof.iter().map(|h| TreeHash(*h)).collect();
    tlog_tiles::check_record(&p, size, TreeHash(*root), seq - 1, leaf_hash(event_hash)).map_err(|_| ProofError::Invalid)
}

/// Checks that `proof` shows the tree of `old_size` leaves with root `old_root` to be a prefix
/// of the tree of `size` leaves with root `root` (RFC 6962 §2.1.2). Equal sizes need an empty
/// proof and equal roots; an empty old tree is a prefix of everything.
///
/// # Errors
///
/// [`ProofError`].
pub fn verify_consistency(
    proof: &[[u8; 32]],
    size: u64,
    root: &[u8; 32],
    old_size: u64,
    old_root: &[u8; 32],
) -> Result<(), ProofError> {
    if old_size > size {
        return Err(ProofError::Range(format!("a tree of {old_size} events is not a prefix of one of {size}")));
    }
    if proof.len() > PROOF_HASHES_MAX {
        return Err(ProofError::TooLong(proof.len()));
    }
    if old_size == 0 {
        return if proof.is_empty() && *old_root == EMPTY_HASH.0 { Ok(()) } else { Err(ProofError::Invalid) };
    }
    let p: Vec<TreeHash> = proof.iter().map(|h| TreeHash(*h)).collect();
    tlog_tiles::check_tree(&p, size, TreeHash(*root), old_size, TreeHash(*old_root)).map_err(|_| ProofError::Invalid)
}

/// SHA-256 of `bytes` (for the test vectors of format.md §19).
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // sizes of a few hundred leaves index vectors
mod tests {
    use super::*;

    struct Mem(Vec<TreeHash>);

    impl HashReader for Mem {
        fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<TreeHash>, tlog_tiles::Error> {
            indexes
                .iter()
                .map(|&i| {
                    usize::try_from(i)
                        .ok()
                        .and_then(|i| self.0.get(i).copied())
                        .ok_or(tlog_tiles::Error::IndexesNotInTree)
                })
                .collect()
        }
    }

    fn events(n: u64) -> Vec<Hash32> {
        (1..=n).map(|i| Hash32(sha256(&i.to_be_bytes()))).collect()
    }

    fn stored(evs: &[Hash32]) -> Mem {
        let mut m = Mem(Vec::new());
        for (i, h) in evs.iter().enumerate() {
            let new = tlog_tiles::stored_hashes_for_record_hash(i as u64, leaf_hash(h), &m).expect("stored hashes");
            m.0.extend(new);
        }
        m
    }

    #[test]
    fn stored_hashes_give_the_rfc6962_root_at_every_size() {
        let evs = events(70);
        let m = stored(&evs);
        for n in 0..=70u64 {
            let root = tlog_tiles::tree_hash(n, &m).expect("tree hash");
            assert_eq!(root.0, root_of(&evs[..n as usize]), "size {n}");
        }
    }

    #[test]
    fn every_inclusion_and_consistency_proof_verifies_and_a_flipped_bit_fails() {
        let evs = events(33);
        let m = stored(&evs);
        for size in 1..=33u64 {
            let root = root_of(&evs[..size as usize]);
            for seq in 1..=size {
                let p: Vec<[u8; 32]> =
                    tlog_tiles::prove_record(size, seq - 1, &m).expect("prove").iter().map(|h| h.0).collect();
                verify_inclusion(&p, size, &root, seq, &evs[seq as usize - 1]).expect("inclusion");
                assert_eq!(
                    verify_inclusion(&p, size, &root, seq, &evs[(seq as usize) % evs.len()]),
                    Err(ProofError::Invalid),
                    "another event, size {size} seq {seq}"
                );
                for i in 0..p.len() {
                    let mut bad = p.clone();
                    bad[i][0] ^= 1;
                    assert!(verify_inclusion(&bad, size, &root, seq, &evs[seq as usize - 1]).is_err());
                }
            }
            for old in 1..=size {
                let old_root = root_of(&evs[..old as usize]);
                let p: Vec<[u8; 32]> =
                    tlog_tiles::prove_tree(size, old, &m).expect("prove").iter().map(|h| h.0).collect();
                verify_consistency(&p, size, &root, old, &old_root).expect("consistency");
                if old < size {
                    assert!(verify_consistency(&p, size, &root, old, &root).is_err());
                }
            }
        }
    }

    #[test]
    fn the_root_builder_agrees_with_the_definition_at_every_size() {
        let evs = events(130);
        let mut b = RootBuilder::default();
        assert_eq!(b.root(), EMPTY_HASH.0);
        let m = stored(&evs);
        let mut all = Vec::new();
        for (n, h) in evs.iter().enumerate() {
            all.extend(b.push(h));
            assert_eq!(b.root(), root_of(&evs[..=n]), "size {}", n + 1);
        }
        // What it says a stored tree holds is what tlog's stored_hashes wrote.
        assert_eq!(all, m.0.iter().map(|h| h.0).collect::<Vec<_>>());
        assert_eq!(b.size(), 130);
    }

    #[test]
    fn a_signed_checkpoint_opens_with_its_key_only() {
        let key = SigningKey::from_seed(&[7; 32]);
        let other = SigningKey::from_seed(&[8; 32]);
        let store = StoreId([1; 16]);
        let cp = Checkpoint { origin: origin(&store), size: 3, root: root_of(&events(3)) };
        let note = cp.sign(&key);
        assert_eq!(Checkpoint::open(note.as_bytes(), &cp.origin, &[key.verifying_key()]), Ok(cp.clone()));
        assert_eq!(
            Checkpoint::open(note.as_bytes(), &cp.origin, &[other.verifying_key()]),
            Err(CheckpointError::Unsigned { origin: cp.origin.clone() })
        );
        let other_origin = origin(&StoreId([2; 16]));
        assert!(matches!(
            Checkpoint::open(note.as_bytes(), &other_origin, &[key.verifying_key()]),
            Err(CheckpointError::WrongOrigin { .. })
        ));
        // The size changed after signing.
        let forged = note.replacen("\n3\n", "\n4\n", 1);
        assert!(matches!(
            Checkpoint::open(forged.as_bytes(), &cp.origin, &[key.verifying_key()]),
            Err(CheckpointError::BadSignature { .. })
        ));
        for junk in ["", "\n", "confstore/x\n", "a\n1\nAA==\n\n\u{2014} a AAAA\n"] {
            assert!(Checkpoint::open(junk.as_bytes(), &cp.origin, &[key.verifying_key()]).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn cosignatures_verify_for_their_witness_only() {
        let log = SigningKey::from_seed(&[7; 32]);
        let w1 = SigningKey::from_seed(&[11; 32]);
        let w2 = SigningKey::from_seed(&[12; 32]);
        let k1 = WitnessKey { name: "w1.example/a".into(), key: w1.verifying_key() };
        let k2 = WitnessKey { name: "w2.example/b".into(), key: w2.verifying_key() };
        assert_eq!(WitnessKey::parse(&k1.verifier_key()), Ok(k1.clone()));
        let mut wrong_id = k1.verifier_key();
        wrong_id.replace_range(13..14, if &wrong_id[13..14] == "0" { "1" } else { "0" });
        assert!(WitnessKey::parse(&wrong_id).is_err(), "{wrong_id}");
        assert!(
            WitnessKey::parse(&note_verifier_key("w1", &w1.verifying_key())).is_err(),
            "type 0x01 is no witness key"
        );
        let endpoint = WitnessEndpoint::parse(&format!("http://w1.example:7380/={}", k1.verifier_key()));
        assert_eq!(endpoint, Ok(WitnessEndpoint { url: "http://w1.example:7380".into(), key: k1.clone() }));
        for bad in [k1.verifier_key(), format!("w1.example={}", k1.verifier_key()), "http://w1=x+1+2".into()] {
            assert!(WitnessEndpoint::parse(&bad).is_err(), "{bad}");
        }
        let cp = Checkpoint { origin: origin(&StoreId([1; 16])), size: 3, root: root_of(&events(3)) };
        let note = cp.sign(&log) + &cosign(&w1, &k1.name, 1_700_000_000, &cp);
        assert_eq!(Checkpoint::open(note.as_bytes(), &cp.origin, &[log.verifying_key()]), Ok(cp.clone()));
        assert_eq!(cosigned_by(note.as_bytes(), &[k1.clone(), k2.clone()]), Ok(vec![(k1.name.clone(), 1_700_000_000)]));
        assert_eq!(cosigned_by(note.as_bytes(), std::slice::from_ref(&k2)), Ok(vec![]));
        assert_eq!(cosigned_by(cp.sign(&log).as_bytes(), std::slice::from_ref(&k1)), Ok(vec![]));
        // Another checkpoint's cosignature under the same name and key id.
        let other = Checkpoint { size: 4, root: root_of(&events(4)), ..cp.clone() };
        let moved = cp.sign(&log) + &cosign(&w1, &k1.name, 1_700_000_000, &other);
        assert!(matches!(cosigned_by(moved.as_bytes(), &[k1]), Err(CheckpointError::BadSignature { .. })));
    }

    #[test]
    fn proofs_of_impossible_sizes_and_overlong_proofs_are_refused() {
        let root = [0; 32];
        let h = Hash32([0; 32]);
        assert!(matches!(verify_inclusion(&[], 0, &root, 1, &h), Err(ProofError::Range(_))));
        assert!(matches!(verify_inclusion(&[], 3, &root, 0, &h), Err(ProofError::Range(_))));
        assert!(matches!(verify_inclusion(&[[0; 32]; 200], 3, &root, 1, &h), Err(ProofError::TooLong(200))));
        assert!(matches!(verify_consistency(&[], 2, &root, 3, &root), Err(ProofError::Range(_))));
        assert_eq!(verify_consistency(&[], 5, &root, 0, &EMPTY_HASH.0), Ok(()));
    }
}
