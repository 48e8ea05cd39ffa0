//! Pushing: the client sends files, directories, symlinks and removals to `barsync serve`.
//!
//! A writer thread sends up to [`MAX_IN_FLIGHT`] `PushFile` headers ahead; the server answers
//! each with the signature of its current copy, which the reader (the caller's thread) hands to
//! the writer, which then streams that file's delta (`sender.rs`). Answers (`PushDone`)
//! arrive per request; one failing does not stop the others.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use super::client::{Client, MAX_IN_FLIGHT};
use super::frame::{Fields, FrameReader, FrameWriter, Kind};
use super::receiver::read_request_error;
use super::sender::{read_signature, send_file, send_request_error};
use super::ProtocolError;
use crate::delta::DeltaOptions;
use crate::file_error::{FileError, FileErrorKind};
use crate::signature::Signature;

/// One change to make on the server.
#[derive(Clone, Debug)]
pub enum PushItem {
    /// Create a directory (parents must exist or come earlier in the batch).
    Directory {
        /// Where, on the server.
        remote_path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Create or replace a symlink.
    Symlink {
        /// Where, on the server.
        remote_path: PathBuf,
        /// What it points to.
        target: PathBuf,
    },
    /// Make the server's file equal to this local file (delta against the server's copy).
    File {
        /// The local file.
        local: PathBuf,
        /// Where, on the server.
        remote_path: PathBuf,
    },
    /// Remove a file, symlink or directory tree.
    Remove {
        /// What, on the server.
        remote_path: PathBuf,
    },
}

impl PushItem {
    /// The server path this item changes.
    pub fn remote_path(&self) -> &Path {
        match self {
            PushItem::Directory { remote_path, .. }
            | PushItem::Symlink { remote_path, .. }
            | PushItem::File { remote_path, .. }
            | PushItem::Remove { remote_path } => remote_path,
        }
    }
}

/// The result for one pushed item, in request order.
#[derive(Debug)]
pub struct PushOutcome {
    /// The item's position in the batch.
    pub index: usize,
    /// The server path the item changes.
    pub remote_path: PathBuf,
    /// Done, or why not (with the server's words).
    pub result: Result<(), FileError>,
}

impl<R: Read, W: Write + Send> Client<R, W> {
    /// Applies `items` on the server, pipelined; calls `progress` as each completes.
    pub fn push(
        &mut self,
        items: &[PushItem],
        mut progress: impl FnMut(&PushOutcome),
    ) -> Result<Vec<PushOutcome>, ProtocolError> {
        let first = self.next_request;
        self.next_request += items.len() as u32;
        let level = self.options.compression.filter(|level| *level > 0);
        let mut writer = self.writer.take().expect("writer present");
        let (signatures_tx, signatures_rx) = sync_channel::<Option<Signature>>(MAX_IN_FLIGHT);
        let reader = &mut self.reader;
        let (outcomes, written) = std::thread::scope(|scope| {
            let sender = scope.spawn(move || {
                let result = send_items(&mut writer, items, first, level, signatures_rx);
                (writer, result)
            });
            let outcomes = read_answers(reader, items, first, signatures_tx, &mut progress);
            let (writer, result) = sender.join().expect("push thread panicked");
            self.writer = Some(writer);
            (outcomes, result)
        });
        let outcomes = outcomes?;
        written?;
        Ok(outcomes)
    }
}

fn send_items<W: Write>(
    writer: &mut FrameWriter<W>,
    items: &[PushItem],
    first: u32,
    level: Option<i32>,
    signatures: Receiver<Option<Signature>>,
) -> Result<(), ProtocolError> {
    let mut awaiting_signature: VecDeque<usize> = VecDeque::new();
    let mut next = 0;
    loop {
        while next < items.len() && awaiting_signature.len() < MAX_IN_FLIGHT {
            let id = first + next as u32;
            match &items[next] {
                PushItem::Directory { remote_path, mode } => {
                    writer.start().u32(id).path(remote_path).u32(*mode);
                    writer.send(Kind::MakeDirectory)?;
                }
                PushItem::Symlink {
                    remote_path,
                    target,
                } => {
                    writer.start().u32(id).path(remote_path).path(target);
                    writer.send(Kind::MakeSymlink)?;
                }
                PushItem::Remove { remote_path } => {
                    writer.start().u32(id).path(remote_path);
                    writer.send(Kind::Remove)?;
                }
                PushItem::File { local, remote_path } => {
                    let size = std::fs::metadata(local).map(|m| m.len()).unwrap_or(0);
                    writer.start().u32(id).path(remote_path).u64(size);
                    writer.send(Kind::PushFile)?;
                    awaiting_signature.push_back(next);
                }
            }
            next += 1;
        }
        writer.flush()?;
        let Some(index) = awaiting_signature.pop_front() else {
            break;
        };
        let signature = match signatures.recv() {
            Ok(Some(signature)) => signature,
            Ok(None) => continue, // the server refused this file; the reader recorded why
            Err(_) => return Ok(()), // the reader stopped; it reports why
        };
        let PushItem::File { local, .. } = &items[index] else {
            unreachable!("only files await signatures")
        };
        let id = first + index as u32;
        let label = crate::names::shown_path(local);
        let sent = match File::open(local) {
            Ok(file) => send_file(
                writer,
                id,
                &file,
                &label,
                &signature,
                level,
                &DeltaOptions::default(),
                None,
            )?,
            Err(e) => Err(FileError::new(
                FileErrorKind::of_io(&e, false),
                format!("{label}: {e}"),
            )),
        };
        if let Err(failure) = sent {
            send_request_error(writer, id, &failure.detail, None)?;
        }
    }
    writer.flush()?;
    Ok(())
}

fn read_answers<R: Read>(
    reader: &mut FrameReader<R>,
    items: &[PushItem],
    first: u32,
    signatures: SyncSender<Option<Signature>>,
    progress: &mut impl FnMut(&PushOutcome),
) -> Result<Vec<PushOutcome>, ProtocolError> {
    let mut outcomes: Vec<Option<PushOutcome>> = items.iter().map(|_| None).collect();
    let mut done = 0;
    while done < items.len() {
        let (kind, payload) = reader.expect_frame()?;
        let mut fields = Fields::new(kind, payload);
        if kind == Kind::Fatal {
            return Err(ProtocolError::Fatal(fields.str()?.to_string()));
        }
        let id = fields.u32()?;
        let index = id
            .checked_sub(first)
            .map(|i| i as usize)
            .filter(|&i| i < items.len());
        let Some(index) = index else {
            return Err(ProtocolError::Malformed(format!(
                "answer to unknown request {id}"
            )));
        };
        let result = match kind {
            Kind::PushSignature => {
                let len = fields.u64()?;
                fields.end()?;
                let signature = read_signature(reader, id, len)?
                    .map_err(|e| ProtocolError::Malformed(format!("server signature: {e}")))?;
                let _ = signatures.send(Some(signature));
                continue;
            }
            Kind::RequestError => {
                let failure = read_request_error(&mut fields, FileErrorKind::Remote)?;
                let _ = signatures.send(None);
                Err(FileError::new(
                    failure.kind,
                    format!("remote: {}", failure.detail),
                ))
            }
            Kind::PushDone => {
                let ok = fields.u8()? == 1;
                let message = fields.str()?.to_string();
                fields.end()?;
                if ok {
                    Ok(())
                } else {
                    Err(FileError::new(
                        FileErrorKind::Remote,
                        format!("remote: {message}"),
                    ))
                }
            }
            other => {
                return Err(ProtocolError::Malformed(format!(
                    "unexpected {other:?} during a push"
                )))
            }
        };
        if outcomes[index].is_some() {
            return Err(ProtocolError::Malformed(format!(
                "request {id} answered twice"
            )));
        }
        let outcome = PushOutcome {
            index,
            remote_path: items[index].remote_path().to_path_buf(),
            result,
        };
        progress(&outcome);
        outcomes[index] = Some(outcome);
        done += 1;
    }
    Ok(outcomes
        .into_iter()
        .map(|o| o.expect("every item answered"))
        .collect())
}
