//! Local transports, for tests, the demo and same-host copies:
//! - [`LocalCommandTransport`] runs the "remote" command as a local child (`sh -c COMMAND`) over
//!   pipes, e.g. a local `barsync serve`.
//! - [`InProcessTransport`] runs a Rust handler on a thread of this process, connected by
//!   in-memory pipes; [`duplex_pair`] gives two connected in-memory duplex ends.

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::memory_pipe::{memory_pipe, PipeReader, PipeWriter};
use crate::process::{spawn_child_stream, Status255};
use crate::{
    ExitWaiter, Peer, RemoteExit, RemoteStream, StreamReader, StreamWriter, Transport,
    TransportError, TransportKind, WaitForExit, WriteHalf,
};

/// Chunks in flight per direction of an in-memory pipe (each at most 256 KiB).
const IN_MEMORY_PIPE_CHUNKS: usize = 16;

/// Runs commands locally with `sh -c`, in an optional working directory.
pub struct LocalCommandTransport {
    peer: Peer,
    shell: PathBuf,
    working_directory: Option<PathBuf>,
}

impl LocalCommandTransport {
    /// Runs commands with `/bin/sh -c` in the current directory.
    pub fn new() -> LocalCommandTransport {
        LocalCommandTransport {
            peer: Peer::named("local"),
            shell: PathBuf::from("/bin/sh"),
            working_directory: None,
        }
    }

    /// Runs commands in `directory`.
    pub fn in_directory(mut self, directory: impl Into<PathBuf>) -> LocalCommandTransport {
        self.working_directory = Some(directory.into());
        self
    }
}

impl Default for LocalCommandTransport {
    fn default() -> Self {
        LocalCommandTransport::new()
    }
}

impl Transport for LocalCommandTransport {
    fn peer(&self) -> &Peer {
        &self.peer
    }

    fn kind(&self) -> TransportKind {
        TransportKind::LocalCommand
    }

    fn open(&self, remote_command: &str) -> Result<RemoteStream, TransportError> {
        let mut command = Command::new(&self.shell);
        command.arg("-c").arg(remote_command);
        if let Some(directory) = &self.working_directory {
            command.current_dir(directory);
        }
        spawn_child_stream(self.peer.clone(), command, Status255::CommandStatus)
    }
}

/// The far end given to an in-process handler: read the client's bytes, write the reply,
/// append diagnostics to `stderr`.
pub struct ServerEnd {
    /// What the client writes.
    pub input: PipeReader,
    /// What the client reads.
    pub output: PipeWriter,
    /// Returned to the client as the command's stderr.
    pub stderr: Vec<u8>,
}

impl Read for ServerEnd {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for ServerEnd {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.output.flush()
    }
}

/// A handler for [`InProcessTransport`]: gets the command line and the far end, returns the exit
/// status.
pub type InProcessHandler = dyn Fn(&str, &mut ServerEnd) -> i32 + Send + Sync;

/// Runs each opened command as a call of a Rust handler on its own thread.
pub struct InProcessTransport {
    peer: Peer,
    handler: Arc<InProcessHandler>,
}

impl InProcessTransport {
    /// A transport whose commands are served by `handler`; `name` appears in errors.
    pub fn new(
        name: &str,
        handler: impl Fn(&str, &mut ServerEnd) -> i32 + Send + Sync + 'static,
    ) -> InProcessTransport {
        InProcessTransport {
            peer: Peer::named(format!("in-process:{name}")),
            handler: Arc::new(handler),
        }
    }
}

impl Transport for InProcessTransport {
    fn peer(&self) -> &Peer {
        &self.peer
    }

    fn kind(&self) -> TransportKind {
        TransportKind::InProcess
    }

