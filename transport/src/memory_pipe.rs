//! An in-memory, bounded, one-way byte pipe between threads.
//!
//! Bytes travel as chunks through a bounded channel, so a slow reader holds back the writer
//! (back-pressure) and memory stays bounded at `capacity × MAX_CHUNK` bytes. The writer can end
//! the pipe with an error ([`PipeWriter::fail`]) that the reader then returns. Used by the
//! in-process transport and by the libssh2 pump thread, which needs non-blocking sends and
//! receives plus a wake-up callback whenever the other side makes progress.

use std::io::{self, Read, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;

use crate::TransportError;

/// The largest chunk one `write` call puts into the pipe.
pub const MAX_CHUNK: usize = 256 * 1024;

/// A callback run after the other side of the pipe may have become unblocked.
pub type Notify = Arc<dyn Fn() + Send + Sync>;

pub(crate) enum Message {
    Data(Vec<u8>),
    Failed(TransportError),
}

/// Creates a pipe holding at most `capacity` chunks in flight.
pub fn memory_pipe(capacity: usize) -> (PipeWriter, PipeReader) {
    let (sender, receiver) = sync_channel(capacity.max(1));
    (
        PipeWriter {
            sender: Some(sender),
            notify: None,
        },
        PipeReader {
            receiver,
            current: Vec::new(),
            position: 0,
            notify: None,
            finished: false,
        },
    )
}

/// The sending end. Dropping it ends the stream (the reader sees EOF).
pub struct PipeWriter {
    sender: Option<SyncSender<Message>>,
    notify: Option<Notify>,
}

/// Result of a non-blocking send.
pub(crate) enum TrySend {
    Sent,
    Full(Vec<u8>),
    ReaderGone,
}

impl PipeWriter {
    /// Runs `notify` after every chunk sent and when the pipe is closed.
    pub fn set_notify(&mut self, notify: Notify) {
        self.notify = Some(notify);
    }

    /// Ends the stream with an error that the reader will return.
    pub fn fail(mut self, error: TransportError) {
        if let Some(sender) = self.sender.take() {
            let _ = sender.send(Message::Failed(error));
        }
        self.wake();
    }

    /// Ends the stream normally (EOF). Idempotent.
    pub fn close(&mut self) {
        self.sender = None;
        self.wake();
    }

    pub(crate) fn try_send_chunk(&mut self, chunk: Vec<u8>) -> TrySend {
        let Some(sender) = &self.sender else {
            return TrySend::ReaderGone;
        };
        match sender.try_send(Message::Data(chunk)) {
            Ok(()) => {
                self.wake();
                TrySend::Sent
            }
            Err(TrySendError::Full(Message::Data(chunk))) => TrySend::Full(chunk),
            Err(_) => TrySend::ReaderGone,
        }
    }

    fn wake(&self) {
        if let Some(notify) = &self.notify {
            notify();
        }
    }
}

impl Write for PipeWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(sender) = &self.sender else {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "pipe already closed for writing",
            ));
        };
        if buf.is_empty() {
            return Ok(0);
        }
        let taken = buf.len().min(MAX_CHUNK);
        sender
            .send(Message::Data(buf[..taken].to_vec()))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "reader of the pipe is gone"))?;
        self.wake();
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for PipeWriter {
    fn drop(&mut self) {
        self.close();
    }
}

/// The receiving end. Dropping it makes further writes fail with `BrokenPipe`.
pub struct PipeReader {
    receiver: Receiver<Message>,
    current: Vec<u8>,
    position: usize,
    notify: Option<Notify>,
    finished: bool,
}

/// Result of a non-blocking receive.
pub(crate) enum TryRecv {
    Data(Vec<u8>),
    Empty,
    Closed,
}

impl PipeReader {
    /// Runs `notify` after every chunk taken out of the pipe.
    pub fn set_notify(&mut self, notify: Notify) {
        self.notify = Some(notify);
    }

    pub(crate) fn try_recv_chunk(&mut self) -> TryRecv {
        match self.receiver.try_recv() {
            Ok(Message::Data(chunk)) => {
                self.wake();
                TryRecv::Data(chunk)
            }
            Ok(Message::Failed(_)) | Err(TryRecvError::Disconnected) => TryRecv::Closed,
            Err(TryRecvError::Empty) => TryRecv::Empty,
        }
    }

    fn wake(&self) {
        if let Some(notify) = &self.notify {
            notify();
        }
    }
}

impl Read for PipeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.position == self.current.len() {
            if self.finished {
                return Ok(0);
            }
            match self.receiver.recv() {
                Ok(Message::Data(chunk)) => {
                    self.current = chunk;
                    self.position = 0;
                    self.wake();
                }
                Ok(Message::Failed(error)) => {
                    self.finished = true;
                    return Err(error.into_io());
                }
                Err(_) => {
                    self.finished = true;
                    return Ok(0);
                }
            }
        }
        let count = buf.len().min(self.current.len() - self.position);
        buf[..count].copy_from_slice(&self.current[self.position..self.position + count]);
        self.position += count;
        Ok(count)
    }
}
