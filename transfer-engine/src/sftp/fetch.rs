//! Fetching files over SFTP: each is downloaded into its partial copy (resumed by length),
//! checked against the host's checksum tool, and published by a rename inside its directory,
//! reached from the destination's root without following symlinks; a batch of files is
//! downloaded with many requests in flight (`download.rs`), hashed on the host by one command
//! that runs while it downloads, made durable and published together. A file the tool shows
//! identical to a local basis is hard-linked to it instead (`reuse_backup = link`).

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{openat, unlinkat, AtFlags, Mode, OFlags};

use super::checksum::LocalHasher;
use super::download::{download_many, Fetched, Job};
use super::sums::{Pending, RemoteSums};
use super::{FetchFailure, SftpSource, Verification};
use crate::confine::Destination;
use crate::file_error::{FileError, FileErrorKind};
use crate::fs::{open_basis, PublishBatch, TempFile};
use crate::names::shown_path;

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
    pub fn fetch(&mut self, file: &SftpFile<'_>) -> Result<SftpFetch, FileError> {
        let mut result = self.fetch_once(file);
        if let Err(FetchFailure::Mismatch(_)) = &result {
            remove_partial(file);
            result = self.fetch_once(file);
        }
        result.map_err(|failure| {
            if let FetchFailure::Refused(_) = failure {
                remove_partial(file);
            }
            failure.into_error().for_file(file.remote)
        })
    }

    fn fetch_once(&mut self, file: &SftpFile<'_>) -> Result<SftpFetch, FetchFailure> {
        let sums = self.submit_sums(&[file.remote]);
        let mut downloaded = self.download(std::slice::from_ref(file));
        let downloaded = downloaded.pop().expect("one result for one file")?;
        self.compare(file.remote, &downloaded, &sums.wait())?;
        self.publish(file, downloaded).map_err(FetchFailure::Other)
    }

    /// Publishes one verified file on its own (its data and its directory fsynced).
    fn publish(&self, file: &SftpFile<'_>, downloaded: Downloaded) -> Result<SftpFetch, FileError> {
        let (temp, fetched) = self.ready(file, downloaded)?;
        temp.publish()
            .map_err(|e| publishing_error(file.remote, &e))?;
        Ok(fetched)
    }

    /// A verified partial copy with the remote mode and mtime set, ready to be renamed over
    /// its destination: alone ([`TempFile::publish`]) or with others ([`PublishBatch`]).
    fn ready(
        &self,
        file: &SftpFile<'_>,
        downloaded: Downloaded,
    ) -> Result<(TempFile, SftpFetch), FileError> {
        use std::os::unix::fs::PermissionsExt;
        let failed = |e: io::Error| publishing_error(file.remote, &e);
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

    /// Fetches many files, a batch at a time. The host's checksum tool gets every batch at
    /// once and hashes them in order while the files are downloaded. First the files with a basis
    /// to link: where the tool shows the remote file identical to its basis (the local hash of
    /// the same kind), the basis is hard-linked as the destination and nothing is downloaded;
    /// never on size and mtime alone, so without a tool every file is copied. The others are
    /// downloaded into their partial copies, many at once, checked against the tool's hashes
    /// (a file the batch's run did not hash is asked for alone), and published together with
    /// the links ([`PublishBatch`]: one `syncfs` and one fsync per directory, not two fsyncs per
    /// file). A file whose check fails is fetched once more on its own. `done(index, result)` is
    /// called once for each.
    pub fn fetch_many(
        &mut self,
        files: &[SftpFile<'_>],
        done: &mut dyn FnMut(usize, Result<SftpFetch, FileError>),
    ) {
        // Each downloaded file of a batch stays open until the batch is checked.
        const BATCH_FILES: usize = 256;
        let batches: Vec<&[SftpFile<'_>]> = files.chunks(BATCH_FILES).collect();
        // Every batch goes to the host's tool at once: it hashes ahead of the downloads.
        let pending: Vec<Pending> = batches
            .iter()
            .map(|batch| {
                let remotes: Vec<&Path> = batch.iter().map(|file| file.remote).collect();
                self.submit_sums(&remotes)
            })
            .collect();
        for ((number, batch), job) in batches.iter().enumerate().zip(pending) {
            let start = number * BATCH_FILES;
            let mut publishing = Publishing::default();
            let needs_sums_first = self.check != Verification::SizeAndMtime
                && batch.iter().any(|file| file.link_basis.is_some());
            let (mut sums, mut job) = if needs_sums_first {
                (job.wait(), None)
            } else {
                (RemoteSums::new(), Some(job))
            };
            let mut to_copy = Vec::with_capacity(batch.len());
            for (offset, linked) in self.link_identical(batch, &sums).into_iter().enumerate() {
                let remote = batch[offset].remote;
                match linked {
                    Linking::Copy => to_copy.push(offset),
                    Linking::Link(link, fetched) => {
                        publishing.push(start + offset, remote, link, fetched, done)
                    }
                    Linking::InPlace(fetched) => done(start + offset, Ok(fetched)),
                    Linking::Failed(error) => done(start + offset, Err(error.for_file(remote))),
                }
            }
            let copies: Vec<SftpFile<'_>> = to_copy.iter().map(|&offset| batch[offset]).collect();
            let downloads = self.download(&copies);
            if let Some(job) = job.take() {
                sums = job.wait();
            }
            for (offset, download) in to_copy.into_iter().zip(downloads) {
                let file = &batch[offset];
                let result = match download {
                    Err(FetchFailure::Mismatch(_)) => {
                        remove_partial(file);
                        self.fetch(file)
                    }
                    Err(FetchFailure::Refused(error)) => {
                        remove_partial(file);
                        Err(error)
                    }
                    Err(FetchFailure::Other(error)) => Err(error),
                    Ok(downloaded) => match self.compare(file.remote, &downloaded, &sums) {
                        Ok(()) => match self.ready(file, downloaded) {
                            Ok((temp, fetched)) => {
                                publishing.push(start + offset, file.remote, temp, fetched, done);
                                continue;
                            }
                            Err(error) => Err(error),
                        },
                        Err(FetchFailure::Mismatch(_)) => {
                            drop(downloaded);
                            remove_partial(file);
                            self.fetch(file)
                        }
                        Err(failure) => Err(failure.into_error()),
                    },
                }
                .map_err(|error| error.for_file(file.remote));
                done(start + offset, result);
            }
            publishing.commit(done);
        }
    }

    /// Links the files of `batch` that the host's checksum tool shows identical (in `sums`) to
    /// their [`link_basis`](SftpFile::link_basis); what was decided for each file.
    fn link_identical(&self, batch: &[SftpFile<'_>], sums: &RemoteSums) -> Vec<Linking> {
        let mut results: Vec<Linking> = (0..batch.len()).map(|_| Linking::Copy).collect();
        if self.check == Verification::SizeAndMtime {
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
                    Err(e) => Linking::Failed(FileError::local_io(
                        &e,
                        format!(
                            "{}: linking {} to {}: {e}",
                            shown_path(file.remote),
                            basis.display(),
                            file.destination.path().display()
                        ),
                    )),
                }
            };
        }
        results
    }

    /// Compares the local copy with the host's sum from `sums`, or asks the host for this one
    /// file when the batch has no sum for it.
    fn compare(
        &mut self,
        remote: &Path,
        downloaded: &Downloaded,
        sums: &RemoteSums,
    ) -> Result<(), FetchFailure> {
        match sums.get(remote) {
            Some(theirs) => {
                self.compare_with(remote, &downloaded.file, downloaded.hash.as_deref(), theirs)
            }
            None => self.verify(remote, &downloaded.file),
        }
    }

    /// Downloads `files` into their partial copies (resuming what an earlier attempt kept),
    /// many at once, checking that each file did not change meanwhile; one result per file,
    /// in order. A partial copy is opened in the destination's directory, reached from its
    /// root without following symlinks, never through a symlink.
    fn download(&mut self, files: &[SftpFile<'_>]) -> Vec<Result<Downloaded, FetchFailure>> {
        let mut results: Vec<Option<Result<Downloaded, FetchFailure>>> =
            (0..files.len()).map(|_| None).collect();
        let mut opened: Vec<(usize, OwnedFd, File, u64)> = Vec::with_capacity(files.len());
        for (index, file) in files.iter().enumerate() {
            let partial = open_partial(file).and_then(|(dir, local)| {
                let start = local.metadata()?.len();
                Ok((dir, local, start))
            });
            match partial {
                Ok((dir, local, start)) => opened.push((index, dir, local, start)),
                Err(e) => {
                    results[index] = Some(Err(FetchFailure::local(
                        &e,
                        format!(
                            "{}: opening the partial copy in {}: {e}",
                            shown_path(file.remote),
                            file.destination.path().display()
                        ),
                    )))
                }
            }
        }
        let check = self.check;
        let jobs: Vec<Job<'_>> = opened
            .iter()
            .map(|(index, _, local, start)| Job {
                remote: files[*index].remote,
                file: local,
                start: *start,
                limit: files[*index].max_len.unwrap_or(u64::MAX),
                hasher: LocalHasher::new(check),
            })
            .collect();
        let mut fetched: Vec<Option<Result<Fetched, FetchFailure>>> =
            (0..jobs.len()).map(|_| None).collect();
        let SftpSource {
            client, read_hook, ..
        } = self;
        let mut no_hook = |_: usize| {};
        let hook: &mut dyn FnMut(usize) = match read_hook.as_mut() {
            Some(hook) => hook,
            None => &mut no_hook,
        };
        let session = download_many(client, &jobs, hook, &mut |job, result| {
            fetched[job] = Some(result);
        });
        drop(jobs);
        for ((index, dir, local, _), result) in opened.into_iter().zip(fetched) {
            let result = match (result, &session) {
                (Some(result), _) => result,
                (None, Err(error)) => Err(FetchFailure::other(
                    FileErrorKind::SessionLost,
                    format!("{}: {error}", shown_path(files[index].remote)),
                )),
                (None, Ok(())) => Err(FetchFailure::other(
                    FileErrorKind::SessionLost,
                    format!("{}: not downloaded", shown_path(files[index].remote)),
                )),
            };
            results[index] = Some(result.map(|fetched| Downloaded {
                dir,
                file: local,
                len: fetched.copied,
                received: fetched.received,
                mode: fetched.before.permissions.unwrap_or(0o644),
                mtime: i64::from(fetched.before.mtime().unwrap_or(0)),
                hash: fetched.hash,
            }));
        }
        results
            .into_iter()
            .map(|result| result.expect("every file has a result"))
            .collect()
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
    /// The hash of the copy, computed as it was written.
    hash: Option<String>,
}

/// Opens (creating it, mode 0600) the partial copy of `file` for writing at offsets, in the
/// destination's directory reached by [`Destination::open_parent`]; never through a symlink.
fn open_partial(file: &SftpFile<'_>) -> io::Result<(OwnedFd, File)> {
    let dir = file.destination.open_parent()?;
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
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

/// A failure publishing the copy of `remote` (a full disk is [`FileErrorKind::OutOfSpace`]).
fn publishing_error(remote: &Path, error: &io::Error) -> FileError {
    FileError::local_io(
        error,
        format!("{}: publishing: {error}", shown_path(remote)),
    )
    .for_file(remote)
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
    Failed(FileError),
}

/// Verified files and links of a batch waiting to be published together: one [`PublishBatch`]
/// commit for the lot (committed early when it is full), each file reported once committed.
#[derive(Default)]
struct Publishing {
    batch: PublishBatch,
    /// Index, remote path and report of each file in the batch, in push order.
    waiting: Vec<(usize, std::path::PathBuf, SftpFetch)>,
}

impl Publishing {
    fn push(
        &mut self,
        index: usize,
        remote: &Path,
        temp: TempFile,
        fetched: SftpFetch,
        done: &mut dyn FnMut(usize, Result<SftpFetch, FileError>),
    ) {
        let bytes = if fetched.linked { 0 } else { fetched.len };
        self.batch.push(temp, bytes);
        self.waiting.push((index, remote.to_path_buf(), fetched));
        if self.batch.is_full() {
            self.commit(done);
        }
    }

    fn commit(&mut self, done: &mut dyn FnMut(usize, Result<SftpFetch, FileError>)) {
        if self.waiting.is_empty() {
            return;
        }
        let results = self.batch.commit();
        for ((index, remote, fetched), result) in self.waiting.drain(..).zip(results) {
            done(
                index,
                result
                    .map(|()| fetched)
                    .map_err(|e| publishing_error(&remote, &e)),
            );
        }
    }
}
