//! The engine's error types.

use std::io;
use std::path::PathBuf;

use crate::digest::FileDigest;

/// Malformed bytes in something decoded from outside (a signature, a delta stream).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    /// The input ended before the structure did.
    #[error("{what} is truncated: needed {needed} bytes, got {got}")]
    Truncated {
        /// What was being decoded.
        what: &'static str,
        /// Bytes the structure needs.
        needed: usize,
        /// Bytes there were.
        got: usize,
    },
    /// The input does not start with the expected magic bytes.
    #[error("{what} has the wrong magic bytes (not a barsync {what})")]
    BadMagic {
        /// What was being decoded.
        what: &'static str,
    },
    /// A version this build does not speak.
    #[error("{what} version {version} is not supported (this barsync speaks version 1)")]
    UnsupportedVersion {
        /// What was being decoded.
        what: &'static str,
        /// The version it declared.
        version: u32,
    },
    /// A field with an impossible value.
    #[error("{what} is invalid: {reason}")]
    Invalid {
        /// What was being decoded.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// Why rebuilding a file from a basis and a delta failed. The destination is never touched then.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The delta stream is malformed.
    #[error("corrupt delta: {0}")]
    Format(#[from] FormatError),
    /// The delta refers to basis blocks that do not exist.
    #[error("corrupt delta: copy of blocks {first}..{end} but the basis has {blocks} blocks", end = first.saturating_add(*count))]
    BlockOutOfRange {
        /// The first block copied.
        first: u64,
        /// Blocks copied.
        count: u64,
        /// Blocks the basis has.
        blocks: u64,
    },
    /// An in-place delta copies from before the position being written.
    #[error("corrupt delta: in-place copy of block {block} from before position {position}")]
    NotInPlace {
        /// The block copied.
        block: u64,
        /// The position being written.
        position: u64,
    },
    /// The delta would produce more bytes than allowed.
    #[error("delta produces more than the {limit} bytes allowed for this file")]
    TooLong {
        /// Bytes allowed.
        limit: u64,
    },
    /// The basis given to the patcher is not the one the signature was made from.
    #[error("basis has {actual} bytes but its signature was made from {expected} bytes")]
    BasisChanged {
        /// The length the signature was made from.
        expected: u64,
        /// The basis's length now.
        actual: u64,
    },
    /// The rebuilt file does not have the sender's length.
    #[error("rebuilt file has {actual} bytes, the sender's has {expected}")]
    LengthMismatch {
        /// The sender's length.
        expected: u64,
        /// The rebuilt file's length.
        actual: u64,
    },
    /// The rebuilt file does not have the sender's digest.
    #[error("rebuilt file failed verification: digest {actual}, the sender's is {expected}")]
    DigestMismatch {
        /// The sender's digest.
        expected: FileDigest,
        /// The rebuilt file's digest.
        actual: FileDigest,
    },
    /// Reading the delta stream failed.
    #[error("reading the delta stream: {0}")]
    Read(#[source] io::Error),
    /// A file system operation failed.
    #[error("{action} {}: {source}", crate::names::shown_path(path))]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file it was done to.
        path: PathBuf,
        /// How it failed.
        #[source]
        source: io::Error,
    },
    /// Writing the rebuilt data failed.
    #[error("writing the rebuilt file: {0}")]
    Write(#[source] io::Error),
}

impl PatchError {
    /// Whether the file system is full (or the quota reached): what was written so far is
    /// not worth keeping as a basis for the next attempt.
    pub fn is_out_of_space(&self) -> bool {
        match self {
            PatchError::Write(e) | PatchError::Io { source: e, .. } => {
                crate::file_error::is_out_of_space(e)
            }
            _ => false,
        }
    }
}
