//! The link probe ([`transfer_engine::protocol::probe`]): a session that allows it measures
//! the link once its batches asked for `PROBE_WORTH` bytes of new files, and
//! compresses at level 1 on a fast link and at the level asked for on a slow one; other
//! sessions and smaller batches are not probed (the probe's bytes are real traffic).

use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use barsync_transport::{memory_pipe, PipeReader, PipeWriter};
use transfer_engine::confine::{Destination, Roots};
use transfer_engine::protocol::client::ClientOptions;
use transfer_engine::protocol::probe::{FAST_LINK, FAST_LINK_LEVEL, PROBE_BYTES, PROBE_WORTH};
use transfer_engine::protocol::{serve, Client, FetchRequest, FetchTarget, ProtocolError};

const PIPE: usize = 256 * 1024;

/// A link of `bytes_per_second` from the server to the client: each write takes the time its
/// bytes need to cross it after those before them (an idle link banks no credit).
struct SlowLink {
    inner: PipeWriter,
    bytes_per_second: f64,
    /// When the bytes written so far have crossed.
    free_at: Instant,
}

impl Write for SlowLink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        let crossing = Duration::from_secs_f64(written as f64 / self.bytes_per_second);
        self.free_at = self.free_at.max(Instant::now()) + crossing;
        if let Some(wait) = self.free_at.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

type Server = thread::JoinHandle<Result<(), ProtocolError>>;

/// A server on `root` whose answers cross a link of `bytes_per_second` (`None`: a plain pipe).
fn start_server(root: &Path, bytes_per_second: Option<f64>) -> (PipeReader, PipeWriter, Server) {
    let (to_server, server_in) = memory_pipe(PIPE);
    let (server_out, from_server) = memory_pipe(PIPE);
    let roots = Roots::new(vec![root.to_path_buf()]).unwrap();
    let handle = thread::spawn(move || match bytes_per_second {
        Some(rate) => {
            let link = SlowLink {
                inner: server_out,
                bytes_per_second: rate,
                free_at: Instant::now(),
            };
            serve(server_in, link, &roots).map(drop)
        }
        None => serve(server_in, server_out, &roots).map(drop),
    });
    (from_server, to_server, handle)
}

/// What a session is asked to fetch: a compressible file of `len` bytes, with an older copy
/// of it already here as its basis or not.
#[derive(Clone, Copy)]
struct Batch {
    len: usize,
    with_basis: bool,
}

const LARGE_NEW_FILE: Batch = Batch {
    len: PROBE_WORTH as usize,
    with_basis: false,
};

/// Connects with `options`, fetches each of `batches` in turn (a file of its own each,
/// checking what lands) and ends the session; the speed the client measured and the level
/// its requests asked for at the end.
fn session(
    bytes_per_second: Option<f64>,
    options: ClientOptions,
    batches: &[Batch],
) -> (Option<f64>, Option<i32>) {
    let remote = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    let (reader, writer, server) = start_server(remote.path(), bytes_per_second);
    let mut client = Client::connect(reader, writer, options).unwrap();
    assert!(client.link_speed().is_none(), "probed before any batch");
    for (index, batch) in batches.iter().enumerate() {
        let name = format!("table{index}");
        let line = b"row of a table that compresses well\n";
        let text: Vec<u8> = line.iter().copied().cycle().take(batch.len).collect();
        fs::write(remote.path().join(&name), &text).unwrap();
        let destination = local.path().join(&name);
        if batch.with_basis {
            fs::write(&destination, &text[..batch.len / 2]).unwrap();
        }
        let request = FetchRequest {
            remote_path: remote.path().join(&name),
            destination: Destination::trusted(&destination).unwrap(),
            basis: Some(destination.clone()),
            max_len: Some(batch.len as u64),
            partial: None,
            target: FetchTarget::NEW_FILE,
        };
        let outcomes = client.fetch(&[request], |_| {}).unwrap();
        outcomes[0].result.as_ref().unwrap();
        assert!(fs::read(&destination).unwrap() == text, "{name} differs");
    }
    let measured = client.link_speed().map(|link| {
        assert_eq!(link.bytes, u64::from(PROBE_BYTES));
        link.bytes_per_second()
    });
    let level = client.compression();
    client.finish().unwrap();
    server.join().unwrap().unwrap();
    (measured, level)
}

fn adaptive(level: i32) -> ClientOptions {
    ClientOptions {
        compression: Some(level),
        adapt_compression: true,
    }
}

