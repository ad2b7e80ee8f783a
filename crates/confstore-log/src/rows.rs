//! Mapping between table rows and core types. Integers are stored as SQLite INTEGER (i64);
//! seqs, epochs and times never reach 2^63.

use confstore_core::keys::KeyRing;
use confstore_core::verify::ChainHead;
use confstore_core::{Hash32, KeyId, State, StoreId, StoredEvent, VerifyingKey};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::error::LogError;

/// u64 -> i64 for SQLite; values above i64::MAX cannot occur (seq, epoch, unix ms).
pub fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// i64 from SQLite -> u64; negative values cannot be written by confstore (CHECKs, i()).
pub fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The columns of `events`, in [`event_from_row`] order.
pub const EVENT_COLUMNS: &str = "seq, body, prev_hash, hash, key_id, sig";

fn blob<const N: usize>(row: &Row<'_>, idx: usize) -> rusqlite::Result<[u8; N]> {
    let v: Vec<u8> = row.get(idx)?;
    // A wrong length cannot pass the table's CHECK constraints; if the file was edited
    // around them, zeros make verification fail on this seq instead of aborting the read.
    Ok(<[u8; N]>::try_from(v.as_slice()).unwrap_or([0u8; N]))
}

/// Reads one `events` row selected with [`EVENT_COLUMNS`].
pub fn event_from_row(row: &Row<'_>) -> rusqlite::Result<StoredEvent> {
    Ok(StoredEvent {
        seq: u(row.get(0)?),
        body: row.get(1)?,
        prev_hash: Hash32(blob(row, 2)?),
        hash: Hash32(blob(row, 3)?),
        key_id: KeyId(blob(row, 4)?),
        sig: blob(row, 5)?,
    })
}

