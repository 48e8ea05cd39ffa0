//! Patch: rebuilds the new file from the basis and the delta, and verifies it.
//!
//! [`Patcher`] is a [`DeltaSink`]: it writes copies (from the memory-mapped basis) and literals to
//! any writer as they arrive, and hashes what it writes with a [`DigestWriter`]. Its
//! [`Patcher::finish`] compares length and digest with the sender's, so a wrong byte anywhere,
//! from a corrupt delta, a changed basis or a false block match, fails the file.
//!
//! [`patch_file`] is the whole receiver step for one file: it writes into a [`TempFile`] beside
//! the destination and publishes it only once verified. The basis is only read, never modified.

use std::io::{BufWriter, Read, Write};
use std::path::Path;

use crate::delta::DeltaSink;
use crate::delta_codec::DeltaReader;
use crate::digest::{DigestWriter, FileDigest};
use crate::error::PatchError;
use crate::fs::{MappedFile, TempFile};
use crate::signature::Signature;

/// Applies delta operations against a basis, writing the result to `out`.
pub struct Patcher<'b, W: Write> {
    basis: &'b [u8],
    block_size: u64,
    blocks: u64,
    out: W,
    verifier: DigestWriter,
    max_len: u64,
    release: Release<'b>,
}

/// Releases the pages of a memory-mapped basis every [`Release::EVERY`] bytes copied from it, so
/// that a patch's resident set does not grow with the size of the basis. Copiers feed it
/// pieces of at most that size (one copy operation can cover a whole file): several patches
/// run at once, one per session, so each keeps a small window.
#[derive(Default)]
pub(crate) struct Release<'b> {
    pub(crate) map: Option<&'b MappedFile>,
    pub(crate) copied: usize,
}

impl Release<'_> {
    /// Bytes copied between two releases (and the largest piece a copier reads at once).
    pub(crate) const EVERY: usize = 4 << 20;

    pub(crate) fn copied(&mut self, len: usize) {
        let Some(map) = self.map else { return };
        self.copied += len;
        if self.copied >= Self::EVERY {
            map.release(0..map.len());
            self.copied = 0;
        }
    }
}

impl<'b, W: Write> Patcher<'b, W> {
    /// A patcher for the basis `signature` was made from, with the digest block size announced
    /// by the sender, writing at most `max_len` bytes (`None`: no limit).
    pub fn new(
        basis: &'b [u8],
        signature: &Signature,
        digest_block_size: usize,
        out: W,
        max_len: Option<u64>,
    ) -> Result<Self, PatchError> {
        check_basis(basis, signature)?;
        Ok(Patcher {
            basis,
            block_size: signature.block_size() as u64,
            blocks: signature.blocks() as u64,
            out,
            verifier: DigestWriter::new(signature.key(), digest_block_size),
            max_len: max_len.unwrap_or(u64::MAX),
            release: Release::default(),
        })
    }

    /// Releases the pages of `map` as copies read them ([`MappedFile::release`]); `map` must be
    /// the basis this patcher was made with, or contain it.
    pub fn releasing(mut self, map: Option<&'b MappedFile>) -> Self {
        if let Some(m) = map {
            debug_assert!(
                self.basis.is_empty() || m.as_ptr_range().contains(&self.basis.as_ptr()),
                "the basis is (a range of) the map"
            );
        }
        self.release.map = map;
        self
    }

    fn write(&mut self, data: &[u8]) -> Result<(), PatchError> {
        if self.verifier.len() + data.len() as u64 > self.max_len {
            return Err(PatchError::TooLong {
                limit: self.max_len,
            });
        }
        self.out.write_all(data).map_err(PatchError::Write)?;
        self.verifier.update(data);
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.verifier.len()
    }

    /// Checks the result against the sender's length and digest; returns the writer.
    pub fn finish(mut self, expected_len: u64, expected: &FileDigest) -> Result<W, PatchError> {
        self.out.flush().map_err(PatchError::Write)?;
        let actual_len = self.verifier.len();
        if actual_len != expected_len {
            return Err(PatchError::LengthMismatch {
                expected: expected_len,
                actual: actual_len,
            });
        }
        let actual = self.verifier.finish();
        if actual != *expected {
            return Err(PatchError::DigestMismatch {
                expected: *expected,
                actual,
            });
        }
        Ok(self.out)
    }
}

