//! The client's LKG file: the last applied snapshot, exactly as received, and the deltas
//! applied on top of it since, so a restart without the store still has a verified
//! configuration and never goes backwards.
//!
//! Format `confstore-client-lkg/1` (one JSON object, docs/format.md §17.5):
//! `{"format":"confstore-client-lkg/1","service":…,"store_id":…,"jws":<snapshot JWS>,
//! "deltas":[<delta JWS>…],"checkpoint":"<note>"}` (`deltas` may be absent: none). Each
//! delta must be the next version after the one before it. `checkpoint` (absent: none) is
//! the last signed checkpoint of the log's Merkle tree the client accepted (crate::tlog),
//! written with the next version applied after it; older clients ignore the member.
//! No HMAC: the store's Ed25519 signature covers the snapshot, and `service` and
//! `store_id` must match the signed document. Written atomically (temporary file in the
//! same directory, fsync, rename, fsync of the directory), mode 0600.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;

use confstore_core::VerifyingKey;
use confstore_core::stream::{self, Rejection, SnapshotVersion};
use serde_json::{Value, json};

/// The `format` field of a client LKG file.
pub const FORMAT: &str = "confstore-client-lkg/1";

/// Largest LKG file read (a snapshot, the deltas after it, and the envelope).
const FILE_BYTES_MAX: u64 = 2 * crate::SNAPSHOT_BYTES_MAX as u64 + 4096;

/// A snapshot loaded from an LKG file and verified.
#[derive(Debug)]
pub(crate) struct Loaded {
    /// The document of the newest version (the snapshot with every delta applied).
    pub(crate) document: Value,
    pub(crate) version: SnapshotVersion,
    /// The snapshot JWS and the delta JWSs, as in the file, each with its version.
    pub(crate) jws: Value,
    pub(crate) jws_version: SnapshotVersion,
    pub(crate) deltas: Vec<(SnapshotVersion, Value)>,
    /// The accepted checkpoint kept in the file, verified (of this store, by a trusted key).
    pub(crate) checkpoint: Option<crate::tlog::AcceptedCheckpoint>,
}

/// Most deltas the file keeps after its snapshot. The retained snapshot that covers them
/// (or one of them: docs/format.md §17.5) arrives within the server's coalescing window and
/// replaces them; past this many the file is not rewritten until it does.
pub(crate) const DELTAS_MAX: usize = 4096;

