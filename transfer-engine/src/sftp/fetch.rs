//! Fetching files over SFTP: each is downloaded into its partial copy (resumed by length),
//! checked against the host's checksum tool, and published by a rename inside its directory,
//! reached from the destination's root without following symlinks; a batch of files is made
//! durable and published together. A file the tool shows identical to a local basis is
//! hard-linked to it instead (`reuse_backup = link`).

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{openat, unlinkat, AtFlags, Mode, OFlags};

use super::checksum::RemoteSums;
use super::{FetchFailure, SftpSource, Verification};
use crate::confine::Destination;
use crate::fs::{open_basis, PublishBatch, TempFile};
use crate::names::shown_path;

/// The largest read of file data asked of libssh2 at once (see [`SftpSource::download`]).
const READ_BUFFER: usize = 1 << 20;

/// One file to fetch over SFTP.
#[derive(Clone, Copy, Debug)]
pub struct SftpFile<'a> {
    /// The file on the host.
    pub remote: &'a Path,
    /// Where the verified file is published.
    pub destination: &'a Destination,
    /// The name of the file beside the destination it is downloaded into first (and resumed
    /// from, by length); like the destination, reached through its directory's handle.
    pub partial: &'a OsStr,
    /// Refuse a file larger than this (the size the caller was told).
    pub max_len: Option<u64>,
    /// A local file to hard-link as the destination, instead of copying, when the host's
    /// checksum tool shows the remote file identical to it (Barman's `reuse_backup = link`);
    /// it may be the destination itself (then nothing is written). Read through the
    /// destination's directory when it is beside the destination, never through a symlink.
    pub link_basis: Option<&'a Path>,
}