impl<W: Write> DeltaSink for Patcher<'_, W> {
    type Error = PatchError;

    fn copy(&mut self, first: u64, count: u64) -> Result<(), PatchError> {
        let (start, stop) = block_range(first, count, self.block_size, self.blocks, self.basis)?;
        let (start, stop) = (start as usize, stop as usize);
        let basis = self.basis;
        for piece in basis[start..stop].chunks(Release::EVERY) {
            self.write(piece)?;
            self.release.copied(piece.len());
        }
        Ok(())
    }

    fn literal(&mut self, data: &[u8]) -> Result<(), PatchError> {
        self.write(data)
    }
}

/// Refuses a basis that is not the one the signature was made from (by length; the digest
/// catches a change of content).
pub(crate) fn check_basis(basis: &[u8], signature: &Signature) -> Result<(), PatchError> {
    if basis.len() as u64 == signature.basis_len() {
        Ok(())
    } else {
        Err(PatchError::BasisChanged {
            expected: signature.basis_len(),
            actual: basis.len() as u64,
        })
    }
}

/// The byte range of basis blocks `first .. first + count`, refusing empty and out-of-range
/// copies (the last block may be short).
pub(crate) fn block_range(
    first: u64,
    count: u64,
    block_size: u64,
    blocks: u64,
    basis: &[u8],
) -> Result<(u64, u64), PatchError> {
    match first.checked_add(count) {
        Some(end) if count > 0 && end <= blocks => Ok((
            first * block_size,
            (end * block_size).min(basis.len() as u64),
        )),
        _ => Err(PatchError::BlockOutOfRange {
            first,
            count,
            blocks,
        }),
    }
}

/// What [`patch_file`] produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatchReport {
    /// Length of the published file.
    pub len: u64,
    /// Its verified digest.
    pub digest: FileDigest,
}

/// Reads an encoded delta from `delta`, rebuilds the file from `basis` into a temporary file
/// beside `destination`, verifies it, and publishes it (fsync, rename, fsync of the directory).
/// On any error the destination is unchanged and the temporary file is removed.
pub fn patch_file<R: Read>(
    basis: &[u8],
    signature: &Signature,
    delta: R,
    destination: &Path,
    max_len: Option<u64>,
) -> Result<PatchReport, PatchError> {
    let io_error = |action, source| PatchError::Io {
        action,
        path: destination.to_path_buf(),
        source,
    };
    let reader = DeltaReader::new(delta)?;
    let mut temp =
        TempFile::beside(destination).map_err(|e| io_error("creating a temporary file for", e))?;
    let out = BufWriter::with_capacity(256 * 1024, temp.file());
    let mut patcher = Patcher::new(basis, signature, reader.digest_block_size(), out, max_len)?;
    let end = reader.drive(&mut patcher)?;
    patcher.finish(end.len, &end.digest)?;
    temp.publish().map_err(|e| io_error("publishing", e))?;
    Ok(PatchReport {
        len: end.len,
        digest: end.digest,
    })
}

/// Rebuilds a file over its own basis, writing only what changed (rsync's `--inplace`).
///
/// The delta must have been made with [`crate::delta::DeltaOptions::in_place`], so every copy
/// reads from at or after the position being written. Copies of a block onto itself write
/// nothing; moved blocks and literals are written with `pwrite`. The digest is computed over the
/// resulting content as it goes (unchanged blocks are hashed from the memory map), and
/// [`InPlacePatcher::finish`] truncates, fsyncs and verifies. An interrupted or failed in-place
/// patch leaves the file modified but unverified, so callers use it only where that is
/// acceptable (a file that is itself being synced, never a published copy).
pub struct InPlacePatcher<'b> {
    file: &'b std::fs::File,
    basis: &'b [u8],
    block_size: u64,
    blocks: u64,
    position: u64,
    verifier: DigestWriter,
    max_len: u64,
    written: u64,
    release: Release<'b>,
}