#[test]
fn a_fast_link_gets_level_1() {
    // An in-memory pipe carries the probe's 256 KiB in well under a millisecond; a machine
    // busy with other tests can stall one session's few milliseconds, so up to 5 are tried.
    let mut seen = Vec::new();
    for _ in 0..5 {
        let (measured, level) = session(None, adaptive(3), &[LARGE_NEW_FILE]);
        let measured = measured.expect("the session was probed");
        assert_eq!(
            level == Some(FAST_LINK_LEVEL),
            measured >= FAST_LINK,
            "{measured} B/s, level {level:?}"
        );
        seen.push(measured);
        if measured >= FAST_LINK {
            return;
        }
    }
    panic!("an in-memory pipe never measured fast: {seen:?} B/s");
}

#[test]
fn a_slow_link_keeps_the_level_asked_for() {
    // 8 MB/s: the probe's 256 KiB take at least 32 ms.
    let (measured, level) = session(Some(8e6), adaptive(3), &[LARGE_NEW_FILE]);
    let measured = measured.expect("the session was probed");
    assert!(
        measured < FAST_LINK,
        "a link of 8 MB/s measured {measured} B/s"
    );
    assert!(measured > 4e6, "a link of 8 MB/s measured {measured} B/s");
    assert_eq!(level, Some(3));
}

#[test]
fn a_session_that_does_not_allow_it_is_not_probed() {
    let fixed = ClientOptions {
        compression: Some(3),
        adapt_compression: false,
    };
    assert_eq!(session(None, fixed, &[LARGE_NEW_FILE]), (None, Some(3)));
    // Nothing to lower: level 1 (or raw) is kept without measuring.
    assert_eq!(
        session(None, adaptive(1), &[LARGE_NEW_FILE]),
        (None, Some(1))
    );
    let raw = ClientOptions {
        compression: None,
        adapt_compression: true,
    };
    assert_eq!(session(None, raw, &[LARGE_NEW_FILE]), (None, None));
}

#[test]
fn small_batches_and_updates_are_not_worth_the_probes_bytes() {
    let small = Batch {
        len: (PROBE_WORTH / 16) as usize,
        with_basis: false,
    };
    assert_eq!(session(None, adaptive(3), &[small]), (None, Some(3)));
    let update = Batch {
        len: PROBE_WORTH as usize,
        with_basis: true,
    };
    assert_eq!(session(None, adaptive(3), &[update]), (None, Some(3)));
}

#[test]
fn batches_of_new_files_add_up_to_a_probe() {
    let half = Batch {
        len: (PROBE_WORTH / 2) as usize,
        with_basis: false,
    };
    let (measured, level) = session(None, adaptive(3), &[half, half]);
    assert!(measured.is_some(), "not probed after two halves");
    assert_eq!(level, Some(FAST_LINK_LEVEL));
}

/// What a client makes of a server that announced `Probe` and answers it with `frames`
/// (payloads of `Probed` frames for the probe's request), then hangs up.
fn forged_probe_answer(frames: &[Vec<u8>]) -> String {
    use transfer_engine::protocol::frame::{FrameWriter, Kind};
    use transfer_engine::protocol::handshake::{FEATURES, PROTOCOL_VERSION};

    let (to_server, _server_in) = memory_pipe(PIPE);
    let (server_out, from_server) = memory_pipe(PIPE);
    let mut fake = FrameWriter::new(server_out);
    fake.start()
        .rest(b"BSYN")
        .u32(PROTOCOL_VERSION)
        .u32(FEATURES)
        .str("barsync forged");
    fake.send(Kind::Hello).unwrap();
    for payload in frames {
        fake.start().u32(0).rest(payload);
        fake.send(Kind::Probed).unwrap();
    }
    drop(fake);
    let mut client = Client::connect(from_server, to_server, adaptive(3)).unwrap();
    let local = tempfile::tempdir().unwrap();
    let destination = local.path().join("new");
    let request = FetchRequest {
        remote_path: "/primary/new".into(),
        destination: Destination::trusted(&destination).unwrap(),
        basis: None,
        max_len: Some(PROBE_WORTH),
        partial: None,
        target: FetchTarget::NEW_FILE,
    };
    let error = client.fetch(&[request], |_| {}).expect_err("an error");
    assert!(!destination.exists());
    error.to_string()
}

#[test]
fn a_server_cannot_keep_the_probe_reading_with_empty_frames() {
    let message = forged_probe_answer(&vec![Vec::new(); 1000]);
    assert!(message.contains("empty probe answer frame"), "{message}");
}

#[test]
fn a_probe_answer_longer_than_asked_is_refused() {
    let message = forged_probe_answer(&[vec![7u8; PROBE_BYTES as usize + 1]]);
    assert!(message.contains("longer than the"), "{message}");
}
