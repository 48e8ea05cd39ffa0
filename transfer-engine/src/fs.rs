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

use std::fs::{self, File, OpenOptions};
use std::io;
use std::ops::Deref;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

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
pub struct TempFile {
    path: PathBuf,
    file: Option<File>,
    keep_as: Option<PathBuf>,
}

impl TempFile {
    /// Creates `.<name>.barsync-<random>` in the destination's directory, mode 0600.
    pub fn beside(destination: &Path) -> io::Result<TempFile> {
        let dir = parent_dir(destination);
        let name = destination
            .file_name()
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "destination has no file name")
            })?
            .to_string_lossy()
            .into_owned();
        let mut last_error = None;
        for _ in 0..8 {
            let mut nonce = [0u8; 6];
            getrandom::fill(&mut nonce).map_err(|e| io::Error::other(e.to_string()))?;
            let suffix: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
            let path = dir.join(format!(".{name}.barsync-{suffix}"));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(file) => {
                    return Ok(TempFile {
                        path,
                        file: Some(file),
                        keep_as: None,
                    })
                }
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                    last_error = Some(error)
                }
                Err(error) => return Err(error),
            }
        }
        Err(last_error.expect("loop ran"))
    }

    /// Path of the temporary file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open file, for writing.
    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("file is open until publish")
    }

    /// If this file is dropped unpublished, rename it to `partial` instead of removing it, so a
    /// later transfer can use what was received as its basis.
    pub fn keep_unpublished_as(&mut self, partial: PathBuf) {
        self.keep_as = Some(partial);
    }

    /// fsyncs the data, renames it over `destination`, fsyncs the directory.
    pub fn publish(mut self, destination: &Path) -> io::Result<()> {
        let file = self.file.take().expect("file is open until publish");
        file.sync_all()?;
        drop(file);
        fs::rename(&self.path, destination)?;
        self.path = PathBuf::new();
        fsync_dir(parent_dir(destination))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.path.as_os_str().is_empty() {
            return;
        }
        let kept = match (&self.keep_as, &self.file) {
            (Some(partial), Some(file)) => {
                file.metadata().map(|m| m.len() > 0).unwrap_or(false)
                    && fs::rename(&self.path, partial).is_ok()
            }
            _ => false,
        };
        if !kept {
            let _ = fs::remove_file(&self.path);
        }
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
