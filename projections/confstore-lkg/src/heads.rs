//! Heads seen before, and whether the database has fallen behind them (ADR 0017).
//!
//! A hash chain cannot show that its newest events are gone: an older copy of the database
//! put back (a restore, a deleted `-wal`) verifies perfectly. What it cannot hide is that
//! something outside the database recorded a newer head: the LKG file and its high-water
//! mark, the publisher's `mqtt.checkpoint`, the signed head file kept beside a replica, or
//! the broker's retained `system/config-head`. [`local`] gathers what the data directory
//! holds; [`standing`] compares one such head with the database.
//!
//! `serve` refuses to open read-write when any comparison is a [`Standing::is_problem`]
//! (it serves the LKG read-only instead, naming the missing range); `restore-check` reports
//! the same verdicts; `confstore generation start` is the deliberate way forward.

use std::path::Path;

use confstore_core::{StoreId, VerifyingKey, jws};
use serde_json::Value;

/// A head recorded somewhere outside the database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownHead {
    /// Where it was found, for people ("LKG file /data/config.lkg.json").
    pub source: String,
    /// Store id (hex).
    pub store_id: String,
    /// Generation; `None` when the source does not say (the high-water mark without its
    /// LKG file).
    pub generation: Option<u64>,
    /// Seq of the head.
    pub seq: u64,
    /// Hash (hex) of event `seq`, when the source records it.
    pub hash: Option<String>,
}

/// The database's own head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbHead {
    /// Store id.
    pub store_id: StoreId,
    /// Generation now.
    pub generation: u64,
    /// Seq of the last event.
    pub seq: u64,
}

/// How the database stands against one known head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standing {
    /// The known head is an event of this log.
    Ok,
    /// The known head is of an earlier generation: superseded by a deliberate new start.
    NewerGeneration,
    /// The known head is of a later generation: this copy is from before a new generation
    /// was started.
    OlderGeneration {
        /// The known head's generation.
        known: u64,
    },
    /// The known head is of another store.
    AnotherStore,
    /// The known head is past the end of this log: events `from..=to` are missing.
    Behind {
        /// First missing seq.
        from: u64,
        /// Last missing seq.
        to: u64,
    },
    /// This log has an event at the known head's seq, but another one: the history forked.
    Forked {
        /// The seq where they differ.
        seq: u64,
    },
}

impl Standing {
    /// A short name, as in `restore-check --json` (`ok`, `newer_generation`,
    /// `older_generation`, `another_store`, `behind`, `forked`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::NewerGeneration => "newer_generation",
            Self::OlderGeneration { .. } => "older_generation",
            Self::AnotherStore => "another_store",
            Self::Behind { .. } => "behind",
            Self::Forked { .. } => "forked",
        }
    }

    /// Whether this database must not be written as it is.
    pub fn is_problem(&self) -> bool {
        !matches!(self, Self::Ok | Self::NewerGeneration)
    }

    /// Whether a new generation is the way forward (the log was rewound or forked).
    pub fn is_rewind(&self) -> bool {
        matches!(self, Self::Behind { .. } | Self::Forked { .. })
    }

    /// What is wrong, for people; `None` when nothing is.
    pub fn describe(&self, k: &KnownHead, db: &DbHead) -> Option<String> {
        Some(match self {
            Self::Ok | Self::NewerGeneration => return None,
            Self::OlderGeneration { known } => format!(
                "{}: a head of generation {known}, but this database is generation {}: it is a copy from before \
                 generation {known} was started",
                k.source, db.generation
            ),
            Self::AnotherStore => {
                format!("{}: a head of store {}, but this database is store {}", k.source, k.store_id, db.store_id)
            }
            Self::Behind { from, to } => format!(
                "{}: event {} was seen, but this database ends at event {}: events {from}..={to} are missing \
                 (an older copy of the database, a lost -wal file, or a power cut with --synchronous normal)",
                k.source, k.seq, db.seq
            ),
            Self::Forked { seq } => format!(
                "{}: event {seq} here is not the event {seq} that was seen (hash {}): the history forked",
                k.source,
                k.hash.as_deref().unwrap_or("?")
            ),
        })
    }
}

