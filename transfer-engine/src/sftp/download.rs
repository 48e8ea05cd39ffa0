//! Pipelined downloads: many files open and many READs in flight on one SFTP session, as
//! OpenSSH's own client keeps them, so that neither the round trip nor the server's turn
//! between two requests paces the copy.
//!
//! Each file goes OPEN → FSTAT (size, mode, mtime before) → READs → FSTAT (after) → CLOSE.
//! Up to [`MAX_OPEN_FILES`] files are in progress at once and up to [`MAX_READS`] READs of the
//! session's read size are in flight among them, the oldest file served first. A new small
//! file needs no round trip of its own for its data: its first READ goes out with its FSTAT.
//! Replies are matched by id, in whatever order they come; data is written at its offset in
//! the partial copy. A short DATA is followed by a READ for the rest; an EOF before the size
//! the first FSTAT gave shows as a file that changed. While data comes in order (as OpenSSH's
//! server sends it), a new file is hashed as it is written (the check then needs no second
//! pass over it) and its writeback is started every [`WRITEBACK_EVERY`] bytes (so that
//! publishing finds little left to flush). Nothing from the server is trusted: a
//! DATA longer than asked or empty, or a reply to nothing asked, ends the session; data
//! beyond the caller's limit fails that file.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::checksum::LocalHasher;
use super::client::{SftpClient, SftpError};
use super::wire::{open_flags, status, Attrs, Reply, Request};
use super::FetchFailure;
use crate::file_error::{FileError, FileErrorKind};
use crate::names::shown_path;

/// Files in progress at once (each holds a handle on the server).
pub(super) const MAX_OPEN_FILES: usize = 32;
/// READs in flight at once, over all files (OpenSSH's client keeps 64).
pub(super) const MAX_READS: usize = 64;
/// Bytes written in order between two writeback requests (as [`crate::fs::WritebackWriter`]).
const WRITEBACK_EVERY: u64 = crate::fs::WritebackWriter::<&File>::INTERVAL;

/// One file to download into its partial copy.
pub(super) struct Job<'a> {
    pub remote: &'a Path,
    /// The partial copy, open for writing (not in append mode: data is written at offsets).
    pub file: &'a File,
    /// Bytes already in the partial copy: the download resumes there (restarts at 0 when the
    /// remote file is now shorter).
    pub start: u64,
    /// No byte at or beyond this offset is written (the size the caller was told).
    pub limit: u64,
    /// Hashes the file as it is written, when it is written from its start in order.
    pub hasher: Option<LocalHasher>,
}

/// What downloading one file did.
#[derive(Clone, Debug)]
pub(super) struct Fetched {
    /// The attributes the file had when it was opened (and still had at the end).
    pub before: Attrs,
    /// Bytes in the partial copy now.
    pub copied: u64,
    /// Bytes read over SFTP.
    pub received: u64,
    /// The hash of the copy, when it was written from its start in order.
    pub hash: Option<String>,
}

/// What a request in flight was for.
#[derive(Clone, Copy, Debug)]
enum Tag {
    Open,
    Before,
    Read { offset: u64, len: u32 },
    After,
    Close,
}

/// A file in progress.
struct Active {
    job: usize,
    handle: Option<Vec<u8>>,
    start: u64,
    before: Option<Attrs>,
    /// The size from the first FSTAT.
    len: Option<u64>,
    /// Next offset not yet asked for.
    next: u64,
    /// Ranges asked again after a short read.
    again: VecDeque<(u64, u32)>,
    /// Offset of the first EOF answer.
    eof_at: Option<u64>,
    received: u64,
    after: Option<Attrs>,
    /// Bytes written in order from the start (or from where the download resumed).
    in_order: u64,
    /// Writeback was started up to here.
    flushed: u64,
    /// Hashes the bytes written in order from offset 0; dropped at the first byte out of order.
    hasher: Option<LocalHasher>,
    /// Requests of this file in flight.
    pending: usize,
    reads: usize,
    failure: Option<FetchFailure>,
    /// FSTAT (after) and CLOSE sent.
    closing: bool,
}

impl Active {
    fn fail(&mut self, failure: FetchFailure) {
        if self.failure.is_none() {
            self.failure = Some(failure);
        }
    }

