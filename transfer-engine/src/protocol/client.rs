//! The receiving side of a session: lists remote trees and fetches files, pipelined.
//!
//! [`Client::fetch`] runs two threads: one computes the signature of each file's local basis and
//! streams the requests, the other (the caller's) reads the answers and rebuilds each file into a
//! temporary file beside its destination, which is published (mode and mtime set, fsync, rename,
//! fsync of the directory) only after its digest matched the sender's. At most
//! [`MAX_IN_FLIGHT`] requests are outstanding. One file failing (refused, missing, corrupt) is
//! reported in its [`FetchOutcome`] and does not stop the others.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, TrySendError};

use super::frame::{Fields, FrameReader, FrameWriter, Kind, MAX_PAYLOAD};
use super::handshake::handshake;
use super::literal::LiteralDecoder;
use super::{Entry, EntryKind, ProtocolError};
use crate::block_size::is_valid_block_size;
use crate::confine::RelativePath;
use crate::delta::{DeltaSink, MAX_LITERAL_RUN};
use crate::digest::FileDigest;
use crate::error::PatchError;
use crate::fs::{MappedFile, TempFile};
use crate::patch::Patcher;
use crate::signature::{signature, Signature, SignatureOptions};

/// Requests sent ahead of the answers being read.
pub const MAX_IN_FLIGHT: usize = 16;

/// One file to fetch.
#[derive(Clone, Debug)]
pub struct FetchRequest {
    /// Absolute path on the server.
    pub remote_path: String,
    /// Where the verified file is published.
    pub destination: PathBuf,
    /// A local file to reuse blocks from (an older version, a partial copy), if any.
    pub basis: Option<PathBuf>,
    /// Refuse files larger than this (what the caller was told the file's size is).
    pub max_len: Option<u64>,
    /// Where to keep what was received if the session breaks in the middle of this file, so the
    /// next transfer can use it as its basis (`None`: discard it).
    pub partial: Option<PathBuf>,
}

/// What a successful fetch did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchReport {
    pub len: u64,
    pub digest: FileDigest,
    /// Bytes the sender sent for this file (frames, compressed literals).
    pub received_bytes: u64,
    /// Bytes of the signature this side sent.
    pub signature_bytes: u64,
    /// Bytes rebuilt from the local basis.
    pub reused_bytes: u64,
    /// Set when the basis could not be used and the file was fetched whole.
    pub basis_problem: Option<String>,
}

/// The result for one request, in request order.
#[derive(Debug)]
pub struct FetchOutcome {
    pub index: usize,
    pub remote_path: String,
    pub result: Result<FetchReport, String>,
}

/// Options of a session.
#[derive(Clone, Copy, Debug)]
pub struct ClientOptions {
    /// zstd level for literals (Barman's `network_compression` maps to `Some(3)`); `None`: raw.
    pub compression: Option<i32>,
}

/// A connected, handshaken client.
pub struct Client<R: Read, W: Write> {
    reader: FrameReader<BufReader<R>>,
    writer: Option<FrameWriter<BufWriter<W>>>,
    options: ClientOptions,
    next_request: u32,
    peer_agent: String,
}

impl<R: Read, W: Write + Send> Client<R, W> {
    /// Handshakes over `input`/`output` (the transport's stream).
    pub fn connect(input: R, output: W, options: ClientOptions) -> Result<Self, ProtocolError> {
        let mut reader = FrameReader::new(BufReader::with_capacity(256 * 1024, input));
        let mut writer = FrameWriter::new(BufWriter::with_capacity(256 * 1024, output));
        let (peer_agent, _features) = handshake(&mut reader, &mut writer)?;
        Ok(Client {
            reader,
            writer: Some(writer),
            options,
            next_request: 0,
            peer_agent,
        })
    }

    /// The server's agent string (e.g. `barsync 0.1.0`).
    pub fn peer_agent(&self) -> &str {
        &self.peer_agent
    }

    fn writer(&mut self) -> &mut FrameWriter<BufWriter<W>> {
        self.writer
            .as_mut()
            .expect("writer is back after every call")
    }