/// Inserts one event row.
pub fn insert_event(conn: &Connection, ev: &StoredEvent) -> Result<(), LogError> {
    conn.prepare_cached("INSERT INTO events (seq, body, prev_hash, hash, key_id, sig) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
        .and_then(|mut st| {
            st.execute(params![
                i(ev.seq),
                ev.body,
                ev.prev_hash.0.as_slice(),
                ev.hash.0.as_slice(),
                ev.key_id.0.as_slice(),
                ev.sig.as_slice()
            ])
        })
        .map_err(LogError::sqlite("inserting an event"))?;
    Ok(())
}

/// The store id and generation, or `None` in a database without a store.
pub fn store_row(conn: &Connection) -> Result<Option<(StoreId, u64)>, LogError> {
    conn.query_row("SELECT store_id, generation FROM store WHERE id = 1", [], |r| {
        Ok((StoreId(blob(r, 0)?), u(r.get(1)?)))
    })
    .optional()
    .map_err(LogError::sqlite("reading the store row"))
}

/// The last event row, if any.
pub fn last_event(conn: &Connection) -> Result<Option<StoredEvent>, LogError> {
    conn.prepare_cached(&format!("SELECT {EVENT_COLUMNS} FROM events ORDER BY seq DESC LIMIT 1"))
        .and_then(|mut st| st.query_row([], event_from_row).optional())
        .map_err(LogError::sqlite("reading the last event"))
}

/// The event at `seq`, if present.
pub fn event_at(conn: &Connection, seq: u64) -> Result<Option<StoredEvent>, LogError> {
    conn.prepare_cached(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE seq = ?1"))
        .and_then(|mut st| st.query_row([i(seq)], event_from_row).optional())
        .map_err(LogError::sqlite("reading an event"))
}

/// The checkpoint: the last event verified and folded into the write model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifiedHead {
    /// Its seq.
    pub seq: u64,
    /// Its hash.
    pub hash: Hash32,
    /// The epoch after it.
    pub epoch: u64,
    /// Its time (unix ms).
    pub time_ms: u64,
    /// The generation after it.
    pub generation: u64,
}

/// The verified head, if recorded.
pub fn verified_head(conn: &Connection) -> Result<Option<VerifiedHead>, LogError> {
    conn.query_row("SELECT seq, hash, epoch, time_ms, generation FROM verified_head WHERE id = 1", [], |r| {
        Ok(VerifiedHead {
            seq: u(r.get(0)?),
            hash: Hash32(blob(r, 1)?),
            epoch: u(r.get(2)?),
            time_ms: u(r.get(3)?),
            generation: u(r.get(4)?),
        })
    })
    .optional()
    .map_err(LogError::sqlite("reading the verified head"))
}

/// Records the verified head.
pub fn set_verified_head(conn: &Connection, head: &ChainHead) -> Result<(), LogError> {
    conn.prepare_cached(
        "INSERT INTO verified_head (id, seq, hash, epoch, time_ms, generation) VALUES (1, ?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, epoch = excluded.epoch,
                                        time_ms = excluded.time_ms, generation = excluded.generation",
    )
    .and_then(|mut st| {
        st.execute(params![i(head.seq), head.hash.0.as_slice(), i(head.epoch), i(head.time_ms), i(head.generation)])
    })
    .map_err(LogError::sqlite("recording the verified head"))?;
    Ok(())
}

/// The key chain up to and including the key that signs event `through_seq + 1`.
pub fn key_ring(conn: &Connection, through_seq: u64) -> Result<KeyRing, LogError> {
    let mut st = conn
        .prepare_cached("SELECT public_key, from_seq FROM signing_keys WHERE from_seq <= ?1 ORDER BY from_seq")
        .map_err(LogError::sqlite("reading signing keys"))?;
    let rows = st
        .query_map([i(through_seq.saturating_add(1))], |r| Ok((r.get::<_, Vec<u8>>(0)?, u(r.get(1)?))))
        .map_err(LogError::sqlite("reading signing keys"))?;
    let mut ring = KeyRing::new();
    for row in rows {
        let (pk, from) = row.map_err(LogError::sqlite("reading signing keys"))?;
        let key = VerifyingKey::from_bytes(&pk)
            .map_err(|e| LogError::Schema(format!("signing_keys row from seq {from} holds a bad key: {e}")))?;
        ring.push(key, from);
    }
    Ok(ring)
}

/// The chain head recorded as verified, ready to resume verification from.
pub fn chain_head(conn: &Connection, store_id: StoreId) -> Result<ChainHead, LogError> {
    let mut head = ChainHead::genesis(store_id);
    if let Some(v) = verified_head(conn)? {
        (head.seq, head.hash, head.epoch, head.time_ms, head.generation) =
            (v.seq, v.hash, v.epoch, v.time_ms, v.generation);
        head.keys = key_ring(conn, v.seq)?;
    }
    Ok(head)
}

/// The write model at the head, from the state tables.
pub fn load_state(conn: &Connection, head: &ChainHead) -> Result<State, LogError> {
    let mut state = State {
        epoch: head.epoch,
        seq: head.seq,
        time_ms: head.time_ms,
        generation: head.generation,
        ..State::default()
    };
    let ctx = LogError::sqlite("loading the write model");
    let mut st = conn.prepare("SELECT service FROM state_services").map_err(LogError::sqlite("loading services"))?;
    for name in st.query_map([], |r| r.get::<_, String>(0)).map_err(LogError::sqlite("loading services"))? {
        state.services.insert(name.map_err(LogError::sqlite("loading services"))?, Default::default());
    }
    let mut st = conn.prepare("SELECT service, key, value_json FROM state_values").map_err(ctx)?;
    let rows = st
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))
        .map_err(LogError::sqlite("loading values"))?;
    for row in rows {
        let (service, key, value) = row.map_err(LogError::sqlite("loading values"))?;
        std::sync::Arc::make_mut(state.services.entry(service).or_default()).insert(key, value);
    }
    let mut st = conn
        .prepare("SELECT service, schema_json, schema_hash FROM state_schemas")
        .map_err(LogError::sqlite("loading schemas"))?;
    let rows = st
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, blob::<32>(r, 2)?)))
        .map_err(LogError::sqlite("loading schemas"))?;
    for row in rows {
        let (service, json, hash) = row.map_err(LogError::sqlite("loading schemas"))?;
        state.schemas.insert(service, confstore_core::state::ServiceSchema { json, hash });
    }
    let mut st = conn
        .prepare("SELECT key_version, count FROM state_secret_encryptions")
        .map_err(LogError::sqlite("loading counters"))?;
    let rows = st
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
        .map_err(LogError::sqlite("loading counters"))?;
    for row in rows {
        let (version, count) = row.map_err(LogError::sqlite("loading counters"))?;
        state.secret_encryptions.insert(u32::try_from(version).unwrap_or(u32::MAX), u(count));
    }
    let mut st = conn
        .prepare("SELECT token_id, name, role, service, token_hash, issued_seq, revoked_seq FROM state_tokens")
        .map_err(LogError::sqlite("loading tokens"))?;
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                confstore_core::auth::TokenRecord {
                    name: r.get(1)?,
                    role: confstore_core::auth::Role::parse(&r.get::<_, String>(2)?)
                        .unwrap_or(confstore_core::auth::Role::ConfigRead),
                    service: r.get(3)?,
                    hash: blob::<32>(r, 4)?,
                    issued_seq: u(r.get(5)?),
                    revoked_seq: r.get::<_, Option<i64>>(6)?.map(u),
                },
            ))
        })
        .map_err(LogError::sqlite("loading tokens"))?;
    for row in rows {
        let (id, token) = row.map_err(LogError::sqlite("loading tokens"))?;
        state.tokens.insert(id, token);
    }
    let mut st = conn
        .prepare("SELECT service, epoch, seq, prev_epoch FROM state_versions")
        .map_err(LogError::sqlite("loading versions"))?;
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                confstore_core::state::ServiceVersion {
                    changed_epoch: u(r.get(1)?),
                    seq: u(r.get(2)?),
                    prev_epoch: u(r.get(3)?),
                },
            ))
        })
        .map_err(LogError::sqlite("loading versions"))?;
    for row in rows {
        let (service, version) = row.map_err(LogError::sqlite("loading versions"))?;
        state.versions.insert(service, version);
    }
    Ok(state)
}