    /// Whether every byte that will be asked for has been asked for and answered.
    fn reads_done(&self) -> bool {
        if self.failure.is_some() {
            return self.reads == 0;
        }
        let Some(len) = self.len else {
            return false;
        };
        let end = self.eof_at.map_or(len, |eof| eof.min(len));
        self.reads == 0 && self.next >= end && self.again.iter().all(|&(at, _)| at >= end)
    }
}

/// Downloads `jobs` through `client`, calling `done(index, result)` once per job as each
/// finishes, and `hook(bytes)` after each piece of data. A session error ends the call (the
/// jobs not reported yet are left to the caller).
pub(super) fn download_many(
    client: &mut SftpClient,
    jobs: &[Job<'_>],
    hook: &mut dyn FnMut(usize),
    done: &mut dyn FnMut(usize, Result<Fetched, FetchFailure>),
) -> Result<(), SftpError> {
    let chunk = client.limits().read;
    let mut in_flight: HashMap<u32, (usize, Tag)> = HashMap::new();
    // Slots of files in progress, oldest first (a slot is an index into `active`).
    let mut active: Vec<Option<Active>> = Vec::new();
    let mut order: VecDeque<usize> = VecDeque::new();
    let mut next_job = 0;
    let mut reads = 0usize;
    loop {
        // Start files while there is room.
        while next_job < jobs.len() && order.len() < MAX_OPEN_FILES {
            let job = &jobs[next_job];
            let id = client.send(&Request::Open {
                path: job.remote.as_os_str().as_bytes(),
                flags: open_flags::READ,
                attrs: &Attrs::default(),
            })?;
            let slot = match active.iter().position(Option::is_none) {
                Some(free) => free,
                None => {
                    active.push(None);
                    active.len() - 1
                }
            };
            active[slot] = Some(Active {
                job: next_job,
                handle: None,
                start: job.start,
                before: None,
                len: None,
                next: job.start,
                again: VecDeque::new(),
                eof_at: None,
                received: 0,
                after: None,
                in_order: job.start,
                flushed: job.start,
                hasher: if job.start == 0 {
                    job.hasher.clone()
                } else {
                    None
                },
                pending: 1,
                reads: 0,
                failure: None,
                closing: false,
            });
            in_flight.insert(id, (slot, Tag::Open));
            order.push_back(slot);
            next_job += 1;
        }
        // READs, oldest file first; then the ends of files whose data is all in.
        for &slot in &order {
            let file = active[slot].as_mut().expect("ordered slots are active");
            let Some(handle) = file.handle.as_deref() else {
                continue;
            };
            if file.failure.is_none() {
                if let Some(len) = file.len {
                    let end = file.eof_at.map_or(len, |eof| eof.min(len));
                    while reads < MAX_READS {
                        let (offset, want) = match file.again.pop_front() {
                            Some((at, _)) if at >= end => continue,
                            Some((at, want)) => (at, want.min((end - at) as u32)),
                            None if file.next < end => {
                                let want = (end - file.next).min(u64::from(chunk)) as u32;
                                file.next += u64::from(want);
                                (file.next - u64::from(want), want)
                            }
                            None => break,
                        };
                        let id = client.send(&Request::Read {
                            handle,
                            offset,
                            len: want,
                        })?;
                        in_flight.insert(id, (slot, Tag::Read { offset, len: want }));
                        file.pending += 1;
                        file.reads += 1;
                        reads += 1;
                    }
                }
            }
            if !file.closing && file.reads_done() {
                file.closing = true;
                if file.failure.is_none() {
                    let id = client.send(&Request::Fstat { handle })?;
                    in_flight.insert(id, (slot, Tag::After));
                    file.pending += 1;
                }
                let id = client.send(&Request::Close { handle })?;
                in_flight.insert(id, (slot, Tag::Close));
                file.pending += 1;
            }
        }
        // Report the files that have nothing left in flight.
        let mut index = 0;
        while index < order.len() {
            let slot = order[index];
            let file = active[slot].as_ref().expect("ordered slots are active");
            let finished = file.pending == 0 && (file.closing || file.handle.is_none());
            if !finished {
                index += 1;
                continue;
            }
            order.remove(index);
            let file = active[slot].take().expect("checked above");
            let job = &jobs[file.job];
            done(file.job, finish(job, file));
        }
        if in_flight.is_empty() {
            if next_job >= jobs.len() && order.is_empty() {
                return Ok(());
            }
            if order.is_empty() {
                continue;
            }
            return Err(client.fail("the download stalled with no request in flight".to_owned()));
        }
        // One reply.
        client.read_packet()?;
        let reply = Got::from(client.reply()?);
        let Some(id) = reply.id() else {
            return Err(client.unexpected("a second VERSION".to_owned()));
        };
        let Some((slot, tag)) = in_flight.remove(&id) else {
            return Err(client.unexpected(format!("an answer to request {id}, not asked")));
        };
        let file = active[slot]
            .as_mut()
            .expect("a request in flight has its file");
        file.pending -= 1;
        let job = &jobs[file.job];
        let remote = || shown_path(job.remote);
        let refused = |what: &str, error: &SftpError| FetchFailure::sftp(job.remote, what, error);
        let local = |what: &str, error: &std::io::Error| {
            FetchFailure::local(error, format!("{}: {what}: {error}", remote()))
        };
        match (tag, reply) {
            (Tag::Open, Got::Handle { handle, .. }) => {
                let handle = handle.to_vec();
                let id = client.send(&Request::Fstat { handle: &handle })?;
                in_flight.insert(id, (slot, Tag::Before));
                file.pending += 1;
                // A new file's first READ goes with its FSTAT: a small file is then read
                // without a round trip of its own.
                if file.start == 0 && reads < MAX_READS {
                    let want = chunk.min(job.limit.min(u64::from(u32::MAX)) as u32);
                    if want > 0 {
                        let id = client.send(&Request::Read {
                            handle: &handle,
                            offset: 0,
                            len: want,
                        })?;
                        in_flight.insert(
                            id,
                            (
                                slot,
                                Tag::Read {
                                    offset: 0,
                                    len: want,
                                },
                            ),
                        );
                        file.pending += 1;
                        file.reads += 1;
                        file.next = u64::from(want);
                        reads += 1;
                    }
                }
                file.handle = Some(handle);
            }
            (Tag::Open, Got::Status { code, message, .. }) => {
                file.fail(refused("open", &status_error(code, message)));
            }
            (Tag::Before, Got::Attrs { attrs, .. }) => {
                let len = attrs.size.unwrap_or(0);
                file.before = Some(attrs);
                file.len = Some(len);
                if len > job.limit {
                    file.fail(FetchFailure::Refused(FileError::new(
                        FileErrorKind::Corrupt,
                        format!(
                            "{} has {len} bytes, more than the {} expected",
                            remote(),
                            job.limit
                        ),
                    )));
                } else if file.start > len {
                    // A partial copy longer than the file: start again.
                    if let Err(e) = job.file.set_len(0) {
                        file.fail(local("partial copy", &e));
                    }
                    file.start = 0;
                    file.next = 0;
                    file.in_order = 0;
                    file.flushed = 0;
                }
            }
            (Tag::Before, Got::Status { code, message, .. }) => {
                file.fail(refused("stat", &status_error(code, message)));
            }
            (Tag::Read { offset, len }, Got::Data { data, .. }) => {
                file.reads -= 1;
                reads -= 1;
                if data.is_empty() || data.len() > len as usize {
                    return Err(client.unexpected(format!(
                        "{} bytes of DATA for a READ of {len} bytes of {}",
                        data.len(),
                        remote()
                    )));
                }
                if file.failure.is_some() {
                    continue;
                }
                let end = offset + data.len() as u64;
                if end > job.limit {
                    file.fail(FetchFailure::Refused(FileError::new(
                        FileErrorKind::Corrupt,
                        format!(
                            "{} grew beyond the {} bytes expected while it was copied",
                            remote(),
                            job.limit
                        ),
                    )));
                    continue;
                }
                if let Err(e) = job.file.write_all_at(data, offset) {
                    file.fail(local("writing the partial copy", &e));
                    continue;
                }
                let n = data.len();
                file.received += n as u64;
                if offset == file.in_order {
                    file.in_order = end;
                    if let Some(hasher) = file.hasher.as_mut() {
                        hasher.update(data);
                    }
                    if file.in_order - file.flushed >= WRITEBACK_EVERY {
                        start_writeback(job.file, file.flushed, file.in_order);
                        file.flushed = file.in_order;
                    }
                } else {
                    file.hasher = None;
                }
                if n < len as usize {
                    file.again.push_back((end, len - n as u32));
                }
                hook(n);
            }
            (Tag::Read { offset, .. }, Got::Status { code, message, .. }) => {
                file.reads -= 1;
                reads -= 1;
                if code == status::EOF {
                    file.eof_at = Some(file.eof_at.map_or(offset, |eof| eof.min(offset)));
                } else {
                    file.fail(refused("read", &status_error(code, message)));
                }
            }
            (Tag::After, Got::Attrs { attrs, .. }) => file.after = Some(attrs),
            (Tag::After, Got::Status { code, message, .. }) => {
                file.fail(refused("stat", &status_error(code, message)));
            }
            // A failed CLOSE of a file opened for reading changes nothing that was read.
            (Tag::Close, Got::Status { .. }) => {}
            (tag, reply) => {
                let kind = reply.kind_name();
                return Err(client.unexpected(format!("{kind} to {tag:?} of {}", remote())));
            }
        }
    }
}

/// The replies a download expects, without anything to drop: holding one does not keep the
/// client borrowed past its last use.
#[derive(Clone, Copy)]
enum Got<'a> {
    Handle {
        id: u32,
        handle: &'a [u8],
    },
    Status {
        id: u32,
        code: u32,
        message: &'a [u8],
    },
    Data {
        id: u32,
        data: &'a [u8],
    },
    Attrs {
        id: u32,
        attrs: Attrs,
    },
    Other {
        id: Option<u32>,
        kind: &'static str,
    },
}