    /// Lists `remote_path` on the server; `Ok(Err(message))` when the server refused or failed.
    pub fn list(
        &mut self,
        remote_path: &str,
        recursive: bool,
    ) -> Result<Result<Vec<Entry>, String>, ProtocolError> {
        let request = self.next_request;
        self.next_request += 1;
        self.writer()
            .start()
            .u32(request)
            .str(remote_path)
            .u8(recursive as u8);
        self.writer().send(Kind::List)?;
        self.writer().flush()?;
        let mut entries = Vec::new();
        loop {
            let (kind, payload) = self.reader.expect_frame()?;
            let mut fields = Fields::new(kind, payload);
            let answered = match kind {
                Kind::Fatal => return Err(ProtocolError::Fatal(fields.str()?.to_string())),
                Kind::ListEntry | Kind::ListEnd | Kind::RequestError => fields.u32()?,
                other => {
                    return Err(ProtocolError::Malformed(format!(
                        "unexpected {other:?} during a listing"
                    )))
                }
            };
            if answered != request {
                return Err(ProtocolError::Malformed(format!(
                    "answer to request {answered} while waiting for {request}"
                )));
            }
            match kind {
                Kind::ListEnd => return Ok(Ok(entries)),
                Kind::RequestError => return Ok(Err(fields.str()?.to_string())),
                _ => entries.push(read_entry(&mut fields)?),
            }
        }
    }

    /// Fetches every request, pipelined; calls `progress` as each one completes.
    pub fn fetch(
        &mut self,
        requests: &[FetchRequest],
        mut progress: impl FnMut(&FetchOutcome),
    ) -> Result<Vec<FetchOutcome>, ProtocolError> {
        let first_request = self.next_request;
        self.next_request += requests.len() as u32;
        let mut writer = self.writer.take().expect("writer present");
        let level = self.options.compression.unwrap_or(0).clamp(0, 22) as u8;
        let (pending_tx, pending_rx) = sync_channel::<Pending>(MAX_IN_FLIGHT);
        let reader = &mut self.reader;
        let (outcomes, writer_result) = std::thread::scope(|scope| {
            let sender = scope.spawn(move || {
                let result = send_requests(&mut writer, requests, first_request, level, pending_tx);
                (writer, result)
            });
            let outcomes =
                receive_answers(reader, requests, first_request, pending_rx, &mut progress);
            let (writer, result) = sender.join().expect("request thread panicked");
            self.writer = Some(writer);
            (outcomes, result)
        });
        let outcomes = outcomes?;
        writer_result?;
        Ok(outcomes)
    }

    /// Ends the session cleanly.
    pub fn finish(mut self) -> Result<(), ProtocolError> {
        self.writer().start();
        self.writer().send(Kind::RequestsDone)?;
        self.writer().flush()?;
        let (kind, _) = self.reader.expect_frame()?;
        match kind {
            Kind::ServerDone => Ok(()),
            other => Err(ProtocolError::Malformed(format!(
                "expected ServerDone, got {other:?}"
            ))),
        }
    }
}

fn read_entry(fields: &mut Fields<'_>) -> Result<Entry, ProtocolError> {
    let path =
        RelativePath::new(fields.str()?).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    let kind = match fields.u8()? {
        0 => EntryKind::File,
        1 => EntryKind::Directory,
        2 => EntryKind::Symlink,
        other => {
            return Err(ProtocolError::Malformed(format!(
                "unknown entry type {other}"
            )))
        }
    };
    let size = fields.u64()?;
    let mtime = (fields.i64()?, fields.u32()?);
    let mode = fields.u32()? & 0o7777;
    let target = if kind == EntryKind::Symlink {
        Some(fields.str()?.to_string())
    } else {
        None
    };
    Ok(Entry {
        path,
        kind,
        size,
        mtime,
        mode,
        target,
    })
}

/// What the answer reader needs of a request the writer sent: its basis and signature.
struct Pending {
    basis: Option<MappedFile>,
    signature: Signature,
    signature_bytes: u64,
    problem: Option<String>,
}

fn send_requests<W: Write>(
    writer: &mut FrameWriter<W>,
    requests: &[FetchRequest],
    first_request: u32,
    level: u8,
    pending: std::sync::mpsc::SyncSender<Pending>,
) -> Result<(), ProtocolError> {
    let mut encoded = Vec::new();
    for (index, request) in requests.iter().enumerate() {
        // A basis that cannot be read is not fatal: the file is fetched whole.
        let (basis, problem) = match &request.basis {
            Some(path) if path.exists() => match MappedFile::open(path) {
                Ok(map) => (Some(map), None),
                Err(e) => (
                    None,
                    Some(format!(
                        "basis {} unreadable ({e}); fetched whole",
                        path.display()
                    )),
                ),
            },
            _ => (None, None),
        };
        let signature = signature(
            basis.as_deref().unwrap_or(&[]),
            &SignatureOptions::default(),
        );
        encoded.clear();
        signature.encode(&mut encoded);
        let id = first_request + index as u32;
        writer
            .start()
            .u32(id)
            .str(&request.remote_path)
            .u64(encoded.len() as u64)
            .u8(level);
        writer.send(Kind::FileRequest)?;
        for chunk in encoded.chunks(MAX_PAYLOAD - 4) {
            writer.start().u32(id).rest(chunk);
            writer.send(Kind::SignatureChunk)?;
        }
        let entry = Pending {
            basis,
            signature,
            signature_bytes: encoded.len() as u64,
            problem,
        };
        match pending.try_send(entry) {
            Ok(()) => {}
            Err(TrySendError::Full(entry)) => {
                // MAX_IN_FLIGHT requests are outstanding: let the server see them all, then wait
                // for the reader to finish one.
                writer.flush()?;
                if pending.send(entry).is_err() {
                    return Ok(()); // the reader stopped; it reports why
                }
            }
            Err(TrySendError::Disconnected(_)) => return Ok(()),
        }
    }
    writer.flush()?;
    Ok(())
}