/// Writes the given services' snapshot versions into the write model (insert or replace).
pub fn write_versions<'a>(
    conn: &Connection,
    versions: impl Iterator<Item = (&'a String, &'a confstore_core::state::ServiceVersion)>,
) -> Result<(), LogError> {
    let ctx = || LogError::sqlite("writing versions to the write model");
    let mut put = conn
        .prepare_cached(
            "INSERT OR REPLACE INTO state_versions (service, epoch, seq, prev_epoch) VALUES (?1, ?2, ?3, ?4)",
        )
        .map_err(ctx())?;
    for (service, v) in versions {
        put.execute(params![service, i(v.changed_epoch), i(v.seq), i(v.prev_epoch)]).map_err(ctx())?;
    }
    Ok(())
}

/// Writes the given tokens into the write model (insert or replace).
pub fn write_tokens<'a>(
    conn: &Connection,
    tokens: impl Iterator<Item = (&'a String, &'a confstore_core::auth::TokenRecord)>,
) -> Result<(), LogError> {
    let ctx = || LogError::sqlite("writing tokens to the write model");
    let mut put = conn
        .prepare_cached(
            "INSERT OR REPLACE INTO state_tokens (token_id, name, role, service, token_hash, issued_seq, revoked_seq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .map_err(ctx())?;
    for (id, t) in tokens {
        put.execute(params![
            id,
            t.name,
            t.role.as_str(),
            t.service,
            t.hash.as_slice(),
            i(t.issued_seq),
            t.revoked_seq.map(i)
        ])
        .map_err(ctx())?;
    }
    Ok(())
}

/// A value changed since the last checkpoint: its JSON, and the seq and epoch that set it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangedValue {
    /// Canonical JSON text.
    pub value_json: String,
    /// The event that set it.
    pub seq: u64,
    /// That event's epoch (the `epoch` column).
    pub changed_epoch: u64,
}

/// Values changed since the last checkpoint, by (service, key); `None` = unset.
pub type ChangedValues = std::collections::BTreeMap<(String, String), Option<ChangedValue>>;

