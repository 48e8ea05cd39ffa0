//! Receiving a file that may be identical to its basis, for callers that would rather share the
//! basis than write a copy (Barman's `reuse_backup = link`).
//!
//! The operations are watched before anything is written: as long as they copy the basis's
//! blocks in order, nothing is written at all. If the file ends as exactly the basis (same
//! length, every block copied in order) and the sender's digest matches the digest of the
//! basis, the basis is hard-linked into place under a temporary name and published like any
//! other file. At the first operation that differs, a temporary file is created, the identical
//! prefix is copied into it, and the file is patched and verified as usual.

use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use super::frame::FrameReader;
use super::literal::LiteralDecoder;
use super::receiver::{
    apply_operations, read_file_begin, too_long, FileHeader, Incoming, OperationsEnd,
};
use super::ProtocolError;
use crate::confine::Destination;
use crate::delta::DeltaSink;
use crate::digest::{file_digest_in_pieces, FileDigest};
use crate::error::PatchError;
use crate::file_error::{FileError, FileErrorKind};
use crate::fs::{PublishBatch, TempFile, RELEASE_EVERY};
use crate::patch::Patcher;

/// What [`receive_file_or_link`] did with a verified file.
#[derive(Clone, Copy, Debug)]
pub(super) struct LinkedOrWritten {
    pub received: super::receiver::Received,
    /// The basis was hard-linked (nothing written).
    pub linked: bool,
}

/// A sink that writes nothing while the operations reproduce the basis block by block. At the
/// first difference it calls `make_output` for somewhere to write (`H` holds what must live as
/// long as the output, such as its temporary file), writes the identical prefix there, and
/// patches as usual from then on. [`receive_part`](super::part::receive_part) uses it too.
pub(super) struct LinkOrPatch<'b, H, W: Write, F: FnMut() -> io::Result<(H, W)>> {
    pub incoming: &'b Incoming<'b>,
    pub digest_block: usize,
    pub len: u64,
    /// Leading basis blocks the operations copied in order, before anything differed.
    pub identical_blocks: u64,
    pub writing: Option<(H, Patcher<'b, W>)>,
    pub make_output: F,
}

impl<'b, H, W: Write, F: FnMut() -> io::Result<(H, W)>> LinkOrPatch<'b, H, W, F> {
    pub fn new(incoming: &'b Incoming<'b>, header: &FileHeader, make_output: F) -> Self {
        LinkOrPatch {
            incoming,
            digest_block: header.digest_block,
            len: header.len,
            identical_blocks: 0,
            writing: None,
            make_output,
        }
    }

    /// The patcher, created (with the identical prefix written) at the first difference.
    pub fn patcher(&mut self) -> Result<&mut Patcher<'b, W>, PatchError> {
        if self.writing.is_none() {
            let (holder, out) = (self.make_output)().map_err(PatchError::Write)?;
            let mut patcher = Patcher::new(
                self.incoming.basis,
                self.incoming.signature,
                self.digest_block,
                out,
                Some(self.len),
            )?
            .releasing(self.incoming.basis_map);
            if self.identical_blocks > 0 {
                patcher.copy(0, self.identical_blocks)?;
            }
            self.writing = Some((holder, patcher));
        }
        Ok(&mut self.writing.as_mut().expect("just created").1)
    }

    /// Whether the operations so far are the whole basis, in order.
    pub fn is_whole_basis(&self) -> bool {
        self.writing.is_none()
            && self.identical_blocks == self.incoming.signature.blocks() as u64
            && self.len == self.incoming.basis.len() as u64
    }

    /// When the file turned out to be the whole basis (ended with `end`): checks the sender's
    /// digest against the basis. `Ok(false)`: not the whole basis.
    pub fn verify_whole_basis(&self, end: &(u64, FileDigest)) -> Result<bool, FileError> {
        if !(self.is_whole_basis() && end.0 == self.len) {
            return Ok(false);
        }
        // Pages of a mapped basis are released as they are hashed (a 1 GiB basis would
        // otherwise stay resident).
        let basis = self.incoming.basis;
        let offset = self
            .incoming
            .basis_map
            .map_or(0, |map| basis.as_ptr() as usize - map.as_ptr() as usize);
        let digest = file_digest_in_pieces(
            self.incoming.signature.key(),
            self.digest_block,
            basis,
            RELEASE_EVERY,
            &mut |range| {
                if let Some(map) = self.incoming.basis_map {
                    map.release(range.start + offset..range.end + offset);
                }
            },
        );
        if digest != end.1 {
            return Err(FileError::new(
                FileErrorKind::Corrupt,
                format!(
                    "{}: the sender's digest does not match the basis although every block did",
                    self.incoming.label
                ),
            ));
        }
        Ok(true)
    }
}

