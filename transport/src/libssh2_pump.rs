//! The I/O thread of one libssh2 exec channel.
//!
//! libssh2 sessions are not safe to block in from two threads (the ssh2 crate holds the session
//! lock during a blocking read, so a writer on another thread would wait for it: a deadlock when
//! the remote waits for input before it answers). So each channel gets one pump thread that owns
//! the session in non-blocking mode and moves bytes between the channel and two in-memory pipes:
//! user writes → channel stdin, channel stdout → user reads, channel stderr → a kept tail. It
//! sleeps in `poll(2)` on the socket and on a wake-up socket that the pipes poke when the user
//! makes progress. It sends keepalives and declares the connection dead when the server stays
//! silent, and it ends with the command's exit status.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ssh2::{BlockDirections, Channel, Session};

use crate::memory_pipe::{memory_pipe, PipeReader, PipeWriter, TryRecv, TrySend};
use crate::process::push_tail;
use crate::{
    ExitWaiter, Peer, RemoteExit, RemoteStream, StreamReader, StreamWriter, TransportError,
    WaitForExit, WriteHalf,
};

/// Chunks in flight between the pump and the user, per direction.
const PIPE_CHUNKS: usize = 8;

/// While stdout keeps flowing, stderr is read on every this many pump iterations.
const STDERR_POLL_EVERY: u32 = 16;

/// Settings of one pump.
#[derive(Clone, Debug)]
pub(crate) struct PumpSettings {
    /// Bytes asked from libssh2 per stdout read.
    pub read_size: usize,
    /// Keepalive interval and how many silent intervals mean a dead connection.
    pub keepalive: Option<(Duration, u32)>,
}

/// Starts the pump for an exec'd `channel` and returns the user's stream.
pub(crate) fn start_pump(
    peer: Peer,
    session: Session,
    socket: TcpStream,
    channel: Channel,
    settings: PumpSettings,
) -> Result<RemoteStream, TransportError> {
    let io_error = |action, source| TransportError::Io {
        peer: peer.clone(),
        action,
        source,
    };
    let (wake_sender, wake_receiver) =
        UnixStream::pair().map_err(|e| io_error("creating the wake-up socket", e))?;
    wake_sender
        .set_nonblocking(true)
        .map_err(|e| io_error("configuring the wake-up socket", e))?;
    wake_receiver
        .set_nonblocking(true)
        .map_err(|e| io_error("configuring the wake-up socket", e))?;
    let wake_sender = Arc::new(wake_sender);
    let notify: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
        let _ = (&*wake_sender).write(&[1]);
    });
    let (mut user_writer, pump_input) = memory_pipe(PIPE_CHUNKS);
    user_writer.set_notify(notify.clone());
    let (pump_output, mut user_reader) = memory_pipe(PIPE_CHUNKS);
    user_reader.set_notify(notify);
    session.set_blocking(false);
    let pump = Pump {
        peer: peer.clone(),
        session,
        socket,
        channel,
        settings,
        wake_receiver,
        input: Some(pump_input),
        output: Some(pump_output),
    };
    let thread = std::thread::Builder::new()
        .name("barsync-ssh-pump".into())
        .spawn(move || pump.run())
        .map_err(|e| io_error("starting the SSH pump thread", e))?;
    Ok(RemoteStream::new(
        peer.clone(),
        StreamReader::new(Box::new(user_reader)),
        StreamWriter::new(Box::new(ChannelInput(user_writer))),
        ExitWaiter::new(Box::new(PumpWaiter { peer, thread })),
    ))
}

struct ChannelInput(PipeWriter);

impl Write for ChannelInput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl WriteHalf for ChannelInput {
    fn close_write(&mut self) -> io::Result<()> {
        self.0.close();
        Ok(())
    }
}

struct PumpWaiter {
    peer: Peer,
    thread: JoinHandle<Result<RemoteExit, TransportError>>,
}

impl WaitForExit for PumpWaiter {
    fn wait(self: Box<Self>) -> Result<RemoteExit, TransportError> {
        self.thread.join().unwrap_or_else(|_| {
            Err(TransportError::ConnectionLost {
                peer: self.peer.clone(),
                message: "the SSH pump thread panicked".into(),
            })
        })
    }
}

struct Pump {
    peer: Peer,
    session: Session,
    socket: TcpStream,
    channel: Channel,
    settings: PumpSettings,
    wake_receiver: UnixStream,
    /// What the user writes; `None` once the user closed it (or the remote stopped reading).
    input: Option<PipeReader>,
    /// What the user reads; `None` once the user dropped the reader (output is then discarded).
    output: Option<PipeWriter>,
}

/// Progress state of one pump.
#[derive(Default)]
struct Flow {
    reader_gone: bool,
    outgoing: Option<(Vec<u8>, usize)>,
    eof_sent: bool,
    undelivered: Option<Vec<u8>>,
    stdout_done: bool,
    stderr_done: bool,
    stderr: Vec<u8>,
}

