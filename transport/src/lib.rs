//! barsync-transport: how barsync reaches the process that runs on the far side. It moves bytes
//! and knows nothing of files, deltas or Barman; the wire protocol that runs over these streams
//! lives in `transfer-engine`.
//!
//! # Public API
//! - [`Transport`] opens a remote command (for example `barsync serve --root /x`), or an SSH
//!   subsystem ([`Transport::open_subsystem`]: `sftp`), and hands back a [`RemoteStream`]: a duplex byte stream (the command's stdin and stdout) that can be used as
//!   one `Read + Write` object or split into a [`StreamReader`], a [`StreamWriter`] and an
//!   [`ExitWaiter`] for use from different threads. Closing the writer sends EOF to the command;
//!   the exit waiter gives the command's [`RemoteExit`] (status and the tail of its stderr).
//! - [`choose_transport`] builds the transport for a user's ssh command and a
//!   [`TransportPreference`] (see `PERFORMANCE.md` beside this file for why the default is what
//!   it is).
//! - Every failure is a [`TransportError`] naming the [`Peer`]; host key failures carry
//!   [`HostKeyDetails`].
//! - [`memory_pipe`] ([`PipeReader`], [`PipeWriter`]) is a bounded in-memory pipe, used by the
//!   in-process transports and by tests that run the protocol without a process;
//!   [`enlarge_pipe`] raises an OS pipe's capacity.
//!
//! Implementations:
//! - [`libssh2::Libssh2Transport`]: in-process SSH (ssh2 crate), configured from an OpenSSH-style
//!   command string ([`ssh_command`]) and `~/.ssh/config` ([`ssh_config`]) into an
//!   [`ssh_target::SshTarget`], with known_hosts checking ([`known_hosts`]). Each `open` is a new
//!   TCP connection and session served by its own I/O thread, so streams run in parallel.
//! - [`command::SshCommandTransport`]: the user's ssh command run as a subprocess, like `rsync -e`.
//! - [`local::LocalCommandTransport`] (a local child over pipes) and
//!   [`local::InProcessTransport`] (a handler running on a thread of this process).

pub mod command;
pub mod known_hosts;
pub mod libssh2;
mod libssh2_pump;
pub mod local;
mod memory_pipe;
mod process;
pub mod ssh_command;
pub mod ssh_config;
pub mod ssh_target;

use std::fmt;
use std::io::{self, Read, Write};

pub use memory_pipe::{memory_pipe, PipeReader, PipeWriter};
pub use process::enlarge_pipe;

/// How much of a remote command's stderr is kept for error messages (the tail is kept).
pub const STDERR_TAIL_LIMIT: usize = 64 * 1024;

/// Who is at the other end of a transport, as shown in every error: `user@host:port` for SSH,
/// `local` for a local child, `in-process:<name>` for an in-process handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer(String);

impl Peer {
    /// An SSH peer, displayed as `user@host:port` (`host:port` when the user is unknown).
    pub fn ssh(user: Option<&str>, host: &str, port: u16) -> Peer {
        match user {
            Some(user) => Peer(format!("{user}@{host}:{port}")),
            None => Peer(format!("{host}:{port}")),
        }
    }

    /// A peer described by free text (local programs, in-process handlers, unparsed commands).
    pub fn named(description: impl Into<String>) -> Peer {
        Peer(description.into())
    }

    /// The display form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which kind of transport carries a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportKind {
    /// In-process SSH through libssh2.
    Libssh2,
    /// The user's ssh command as a subprocess.
    SshCommand,
    /// A local child process over pipes.
    LocalCommand,
    /// A handler on a thread of this process.
    InProcess,
}

