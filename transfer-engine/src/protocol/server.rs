//! The sending side of a session, as run by `barsync serve` on the far end of a transport.
//!
//! It answers requests in order, reading only below its [`Roots`]: request paths are resolved
//! and opened through [`crate::confine`], never through a shell and never across a symlink.
//! Output is flushed whenever no further request is already buffered, so a pipelined client
//! gets answers as soon as it waits for them.
//!
//! A read-only server ([`ServeOptions::read_only`], `barsync serve --read-only`) announces it
//! in its `Hello` and answers every push request (file, directory, symlink, removal) with a
//! refusal, before looking at its path: nothing below its roots is ever created, changed or
//! removed. Its answers to reads are unchanged.

use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::client::FLAG_IN_PLACE;
use super::frame::{Fields, FrameReader, FrameWriter, Kind, Payload};
use super::handshake::{
    handshake, FEATURES, FEATURE_ERROR_KINDS, FEATURE_LIST_BATCH, FEATURE_READ_ONLY,
};
use super::literal::LiteralEncoder;
use super::sender::{read_signature, send_file, send_request_error, ByteRange};
use super::server_push::PushReceiver;
use super::{Entry, EntryKind, ProtocolError};
use crate::confine::{open_below, open_file_below, RelativePath, Roots};
use crate::delta::DeltaOptions;
use crate::file_error::{FileError, FileErrorKind};
use crate::signature::Signature;

/// What a session served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServeSummary {
    /// Files requested.
    pub files: u64,
    /// Of those, the ones that failed.
    pub failed: u64,
    /// Bytes received, headers included.
    pub bytes_in: u64,
    /// Bytes sent, headers included.
    pub bytes_out: u64,
}

/// How a server behaves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServeOptions {
    /// Refuse every push request (`barsync serve --read-only`).
    pub read_only: bool,
}

/// Serves one session on `input`/`output` until the client says it is done.
pub fn serve<R: Read, W: Write>(
    input: R,
    output: W,
    roots: &Roots,
) -> Result<ServeSummary, ProtocolError> {
    serve_with(input, output, roots, ServeOptions::default())
}

