//! Fetching files over SFTP: each is downloaded into its partial copy (resumed by length),
//! checked against the host's checksum tool, and published by a rename inside its directory,
//! reached from the destination's root without following symlinks.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{fsync, openat, renameat, unlinkat, AtFlags, Mode, OFlags};

use super::{FetchFailure, SftpSource, Verification};
use crate::confine::Destination;

/// One file to fetch over SFTP.
#[derive(Clone, Copy, Debug)]
pub struct SftpFile<'a> {
    pub remote: &'a str,
    /// Where the verified file is published.
    pub destination: &'a Destination,
    /// The name of the file beside the destination it is downloaded into first (and resumed
    /// from, by length); like the destination, reached through its directory's handle.
    pub partial: &'a str,
    /// Refuse a file larger than this (the size the caller was told).
    pub max_len: Option<u64>,
}

/// What fetching one file over SFTP did.
#[derive(Clone, Copy, Debug)]
pub struct SftpFetch {
    pub len: u64,
    /// Bytes read over SFTP (less than `len` when a partial copy was resumed).
    pub received_bytes: u64,
    pub verification: Verification,
}

impl SftpSource {
    /// Copies `remote` to `destination` through `partial` (resumed if it exists), verifies it,
    /// sets mode and mtime and publishes it. On a verification failure the partial copy is
    /// discarded and the file fetched once more from the start.
    pub fn fetch(&mut self, file: &SftpFile<'_>) -> Result<SftpFetch, String> {
        let mut result = self.fetch_once(file);
        if let Err(FetchFailure::Mismatch(_)) = &result {
            remove_partial(file);
            result = self.fetch_once(file);
        }
        result.map_err(|failure| match failure {
            FetchFailure::Mismatch(message) | FetchFailure::Other(message) => message,
        })
    }

    fn fetch_once(&mut self, file: &SftpFile<'_>) -> Result<SftpFetch, FetchFailure> {
        let downloaded = self.download(file)?;
        self.verify(file.remote, &downloaded.file)?;
        self.publish(file, &downloaded).map_err(FetchFailure::Other)
    }

    fn publish(&self, file: &SftpFile<'_>, downloaded: &Downloaded) -> Result<SftpFetch, String> {
        publish_partial(file, downloaded, self.mode_mask)
            .map_err(|e| format!("{}: publishing: {e}", file.remote))?;
        Ok(SftpFetch {
            len: downloaded.len,
            received_bytes: downloaded.received,
            verification: self.check,
        })
    }

