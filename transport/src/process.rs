//! A child process seen as a [`RemoteStream`]: stdin is the write half, stdout the read half,
//! stderr is collected on a thread (its tail is kept) and the exit status comes from `wait`.
//! Shared by the ssh subprocess transport and the local child transport. A child whose stream is
//! dropped without waiting is killed and reaped.

use std::io::{self, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread::JoinHandle;

use crate::{
    ExitWaiter, Peer, RemoteExit, RemoteStream, StreamReader, StreamWriter, TransportError,
    WaitForExit, WriteHalf, STDERR_TAIL_LIMIT,
};

/// What an exit status of 255 means for this child.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status255 {
    /// An ordinary exit status of the command.
    CommandStatus,
    /// The ssh client failed (connection, authentication, host key): reported as an error.
    SshFailure,
}

/// Spawns `command` with piped stdin, stdout and stderr.
pub(crate) fn spawn_child_stream(
    peer: Peer,
    mut command: Command,
    status_255: Status255,
) -> Result<RemoteStream, TransportError> {
    let program = command.get_program().to_string_lossy().into_owned();
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|source| TransportError::Spawn {
        peer: peer.clone(),
        program,
        source,
    })?;
    let stdin = child.stdin.take().expect("stdin was piped");
    let stdout = child.stdout.take().expect("stdout was piped");
    enlarge_pipe(&stdin);
    enlarge_pipe(&stdout);
    let stderr = child.stderr.take().expect("stderr was piped");
    let stderr_collector = std::thread::Builder::new()
        .name("barsync-stderr".into())
        .spawn(move || collect_tail(stderr))
        .map_err(|source| TransportError::Io {
            peer: peer.clone(),
            action: "starting the stderr collector thread",
            source,
        })?;
    let waiter = ChildWaiter {
        peer: peer.clone(),
        child: Some(child),
        stderr_collector: Some(stderr_collector),
        status_255,
    };
    Ok(RemoteStream::new(
        peer,
        StreamReader::new(Box::new(stdout)),
        StreamWriter::new(Box::new(ChildInput(Some(stdin)))),
        ExitWaiter::new(Box::new(waiter)),
    ))
}

/// Asks for a 1 MiB pipe buffer (Linux's default is 64 KiB): fewer context switches between
/// this process and the ssh child when data streams. Only a hint; failure changes nothing.
pub fn enlarge_pipe(pipe: &impl std::os::fd::AsRawFd) {
    // SAFETY: fcntl on a descriptor we own; F_SETPIPE_SZ only resizes the kernel buffer.
    unsafe {
        libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20);
    }
}

/// Reads `source` to its end and returns its last [`STDERR_TAIL_LIMIT`] bytes.
pub(crate) fn collect_tail(mut source: impl Read) -> Vec<u8> {
    let mut tail = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        match source.read(&mut buffer) {
            Ok(0) => break,
            Ok(count) => push_tail(&mut tail, &buffer[..count]),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    tail
}

/// Appends `bytes` to `tail`, keeping only the last [`STDERR_TAIL_LIMIT`] bytes.
pub(crate) fn push_tail(tail: &mut Vec<u8>, bytes: &[u8]) {
    tail.extend_from_slice(bytes);
    if tail.len() > STDERR_TAIL_LIMIT {
        let excess = tail.len() - STDERR_TAIL_LIMIT;
        tail.drain(..excess);
    }
}

/// The name of a signal number, without `SIG`.
pub(crate) fn signal_name(signal: i32) -> String {
    let name = match signal {
        1 => "HUP",
        2 => "INT",
        3 => "QUIT",
        6 => "ABRT",
        9 => "KILL",
        11 => "SEGV",
        13 => "PIPE",
        14 => "ALRM",
        15 => "TERM",
        _ => return signal.to_string(),
    };
    name.to_string()
}

struct ChildInput(Option<ChildStdin>);

impl Write for ChildInput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.0 {
            Some(stdin) => stdin.write(buf),
            None => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "remote input already closed",
            )),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.0 {
            Some(stdin) => stdin.flush(),
            None => Ok(()),
        }
    }
}

impl WriteHalf for ChildInput {
    fn close_write(&mut self) -> io::Result<()> {
        match self.0.take() {
            Some(mut stdin) => stdin.flush(),
            None => Ok(()),
        }
    }
}

struct ChildWaiter {
    peer: Peer,
    child: Option<Child>,
    stderr_collector: Option<JoinHandle<Vec<u8>>>,
    status_255: Status255,
}

impl WaitForExit for ChildWaiter {
    fn wait(mut self: Box<Self>) -> Result<RemoteExit, TransportError> {
        let mut child = self.child.take().expect("waited only once");
        let status = child.wait().map_err(|source| TransportError::Io {
            peer: self.peer.clone(),
            action: "waiting for the child process",
            source,
        })?;
        let stderr = self
            .stderr_collector
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        let exit = RemoteExit {
            code: status.code(),
            signal: status.signal().map(signal_name),
            stderr,
        };
        if self.status_255 == Status255::SshFailure && exit.code == Some(255) {
            return Err(TransportError::SshSubprocess {
                peer: self.peer.clone(),
                stderr: exit.stderr_text(),
            });
        }
        Ok(exit)
    }
}

impl Drop for ChildWaiter {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
