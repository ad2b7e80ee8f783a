//! A fault-injecting SQLite VFS for tests (docs/testing.md rows 3 and 4, ADR 0023).
//!
//! [`install`] registers a VFS named `faulty` as the process's *default* VFS. It wraps the
//! `unix` VFS: every file it opens gets io_methods that forward to the real file, and it
//! counts the I/O operations (`xWrite`, `xTruncate`, `xSync`) globally. Unarmed it only
//! passes through, so a test process that installed it opens every database normally.
//!
//! * Power loss ([`arm_power_loss`]): for each file it keeps an undo log of every write and
//!   truncate since that file's last `xSync`. After operation `n`, power is "cut": every
//!   later operation fails with `SQLITE_IOERR`. The test drops its connections and calls
//!   [`apply_power_loss`], which rewrites the unsynced bytes on disk as one of the
//!   [`Damage`] variants leaves them. Then it reopens.
//! * Errors ([`arm_error`]): operation `n` (and, if persistent, every later one) returns
//!   the chosen error code.
//!
//! Only test code depends on this crate, and the binary's test-only `failpoints` build
//! (`CONFSTORE_FAULT_VFS`, ADR 0023 "Through serve"); no shipped build links it.

#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int, c_void};
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::sync::{Mutex, MutexGuard, Once};

use rusqlite::ffi;

/// Sector size of the tearing model.
pub const SECTOR: u64 = 512;

/// What power loss leaves of the writes since a file's last sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Damage {
    /// None of them reached the disk.
    DropAll,
    /// All of them did (the OS flushed its cache in time).
    KeepAll,
    /// All earlier ones are lost; the last one is torn at a random sector boundary.
    TearLast,
    /// A random subset of their sectors reached the disk.
    RandomSectors,
    /// None reached the disk, and the last written sector reads as zeros.
    DropAllZeroLast,
}

impl Damage {
    /// The five variants, in the order the tests run them.
    pub const ALL: [Damage; 5] =
        [Damage::DropAll, Damage::KeepAll, Damage::TearLast, Damage::RandomSectors, Damage::DropAllZeroLast];
}

/// One unsynced change to a file: enough to undo it and to redo part of it.
#[derive(Clone, Debug)]
struct Change {
    offset: u64,
    /// The bytes before (shorter than `new` where the file was shorter).
    old: Vec<u8>,
    new: Vec<u8>,
    /// File size before the change.
    old_size: u64,
    /// For a truncate: the size it truncated to (`new` is empty).
    truncate_to: Option<u64>,
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    Off,
    PowerLoss {
        at: u64,
    },
    Error {
        at: u64,
        code: c_int,
        persistent: bool,
    },
    /// Reads fail: the `at`-th `xRead` from the arming (and every later one if persistent).
    ReadError {
        at: u64,
        persistent: bool,
    },
}

struct State {
    ops: u64,
    /// `xRead` calls since a read fault was armed.
    reads: u64,
    mode: Mode,
    crashed: bool,
    /// Unsynced changes per file path, oldest first.
    pending: Vec<(String, Vec<Change>)>,
}

static STATE: Mutex<State> =
    Mutex::new(State { ops: 0, reads: 0, mode: Mode::Off, crashed: false, pending: Vec::new() });
static INSTALL: Once = Once::new();

fn state() -> MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Registers the `faulty` VFS as the default one (once per process).
pub fn install() {
    INSTALL.call_once(|| unsafe {
        let unix = ffi::sqlite3_vfs_find(c"unix".as_ptr());
        assert!(!unix.is_null(), "the unix VFS is missing");
        let mut vfs: ffi::sqlite3_vfs = *unix;
        vfs.zName = c"faulty".as_ptr();
        vfs.pAppData = unix.cast();
        vfs.pNext = std::ptr::null_mut();
        vfs.szOsFile = c_int::try_from(std::mem::size_of::<FaultFile>()).unwrap_or(0) + (*unix).szOsFile;
        vfs.xOpen = Some(x_open);
        vfs.xDelete = Some(x_delete);
        let leaked: &'static mut ffi::sqlite3_vfs = Box::leak(Box::new(vfs));
        let rc = ffi::sqlite3_vfs_register(leaked, 1);
        assert_eq!(rc, ffi::SQLITE_OK, "registering the faulty VFS");
    });
}