/// Writes the write model at `head`: the services and values changed since the last
/// checkpoint (`None` = unset), every key of the chain, and the verified head.
pub fn write_checkpoint(
    conn: &Connection,
    head: &ChainHead,
    services: &std::collections::BTreeMap<String, u64>,
    values: &ChangedValues,
    schemas: &std::collections::BTreeMap<String, (String, [u8; 32], u64)>,
    counters: &std::collections::BTreeMap<u32, u64>,
) -> Result<(), LogError> {
    let ctx = || LogError::sqlite("writing the write model");
    let mut add_service = conn
        .prepare_cached("INSERT OR IGNORE INTO state_services (service, registered_seq) VALUES (?1, ?2)")
        .map_err(ctx())?;
    for (service, seq) in services {
        add_service.execute(params![service, i(*seq)]).map_err(ctx())?;
    }
    let mut upsert = conn
        .prepare_cached(
            "INSERT INTO state_values (service, key, value_json, seq, epoch) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (service, key) DO UPDATE SET value_json = excluded.value_json,
                                                      seq = excluded.seq, epoch = excluded.epoch",
        )
        .map_err(ctx())?;
    let mut delete = conn.prepare_cached("DELETE FROM state_values WHERE service = ?1 AND key = ?2").map_err(ctx())?;
    for ((service, key), value) in values {
        match value {
            Some(v) => upsert.execute(params![service, key, v.value_json, i(v.seq), i(v.changed_epoch)]),
            None => delete.execute(params![service, key]),
        }
        .map_err(ctx())?;
    }
    let mut put_schema = conn
        .prepare_cached(
            "INSERT INTO state_schemas (service, schema_json, schema_hash, seq) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (service) DO UPDATE SET schema_json = excluded.schema_json,
                                                 schema_hash = excluded.schema_hash, seq = excluded.seq",
        )
        .map_err(ctx())?;
    for (service, (json, hash, seq)) in schemas {
        put_schema.execute(params![service, json, hash.as_slice(), i(*seq)]).map_err(ctx())?;
    }
    for entry in head.keys.entries() {
        insert_key(conn, entry.from_seq, &entry.key.to_bytes()).map_err(ctx())?;
    }
    let mut put_count = conn
        .prepare_cached(
            "INSERT INTO state_secret_encryptions (key_version, count) VALUES (?1, ?2)
             ON CONFLICT (key_version) DO UPDATE SET count = excluded.count",
        )
        .map_err(ctx())?;
    for (version, count) in counters {
        put_count.execute(params![i64::from(*version), i(*count)]).map_err(ctx())?;
    }
    set_verified_head(conn, head)
}

/// The generation in force after event `seq`: the current one, less one for each
/// `generation_started` after `seq` (no scan at all in a store that never started one).
pub fn generation_at(conn: &Connection, seq: u64) -> Result<u64, LogError> {
    let now = store_row(conn)?.map_or(1, |r| r.1);
    if now <= 1 {
        return Ok(now.max(1));
    }
    let sql = LogError::sqlite("reading events for their generation");
    let mut st = conn.prepare_cached("SELECT body FROM events WHERE seq > ?1 ORDER BY seq").map_err(sql)?;
    let mut rows = st.query([i(seq)]).map_err(LogError::sqlite("reading events for their generation"))?;
    let mut later = 0u64;
    while let Some(row) = rows.next().map_err(LogError::sqlite("reading events for their generation"))? {
        let body: Vec<u8> = row.get(0).map_err(LogError::sqlite("reading an event body"))?;
        if let Ok(b) = confstore_core::EventBody::decode(&body)
            && matches!(b.kind, confstore_core::EventKind::GenerationStarted { .. })
        {
            later += 1;
        }
    }
    Ok(now.saturating_sub(later).max(1))
}

/// Records the store's current generation (in the transaction that appends the
/// `generation_started` raising it).
pub fn set_generation(conn: &Connection, generation: u64) -> Result<(), LogError> {
    conn.execute("UPDATE store SET generation = ?1 WHERE id = 1", [i(generation)])
        .map_err(LogError::sqlite("recording the new generation"))?;
    Ok(())
}

/// Records one key of the chain (idempotent).
pub fn insert_key(conn: &Connection, from_seq: u64, public_key: &[u8; 32]) -> rusqlite::Result<usize> {
    let key_id = confstore_core::keys::key_id_of(public_key);
    conn.prepare_cached("INSERT OR IGNORE INTO signing_keys (from_seq, key_id, public_key) VALUES (?1, ?2, ?3)")
        .and_then(|mut st| st.execute(params![i(from_seq), key_id.0.as_slice(), public_key.as_slice()]))
}