/// Why an LKG file is unusable. Shown after "lkg file <path>: ".
#[derive(Debug, thiserror::Error)]
pub(crate) enum LkgError {
    #[error("cannot read it: {0}")]
    Io(#[from] io::Error),
    #[error("it is larger than {FILE_BYTES_MAX} bytes; was it replaced? delete it to start fresh")]
    TooLarge,
    #[error("it is not JSON ({0}); the file is corrupt: delete it to start fresh")]
    NotJson(serde_json::Error),
    #[error("it is not a {FORMAT} file ({0}); delete it or point lkg_path elsewhere")]
    Format(String),
    #[error("it holds service {0:?}; point lkg_path at this service's own file")]
    WrongService(String),
    #[error("its snapshot is rejected ({0}); was the file modified? delete it to start fresh")]
    Rejected(#[from] Rejection),
}

/// Reads and verifies the LKG file: `Ok(None)` if there is none yet. The snapshot must be
/// signed by one of `keys`, for `service`, and for `store_id` if one is pinned (else for
/// the store the file names).
pub(crate) fn load(
    path: &Path,
    keys: &[VerifyingKey],
    store_id: Option<&str>,
    service: &str,
) -> Result<Option<Loaded>, LkgError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut bytes = Vec::new();
    file.take(FILE_BYTES_MAX + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > FILE_BYTES_MAX {
        return Err(LkgError::TooLarge);
    }
    let mut envelope: Value = serde_json::from_slice(&bytes).map_err(LkgError::NotJson)?;
    let field = |k: &str| envelope.get(k).and_then(Value::as_str).map(str::to_owned);
    match field("format") {
        Some(f) if f == FORMAT => {}
        Some(f) => return Err(LkgError::Format(format!("format is {f:?}"))),
        None => return Err(LkgError::Format("no \"format\" field".into())),
    }
    let file_service = field("service").ok_or_else(|| LkgError::Format("no \"service\" field".into()))?;
    if file_service != service {
        return Err(LkgError::WrongService(file_service));
    }
    let file_store = field("store_id").ok_or_else(|| LkgError::Format("no \"store_id\" field".into()))?;
    let jws = envelope.get_mut("jws").map(Value::take).ok_or_else(|| LkgError::Format("no \"jws\" field".into()))?;
    let (mut document, mut version) = stream::verify_snapshot(&jws, keys, store_id.unwrap_or(&file_store), service)?;
    if version.store_id != file_store {
        return Err(LkgError::Format(format!(
            "store_id {file_store:?} differs from the signed {:?}",
            version.store_id
        )));
    }
    let file_deltas = match envelope.get_mut("deltas").map(Value::take) {
        None => Vec::new(),
        Some(Value::Array(d)) if d.len() <= DELTAS_MAX => d,
        Some(_) => return Err(LkgError::Format(format!("\"deltas\" is not an array of at most {DELTAS_MAX}"))),
    };
    let jws_version = version.clone();
    let mut deltas = Vec::with_capacity(file_deltas.len());
    for (i, d) in file_deltas.into_iter().enumerate() {
        let (kind, doc, next) = stream::verify_update(&d, keys, Some(&file_store), service)?;
        // A delta is one version; several signed once (docs/adr/0035) may begin with versions
        // the file holds already (the client held them when the message came): skipped. The
        // first newer one must follow the version before it.
        let (versions, several) = match kind {
            stream::UpdateKind::Delta => (vec![(&doc, next)], false),
            stream::UpdateKind::Deltas => (stream::deltas_of(&doc)?, true),
            stream::UpdateKind::Snapshot => return Err(LkgError::Format(format!("deltas[{i}] is not a delta"))),
        };
        let mut applied = false;
        for (one, next) in versions {
            match stream::judge_delta(Some(&version), &next) {
                Ok(stream::Verdict::Apply) => {}
                Err(stream::Rejection::Duplicate(_) | stream::Rejection::Stale { .. }) if several && !applied => {
                    continue;
                }
                Ok(stream::Verdict::Gap { .. }) => {
                    return Err(LkgError::Format(format!("deltas[{i}] does not follow the version before it")));
                }
                Err(e) => return Err(e.into()),
            }
            document = stream::apply_delta(&document, one)?;
            version = next;
            applied = true;
        }
        if applied {
            deltas.push((version.clone(), d));
        }
    }
    let checkpoint = match envelope.get("checkpoint") {
        None => None,
        Some(Value::String(note)) => Some(
            crate::tlog::open_kept(note, &file_store, keys, version.generation)
                .map_err(|e| LkgError::Format(format!("its checkpoint is refused: {e}")))?,
        ),
        Some(_) => return Err(LkgError::Format("\"checkpoint\" is not a string".into())),
    };
    Ok(Some(Loaded { document, version, jws, jws_version, deltas, checkpoint }))
}

/// Writes the LKG file atomically: a crash leaves the old file or the new one, never a mix.
#[cfg(test)]
pub(crate) fn store(path: &Path, service: &str, store_id: &str, jws: &Value, deltas: &[Value]) -> io::Result<()> {
    store_with(path, service, store_id, jws, deltas, None)
}

/// [`store`], with the accepted checkpoint's note.
pub(crate) fn store_with(
    path: &Path,
    service: &str,
    store_id: &str,
    jws: &Value,
    deltas: &[Value],
    checkpoint: Option<&str>,
) -> io::Result<()> {
    let mut envelope = json!({"format": FORMAT, "service": service, "store_id": store_id, "jws": jws});
    if let Some(obj) = envelope.as_object_mut() {
        if !deltas.is_empty() {
            obj.insert("deltas".into(), Value::from(deltas.to_vec()));
        }
        if let Some(note) = checkpoint {
            obj.insert("checkpoint".into(), Value::from(note));
        }
    }
    let bytes = serde_json::to_vec(&envelope).map_err(io::Error::other)?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new().prefix(".confstore-lkg-").suffix(".tmp").tempfile_in(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // The file shows the service's configuration: only its owner may read it.
        tmp.as_file().set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    tmp.write_all(&bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    // The rename is durable only once the directory entry is.
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{STORE, Signer};

    #[test]
    fn round_trip_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/web.lkg.json");
        let signer = Signer::new(1);
        let jws = signer.snapshot("web", 1, 4, 3, serde_json::json!({"port": 80}));
        store(&path, "web", STORE, &jws, &[]).unwrap();
        let loaded = load(&path, &[signer.public()], None, "web").unwrap().unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&fs::read(&path).unwrap()).unwrap()["jws"], jws);
        assert_eq!(loaded.version.changed_epoch, 4);
        assert_eq!(loaded.document["config"]["port"], 80);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
        assert!(load(&dir.path().join("none.json"), &[signer.public()], None, "web").unwrap().is_none());
    }

    #[test]
    fn every_flipped_byte_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.lkg.json");
        let signer = Signer::new(1);
        store(&path, "web", STORE, &signer.snapshot("web", 1, 4, 3, serde_json::json!({"port": 80})), &[]).unwrap();
        let good = fs::read(&path).unwrap();
        let keys = [signer.public()];
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            fs::write(&path, &bad).unwrap();
            let result = load(&path, &keys, None, "web");
            // A flip inside JSON whitespace-free text can only yield an equal document if it
            // hits nothing that matters; every byte of this file matters.
            let err = result.expect_err(&format!("flipped byte {i} accepted"));
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn the_accepted_checkpoint_is_kept_and_checked_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.lkg.json");
        let signer = Signer::new(1);
        let jws = signer.snapshot("web", 1, 4, 3, serde_json::json!({}));
        let note = signer.checkpoint(9, [5; 32]);
        store_with(&path, "web", STORE, &jws, &[], Some(&note)).unwrap();
        let loaded = load(&path, &[signer.public()], None, "web").unwrap().unwrap();
        let cp = loaded.checkpoint.expect("the checkpoint");
        assert_eq!((cp.size, cp.root, cp.note.as_str(), cp.generation), (9, [5; 32], note.as_str(), 1));
        // Another key's checkpoint, an edited one, a member that is no string: the file is refused.
        let bad = [
            Value::from(Signer::new(2).checkpoint(9, [5; 32])),
            Value::from(note.replacen("\n9\n", "\n10\n", 1)),
            Value::from(Signer::new(1).for_store("11111111111111111111111111111111").checkpoint(9, [5; 32])),
            serde_json::json!(9),
        ];
        for b in bad {
            let mut envelope: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
            envelope["checkpoint"] = b.clone();
            let other = dir.path().join("bad.json");
            fs::write(&other, serde_json::to_vec(&envelope).unwrap()).unwrap();
            let err = load(&other, &[signer.public()], None, "web").unwrap_err();
            assert!(matches!(err, LkgError::Format(_)), "{b}: {err}");
        }
        // Files without the member (every file before it) load as before.
        store(&path, "web", STORE, &jws, &[]).unwrap();
        assert!(load(&path, &[signer.public()], None, "web").unwrap().unwrap().checkpoint.is_none());
    }

    #[test]
    fn wrong_key_service_store_and_format_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.lkg.json");
        let signer = Signer::new(1);
        store(&path, "web", STORE, &signer.snapshot("web", 1, 4, 3, serde_json::json!({})), &[]).unwrap();
        let err = load(&path, &[Signer::new(2).public()], None, "web").unwrap_err();
        assert!(err.to_string().contains("was the file modified?"), "{err}");
        assert!(matches!(load(&path, &[signer.public()], None, "api"), Err(LkgError::WrongService(s)) if s == "web"));
        let other_store = "11111111111111111111111111111111";
        assert!(matches!(
            load(&path, &[signer.public()], Some(other_store), "web"),
            Err(LkgError::Rejected(Rejection::WrongStore { .. }))
        ));
        fs::write(&path, br#"{"format":"confstore-lkg/1"}"#).unwrap();
        assert!(matches!(load(&path, &[signer.public()], None, "web"), Err(LkgError::Format(_))));
        fs::write(&path, b"").unwrap();
        assert!(matches!(load(&path, &[signer.public()], None, "web"), Err(LkgError::NotJson(_))));
    }
}
