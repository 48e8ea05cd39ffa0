//! Receiving one file's delta (`FileBegin`, operations, `FileEnd`) into a verified, published
//! file. The client uses it when fetching, `barsync serve` when a client pushes.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};

use super::frame::{Fields, FrameReader, FrameWriter, Kind, MAX_PAYLOAD};
use super::literal::LiteralDecoder;
use super::ProtocolError;
use crate::block_size::is_valid_block_size;
use crate::delta::{DeltaSink, MAX_LITERAL_RUN};
use crate::digest::FileDigest;
use crate::error::PatchError;
use crate::file_error::{FileError, FileErrorKind};
use crate::fs::{MappedFile, PublishBatch, TempFile, WritebackWriter};
use crate::kernel_copy::CopyPath;
use crate::patch::{InPlacePatcher, Patcher};
use crate::rebuild::FilePatcher;
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
    /// The map `basis` is, if it is one: its pages are released as the patch reads them.
    pub basis_map: Option<&'a MappedFile>,
    pub signature: &'a Signature,
    /// Refuse more bytes than this.
    pub max_len: Option<u64>,
    /// The request was for a byte range of the file (`FileBegin` then also carries the whole
    /// file's length).
    pub part: bool,
    /// The permission bits the written file may get from the sender's mode (0o7777: all;
    /// [`SETID_DROPPED`](crate::fs::SETID_DROPPED): never setuid or setgid).
    pub mode_mask: u32,
}

/// A file received, verified and published.
#[derive(Clone, Copy, Debug)]
pub(super) struct Received {
    pub len: u64,
    pub digest: FileDigest,
    pub reused_bytes: u64,
    /// How bytes were copied from the basis (`None`: nothing was, or not by a rebuild that
    /// says).
    pub copied_by: Option<CopyPath>,
}

/// What rebuilds a received file: from a mapped basis file, a [`FilePatcher`] (matched runs
/// copied by the kernel); without one, a [`Patcher`] writing everything.
enum Rebuilder<'b> {
    Kernel(FilePatcher<'b>),
    Stream(Patcher<'b, BufWriter<WritebackWriter<&'b File>>>),
}

impl Rebuilder<'_> {
    /// Verifies the result; returns how copied bytes got there.
    fn finish(self, end: &(u64, FileDigest)) -> Result<Option<CopyPath>, PatchError> {
        match self {
            Rebuilder::Kernel(patcher) => Ok(patcher.finish(end.0, &end.1)?.copy_path()),
            Rebuilder::Stream(patcher) => patcher.finish(end.0, &end.1).map(|_| None),
        }
    }
}

impl DeltaSink for Rebuilder<'_> {
    type Error = PatchError;

    fn copy(&mut self, first: u64, count: u64) -> Result<(), PatchError> {
        match self {
            Rebuilder::Kernel(patcher) => patcher.copy(first, count),
            Rebuilder::Stream(patcher) => patcher.copy(first, count),
        }
    }

    fn literal(&mut self, data: &[u8]) -> Result<(), PatchError> {
        match self {
            Rebuilder::Kernel(patcher) => patcher.literal(data),
            Rebuilder::Stream(patcher) => patcher.literal(data),
        }
    }
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

/// What `FileBegin` announced.
pub(super) struct FileHeader {
    /// Bytes that follow (for a part: the bytes of the range).
    pub len: u64,
    /// The length of the sender's whole file.
    pub file_len: u64,
    pub mtime: (i64, u32),
    pub mode: u32,
    pub digest_block: usize,
}

/// The failure to report when the sender announces more bytes than the receiver allows.
pub(super) fn too_long(incoming: &Incoming<'_>, header: &FileHeader) -> Option<FileError> {
    match incoming.max_len {
        Some(max) if header.len > max => Some(FileError::new(
            FileErrorKind::Corrupt,
            format!(
                "{} has {} bytes, more than the {max} expected",
                incoming.label, header.len
            ),
        )),
        _ => None,
    }
}

/// The sender's `RequestError` for `incoming` (its words, and the kind when it sent one; else
/// `unsaid`).
fn sender_failure(
    incoming: &Incoming<'_>,
    fields: &mut Fields<'_>,
    unsaid: FileErrorKind,
) -> Result<FileError, ProtocolError> {
    let failure = read_request_error(fields, unsaid)?;
    Ok(FileError::new(
        failure.kind,
        format!("{}: {}", incoming.peer, failure.detail),
    ))
}

/// The rest of a `RequestError` frame (after its request number): the far side's words and,
/// from a peer that sends kinds, the kind; `unsaid` when it does not.
pub(super) fn read_request_error(
    fields: &mut Fields<'_>,
    unsaid: FileErrorKind,
) -> Result<FileError, ProtocolError> {
    let detail = fields.str()?.to_string();
    let kind = fields
        .optional_u8()?
        .map_or(unsaid, FileErrorKind::from_code);
    Ok(FileError::new(kind, detail))
}