/// Everything that can go wrong while opening or using a transport. Every variant names the peer.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The ssh command string could not be understood at all.
    #[error("invalid ssh command `{command}`: {reason}")]
    InvalidSshCommand { command: String, reason: String },
    /// An ssh_config file could not be read or parsed.
    #[error("ssh config file {path}: {reason}")]
    SshConfig { path: String, reason: String },
    /// The in-process transport was asked for but cannot honour the command.
    #[error("{peer}: the in-process SSH transport cannot honour this ssh command: {reasons}")]
    InProcessUnsupported { peer: Peer, reasons: String },
    /// Name resolution failed.
    #[error("{peer}: cannot resolve host name: {source}")]
    Resolve { peer: Peer, source: io::Error },
    /// TCP connection failed.
    #[error("{peer}: cannot connect: {source}")]
    Connect { peer: Peer, source: io::Error },
    /// TCP connection or SSH handshake did not finish in time.
    #[error("{peer}: {stage} timed out after {seconds} s (ConnectTimeout)")]
    Timeout {
        peer: Peer,
        stage: &'static str,
        seconds: u64,
    },
    /// The SSH handshake (key exchange) failed.
    #[error("{peer}: SSH handshake failed: {message}")]
    Handshake { peer: Peer, message: String },
    /// The host key differs from the one recorded in known_hosts: always refused.
    #[error(
        "{peer}: HOST KEY VERIFICATION FAILED: the {} host key of {} port {} has CHANGED \
         (possible man-in-the-middle attack); the server offered {}, but {}:{} records a \
         different key. Remove that line if the change is expected.",
        .key.key_type, .key.host, .key.port, .key.fingerprint, .key.known_hosts, .key.line
    )]
    HostKeyChanged {
        peer: Peer,
        key: Box<HostKeyDetails>,
    },
    /// The host key is revoked in known_hosts.
    #[error(
        "{peer}: the host key {} of {} port {} is marked @revoked in {}",
        .key.fingerprint, .key.host, .key.port, .key.known_hosts
    )]
    HostKeyRevoked {
        peer: Peer,
        key: Box<HostKeyDetails>,
    },
    /// The host is not in known_hosts and StrictHostKeyChecking forbids adding it.
    #[error(
        "{peer}: host key verification failed: no host key for {} port {} is known in {} \
         (server offered {} {}) and StrictHostKeyChecking is yes; add the key to known_hosts \
         or use -o StrictHostKeyChecking=accept-new",
        .key.host, .key.port, .key.known_hosts, .key.key_type, .key.fingerprint
    )]
    HostKeyUnknown {
        peer: Peer,
        key: Box<HostKeyDetails>,
    },
    /// A known_hosts file could not be read or written.
    #[error("{peer}: known_hosts file {path}: {source}")]
    KnownHostsFile {
        peer: Peer,
        path: String,
        source: io::Error,
    },
    /// No authentication method was accepted.
    #[error("{peer}: authentication failed (permission denied); tried: {tried}")]
    Authentication { peer: Peer, tried: String },
    /// Opening the channel or starting the command failed.
    #[error("{peer}: cannot start remote command `{command}`: {message}")]
    Exec {
        peer: Peer,
        command: String,
        message: String,
    },
    /// A local program (ssh or a local child) could not be started.
    #[error("{peer}: cannot run `{program}`: {source}")]
    Spawn {
        peer: Peer,
        program: String,
        source: io::Error,
    },
    /// The ssh subprocess reported a connection-level failure (exit status 255).
    #[error("{peer}: ssh failed (exit status 255): {stderr}")]
    SshSubprocess { peer: Peer, stderr: String },
    /// The connection broke while the stream was in use.
    #[error("{peer}: connection lost: {message}")]
    ConnectionLost { peer: Peer, message: String },
    /// Another I/O failure, with what was being done.
    #[error("{peer}: {action}: {source}")]
    Io {
        peer: Peer,
        action: &'static str,
        source: io::Error,
    },
}

impl TransportError {
    /// Wraps this error into an `io::Error` (for `Read`/`Write` results); the original can be
    /// recovered with [`TransportError::from_io`].
    pub fn into_io(self) -> io::Error {
        let kind = match &self {
            TransportError::ConnectionLost { .. } => io::ErrorKind::ConnectionAborted,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, self)
    }

    /// Unwraps the `TransportError` carried by `source`, or describes `source` as an I/O error
    /// of `action` with `peer`.
    pub fn from_io_error(peer: &Peer, action: &'static str, source: io::Error) -> TransportError {
        if TransportError::from_io(&source).is_some() {
            if let Some(Ok(inner)) = source.into_inner().map(|e| e.downcast::<TransportError>()) {
                return *inner;
            }
            unreachable!("checked above that the io::Error carries a TransportError");
        }
        TransportError::Io {
            peer: peer.clone(),
            action,
            source,
        }
    }

    /// Finds a `TransportError` carried inside an `io::Error`, if any.
    pub fn from_io(error: &io::Error) -> Option<&TransportError> {
        error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<TransportError>())
    }
}