/// Disarms, forgets every unsynced change and zeroes the operation counter.
pub fn reset() {
    let mut s = state();
    s.ops = 0;
    s.reads = 0;
    s.mode = Mode::Off;
    s.crashed = false;
    s.pending.clear();
}

/// Zeroes the operation counter (unsynced changes are kept: they are still at risk).
pub fn start_counting() {
    let mut s = state();
    s.ops = 0;
    s.mode = Mode::Off;
    s.crashed = false;
}

/// Operations (writes, truncates, syncs) counted since the last [`reset`] or arm.
pub fn ops() -> u64 {
    state().ops
}

/// Whether the power was cut.
pub fn crashed() -> bool {
    state().crashed
}

/// Cuts the power after operation `at` (counting from now): operation `at + 1` and every
/// later one fail with `SQLITE_IOERR`.
pub fn arm_power_loss(at: u64) {
    let mut s = state();
    s.ops = 0;
    s.crashed = false;
    s.mode = Mode::PowerLoss { at };
}

/// The error to inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `SQLITE_IOERR_WRITE`.
    IoErrWrite,
    /// `SQLITE_IOERR_FSYNC`.
    IoErrFsync,
    /// `SQLITE_FULL`.
    Full,
}

impl Fault {
    /// All three.
    pub const ALL: [Fault; 3] = [Fault::IoErrWrite, Fault::IoErrFsync, Fault::Full];

    fn code(self) -> c_int {
        match self {
            Fault::IoErrWrite => ffi::SQLITE_IOERR_WRITE,
            Fault::IoErrFsync => ffi::SQLITE_IOERR_FSYNC,
            Fault::Full => ffi::SQLITE_FULL,
        }
    }
}

/// Fails operation `at` (counting from now, from 1) with `fault`; if `persistent`, every
/// later operation too, until [`reset`].
pub fn arm_error(at: u64, fault: Fault, persistent: bool) {
    let mut s = state();
    s.ops = 0;
    s.crashed = false;
    s.mode = Mode::Error { at, code: fault.code(), persistent };
}

/// Fails the `at`-th read (`xRead`, counting from now, from 1) with `SQLITE_IOERR_READ`; if
/// `persistent`, every later read too, until [`reset`]. Writes pass. What a failing disk
/// does to the reads of opening a store, recovering its WAL, or reloading after a failed
/// commit. Returns nothing; [`reads`] tells how many reads were counted.
pub fn arm_read_error(at: u64, persistent: bool) {
    let mut s = state();
    s.reads = 0;
    s.crashed = false;
    s.mode = Mode::ReadError { at, persistent };
}

/// Reads counted since the last [`arm_read_error`].
pub fn reads() -> u64 {
    state().reads
}

/// Rewrites the unsynced changes of every file as `damage` leaves them after a power loss,
/// then disarms. Call it once every connection is closed. `seed` drives the random choices.
pub fn apply_power_loss(damage: Damage, seed: u64) -> std::io::Result<()> {
    let pending = {
        let mut s = state();
        s.mode = Mode::Off;
        s.crashed = false;
        std::mem::take(&mut s.pending)
    };
    rewrite(pending, damage, seed)
}

/// [`apply_power_loss`] for a process that still has connections open and ends right after
/// (the fault VFS inside `serve`, which aborts next): the power stays cut, so every operation
/// of its other threads keeps failing and none can write between the rewrite and the end.
/// Every operation holds the state lock until the real file has done it, so the operations
/// before the cut are complete when this takes the unsynced changes.
pub fn apply_power_loss_staying_down(damage: Damage, seed: u64) -> std::io::Result<()> {
    let pending = {
        let mut s = state();
        s.crashed = true;
        std::mem::take(&mut s.pending)
    };
    rewrite(pending, damage, seed)
}

