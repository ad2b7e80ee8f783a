//! Who may read the data directory: confstore creates it 0700 and every file in it 0600
//! (the database, its `-wal` and `-shm`, the LKG file, its high-water mark, the admin token,
//! checkpoints), and [`exposure`] says when an existing directory or file is open to the
//! group or to everyone, so the server and the CLI can warn (docs/operations.md).
//!
//! The log is signed, not secret, but it names every token, key and service, and holds
//! the secrets' ciphertexts; who may read it is the operator's decision, so it starts
//! private.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of every file confstore creates in the data directory: the owner only.
pub const PRIVATE_FILE_MODE: u32 = 0o600;
/// Mode of a data directory confstore creates.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Permission bits of the group and of everyone.
const OTHERS_BITS: u32 = 0o077;

/// Creates `dir` (and missing parents) with mode 0700; an existing directory is left as it
/// is ([`exposure`] reports it).
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    DirBuilder::new().recursive(true).mode(PRIVATE_DIR_MODE).create(dir)
}

/// Creates an empty file `path` with mode 0600 if there is none. SQLite opens an empty file
/// as a new database and creates its `-wal` and `-shm` files with the database file's
/// mode, so pre-creating it makes all three private whatever the umask.
pub fn create_private_file(path: &Path) -> io::Result<()> {
    match OpenOptions::new().write(true).create_new(true).mode(PRIVATE_FILE_MODE).open(path) {
        Ok(f) => {
            // The umask may only have removed bits; make it exactly 0600.
            f.set_permissions(fs::Permissions::from_mode(PRIVATE_FILE_MODE))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Warnings, one per line of text, for a data directory or a file directly in it that the
/// group or everyone may access. Unreadable entries are skipped (they are not exposed to
/// this process, let alone others).
pub fn exposure(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(meta) = fs::metadata(dir) else { return out };
    let mode = meta.permissions().mode() & 0o777;
    if mode & OTHERS_BITS != 0 {
        out.push(format!(
            "the data directory {} is open to {} (mode {mode:04o}); it holds the signed log, token hashes and secret \
             ciphertexts: chmod 700 {}",
            dir.display(),
            who(mode),
            dir.display()
        ));
    }
    let Ok(entries) = fs::read_dir(dir) else { return out };
    let mut files: Vec<(String, u32)> = entries
        .flatten()
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            let mode = meta.permissions().mode() & 0o777;
            (meta.is_file() && mode & OTHERS_BITS != 0).then(|| (e.file_name().to_string_lossy().into_owned(), mode))
        })
        .collect();
    files.sort();
    for (name, mode) in files {
        out.push(format!(
            "{} is open to {} (mode {mode:04o}): chmod 600 {}",
            dir.join(&name).display(),
            who(mode),
            dir.join(&name).display()
        ));
    }
    out
}

fn who(mode: u32) -> &'static str {
    if mode & 0o007 != 0 { "everyone" } else { "its group" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_files_and_dirs_are_private_and_exposure_names_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/data");
        create_private_dir(&dir).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        let f = dir.join("x");
        create_private_file(&f).unwrap();
        assert_eq!(fs::metadata(&f).unwrap().permissions().mode() & 0o777, 0o600);
        fs::write(&f, b"kept").unwrap();
        create_private_file(&f).unwrap();
        assert_eq!(fs::read(&f).unwrap(), b"kept", "an existing file is not truncated");
        assert!(exposure(&dir).is_empty());

        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(dir.join("open"), b"").unwrap();
        fs::set_permissions(dir.join("open"), fs::Permissions::from_mode(0o640)).unwrap();
        let w = exposure(&dir);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("open to everyone (mode 0755)") && w[0].contains("chmod 700"), "{w:?}");
        assert!(w[1].contains("open to its group (mode 0640)") && w[1].contains("chmod 600"), "{w:?}");
    }
}