/// The server key at the heart of a host key verification failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostKeyDetails {
    /// Host name as looked up (before `[host]:port` bracketing).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Key type offered by the server, e.g. `ssh-ed25519`.
    pub key_type: String,
    /// `SHA256:...` fingerprint of the offered key.
    pub fingerprint: String,
    /// The known_hosts file(s) consulted or the one holding the conflicting line.
    pub known_hosts: String,
    /// 1-based line of the conflicting entry (0 when not applicable).
    pub line: usize,
}

/// How a remote command ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoteExit {
    /// The exit status, when the command exited normally.
    pub code: Option<i32>,
    /// The signal name (without `SIG`), when the command was killed by a signal.
    pub signal: Option<String>,
    /// The last [`STDERR_TAIL_LIMIT`] bytes of the command's stderr.
    pub stderr: Vec<u8>,
}

impl RemoteExit {
    /// True when the command exited with status 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The stderr tail as (lossy) UTF-8 text, trimmed.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim().to_string()
    }
}

/// Opens remote commands. One transport may open several streams, one after the other or at the
/// same time; each stream is independent.
pub trait Transport: Send + Sync {
    /// The peer this transport reaches.
    fn peer(&self) -> &Peer;
    /// Which kind of transport this is.
    fn kind(&self) -> TransportKind;
    /// Starts `remote_command` (a shell command line, run by the remote user's shell for SSH) and
    /// returns its stdin/stdout as a stream.
    fn open(&self, remote_command: &str) -> Result<RemoteStream, TransportError>;
    /// Starts the SSH subsystem `name` (`sftp`) and returns its stdin/stdout as a stream: the
    /// ssh subprocess runs `ssh -s … name`, libssh2 sends a subsystem request. Transports
    /// without SSH have no subsystems and refuse.
    fn open_subsystem(&self, name: &str) -> Result<RemoteStream, TransportError> {
        Err(TransportError::Exec {
            peer: self.peer().clone(),
            command: format!("subsystem {name}"),
            message: "this transport has no SSH subsystems".into(),
        })
    }
}

/// The write half of a stream: the remote command's stdin.
pub trait WriteHalf: Write + Send {
    /// Flushes what was written and sends EOF; later writes fail. Idempotent.
    fn close_write(&mut self) -> io::Result<()>;
}

/// Waits for a remote command to end. Implemented by each transport.
pub trait WaitForExit: Send {
    /// Blocks until the command has ended and returns how. Read the stream to its end (or drop the
    /// reader) before waiting, or a command blocked on a full stdout never ends.
    fn wait(self: Box<Self>) -> Result<RemoteExit, TransportError>;
}

/// The read half of a [`RemoteStream`]: the remote command's stdout. Dropping it before EOF acts
/// like closing a pipe: the remote command is ended (libssh2 closes the channel, and the exit
/// status is then unknown; a child process gets SIGPIPE on its next write).
pub struct StreamReader(Box<dyn Read + Send>);

impl StreamReader {
    /// Wraps any reader.
    pub fn new(inner: Box<dyn Read + Send>) -> StreamReader {
        StreamReader(inner)
    }
}

impl Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

/// The write half of a [`RemoteStream`]: the remote command's stdin. Dropping it sends EOF.
pub struct StreamWriter(Box<dyn WriteHalf>);

impl StreamWriter {
    /// Wraps any write half.
    pub fn new(inner: Box<dyn WriteHalf>) -> StreamWriter {
        StreamWriter(inner)
    }

    /// Flushes and sends EOF to the remote command.
    pub fn close_write(&mut self) -> io::Result<()> {
        self.0.close_write()
    }
}

impl Write for StreamWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Gives the exit status and stderr of a remote command once it has ended.
pub struct ExitWaiter(Box<dyn WaitForExit>);

impl ExitWaiter {
    /// Wraps any waiter.
    pub fn new(inner: Box<dyn WaitForExit>) -> ExitWaiter {
        ExitWaiter(inner)
    }

    /// Blocks until the command ended; see [`WaitForExit::wait`].
    pub fn wait(self) -> Result<RemoteExit, TransportError> {
        self.0.wait()
    }
}

/// A running remote command: its stdout to read, its stdin to write, its exit to wait for.
pub struct RemoteStream {
    peer: Peer,
    reader: StreamReader,
    writer: StreamWriter,
    exit: ExitWaiter,
}

