//! Why one file did not arrive: [`FileError`], the typed per-file failure that every layer
//! passes up unchanged (the protocol's receiver, the SFTP fallback, split files, the fetch
//! pool, the passive node's reports), and [`VerifiedBy`], how a file that did arrive was
//! checked.
//!
//! A failure's [`FileErrorKind`] says what happened, so callers decide by kind (a full disk
//! stops a copy instead of failing every remaining file; a corrupt file is fetched again) and
//! the binary words it; its detail is the text shown to the operator (the far side's own words
//! where they came from there). A far side that announces
//! [`FEATURE_ERROR_KINDS`](crate::protocol::FEATURE_ERROR_KINDS) sends the kind of its per-file
//! failures as one byte ([`FileErrorKind::code`]); an older one's failures are
//! [`FileErrorKind::Remote`].

use std::io;
use std::path::{Path, PathBuf};

use crate::error::PatchError;

/// What kind of failure kept one file from arriving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FileErrorKind {
    /// The far side refused the request: a path outside what it serves, not a regular file,
    /// permission denied, a read-only server.
    Refused,
    /// The far side does not have the file (removed since it was listed).
    Missing,
    /// The file changed on the far side while it was read (rsync's "file has vanished"
    /// class): fetching it again may succeed.
    SourceChanged,
    /// The far side failed otherwise (an I/O error there, or a far side too old to say).
    Remote,
    /// What arrived was not what the sender declared (failed verification, a malformed delta,
    /// more bytes than allowed): nothing was published.
    Corrupt,
    /// This side's file system is full, or the quota is reached.
    OutOfSpace,
    /// Another failure writing or reading on this side.
    Local,
    /// The session broke before the file was complete.
    SessionLost,
    /// Not tried: the copy stopped before this file (its disk filled up, for instance).
    NotAttempted,
}

impl FileErrorKind {
    /// Every kind, in code order.
    pub const ALL: [FileErrorKind; 9] = [
        FileErrorKind::Refused,
        FileErrorKind::Missing,
        FileErrorKind::SourceChanged,
        FileErrorKind::Remote,
        FileErrorKind::Corrupt,
        FileErrorKind::OutOfSpace,
        FileErrorKind::Local,
        FileErrorKind::SessionLost,
        FileErrorKind::NotAttempted,
    ];

    /// A stable name (`out_of_space`), for reports and JSON.
    pub fn name(self) -> &'static str {
        match self {
            FileErrorKind::Refused => "refused",
            FileErrorKind::Missing => "missing",
            FileErrorKind::SourceChanged => "source_changed",
            FileErrorKind::Remote => "remote",
            FileErrorKind::Corrupt => "corrupt",
            FileErrorKind::OutOfSpace => "out_of_space",
            FileErrorKind::Local => "local",
            FileErrorKind::SessionLost => "session_lost",
            FileErrorKind::NotAttempted => "not_attempted",
        }
    }

    /// The byte this kind travels as in a `RequestError`.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The kind a `RequestError` byte names; an unknown byte (a newer peer) is
    /// [`FileErrorKind::Remote`].
    pub fn from_code(code: u8) -> FileErrorKind {
        FileErrorKind::ALL
            .get(code as usize)
            .copied()
            .unwrap_or(FileErrorKind::Remote)
    }

    /// The kind of a failed file system call on the side that made it: `remote` for the far
    /// side's own files, else this side's.
    pub fn of_io(error: &io::Error, remote: bool) -> FileErrorKind {
        if is_out_of_space(error) {
            return FileErrorKind::OutOfSpace;
        }
        if remote && crate::confine::is_not_followed(error) {
            return FileErrorKind::Refused; // a symlink below a root is never followed
        }
        match (error.kind(), remote) {
            (io::ErrorKind::NotFound, true) => FileErrorKind::Missing,
            (io::ErrorKind::PermissionDenied, true) => FileErrorKind::Refused,
            (_, true) => FileErrorKind::Remote,
            (_, false) => FileErrorKind::Local,
        }
    }

    /// Whether fetching the file again in the same run may succeed: not after a refusal or a
    /// full disk.
    pub fn worth_retrying(self) -> bool {
        !matches!(
            self,
            FileErrorKind::Refused | FileErrorKind::OutOfSpace | FileErrorKind::NotAttempted
        )
    }
}