    /// Fetches many files: each is downloaded into its partial copy, then the host's checksum
    /// tool runs once per batch of files (not once per file: each command is a round trip and a
    /// process on the host), then each verified file is published. A file whose check fails is
    /// fetched once more on its own. `done(index, result)` is called for each, in order.
    pub fn fetch_many(
        &mut self,
        files: &[SftpFile<'_>],
        done: &mut dyn FnMut(usize, Result<SftpFetch, String>),
    ) {
        const BATCH_FILES: usize = 256;
        const BATCH_COMMAND_BYTES: usize = 96 * 1024;
        let mut start = 0;
        while start < files.len() {
            let mut end = start;
            let mut command_bytes = 0;
            while end < files.len()
                && end - start < BATCH_FILES
                && command_bytes < BATCH_COMMAND_BYTES
            {
                command_bytes += files[end].remote.len() + 3;
                end += 1;
            }
            let batch = &files[start..end];
            let downloads: Vec<Result<Downloaded, FetchFailure>> =
                batch.iter().map(|file| self.download(file)).collect();
            let remotes: Vec<&str> = batch
                .iter()
                .zip(&downloads)
                .filter(|(_, d)| d.is_ok())
                .map(|(file, _)| file.remote)
                .collect();
            let sums = self.remote_sums(&remotes);
            for (offset, (file, download)) in batch.iter().zip(downloads).enumerate() {
                let result = match download {
                    Err(FetchFailure::Mismatch(_)) => self.fetch(file),
                    Err(FetchFailure::Other(message)) => Err(message),
                    Ok(downloaded) => match self.compare(file.remote, &downloaded.file, &sums) {
                        Ok(()) => self.publish(file, &downloaded),
                        Err(FetchFailure::Mismatch(_)) => {
                            drop(downloaded);
                            remove_partial(file);
                            self.fetch(file)
                        }
                        Err(FetchFailure::Other(message)) => Err(message),
                    },
                };
                done(start + offset, result);
            }
            start = end;
        }
    }

    /// Compares the local copy with the host's sum from `sums`, or asks the host for this one
    /// file when the batch has no sum for it.
    fn compare(
        &self,
        remote: &str,
        local: &File,
        sums: &std::collections::HashMap<String, String>,
    ) -> Result<(), FetchFailure> {
        match sums.get(remote) {
            Some(theirs) => self.compare_with(remote, local, theirs),
            None => self.verify(remote, local),
        }
    }

    /// Downloads `remote` into `partial` (appending to what an earlier attempt kept), checking
    /// that the file did not change meanwhile. The partial copy is opened in the destination's
    /// directory, reached from its root without following symlinks, never through a symlink.
    fn download(&mut self, file: &SftpFile<'_>) -> Result<Downloaded, FetchFailure> {
        let remote = file.remote;
        let other = |what: &str, e: &dyn std::fmt::Display| {
            FetchFailure::Other(format!("{remote}: {what}: {e}"))
        };
        let before = self
            .sftp
            .stat(Path::new(remote))
            .map_err(|e| other("stat", &e))?;
        let len = before.size.unwrap_or(0);
        let limit = file.max_len.unwrap_or(u64::MAX);
        if len > limit {
            return Err(FetchFailure::Other(format!(
                "{remote} has {len} bytes, more than the {limit} expected"
            )));
        }
        let (dir, mut local) = open_partial(file).map_err(|e| {
            other(
                &format!(
                    "opening the partial copy in {}",
                    file.destination.path().display()
                ),
                &e,
            )
        })?;
        let mut offset = local
            .metadata()
            .map_err(|e| other("partial copy", &e))?
            .len();
        if offset > len {
            local.set_len(0).map_err(|e| other("partial copy", &e))?;
            offset = 0;
        }
        let mut remote_file = self
            .sftp
            .open(Path::new(remote))
            .map_err(|e| other("open", &e))?;
        remote_file
            .seek(SeekFrom::Start(offset))
            .map_err(|e| other("seek", &e))?;
        let mut buffer = vec![0u8; 256 * 1024];
        let mut received = 0u64;
        loop {
            let n = remote_file
                .read(&mut buffer)
                .map_err(|e| other("read", &e))?;
            if n == 0 {
                break;
            }
            if offset + received + n as u64 > limit {
                drop(local);
                let _ = unlinkat(&dir, file.partial, AtFlags::empty());
                return Err(FetchFailure::Other(format!(
                    "{remote} grew beyond the {limit} bytes expected while it was copied"
                )));
            }
            local
                .write_all(&buffer[..n])
                .map_err(|e| other("writing the partial copy", &e))?;
            received += n as u64;
            if let Some(hook) = self.read_hook.as_mut() {
                hook(n);
            }
        }
        local.sync_all().map_err(|e| other("fsync", &e))?;
        let after = self
            .sftp
            .stat(Path::new(remote))
            .map_err(|e| other("stat", &e))?;
        let copied = local
            .metadata()
            .map_err(|e| other("partial copy", &e))?
            .len();
        if copied != after.size.unwrap_or(0)
            || after.mtime != before.mtime
            || after.size != before.size
        {
            return Err(FetchFailure::Mismatch(format!(
                "{remote} changed while it was copied"
            )));
        }
        Ok(Downloaded {
            dir,
            file: local,
            len: copied,
            received,
            mode: before.perm.unwrap_or(0o644),
            mtime: before.mtime.unwrap_or(0) as i64,
        })
    }
}

/// A file downloaded into its partial copy, not verified yet.
struct Downloaded {
    /// The destination's directory.
    dir: OwnedFd,
    /// The partial copy, open for reading and writing.
    file: File,
    len: u64,
    received: u64,
    mode: u32,
    mtime: i64,
}

/// Opens (creating it, mode 0600) the partial copy of `file` for appending, in the
/// destination's directory reached by [`Destination::open_parent`]; never through a symlink.
fn open_partial(file: &SftpFile<'_>) -> io::Result<(OwnedFd, File)> {
    let dir = file.destination.open_parent()?;
    let flags = OFlags::RDWR | OFlags::APPEND | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = openat(&dir, file.partial, flags, Mode::from_raw_mode(0o600))?;
    let local = File::from(fd);
    if !local.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the partial copy is not a regular file",
        ));
    }
    Ok((dir, local))
}

/// Removes the partial copy of `file` (a failed verification), through the directory handle.
fn remove_partial(file: &SftpFile<'_>) {
    if let Ok(dir) = file.destination.open_parent() {
        let _ = unlinkat(&dir, file.partial, AtFlags::empty());
    }
}

/// Sets mode and mtime, fsyncs, renames the partial copy over the destination inside the
/// directory handle it was downloaded through, and fsyncs that directory.
fn publish_partial(file: &SftpFile<'_>, downloaded: &Downloaded, mode_mask: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let local = &downloaded.file;
    local.set_permissions(std::fs::Permissions::from_mode(downloaded.mode & mode_mask))?;
    local.set_modified(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(downloaded.mtime.max(0) as u64),
    )?;
    local.sync_all()?;
    let dir = &downloaded.dir;
    renameat(dir, file.partial, dir, file.destination.file_name())?;
    Ok(fsync(dir)?)
}