impl Pump {
    fn run(mut self) -> Result<RemoteExit, TransportError> {
        let outcome = self.transfer();
        match outcome {
            Ok(exit) => {
                if let Some(mut output) = self.output.take() {
                    output.close();
                }
                self.disconnect();
                Ok(exit)
            }
            Err(message) => {
                if let Some(output) = self.output.take() {
                    output.fail(self.lost(&message));
                }
                Err(self.lost(&message))
            }
        }
    }

    fn lost(&self, message: &str) -> TransportError {
        TransportError::ConnectionLost {
            peer: self.peer.clone(),
            message: message.to_string(),
        }
    }

    fn disconnect(&self) {
        self.session.set_blocking(true);
        self.session.set_timeout(1000);
        let _ = self.session.disconnect(None, "barsync: done", None);
    }

    /// Moves bytes until the channel is closed; returns the exit, or why the connection broke.
    fn transfer(&mut self) -> Result<RemoteExit, String> {
        let mut flow = Flow::default();
        let mut read_buffer = vec![0u8; self.settings.read_size];
        let mut last_heard = Instant::now();
        let mut next_keepalive = Instant::now();
        let mut stderr_countdown = STDERR_POLL_EVERY;
        loop {
            let mut progressed = false;
            let mut would_block = false;
            progressed |= self.send_input(&mut flow, &mut would_block)?;
            progressed |= self.deliver_output(&mut flow, &mut read_buffer, &mut would_block)?;
            // Reading stderr makes libssh2 walk its whole queue of incoming packets, so it is
            // done when stdout has nothing queued (or now and then), not after every stdout read.
            stderr_countdown = stderr_countdown.saturating_sub(1);
            let stdout_idle = flow.stdout_done || flow.undelivered.is_some() || would_block;
            if stdout_idle || stderr_countdown == 0 {
                stderr_countdown = STDERR_POLL_EVERY;
                progressed |= self.collect_stderr(&mut flow, &mut read_buffer, &mut would_block)?;
            }
            if flow.reader_gone {
                // The exit status is unknown then: the command may still have been running.
                let closed = || RemoteExit {
                    code: None,
                    signal: None,
                    stderr: flow.stderr.clone(),
                };
                match self.channel.close() {
                    Err(error) if is_would_block(&error) => would_block = true,
                    _ => return Ok(closed()),
                }
            } else if flow.stdout_done && flow.stderr_done {
                match self.channel.wait_close() {
                    Ok(()) => return Ok(self.exit(flow.stderr)),
                    Err(error) if is_would_block(&error) => would_block = true,
                    Err(error) => return Err(format!("waiting for the channel to close: {error}")),
                }
            }
            if progressed {
                last_heard = Instant::now();
                continue;
            }
            if let Some((interval, count_max)) = self.settings.keepalive {
                if Instant::now() >= next_keepalive {
                    match self.session.keepalive_send() {
                        Ok(seconds) => {
                            next_keepalive =
                                Instant::now() + Duration::from_secs(u64::from(seconds.max(1)))
                        }
                        Err(error) if is_would_block(&error) => {}
                        Err(error) => return Err(format!("sending a keepalive: {error}")),
                    }
                }
                if flow.undelivered.is_some() {
                    last_heard = Instant::now();
                }
                if last_heard.elapsed() > interval * count_max {
                    return Err(format!("no answer from the server for {} s (ServerAliveInterval × ServerAliveCountMax)", last_heard.elapsed().as_secs()));
                }
            }
            let socket_events = if would_block {
                self.wanted_socket_events()
            } else {
                0
            };
            let timeout = self
                .settings
                .keepalive
                .map(|(interval, _)| interval.min(Duration::from_secs(1)));
            if self.wait_for_events(socket_events, timeout)? {
                last_heard = Instant::now();
            }
        }
    }

