//! The receiving side of a session: lists remote trees and fetches files, pipelined.
//!
//! [`Client::fetch`] runs two threads: one computes the signature of each file's local basis and
//! streams the requests, the other (the caller's) reads the answers and rebuilds each file into a
//! temporary file beside its destination, which is published (mode and mtime set, fsync, rename,
//! fsync of the directory) only after its digest matched the sender's. At most
//! [`MAX_IN_FLIGHT`] requests are outstanding. One file failing (refused, missing, corrupt) is
//! reported in its [`FetchOutcome`] and does not stop the others.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, TrySendError};

use super::frame::{Fields, FrameReader, FrameWriter, Kind, MAX_PAYLOAD};
use super::handshake::{
    handshake, FEATURES, FEATURE_PROBE, FEATURE_RANGES, FEATURE_READ_ONLY, FEATURE_WATCH,
};
use super::link::receive_file_or_link;
use super::literal::LiteralDecoder;
use super::part::receive_part;
use super::probe::{self, LinkSpeed, FAST_LINK_LEVEL, PROBE_BYTES};
use super::receiver::{
    read_request_error, receive_file, receive_file_in_place, send_signature, Incoming,
};
use super::{Entry, EntryKind, ProtocolError};
use crate::confine::{Destination, RelativePath};
use crate::digest::FileDigest;
use crate::file_error::{FileError, FileErrorKind, VerifiedBy};
use crate::fs::{open_basis, MappedFile, PublishBatch, TempFile};
use crate::signature::{
    signature, signature_of_map, signature_of_map_range, Signature, SignatureOptions,
};
use crate::split_file::FilePart;

/// `FileRequest` flag: the client rebuilds the file in place (the delta must allow it).
pub const FLAG_IN_PLACE: u8 = 1;

/// Opens an existing regular file for reading and writing, never through a symlink (its
/// directory reached from the destination's root, the file itself with `O_NOFOLLOW`).
fn open_for_in_place(destination: &Destination) -> Option<std::fs::File> {
    use rustix::fs::{openat, Mode, OFlags};
    let dir = destination.open_parent().ok()?;
    let flags = OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = openat(&dir, destination.file_name(), flags, Mode::empty()).ok()?;
    let file = std::fs::File::from(fd);
    file.metadata().ok().filter(|m| m.is_file()).map(|_| file)
}

/// Requests sent ahead of the answers being read. Over a link with round-trip time `t`, small
/// files cost about `t / MAX_IN_FLIGHT` each (10,000 files over 50 ms: about 2 s). Each pending
/// request holds its basis map and signature (and, in place, an open file), which bounds memory
/// and descriptors.
pub const MAX_IN_FLIGHT: usize = 256;
/// A basis of at least this many bytes is signed on every core.
const PARALLEL_SIGNATURE_BYTES: usize = 16 << 20;

/// One file to fetch.
#[derive(Clone, Debug)]
pub struct FetchRequest {
    /// Absolute path on the server.
    pub remote_path: PathBuf,
    /// Where the verified file is published: below a trusted root, reached without following
    /// any symlink below it (a directory swapped for a symlink fails this file).
    pub destination: Destination,
    /// A local file to reuse blocks from (an older version, a partial copy), if any. One beside
    /// the destination is read through the destination's directory handle.
    pub basis: Option<PathBuf>,
    /// Refuse files larger than this (what the caller was told the file's size is).
    pub max_len: Option<u64>,
    /// Where to keep what was received if the session breaks in the middle of this file, so the
    /// next transfer can use it as its basis (`None`: discard it). It is beside the destination:
    /// only its file name is used, in the destination's directory.
    pub partial: Option<PathBuf>,
    /// The whole file (and how it is written), or one byte range of it.
    pub target: FetchTarget,
}