impl<'a> From<Reply<'a>> for Got<'a> {
    fn from(reply: Reply<'a>) -> Got<'a> {
        match reply {
            Reply::Handle { id, handle } => Got::Handle { id, handle },
            Reply::Status { id, code, message } => Got::Status { id, code, message },
            Reply::Data { id, data } => Got::Data { id, data },
            Reply::Attrs { id, attrs } => Got::Attrs { id, attrs },
            other => Got::Other {
                id: other.id(),
                kind: other.kind_name(),
            },
        }
    }
}

impl Got<'_> {
    fn id(&self) -> Option<u32> {
        match *self {
            Got::Handle { id, .. }
            | Got::Status { id, .. }
            | Got::Data { id, .. }
            | Got::Attrs { id, .. } => Some(id),
            Got::Other { id, .. } => id,
        }
    }

    fn kind_name(&self) -> &'static str {
        match *self {
            Got::Handle { .. } => "HANDLE",
            Got::Status { .. } => "STATUS",
            Got::Data { .. } => "DATA",
            Got::Attrs { .. } => "ATTRS",
            Got::Other { kind, .. } => kind,
        }
    }
}

/// Starts writeback of `file[from..to]` without waiting (a hint: failure changes nothing).
fn start_writeback(file: &File, from: u64, to: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on an open descriptor; it reads no memory of ours.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            from as libc::off64_t,
            (to - from) as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

fn status_error(code: u32, message: &[u8]) -> SftpError {
    SftpError::Status {
        code,
        message: crate::names::shown_bytes(message),
    }
}

/// The result of a file whose requests are all answered: its failure, or the copy checked
/// against the two FSTATs (size and mtime unchanged, every byte copied).
fn finish(job: &Job<'_>, file: Active) -> Result<Fetched, FetchFailure> {
    if let Some(failure) = file.failure {
        return Err(failure);
    }
    let remote = shown_path(job.remote);
    let (Some(before), Some(after)) = (file.before, file.after) else {
        return Err(FetchFailure::other(
            FileErrorKind::Remote,
            format!("{remote}: no attributes"),
        ));
    };
    let copied = job
        .file
        .metadata()
        .map_err(|e| FetchFailure::local(&e, format!("{remote}: partial copy: {e}")))?
        .len();
    if Some(copied) != after.size || after.mtime() != before.mtime() || after.size != before.size {
        return Err(FetchFailure::Mismatch(FileError::new(
            FileErrorKind::SourceChanged,
            format!("{remote} changed while it was copied"),
        )));
    }
    let hash = match file.hasher {
        Some(hasher) if file.in_order == copied => Some(hasher.finish()),
        _ => None,
    };
    Ok(Fetched {
        before,
        copied,
        received: file.received,
        hash,
    })
}
