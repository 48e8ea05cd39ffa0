//! The file system side of the engine: memory-mapped inputs and the one publish path for outputs.
//!
//! Every file the engine produces is written to a temporary file beside its destination, fsynced,
//! renamed over the destination, and the directory is fsynced; until then the destination is
//! untouched. A temporary file that is dropped without being published is removed.
//! Files received from a peer are created in a directory reached through
//! [`Destination::open_parent`], never through a symlink; [`remove_at`] removes a tree the same
//! way.
//!
//! Memory maps: [`MappedFile`] maps a file read-only. The engine maps files it does not expect
//! to change while mapped (a basis on the receiver, a finished backup or WAL file on the
//! sender), but cannot prevent it: a file truncated under a live map would fault, so every map
//! is registered with `map_guard.rs`, whose SIGBUS handler turns the pages past the new
//! end into zeros and marks the map. Readers ask [`MappedFile::changed`] (the fault mark, or a
//! size or mtime that differs from when the file was mapped) before trusting what they read.

use std::borrow::Borrow;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::ops::{Deref, Range};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use rustix::fs::{fsync, openat, renameat, statat, unlinkat, AtFlags, FileType, Mode, OFlags, CWD};

use crate::confine::Destination;

/// Bytes read from a map between two [`MappedFile::release`] calls of the engine's long scans
/// (signature, patch): the mapped part of the resident set stays below about this much per
/// session. 4 MiB, as the patchers' copies: with 32 MiB, two sessions signing parts of one
/// large basis held 64 MiB of it at once (W7's peak RSS: 77 MiB; 67 MiB with 8 MiB windows,
/// 41 MiB with 4 MiB). A release is one `madvise`: 256 per GiB.
pub const RELEASE_EVERY: usize = 4 << 20;

/// A read-only memory map of a whole file (an empty file maps to an empty slice).
pub struct MappedFile {
    // Declared before `map`: fields drop in order, and the range must be unregistered before it
    // is unmapped (the address could be reused by another map).
    guard: Option<crate::map_guard::Registration>,
    map: Option<Mmap>,
    /// The file, to compare its size and mtime with `mapped_as` ([`MappedFile::changed`]).
    file: File,
    /// Size and mtime (seconds, nanoseconds) when it was mapped.
    mapped_as: (u64, i64, i64),
}

impl MappedFile {
    /// Maps `path`.
    pub fn open(path: &Path) -> io::Result<MappedFile> {
        MappedFile::map_owned(File::open(path)?)
    }

    /// Maps an open file.
    pub fn from_file(file: &File) -> io::Result<MappedFile> {
        MappedFile::map_owned(file.try_clone()?)
    }

    fn map_owned(file: File) -> io::Result<MappedFile> {
        use std::os::unix::fs::MetadataExt;
        let metadata = file.metadata()?;
        let mapped_as = (metadata.len(), metadata.mtime(), metadata.mtime_nsec());
        if metadata.len() == 0 {
            return Ok(MappedFile {
                guard: None,
                map: None,
                file,
                mapped_as,
            });
        }
        // SAFETY: the map is read-only and owned by this value. A file changed while mapped
        // changes what the slice reads (reported by `changed`, never undefined behaviour for
        // this process beyond reading other bytes), and one truncated while mapped faults into
        // `map_guard`'s handler, which maps zeros over the lost pages instead of killing us.
        let map = unsafe { Mmap::map(&file)? };
        let guard =
            crate::map_guard::register(map.as_ptr(), map.len()).map_err(io::Error::other)?;
        // Sequential access dominates; read-ahead helps signature and delta scans.
        let _ = map.advise(memmap2::Advice::Sequential);
        Ok(MappedFile {
            guard: Some(guard),
            map: Some(map),
            file,
            mapped_as,
        })
    }

    /// Whether reading the map faulted: the file shrank under it, and what was read from the
    /// faulting page on was zeros, not the file. One atomic load: cheap enough to ask often.
    pub fn faulted(&self) -> bool {
        self.guard.as_ref().is_some_and(|guard| guard.faulted())
    }

