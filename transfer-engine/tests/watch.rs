//! `Watch` end to end over in-memory pipes: a real `serve` on a thread, a real client. The
//! server answers as soon as the watched file grows or is replaced (inotify), with the bytes
//! appended, or at the timeout; a refused path is a per-request error; a server without
//! inotify (the polling fallback, forced with `BARSYNC_SERVE_NO_INOTIFY` in a child process)
//! still answers within its polling interval.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use barsync_transport::{memory_pipe, PipeReader, PipeWriter};
use transfer_engine::confine::Roots;
use transfer_engine::protocol::client::ClientOptions;
use transfer_engine::protocol::{serve, Client, ProtocolError, WatchRequest};
use transfer_engine::FileErrorKind;

type TestClient = Client<PipeReader, PipeWriter>;

fn connect(root: &Path) -> (TestClient, thread::JoinHandle<Result<(), ProtocolError>>) {
    let (to_server, server_in) = memory_pipe(256 * 1024);
    let (server_out, from_server) = memory_pipe(256 * 1024);
    let roots = Roots::new(vec![root.to_path_buf()]).unwrap();
    let handle = thread::spawn(move || serve(server_in, server_out, &roots).map(drop));
    let client =
        Client::connect(from_server, to_server, ClientOptions::default()).expect("handshake");
    (client, handle)
}

fn append(path: &Path, text: &str) {
    let mut file = OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

fn request(since_len: u64, since_id: u64, offset: u64, timeout: Duration) -> WatchRequest {
    WatchRequest {
        since_len,
        since_id,
        offset,
        max_bytes: 1 << 16,
        timeout,
    }
}

fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let wals = dir.path().join("wals");
    fs::create_dir_all(&wals).unwrap();
    let db = wals.join("pg-xlog.db");
    fs::write(&db, "000000010000000000000001\t16777216\t1.0\tNone\tNone\n").unwrap();
    (dir, db)
}

#[test]
fn watch_answers_at_once_when_the_file_differs_and_carries_the_tail() {
    let (dir, db) = setup();
    let (mut client, server) = connect(dir.path());
    assert!(client.supports_watch());
    // The client saw nothing yet: the answer is immediate, with the whole file.
    let start = Instant::now();
    let seen = client
        .watch(&db, &request(0, 0, 0, Duration::from_secs(30)))
        .unwrap()
        .unwrap();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(seen.changed);
    assert_eq!(seen.len, 48);
    assert_eq!(seen.id, fs::metadata(&db).unwrap().ino());
    assert_eq!(&seen.bytes[..], &fs::read(&db).unwrap()[..]);
    // From an offset: only what follows it.
    let tail = client
        .watch(&db, &request(0, seen.id, 25, Duration::from_secs(1)))
        .unwrap()
        .unwrap();
    assert_eq!(&tail.bytes[..], b"16777216\t1.0\tNone\tNone\n");
    client.finish().unwrap();
    server.join().unwrap().unwrap();
}

#[test]
fn watch_waits_for_an_append_and_wakes_up_on_it() {
    let (dir, db) = setup();
    let (mut client, server) = connect(dir.path());
    let id = fs::metadata(&db).unwrap().ino();
    let writer_db = db.clone();
    let writer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(700));
        append(
            &writer_db,
            "000000010000000000000002\t16777216\t2.0\tNone\tNone\n",
        );
        Instant::now()
    });
    let seen = client
        .watch(&db, &request(48, id, 48, Duration::from_secs(30)))
        .unwrap()
        .unwrap();
    let woken = Instant::now();
    let appended = writer.join().unwrap();
    assert!(seen.changed);
    assert_eq!(seen.len, 96);
    assert_eq!(
        &seen.bytes[..],
        b"000000010000000000000002\t16777216\t2.0\tNone\tNone\n"
    );
    // inotify: well under the polling interval's worth of delay on an idle machine, but the
    // bound is loose for a shared one.
    assert!(
        woken.duration_since(appended) < Duration::from_millis(500),
        "woken {:?} after the append",
        woken.duration_since(appended)
    );
    client.finish().unwrap();
    server.join().unwrap().unwrap();
}

#[test]
fn watch_times_out_unchanged_and_sees_a_replaced_file() {
    let (dir, db) = setup();
    let (mut client, server) = connect(dir.path());
    let id = fs::metadata(&db).unwrap().ino();
    let start = Instant::now();
    let seen = client
        .watch(&db, &request(48, id, 48, Duration::from_millis(600)))
        .unwrap()
        .unwrap();
    assert!(!seen.changed);
    assert!(seen.bytes.is_empty());
    assert!(
        start.elapsed() >= Duration::from_millis(550),
        "{:?}",
        start.elapsed()
    );
    // Barman rewrites the xlog db by renaming a new file into place: same length, new inode.
    let replacement = db.with_extension("new");
    fs::write(
        &replacement,
        "000000010000000000000003\t16777216\t3.0\tNone\tNone\n",
    )
    .unwrap();
    fs::rename(&replacement, &db).unwrap();
    let seen = client
        .watch(&db, &request(48, id, 0, Duration::from_secs(30)))
        .unwrap()
        .unwrap();
    assert!(seen.changed);
    assert_ne!(seen.id, id);
    assert!(seen.bytes.starts_with(b"000000010000000000000003"));
    client.finish().unwrap();
    server.join().unwrap().unwrap();
}

#[test]
fn watch_outside_the_roots_is_refused_and_the_session_goes_on() {
    let (dir, db) = setup();
    let (mut client, server) = connect(&dir.path().join("wals"));
    let refused = client
        .watch(
            Path::new("/etc/passwd"),
            &request(0, 0, 0, Duration::from_secs(1)),
        )
        .unwrap()
        .unwrap_err();
    assert!(refused.detail.contains("not below any root"), "{refused}");
    assert_eq!(refused.kind, FileErrorKind::Refused, "{refused}");
    let seen = client
        .watch(&db, &request(0, 0, 0, Duration::from_secs(1)))
        .unwrap()
        .unwrap();
    assert_eq!(seen.len, 48);
    client.finish().unwrap();
    server.join().unwrap().unwrap();
}

/// The polling fallback, in a child process (the variable is read by the server side).
#[test]
fn without_inotify_the_server_polls() {
    if std::env::var_os("BARSYNC_WATCH_TEST_CHILD").is_some() {
        let (dir, db) = setup();
        let (mut client, server) = connect(dir.path());
        let id = fs::metadata(&db).unwrap().ino();
        let writer_db = db.clone();
        let writer = thread::spawn(move || {
            thread::sleep(Duration::from_millis(500));
            append(&writer_db, "x\n");
            Instant::now()
        });
        let seen = client
            .watch(&db, &request(48, id, 48, Duration::from_secs(30)))
            .unwrap()
            .unwrap();
        let woken = Instant::now();
        let appended = writer.join().unwrap();
        assert_eq!(&seen.bytes[..], b"x\n");
        assert!(woken.duration_since(appended) < Duration::from_secs(2));
        client.finish().unwrap();
        server.join().unwrap().unwrap();
        return;
    }
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "without_inotify_the_server_polls", "--nocapture"])
        .env("BARSYNC_WATCH_TEST_CHILD", "1")
        .env("BARSYNC_SERVE_NO_INOTIFY", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && text.contains("1 passed"),
        "{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