fn receive_answers<R: Read>(
    reader: &mut FrameReader<R>,
    requests: &[FetchRequest],
    first_request: u32,
    pending: Receiver<Pending>,
    progress: &mut impl FnMut(&FetchOutcome),
) -> Result<Vec<FetchOutcome>, ProtocolError> {
    let mut outcomes = Vec::with_capacity(requests.len());
    let mut literals = LiteralDecoder::default();
    for (index, request) in requests.iter().enumerate() {
        let id = first_request + index as u32;
        let entry = pending.recv().map_err(|_| ProtocolError::Truncated)?;
        let start_bytes = reader.bytes;
        let result = receive_file(reader, request, id, &entry, &mut literals)?.map(|mut report| {
            report.received_bytes = reader.bytes - start_bytes;
            report.signature_bytes = entry.signature_bytes;
            report
        });
        let outcome = FetchOutcome {
            index,
            remote_path: request.remote_path.clone(),
            result,
        };
        progress(&outcome);
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// Reads one file's answer. `Ok(Err(message))` is a failure of this file only.
fn receive_file<R: Read>(
    reader: &mut FrameReader<R>,
    request: &FetchRequest,
    id: u32,
    entry: &Pending,
    literals: &mut LiteralDecoder,
) -> Result<Result<FetchReport, String>, ProtocolError> {
    let (kind, payload) = reader.expect_frame()?;
    let mut fields = Fields::new(kind, payload);
    check_request(kind, &mut fields, id)?;
    match kind {
        Kind::RequestError => return Ok(Err(format!("remote: {}", fields.str()?))),
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
    let mut local_error: Option<String> = match request.max_len {
        Some(max) if len > max => Some(format!(
            "{} has {len} bytes, more than the {max} expected",
            request.remote_path
        )),
        _ => None,
    };
    let mut temp = match TempFile::beside(&request.destination) {
        Ok(mut temp) => {
            if let Some(partial) = &request.partial {
                temp.keep_unpublished_as(partial);
            }
            Some(temp)
        }
        Err(e) => {
            local_error.get_or_insert(format!(
                "{}: creating a temporary file: {e}",
                request.destination.display()
            ));
            None
        }
    };
    let basis: &[u8] = entry.basis.as_deref().unwrap_or(&[]);
    let mut patcher = match temp.as_mut() {
        Some(temp) if local_error.is_none() => {
            let file: &mut File = temp.file();
            Some(
                Patcher::new(
                    basis,
                    &entry.signature,
                    digest_block,
                    BufWriter::with_capacity(256 * 1024, file),
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
        check_request(kind, &mut fields, id)?;
        let step: Result<(), PatchError> = match kind {
            Kind::Copy => {
                let (first, count) = (fields.u64()?, fields.u64()?);
                fields.end()?;
                reused += count.saturating_mul(entry.signature.block_size() as u64);
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
            local_error.get_or_insert(format!("{}: {e}", request.remote_path));
        }
    };
    if let Some(message) = local_error {
        return Ok(Err(message));
    }
    let verified = finish_patch(patcher, &end);
    if let Err(e) = verified {
        return Ok(Err(format!("{}: {e}", request.remote_path)));
    }
    let mut temp = temp.expect("patcher implies a temporary file");
    if let Err(e) = temp
        .set_attributes(mode, mtime)
        .and_then(|()| temp.publish())
    {
        return Ok(Err(format!(
            "{}: publishing: {e}",
            request.destination.display()
        )));
    }
    Ok(Ok(FetchReport {
        len: end.0,
        digest: end.1,
        received_bytes: 0,
        signature_bytes: 0,
        reused_bytes: reused.min(end.0),
        basis_problem: entry.problem.clone(),
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

fn check_request(kind: Kind, fields: &mut Fields<'_>, id: u32) -> Result<(), ProtocolError> {
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