/// [`serve`] with `options`.
pub fn serve_with<R: Read, W: Write>(
    input: R,
    output: W,
    roots: &Roots,
    options: ServeOptions,
) -> Result<ServeSummary, ProtocolError> {
    let mut reader = FrameReader::new(BufReader::with_capacity(256 * 1024, input));
    let mut writer = FrameWriter::new(BufWriter::with_capacity(256 * 1024, output));
    let features = if options.read_only {
        FEATURES | FEATURE_READ_ONLY
    } else {
        FEATURES
    };
    let (_, peer_features) = handshake(&mut reader, &mut writer, features)?;
    // Per-file failures carry their kind to a client that reads kinds.
    let kinds = peer_features & FEATURE_ERROR_KINDS != 0;
    // Listings go packed and compressed to a client that reads them so.
    let list_batches = peer_features & FEATURE_LIST_BATCH != 0;
    let fail = |writer: &mut FrameWriter<_>, request, failure: &FileError| {
        send_request_error(
            writer,
            request,
            &failure.detail,
            kinds.then_some(failure.kind),
        )
    };
    let mut summary = ServeSummary::default();
    let mut pushes = PushReceiver::default();
    loop {
        // Flush answers before waiting for more requests, never while requests are queued.
        if reader.inner().buffer().is_empty() {
            writer.flush()?;
        }
        let (kind, payload) = reader.read_frame()?.ok_or(ProtocolError::Truncated)?;
        let mut fields = Fields::new(kind, payload);
        match kind {
            Kind::List => {
                let request = fields.u32()?;
                let path = fields.path()?.to_path_buf();
                let recursive = fields.u8()? != 0;
                fields.end()?;
                let listing = ListingRequest {
                    id: request,
                    path: &path,
                    recursive,
                    batches: list_batches,
                };
                if let Err(failure) = send_listing(&mut writer, roots, &listing)? {
                    fail(&mut writer, request, &failure)?;
                }
            }
            Kind::FileRequest | Kind::RangeRequest => {
                let request = fields.u32()?;
                let path = fields.path()?.to_path_buf();
                let range = if kind == Kind::RangeRequest {
                    Some(ByteRange {
                        offset: fields.u64()?,
                        len: fields.u64()?,
                    })
                } else {
                    None
                };
                let signature_len = fields.u64()?;
                let level = fields.u8()? as i8;
                let flags = fields.u8()?;
                fields.end()?;
                let options = DeltaOptions {
                    in_place: flags & FLAG_IN_PLACE != 0,
                };
                let signature = read_signature(&mut reader, request, signature_len)?;
                summary.files += 1;
                let outcome = match signature {
                    Ok(signature) => send_requested_file(
                        &mut writer,
                        roots,
                        request,
                        &path,
                        &signature,
                        level,
                        &options,
                        range,
                    )?
                    .map(drop),
                    Err(message) => Err(FileError::new(FileErrorKind::Corrupt, message)),
                };
                if let Err(failure) = outcome {
                    summary.failed += 1;
                    fail(&mut writer, request, &failure)?;
                }
            }
            Kind::Watch => {
                let request = fields.u32()?;
                let path = fields.path()?.to_path_buf();
                let watch = super::watch::read_request(&mut fields)?;
                fields.end()?;
                // Everything asked before was answered: send it before waiting.
                writer.flush()?;
                if let Err(failure) =
                    super::watch::answer(&mut writer, roots, request, &path, &watch)?
                {
                    fail(&mut writer, request, &failure)?;
                }
            }
            Kind::PushFile => {
                let request = fields.u32()?;
                let path = fields.path()?.to_path_buf();
                let size = fields.u64()?;
                fields.end()?;
                if options.read_only {
                    let refusal = FileError::new(FileErrorKind::Refused, read_only_refusal(&path));
                    fail(&mut writer, request, &refusal)?;
                } else {
                    pushes.file_header(&mut writer, roots, request, &path, size)?;
                }
            }
            Kind::FileBegin | Kind::RequestError => {
                let request = fields.u32()?;
                pushes.file_data(&mut reader, &mut writer, request)?;
            }
            Kind::MakeDirectory => {
                let request = fields.u32()?;
                let path = fields.path()?.to_path_buf();
                let mode = fields.u32()?;
                fields.end()?;
                if options.read_only {
                    PushReceiver::refuse(&mut writer, request, read_only_refusal(&path))?;
                } else {
                    PushReceiver::make_directory(&mut writer, roots, request, &path, mode)?;
                }
            }
            Kind::MakeSymlink => {
                let request = fields.u32()?;
                let path = fields.path()?.to_path_buf();
                let target = fields.path()?.to_path_buf();
                fields.end()?;
                if options.read_only {
                    PushReceiver::refuse(&mut writer, request, read_only_refusal(&path))?;
                } else {
                    PushReceiver::make_symlink(&mut writer, roots, request, &path, &target)?;
                }
            }
            Kind::Remove => {
                let request = fields.u32()?;
                let path = fields.path()?.to_path_buf();
                fields.end()?;
                if options.read_only {
                    PushReceiver::refuse(&mut writer, request, read_only_refusal(&path))?;
                } else {
                    PushReceiver::remove(&mut writer, roots, request, &path)?;
                }
            }
            Kind::Probe => super::probe::answer(&mut writer, fields)?,
            Kind::RequestsDone => {
                fields.end()?;
                writer.start();
                writer.send(Kind::ServerDone)?;
                writer.flush()?;
                summary.bytes_in = reader.bytes;
                summary.bytes_out = writer.bytes;
                return Ok(summary);
            }
            Kind::Fatal => return Err(ProtocolError::Fatal(fields.str()?.to_string())),
            other => {
                return Err(ProtocolError::Malformed(format!(
                    "unexpected {other:?} frame from the client"
                )))
            }
        }
    }
}