impl std::fmt::Display for FileErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why one file did not arrive: its kind, the far side's path, and the words for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct FileError {
    /// What happened.
    pub kind: FileErrorKind,
    /// The file on the far side (empty until the layer that knows it sets it).
    pub remote: PathBuf,
    /// What happened, in words (names the file, and the far side where it spoke).
    pub detail: String,
}

impl FileError {
    /// A failure of `kind` described by `detail`, for a file not named yet.
    pub fn new(kind: FileErrorKind, detail: impl Into<String>) -> FileError {
        FileError {
            kind,
            remote: PathBuf::new(),
            detail: detail.into(),
        }
    }

    /// A failed file system call on this side, described by `detail`.
    pub fn local_io(error: &io::Error, detail: impl Into<String>) -> FileError {
        FileError::new(FileErrorKind::of_io(error, false), detail)
    }

    /// A failure rebuilding a file, described by `detail`.
    pub fn patch(error: &PatchError, detail: impl Into<String>) -> FileError {
        FileError::new(patch_kind(error), detail)
    }

    /// The same failure, for the far side's file `remote` (kept if already set).
    pub fn for_file(mut self, remote: &Path) -> FileError {
        if self.remote.as_os_str().is_empty() {
            self.remote = remote.to_owned();
        }
        self
    }

    /// Whether this side's disk is full (or the quota reached).
    pub fn is_out_of_space(&self) -> bool {
        self.kind == FileErrorKind::OutOfSpace
    }
}

/// The kind of a rebuild failure: bad data from the sender, or this side's file system.
fn patch_kind(error: &PatchError) -> FileErrorKind {
    match error {
        PatchError::Io { source, .. } | PatchError::Write(source) => {
            FileErrorKind::of_io(source, false)
        }
        PatchError::Read(_) => FileErrorKind::SessionLost,
        PatchError::BasisChanged { .. } => FileErrorKind::Local,
        PatchError::Format(_)
        | PatchError::BlockOutOfRange { .. }
        | PatchError::NotInPlace { .. }
        | PatchError::TooLong { .. }
        | PatchError::LengthMismatch { .. }
        | PatchError::DigestMismatch { .. } => FileErrorKind::Corrupt,
    }
}

/// Whether a file system call failed because the file system is full or the quota reached.
pub fn is_out_of_space(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ENOSPC) | Some(libc::EDQUOT)
    )
}

/// How a file that arrived was checked before it was published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VerifiedBy {
    /// The whole file's barsync digest (blake3), sent by the barsync on the far side.
    BarsyncDigest,
    /// Each part's barsync digest (a file split across sessions).
    BarsyncDigestByParts,
    /// The SFTP fallback's check ([`crate::sftp::Verification`]).
    Sftp(crate::sftp::Verification),
}

impl VerifiedBy {
    /// How reports name it.
    pub fn label(self) -> &'static str {
        match self {
            VerifiedBy::BarsyncDigest => "barsync digest",
            VerifiedBy::BarsyncDigestByParts => "barsync digest, by part",
            VerifiedBy::Sftp(check) => check.label(),
        }
    }
}

impl std::fmt::Display for VerifiedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_codes_are_remote_failures() {
        for kind in FileErrorKind::ALL {
            assert_eq!(FileErrorKind::from_code(kind.code()), kind);
        }
        assert_eq!(FileErrorKind::from_code(200), FileErrorKind::Remote);
    }

    #[test]
    fn a_full_disk_is_out_of_space_on_either_side() {
        let full = io::Error::from_raw_os_error(libc::ENOSPC);
        let quota = io::Error::from_raw_os_error(libc::EDQUOT);
        for error in [&full, &quota] {
            assert_eq!(
                FileErrorKind::of_io(error, false),
                FileErrorKind::OutOfSpace
            );
        }
        let gone = io::Error::from(io::ErrorKind::NotFound);
        assert_eq!(FileErrorKind::of_io(&gone, true), FileErrorKind::Missing);
        assert_eq!(FileErrorKind::of_io(&gone, false), FileErrorKind::Local);
        let write = PatchError::Write(io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(FileError::patch(&write, "x").is_out_of_space());
        assert!(!FileErrorKind::OutOfSpace.worth_retrying());
    }
}