impl<H, W: Write, F: FnMut() -> io::Result<(H, W)>> DeltaSink for LinkOrPatch<'_, H, W, F> {
    type Error = PatchError;

    fn copy(&mut self, first: u64, count: u64) -> Result<(), PatchError> {
        let blocks = self.incoming.signature.blocks() as u64;
        if self.writing.is_none()
            && first == self.identical_blocks
            && count <= blocks.saturating_sub(first)
        {
            self.identical_blocks += count;
            return Ok(());
        }
        self.patcher()?.copy(first, count)
    }

    fn literal(&mut self, data: &[u8]) -> Result<(), PatchError> {
        self.patcher()?.literal(data)
    }
}

/// Reads one file's answer; publishes a hard link to `basis_path` (through `batch`) when the
/// file is identical to it, else a verified copy. `Ok(Err(message))` fails this file only.
pub(super) fn receive_file_or_link<'b, R: Read>(
    reader: &mut FrameReader<R>,
    incoming: &'b Incoming<'b>,
    basis_path: &Path,
    destination: &Destination,
    make_temp: impl FnMut() -> io::Result<TempFile>,
    literals: &mut LiteralDecoder,
    batch: &mut PublishBatch,
) -> Result<Result<LinkedOrWritten, FileError>, ProtocolError> {
    let label = incoming.label;
    let header = match read_file_begin(reader, incoming)? {
        Ok(header) => header,
        Err(message) => return Ok(Err(message)),
    };
    let local_error = too_long(incoming, &header);
    let mut make_temp = make_temp;
    let mut sink = LinkOrPatch::new(incoming, &header, || {
        let mut temp = make_temp()?;
        let file = temp.file().try_clone()?;
        Ok((temp, BufWriter::with_capacity(256 * 1024, file)))
    });
    let active = if local_error.is_none() {
        Some(&mut sink)
    } else {
        None
    };
    let OperationsEnd {
        end,
        reused,
        failure,
    } = apply_operations(reader, incoming, active, literals)?;
    if let Some(failure) = local_error.or(failure) {
        if failure.is_out_of_space() {
            if let Some((temp, _)) = sink.writing.as_mut() {
                temp.discard_partial();
            }
        }
        return Ok(Err(failure));
    }
    let received = super::receiver::Received {
        len: end.0,
        digest: end.1,
        reused_bytes: reused.min(end.0),
        copied_by: None,
    };
    let whole_basis = match sink.verify_whole_basis(&end) {
        Ok(whole) => whole,
        Err(message) => return Ok(Err(message)),
    };
    if whole_basis {
        if basis_path == destination.path() {
            // Already in place and verified: nothing to publish.
            return Ok(Ok(LinkedOrWritten {
                received,
                linked: true,
            }));
        }
        return match TempFile::link_beside(basis_path, destination) {
            Ok(link) => {
                batch.push(link, 0);
                Ok(Ok(LinkedOrWritten {
                    received,
                    linked: true,
                }))
            }
            Err(e) => Ok(Err(FileError::local_io(
                &e,
                format!(
                    "{label}: linking {} to {}: {e}",
                    basis_path.display(),
                    destination.path().display()
                ),
            ))),
        };
    }
    // Not the whole basis: whatever was identical so far is written now, then verified.
    if let Err(e) = sink.patcher() {
        return Ok(Err(FileError::patch(&e, format!("{label}: {e}"))));
    }
    let (mut temp, patcher) = sink.writing.take().expect("patcher created");
    if let Err(e) = patcher.finish(end.0, &end.1) {
        let failure = FileError::patch(&e, format!("{label}: {e}"));
        if failure.is_out_of_space() {
            temp.discard_partial();
        }
        return Ok(Err(failure));
    }
    if let Err(e) = temp.set_attributes(header.mode, header.mtime) {
        return Ok(Err(FileError::local_io(
            &e,
            format!("{label}: setting mode and mtime: {e}"),
        )));
    }
    batch.push(temp, end.0);
    Ok(Ok(LinkedOrWritten {
        received,
        linked: false,
    }))
}