    fn open(&self, remote_command: &str) -> Result<RemoteStream, TransportError> {
        let (client_writer, server_input) = memory_pipe(IN_MEMORY_PIPE_CHUNKS);
        let (server_output, client_reader) = memory_pipe(IN_MEMORY_PIPE_CHUNKS);
        let handler = Arc::clone(&self.handler);
        let command = remote_command.to_string();
        let server = std::thread::Builder::new()
            .name("barsync-in-process".into())
            .spawn(move || {
                let mut end = ServerEnd {
                    input: server_input,
                    output: server_output,
                    stderr: Vec::new(),
                };
                let code = handler(&command, &mut end);
                RemoteExit {
                    code: Some(code),
                    signal: None,
                    stderr: end.stderr,
                }
            })
            .map_err(|source| TransportError::Io {
                peer: self.peer.clone(),
                action: "starting the in-process server thread",
                source,
            })?;
        Ok(RemoteStream::new(
            self.peer.clone(),
            StreamReader::new(Box::new(client_reader)),
            StreamWriter::new(Box::new(PipeWriteHalf(client_writer))),
            ExitWaiter::new(Box::new(ThreadWaiter {
                peer: self.peer.clone(),
                thread: server,
            })),
        ))
    }
}

struct PipeWriteHalf(PipeWriter);

impl Write for PipeWriteHalf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl WriteHalf for PipeWriteHalf {
    fn close_write(&mut self) -> io::Result<()> {
        self.0.close();
        Ok(())
    }
}

struct ThreadWaiter {
    peer: Peer,
    thread: JoinHandle<RemoteExit>,
}

impl WaitForExit for ThreadWaiter {
    fn wait(self: Box<Self>) -> Result<RemoteExit, TransportError> {
        self.thread
            .join()
            .map_err(|_| TransportError::ConnectionLost {
                peer: self.peer.clone(),
                message: "the in-process handler panicked".into(),
            })
    }
}

/// One end of an in-memory duplex connection made by [`duplex_pair`].
pub struct DuplexEnd {
    /// Bytes from the other end.
    pub reader: PipeReader,
    /// Bytes to the other end; close it to send EOF.
    pub writer: PipeWriter,
}

impl Read for DuplexEnd {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read(buf)
    }
}

impl Write for DuplexEnd {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

/// Two connected in-memory duplex ends: what one writes, the other reads.
pub fn duplex_pair() -> (DuplexEnd, DuplexEnd) {
    let (a_writer, b_reader) = memory_pipe(IN_MEMORY_PIPE_CHUNKS);
    let (b_writer, a_reader) = memory_pipe(IN_MEMORY_PIPE_CHUNKS);
    (
        DuplexEnd {
            reader: a_reader,
            writer: a_writer,
        },
        DuplexEnd {
            reader: b_reader,
            writer: b_writer,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_command_echoes_through_cat_and_reports_exit_and_stderr() {
        let transport = LocalCommandTransport::new();
        let mut stream = transport.open("cat; echo oops >&2; exit 3").unwrap();
        stream.write_all(b"hello").unwrap();
        stream.close_write().unwrap();
        let mut output = Vec::new();
        stream.read_to_end(&mut output).unwrap();
        assert_eq!(output, b"hello");
        let exit = stream.finish().unwrap();
        assert_eq!(exit.code, Some(3));
        assert_eq!(exit.stderr_text(), "oops");
    }

    #[test]
    fn in_process_handler_sees_command_and_bytes() {
        let transport = InProcessTransport::new("upper", |command, end| {
            let mut input = Vec::new();
            end.read_to_end(&mut input).unwrap();
            end.write_all(command.as_bytes()).unwrap();
            end.write_all(&input.to_ascii_uppercase()).unwrap();
            end.stderr.extend_from_slice(b"done");
            7
        });
        let (mut reader, mut writer, exit) = transport.open("cmd:").unwrap().split();
        let feeder = std::thread::spawn(move || {
            writer.write_all(&vec![b'a'; 1_000_000]).unwrap();
            writer.close_write().unwrap();
        });
        let mut output = Vec::new();
        reader.read_to_end(&mut output).unwrap();
        feeder.join().unwrap();
        assert_eq!(&output[..4], b"cmd:");
        assert_eq!(output.len(), 4 + 1_000_000);
        assert!(output[4..].iter().all(|&b| b == b'A'));
        let exit = exit.wait().unwrap();
        assert_eq!((exit.code, exit.stderr_text().as_str()), (Some(7), "done"));
    }

    #[test]
    fn duplex_pair_carries_both_directions_and_eof() {
        let (mut a, mut b) = duplex_pair();
        a.write_all(b"ping").unwrap();
        a.writer.close();
        let mut got = Vec::new();
        b.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"ping");
        b.write_all(b"pong").unwrap();
        drop(b);
        got.clear();
        a.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"pong");
    }
}