/// Reads `FileBegin` (or the sender's `RequestError`) for `incoming`.
pub(super) fn read_file_begin<R: Read>(
    reader: &mut FrameReader<R>,
    incoming: &Incoming<'_>,
) -> Result<Result<FileHeader, FileError>, ProtocolError> {
    let (kind, payload) = reader.expect_frame()?;
    let mut fields = Fields::new(kind, payload);
    check_request(kind, &mut fields, incoming.id)?;
    match kind {
        Kind::RequestError => {
            let failure = sender_failure(incoming, &mut fields, FileErrorKind::Remote)?;
            fields.end()?;
            return Ok(Err(failure));
        }
        Kind::FileBegin => {}
        other => {
            return Err(ProtocolError::Malformed(format!(
                "expected FileBegin, got {other:?}"
            )))
        }
    }
    let len = fields.u64()?;
    let mtime = (fields.i64()?, fields.u32()?);
    let mode = fields.u32()? & 0o7777 & incoming.mode_mask;
    let digest_block = 1usize.checked_shl(fields.u8()? as u32).unwrap_or(0);
    let file_len = if incoming.part { fields.u64()? } else { len };
    fields.end()?;
    if !is_valid_block_size(digest_block) {
        return Err(ProtocolError::Malformed(format!(
            "digest block size {digest_block}"
        )));
    }
    Ok(Ok(FileHeader {
        len,
        file_len,
        mtime,
        mode,
        digest_block,
    }))
}

/// What [`apply_operations`] found: the sender's end record (length, digest), the bytes copied
/// from the basis, and the first failure applying the operations.
pub(super) struct OperationsEnd {
    pub end: (u64, FileDigest),
    pub reused: u64,
    pub failure: Option<FileError>,
}

/// Reads operations up to `FileEnd`, applying them to `sink` until it fails (then the rest is
/// read and dropped, so the stream stays usable). Returns the end record, the bytes copied from
/// the basis, and the first failure. A `RequestError` in place of `FileEnd` (the sender's file
/// changed while it was read) is a failure; the end record is then meaningless.
pub(super) fn apply_operations<R: Read, S: DeltaSink<Error = PatchError>>(
    reader: &mut FrameReader<R>,
    incoming: &Incoming<'_>,
    mut sink: Option<&mut S>,
    literals: &mut LiteralDecoder,
) -> Result<OperationsEnd, ProtocolError> {
    let mut failure: Option<FileError> = None;
    let mut reused = 0u64;
    loop {
        let (kind, payload) = reader.expect_frame()?;
        let mut fields = Fields::new(kind, payload);
        check_request(kind, &mut fields, incoming.id)?;
        let step: Result<(), PatchError> = match kind {
            Kind::Copy => {
                let (first, count) = (fields.u64()?, fields.u64()?);
                fields.end()?;
                reused += count.saturating_mul(incoming.signature.block_size() as u64);
                match sink.as_mut() {
                    Some(sink) if failure.is_none() => sink.copy(first, count),
                    _ => Ok(()),
                }
            }
            Kind::Literal => {
                let encoding = fields.u8()?;
                let raw_len = fields.u32()? as usize;
                let data = literals.decode(encoding, raw_len, fields.rest(), MAX_LITERAL_RUN)?;
                match sink.as_mut() {
                    Some(sink) if failure.is_none() => sink.literal(data),
                    _ => Ok(()),
                }
            }
            Kind::RequestError => {
                // The sender gave up on the file after starting it (it changed while read).
                let given_up = sender_failure(incoming, &mut fields, FileErrorKind::SourceChanged)?;
                fields.end()?;
                return Ok(OperationsEnd {
                    end: (0, FileDigest([0; 32])),
                    reused,
                    failure: Some(failure.unwrap_or(given_up)),
                });
            }
            Kind::FileEnd => {
                let end_len = fields.u64()?;
                let digest = FileDigest(fields.array::<32>()?);
                fields.end()?;
                return Ok(OperationsEnd {
                    end: (end_len, digest),
                    reused,
                    failure,
                });
            }
            other => {
                return Err(ProtocolError::Malformed(format!(
                    "unexpected {other:?} inside a file"
                )))
            }
        };
        if let Err(e) = step {
            failure.get_or_insert_with(|| FileError::patch(&e, format!("{}: {e}", incoming.label)));
        }
    }
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
) -> Result<Result<Received, FileError>, ProtocolError> {
    let label = incoming.label;
    let header = match read_file_begin(reader, incoming)? {
        Ok(header) => header,
        Err(message) => return Ok(Err(message)),
    };
    // Local failures (no room, bad destination, wrong data) fail this file; the stream goes on.
    let mut local_error = too_long(incoming, &header);
    let mut temp = match make_temp() {
        Ok(temp) => Some(temp),
        Err(e) => {
            local_error.get_or_insert_with(|| {
                FileError::local_io(&e, format!("{label}: creating a temporary file: {e}"))
            });
            None
        }
    };
    let mut patcher = match temp.as_mut() {
        Some(temp) if local_error.is_none() => {
            let file: &File = temp.file();
            let made = match incoming.basis_map {
                Some(map) => FilePatcher::new(
                    map,
                    incoming.basis,
                    incoming.signature,
                    header.digest_block,
                    file,
                    Some(header.len),
                )
                .map(Rebuilder::Kernel),
                None => {
                    let out = BufWriter::with_capacity(256 * 1024, WritebackWriter::new(file));
                    Patcher::new(
                        incoming.basis,
                        incoming.signature,
                        header.digest_block,
                        out,
                        Some(header.len),
                    )
                    .map(Rebuilder::Stream)
                }
            };
            match made {
                Ok(patcher) => Some(patcher),
                Err(e) => {
                    local_error = Some(FileError::patch(&e, e.to_string()));
                    None
                }
            }
        }
        _ => None,
    };
    let OperationsEnd {
        end,
        reused,
        failure,
    } = apply_operations(reader, incoming, patcher.as_mut(), literals)?;
    if let Some(failure) = local_error.or(failure) {
        drop(patcher);
        if let (true, Some(temp)) = (failure.is_out_of_space(), temp.as_mut()) {
            temp.discard_partial();
        }
        return Ok(Err(failure));
    }
    let copied_by = match patcher
        .expect("no local error means a patcher")
        .finish(&end)
    {
        Ok(copied_by) => copied_by,
        Err(e) => {
            let failure = FileError::patch(&e, format!("{label}: {e}{}", basis_note(incoming)));
            if let (true, Some(temp)) = (failure.is_out_of_space(), temp.as_mut()) {
                temp.discard_partial();
            }
            return Ok(Err(failure));
        }
    };
    let mut temp = temp.expect("patcher implies a temporary file");
    if let Err(e) = temp.set_attributes(header.mode, header.mtime) {
        return Ok(Err(FileError::local_io(
            &e,
            format!("{label}: setting mode and mtime: {e}"),
        )));
    }
    match batch {
        Some(batch) => batch.push(temp, end.0),
        None => {
            if let Err(e) = temp.publish() {
                return Ok(Err(FileError::local_io(
                    &e,
                    format!("{label}: publishing: {e}"),
                )));
            }
        }
    }
    Ok(Ok(Received {
        len: end.0,
        digest: end.1,
        reused_bytes: reused.min(end.0),
        copied_by,
    }))
}