    /// Whether the file may have changed since it was mapped: a read faulted, or its size or
    /// modification time is not what it was (or cannot be read). What was read from a changed
    /// file must not be trusted; ask after reading.
    pub fn changed(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        self.faulted()
            || self.file.metadata().map_or(true, |m| {
                (m.len(), m.mtime(), m.mtime_nsec()) != self.mapped_as
            })
    }
}

impl MappedFile {
    /// The mapped file (for copies done by the kernel, `kernel_copy.rs`).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Drops this process's mappings of the pages of `range` (`madvise(MADV_DONTNEED)`), so that
    /// bytes already read stop counting in its resident set, which would otherwise grow to the
    /// size of the file. The pages stay in the page cache; reading them again faults them back
    /// in from the file. The map is read-only and shared, and mapped files are not modified
    /// while mapped (module documentation) or only through this process's own writes (an
    /// in-place update, which a shared map shows before and after a release alike), so every
    /// byte reads the same after a release. Failure is ignored: this only saves memory.
    pub fn release(&self, range: Range<usize>) {
        let Some(map) = &self.map else { return };
        let end = range.end.min(map.len());
        if range.start >= end {
            return;
        }
        // SAFETY: MADV_DONTNEED on a shared, read-only file mapping only drops page table
        // entries: later reads repopulate them from the file, with the content explained above
        // (or, past the end of a file that shrank, fault into `map_guard`'s handler again). On
        // the zero pages that handler maps, it drops them: they read as zeros again.
        let _ = unsafe {
            map.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                range.start,
                end - range.start,
            )
        };
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
/// [`TempFile::for_destination`] reaches that directory from a trusted root without following
/// any symlink below it (what every file received from a peer uses); [`TempFile::in_directory`]
/// takes a handle opened by the caller; [`TempFile::beside`] opens the directory of a path this
/// side chose, as given. [`TempFile::adopt`] takes over a file that is already there.
pub struct TempFile {
    dir: OwnedFd,
    dir_path: PathBuf,
    name: OsString,
    target: OsString,
    file: Option<File>,
    keep_as: Option<OsString>,
    /// The file was there before ([`TempFile::adopt`]): left unpublished, it stays.
    adopted: bool,
}

impl TempFile {
    /// Creates the temporary file of `destination` in its parent directory, reached from its
    /// root with `O_NOFOLLOW` ([`Destination::open_parent`]).
    pub fn for_destination(destination: &Destination) -> io::Result<TempFile> {
        let dir = destination.open_parent()?;
        let dir_path = parent_dir(&destination.path()).to_path_buf();
        TempFile::in_directory(dir, dir_path, destination.file_name())
    }

    /// Creates `.<name>.barsync-<random>` ([`crate::names::temporary`]) in the destination's
    /// directory, mode 0600 (a path
    /// this side chose: its directory is opened as given).
    pub fn beside(destination: &Path) -> io::Result<TempFile> {
        let dir_path = parent_dir(destination).to_path_buf();
        let target = file_name(destination)?;
        let dir = openat(
            CWD,
            &dir_path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        TempFile::in_directory(dir, dir_path, target)
    }

    /// Creates the temporary file for `target` (a plain name) in the open directory `dir`;
    /// `dir_path` is only used in messages.
    pub fn in_directory(dir: OwnedFd, dir_path: PathBuf, target: &OsStr) -> io::Result<TempFile> {
        let bytes = target.as_bytes();
        if bytes.is_empty() || bytes.contains(&b'/') || bytes == b"." || bytes == b".." {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid file name {target:?}"),
            ));
        }
        let flags =
            // Read too: a rebuild reads back what the kernel copied into it, to verify it.
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let (name, fd) = with_fresh_name(target, |name| {
            openat(&dir, name, flags, Mode::from_raw_mode(0o600))
        })?;
        Ok(TempFile {
            dir,
            dir_path,
            name,
            target: target.to_owned(),
            file: Some(File::from(fd)),
            keep_as: None,
            adopted: false,
        })
    }

