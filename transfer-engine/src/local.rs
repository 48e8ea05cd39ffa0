//! One file transferred within this process, through the same byte encodings that cross the
//! network: the receiver's signature is encoded and decoded, the sender's delta is encoded into
//! a buffer and decoded by the patcher. Used by tests, benchmarks and `barsync demo`; the wire
//! protocol sends the same bytes over a transport instead of a buffer.

use std::io;
use std::path::{Path, PathBuf};

use crate::delta::{delta, digest_block_size};
use crate::delta_codec::DeltaEncoder;
use crate::error::{FormatError, PatchError};
use crate::fs::MappedFile;
use crate::patch::patch_file;
use crate::signature::{signature, Signature, SignatureOptions};
use crate::DeltaStats;

/// What one local transfer did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransferReport {
    /// Length of the file now at the destination.
    pub len: u64,
    /// Bytes of the encoded signature (receiver to sender).
    pub signature_bytes: u64,
    /// Bytes of the encoded delta (sender to receiver).
    pub delta_bytes: u64,
    /// The delta's counters.
    pub stats: DeltaStats,
}

/// Why a local transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// A file could not be opened or mapped.
    #[error("reading {}: {source}", crate::names::shown_path(path))]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The source or the basis changed (shrank, or its size or mtime moved) while it was read.
    #[error("{} changed while being read", crate::names::shown_path(path))]
    Changed { path: PathBuf },
    /// The signature did not survive its own encoding (a bug, reported rather than hidden).
    #[error("signature round trip: {0}")]
    Signature(#[from] FormatError),
    /// Rebuilding or publishing the destination failed.
    #[error("{}: {source}", crate::names::shown_path(path))]
    Patch {
        path: PathBuf,
        #[source]
        source: PatchError,
    },
}

/// Makes `destination` a verified copy of `source`, reusing `basis` (any earlier version of the
/// file, possibly `destination` itself) where their blocks match.
pub fn transfer_file(
    source: &Path,
    basis: Option<&Path>,
    destination: &Path,
) -> Result<TransferReport, TransferError> {
    let read = |path: &Path| {
        MappedFile::open(path).map_err(|source| TransferError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let basis_map = match basis {
        Some(path) => Some(read(path)?),
        None => None,
    };
    let basis_bytes: &[u8] = basis_map.as_deref().unwrap_or(&[]);
    let new = read(source)?;

    // Receiver: signature of its basis, as sent on the wire.
    let mut signature_wire = Vec::new();
    signature(basis_bytes, &SignatureOptions::default()).encode(&mut signature_wire);

    // Sender: decodes it, computes and encodes the delta.
    let received = Signature::decode(&signature_wire)?;
    let mut encoder = DeltaEncoder::new(Vec::new(), digest_block_size(&received, new.len() as u64))
        .expect("writing to memory cannot fail");
    let summary = delta(&new, &received, &mut encoder).expect("writing to memory cannot fail");
    let delta_wire = encoder
        .finish(&summary)
        .expect("writing to memory cannot fail");

    if new.changed() {
        return Err(TransferError::Changed {
            path: source.to_path_buf(),
        });
    }

    // Receiver: rebuilds, verifies and publishes.
    let own_signature = Signature::decode(&signature_wire)?;
    patch_file(
        basis_bytes,
        &own_signature,
        &delta_wire[..],
        destination,
        Some(summary.new_len),
    )
    .map_err(|source| TransferError::Patch {
        path: destination.to_path_buf(),
        source,
    })?;
    Ok(TransferReport {
        len: summary.new_len,
        signature_bytes: signature_wire.len() as u64,
        delta_bytes: delta_wire.len() as u64,
        stats: summary.stats,
    })
}
