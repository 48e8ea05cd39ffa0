//! `Watch`: the far side waits for a file to change and answers with its new tail.
//!
//! A client that follows an append-only file (the primary's xlog db) sends
//! `Watch(req, path, since_len, since_id, offset, max_bytes, timeout_ms)`; the server answers
//! `Watched(req, len, id, mtime, changed, bytes)` as soon as the file's length or identity (its
//! inode) differs from `since_len`/`since_id`, or when `timeout_ms` has passed, whichever comes
//! first. `bytes` are the file's bytes from `offset` (at most `max_bytes`), read after the
//! change, so one round trip both wakes the client and carries what was appended.
//!
//! The server waits with inotify on the file's directory (opened below its roots without
//! following a symlink; the watch is added through `/proc/self/fd`, so it is on that very
//! directory), which sees appends, replacements (a rename into place) and removals; where
//! inotify is unavailable (or `BARSYNC_SERVE_NO_INOTIFY` is set in the server's environment,
//! which the tests of the fallback use) it looks at the file every [`POLL_INTERVAL`]. Only a server whose
//! `Hello` announces [`FEATURE_WATCH`](super::handshake::FEATURE_WATCH) is sent `Watch`;
//! clients fall back to listing the file.

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, Instant};

use super::frame::{Fields, FrameWriter, Kind};
use super::ProtocolError;
use crate::confine::{open_below, open_file_below, RelativePath, Roots};
use crate::file_error::{FileError, FileErrorKind};

/// How often the server looks at the file when inotify is not available.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// The longest a server waits before answering (a client asking for more gets this).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// The most bytes one answer carries (the frame limit leaves room for the header fields).
pub const MAX_BYTES: u32 = (super::frame::MAX_PAYLOAD - 4096) as u32;

/// What a client asks: wake me when `path` is no longer `since_len` bytes long with identity
/// `since_id` (0: unknown, so any existing file differs), and send its bytes from `offset`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchRequest {
    /// The file's length as the client last saw it (`u64::MAX`: answer at once).
    pub since_len: u64,
    /// The file's inode as the client last saw it (0: unknown).
    pub since_id: u64,
    /// Where the bytes of the answer start.
    pub offset: u64,
    /// The most bytes the answer carries (at most [`MAX_BYTES`]).
    pub max_bytes: u32,
    /// How long the server waits for a change (at most [`MAX_TIMEOUT`]).
    pub timeout: Duration,
}

/// The server's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watched {
    /// The file's length when it was read.
    pub len: u64,
    /// Its identity (inode number): another value means the file was replaced.
    pub id: u64,
    /// Its modification time, seconds since the epoch.
    pub mtime: i64,
    /// Whether the file differed from what the client saw (else the wait timed out).
    pub changed: bool,
    /// Its bytes from the requested offset, at most the requested number.
    pub bytes: Vec<u8>,
}

/// Reads a `Watch` request's fields (after its request number and path).
pub(super) fn read_request(fields: &mut Fields<'_>) -> Result<WatchRequest, ProtocolError> {
    Ok(WatchRequest {
        since_len: fields.u64()?,
        since_id: fields.u64()?,
        offset: fields.u64()?,
        max_bytes: fields.u32()?,
        timeout: Duration::from_millis(u64::from(fields.u32()?)),
    })
}

/// Writes a `Watch` request.
pub(super) fn write_request<W: Write>(
    writer: &mut FrameWriter<W>,
    id: u32,
    path: &Path,
    request: &WatchRequest,
) -> Result<(), ProtocolError> {
    let timeout_ms = request.timeout.min(MAX_TIMEOUT).as_millis() as u32;
    writer
        .start()
        .u32(id)
        .path(path)
        .u64(request.since_len)
        .u64(request.since_id)
        .u64(request.offset)
        .u32(request.max_bytes.min(MAX_BYTES))
        .u32(timeout_ms);
    Ok(writer.send(Kind::Watch)?)
}

/// Reads a `Watched` answer's fields (after its request number).
pub(super) fn read_answer(fields: &mut Fields<'_>) -> Result<Watched, ProtocolError> {
    Ok(Watched {
        len: fields.u64()?,
        id: fields.u64()?,
        mtime: fields.i64()?,
        changed: fields.u8()? != 0,
        bytes: fields.bytes()?.to_vec(),
    })
}

/// The file as seen now: length, identity, mtime, and the open file to read from.
struct Seen {
    len: u64,
    id: u64,
    mtime: i64,
    file: std::fs::File,
}

fn look(root: &Path, relative: &RelativePath) -> std::io::Result<Seen> {
    let file = open_file_below(root, relative)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(Seen {
        len: meta.len(),
        id: meta.ino(),
        mtime: meta.mtime(),
        file,
    })
}