    /// A hard link to `existing` under a temporary name beside `destination`: publishing it
    /// puts `existing`'s inode at `destination` (how identical files of a backup share the
    /// previous backup's copy). Nothing is written, and attributes are the existing file's.
    /// The link is made in the destination's directory reached as [`TempFile::for_destination`]
    /// does; an `existing` in that same directory (a partial copy) is named through it too.
    pub fn link_beside(existing: &Path, destination: &Destination) -> io::Result<TempFile> {
        let dir_path = parent_dir(&destination.path()).to_path_buf();
        let target = destination.file_name().to_owned();
        let dir = destination.open_parent()?;
        let sibling = destination.sibling_name(existing);
        let (name, ()) = with_fresh_name(&target, |name| match sibling {
            Some(existing) => rustix::fs::linkat(&dir, existing, &dir, name, AtFlags::empty()),
            None => rustix::fs::linkat(CWD, existing, &dir, name, AtFlags::empty()),
        })?;
        Ok(TempFile {
            dir,
            dir_path,
            name,
            target,
            file: None,
            keep_as: None,
            adopted: false,
        })
    }

    /// Takes over `name`, a complete file in the open directory `dir` (`file` open on it), to
    /// publish it as `target` the way a temporary file is published, alone or in a
    /// [`PublishBatch`] (a verified partial copy, say). Left unpublished, it stays under
    /// `name`: it was there before. `dir_path` is only used in messages.
    pub fn adopt(
        dir: OwnedFd,
        dir_path: PathBuf,
        name: impl AsRef<OsStr>,
        target: impl AsRef<OsStr>,
        file: File,
    ) -> io::Result<TempFile> {
        let (name, target) = (name.as_ref(), target.as_ref());
        for plain in [name, target] {
            let bytes = plain.as_bytes();
            if bytes.is_empty() || bytes.contains(&b'/') || bytes == b"." || bytes == b".." {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("invalid file name {plain:?}"),
                ));
            }
        }
        Ok(TempFile {
            dir,
            dir_path,
            name: name.to_owned(),
            target: target.to_owned(),
            file: Some(file),
            keep_as: None,
            adopted: true,
        })
    }

    /// Path of the temporary file (for messages).
    pub fn path(&self) -> PathBuf {
        self.dir_path.join(&self.name)
    }

    /// The open file, for writing.
    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("file is open until publish")
    }

    /// If this file is dropped unpublished, rename it to `partial` (only its file name counts:
    /// the partial file is in the same directory) instead of removing it, so a later transfer
    /// can use what was received as its basis.
    pub fn keep_unpublished_as(&mut self, partial: &Path) {
        self.keep_as = partial.file_name().map(OsStr::to_owned);
    }

    /// Removes the file if it is dropped unpublished, even if [`TempFile::keep_unpublished_as`]
    /// asked to keep it (the disk is full: keeping it would hold the space).
    pub fn discard_partial(&mut self) {
        self.keep_as = None;
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
        if let Some(file) = self.file.take() {
            file.sync_all()?;
        }
        rename_into_place(&self.dir, &self.name, &self.target)?;
        self.name.clear();
        fsync(&self.dir)?;
        Ok(())
    }
}

