//! Barman's lock files, with the same names and `flock` semantics, so that barsync and Barman
//! working on one `barman_home` exclude each other: files created 0600 in
//! `barman_lock_directory`, an exclusive `flock`, `"<pid>\n"` written once held, never deleted.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The locks a passive node and sync-info use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockKind<'a> {
    /// `.<S>-xlogdb.lock`, held while reading or appending the xlog db (Barman waits).
    XlogDb,
    /// `.<S>-cron.lock`, one cron per server (Barman does not wait).
    Cron,
    /// `.<S>-<ID>-sync-backup.lock`, one copy of a backup (Barman does not wait).
    SyncBackup(&'a str),
    /// `.<S>-sync-wal.lock`, one WAL sync per server (Barman waits).
    SyncWal,
    /// `.<S>-<ID>.lock`, changes to one backup's metadata.
    Backup(&'a str),
    /// `.<S>-barsync-follow.lock`, one `barsync follow` per server (barsync's own; Barman
    /// never takes it).
    Follow,
}

impl LockKind<'_> {
    /// The lock file name for `server`.
    pub fn file_name(&self, server: &str) -> String {
        match self {
            LockKind::XlogDb => format!(".{server}-xlogdb.lock"),
            LockKind::Cron => format!(".{server}-cron.lock"),
            LockKind::SyncBackup(id) => format!(".{server}-{id}-sync-backup.lock"),
            LockKind::SyncWal => format!(".{server}-sync-wal.lock"),
            LockKind::Backup(id) => format!(".{server}-{id}.lock"),
            LockKind::Follow => format!(".{server}-barsync-follow.lock"),
        }
    }

    /// Whether Barman takes this lock blocking (`wait=True`).
    pub fn barman_waits(&self) -> bool {
        matches!(self, LockKind::XlogDb | LockKind::SyncWal)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("lock {} is held by another process", .0.display())]
    Busy(PathBuf),
    #[error("permission denied on lock {}", .0.display())]
    PermissionDenied(PathBuf),
    #[error("cannot lock {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A held lock; released (not deleted) when dropped.
#[derive(Debug)]
pub struct LockGuard {
    file: File,
    path: PathBuf,
}

impl LockGuard {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Marks progress: sets the lock file's modification time to now, so that a process that
    /// finds the lock busy can tell a run that moves from one that hangs ([`holder`]).
    pub fn touch(&self) {
        let _ = self.file.set_modified(std::time::SystemTime::now());
    }
}

/// Who holds a lock, seen from outside.
#[derive(Debug, Clone, PartialEq)]
pub struct Holder {
    /// The process holding it (from the kernel's lock table).
    pub pid: u32,
    /// Seconds since the lock was taken or its holder last marked progress
    /// ([`LockGuard::touch`]).
    pub idle_seconds: f64,
}

/// The holder of the lock file `path`, if a process holds it now; `None` when it is free or
/// cannot be told. Reads the kernel's table of `flock` locks (`/proc/locks`), so, unlike
/// trying the lock, it never takes it, not even for an instant.
pub fn holder(path: &Path) -> Option<Holder> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    let (major, minor) = (libc::major(meta.dev()), libc::minor(meta.dev()));
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let pid = locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // `1: FLOCK  ADVISORY  WRITE 1234 fe:00:5457886 0 EOF`
        let [_, "FLOCK", _, _, pid, id, ..] = fields.as_slice() else {
            return None;
        };
        let mut parts = id.split(':');
        let (dev_major, dev_minor, inode) = (parts.next()?, parts.next()?, parts.next()?);
        let same = u32::from_str_radix(dev_major, 16).ok()? == major
            && u32::from_str_radix(dev_minor, 16).ok()? == minor
            && inode.parse::<u64>().ok()? == meta.ino();
        same.then(|| pid.parse::<u32>().ok()).flatten()
    })?;
    let idle_seconds = meta
        .modified()
        .ok()
        .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
        .map_or(0.0, |d| d.as_secs_f64());
    Some(Holder { pid, idle_seconds })
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // SAFETY: the descriptor is owned by `self.file` and still open.
        unsafe {
            libc::flock(self.file.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

/// Takes `kind` for `server` in `lock_directory`; `wait` chooses a blocking request.
pub fn acquire(
    lock_directory: &Path,
    server: &str,
    kind: &LockKind<'_>,
    wait: bool,
) -> Result<LockGuard, LockError> {
    acquire_path(&lock_directory.join(kind.file_name(server)), wait)
}

/// Takes an exclusive lock on `path` exactly as Barman's `LockFile.acquire` does.
pub fn acquire_path(path: &Path, wait: bool) -> Result<LockGuard, LockError> {
    let io_error = |source: std::io::Error| match source.raw_os_error() {
        Some(libc::EACCES) => LockError::PermissionDenied(path.to_owned()),
        _ => LockError::Io {
            path: path.to_owned(),
            source,
        },
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(io_error)?;
    let flags = if wait {
        libc::LOCK_EX
    } else {
        libc::LOCK_EX | libc::LOCK_NB
    };
    loop {
        // SAFETY: `file` owns a valid open descriptor for the duration of the call.
        let result = unsafe { libc::flock(file.as_raw_fd(), flags) };
        if result == 0 {
            break;
        }
        let error = std::io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => return Err(LockError::Busy(path.to_owned())),
            _ => return Err(io_error(error)),
        }
    }
    let pid_line = format!("{}\n", std::process::id());
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.write_all(pid_line.as_bytes()))
        .and_then(|_| file.set_len(pid_line.len() as u64))
        .map_err(io_error)?;
    Ok(LockGuard {
        file,
        path: path.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn names_match_barman() {
        assert_eq!(LockKind::XlogDb.file_name("pg"), ".pg-xlogdb.lock");
        assert_eq!(LockKind::Cron.file_name("pg"), ".pg-cron.lock");
        assert_eq!(
            LockKind::SyncBackup("20240101T120000").file_name("pg"),
            ".pg-20240101T120000-sync-backup.lock"
        );
        assert_eq!(LockKind::SyncWal.file_name("pg"), ".pg-sync-wal.lock");
        assert_eq!(
            LockKind::Backup("20240101T120000").file_name("pg"),
            ".pg-20240101T120000.lock"
        );
    }

    #[test]
    fn the_holder_is_seen_without_taking_the_lock_and_touch_marks_progress() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".pg-cron.lock");
        assert_eq!(holder(&path), None);
        let guard = acquire_path(&path, false).unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(600);
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let seen = holder(&path).expect("held");
        assert_eq!(seen.pid, std::process::id());
        assert!(seen.idle_seconds >= 599.0, "{seen:?}");
        guard.touch();
        assert!(holder(&path).unwrap().idle_seconds < 60.0);
        drop(guard);
        assert_eq!(holder(&path), None);
    }

    #[test]
    fn second_holder_is_refused_until_release() {
        let dir = tempfile::tempdir().unwrap();
        let guard = acquire(dir.path(), "pg", &LockKind::Cron, false).unwrap();
        let path = guard.path().to_owned();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(matches!(
            acquire(dir.path(), "pg", &LockKind::Cron, false),
            Err(LockError::Busy(_))
        ));
        drop(guard);
        assert!(path.exists(), "lock files are never deleted");
        acquire(dir.path(), "pg", &LockKind::Cron, false).unwrap();
    }
}
