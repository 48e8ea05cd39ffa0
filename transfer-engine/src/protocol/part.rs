//! Receiving one part of a [`SplitFile`](crate::split_file::SplitFile): the answer to a
//! `RangeRequest`, written at its offset in the split file's temporary file and verified
//! against the sender's digest of the range.
//!
//! When the split file links identical files (`reuse_backup = link`), a part that reproduces
//! the same range of the basis writes nothing (the split file copies or links it at the end);
//! otherwise every part is written as it arrives, by each session into its own range.

use std::io::{BufWriter, Read};

use super::frame::FrameReader;
use super::link::LinkOrPatch;
use super::literal::LiteralDecoder;
use super::receiver::Received;
use super::receiver::{apply_operations, read_file_begin, too_long, Incoming, OperationsEnd};
use super::ProtocolError;
use crate::file_error::FileError;
use crate::split_file::{FilePart, PartDone, SenderFile};

/// Reads the answer to the range request for `part`. `Ok(Err(message))` fails this part only;
/// the stream stays usable.
pub(super) fn receive_part<R: Read>(
    reader: &mut FrameReader<R>,
    incoming: &Incoming<'_>,
    part: &FilePart,
    literals: &mut LiteralDecoder,
) -> Result<Result<Received, FileError>, ProtocolError> {
    let label = incoming.label;
    let split = &part.file;
    let header = match read_file_begin(reader, incoming)? {
        Ok(header) => header,
        Err(message) => return Ok(Err(message)),
    };
    let local_error = too_long(incoming, &header);
    let mut sink = LinkOrPatch::new(incoming, &header, || {
        let writer = split.writer_at(part.offset)?;
        Ok(((), BufWriter::with_capacity(256 * 1024, writer)))
    });
    let mut local_error = local_error.or_else(|| {
        // Without linking there is nothing to gain by waiting: write from the first byte.
        (!split.link_identical())
            .then(|| {
                sink.patcher()
                    .err()
                    .map(|e| FileError::patch(&e, format!("{label}: {e}")))
            })
            .flatten()
    });
    let active = local_error.is_none().then_some(&mut sink);
    let OperationsEnd {
        end,
        reused,
        failure,
    } = apply_operations(reader, incoming, active, literals)?;
    if let Some(failure) = local_error.take().or(failure) {
        if failure.is_out_of_space() {
            split.discard_partial();
        }
        return Ok(Err(failure));
    }
    let done = match sink.verify_whole_basis(&end) {
        Err(message) => return Ok(Err(message)),
        Ok(true) => PartDone::SameAsBasis {
            len: end.0,
            key: *incoming.signature.key(),
            digest_block: header.digest_block,
            digest: end.1,
        },
        Ok(false) => {
            let finished = sink.patcher().map(drop).and_then(|()| {
                let (_, patcher) = sink.writing.take().expect("patcher created");
                patcher.finish(end.0, &end.1).map(drop)
            });
            if let Err(e) = finished {
                let failure = FileError::patch(&e, format!("{label}: {e}"));
                if failure.is_out_of_space() {
                    split.discard_partial();
                }
                return Ok(Err(failure));
            }
            PartDone::Written { len: end.0 }
        }
    };
    let sender = SenderFile {
        len: header.file_len,
        mtime: header.mtime,
        mode: header.mode,
    };
    if let Err(message) = split.record(part.offset, part.len, sender, done) {
        return Ok(Err(message));
    }
    Ok(Ok(Received {
        len: end.0,
        digest: end.1,
        copied_by: None,
        reused_bytes: reused.min(end.0),
    }))
}
