//! The two traits the fetch layer runs on: [`SessionSource`] opens sessions with the far side,
//! [`FetchEvents`] hears what becomes of each file. The caller implements both (the passive
//! node over `primary_ssh_command`; `barsync copy` over its own transport); the pool and the
//! split files only see these.

use std::path::Path;

use crate::copy::PullSource;
use crate::file_error::FileError;
use crate::protocol::FetchReport;

/// One open session with the far side: a [`PullSource`] and what the pool needs to know of it.
pub trait FetchSession: Send {
    /// The file source of this session.
    fn source(&mut self) -> &mut dyn PullSource;
    /// Whether the far side serves byte ranges of files (so very large files can be split into
    /// parts shared by several sessions).
    fn supports_parts(&self) -> bool;
    /// Who is at the other end (for messages).
    fn peer(&self) -> &str;
    /// Bytes sent and received since the last call (a session's traffic is counted once,
    /// however many copies share it), when known.
    fn take_traffic(&mut self) -> Option<(u64, u64)>;
}

/// Opens (and takes back) the sessions of one copy.
pub trait SessionSource: Sync {
    /// The sessions this source opens.
    type Session: FetchSession;
    /// Why a session could not be opened or ended cleanly.
    type Error: std::fmt::Display;

    /// Opens a new session; `events` hears warnings (a fallback taken, for instance).
    fn open(&self, events: &dyn FetchEvents) -> Result<Self::Session, Self::Error>;

    /// A session left open by an earlier copy that still answers, if the source keeps them.
    fn reuse(&self) -> Option<Self::Session> {
        None
    }

    /// Takes back a session the pool is done with: closed, or kept for a later copy.
    fn release(&self, session: Self::Session) -> Result<(), Self::Error>;
}

/// What the fetch layer tells its caller as files arrive.
pub trait FetchEvents: Sync {
    /// A warning (files fetched again, a fallback taken).
    fn warning(&self, message: &str);
    /// One file copied (or failed); `path` is the far side's path. For a file fetched in
    /// parts, `part_done` came first for each part that arrived.
    fn file_done(&self, _path: &Path, _result: &Result<FetchReport, FileError>) {}
    /// One part (`bytes` long) of the split file `path` arrived, verified (for progress: a
    /// 1 GiB file moves the display part by part rather than once at the end).
    fn part_done(&self, _path: &Path, _bytes: u64) {}
}