/// Resolves, opens and sends one requested file (or a range of it). `Ok(Err(message))`: a per-file failure.
#[allow(clippy::too_many_arguments)]
fn send_requested_file<W: Write>(
    writer: &mut FrameWriter<W>,
    roots: &Roots,
    request: u32,
    path: &Path,
    signature: &Signature,
    level: i8,
    options: &DeltaOptions,
    range: Option<ByteRange>,
) -> Result<Result<u64, FileError>, ProtocolError> {
    let opened = roots
        .resolve(path)
        .map_err(|e| FileError::new(FileErrorKind::Refused, e.to_string()))
        .and_then(|(root, relative)| {
            open_file_below(root, &relative).map_err(|e| {
                FileError::new(
                    FileErrorKind::of_io(&e, true),
                    format!("{}: {e}", crate::names::shown_path(path)),
                )
            })
        });
    match opened {
        Ok(file) => send_file(
            writer,
            request,
            &file,
            &crate::names::shown_path(path),
            signature,
            (level > 0).then_some(level as i32),
            options,
            range,
        ),
        Err(message) => Ok(Err(message)),
    }
}

/// A `List` request as the server answers it.
struct ListingRequest<'a> {
    id: u32,
    path: &'a Path,
    recursive: bool,
    /// The client reads `ListBatch` frames.
    batches: bool,
}

/// Raw bytes of entry records packed into one `ListBatch` (about 7,000 entries of short names).
const LIST_BATCH_BYTES: usize = 256 * 1024;
/// zstd level of `ListBatch` frames: listings are small next to file data, and level 3
/// shrinks sorted names and similar sizes and times about tenfold.
const LIST_BATCH_LEVEL: i32 = 3;

