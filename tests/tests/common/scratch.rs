//! A test's temporary directory, kept when the test fails.

use std::path::{Path, PathBuf};

/// A temporary directory that is deleted when the test passes and kept (with its path
/// printed) when the test panics, so a failure leaves a replayable artifact.
pub struct Scratch {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl Scratch {
    /// A new directory named after `label`.
    pub fn new(label: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("confstore-e2e-{label}-"))
            .tempdir()
            .expect("creating a temporary directory");
        let path = dir.path().to_owned();
        Self { dir: Some(dir), path }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the directory whatever happens, and returns its path.
    pub fn keep(&mut self) -> PathBuf {
        if let Some(dir) = self.dir.take() {
            let _ = dir.keep();
        }
        self.path.clone()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            let path = dir.keep();
            eprintln!("test failed: its data is kept at {}", path.display());
        }
    }
}