/// What a [`FetchRequest`] fetches.
#[derive(Clone, Debug)]
pub enum FetchTarget {
    /// The whole file, published at the request's destination as the mode says.
    WholeFile(WriteMode),
    /// Only this byte range of the file, into its [`SplitFile`](crate::split_file::SplitFile)
    /// (which the caller finishes once every part is in). The request's `destination` and
    /// `partial` are then the split file's business; `basis` is still the file the range is
    /// delta-transferred against, and `max_len` should be the part's length. Needs a server that
    /// [supports parts](Client::supports_parts).
    Part(FilePart),
}

/// How a whole file is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WriteMode {
    /// Into a temporary file beside the destination, published once verified.
    #[default]
    NewFile,
    /// Over the destination itself, writing only what changed (rsync's `--inplace`); applies
    /// when `basis` is the destination. A failure leaves it modified.
    InPlace,
    /// As [`WriteMode::NewFile`], but when the file turns out identical to `basis` (every block
    /// copied in order, the same length, the sender's digest matching the basis), the basis is
    /// hard-linked as the destination instead (Barman's `reuse_backup = link`).
    LinkIdentical,
}

impl FetchTarget {
    /// The whole file, written into a new file.
    pub const NEW_FILE: FetchTarget = FetchTarget::WholeFile(WriteMode::NewFile);

    /// The part this target fetches, if it is one.
    pub fn part(&self) -> Option<&FilePart> {
        match self {
            FetchTarget::Part(part) => Some(part),
            FetchTarget::WholeFile(_) => None,
        }
    }

    /// How the whole file is written; `None` for a part.
    pub fn write_mode(&self) -> Option<WriteMode> {
        match self {
            FetchTarget::WholeFile(mode) => Some(*mode),
            FetchTarget::Part(_) => None,
        }
    }
}

impl FetchRequest {
    /// Removes the partial copy, if any (once the file is complete), by name in the
    /// destination's directory reached as for writing: never through a symlink.
    pub fn remove_partial(&self) -> std::io::Result<()> {
        let Some(name) = self.partial.as_deref().and_then(std::path::Path::file_name) else {
            return Ok(());
        };
        let dir = self.destination.open_parent()?;
        match rustix::fs::unlinkat(&dir, name, rustix::fs::AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// What a successful fetch did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchReport {
    /// The file's length.
    pub len: u64,
    /// The barsync digest the file was verified against (`None` for SFTP copies).
    pub digest: Option<FileDigest>,
    /// How the file was verified before it was published.
    pub verified_by: VerifiedBy,
    /// Bytes the sender sent for this file (frames, compressed literals).
    pub received_bytes: u64,
    /// Bytes of the signature this side sent.
    pub signature_bytes: u64,
    /// Bytes rebuilt from the local basis.
    pub reused_bytes: u64,
    /// How the reused bytes were copied (`None`: none were, or the path does not say).
    pub copied_by: Option<crate::kernel_copy::CopyPath>,
    /// Set when the basis could not be used and the file was fetched whole.
    pub basis_problem: Option<String>,
    /// The destination is a hard link to the (identical) basis.
    pub linked: bool,
}

/// The result for one request, in request order.
#[derive(Debug)]
pub struct FetchOutcome {
    /// The request's position in the batch.
    pub index: usize,
    /// The far side's path of the file.
    pub remote_path: PathBuf,
    /// What became of it.
    pub result: Result<FetchReport, FileError>,
}

/// Options of a session.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientOptions {
    /// zstd level for literals (Barman's `network_compression` maps to `Some(3)`); `None`: raw.
    pub compression: Option<i32>,
    /// Measure the link before the first batch worth it, and on a fast one use level 1 instead
    /// of `compression` ([`super::probe`]); servers too old to be measured get `compression`.
    pub adapt_compression: bool,
}

/// A connected, handshaken client.
pub struct Client<R: Read, W: Write> {
    pub(super) reader: FrameReader<BufReader<R>>,
    pub(super) writer: Option<FrameWriter<BufWriter<W>>>,
    pub(super) options: ClientOptions,
    pub(super) next_request: u32,
    peer_agent: String,
    peer_features: u32,
    /// What [`Incoming::mode_mask`] files of this session get.
    mode_mask: u32,
    /// What the probe measured, once the session was probed.
    link: Option<LinkSpeed>,
    /// The session may still be probed ([`Client::probe_for`]).
    may_probe: bool,
    /// Bytes of new files this session's batches asked for, until it is probed.
    new_file_bytes: u64,
}

impl<R: Read, W: Write + Send> Client<R, W> {
    /// Handshakes over `input`/`output` (the transport's stream).
    pub fn connect(input: R, output: W, options: ClientOptions) -> Result<Self, ProtocolError> {
        let mut reader = FrameReader::new(BufReader::with_capacity(256 * 1024, input));
        let mut writer = FrameWriter::new(BufWriter::with_capacity(256 * 1024, output));
        let (peer_agent, peer_features) = handshake(&mut reader, &mut writer, FEATURES)?;
        let asked = options.compression.unwrap_or(0);
        Ok(Client {
            reader,
            writer: Some(writer),
            options,
            next_request: 0,
            peer_agent,
            peer_features,
            mode_mask: 0o7777,
            link: None,
            new_file_bytes: 0,
            // Only a server that knows `Probe`, and only when there is a level to lower.
            may_probe: options.adapt_compression
                && asked > FAST_LINK_LEVEL
                && peer_features & FEATURE_PROBE != 0,
        })
    }