/// Reads one file's answer (a delta made with `in_place`) and applies it over `file`, the basis
/// itself; `incoming.basis` must be a map of that same file. The file is verified and fsynced
/// when this returns `Ok(Ok(_))`; on any failure it is left modified and unverified.
pub(super) fn receive_file_in_place<R: Read>(
    reader: &mut FrameReader<R>,
    incoming: &Incoming<'_>,
    file: &File,
    literals: &mut LiteralDecoder,
) -> Result<Result<Received, FileError>, ProtocolError> {
    let label = incoming.label;
    let header = match read_file_begin(reader, incoming)? {
        Ok(header) => header,
        Err(message) => return Ok(Err(message)),
    };
    let mut local_error = too_long(incoming, &header);
    let mut patcher = match InPlacePatcher::new(
        file,
        incoming.basis,
        incoming.signature,
        header.digest_block,
        Some(header.len),
    ) {
        Ok(patcher) if local_error.is_none() => Some(patcher.releasing(incoming.basis_map)),
        Ok(_) => None,
        Err(e) => {
            local_error = Some(FileError::patch(&e, e.to_string()));
            None
        }
    };
    let OperationsEnd {
        end,
        reused,
        failure,
    } = apply_operations(reader, incoming, patcher.as_mut(), literals)?;
    if let Some(failure) = local_error.or(failure) {
        return Ok(Err(failure));
    }
    let patcher = patcher.expect("no failure means a patcher");
    if let Err(e) = patcher.finish(end.0, &end.1) {
        return Ok(Err(FileError::patch(
            &e,
            format!("{label}: {e}{}", basis_note(incoming)),
        )));
    }
    if let Err(e) = set_attributes(file, header.mode, header.mtime) {
        return Ok(Err(FileError::local_io(
            &e,
            format!("{label}: setting mode and mtime: {e}"),
        )));
    }
    Ok(Ok(Received {
        len: end.0,
        digest: end.1,
        reused_bytes: reused.min(end.0),
        copied_by: None,
    }))
}

/// Why a patch may have failed, when its basis shrank while the patch read it (the pages past
/// its new end read as zeros: [`MappedFile::faulted`]).
fn basis_note(incoming: &Incoming<'_>) -> &'static str {
    match incoming.basis_map {
        Some(map) if map.faulted() => " (the local basis shrank while it was read)",
        _ => "",
    }
}

fn set_attributes(file: &File, mode: u32, mtime: (i64, u32)) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    let when = std::time::UNIX_EPOCH
        + std::time::Duration::new(mtime.0.max(0) as u64, mtime.1.min(999_999_999));
    file.set_modified(when)
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