/// What fetching one file over SFTP did.
#[derive(Clone, Copy, Debug)]
pub struct SftpFetch {
    /// The file's length.
    pub len: u64,
    /// Bytes read over SFTP (less than `len` when a partial copy was resumed).
    pub received_bytes: u64,
    /// How the copy was checked.
    pub verification: Verification,
    /// The destination is a hard link to the identical [`SftpFile::link_basis`].
    pub linked: bool,
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
        self.publish(file, downloaded).map_err(FetchFailure::Other)
    }

    /// Publishes one verified file on its own (its data and its directory fsynced).
    fn publish(&self, file: &SftpFile<'_>, downloaded: Downloaded) -> Result<SftpFetch, String> {
        let (temp, fetched) = self.ready(file, downloaded)?;
        temp.publish()
            .map_err(|e| format!("{}: publishing: {e}", shown_path(file.remote)))?;
        Ok(fetched)
    }

    /// A verified partial copy with the remote mode and mtime set, ready to be renamed over
    /// its destination: alone ([`TempFile::publish`]) or with others ([`PublishBatch`]).
    fn ready(
        &self,
        file: &SftpFile<'_>,
        downloaded: Downloaded,
    ) -> Result<(TempFile, SftpFetch), String> {
        use std::os::unix::fs::PermissionsExt;
        let failed = |e: io::Error| format!("{}: publishing: {e}", shown_path(file.remote));
        let local = &downloaded.file;
        local
            .set_permissions(std::fs::Permissions::from_mode(
                downloaded.mode & self.mode_mask,
            ))
            .map_err(failed)?;
        local
            .set_modified(
                std::time::UNIX_EPOCH
                    + std::time::Duration::from_secs(downloaded.mtime.max(0) as u64),
            )
            .map_err(failed)?;
        let dir_path = file
            .destination
            .path()
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let temp = TempFile::adopt(
            downloaded.dir,
            dir_path,
            file.partial,
            file.destination.file_name(),
            downloaded.file,
        )
        .map_err(failed)?;
        Ok((
            temp,
            SftpFetch {
                len: downloaded.len,
                received_bytes: downloaded.received,
                verification: self.check,
                linked: false,
            },
        ))
    }

    /// Fetches many files, a batch at a time. First the files with a basis to link: where the
    /// host's checksum tool (one run for the batch) shows the remote file identical to its basis
    /// (the local hash of the same kind), the basis is hard-linked as the destination and
    /// nothing is downloaded; never on size and mtime alone, so without a tool every file is
    /// copied. The others are downloaded into their partial copies, checked against the tool's
    /// hashes (one more run for those not hashed yet), and published together with the links
    /// ([`PublishBatch`]: one `syncfs` and one fsync per directory, not two fsyncs per file). A
    /// file whose check fails is fetched once more on its own. `done(index, result)` is called
    /// once for each.
    pub fn fetch_many(
        &mut self,
        files: &[SftpFile<'_>],
        done: &mut dyn FnMut(usize, Result<SftpFetch, String>),
    ) {
        // Each downloaded file of a batch stays open until the batch is checked.
        const BATCH_FILES: usize = 256;
        for (number, batch) in files.chunks(BATCH_FILES).enumerate() {
            let start = number * BATCH_FILES;
            let mut publishing = Publishing::default();
            let mut sums = RemoteSums::new();
            let mut to_copy = Vec::with_capacity(batch.len());
            for (offset, linked) in self
                .link_identical(batch, &mut sums)
                .into_iter()
                .enumerate()
            {
                let remote = batch[offset].remote;
                match linked {
                    Linking::Copy => to_copy.push(offset),
                    Linking::Link(link, fetched) => {
                        publishing.push(start + offset, remote, link, fetched, done)
                    }
                    Linking::InPlace(fetched) => done(start + offset, Ok(fetched)),
                    Linking::Failed(message) => done(start + offset, Err(message)),
                }
            }
            let downloads: Vec<(usize, Result<Downloaded, FetchFailure>)> = to_copy
                .into_iter()
                .map(|offset| (offset, self.download(&batch[offset])))
                .collect();
            let unhashed: Vec<&Path> = downloads
                .iter()
                .filter(|(offset, d)| d.is_ok() && !sums.contains_key(batch[*offset].remote))
                .map(|(offset, _)| batch[*offset].remote)
                .collect();
            sums.extend(self.remote_sums(&unhashed));
            for (offset, download) in downloads {
                let file = &batch[offset];
                let result = match download {
                    Err(FetchFailure::Mismatch(_)) => self.fetch(file),
                    Err(FetchFailure::Other(message)) => Err(message),
                    Ok(downloaded) => match self.compare(file.remote, &downloaded.file, &sums) {
                        Ok(()) => match self.ready(file, downloaded) {
                            Ok((temp, fetched)) => {
                                publishing.push(start + offset, file.remote, temp, fetched, done);
                                continue;
                            }
                            Err(message) => Err(message),
                        },
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
            publishing.commit(done);
        }
    }

    /// Links the files of `batch` that the host's checksum tool shows identical to their
    /// [`link_basis`](SftpFile::link_basis); what was decided for each file. The tool's hashes
    /// are left in `sums` (a file that differs is checked against its hash once downloaded).
    fn link_identical(&self, batch: &[SftpFile<'_>], sums: &mut RemoteSums) -> Vec<Linking> {
        let mut results: Vec<Linking> = (0..batch.len()).map(|_| Linking::Copy).collect();
        if self.check.tool().is_none() {
            return results;
        }
        // The basis is opened (never through a symlink) and must have the size the caller
        // was told: a different length is a different file, not worth a hash on either side.
        let candidates: Vec<(usize, &Path, File, u64)> = batch
            .iter()
            .enumerate()
            .filter_map(|(offset, file)| {
                let basis = file.link_basis?;
                let opened = open_basis(file.destination, basis).ok()?;
                let len = opened.metadata().ok()?.len();
                match file.max_len {
                    Some(max) if max != len => None,
                    _ => Some((offset, basis, opened, len)),
                }
            })
            .collect();
        let remotes: Vec<&Path> = candidates
            .iter()
            .map(|(offset, ..)| batch[*offset].remote)
            .collect();
        sums.extend(self.remote_sums(&remotes));
        for (offset, basis, opened, len) in candidates {
            let file = &batch[offset];
            let Some(theirs) = sums.get(file.remote) else {
                continue;
            };
            let Ok(Some(ours)) = self.check.hash_local(&opened) else {
                continue;
            };
            if &ours != theirs {
                continue;
            }
            let linked = SftpFetch {
                len,
                received_bytes: 0,
                verification: self.check,
                linked: true,
            };
            results[offset] = if basis == file.destination.path() {
                Linking::InPlace(linked)
            } else {
                match TempFile::link_beside(basis, file.destination) {
                    Ok(link) => Linking::Link(link, linked),
                    Err(e) => Linking::Failed(format!(
                        "{}: linking {} to {}: {e}",
                        shown_path(file.remote),
                        basis.display(),
                        file.destination.path().display()
                    )),
                }
            };
        }
        results
    }

    /// Compares the local copy with the host's sum from `sums`, or asks the host for this one
    /// file when the batch has no sum for it.
    fn compare(&self, remote: &Path, local: &File, sums: &RemoteSums) -> Result<(), FetchFailure> {
        match sums.get(remote) {
            Some(theirs) => self.compare_with(remote, local, theirs),
            None => self.verify(remote, local),
        }
    }

    /// Downloads `remote` into `partial` (appending to what an earlier attempt kept), checking
    /// that the file did not change meanwhile. The partial copy is opened in the destination's
    /// directory, reached from its root without following symlinks, never through a symlink.
    fn download(&mut self, file: &SftpFile<'_>) -> Result<Downloaded, FetchFailure> {
        let remote = &*shown_path(file.remote);
        let other = |what: &str, e: &dyn std::fmt::Display| {
            FetchFailure::Other(format!("{remote}: {what}: {e}"))
        };
        let before = self.sftp.stat(file.remote).map_err(|e| other("stat", &e))?;
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
        let mut remote_file = self.sftp.open(file.remote).map_err(|e| other("open", &e))?;
        remote_file
            .seek(SeekFrom::Start(offset))
            .map_err(|e| other("seek", &e))?;
        // libssh2 keeps requests for up to four times the buffer in flight, in chunks of about
        // 30 KB: a large buffer keeps a large file streaming. Each read asks for no more than
        // what the file has left, so a small file does not send dozens of requests past its
        // end (each answered, and each waited for when the handle is closed). Growth past the
        // length read shows in the size after the copy.
        let mut buffer = vec![0u8; READ_BUFFER.min(len.saturating_sub(offset).max(1) as usize)];
        let mut received = 0u64;
        while offset + received < len {
            let want = (len - offset - received).min(buffer.len() as u64) as usize;
            let n = remote_file
                .read(&mut buffer[..want])
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
        // Not fsynced here: publishing makes the data durable before the rename.
        let after = self.sftp.stat(file.remote).map_err(|e| other("stat", &e))?;
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

/// What [`SftpSource::link_identical`] decided for one file.
enum Linking {
    /// Not shown identical (or no tool, no basis to link): copy it.
    Copy,
    /// Identical, and the basis is the destination itself: nothing to publish.
    InPlace(SftpFetch),
    /// Identical: this link to the basis is to be published as the destination.
    Link(TempFile, SftpFetch),
    /// Identical, but the link could not be made.
    Failed(String),
}

/// Verified files and links of a batch waiting to be published together: one [`PublishBatch`]
/// commit for the lot (committed early when it is full), each file reported once committed.
#[derive(Default)]
struct Publishing {
    batch: PublishBatch,
    /// Index, remote path and report of each file in the batch, in push order.
    waiting: Vec<(usize, String, SftpFetch)>,
}

impl Publishing {
    fn push(
        &mut self,
        index: usize,
        remote: &Path,
        temp: TempFile,
        fetched: SftpFetch,
        done: &mut dyn FnMut(usize, Result<SftpFetch, String>),
    ) {
        let bytes = if fetched.linked { 0 } else { fetched.len };
        self.batch.push(temp, bytes);
        self.waiting.push((index, shown_path(remote), fetched));
        if self.batch.is_full() {
            self.commit(done);
        }
    }

    fn commit(&mut self, done: &mut dyn FnMut(usize, Result<SftpFetch, String>)) {
        if self.waiting.is_empty() {
            return;
        }
        let results = self.batch.commit();
        for ((index, remote, fetched), result) in self.waiting.drain(..).zip(results) {
            done(
                index,
                result
                    .map(|()| fetched)
                    .map_err(|e| format!("{remote}: publishing: {e}")),
            );
        }
    }
}