    fn send_input(&mut self, flow: &mut Flow, would_block: &mut bool) -> Result<bool, String> {
        let mut progressed = false;
        if flow.outgoing.is_none() {
            if let Some(input) = &mut self.input {
                match input.try_recv_chunk() {
                    TryRecv::Data(chunk) => flow.outgoing = Some((chunk, 0)),
                    TryRecv::Closed => self.input = None,
                    TryRecv::Empty => {}
                }
            }
        }
        if let Some((chunk, offset)) = &mut flow.outgoing {
            match self.channel.write(&chunk[*offset..]) {
                Ok(written) => {
                    *offset += written;
                    progressed = written > 0;
                    if *offset == chunk.len() {
                        flow.outgoing = None;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => *would_block = true,
                Err(_) if self.channel.eof() || flow.stdout_done => {
                    // The command stopped reading its input: drop what the user still sends.
                    flow.outgoing = None;
                    self.input = None;
                    flow.eof_sent = true;
                }
                Err(error) => return Err(describe_failure("writing to the channel", &error)),
            }
        }
        if self.input.is_none() && flow.outgoing.is_none() && !flow.eof_sent {
            match self.channel.send_eof() {
                Ok(()) => {
                    flow.eof_sent = true;
                    progressed = true;
                }
                Err(error) if is_would_block(&error) => *would_block = true,
                Err(_) if flow.stdout_done => flow.eof_sent = true,
                Err(error) => return Err(format!("sending EOF: {error}")),
            }
        }
        Ok(progressed)
    }

    fn deliver_output(
        &mut self,
        flow: &mut Flow,
        buffer: &mut [u8],
        would_block: &mut bool,
    ) -> Result<bool, String> {
        let mut progressed = false;
        if let Some(chunk) = flow.undelivered.take() {
            progressed |= self.offer(flow, chunk);
        }
        if flow.undelivered.is_some() || flow.stdout_done {
            return Ok(progressed);
        }
        match self.channel.stream(0).read(buffer) {
            Ok(0) => {
                flow.stdout_done = true;
                Ok(true)
            }
            Ok(count) => {
                self.offer(flow, buffer[..count].to_vec());
                Ok(true)
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                *would_block = true;
                Ok(progressed)
            }
            Err(error) => Err(describe_failure("reading from the channel", &error)),
        }
    }

    /// Hands a chunk to the user's reader; keeps it when the pipe is full.
    fn offer(&mut self, flow: &mut Flow, chunk: Vec<u8>) -> bool {
        let Some(output) = &mut self.output else {
            return true;
        };
        match output.try_send_chunk(chunk) {
            TrySend::Sent => true,
            TrySend::Full(chunk) => {
                flow.undelivered = Some(chunk);
                false
            }
            TrySend::ReaderGone => {
                // Like a closed pipe: nobody reads any more, so the channel is closed.
                self.output = None;
                flow.reader_gone = true;
                true
            }
        }
    }

    fn collect_stderr(
        &mut self,
        flow: &mut Flow,
        buffer: &mut [u8],
        would_block: &mut bool,
    ) -> Result<bool, String> {
        if flow.stderr_done {
            return Ok(false);
        }
        match self.channel.stream(1).read(buffer) {
            Ok(0) => {
                flow.stderr_done = true;
                Ok(true)
            }
            Ok(count) => {
                push_tail(&mut flow.stderr, &buffer[..count]);
                Ok(true)
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                *would_block = true;
                Ok(false)
            }
            Err(error) => Err(describe_failure("reading stderr from the channel", &error)),
        }
    }

    fn exit(&self, stderr: Vec<u8>) -> RemoteExit {
        let signal = self.channel.exit_signal().ok().and_then(|s| s.exit_signal);
        let code = if signal.is_some() {
            None
        } else {
            self.channel.exit_status().ok()
        };
        RemoteExit {
            code,
            signal,
            stderr,
        }
    }

    fn wanted_socket_events(&self) -> libc::c_short {
        match self.session.block_directions() {
            BlockDirections::Inbound => libc::POLLIN,
            BlockDirections::Outbound => libc::POLLOUT,
            BlockDirections::Both => libc::POLLIN | libc::POLLOUT,
            BlockDirections::None => libc::POLLIN,
        }
    }

    /// Sleeps until the socket is ready for `socket_events`, the user made progress, or the
    /// timeout passed. Returns whether the socket had something to read.
    fn wait_for_events(
        &mut self,
        socket_events: libc::c_short,
        timeout: Option<Duration>,
    ) -> Result<bool, String> {
        let mut fds = [
            // A negative fd is ignored by poll: no socket wake-ups while only the user can unblock us.
            libc::pollfd {
                fd: if socket_events == 0 {
                    -1
                } else {
                    self.socket.as_raw_fd()
                },
                events: socket_events,
                revents: 0,
            },
            libc::pollfd {
                fd: self.wake_receiver.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let timeout_ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as libc::c_int);
        // SAFETY: `fds` is a valid array of two pollfd structures for the duration of the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if ready < 0 {
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(format!("poll: {error}"));
            }
        }
        if fds[1].revents != 0 {
            let mut drain = [0u8; 256];
            while matches!(self.wake_receiver.read(&mut drain), Ok(n) if n > 0) {}
        }
        Ok(fds[0].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0)
    }
}

/// Explains a libssh2 I/O failure; its own messages ("transport read") say little.
fn describe_failure(action: &str, error: &io::Error) -> String {
    let text = error.to_string();
    let cause = if text.contains("transport read")
        || text.contains("socket recv")
        || text.contains("disconnect")
    {
        "the server closed or reset the connection"
    } else if text.contains("socket send") || text.contains("transport write") {
        "the connection broke while sending"
    } else {
        "libssh2 failed"
    };
    format!("{cause} ({action}: {text})")
}

fn is_would_block(error: &ssh2::Error) -> bool {
    matches!(error.code(), ssh2::ErrorCode::Session(code) if code == libssh2_sys_eagain())
}

/// libssh2's `LIBSSH2_ERROR_EAGAIN`.
const fn libssh2_sys_eagain() -> i32 {
    -37
}