impl<'b> InPlacePatcher<'b> {
    /// A patcher writing into `file`, whose content when the signature was made is `basis`
    /// (a memory map of the same file).
    pub fn new(
        file: &'b std::fs::File,
        basis: &'b [u8],
        signature: &Signature,
        digest_block_size: usize,
        max_len: Option<u64>,
    ) -> Result<Self, PatchError> {
        check_basis(basis, signature)?;
        Ok(InPlacePatcher {
            file,
            basis,
            block_size: signature.block_size() as u64,
            blocks: signature.blocks() as u64,
            position: 0,
            verifier: DigestWriter::new(signature.key(), digest_block_size),
            max_len: max_len.unwrap_or(u64::MAX),
            written: 0,
            release: Release::default(),
        })
    }

    /// Releases the pages of `map` as copies read them ([`MappedFile::release`]); `map` must be
    /// the basis this patcher was made with, or contain it.
    pub fn releasing(mut self, map: Option<&'b MappedFile>) -> Self {
        if let Some(m) = map {
            debug_assert!(
                self.basis.is_empty() || m.as_ptr_range().contains(&self.basis.as_ptr()),
                "the basis is (a range of) the map"
            );
        }
        self.release.map = map;
        self
    }

    fn write_at(&mut self, data: &[u8], offset: u64) -> Result<(), PatchError> {
        use std::os::unix::fs::FileExt;
        self.file
            .write_all_at(data, offset)
            .map_err(PatchError::Write)?;
        self.written += data.len() as u64;
        Ok(())
    }

    /// Bytes actually written (the rest was already in place).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Sets the final length, fsyncs, and checks length and digest against the sender's.
    pub fn finish(self, expected_len: u64, expected: &FileDigest) -> Result<u64, PatchError> {
        if self.position != expected_len {
            return Err(PatchError::LengthMismatch {
                expected: expected_len,
                actual: self.position,
            });
        }
        self.file
            .set_len(self.position)
            .map_err(PatchError::Write)?;
        self.file.sync_data().map_err(PatchError::Write)?;
        let actual = self.verifier.finish();
        if actual != *expected {
            return Err(PatchError::DigestMismatch {
                expected: *expected,
                actual,
            });
        }
        Ok(self.written)
    }
}

impl DeltaSink for InPlacePatcher<'_> {
    type Error = PatchError;

    fn copy(&mut self, first: u64, count: u64) -> Result<(), PatchError> {
        let (source, stop) = block_range(first, count, self.block_size, self.blocks, self.basis)?;
        if source < self.position {
            return Err(PatchError::NotInPlace {
                block: first,
                position: self.position,
            });
        }
        let len = stop - source;
        if self.position + len > self.max_len {
            return Err(PatchError::TooLong {
                limit: self.max_len,
            });
        }
        let basis = self.basis;
        let data = &basis[source as usize..stop as usize];
        if source == self.position {
            for piece in data.chunks(Release::EVERY) {
                self.verifier.update(piece);
                self.release.copied(piece.len());
            }
        } else {
            // Moved blocks: copy forward in pieces no longer than the gap, so no piece overlaps
            // the bytes it is read from; each piece is hashed before its write can change the
            // bytes that follow it in the map.
            let gap = (source - self.position) as usize;
            let mut offset = 0;
            for piece in data.chunks(gap.min(1 << 20)) {
                self.verifier.update(piece);
                self.write_at(piece, self.position + offset)?;
                self.release.copied(piece.len());
                offset += piece.len() as u64;
            }
        }
        self.position += len;
        Ok(())
    }

    fn literal(&mut self, data: &[u8]) -> Result<(), PatchError> {
        if self.position + data.len() as u64 > self.max_len {
            return Err(PatchError::TooLong {
                limit: self.max_len,
            });
        }
        self.write_at(data, self.position)?;
        self.verifier.update(data);
        self.position += data.len() as u64;
        Ok(())
    }
}
