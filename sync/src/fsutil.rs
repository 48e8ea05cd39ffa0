//! Durable file publication for everything barsync writes into a Barman catalog: write a
//! `<name>.tmp` sibling, fsync it, rename it over the target, fsync the directory.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Replaces `path` with `contents` atomically and durably (as Barman's `.tmp` + rename, plus the
/// file fsync Barman omits).
pub fn atomic_write(path: &Path, contents: &[u8]) -> io::Result<()> {
    let temporary = temporary_path(path);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temporary)?;
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temporary, path)?;
        fsync_directory(parent_of(path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

/// `<path>.tmp`, the name Barman uses for its own temporary catalog files.
pub fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// fsyncs a directory so that renames and creations inside it survive a crash. `EINVAL` (some
/// filesystems refuse directory fsync) is ignored, as Barman does.
pub fn fsync_directory(directory: &Path) -> io::Result<()> {
    let handle = File::open(directory)?;
    match handle.sync_all() {
        Err(error) if error.raw_os_error() == Some(libc::EINVAL) => Ok(()),
        other => other,
    }
}

/// Seconds since `path` was last modified (`None` when it cannot be read).
pub fn age_seconds(path: &Path) -> Option<f64> {
    let modified = path.metadata().ok()?.modified().ok()?;
    Some(
        std::time::SystemTime::now()
            .duration_since(modified)
            .unwrap_or_default()
            .as_secs_f64(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("primary.info");
        atomic_write(&target, b"first").unwrap();
        atomic_write(&target, b"second").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"second");
        assert!(!temporary_path(&target).exists());
        let missing_dir = dir.path().join("absent").join("file");
        assert!(atomic_write(&missing_dir, b"x").is_err());
    }
}
