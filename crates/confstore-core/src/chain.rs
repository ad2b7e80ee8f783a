//! The hash chain (docs/design.md §6):
//!
//! ```text
//! genesis   = SHA-256("confstore/genesis/v1\0" || store_id bytes)      prev_hash of seq 1
//! hash(seq) = SHA-256("confstore/event/v1\0" || u64_be(seq) || prev_hash || body)
//! ```

use sha2::{Digest, Sha256};

use crate::ids::{Hash32, StoreId};

/// Domain separator of the genesis hash.
pub const GENESIS_DOMAIN: &[u8] = b"confstore/genesis/v1\0";
/// Domain separator of every event hash.
pub const EVENT_DOMAIN: &[u8] = b"confstore/event/v1\0";

/// The `prev_hash` of event 1 in the store named `store_id`.
pub fn genesis_hash(store_id: &StoreId) -> Hash32 {
    let mut h = Sha256::new();
    h.update(GENESIS_DOMAIN);
    h.update(store_id.0);
    Hash32(h.finalize().into())
}

/// The hash of event `seq` whose predecessor hashed to `prev_hash` and whose body is `body`.
pub fn event_hash(seq: u64, prev_hash: &Hash32, body: &[u8]) -> Hash32 {
    let mut h = Sha256::new();
    h.update(EVENT_DOMAIN);
    h.update(seq.to_be_bytes());
    h.update(prev_hash.0);
    h.update(body);
    Hash32(h.finalize().into())
}