impl RemoteStream {
    /// Assembles a stream from its parts (used by the transports).
    pub fn new(peer: Peer, reader: StreamReader, writer: StreamWriter, exit: ExitWaiter) -> Self {
        RemoteStream {
            peer,
            reader,
            writer,
            exit,
        }
    }

    /// The peer running the command.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// Flushes and sends EOF to the remote command's stdin.
    pub fn close_write(&mut self) -> io::Result<()> {
        self.writer.close_write()
    }

    /// Splits into parts that can move to different threads.
    pub fn split(self) -> (StreamReader, StreamWriter, ExitWaiter) {
        (self.reader, self.writer, self.exit)
    }

    /// Sends EOF, reads and discards what is left of stdout, and waits for the command to end.
    pub fn finish(mut self) -> Result<RemoteExit, TransportError> {
        let peer = self.peer.clone();
        let close_result = self.writer.close_write();
        let drained = io::copy(&mut self.reader, &mut io::sink());
        drop(self.writer);
        drop(self.reader);
        let exit = self.exit.wait()?;
        if let Err(source) = drained {
            return Err(TransportError::from_io_error(
                &peer,
                "reading remote output",
                source,
            ));
        }
        if let Err(source) = close_result {
            if exit.code.is_none() && exit.signal.is_none() {
                return Err(TransportError::from_io_error(
                    &peer,
                    "closing remote input",
                    source,
                ));
            }
        }
        Ok(exit)
    }
}

impl Read for RemoteStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read(buf)
    }
}

impl Write for RemoteStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

/// Which transport the user asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TransportPreference {
    /// The fastest transport that honours the command (see [`choose_transport`]).
    #[default]
    Auto,
    /// In-process SSH; an error if the command needs something it cannot do.
    InProcess,
    /// The ssh command as a subprocess.
    Subprocess,
}

/// Whether `program` is the OpenSSH client itself (not a wrapper script around it).
fn is_openssh_client(program: &str) -> bool {
    std::path::Path::new(program)
        .file_name()
        .is_some_and(|name| name == "ssh")
}

/// Builds the transport for a user's ssh command (e.g. Barman's `primary_ssh_command`).
///
/// `Auto` picks, from the measurements in `PERFORMANCE.md`:
/// - the ssh subprocess when the in-process transport cannot honour the command (ProxyJump,
///   ControlMaster, unknown options, ...);
/// - otherwise the ssh subprocess too when an ssh program is found: OpenSSH moves data about
///   three times faster than libssh2 with a fifth of the CPU, because libssh2 decrypts each
///   16-byte block with a separate OpenSSL call. When neither the command nor ssh_config
///   chooses ciphers, [`command::FAST_OPENSSH_CIPHERS`] is passed with `-c` (aes128-gcm first:
///   three times faster than OpenSSH's default chacha20-poly1305 here);
/// - the in-process libssh2 transport when no ssh program exists.
pub fn choose_transport(
    ssh_command: &str,
    preference: TransportPreference,
) -> Result<Box<dyn Transport>, TransportError> {
    let parsed = ssh_command::SshCommand::parse(ssh_command)?;
    let subprocess = command::SshCommandTransport::new(parsed.clone())?;
    match preference {
        TransportPreference::Subprocess => Ok(Box::new(subprocess)),
        TransportPreference::InProcess => {
            let target = parsed.resolve_with_default_config()?;
            Ok(Box::new(libssh2::Libssh2Transport::new(target)?))
        }
        TransportPreference::Auto => match parsed.resolve_with_default_config() {
            // An ssh_config we cannot read is ssh's business: run ssh as the user wrote it.
            Err(_) => Ok(Box::new(subprocess)),
            Ok(target) => {
                let must_use_subprocess = !target.in_process_blockers.is_empty();
                if !must_use_subprocess && !command::program_exists(parsed.program()) {
                    Ok(Box::new(libssh2::Libssh2Transport::new(target)?))
                } else if target.ciphers.is_some() || !is_openssh_client(parsed.program()) {
                    // The user's ciphers, or a wrapper script that may not take `-c`.
                    Ok(Box::new(subprocess))
                } else {
                    Ok(Box::new(
                        subprocess.with_cipher_preference(command::FAST_OPENSSH_CIPHERS),
                    ))
                }
            }
        },
    }
}