/// Rewrites `pending` on disk as `damage` leaves it.
fn rewrite(pending: Vec<(String, Vec<Change>)>, damage: Damage, seed: u64) -> std::io::Result<()> {
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for (path, changes) in pending {
        if changes.is_empty() || !std::path::Path::new(&path).exists() {
            continue;
        }
        let f = OpenOptions::new().read(true).write(true).open(&path)?;
        if damage == Damage::KeepAll {
            continue;
        }
        // Undo everything, newest first.
        for c in changes.iter().rev() {
            if c.truncate_to.is_some() {
                f.set_len(c.old_size)?;
                f.write_all_at(&c.old, c.offset)?;
            } else {
                f.write_all_at(&c.old, c.offset)?;
                f.set_len(c.old_size)?;
            }
        }
        let Some(last) = changes.iter().rposition(|c| c.truncate_to.is_none()) else { continue };
        match damage {
            Damage::DropAll | Damage::KeepAll => {}
            Damage::TearLast => {
                let c = &changes[last];
                let sectors = (c.new.len() as u64).div_ceil(SECTOR);
                let keep = usize::try_from(next(&mut rng) % (sectors + 1) * SECTOR).unwrap_or(0).min(c.new.len());
                if keep > 0 {
                    f.write_all_at(&c.new[..keep], c.offset)?;
                }
            }
            Damage::RandomSectors => {
                for c in &changes {
                    if let Some(to) = c.truncate_to {
                        if next(&mut rng) & 1 == 0 {
                            f.set_len(to)?;
                        }
                        continue;
                    }
                    for (i, chunk) in c.new.chunks(usize::try_from(SECTOR).unwrap_or(512)).enumerate() {
                        if next(&mut rng) & 1 == 0 {
                            f.write_all_at(chunk, c.offset + i as u64 * SECTOR)?;
                        }
                    }
                }
            }
            Damage::DropAllZeroLast => {
                let c = &changes[last];
                let len = usize::try_from(SECTOR).unwrap_or(512).min(c.new.len());
                f.write_all_at(&vec![0; len], c.offset)?;
            }
        }
    }
    Ok(())
}

fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Counts one operation; returns the error code it must fail with, if any.
fn tick(s: &mut State) -> Option<c_int> {
    if s.crashed {
        return Some(ffi::SQLITE_IOERR);
    }
    s.ops += 1;
    match s.mode {
        Mode::Off => None,
        Mode::PowerLoss { at } => {
            if s.ops > at {
                s.crashed = true;
                Some(ffi::SQLITE_IOERR)
            } else {
                None
            }
        }
        Mode::Error { at, code, persistent } => (s.ops == at || (persistent && s.ops > at)).then_some(code),
        Mode::ReadError { .. } => None,
    }
}

fn pending_for<'a>(s: &'a mut State, path: &str) -> &'a mut Vec<Change> {
    let i = match s.pending.iter().position(|(p, _)| p == path) {
        Some(i) => i,
        None => {
            s.pending.push((path.to_owned(), Vec::new()));
            s.pending.len() - 1
        }
    };
    &mut s.pending[i].1
}

/// Our file: our io_methods first (SQLite's `sqlite3_file`), then the real file.
#[repr(C)]
struct FaultFile {
    base: ffi::sqlite3_file,
    real: *mut ffi::sqlite3_file,
    /// The path (a leaked `Box<String>`), null for nameless temporary files.
    path: *mut String,
}

fn unix_vfs(vfs: *mut ffi::sqlite3_vfs) -> *mut ffi::sqlite3_vfs {
    unsafe { (*vfs).pAppData.cast() }
}

unsafe fn real_methods(f: *mut ffi::sqlite3_file) -> (*mut ffi::sqlite3_file, &'static ffi::sqlite3_io_methods) {
    unsafe {
        let real = (*f.cast::<FaultFile>()).real;
        (real, &*(*real).pMethods)
    }
}

unsafe fn path_of(f: *mut ffi::sqlite3_file) -> Option<&'static str> {
    unsafe {
        let p = (*f.cast::<FaultFile>()).path;
        if p.is_null() { None } else { Some((*p).as_str()) }
    }
}

unsafe extern "C" fn x_open(
    vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    unsafe {
        let unix = unix_vfs(vfs);
        let ff = file.cast::<FaultFile>();
        let real = file.cast::<u8>().add(std::mem::size_of::<FaultFile>()).cast::<ffi::sqlite3_file>();
        (*ff).base.pMethods = std::ptr::null();
        (*ff).real = real;
        (*ff).path = std::ptr::null_mut();
        let Some(open) = (*unix).xOpen else { return ffi::SQLITE_CANTOPEN };
        let rc = open(unix, name, real, flags, out_flags);
        if rc != ffi::SQLITE_OK || (*real).pMethods.is_null() {
            return rc;
        }
        if !name.is_null() {
            let s = CStr::from_ptr(name).to_string_lossy().into_owned();
            (*ff).path = Box::into_raw(Box::new(s));
        }
        (*ff).base.pMethods = &METHODS;
        rc
    }
}

