//! The file system side of the engine: memory-mapped inputs and the one publish path for outputs.
//!
//! Every file the engine produces is written to a temporary file beside its destination, fsynced,
//! renamed over the destination, and the directory is fsynced; until then the destination is
//! untouched. A temporary file that is dropped without being published is removed.
//!
//! Memory maps: [`MappedFile`] maps a file read-only. The engine maps only files it does not
//! expect to change while mapped (a basis on the receiver, a finished backup or WAL file on the
//! sender); a file truncated under a live map would fault, so callers must not map files that
//! are still being written.

use std::fs::File;
use std::io;
use std::ops::Deref;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use rustix::fs::{fsync, openat, renameat, unlinkat, AtFlags, Mode, OFlags, CWD};

/// A read-only memory map of a whole file (an empty file maps to an empty slice).
pub struct MappedFile {
    map: Option<Mmap>,
}

impl MappedFile {
    /// Maps `path`.
    pub fn open(path: &Path) -> io::Result<MappedFile> {
        let file = File::open(path)?;
        MappedFile::from_file(&file)
    }

    /// Maps an open file.
    pub fn from_file(file: &File) -> io::Result<MappedFile> {
        if file.metadata()?.len() == 0 {
            return Ok(MappedFile { map: None });
        }
        // SAFETY: see the module documentation: mapped files are not modified while mapped.
        let map = unsafe { Mmap::map(file)? };
        // Sequential access dominates; read-ahead helps signature and delta scans.
        let _ = map.advise(memmap2::Advice::Sequential);
        Ok(MappedFile { map: Some(map) })
    }
}

impl Deref for MappedFile {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}

/// A temporary file beside its destination, removed on drop unless published.
///
/// It lives in the destination's directory, reached through a directory handle: it is created
/// with `openat(O_EXCL | O_NOFOLLOW)` and published with `renameat` inside that handle, so once
/// the handle is open nothing (a symlink swapped in for the directory, say) can redirect it.
/// [`TempFile::in_directory`] takes a handle opened by the caller, for example one reached
/// through [`crate::confine::open_below`].
pub struct TempFile {
    dir: OwnedFd,
    dir_path: PathBuf,
    name: String,
    target: String,
    file: Option<File>,
    keep_as: Option<String>,
}

impl TempFile {
    /// Creates `.<name>.barsync-<random>` in the destination's directory, mode 0600.
    pub fn beside(destination: &Path) -> io::Result<TempFile> {
        let dir_path = parent_dir(destination).to_path_buf();
        let target = file_name(destination)?;
        let dir = openat(
            CWD,
            &dir_path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        TempFile::in_directory(dir, dir_path, &target)
    }

    /// Creates the temporary file for `target` (a plain name) in the open directory `dir`;
    /// `dir_path` is only used in messages.
    pub fn in_directory(dir: OwnedFd, dir_path: PathBuf, target: &str) -> io::Result<TempFile> {
        if target.is_empty() || target.contains('/') || target == "." || target == ".." {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid file name {target:?}"),
            ));
        }
        let mut last_error = None;
        for _ in 0..8 {
            let mut nonce = [0u8; 6];
            getrandom::fill(&mut nonce).map_err(|e| io::Error::other(e.to_string()))?;
            let suffix: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
            let name = format!(".{target}.barsync-{suffix}");
            let flags =
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            match openat(&dir, name.as_str(), flags, Mode::from_raw_mode(0o600)) {
                Ok(fd) => {
                    let file = Some(File::from(fd));
                    return Ok(TempFile {
                        dir,
                        dir_path,
                        name,
                        target: target.to_string(),
                        file,
                        keep_as: None,
                    });
                }
                Err(errno) if errno == rustix::io::Errno::EXIST => {
                    last_error = Some(io::Error::from(errno))
                }
                Err(errno) => return Err(errno.into()),
            }
        }
        Err(last_error.expect("loop ran"))
    }

    /// Path of the temporary file (for messages).
    pub fn path(&self) -> PathBuf {
        self.dir_path.join(&self.name)
    }

    /// The open file, for writing.
    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("file is open until publish")
    }

    /// If this file is dropped unpublished, rename it to `partial` (in the same directory)
    /// instead of removing it, so a later transfer can use what was received as its basis.
    pub fn keep_unpublished_as(&mut self, partial: &Path) {
        self.keep_as = partial
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
    }

    /// Sets permission bits and modification time (seconds, nanoseconds since the epoch).
    pub fn set_attributes(&mut self, mode: u32, mtime: (i64, u32)) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        use std::time::{Duration, SystemTime};
        let file = self.file();
        file.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))?;
        let when = if mtime.0 >= 0 {
            SystemTime::UNIX_EPOCH + Duration::new(mtime.0 as u64, mtime.1.min(999_999_999))
        } else {
            SystemTime::UNIX_EPOCH - Duration::new(mtime.0.unsigned_abs(), 0)
        };
        file.set_modified(when)
    }

    /// fsyncs the data, renames it over its destination, fsyncs the directory.
    pub fn publish(mut self) -> io::Result<()> {
        let file = self.file.take().expect("file is open until publish");
        file.sync_all()?;
        drop(file);
        renameat(
            &self.dir,
            self.name.as_str(),
            &self.dir,
            self.target.as_str(),
        )?;
        self.name.clear();
        fsync(&self.dir)?;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.name.is_empty() {
            return;
        }
        let kept = match (&self.keep_as, &self.file) {
            (Some(partial), Some(file)) => {
                file.metadata().map(|m| m.len() > 0).unwrap_or(false)
                    && renameat(&self.dir, self.name.as_str(), &self.dir, partial.as_str()).is_ok()
            }
            _ => false,
        };
        if !kept {
            let _ = unlinkat(&self.dir, self.name.as_str(), AtFlags::empty());
        }
    }
}

fn file_name(path: &Path) -> io::Result<String> {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} has no file name", path.display()),
            )
        })
}

/// fsyncs a directory, so that renames and creations inside it are durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}