/// Renames `name` over `target` in `dir`. When both already are links to one inode (a link
/// to a basis published again over the link an earlier attempt published), `rename` succeeds
/// without doing anything (POSIX), and `name` would stay: it is removed then, so that once
/// published no temporary name is left whatever the destination was.
fn rename_into_place(dir: &OwnedFd, name: &OsStr, target: &OsStr) -> io::Result<()> {
    renameat(dir, name, dir, target)?;
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(errno) if errno == rustix::io::Errno::NOENT => Ok(()),
        // Still there: the rename was a no-op, `target` already is this inode.
        Ok(_) => Ok(unlinkat(dir, name, AtFlags::empty())?),
        Err(errno) => Err(errno.into()),
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.name.is_empty() || self.adopted {
            return;
        }
        let kept = match (&self.keep_as, &self.file) {
            (Some(partial), Some(file)) => {
                file.metadata().map(|m| m.len() > 0).unwrap_or(false)
                    && renameat(&self.dir, &self.name, &self.dir, partial).is_ok()
            }
            _ => false,
        };
        if !kept {
            let _ = unlinkat(&self.dir, &self.name, AtFlags::empty());
        }
    }
}

/// Permission bits without setuid and setgid (04000, 02000), for receivers that must never
/// create such files (a passive node: a backup never needs them).
pub const SETID_DROPPED: u32 = 0o1777;

/// Whether `name` is one of the temporary names [`TempFile`] creates (`.<target>.barsync-`
/// and 12 lowercase hex digits): what a killed process leaves behind, never a partial transfer
/// (`.barsync-partial`) nor anyone else's file.
pub fn is_temp_name(name: &OsStr) -> bool {
    const MARK: &[u8] = b".barsync-";
    let name = name.as_bytes();
    if name.len() < 1 + 1 + MARK.len() + 12 || name[0] != b'.' {
        return false;
    }
    let (head, suffix) = name.split_at(name.len() - 12);
    head.ends_with(MARK)
        && head.len() > 1 + MARK.len()
        && suffix
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// Runs `create` with `.<target>.barsync-<random>` names ([`crate::names::temporary`], which
/// shortens long names) until one does not exist yet.
fn with_fresh_name<T>(
    target: &OsStr,
    mut create: impl FnMut(&OsStr) -> rustix::io::Result<T>,
) -> io::Result<(OsString, T)> {
    let mut last_error = None;
    for _ in 0..8 {
        let mut nonce = [0u8; 6];
        getrandom::fill(&mut nonce).map_err(|e| io::Error::other(e.to_string()))?;
        let suffix: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
        let name = crate::names::temporary(target, &suffix);
        match create(&name) {
            Ok(value) => return Ok((name, value)),
            Err(errno) if errno == rustix::io::Errno::EXIST => {
                last_error = Some(io::Error::from(errno))
            }
            Err(errno) => return Err(errno.into()),
        }
    }
    Err(last_error.expect("loop ran"))
}

/// Opens the basis of a file received into `destination`, for reading: a file beside the
/// destination (the destination itself, its partial copy) through the destination's directory
/// handle, anything else by its path; never through a symlink as its last component, and only
/// a regular file.
pub fn open_basis(destination: &Destination, basis: &Path) -> io::Result<File> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = match destination.sibling_name(basis) {
        Some(name) => openat(&destination.open_parent()?, name, flags, Mode::empty())?,
        None => openat(CWD, basis, flags, Mode::empty())?,
    };
    let file = File::from(fd);
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", basis.display()),
        ));
    }
    Ok(file)
}

/// Removes `name` in the directory `dir`: a file or symlink is unlinked, a directory emptied
/// first and removed; no symlink is ever followed.
pub fn remove_at(dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
    let stat = statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::Directory {
        return Ok(unlinkat(dir, name, AtFlags::empty())?);
    }
    let child: OwnedFd = openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for entry in names_in(&child)? {
        remove_at(&child, &entry)?;
    }
    Ok(unlinkat(dir, name, AtFlags::REMOVEDIR)?)
}

/// The names in the open directory `dir` (without `.` and `..`).
pub fn names_in(dir: &OwnedFd) -> io::Result<Vec<OsString>> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_owned());
        }
    }
    Ok(names)
}

fn file_name(path: &Path) -> io::Result<&OsStr> {
    path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no file name", path.display()),
        )
    })
}

