//! Receiving one file's delta (`FileBegin`, operations, `FileEnd`) into a verified, published
//! file. The client uses it when fetching, `barsync serve` when a client pushes.

use std::io::{self, BufWriter, Read, Write};

use super::frame::{Fields, FrameReader, FrameWriter, Kind, MAX_PAYLOAD};
use super::literal::LiteralDecoder;
use super::ProtocolError;
use crate::block_size::is_valid_block_size;
use crate::delta::{DeltaSink, MAX_LITERAL_RUN};
use crate::digest::FileDigest;
use crate::error::PatchError;
use crate::fs::{PublishBatch, TempFile};
use crate::patch::Patcher;
use crate::signature::Signature;

/// What the receiver knows about a file it is about to receive.
pub(super) struct Incoming<'a> {
    /// Request id the frames carry.
    pub id: u32,
    /// The file, as named in messages (the sender's path).
    pub label: &'a str,
    /// Who sends, in messages ("remote", "client").
    pub peer: &'a str,
    /// The basis the signature was made from.
    pub basis: &'a [u8],
    pub signature: &'a Signature,
    /// Refuse more bytes than this.
    pub max_len: Option<u64>,
}

/// A file received, verified and published.
#[derive(Clone, Copy, Debug)]
pub(super) struct Received {
    pub len: u64,
    pub digest: FileDigest,
    pub reused_bytes: u64,
}

/// Sends an encoded signature as `SignatureChunk` frames.
pub(super) fn send_signature<W: Write>(
    writer: &mut FrameWriter<W>,
    id: u32,
    encoded: &[u8],
) -> io::Result<()> {
    for chunk in encoded.chunks(MAX_PAYLOAD - 4) {
        writer.start().u32(id).rest(chunk);
        writer.send(Kind::SignatureChunk)?;
    }
    Ok(())
}

/// Reads one file's answer into `make_temp`'s temporary file and, once verified, publishes it
/// (or, with `batch`, queues it there: the caller commits the batch and only then is the file
/// in place). `Ok(Err(message))` is a failure of this file only; the stream stays usable.
pub(super) fn receive_file<R: Read>(
    reader: &mut FrameReader<R>,
    incoming: &Incoming<'_>,
    make_temp: impl FnOnce() -> io::Result<TempFile>,
    literals: &mut LiteralDecoder,
    batch: Option<&mut PublishBatch>,
) -> Result<Result<Received, String>, ProtocolError> {
    let label = incoming.label;
    let (kind, payload) = reader.expect_frame()?;
    let mut fields = Fields::new(kind, payload);
    check_request(kind, &mut fields, incoming.id)?;
    match kind {
        Kind::RequestError => return Ok(Err(format!("{}: {}", incoming.peer, fields.str()?))),
        Kind::FileBegin => {}
        other => {
            return Err(ProtocolError::Malformed(format!(
                "expected FileBegin, got {other:?}"
            )))
        }
    }
    let len = fields.u64()?;
    let mtime = (fields.i64()?, fields.u32()?);
    let mode = fields.u32()? & 0o7777;
    let digest_block = 1usize.checked_shl(fields.u8()? as u32).unwrap_or(0);
    fields.end()?;
    if !is_valid_block_size(digest_block) {
        return Err(ProtocolError::Malformed(format!(
            "digest block size {digest_block}"
        )));
    }
    // Local failures (no room, bad destination, wrong data) fail this file; the stream goes on.
    let mut local_error: Option<String> = match incoming.max_len {
        Some(max) if len > max => Some(format!(
            "{label} has {len} bytes, more than the {max} expected"
        )),
        _ => None,
    };
    let mut temp = match make_temp() {
        Ok(temp) => Some(temp),
        Err(e) => {
            local_error.get_or_insert(format!("{label}: creating a temporary file: {e}"));
            None
        }
    };
    let mut patcher = match temp.as_mut() {
        Some(temp) if local_error.is_none() => {
            let out = BufWriter::with_capacity(256 * 1024, temp.file());
            Some(
                Patcher::new(
                    incoming.basis,
                    incoming.signature,
                    digest_block,
                    out,
                    Some(len),
                )
                .map_err(|e| e.to_string()),
            )
        }
        _ => None,
    };
    if let Some(Err(message)) = &patcher {
        local_error.get_or_insert(message.clone());
    }
    let mut reused = 0u64;
    let end = loop {
        let (kind, payload) = reader.expect_frame()?;
        let mut fields = Fields::new(kind, payload);
        check_request(kind, &mut fields, incoming.id)?;
        let step: Result<(), PatchError> = match kind {
            Kind::Copy => {
                let (first, count) = (fields.u64()?, fields.u64()?);
                fields.end()?;
                reused += count.saturating_mul(incoming.signature.block_size() as u64);
                match patcher.as_mut() {
                    Some(Ok(p)) if local_error.is_none() => p.copy(first, count),
                    _ => Ok(()),
                }
            }
            Kind::Literal => {
                let encoding = fields.u8()?;
                let raw_len = fields.u32()? as usize;
                let data = literals.decode(encoding, raw_len, fields.rest(), MAX_LITERAL_RUN)?;
                match patcher.as_mut() {
                    Some(Ok(p)) if local_error.is_none() => p.literal(data),
                    _ => Ok(()),
                }
            }
            Kind::FileEnd => {
                let end_len = fields.u64()?;
                let digest = FileDigest(fields.array::<32>()?);
                fields.end()?;
                break (end_len, digest);
            }
            other => {
                return Err(ProtocolError::Malformed(format!(
                    "unexpected {other:?} inside a file"
                )))
            }
        };
        if let Err(e) = step {
            local_error.get_or_insert(format!("{label}: {e}"));
        }
    };
    if let Some(message) = local_error {
        return Ok(Err(message));
    }
    if let Err(e) = finish_patch(patcher, &end) {
        return Ok(Err(format!("{label}: {e}")));
    }
    let mut temp = temp.expect("patcher implies a temporary file");
    if let Err(e) = temp.set_attributes(mode, mtime) {
        return Ok(Err(format!("{label}: setting mode and mtime: {e}")));
    }
    match batch {
        Some(batch) => batch.push(temp, end.0),
        None => {
            if let Err(e) = temp.publish() {
                return Ok(Err(format!("{label}: publishing: {e}")));
            }
        }
    }
    Ok(Ok(Received {
        len: end.0,
        digest: end.1,
        reused_bytes: reused.min(end.0),
    }))
}

/// Verifies a patch that received every operation (consuming it releases the temporary file).
fn finish_patch<W: Write>(
    patcher: Option<Result<Patcher<'_, W>, String>>,
    end: &(u64, FileDigest),
) -> Result<(), PatchError> {
    match patcher {
        Some(Ok(patcher)) => patcher.finish(end.0, &end.1).map(drop),
        _ => unreachable!("no local error means a patcher"),
    }
}

/// Checks that a frame answers request `id` (and turns `Fatal` into an error).
pub(super) fn check_request(
    kind: Kind,
    fields: &mut Fields<'_>,
    id: u32,
) -> Result<(), ProtocolError> {
    if kind == Kind::Fatal {
        return Err(ProtocolError::Fatal(fields.str()?.to_string()));
    }
    let answered = fields.u32()?;
    if answered != id {
        return Err(ProtocolError::Malformed(format!(
            "answer to request {answered} while waiting for {id}"
        )));
    }
    Ok(())
}
