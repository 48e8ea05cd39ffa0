//! A userspace TCP proxy that shapes a link (`barsync bench`'s W6, the `follow` tests): the
//! kernel's netem is not available here. [`ShapingProxy`] listens on 127.0.0.1 and forwards
//! each connection to an upstream address;
//! each direction of a connection has a reader thread, which timestamps every chunk it reads,
//! and a writer thread, which holds each chunk until `one_way_delay` after it was read and
//! paces writes to `rate_bytes_per_second`. Between them sits a bounded queue (4 MiB), so a
//! fast sender is held back by TCP flow control as it would be by a real bottleneck, instead
//! of filling the proxy's memory.
//!
//! Bytes pass through unchanged and in order; a half-close (EOF) is forwarded as a shutdown of
//! the write side once the queued bytes are out. [`ShapingProxy::cut`] breaks every open
//! connection at once (both sides see the connection reset or closed), as a cut link does;
//! [`ShapingProxy::blackhole`] silences them instead (bytes still accepted, none delivered,
//! nothing closed), as a link that dies without a word does.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The shape of a link: delay and rate, each direction.
#[derive(Debug, Clone, Copy)]
pub struct LinkShape {
    /// Delay of each direction (half the round trip).
    pub one_way_delay: Duration,
    /// Bytes per second in each direction (0: no limit).
    pub rate_bytes_per_second: u64,
}

impl Default for LinkShape {
    /// 40 ms round trip, 100 Mbit/s.
    fn default() -> Self {
        LinkShape {
            one_way_delay: Duration::from_millis(20),
            rate_bytes_per_second: 12_500_000,
        }
    }
}

/// The two sockets of each connection forwarded so far, and whether it is silenced (for
/// [`ShapingProxy::cut`] and [`ShapingProxy::blackhole`]).
type Connections = Arc<Mutex<Vec<(TcpStream, TcpStream, Arc<AtomicBool>)>>>;

/// Largest chunk read at once.
const CHUNK: usize = 64 * 1024;
/// Chunks queued per direction (at most 4 MiB in flight inside the proxy).
const QUEUE_CHUNKS: usize = 64;

/// A running proxy; stops accepting when dropped (open connections finish on their own).
pub struct ShapingProxy {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    connections: Connections,
    accept_thread: Option<thread::JoinHandle<()>>,
}