unsafe extern "C" fn x_delete(vfs: *mut ffi::sqlite3_vfs, name: *const c_char, sync_dir: c_int) -> c_int {
    unsafe {
        let unix = unix_vfs(vfs);
        {
            let mut s = state();
            if s.crashed {
                return ffi::SQLITE_IOERR_DELETE;
            }
            if !name.is_null() {
                let p = CStr::from_ptr(name).to_string_lossy().into_owned();
                s.pending.retain(|(q, _)| *q != p);
            }
        }
        match (*unix).xDelete {
            Some(d) => d(unix, name, sync_dir),
            None => ffi::SQLITE_IOERR_DELETE,
        }
    }
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 2,
    xClose: Some(f_close),
    xRead: Some(f_read),
    xWrite: Some(f_write),
    xTruncate: Some(f_truncate),
    xSync: Some(f_sync),
    xFileSize: Some(f_file_size),
    xLock: Some(f_lock),
    xUnlock: Some(f_unlock),
    xCheckReservedLock: Some(f_check_reserved_lock),
    xFileControl: Some(f_file_control),
    xSectorSize: Some(f_sector_size),
    xDeviceCharacteristics: Some(f_device_characteristics),
    xShmMap: Some(f_shm_map),
    xShmLock: Some(f_shm_lock),
    xShmBarrier: Some(f_shm_barrier),
    xShmUnmap: Some(f_shm_unmap),
    xFetch: None,
    xUnfetch: None,
};

unsafe extern "C" fn f_close(f: *mut ffi::sqlite3_file) -> c_int {
    unsafe {
        let (real, m) = real_methods(f);
        let rc = m.xClose.map_or(ffi::SQLITE_OK, |c| c(real));
        let ff = f.cast::<FaultFile>();
        if !(*ff).path.is_null() {
            drop(Box::from_raw((*ff).path));
            (*ff).path = std::ptr::null_mut();
        }
        rc
    }
}

unsafe extern "C" fn f_read(f: *mut ffi::sqlite3_file, buf: *mut c_void, amt: c_int, off: i64) -> c_int {
    unsafe {
        {
            let mut s = state();
            if s.crashed {
                return ffi::SQLITE_IOERR_READ;
            }
            if let Mode::ReadError { at, persistent } = s.mode {
                s.reads += 1;
                if s.reads == at || (persistent && s.reads > at) {
                    return ffi::SQLITE_IOERR_READ;
                }
            }
        }
        let (real, m) = real_methods(f);
        m.xRead.map_or(ffi::SQLITE_IOERR_READ, |r| r(real, buf, amt, off))
    }
}

/// The real file's size and the bytes at `off..off + len` (as far as the file reaches).
unsafe fn read_old(f: *mut ffi::sqlite3_file, off: i64, len: usize) -> (u64, Vec<u8>) {
    unsafe {
        let (real, m) = real_methods(f);
        let mut size: i64 = 0;
        if let Some(fs) = m.xFileSize {
            fs(real, &mut size);
        }
        let size = u64::try_from(size).unwrap_or(0);
        let start = u64::try_from(off).unwrap_or(0);
        let avail = usize::try_from(size.saturating_sub(start)).unwrap_or(0).min(len);
        let mut old = vec![0u8; avail];
        if avail > 0
            && let Some(r) = m.xRead
        {
            r(real, old.as_mut_ptr().cast(), c_int::try_from(avail).unwrap_or(0), off);
        }
        (size, old)
    }
}

unsafe extern "C" fn f_write(f: *mut ffi::sqlite3_file, buf: *const c_void, amt: c_int, off: i64) -> c_int {
    unsafe {
        let mut s = state();
        if let Some(code) = tick(&mut s) {
            return code;
        }
        let len = usize::try_from(amt).unwrap_or(0);
        if let Some(path) = path_of(f) {
            let (old_size, old) = read_old(f, off, len);
            let new = std::slice::from_raw_parts(buf.cast::<u8>(), len).to_vec();
            let offset = u64::try_from(off).unwrap_or(0);
            pending_for(&mut s, path).push(Change { offset, old, new, old_size, truncate_to: None });
        }
        // Done under the lock: an operation counted before the cut is complete before any
        // later one is counted (see `apply_power_loss_staying_down`).
        let (real, m) = real_methods(f);
        let rc = m.xWrite.map_or(ffi::SQLITE_IOERR_WRITE, |w| w(real, buf, amt, off));
        drop(s);
        rc
    }
}

