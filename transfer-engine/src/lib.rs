//! transfer-engine: barsync's delta-transfer engine. It knows files, blocks, signatures, deltas
//! and patches, and nothing about Barman.
//!
//! # The three steps
//! ```text
//!  receiver                               sender
//!  signature(basis) ───── Signature ─────► delta(new, &signature, sink)
//!  Patcher / patch_file ◄── ops + digest ── (copy block runs, literal slices, FileDigest)
//! ```
//! - [`signature()`] cuts the receiver's basis file into blocks (`block_size.rs`) and records, per
//!   block, a weak rolling checksum ([`rolling`]) and a keyed, truncated blake3 hash ([`digest`]).
//! - [`delta()`] scans the sender's new file against that signature ([`delta`](mod@delta)): it
//!   predicts in-place matches first and rolls byte by byte only through unmatched regions, in
//!   linear time whatever the input, and streams copy and literal operations to a [`DeltaSink`],
//!   ending with the [`FileDigest`] of the new file.
//! - [`Patcher`] (a [`DeltaSink`]) rebuilds the file from the basis and the operations, checking
//!   the digest; [`patch_file`] does that into a temporary file that is published (fsync, rename,
//!   fsync of the directory) only once verified ([`fs`]). A receiver rebuilding into a file of
//!   its own uses `rebuild::FilePatcher` instead: matched block runs are copied by the
//!   kernel (`kernel_copy.rs`: reflink or `copy_file_range`), only literals are written.
//!
//! Operations can also travel as bytes: [`DeltaEncoder`] writes them, [`DeltaReader`] decodes
//! them strictly (`delta_codec.rs`).
//!
//! Files are read through memory maps ([`MappedFile`]); peak memory is bounded by buffers
//! (literal runs of at most [`delta::MAX_LITERAL_RUN`] bytes) and by the signature, never by the
//! size of the files.
#![deny(missing_docs)]

mod block_size;
pub mod confine;
pub mod copy;
pub mod delta;
mod delta_codec;
pub mod digest;
mod error;
pub mod fetch;
mod file_error;
pub mod fs;
mod index;
mod kernel_copy;
mod map_guard;
pub mod names;
mod patch;
pub mod protocol;
mod rebuild;
pub mod rolling;
pub mod sftp;
pub mod signature;
pub mod split_file;

pub use delta::{delta, delta_with, DeltaOptions, DeltaSink, DeltaStats, DeltaSummary};
pub use delta_codec::{DeltaEncoder, DeltaReader};
pub use digest::{FileDigest, HashKey};
pub use error::{FormatError, PatchError};
pub use file_error::{is_out_of_space, FileError, FileErrorKind, VerifiedBy};
pub use fs::MappedFile;
pub use patch::{patch_file, InPlacePatcher, PatchReport, Patcher};
pub use signature::{signature, Signature, SignatureOptions};