impl ShapingProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream` through `shape`.
    pub fn start(upstream: SocketAddr, shape: LinkShape) -> io::Result<ShapingProxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let address = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let connections: Connections = Arc::default();
        let open = Arc::clone(&connections);
        let accept_thread =
            thread::Builder::new()
                .name("proxy-accept".into())
                .spawn(move || {
                    for client in listener.incoming() {
                        if stop_flag.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(client) = client else { continue };
                        let Ok(server) = TcpStream::connect(upstream) else {
                            continue;
                        };
                        let silenced = Arc::new(AtomicBool::new(false));
                        if let (Ok(a), Ok(b)) = (client.try_clone(), server.try_clone()) {
                            open.lock().unwrap().push((a, b, silenced.clone()));
                        }
                        let _ = forward(client, server, shape, silenced);
                    }
                })?;
        Ok(ShapingProxy {
            address,
            stop,
            connections,
            accept_thread: Some(accept_thread),
        })
    }

    /// Where clients connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// Cuts every connection open now (both directions, both sides), as a failed link does;
    /// new connections are still accepted. Returns how many were cut.
    pub fn cut(&self) -> usize {
        let mut open = self.connections.lock().unwrap();
        let count = open.len();
        for (client, server, _) in open.drain(..) {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
        }
        count
    }

    /// Silences every connection open now, for good: each side's bytes are still taken (its
    /// kernel sees them acknowledged) but never delivered, and no side is told anything, not
    /// even an end of file; as a link that dies without a word (a lost route, a NAT that
    /// forgot the connection). New connections pass as before. Returns how many were
    /// silenced.
    pub fn blackhole(&self) -> usize {
        let mut open = self.connections.lock().unwrap();
        let count = open.len();
        for (_, _, silenced) in open.drain(..) {
            silenced.store(true, Ordering::SeqCst);
        }
        count
    }
}

impl Drop for ShapingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.address);
        if let Some(thread) = self.accept_thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts the four threads of one connection.
fn forward(
    client: TcpStream,
    server: TcpStream,
    shape: LinkShape,
    silenced: Arc<AtomicBool>,
) -> io::Result<()> {
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    for (from, to) in [(client.try_clone()?, server.try_clone()?), (server, client)] {
        let (sender, receiver) = sync_channel(QUEUE_CHUNKS);
        let silenced = silenced.clone();
        thread::Builder::new()
            .name("proxy-read".into())
            .spawn(move || read_side(from, sender))?;
        thread::Builder::new()
            .name("proxy-write".into())
            .spawn(move || write_side(to, receiver, shape, &silenced))?;
    }
    Ok(())
}

/// Reads chunks and queues them with the time they arrived; `None` marks EOF or an error.
fn read_side(mut from: TcpStream, queue: SyncSender<Option<(Instant, Vec<u8>)>>) {
    let mut buffer = vec![0u8; CHUNK];
    loop {
        match from.read(&mut buffer) {
            Ok(0) | Err(_) => {
                let _ = queue.send(None);
                return;
            }
            Ok(n) => {
                if queue
                    .send(Some((Instant::now(), buffer[..n].to_vec())))
                    .is_err()
                {
                    let _ = from.shutdown(Shutdown::Read);
                    return;
                }
            }
        }
    }
}

/// Writes each chunk no earlier than its arrival plus the delay, and no faster than the rate;
/// once `silenced`, drops every chunk and the end of file.
fn write_side(
    mut to: TcpStream,
    queue: Receiver<Option<(Instant, Vec<u8>)>>,
    shape: LinkShape,
    silenced: &AtomicBool,
) {
    let mut next_free = Instant::now();
    while let Ok(Some((arrived, chunk))) = queue.recv() {
        let due = (arrived + shape.one_way_delay).max(next_free);
        sleep_until(due);
        if silenced.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&chunk).is_err() {
            return;
        }
        let transmission = if shape.rate_bytes_per_second == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(chunk.len() as f64 / shape.rate_bytes_per_second as f64)
        };
        next_free = due + transmission;
    }
    if !silenced.load(Ordering::SeqCst) {
        let _ = to.shutdown(Shutdown::Write);
    }
}

fn sleep_until(when: Instant) {
    let now = Instant::now();
    if when > now {
        thread::sleep(when - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that echoes every byte back until EOF.
    fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let address = listener.local_addr().unwrap();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                thread::spawn(move || {
                    let mut reader = stream.try_clone().unwrap();
                    let _ = io::copy(&mut reader, &mut stream);
                    let _ = stream.shutdown(Shutdown::Write);
                });
            }
        });
        address
    }

    #[test]
    fn bytes_pass_through_unchanged() {
        let proxy = ShapingProxy::start(
            echo_server(),
            LinkShape {
                one_way_delay: Duration::from_millis(1),
                rate_bytes_per_second: 0,
            },
        )
        .unwrap();
        let data = crate::noise::incompressible(3 * 1024 * 1024 + 17, 7);
        let mut stream = TcpStream::connect(proxy.address()).unwrap();
        let mut writer = stream.try_clone().unwrap();
        let sent = data.clone();
        let writer_thread = thread::spawn(move || {
            writer.write_all(&sent).unwrap();
            writer.shutdown(Shutdown::Write).unwrap();
        });
        let mut echoed = Vec::new();
        stream.read_to_end(&mut echoed).unwrap();
        writer_thread.join().unwrap();
        assert_eq!(echoed.len(), data.len());
        assert!(echoed == data, "the proxy changed the bytes");
    }

    #[test]
    fn the_delay_is_applied_in_each_direction() {
        let delay = Duration::from_millis(30);
        let proxy = ShapingProxy::start(
            echo_server(),
            LinkShape {
                one_way_delay: delay,
                rate_bytes_per_second: 12_500_000,
            },
        )
        .unwrap();
        let mut stream = TcpStream::connect(proxy.address()).unwrap();
        for _ in 0..3 {
            let start = Instant::now();
            stream.write_all(b"ping").unwrap();
            let mut answer = [0u8; 4];
            stream.read_exact(&mut answer).unwrap();
            assert_eq!(&answer, b"ping");
            assert!(
                start.elapsed() >= 2 * delay,
                "a round trip took {:?}, less than twice the one-way delay",
                start.elapsed()
            );
        }
    }

    #[test]
    fn the_rate_is_at_least_enforced() {
        // 256 KiB at 2 MB/s take at least ~0.13 s one way: a lower bound only (no upper bound
        // on a shared machine).
        let proxy = ShapingProxy::start(
            echo_server(),
            LinkShape {
                one_way_delay: Duration::ZERO,
                rate_bytes_per_second: 2_000_000,
            },
        )
        .unwrap();
        let mut stream = TcpStream::connect(proxy.address()).unwrap();
        let mut writer = stream.try_clone().unwrap();
        let start = Instant::now();
        let writer_thread = thread::spawn(move || {
            writer.write_all(&vec![5u8; 256 * 1024]).unwrap();
            writer.shutdown(Shutdown::Write).unwrap();
        });
        let mut echoed = Vec::new();
        stream.read_to_end(&mut echoed).unwrap();
        writer_thread.join().unwrap();
        assert_eq!(echoed.len(), 256 * 1024);
        assert!(
            start.elapsed() >= Duration::from_millis(120),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn blackhole_silences_open_connections_and_new_ones_still_pass() {
        let proxy = ShapingProxy::start(
            echo_server(),
            LinkShape {
                one_way_delay: Duration::from_millis(1),
                rate_bytes_per_second: 0,
            },
        )
        .unwrap();
        let mut old = TcpStream::connect(proxy.address()).unwrap();
        old.write_all(b"ping").unwrap();
        let mut answer = [0u8; 4];
        old.read_exact(&mut answer).unwrap();
        assert_eq!(proxy.blackhole(), 1);
        // Taken, never answered, never closed.
        old.write_all(b"ping").unwrap();
        old.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let error = old.read(&mut answer).unwrap_err();
        assert!(
            matches!(
                error.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            "{error:?}"
        );
        let mut new = TcpStream::connect(proxy.address()).unwrap();
        new.write_all(b"pong").unwrap();
        new.read_exact(&mut answer).unwrap();
        assert_eq!(&answer, b"pong");
        assert_eq!(proxy.cut(), 1, "only the new connection is still open");
    }

    #[test]
    fn cut_breaks_open_connections_and_new_ones_still_pass() {
        let proxy = ShapingProxy::start(
            echo_server(),
            LinkShape {
                one_way_delay: Duration::ZERO,
                rate_bytes_per_second: 0,
            },
        )
        .unwrap();
        let mut stream = TcpStream::connect(proxy.address()).unwrap();
        stream.write_all(b"ping").unwrap();
        let mut answer = [0u8; 4];
        stream.read_exact(&mut answer).unwrap();
        assert_eq!(proxy.cut(), 1);
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut rest = Vec::new();
        let ended = match stream.read_to_end(&mut rest) {
            Ok(_) => true,
            Err(e) => e.kind() != io::ErrorKind::WouldBlock && e.kind() != io::ErrorKind::TimedOut,
        };
        assert!(ended, "the cut connection is still open");
        let mut again = TcpStream::connect(proxy.address()).unwrap();
        again.write_all(b"pong").unwrap();
        again.read_exact(&mut answer).unwrap();
        assert_eq!(&answer, b"pong");
    }
}