unsafe extern "C" fn f_truncate(f: *mut ffi::sqlite3_file, size: i64) -> c_int {
    unsafe {
        let mut s = state();
        if let Some(code) = tick(&mut s) {
            return code;
        }
        if let Some(path) = path_of(f) {
            let (old_size, _) = read_old(f, 0, 0);
            let (_, old) = read_old(f, size, usize::try_from(old_size).unwrap_or(0));
            let to = u64::try_from(size).unwrap_or(0);
            pending_for(&mut s, path).push(Change {
                offset: to,
                old,
                new: Vec::new(),
                old_size,
                truncate_to: Some(to),
            });
        }
        let (real, m) = real_methods(f);
        let rc = m.xTruncate.map_or(ffi::SQLITE_IOERR_TRUNCATE, |t| t(real, size));
        drop(s);
        rc
    }
}

unsafe extern "C" fn f_sync(f: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    unsafe {
        let mut s = state();
        if let Some(code) = tick(&mut s) {
            return code;
        }
        let (real, m) = real_methods(f);
        let rc = m.xSync.map_or(ffi::SQLITE_IOERR_FSYNC, |y| y(real, flags));
        if rc == ffi::SQLITE_OK
            && let Some(path) = path_of(f)
        {
            s.pending.retain(|(p, _)| p != path);
        }
        rc
    }
}

unsafe extern "C" fn f_file_size(f: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    unsafe {
        let (real, m) = real_methods(f);
        m.xFileSize.map_or(ffi::SQLITE_IOERR_FSTAT, |x| x(real, size))
    }
}

unsafe extern "C" fn f_lock(f: *mut ffi::sqlite3_file, l: c_int) -> c_int {
    unsafe {
        let (real, m) = real_methods(f);
        m.xLock.map_or(ffi::SQLITE_IOERR_LOCK, |x| x(real, l))
    }
}

unsafe extern "C" fn f_unlock(f: *mut ffi::sqlite3_file, l: c_int) -> c_int {
    unsafe {
        let (real, m) = real_methods(f);
        m.xUnlock.map_or(ffi::SQLITE_IOERR_UNLOCK, |x| x(real, l))
    }
}

unsafe extern "C" fn f_check_reserved_lock(f: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    unsafe {
        let (real, m) = real_methods(f);
        m.xCheckReservedLock.map_or(ffi::SQLITE_IOERR_CHECKRESERVEDLOCK, |x| x(real, out))
    }
}

unsafe extern "C" fn f_file_control(f: *mut ffi::sqlite3_file, op: c_int, arg: *mut c_void) -> c_int {
    unsafe {
        let (real, m) = real_methods(f);
        m.xFileControl.map_or(ffi::SQLITE_NOTFOUND, |x| x(real, op, arg))
    }
}

unsafe extern "C" fn f_sector_size(f: *mut ffi::sqlite3_file) -> c_int {
    unsafe {
        let (real, m) = real_methods(f);
        m.xSectorSize.map_or(512, |x| x(real))
    }
}

unsafe extern "C" fn f_device_characteristics(f: *mut ffi::sqlite3_file) -> c_int {
    unsafe {
        let (real, m) = real_methods(f);
        m.xDeviceCharacteristics.map_or(0, |x| x(real))
    }
}

unsafe extern "C" fn f_shm_map(
    f: *mut ffi::sqlite3_file,
    region: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    unsafe {
        let (real, m) = real_methods(f);
        m.xShmMap.map_or(ffi::SQLITE_IOERR_SHMMAP, |x| x(real, region, size, extend, out))
    }
}

unsafe extern "C" fn f_shm_lock(f: *mut ffi::sqlite3_file, offset: c_int, n: c_int, flags: c_int) -> c_int {
    unsafe {
        let (real, m) = real_methods(f);
        m.xShmLock.map_or(ffi::SQLITE_IOERR_SHMLOCK, |x| x(real, offset, n, flags))
    }
}

unsafe extern "C" fn f_shm_barrier(f: *mut ffi::sqlite3_file) {
    unsafe {
        let (real, m) = real_methods(f);
        if let Some(x) = m.xShmBarrier {
            x(real);
        }
    }
}

unsafe extern "C" fn f_shm_unmap(f: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    unsafe {
        let (real, m) = real_methods(f);
        m.xShmUnmap.map_or(ffi::SQLITE_OK, |x| x(real, delete))
    }
}