/// A writer that writes a file from a given offset on (`pwrite`, so several writers can fill
/// disjoint ranges of one file at once) and starts writeback of what it wrote every
/// [`WritebackWriter::INTERVAL`] bytes (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, which does not
/// wait), so the disk works while the rest of the file is still arriving and the final fsync has
/// little left to do.
pub struct WritebackWriter<F: Borrow<File>> {
    file: F,
    /// Offset of the first byte this writer writes.
    offset: u64,
    written: u64,
    started: u64,
}

impl<F: Borrow<File>> WritebackWriter<F> {
    /// Bytes written between two writeback requests.
    pub const INTERVAL: u64 = 32 << 20;

    /// Wraps a file written sequentially from offset 0.
    pub fn new(file: F) -> Self {
        WritebackWriter::at(file, 0)
    }

    /// Wraps a file written sequentially from `offset`.
    pub fn at(file: F, offset: u64) -> Self {
        WritebackWriter {
            file,
            offset,
            written: 0,
            started: 0,
        }
    }
}

impl<F: Borrow<File>> io::Write for WritebackWriter<F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let file = self.file.borrow();
        let n = file.write_at(buf, self.offset + self.written)?;
        self.written += n as u64;
        if self.written - self.started >= Self::INTERVAL {
            use std::os::fd::AsRawFd;
            // SAFETY: a plain syscall on an open descriptor; failure only loses the hint.
            unsafe {
                libc::sync_file_range(
                    file.as_raw_fd(),
                    (self.offset + self.started) as libc::off64_t,
                    (self.written - self.started) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
            self.started = self.written;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Verified temporary files published together, for many small files.
///
/// Publishing one file costs two fsyncs (its data, its directory), each a journal commit: for
/// thousands of small files that is most of the time. A batch instead closes each file when it
/// is pushed, and [`PublishBatch::commit`] makes all their data durable with one `syncfs` per
/// file system, then renames each into place, then fsyncs each directory once. Nothing is
/// renamed before its data is durable, so a crash leaves, for every file, either the old
/// version or the complete new one, exactly as publishing one by one does.
#[derive(Default)]
pub struct PublishBatch {
    files: Vec<TempFile>,
    bytes: u64,
}

impl PublishBatch {
    /// Files waiting before a batch should be committed (each holds its directory handle).
    pub const MAX_FILES: usize = 256;
    /// Bytes waiting before a batch should be committed.
    pub const MAX_BYTES: u64 = 1 << 30;

    /// Adds a verified file (attributes already set) of `len` bytes; closes its data handle.
    pub fn push(&mut self, mut temp: TempFile, len: u64) {
        temp.file = None;
        self.files.push(temp);
        self.bytes += len;
    }

    /// Whether the batch has reached its limits.
    pub fn is_full(&self) -> bool {
        self.files.len() >= Self::MAX_FILES || self.bytes >= Self::MAX_BYTES
    }

    /// Files waiting.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether no file is waiting.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Publishes every file pushed since the last commit; one result per file, in push order.
    pub fn commit(&mut self) -> Vec<io::Result<()>> {
        let mut files = std::mem::take(&mut self.files);
        self.bytes = 0;
        // 1. Data durable: one syncfs per file system.
        let mut synced_devices = Vec::new();
        for file in &files {
            let device = match rustix::fs::fstat(&file.dir) {
                Ok(stat) => stat.st_dev,
                Err(e) => return files.iter().map(|_| Err(io::Error::from(e))).collect(),
            };
            if !synced_devices.contains(&device) {
                if let Err(e) = rustix::fs::syncfs(&file.dir) {
                    return files.iter().map(|_| Err(io::Error::from(e))).collect();
                }
                synced_devices.push(device);
            }
        }
        // 2. Renames, 3. one fsync per directory.
        let mut results: Vec<io::Result<()>> = Vec::with_capacity(files.len());
        let mut directories: Vec<((u64, u64), usize)> = Vec::new();
        for (index, file) in files.iter_mut().enumerate() {
            let renamed = rename_into_place(&file.dir, &file.name, &file.target);
            results.push(renamed);
            if results[index].is_ok() {
                file.name.clear();
                if let Ok(stat) = rustix::fs::fstat(&file.dir) {
                    let key = (stat.st_dev, stat.st_ino);
                    if !directories.iter().any(|(k, _)| *k == key) {
                        directories.push((key, index));
                    }
                }
            }
        }
        for (key, index) in directories {
            if let Err(e) = fsync(&files[index].dir) {
                let message = io::Error::from(e).to_string();
                for (i, file) in files.iter().enumerate() {
                    if rustix::fs::fstat(&file.dir)
                        .map(|s| (s.st_dev, s.st_ino))
                        .ok()
                        == Some(key)
                    {
                        results[i] = Err(io::Error::other(format!(
                            "fsync of the directory: {message}"
                        )));
                    }
                }
            }
        }
        results
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn publishing_a_link_over_a_link_to_the_same_inode_removes_the_temporary_name() {
        let dir = tempfile::tempdir().unwrap();
        let (basis, destination) = (dir.path().join("basis"), dir.path().join("dest"));
        std::fs::write(&basis, b"identical").unwrap();
        std::fs::hard_link(&basis, &destination).unwrap();
        let target = crate::confine::Destination::trusted(&destination).unwrap();
        // One by one.
        TempFile::link_beside(&basis, &target)
            .unwrap()
            .publish()
            .unwrap();
        assert_eq!(names_in(dir.path()), ["basis", "dest"]);
        // In a batch.
        let mut batch = PublishBatch::default();
        batch.push(TempFile::link_beside(&basis, &target).unwrap(), 0);
        assert!(batch.commit().iter().all(Result::is_ok));
        assert_eq!(names_in(dir.path()), ["basis", "dest"]);
        assert_eq!(std::fs::read(&destination).unwrap(), b"identical");
    }

    #[test]
    fn an_adopted_file_is_published_in_a_batch_and_stays_when_dropped_unpublished() {
        let dir = tempfile::tempdir().unwrap();
        let open = |name: &str| {
            let handle = openat(
                CWD,
                dir.path(),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .unwrap();
            std::fs::write(dir.path().join(name), name).unwrap();
            let file = File::open(dir.path().join(name)).unwrap();
            TempFile::adopt(handle, dir.path().to_path_buf(), name, "dest", file).unwrap()
        };
        drop(open(".dest.barsync-partial"));
        assert_eq!(names_in(dir.path()), [".dest.barsync-partial"]);
        let mut batch = PublishBatch::default();
        batch.push(open(".dest.barsync-partial"), 21);
        assert!(batch.commit().iter().all(Result::is_ok));
        assert_eq!(names_in(dir.path()), ["dest"]);
        assert_eq!(
            std::fs::read(dir.path().join("dest")).unwrap(),
            b".dest.barsync-partial"
        );
        let handle = openat(CWD, dir.path(), OFlags::RDONLY, Mode::empty()).unwrap();
        let file = File::open(dir.path().join("dest")).unwrap();
        assert!(TempFile::adopt(handle, dir.path().into(), "a/b", "dest", file).is_err());
    }

    #[test]
    fn temporary_names_are_recognised_and_nothing_else() {
        assert!(super::is_temp_name(OsStr::new(
            ".000000010000000000000003.barsync-0dde2d62cd20"
        )));
        assert!(super::is_temp_name(OsStr::from_bytes(
            b".caf\xe9.barsync-0dde2d62cd20"
        )));
        for other in [
            ".000000010000000000000003.barsync-partial",
            ".000000010000000000000003.barsync-0DDE2D62CD20",
            ".000000010000000000000003.barsync-0dde2d62cd2",
            "000000010000000000000003.barsync-0dde2d62cd20",
            "..barsync-0dde2d62cd20",
            "notes.txt",
        ] {
            assert!(!super::is_temp_name(OsStr::new(other)), "{other}");
        }
    }
}
