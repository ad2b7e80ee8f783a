//! Replacing a small file so that a crash or a power cut leaves either the old content or
//! the new one, whole, and once [`replace`] returned, the new one: a temporary file beside
//! it (mode 0600), its data fsynced, renamed over the old file, the directory fsynced. The
//! LKG file, its high-water mark and the publisher's checkpoint are all written this way.
//!
//! The steps go through [`Disk`], so a test can run them on a model of a disk that loses
//! what was not synced (docs/testing.md row 3): file data is durable only once the file is
//! fsynced, a directory entry (a create, a rename) only once its directory is fsynced.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The four steps of a replacement.
pub(crate) trait Disk {
    /// Creates (or truncates) `file`, mode 0600, holding `bytes`.
    fn write_new(&mut self, file: &Path, bytes: &[u8]) -> std::io::Result<()>;
    /// Makes `file`'s data durable.
    fn sync(&mut self, file: &Path) -> std::io::Result<()>;
    /// Renames `from` over `to`.
    fn rename(&mut self, from: &Path, to: &Path) -> std::io::Result<()>;
    /// Makes the entries of directory `dir` durable.
    fn sync_dir(&mut self, dir: &Path) -> std::io::Result<()>;
}

/// The real file system.
struct RealDisk;

impl Disk for RealDisk {
    fn write_new(&mut self, file: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(file)?;
        f.write_all(bytes)
    }

    fn sync(&mut self, file: &Path) -> std::io::Result<()> {
        OpenOptions::new().write(true).open(file)?.sync_all()
    }

    fn rename(&mut self, from: &Path, to: &Path) -> std::io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&mut self, dir: &Path) -> std::io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// Replaces `path` with `bytes` through the temporary file `tmp` (in the same directory);
/// `before_rename` runs between the temporary file's fsync and the rename (a crash point of
/// the failpoint tests).
pub(crate) fn replace(path: &Path, tmp: &Path, bytes: &[u8], before_rename: impl FnOnce()) -> std::io::Result<()> {
    replace_on(&mut RealDisk, path, tmp, bytes, before_rename)
}

fn replace_on<D: Disk>(
    disk: &mut D,
    path: &Path,
    tmp: &Path,
    bytes: &[u8],
    before_rename: impl FnOnce(),
) -> std::io::Result<()> {
    disk.write_new(tmp, bytes)?;
    disk.sync(tmp)?;
    before_rename();
    disk.rename(tmp, path)?;
    disk.sync_dir(dir_of(path))
}