    /// What the probe measured, once this session was probed (with
    /// [`ClientOptions::adapt_compression`], once its batches asked for
    /// [`probe::PROBE_WORTH`] bytes of new files).
    pub fn link_speed(&self) -> Option<LinkSpeed> {
        self.link
    }

    /// Times the link before the batch that brings the session's new files to
    /// [`probe::PROBE_WORTH`] bytes, and on a fast link lowers the session's level ([`probe`]).
    fn probe_for(&mut self, requests: &[FetchRequest]) -> Result<(), ProtocolError> {
        if !self.may_probe {
            return Ok(());
        }
        self.new_file_bytes += probe::new_file_bytes(requests);
        if self.new_file_bytes < probe::PROBE_WORTH {
            return Ok(());
        }
        self.may_probe = false;
        let id = self.next_request;
        self.next_request += 1;
        let writer = self.writer.as_mut().expect("writer present");
        let link = probe::measure(&mut self.reader, writer, id, PROBE_BYTES)?;
        if link.is_fast() {
            self.options.compression = Some(FAST_LINK_LEVEL);
        }
        self.link = Some(link);
        Ok(())
    }

    /// The zstd level this session's requests ask for (`None`: raw).
    pub fn compression(&self) -> Option<i32> {
        self.options.compression
    }

    /// Files this client writes from now on never get the setuid or setgid bit, whatever the
    /// sender's mode (a backup never needs them: the passive node asks for this). Without it,
    /// modes are kept as `rsync -p` keeps them.
    pub fn drop_setid(&mut self) {
        self.mode_mask = crate::fs::SETID_DROPPED;
    }

    /// Bytes sent and received in this session so far, frame headers included.
    pub fn traffic(&self) -> (u64, u64) {
        (
            self.writer.as_ref().map_or(0, |w| w.bytes),
            self.reader.bytes,
        )
    }

    /// Whether the server answers requests for byte ranges of a file ([`FetchTarget::Part`]).
    pub fn supports_parts(&self) -> bool {
        self.peer_features & FEATURE_RANGES != 0
    }

    /// Whether the server announced itself read-only (`barsync serve --read-only`: every push
    /// is refused).
    pub fn peer_read_only(&self) -> bool {
        self.peer_features & FEATURE_READ_ONLY != 0
    }

    /// Whether the server answers [`Client::watch`] (a barsync that knows `Watch`).
    pub fn supports_watch(&self) -> bool {
        self.peer_features & FEATURE_WATCH != 0
    }

