//! Sending one file's delta (`FileBegin`, operations, `FileEnd`) against a signature the other
//! side sent. `barsync serve` uses it when a client fetches, the client when it pushes.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;

use super::frame::{Fields, FrameReader, FrameWriter, Kind};
use super::literal::LiteralEncoder;
use super::ProtocolError;
use crate::delta::{delta_with, digest_block_size, DeltaOptions, DeltaSink, MAX_LITERAL_RUN};
use crate::file_error::{FileError, FileErrorKind};
use crate::fs::MappedFile;
use crate::signature::Signature;

/// Largest signature accepted for one file (a 1 TiB basis needs about 130 MiB).
pub const MAX_SIGNATURE_BYTES: u64 = 256 << 20;

/// Reads `len` bytes of `SignatureChunk` frames for request `id` and decodes them.
/// `Ok(Err(message))`: the bytes arrived but are not a valid signature.
pub(super) fn read_signature<R: Read>(
    reader: &mut FrameReader<R>,
    id: u32,
    len: u64,
) -> Result<Result<Signature, String>, ProtocolError> {
    if len > MAX_SIGNATURE_BYTES {
        return Err(ProtocolError::Malformed(format!(
            "signature of {len} bytes (limit {MAX_SIGNATURE_BYTES})"
        )));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    while (bytes.len() as u64) < len {
        let (kind, payload) = reader.expect_frame()?;
        let mut fields = Fields::new(kind, payload);
        if kind != Kind::SignatureChunk || fields.u32()? != id {
            return Err(ProtocolError::Malformed(format!(
                "expected the signature of request {id}, got {kind:?}"
            )));
        }
        let chunk = fields.rest();
        if bytes.len() as u64 + chunk.len() as u64 > len {
            return Err(ProtocolError::Malformed(
                "signature longer than announced".into(),
            ));
        }
        bytes.extend_from_slice(chunk);
    }
    Ok(Signature::decode(&bytes).map_err(|e| e.to_string()))
}

/// Sends a per-file failure in place of a file, with its kind when the peer reads kinds
/// ([`FEATURE_ERROR_KINDS`](super::handshake::FEATURE_ERROR_KINDS)).
pub(super) fn send_request_error<W: Write>(
    writer: &mut FrameWriter<W>,
    id: u32,
    message: &str,
    kind: Option<FileErrorKind>,
) -> Result<(), ProtocolError> {
    let payload = writer.start().u32(id).str(message);
    if let Some(kind) = kind {
        payload.u8(kind.code());
    }
    Ok(writer.send(Kind::RequestError)?)
}

/// The byte range `[offset, offset + len)` of a file, as a `RangeRequest` asks for it.
#[derive(Clone, Copy, Debug)]
pub(super) struct ByteRange {
    pub offset: u64,
    pub len: u64,
}

/// Streams the delta of the open regular file `file` (named `label` in messages) against
/// `signature`, with literals compressed at zstd `level` (`None`: raw). With `range`, only those
/// bytes (as many as the file has) are sent, as if they were the whole file, and `FileBegin`
/// also carries the whole file's length. `Ok(Err(message))`: the file could not be read, or it
/// changed while it was read (truncated under the map, or its size or mtime moved: rsync's
/// "file has vanished" class); the caller answers `RequestError`, which ends the file whether
/// or not its `FileBegin` and some operations were sent.
#[allow(clippy::too_many_arguments)]
pub(super) fn send_file<W: Write>(
    writer: &mut FrameWriter<W>,
    id: u32,
    file: &File,
    label: &str,
    signature: &Signature,
    level: Option<i32>,
    options: &DeltaOptions,
    range: Option<ByteRange>,
) -> Result<Result<u64, FileError>, ProtocolError> {
    let label = &*crate::names::shown(label);
    let unreadable =
        |e: std::io::Error| FileError::new(FileErrorKind::of_io(&e, true), format!("{label}: {e}"));
    let metadata = match file.metadata() {
        Ok(m) if m.is_file() => m,
        Ok(_) => {
            return Ok(Err(FileError::new(
                FileErrorKind::Refused,
                format!("{label}: not a regular file"),
            )))
        }
        Err(e) => return Ok(Err(unreadable(e))),
    };
    let map = match MappedFile::from_file(file) {
        Ok(map) => map,
        Err(e) => return Ok(Err(unreadable(e))),
    };
    let file_len = map.len() as u64;
    let bytes = match range {
        None => &map[..],
        Some(ByteRange { offset, len }) => {
            let start = offset.min(file_len) as usize;
            let end = offset.saturating_add(len).min(file_len) as usize;
            &map[start..end]
        }
    };
    let digest_block = digest_block_size(signature, bytes.len() as u64);
    let mut begin = writer
        .start()
        .u32(id)
        .u64(bytes.len() as u64)
        .i64(metadata.mtime())
        .u32(metadata.mtime_nsec() as u32)
        .u32(metadata.mode() & 0o7777)
        .u8(digest_block.trailing_zeros() as u8);
    if range.is_some() {
        begin = begin.u64(file_len);
    }
    let _ = begin;
    writer.send(Kind::FileBegin)?;
    let mut sink = FrameSink {
        writer,
        id,
        literals: LiteralEncoder::new(level),
        map: &map,
    };
    let changed = || {
        FileError::new(
            FileErrorKind::SourceChanged,
            format!("{label} changed while being read"),
        )
    };
    let summary = match delta_with(bytes, signature, &mut sink, options) {
        Ok(summary) => summary,
        Err(SinkError::Protocol(e)) => return Err(e),
        Err(SinkError::Changed) => return Ok(Err(changed())),
    };
    if map.changed() {
        return Ok(Err(changed()));
    }
    writer
        .start()
        .u32(id)
        .u64(summary.new_len)
        .rest(&summary.digest.0);
    writer.send(Kind::FileEnd)?;
    Ok(Ok(summary.new_len))
}

struct FrameSink<'a, W: Write> {
    writer: &'a mut FrameWriter<W>,
    id: u32,
    literals: LiteralEncoder,
    /// The file read: once a read of it faulted, the rest of the delta is not sent.
    map: &'a MappedFile,
}

/// Why the delta stopped.
enum SinkError {
    Protocol(ProtocolError),
    /// The file shrank under its map ([`MappedFile::faulted`]).
    Changed,
}

impl From<std::io::Error> for SinkError {
    fn from(e: std::io::Error) -> Self {
        SinkError::Protocol(e.into())
    }
}

impl<W: Write> DeltaSink for FrameSink<'_, W> {
    type Error = SinkError;
    fn copy(&mut self, first: u64, count: u64) -> Result<(), SinkError> {
        if self.map.faulted() {
            return Err(SinkError::Changed);
        }
        self.writer.start().u32(self.id).u64(first).u64(count);
        Ok(self.writer.send(Kind::Copy)?)
    }
    fn literal(&mut self, data: &[u8]) -> Result<(), SinkError> {
        if self.map.faulted() {
            return Err(SinkError::Changed);
        }
        debug_assert!(data.len() <= MAX_LITERAL_RUN);
        let mut payload = self
            .writer
            .start()
            .u32(self.id)
            .u8(0)
            .u32(data.len() as u32);
        let encoding = self.literals.encode(data, payload.buffer());
        payload.buffer()[4] = encoding; // the encoding byte follows the request id
        Ok(self.writer.send(Kind::Literal)?)
    }
}
