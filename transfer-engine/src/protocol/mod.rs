//! The wire protocol: many files delta-transferred over one byte stream, pipelined.
//!
//! A session (after [`handshake`]) is a stream of [`frame`]s. The client (the side that wants
//! files: the receiver) sends requests without waiting for answers, each file request carrying
//! the signature of the client's basis for that file; the server (`barsync serve`, the sender)
//! answers each request in order, in full, before the next:
//!
//! ```text
//! client                                         server
//! Hello ───────────────────────────────────────► Hello (versions compared on both sides)
//! List(req, path, recursive) ──────────────────► ListEntry(req, …)… ListEnd(req) | RequestError
//!                                                (or ListBatch(req, zstd|raw, entries…)…)
//! FileRequest(req, path, sig_len, level)
//!   SignatureChunk(req, bytes)… ───────────────► FileBegin(req, len, mtime, mode, digest block)
//!                                                Copy(req, first, count) | Literal(req, zstd|raw, …)…
//!                                                FileEnd(req, len, digest) | RequestError(req, …)
//! RangeRequest(req, path, offset, len, sig_len, level)
//!   SignatureChunk(req, bytes)… ───────────────► FileBegin(…, file_len) … FileEnd (the range only)
//! Watch(req, path, since_len, since_id, offset, max, timeout)
//!                                          ────► Watched(req, len, id, mtime, changed, bytes)
//!                                                (once the file changed, or at the timeout)
//! Probe(req, len) ─────────────────────────────► Probed(req, bytes)… (len bytes: `probe.rs`)
//! RequestsDone ────────────────────────────────► ServerDone
//! ```
//! Because the client never waits per file, latency is paid once per batch, not once per file;
//! the client bounds how many requests are in flight ([`client::MAX_IN_FLIGHT`], 256), so memory stays
//! bounded however many files are queued. Literals are zstd-compressed when that pays
//! ([`literal`]), at level 1 instead of the level asked for once the client measured a fast
//! link ([`probe`]). Every file ends with its digest, which the client verifies before
//! publishing.
//! A `RangeRequest` (when the server's `Hello` announces ranges) asks for one byte range of a
//! file, answered and verified as if the range were a whole file; `FileBegin` then also carries
//! the whole file's length. Parts of one file fetched over several sessions are assembled by a
//! [`SplitFile`](crate::split_file::SplitFile).
//! To a client announcing `FEATURE_LIST_BATCH`, a listing goes as `ListBatch` frames: the
//! entries' records packed together and compressed like a literal (about a tenth of the bytes
//! of one `ListEntry` frame each, for a directory of many small files).
//! Errors about one file (missing, permission denied, refused path) travel as `RequestError`
//! naming the remote path and do not stop the others; `Fatal` ends the session.

pub mod client;
pub mod client_push;
pub mod frame;
pub mod handshake;
mod link;
pub mod literal;
mod part;
pub mod probe;
mod receiver;
mod sender;
pub mod server;
mod server_push;
pub mod watch;

use std::io;

pub use client::{Client, FetchOutcome, FetchReport, FetchRequest, FetchTarget, WriteMode};
pub use client_push::{PushItem, PushOutcome};
pub use handshake::{AGENT, PROTOCOL_VERSION};
pub use sender::MAX_SIGNATURE_BYTES;
pub use server::{serve, serve_with, ServeOptions};
pub use watch::{WatchRequest, Watched};

use crate::confine::RelativePath;

/// What can end a session.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The byte stream failed.
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
    /// The stream ended in the middle of a frame or a session.
    #[error("connection closed in the middle of the session (peer exited or the link was cut)")]
    Truncated,
    /// A frame broke the protocol.
    #[error("protocol violation: {0}")]
    Malformed(String),
    /// The two sides speak different protocol versions.
    #[error("protocol version mismatch: this side ({ours_agent}) speaks version {ours}, the peer ({theirs_agent}) speaks version {theirs}")]
    Version {
        /// This side's protocol version.
        ours: u32,
        /// This side's program and version.
        ours_agent: String,
        /// The peer's protocol version.
        theirs: u32,
        /// The peer's program and version.
        theirs_agent: String,
    },
    /// The peer ended the session with an error.
    #[error("peer reported a fatal error: {0}")]
    Fatal(String),
}

/// Type of a listed file system entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File = 0,
    /// A directory.
    Directory = 1,
    /// A symlink (listed, never followed).
    Symlink = 2,
}

/// One entry of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the listed directory.
    pub path: RelativePath,
    /// File, directory or symlink.
    pub kind: EntryKind,
    /// Size in bytes (files).
    pub size: u64,
    /// Modification time: seconds since the epoch and nanoseconds.
    pub mtime: (i64, u32),
    /// Permission bits.
    pub mode: u32,
    /// Target of a symlink.
    pub target: Option<std::ffi::OsString>,
}