/// Lists the request's path (recursively or one level). `Ok(Err(failure))`: a per-request
/// failure.
fn send_listing<W: Write>(
    writer: &mut FrameWriter<W>,
    roots: &Roots,
    listing: &ListingRequest<'_>,
) -> Result<Result<(), FileError>, ProtocolError> {
    let (request, path, recursive) = (listing.id, listing.path, listing.recursive);
    let (root, relative) = match roots.resolve(path) {
        Ok(resolved) => resolved,
        Err(e) => return Ok(Err(FileError::new(FileErrorKind::Refused, e.to_string()))),
    };
    let mut entries = Vec::new();
    let here = RelativePath::new("").expect("empty is valid");
    if let Err(e) = walk(root, &relative, &here, recursive, &mut entries) {
        // A file is listed as one entry with the empty path.
        match open_file_below(root, &relative).and_then(|file| file.metadata()) {
            Ok(meta) if meta.is_file() => entries.push(Entry {
                path: here,
                kind: EntryKind::File,
                size: meta.len(),
                mtime: (meta.mtime(), meta.mtime_nsec() as u32),
                mode: meta.mode() & 0o7777,
                target: None,
            }),
            _ => {
                return Ok(Err(FileError::new(
                    FileErrorKind::of_io(&e, true),
                    format!("{}: {e}", crate::names::shown_path(path)),
                )))
            }
        }
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    if listing.batches {
        send_list_batches(writer, request, &entries)?;
    } else {
        for entry in &entries {
            encode_entry(writer.start().u32(request), entry);
            writer.send(Kind::ListEntry)?;
        }
    }
    writer.start().u32(request);
    writer.send(Kind::ListEnd)?;
    Ok(Ok(()))
}

/// Appends the record of `entry` to `payload`: its path, kind, size, mtime, mode and, for a
/// symlink, its target (a `ListEntry` after its request number, and each record of a
/// `ListBatch`).
fn encode_entry(payload: Payload<'_>, entry: &Entry) {
    let payload = payload
        .path(entry.path.as_path())
        .u8(entry.kind as u8)
        .u64(entry.size)
        .i64(entry.mtime.0)
        .u32(entry.mtime.1)
        .u32(entry.mode);
    if let Some(target) = &entry.target {
        payload.path(Path::new(target));
    }
}

/// Sends `entries` packed into `ListBatch` frames of up to [`LIST_BATCH_BYTES`] raw bytes.
fn send_list_batches<W: Write>(
    writer: &mut FrameWriter<W>,
    request: u32,
    entries: &[Entry],
) -> Result<(), ProtocolError> {
    let mut encoder = LiteralEncoder::new(Some(LIST_BATCH_LEVEL));
    let mut records: Vec<u8> = Vec::new();
    let mut send = |writer: &mut FrameWriter<W>, records: &mut Vec<u8>| {
        let mut payload = writer.start().u32(request);
        let buffer = payload.buffer();
        let header = buffer.len();
        buffer.extend_from_slice(&[0; 5]);
        let encoding = encoder.encode(records, buffer);
        buffer[header] = encoding;
        buffer[header + 1..header + 5].copy_from_slice(&(records.len() as u32).to_le_bytes());
        records.clear();
        writer.send(Kind::ListBatch)
    };
    for entry in entries {
        let before = records.len();
        encode_entry(Payload::appending(&mut records), entry);
        if records.len() > LIST_BATCH_BYTES {
            // This record starts the next batch (one record alone always fits).
            let record = records.split_off(before);
            send(writer, &mut records)?;
            records = record;
        }
    }
    if !records.is_empty() {
        send(writer, &mut records)?;
    }
    Ok(())
}

fn walk(
    root: &std::path::Path,
    base: &RelativePath,
    below: &RelativePath,
    recursive: bool,
    out: &mut Vec<Entry>,
) -> std::io::Result<()> {
    let full = base.join_path(below).map_err(std::io::Error::other)?;
    let dir = open_below(root, &full, true)?;
    let listing = rustix::fs::Dir::read_from(&dir).map_err(std::io::Error::from)?;
    for item in listing {
        let item = item.map_err(std::io::Error::from)?;
        let name = std::ffi::OsStr::from_bytes(item.file_name().to_bytes());
        if name == "." || name == ".." {
            continue;
        }
        let stat = rustix::fs::statat(
            &dir,
            item.file_name(),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(std::io::Error::from)?;
        let file_type = rustix::fs::FileType::from_raw_mode(stat.st_mode);
        let (kind, target) = match file_type {
            rustix::fs::FileType::RegularFile => (EntryKind::File, None),
            rustix::fs::FileType::Directory => (EntryKind::Directory, None),
            rustix::fs::FileType::Symlink => {
                let target = rustix::fs::readlinkat(&dir, item.file_name(), Vec::new())
                    .map_err(std::io::Error::from)?;
                (
                    EntryKind::Symlink,
                    Some(std::ffi::OsString::from_vec(target.into_bytes())),
                )
            }
            _ => continue, // sockets, fifos, devices: never part of a backup
        };
        let path = below.join(name).map_err(std::io::Error::other)?;
        out.push(Entry {
            path: path.clone(),
            kind,
            size: if kind == EntryKind::File {
                stat.st_size as u64
            } else {
                0
            },
            mtime: (stat.st_mtime, stat.st_mtime_nsec as u32),
            mode: stat.st_mode & 0o7777,
            target,
        });
        if recursive && kind == EntryKind::Directory {
            walk(root, base, &path, recursive, out)?;
        }
    }
    Ok(())
}

/// Why a read-only server refuses a write to `path`.
fn read_only_refusal(path: &Path) -> String {
    format!(
        "{}: refused: this barsync serve is read-only (--read-only); it never writes",
        crate::names::shown_path(path)
    )
}