/// Compares `k` with the database; `hash_at(seq)` gives the hash (hex) of the database's
/// event `seq`, if it has one.
pub fn standing<E>(
    db: &DbHead,
    k: &KnownHead,
    hash_at: impl FnOnce(u64) -> Result<Option<String>, E>,
) -> Result<Standing, E> {
    if k.store_id != db.store_id.to_hex() {
        return Ok(Standing::AnotherStore);
    }
    match k.generation {
        Some(g) if g > db.generation => return Ok(Standing::OlderGeneration { known: g }),
        Some(g) if g < db.generation => return Ok(Standing::NewerGeneration),
        _ => {}
    }
    if k.seq > db.seq {
        return Ok(Standing::Behind { from: db.seq + 1, to: k.seq });
    }
    match &k.hash {
        Some(want) if hash_at(k.seq)?.as_deref() != Some(want.as_str()) => Ok(Standing::Forked { seq: k.seq }),
        _ => Ok(Standing::Ok),
    }
}

/// Reads a signed head (flattened JWS, `typ` head) verified with one of `keys`.
pub fn from_head_jws(text: &str, keys: &[VerifyingKey], source: &str) -> Result<KnownHead, String> {
    let doc: Value = serde_json::from_str(text.trim()).map_err(|e| format!("{source}: not a JSON head JWS: {e}"))?;
    let doc = jws::verify(&doc, jws::TYP_HEAD, keys).map_err(|e| format!("{source}: {e}"))?;
    let text_of = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_owned);
    let number = |k: &str| doc.get(k).and_then(Value::as_u64);
    Ok(KnownHead {
        source: source.to_owned(),
        store_id: text_of("store_id").ok_or_else(|| format!("{source}: the head has no store_id"))?,
        generation: Some(number("generation").ok_or_else(|| format!("{source}: the head has no generation"))?),
        seq: number("seq").ok_or_else(|| format!("{source}: the head has no seq"))?,
        hash: Some(text_of("hash").ok_or_else(|| format!("{source}: the head has no hash"))?),
    })
}

/// Where the data directory's records are.
#[derive(Clone, Copy, Debug)]
pub struct LocalFiles<'a> {
    /// The data directory (`config.lkg.json`, `config.lkg.hwm`, `mqtt.checkpoint`).
    pub data_dir: &'a Path,
    /// The signed head file, if one is configured (`serve --head-file`).
    pub head_file: Option<&'a Path>,
    /// The LKG HMAC key, to verify the LKG file.
    pub lkg_key: &'a [u8; 32],
    /// The store's public keys, to verify the head file.
    pub store_keys: &'a [VerifyingKey],
}

