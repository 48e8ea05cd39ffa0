//! Copying trees between this side and a session's server: [`pull`] fetches into a local
//! directory, [`push`] sends a local tree (the two directions of `barsync copy`).
//!
//! The plan follows rsync: a source with a trailing slash copies its contents, without one it
//! copies the directory itself; files whose size and mtime match are skipped (unless
//! `checksum`, which delta-transfers every file: unchanged ones cost one signature and a few
//! copy operations); mode and mtime are preserved; symlinks are copied as symlinks and never
//! followed; `delete` removes local entries the source no longer has. A file cut off in the
//! middle is kept as `.<name>.barsync-partial` and used as the basis of the next attempt, and
//! files already complete are skipped next time, so an interrupted copy resumes.
//!
//! A pull trusts the destination it was given, not the far side's listing: entries that do not
//! fit together (below a path listed as a symlink or file, listed twice) are refused by name,
//! every file and directory is reached from the destination root without following any symlink
//! ([`crate::confine::Destination`]), symlinks are created after every file, and `delete` walks
//! by directory handles. A push relies on the server, which confines every write below its
//! roots the same way.
//!
//! Split by stage: `source.rs` holds the far side's traits ([`PullSource`], [`PushTarget`])
//! and their impls for the protocol client and SFTP; `pull.rs` plans and fetches into a local
//! tree; `push.rs` lists a local tree and sends it. This module owns what they share: the
//! options, the report, the error and the name of a partial file.

use std::io;
use std::path::{Path, PathBuf};

use crate::file_error::FileError;
use crate::protocol::ProtocolError;

mod pull;
mod push;
mod source;

pub use pull::{pull, pull_pooled, PullPool};
pub use push::{local_entries, push};
pub use source::{PullSource, PushTarget};

/// Options of a copy.
#[derive(Clone, Copy, Debug, Default)]
pub struct CopyOptions {
    /// Copy directories recursively.
    pub recursive: bool,
    /// Remove local entries the source does not have.
    pub delete: bool,
    /// Only report what would be done.
    pub dry_run: bool,
    /// Compare content, not size and mtime.
    pub checksum: bool,
    /// Update existing files in place, writing only what changed (rsync's `--inplace`). Faster
    /// for large files that change a little, but a failed update leaves the file modified.
    pub in_place: bool,
}

/// What a copy did (or, in a dry run, would do).
#[derive(Clone, Debug, Default)]
pub struct CopyReport {
    /// Files in the source.
    pub files: u64,
    /// Files transferred.
    pub transferred: u64,
    /// Files skipped as already up to date.
    pub skipped: u64,
    /// Size of the transferred files.
    pub bytes: u64,
    /// Bytes received on the wire (listings and file data; for SFTP, file data only).
    pub received_bytes: u64,
    /// Bytes sent on the wire (requests and signatures; for SFTP, none counted).
    pub sent_bytes: u64,
    /// Bytes rebuilt from local data rather than received.
    pub reused_bytes: u64,
    /// Of those, how many were copied each way ("kernel copy", "reflink", "user copy"), where
    /// the rebuild says.
    pub reused_by: std::collections::BTreeMap<&'static str, u64>,
    /// Symlinks created or replaced.
    pub symlinks: u64,
    /// Local entries removed by `delete`.
    pub deleted: u64,
    /// Sessions used (a pull through the fetch pool may use several).
    pub sessions: u64,
    /// Files fetched in parts shared by the sessions, and the number of their parts.
    pub split_files: u64,
    /// Parts of those files.
    pub parts: u64,
    /// How many files were verified each way (e.g. "barsync digest", "SFTP, remote sha256sum").
    pub verified_by: std::collections::BTreeMap<&'static str, u64>,
    /// Per-file failures, each naming its file.
    pub errors: Vec<String>,
    /// The actions, one line each (filled in a dry run).
    pub plan: Vec<String>,
}

/// Why a copy could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The session failed.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The far side failed otherwise (its words).
    #[error("remote: {0}")]
    Remote(String),
    /// The far side refused or failed to list a path (the source, or a push's destination).
    #[error("remote: {0}")]
    Listing(FileError),
    /// The source is a directory but the copy is not recursive.
    #[error("{0} is a directory (use -r to copy directories)")]
    NotRecursive(String),
    /// A local file system operation failed.
    #[error("{}: {source}", crate::names::shown_path(path))]
    Local {
        /// The file or directory.
        path: PathBuf,
        /// How it failed.
        #[source]
        source: io::Error,
    },
}

fn local_error(path: &Path) -> impl FnOnce(io::Error) -> CopyError + '_ {
    move |source| CopyError::Local {
        path: path.to_path_buf(),
        source,
    }
}

/// The name under which an interrupted transfer of `path` is kept (`.<name>.barsync-partial`,
/// shortened for long names: [`crate::names::partial`]).
pub fn partial_path(path: &Path) -> PathBuf {
    path.with_file_name(crate::names::partial(path.file_name().unwrap_or_default()))
}

/// Whether two modification times are the same file version: equal seconds, and equal
/// nanoseconds unless one side keeps only seconds (SFTP, some file systems), as rsync compares.
fn mtimes_match(a: (i64, u32), b: (i64, u32)) -> bool {
    a.0 == b.0 && (a.1 == b.1 || a.1 == 0 || b.1 == 0)
}