/// An inotify instance watching one directory; `None` where inotify cannot be used.
struct DirectoryWatch {
    fd: OwnedFd,
}

impl DirectoryWatch {
    fn new(root: &Path, directory: &RelativePath) -> Option<DirectoryWatch> {
        if std::env::var_os("BARSYNC_SERVE_NO_INOTIFY").is_some() {
            return None; // tests of the polling fallback
        }
        let dir = open_below(root, directory, true).ok()?;
        // SAFETY: plain system calls on descriptors this function owns.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return None;
        }
        // SAFETY: `raw` is a new descriptor owned from here on.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let path = std::ffi::CString::new(format!("/proc/self/fd/{}", dir.as_raw_fd())).ok()?;
        let mask = libc::IN_MODIFY
            | libc::IN_CLOSE_WRITE
            | libc::IN_MOVED_TO
            | libc::IN_CREATE
            | libc::IN_DELETE
            | libc::IN_ATTRIB
            | libc::IN_DELETE_SELF
            | libc::IN_MOVE_SELF;
        // SAFETY: `fd` is an inotify descriptor and `path` a NUL-terminated string.
        let added = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), mask) };
        (added >= 0).then_some(DirectoryWatch { fd })
    }

    /// Waits up to `timeout` for an event, then drains the queue; whether one came.
    fn wait(&self, timeout: Duration) -> bool {
        let mut poll = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut poll, 1, millis) };
        if ready <= 0 {
            return false;
        }
        let mut buffer = [0u8; 4096];
        loop {
            // SAFETY: reading into a buffer of the given length.
            let read = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                )
            };
            if read <= 0 {
                break;
            }
        }
        true
    }
}

/// Answers one `Watch` for `path` below `roots`: waits as the request says, then sends
/// `Watched`; `Ok(Err(failure))` when the path is refused or cannot be read (the caller
/// answers with it).
pub(super) fn answer<W: Write>(
    writer: &mut FrameWriter<W>,
    roots: &Roots,
    id: u32,
    path: &Path,
    request: &WatchRequest,
) -> Result<Result<(), FileError>, ProtocolError> {
    let shown = crate::names::shown_path(path);
    let (root, relative) = match roots.resolve(path) {
        Ok(resolved) => resolved,
        Err(e) => return Ok(Err(FileError::new(FileErrorKind::Refused, e.to_string()))),
    };
    let parent = relative
        .as_path()
        .parent()
        .and_then(|p| RelativePath::from_path(p).ok())
        .unwrap_or_else(|| RelativePath::new("").expect("empty is valid"));
    let deadline = Instant::now() + request.timeout.min(MAX_TIMEOUT);
    let differs = |seen: &Seen| seen.len != request.since_len || seen.id != request.since_id;
    let mut watch = None;
    let mut watch_tried = false;
    let outcome: std::io::Result<(bool, Seen)> = loop {
        let seen = look(root, &relative);
        let now = Instant::now();
        let timed_out = now >= deadline;
        match seen {
            Ok(seen) if differs(&seen) => break Ok((true, seen)),
            Ok(seen) if timed_out => break Ok((false, seen)),
            Err(e) if timed_out => break Err(e),
            _ => {}
        }
        if !watch_tried {
            // Set up after the first look; look again at once, so that a change between the
            // two is not missed.
            watch_tried = true;
            watch = DirectoryWatch::new(root, &parent);
            continue;
        }
        let remaining = deadline - now;
        match &watch {
            Some(watch) => {
                watch.wait(remaining);
            }
            None => std::thread::sleep(POLL_INTERVAL.min(remaining)),
        }
    };
    let (changed, seen) = match outcome {
        Ok(found) => found,
        Err(e) => return Ok(Err(far_side_io(&e, &shown))),
    };
    let available = seen.len.saturating_sub(request.offset);
    let wanted = available.min(u64::from(request.max_bytes.min(MAX_BYTES))) as usize;
    let mut bytes = vec![0u8; wanted];
    let mut got = 0;
    while got < wanted {
        match seen
            .file
            .read_at(&mut bytes[got..], request.offset + got as u64)
        {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Ok(Err(far_side_io(&e, &shown))),
        }
    }
    bytes.truncate(got);
    writer
        .start()
        .u32(id)
        .u64(seen.len)
        .u64(seen.id)
        .i64(seen.mtime)
        .u8(u8::from(changed))
        .bytes(&bytes);
    writer.send(Kind::Watched)?;
    Ok(Ok(()))
}

/// A failure reading the watched file `shown` on this (the far) side.
fn far_side_io(error: &std::io::Error, shown: &str) -> FileError {
    FileError::new(
        FileErrorKind::of_io(error, true),
        format!("{shown}: {error}"),
    )
}