/// Every head the data directory records, plus warnings about records that exist but could
/// not be used (a tampered LKG file is not evidence of anything).
pub fn local(files: &LocalFiles<'_>) -> (Vec<KnownHead>, Vec<String>) {
    let (mut known, mut warnings) = (Vec::new(), Vec::new());
    let lkg_path = files.data_dir.join(crate::FILE_NAME);
    let lkg = match crate::load(&lkg_path, files.lkg_key, None) {
        Ok(c) => Some(c),
        Err(crate::LkgError::Missing(_)) => None,
        Err(e) => {
            warnings.push(format!("the LKG file {} is not usable as a record of the head: {e}", lkg_path.display()));
            None
        }
    };
    if let Some(c) = &lkg {
        known.push(KnownHead {
            source: format!("LKG file {}", lkg_path.display()),
            store_id: c.store_id.clone(),
            generation: Some(c.generation),
            seq: c.seq,
            hash: Some(c.head_hash.clone()),
        });
    }
    let hwm_path = files.data_dir.join(crate::HWM_FILE_NAME);
    if let Some(hwm) = crate::read_high_water_mark(&hwm_path)
        && let Some(c) = lkg.as_ref().filter(|c| hwm > c.seq)
    {
        // The mark says how far the LKG file once was; it belongs to the LKG file's
        // generation (`generation start` resets it). Without a usable LKG file the store
        // id is unknown, and the mark is not evidence.
        known.push(KnownHead {
            source: format!("LKG high-water mark {}", hwm_path.display()),
            store_id: c.store_id.clone(),
            generation: Some(c.generation),
            seq: hwm,
            hash: None,
        });
    }
    let checkpoint_path = files.data_dir.join(crate::publisher_checkpoint::FILE_NAME);
    if let Some(c) = crate::publisher_checkpoint::read(&checkpoint_path) {
        known.push(KnownHead {
            source: format!("MQTT publisher checkpoint {}", checkpoint_path.display()),
            store_id: c.store_id,
            generation: Some(c.generation),
            seq: c.seq,
            hash: Some(c.hash),
        });
    }
    if let Some(path) = files.head_file {
        match std::fs::read_to_string(path) {
            Ok(text) => match from_head_jws(&text, files.store_keys, &format!("signed head file {}", path.display())) {
                Ok(k) => known.push(k),
                Err(e) => warnings.push(e),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warnings.push(format!("cannot read the signed head file {}: {e}", path.display())),
        }
    }
    (known, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> DbHead {
        DbHead { store_id: StoreId::from_hex(&"aa".repeat(16)).unwrap(), generation: 1, seq: 10 }
    }

    fn known(generation: Option<u64>, seq: u64, hash: Option<&str>) -> KnownHead {
        KnownHead { source: "test".into(), store_id: "aa".repeat(16), generation, seq, hash: hash.map(str::to_owned) }
    }

    fn judge(k: &KnownHead) -> Standing {
        standing(&db(), k, |seq| Ok::<_, ()>((seq <= 10).then(|| format!("h{seq}")))).unwrap()
    }

    #[test]
    fn every_verdict() {
        assert_eq!(judge(&known(Some(1), 10, Some("h10"))), Standing::Ok);
        assert_eq!(judge(&known(Some(1), 4, Some("h4"))), Standing::Ok);
        assert_eq!(judge(&known(None, 9, None)), Standing::Ok);
        assert_eq!(judge(&known(Some(1), 14, Some("x"))), Standing::Behind { from: 11, to: 14 });
        assert_eq!(judge(&known(None, 11, None)), Standing::Behind { from: 11, to: 11 });
        assert_eq!(judge(&known(Some(1), 7, Some("other"))), Standing::Forked { seq: 7 });
        assert_eq!(judge(&known(Some(2), 3, Some("h3"))), Standing::OlderGeneration { known: 2 });
        let mut newer_db = db();
        newer_db.generation = 2;
        let v = standing(&newer_db, &known(Some(1), 40, Some("x")), |_| Ok::<_, ()>(None)).unwrap();
        assert_eq!(v, Standing::NewerGeneration);
        let mut other = known(Some(1), 1, None);
        other.store_id = "bb".into();
        assert_eq!(judge(&other), Standing::AnotherStore);
    }

    #[test]
    fn problems_and_descriptions() {
        let k = known(Some(1), 14, Some("x"));
        let v = judge(&k);
        assert!(v.is_problem() && v.is_rewind());
        let text = v.describe(&k, &db()).unwrap();
        assert!(text.contains("events 11..=14 are missing"), "{text}");
        assert!(!Standing::NewerGeneration.is_problem());
        assert!(Standing::OlderGeneration { known: 3 }.is_problem());
        assert!(!Standing::OlderGeneration { known: 3 }.is_rewind());
        assert_eq!(Standing::Ok.describe(&k, &db()), None);
    }
}