/// The directory holding `path` (`.` for a bare name).
pub(crate) fn dir_of(path: &Path) -> &Path {
    path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;

    /// A disk that forgets what was not synced: names point to inodes, and each of the
    /// directory and the inodes' data has a durable and a volatile version. A power cut
    /// after operation `cut_after` makes every later operation fail; what survives is then
    /// chosen by a [`Loss`].
    #[derive(Clone, Default)]
    struct ModelDisk {
        durable_dir: BTreeMap<PathBuf, usize>,
        volatile_dir: BTreeMap<PathBuf, usize>,
        durable_data: BTreeMap<usize, Vec<u8>>,
        volatile_data: BTreeMap<usize, Vec<u8>>,
        next_inode: usize,
        ops: usize,
        cut_after: Option<usize>,
    }

    /// What a power cut keeps of the unsynced state.
    #[derive(Clone, Copy, Debug)]
    enum Loss {
        /// Nothing unsynced survives.
        DropAll,
        /// Everything written reached the disk.
        KeepAll,
        /// Directory entries survive, unsynced file data does not (the zero-length file
        /// after a rename of unsynced data).
        KeepNamesDropData,
        /// Unsynced file data survives, unsynced directory entries do not.
        KeepDataDropNames,
    }

    const LOSSES: [Loss; 4] = [Loss::DropAll, Loss::KeepAll, Loss::KeepNamesDropData, Loss::KeepDataDropNames];

    impl ModelDisk {
        fn op(&mut self) -> std::io::Result<()> {
            self.ops += 1;
            match self.cut_after {
                Some(n) if self.ops > n => Err(std::io::Error::other("the power is cut")),
                _ => Ok(()),
            }
        }

        /// The disk as it is found after the power comes back.
        fn after_cut(&self, loss: Loss) -> BTreeMap<PathBuf, Vec<u8>> {
            let (dir, data) = match loss {
                Loss::DropAll => (&self.durable_dir, &self.durable_data),
                Loss::KeepAll => (&self.volatile_dir, &self.volatile_data),
                Loss::KeepNamesDropData => (&self.volatile_dir, &self.durable_data),
                Loss::KeepDataDropNames => (&self.durable_dir, &self.volatile_data),
            };
            dir.iter().map(|(name, inode)| (name.clone(), data.get(inode).cloned().unwrap_or_default())).collect()
        }

        fn inode(&self, file: &Path) -> std::io::Result<usize> {
            self.volatile_dir.get(file).copied().ok_or_else(|| std::io::Error::other("no such file"))
        }
    }

    impl Disk for ModelDisk {
        fn write_new(&mut self, file: &Path, bytes: &[u8]) -> std::io::Result<()> {
            self.op()?;
            let inode = self.next_inode;
            self.next_inode += 1;
            self.volatile_dir.insert(file.to_owned(), inode);
            self.volatile_data.insert(inode, bytes.to_vec());
            Ok(())
        }

        fn sync(&mut self, file: &Path) -> std::io::Result<()> {
            self.op()?;
            let inode = self.inode(file)?;
            let data = self.volatile_data.get(&inode).cloned().unwrap_or_default();
            self.durable_data.insert(inode, data);
            Ok(())
        }

        fn rename(&mut self, from: &Path, to: &Path) -> std::io::Result<()> {
            self.op()?;
            let inode = self.inode(from)?;
            self.volatile_dir.remove(from);
            self.volatile_dir.insert(to.to_owned(), inode);
            Ok(())
        }

        fn sync_dir(&mut self, _dir: &Path) -> std::io::Result<()> {
            self.op()?;
            self.durable_dir = self.volatile_dir.clone();
            Ok(())
        }
    }

    /// A disk holding `path` = `old`, all of it durable.
    fn disk_with(path: &Path, old: Option<&[u8]>) -> ModelDisk {
        let mut d = ModelDisk::default();
        if let Some(old) = old {
            d.write_new(path, old).unwrap();
            d.sync(path).unwrap();
            d.sync_dir(dir_of(path)).unwrap();
        }
        d.ops = 0;
        d
    }

    /// Runs `steps` with a cut after each operation in turn (and none) × every loss; the
    /// failures of the rule "old or new content, whole, and new once it returned Ok".
    fn violations(
        old: Option<&[u8]>,
        steps: impl Fn(&mut ModelDisk, &Path, &Path, &[u8]) -> std::io::Result<()>,
    ) -> Vec<String> {
        let (path, tmp) = (Path::new("/d/config.lkg.json"), Path::new("/d/config.lkg.json.tmp"));
        let new = b"the new content".as_slice();
        let mut found = Vec::new();
        for cut_after in 0..=6 {
            for loss in LOSSES {
                let mut disk = disk_with(path, old);
                disk.cut_after = Some(cut_after);
                let returned_ok = steps(&mut disk, path, tmp, new).is_ok();
                let found_there = disk.after_cut(loss).get(path).cloned();
                let ok = match (&found_there, returned_ok) {
                    (Some(c), true) => c == new,
                    (Some(c), false) => c == new || Some(c.as_slice()) == old,
                    (None, false) => old.is_none(),
                    (None, true) => false,
                };
                if !ok {
                    found.push(format!(
                        "cut after op {cut_after}, {loss:?}, returned ok {returned_ok}: found {:?}",
                        found_there.map(|c| String::from_utf8_lossy(&c).into_owned())
                    ));
                }
            }
        }
        found
    }

    #[test]
    fn a_power_cut_at_any_step_leaves_the_old_file_or_the_new_one_and_the_new_one_once_acknowledged() {
        let old = b"the old content".as_slice();
        let replace = |d: &mut ModelDisk, p: &Path, t: &Path, b: &[u8]| replace_on(d, p, t, b, || ());
        assert_eq!(violations(Some(old), replace), Vec::<String>::new());
        assert_eq!(violations(None, replace), Vec::<String>::new());
    }

    /// The model is strict enough to catch the two classic mistakes, so the test above can
    /// fail.
    #[test]
    fn the_model_catches_a_missing_data_sync_and_a_missing_directory_sync() {
        let old = Some(b"the old content".as_slice());
        let no_data_sync = |d: &mut ModelDisk, p: &Path, t: &Path, b: &[u8]| {
            d.write_new(t, b)?;
            d.rename(t, p)?;
            d.sync_dir(dir_of(p))
        };
        let v = violations(old, no_data_sync);
        assert!(v.iter().any(|v| v.contains("KeepNamesDropData")), "a rename of unsynced data: {v:?}");
        let no_dir_sync = |d: &mut ModelDisk, p: &Path, t: &Path, b: &[u8]| {
            d.write_new(t, b)?;
            d.sync(t)?;
            d.rename(t, p)
        };
        let v = violations(old, no_dir_sync);
        assert!(v.iter().any(|v| v.contains("returned ok true")), "an acknowledged rename lost: {v:?}");
    }

    #[test]
    fn the_real_disk_replaces_and_keeps_the_file_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (path, tmp) = (dir.path().join("f"), dir.path().join("f.tmp"));
        replace(&path, &tmp, b"one", || ()).unwrap();
        replace(&path, &tmp, b"two", || ()).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert!(!tmp.exists());
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