    /// Waits (on the server, up to `request.timeout`) until `remote_path` differs from what
    /// the request says the client saw, and returns its state and tail; `Ok(Err(failure))`
    /// when the server refused or could not open the file. Needs a server that
    /// [supports it](Client::supports_watch).
    pub fn watch(
        &mut self,
        remote_path: &Path,
        request: &super::watch::WatchRequest,
    ) -> Result<Result<super::watch::Watched, FileError>, ProtocolError> {
        let id = self.next_request;
        self.next_request += 1;
        super::watch::write_request(self.writer(), id, remote_path, request)?;
        self.writer().flush()?;
        let (kind, payload) = self.reader.expect_frame()?;
        let mut fields = Fields::new(kind, payload);
        let answered = match kind {
            Kind::Fatal => return Err(ProtocolError::Fatal(fields.str()?.to_string())),
            Kind::Watched | Kind::RequestError => fields.u32()?,
            other => {
                return Err(ProtocolError::Malformed(format!(
                    "unexpected {other:?} while waiting for Watched"
                )))
            }
        };
        if answered != id {
            return Err(ProtocolError::Malformed(format!(
                "answer to request {answered} while waiting for {id}"
            )));
        }
        if kind == Kind::RequestError {
            return Ok(Err(read_request_error(&mut fields, FileErrorKind::Remote)?));
        }
        let watched = super::watch::read_answer(&mut fields)?;
        fields.end()?;
        Ok(Ok(watched))
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

    /// Lists `remote_path` on the server; `Ok(Err(failure))` when the server refused or failed.
    pub fn list(
        &mut self,
        remote_path: &Path,
        recursive: bool,
    ) -> Result<Result<Vec<Entry>, FileError>, ProtocolError> {
        let request = self.next_request;
        self.next_request += 1;
        self.writer()
            .start()
            .u32(request)
            .path(remote_path)
            .u8(recursive as u8);
        self.writer().send(Kind::List)?;
        self.writer().flush()?;
        let mut entries = Vec::new();
        let mut batches = LiteralDecoder::default();
        loop {
            let (kind, payload) = self.reader.expect_frame()?;
            let mut fields = Fields::new(kind, payload);
            let answered = match kind {
                Kind::Fatal => return Err(ProtocolError::Fatal(fields.str()?.to_string())),
                Kind::ListEntry | Kind::ListBatch | Kind::ListEnd | Kind::RequestError => {
                    fields.u32()?
                }
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
                Kind::ListBatch => {
                    let encoding = fields.u8()?;
                    let raw_len = fields.u32()? as usize;
                    // Bounded as one frame's payload (the server packs at most
                    // LIST_BATCH_BYTES of records into one).
                    let records = batches.decode(encoding, raw_len, fields.rest(), MAX_PAYLOAD)?;
                    let mut records = Fields::new(Kind::ListBatch, records);
                    while !records.is_empty() {
                        entries.push(read_entry(&mut records)?);
                    }
                }
                Kind::RequestError => {
                    return Ok(Err(read_request_error(&mut fields, FileErrorKind::Remote)?))
                }
                _ => entries.push(read_entry(&mut fields)?),
            }
        }
    }

    /// Fetches every request, pipelined; calls `progress` as each one completes.
    ///
    /// When the session breaks (`Err`), the files verified before the break are still
    /// published first, and each is reported to `progress` as a success: those reports stand,
    /// and a caller that fetches again should leave those files out.
    pub fn fetch(
        &mut self,
        requests: &[FetchRequest],
        mut progress: impl FnMut(&FetchOutcome),
    ) -> Result<Vec<FetchOutcome>, ProtocolError> {
        self.probe_for(requests)?;
        let first_request = self.next_request;
        self.next_request += requests.len() as u32;
        let mut writer = self.writer.take().expect("writer present");
        let level = self.options.compression.unwrap_or(0).clamp(0, 22) as u8;
        let (pending_tx, pending_rx) = sync_channel::<Pending>(MAX_IN_FLIGHT);
        let reader = &mut self.reader;
        let mode_mask = self.mode_mask;
        let (outcomes, writer_result) = std::thread::scope(|scope| {
            let sender = scope.spawn(move || {
                let result = send_requests(&mut writer, requests, first_request, level, pending_tx);
                (writer, result)
            });
            let outcomes = receive_answers(
                reader,
                requests,
                first_request,
                mode_mask,
                pending_rx,
                &mut progress,
            );
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
    let path = RelativePath::from_path(fields.path()?)
        .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
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
        Some(fields.path()?.as_os_str().to_owned())
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
    /// The bytes of `basis` the signature covers (all of it, or a part's range).
    basis_range: std::ops::Range<usize>,
    /// For an in-place request: the destination, open for writing (the basis maps it).
    in_place: Option<std::fs::File>,
    signature: Signature,
    signature_bytes: u64,
    problem: Option<String>,
}

/// `at` clamped to a basis of `len` bytes.
fn clamp(at: u64, len: usize) -> usize {
    usize::try_from(at).map_or(len, |at| at.min(len))
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
        let in_place_file = if request.target.write_mode() == Some(WriteMode::InPlace)
            && request.basis.as_ref() == Some(&request.destination.path())
        {
            open_for_in_place(&request.destination)
        } else {
            None
        };
        let (basis, problem) = match (&in_place_file, &request.basis) {
            (Some(file), _) => match MappedFile::from_file(file) {
                Ok(map) => (Some(map), None),
                Err(e) => (
                    None,
                    Some(format!(
                        "basis {} unreadable ({e}); fetched whole",
                        request.destination.path().display()
                    )),
                ),
            },
            (None, Some(path)) => match open_basis(&request.destination, path)
                .and_then(|file| MappedFile::from_file(&file))
            {
                Ok(map) => (Some(map), None),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, None),
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
        let in_place_file = in_place_file.filter(|_| basis.is_some());
        let basis_len = basis.as_ref().map_or(0, |map| map.len());
        let basis_range = match request.target.part() {
            Some(part) => clamp(part.offset, basis_len)..clamp(part.offset + part.len, basis_len),
            None => 0..basis_len,
        };
        // The server waits for a large basis's signature before it can start: sign it on
        // every core (a small one is not worth the threads' coordination).
        let sign_options = SignatureOptions {
            parallel: basis_range.len() >= PARALLEL_SIGNATURE_BYTES,
            ..SignatureOptions::default()
        };
        let signature = match &basis {
            Some(map) if request.target.part().is_some() => {
                signature_of_map_range(map, basis_range.clone(), &sign_options)
            }
            Some(map) => signature_of_map(map, &sign_options),
            None => signature(&[], &sign_options),
        };
        encoded.clear();
        signature.encode(&mut encoded);
        let id = first_request + index as u32;
        let flags = if in_place_file.is_some() {
            FLAG_IN_PLACE
        } else {
            0
        };
        match request.target.part() {
            Some(part) => {
                writer
                    .start()
                    .u32(id)
                    .path(&request.remote_path)
                    .u64(part.offset)
                    .u64(part.len)
                    .u64(encoded.len() as u64)
                    .u8(level)
                    .u8(flags);
                writer.send(Kind::RangeRequest)?;
            }
            None => {
                writer
                    .start()
                    .u32(id)
                    .path(&request.remote_path)
                    .u64(encoded.len() as u64)
                    .u8(level)
                    .u8(flags);
                writer.send(Kind::FileRequest)?;
            }
        }
        send_signature(writer, id, &encoded)?;
        let entry = Pending {
            basis,
            basis_range,
            in_place: in_place_file,
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
    mode_mask: u32,
    pending: Receiver<Pending>,
    progress: &mut dyn FnMut(&FetchOutcome),
) -> Result<Vec<FetchOutcome>, ProtocolError> {
    let mut outcomes = Vec::with_capacity(requests.len());
    let mut literals = LiteralDecoder::default();
    // Verified files are published in batches (one syncfs, then renames, then one fsync per
    // directory); their success is reported once their batch is committed.
    let mut batch = PublishBatch::default();
    let mut waiting: Vec<FetchOutcome> = Vec::new();
    let commit = |batch: &mut PublishBatch,
                  waiting: &mut Vec<FetchOutcome>,
                  outcomes: &mut Vec<FetchOutcome>,
                  progress: &mut dyn FnMut(&FetchOutcome)| {
        debug_assert_eq!(
            waiting.len(),
            batch.len(),
            "every waiting outcome has its file in the batch"
        );
        for (mut outcome, published) in waiting.drain(..).zip(batch.commit()) {
            if let Err(e) = published {
                outcome.result = Err(FileError::local_io(
                    &e,
                    format!(
                        "{}: publishing: {e}",
                        requests[outcome.index].destination.path().display()
                    ),
                )
                .for_file(&outcome.remote_path));
            }
            progress(&outcome);
            outcomes.push(outcome);
        }
    };
    for (index, request) in requests.iter().enumerate() {
        let id = first_request + index as u32;
        let entry = pending.recv().map_err(|_| ProtocolError::Truncated)?;
        let start_bytes = reader.bytes;
        let basis = entry
            .basis
            .as_deref()
            .map_or(&[][..], |map| &map[entry.basis_range.clone()]);
        let label = crate::names::shown_path(&request.remote_path);
        let incoming = Incoming {
            id,
            label: &label,
            peer: "remote",
            basis,
            basis_map: entry.basis.as_ref(),
            signature: &entry.signature,
            max_len: request.max_len,
            part: request.target.part().is_some(),
            mode_mask,
        };
        let make_temp = || {
            let mut temp = TempFile::for_destination(&request.destination)?;
            if let Some(partial) = &request.partial {
                temp.keep_unpublished_as(partial);
            }
            Ok(temp)
        };
        let queued_before = batch.len();
        let link_basis = request.basis.as_deref().filter(|_| {
            request.target.write_mode() == Some(WriteMode::LinkIdentical) && entry.basis.is_some()
        });
        let received = match (request.target.part(), &entry.in_place, link_basis) {
            (Some(part), _, _) => receive_part(reader, &incoming, part, &mut literals)
                .map(|r| r.map(|received| (received, false))),
            (None, Some(file), _) => receive_file_in_place(reader, &incoming, file, &mut literals)
                .map(|r| r.map(|received| (received, false))),
            (None, None, Some(basis_path)) => receive_file_or_link(
                reader,
                &incoming,
                basis_path,
                &request.destination,
                make_temp,
                &mut literals,
                &mut batch,
            )
            .map(|r| r.map(|done| (done.received, done.linked))),
            (None, None, None) => receive_file(
                reader,
                &incoming,
                make_temp,
                &mut literals,
                Some(&mut batch),
            )
            .map(|r| r.map(|received| (received, false))),
        };
        let received = match received {
            Ok(received) => received,
            Err(error) => {
                // The session broke: the files already verified are still published, so the
                // next run does not fetch them again.
                commit(&mut batch, &mut waiting, &mut outcomes, progress);
                return Err(error);
            }
        };
        let result = received.map_err(|e| e.for_file(&request.remote_path));
        let result = result.map(|(received, linked)| FetchReport {
            len: received.len,
            digest: Some(received.digest),
            verified_by: VerifiedBy::BarsyncDigest,
            received_bytes: reader.bytes - start_bytes,
            signature_bytes: entry.signature_bytes,
            reused_bytes: received.reused_bytes,
            copied_by: received.copied_by,
            basis_problem: entry.problem.clone(),
            linked,
        });
        let outcome = FetchOutcome {
            index,
            remote_path: request.remote_path.clone(),
            result,
        };
        // Files queued in the batch wait for it; the others (in place, or verified where they
        // already were) are durable now.
        if outcome.result.is_ok() && batch.len() > queued_before {
            waiting.push(outcome);
        } else {
            progress(&outcome);
            outcomes.push(outcome);
        }
        if batch.is_full() {
            commit(&mut batch, &mut waiting, &mut outcomes, progress);
        }
    }
    commit(&mut batch, &mut waiting, &mut outcomes, progress);
    outcomes.sort_by_key(|outcome| outcome.index);
    Ok(outcomes)
}
