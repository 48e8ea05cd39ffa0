//! The wire protocol end to end over in-memory pipes: a real `serve` on a thread, a real client.

mod common;

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::thread;

use barsync_transport::{memory_pipe, PipeReader, PipeWriter};
use common::random_bytes;
use transfer_engine::confine::Roots;
use transfer_engine::protocol::client::ClientOptions;
use transfer_engine::protocol::frame::{FrameWriter, Kind};
use transfer_engine::protocol::{serve, Client, EntryKind, FetchRequest, ProtocolError, PushItem};
use transfer_engine::{FileError, FileErrorKind};

const PIPE: usize = 256 * 1024;

/// Starts `serve` on a thread and returns the client ends (reader, writer) and the join handle.
fn start_server<W: Write + Send + 'static>(
    root: &Path,
    wrap: impl FnOnce(PipeWriter) -> W,
) -> (
    PipeReader,
    PipeWriter,
    thread::JoinHandle<Result<(), ProtocolError>>,
) {
    let (to_server, server_in) = memory_pipe(PIPE);
    let (server_out, from_server) = memory_pipe(PIPE);
    let roots = Roots::new(vec![root.to_path_buf()]).unwrap();
    let output = wrap(server_out);
    let handle = thread::spawn(move || serve(server_in, output, &roots).map(drop));
    (from_server, to_server, handle)
}

fn options() -> ClientOptions {
    ClientOptions {
        compression: Some(3),
        ..ClientOptions::default()
    }
}

fn tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    let files = vec![
        ("data/base/1/16384".to_string(), random_bytes(3 << 20, 1)),
        ("data/base/1/16385".to_string(), vec![0u8; 1 << 20]),
        ("data/PG_VERSION".to_string(), b"15\n".to_vec()),
        ("data/empty".to_string(), Vec::new()),
        ("16387/PG_15/1/20000".to_string(), random_bytes(100_000, 2)),
    ];
    for (path, data) in &files {
        let full = root.join(path);
        fs::create_dir_all(full.parent().unwrap()).unwrap();
        fs::write(&full, data).unwrap();
    }
    fs::set_permissions(
        root.join("data/PG_VERSION"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    files
}

fn requests(root: &Path, dest: &Path, paths: &[&str]) -> Vec<FetchRequest> {
    paths
        .iter()
        .map(|path| FetchRequest {
            remote_path: root.join(path),
            destination: transfer_engine::confine::Destination::trusted(&dest.join(path)).unwrap(),
            basis: Some(dest.join(path)),
            max_len: None,
            partial: None,
            target: transfer_engine::protocol::FetchTarget::NEW_FILE,
        })
        .collect()
}

fn leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .contains(".barsync-")
            {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn session_lists_fetches_and_updates_a_tree() {
    let server_dir = tempfile::tempdir().unwrap();
    let client_dir = tempfile::tempdir().unwrap();
    let root = server_dir.path();
    let files = tree(root);
    let (input, output, server) = start_server(root, |w| w);
    let mut client = Client::connect(input, output, options()).unwrap();
    assert!(client.peer_agent().starts_with("barsync "));

    // Listing failures arrive typed: a missing path, and one outside the root.
    let missing = client
        .list(&root.join("missing"), true)
        .unwrap()
        .unwrap_err();
    assert_eq!(missing.kind, FileErrorKind::Missing, "{missing}");
    let outside = client.list(Path::new("/etc"), false).unwrap().unwrap_err();
    assert_eq!(outside.kind, FileErrorKind::Refused, "{outside}");

    let listing = client.list(root, true).unwrap().unwrap();
    let listed_files: Vec<&Path> = listing
        .iter()
        .filter(|e| e.kind == EntryKind::File)
        .map(|e| e.path.as_path())
        .collect();
    assert_eq!(listed_files.len(), files.len(), "{listing:?}");
    for entry in listing.iter().filter(|e| e.kind == EntryKind::Directory) {
        fs::create_dir_all(client_dir.path().join(entry.path.as_path())).unwrap();
    }
    let paths: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
    let outcomes = client
        .fetch(&requests(root, client_dir.path(), &paths), |_| {})
        .unwrap();
    for ((path, data), outcome) in files.iter().zip(&outcomes) {
        let report = outcome
            .result
            .as_ref()
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(report.len, data.len() as u64);
        assert_eq!(
            &fs::read(client_dir.path().join(path)).unwrap(),
            data,
            "{path}"
        );
    }
    // The all-zero file crossed compressed.
    assert!(outcomes[1].result.as_ref().unwrap().received_bytes < 10_000);
    let copied = fs::metadata(client_dir.path().join("data/PG_VERSION")).unwrap();
    let original = fs::metadata(root.join("data/PG_VERSION")).unwrap();
    assert_eq!(copied.permissions().mode() & 0o7777, 0o600);
    assert_eq!(copied.modified().unwrap(), original.modified().unwrap());

    // Change one page of the big file and fetch again against the copies as basis.
    let mut changed = files[0].1.clone();
    changed[1_000_000..1_008_192].copy_from_slice(&random_bytes(8192, 9));
    fs::write(root.join(&files[0].0), &changed).unwrap();
    let outcomes = client
        .fetch(&requests(root, client_dir.path(), &paths[..1]), |_| {})
        .unwrap();
    let report = outcomes[0].result.as_ref().unwrap();
    assert_eq!(
        fs::read(client_dir.path().join(&files[0].0)).unwrap(),
        changed
    );
    assert!(report.received_bytes < 40_000, "{report:?}");
    assert!(report.reused_bytes > 3_000_000, "{report:?}");

    client.finish().unwrap();
    server.join().unwrap().unwrap();
    assert!(leftovers(client_dir.path()).is_empty());
}

#[test]
fn per_file_errors_name_the_path_and_do_not_stop_the_others() {
    let server_dir = tempfile::tempdir().unwrap();
    let client_dir = tempfile::tempdir().unwrap();
    let root = server_dir.path().join("root");
    fs::create_dir_all(&root).unwrap();
    fs::write(root.join("good"), b"good data").unwrap();
    fs::write(server_dir.path().join("secret"), b"outside the root").unwrap();
    std::os::unix::fs::symlink(server_dir.path().join("secret"), root.join("link")).unwrap();
    let (input, output, server) = start_server(&root, |w| w);
    let mut client = Client::connect(input, output, options()).unwrap();
    let request = |remote: String, name: &str| FetchRequest {
        remote_path: remote.into(),
        destination: transfer_engine::confine::Destination::trusted(&client_dir.path().join(name))
            .unwrap(),
        basis: None,
        max_len: None,
        partial: None,
        target: transfer_engine::protocol::FetchTarget::NEW_FILE,
    };
    let batch = vec![
        request(format!("{}/missing", root.display()), "a"),
        request(format!("{}/../secret", root.display()), "b"),
        request(server_dir.path().join("secret").display().to_string(), "c"),
        request(format!("{}/link", root.display()), "d"),
        request(format!("{}/good", root.display()), "e"),
    ];
    let outcomes = client.fetch(&batch, |_| {}).unwrap();
    let failures: Vec<&FileError> = outcomes[..4]
        .iter()
        .map(|o| o.result.as_ref().unwrap_err())
        .collect();
    let kinds: Vec<FileErrorKind> = failures.iter().map(|e| e.kind).collect();
    use FileErrorKind::{Missing, Refused};
    assert_eq!(kinds, [Missing, Refused, Refused, Refused], "{failures:?}");
    for (failure, outcome) in failures.iter().zip(&outcomes) {
        assert_eq!(failure.remote, outcome.remote_path);
    }
    let errors: Vec<String> = failures.iter().map(|e| e.to_string()).collect();
    assert!(
        errors[0].contains("missing") && errors[0].contains("No such file"),
        "{}",
        errors[0]
    );
    assert!(errors[1].contains("`..`"), "{}", errors[1]);
    assert!(errors[2].contains("not below any root"), "{}", errors[2]);
    assert!(
        errors[3].contains("link") && errors[3].contains("symlinks are not followed"),
        "{}",
        errors[3]
    );
    assert_eq!(fs::read(client_dir.path().join("e")).unwrap(), b"good data");
    for name in ["a", "b", "c", "d"] {
        assert!(!client_dir.path().join(name).exists());
    }
    client.finish().unwrap();
    server.join().unwrap().unwrap();
}

#[test]
fn many_small_files_are_pipelined() {
    let server_dir = tempfile::tempdir().unwrap();
    let client_dir = tempfile::tempdir().unwrap();
    let root = server_dir.path();
    let names: Vec<String> = (0..2000).map(|i| format!("f{i:05}")).collect();
    for (i, name) in names.iter().enumerate() {
        fs::write(root.join(name), random_bytes(2048, i as u64)).unwrap();
    }
    let (input, output, server) = start_server(root, |w| w);
    let mut client = Client::connect(input, output, ClientOptions::default()).unwrap();
    let paths: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
    let mut seen = 0;
    let outcomes = client
        .fetch(&requests(root, client_dir.path(), &paths), |_| seen += 1)
        .unwrap();
    assert_eq!(seen, 2000);
    assert!(outcomes.iter().all(|o| o.result.is_ok()));
    for (i, name) in names.iter().enumerate() {
        assert_eq!(
            fs::read(client_dir.path().join(name)).unwrap(),
            random_bytes(2048, i as u64)
        );
    }
    client.finish().unwrap();
    server.join().unwrap().unwrap();
}

#[test]
fn version_mismatch_names_both_versions() {
    let (to_server, _server_in) = memory_pipe(PIPE);
    let (server_out, from_server) = memory_pipe(PIPE);
    let mut fake = FrameWriter::new(server_out);
    fake.start()
        .rest(b"BSYN")
        .u32(99)
        .u32(0)
        .str("barsync 9.9.9");
    fake.send(Kind::Hello).unwrap();
    fake.flush().unwrap();
    let error = Client::connect(from_server, to_server, options())
        .err()
        .unwrap();
    let message = error.to_string();
    assert!(
        message.contains("version 1")
            && message.contains("version 99")
            && message.contains("barsync 9.9.9"),
        "{message}"
    );
}

/// Passes bytes through, flipping one or cutting the stream after `at` bytes.
struct Sabotage<W: Write> {
    inner: W,
    written: usize,
    at: usize,
    cut: bool,
}

impl<W: Write> Write for Sabotage<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written <= self.at && self.at < self.written + buf.len() {
            if self.cut {
                let keep = self.at - self.written;
                self.inner.write_all(&buf[..keep])?;
                self.written += keep;
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "link cut by the test",
                ));
            }
            let mut copy = buf.to_vec();
            copy[self.at - self.written] ^= 0x20;
            self.inner.write_all(&copy)?;
        } else {
            self.inner.write_all(buf)?;
        }
        self.written += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The client's directory, the files served, and the session's result (per-file results).
type SabotageResult = (
    tempfile::TempDir,
    Vec<(String, Vec<u8>)>,
    Result<Vec<Result<(), String>>, ProtocolError>,
);

fn sabotaged_fetch(at: usize, cut: bool) -> SabotageResult {
    let server_dir = tempfile::tempdir().unwrap();
    let client_dir = tempfile::tempdir().unwrap();
    let root = server_dir.path();
    let files = tree(root);
    for (path, _) in &files {
        fs::create_dir_all(client_dir.path().join(path).parent().unwrap()).unwrap();
    }
    let (input, output, server) = start_server(root, |w| Sabotage {
        inner: w,
        written: 0,
        at,
        cut,
    });
    let paths: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
    let result = Client::connect(input, output, ClientOptions::default()).and_then(|mut client| {
        let outcomes = client.fetch(&requests(root, client_dir.path(), &paths), |_| {})?;
        Ok(outcomes
            .into_iter()
            .map(|o| o.result.map(drop).map_err(|e| e.to_string()))
            .collect())
    });
    let _ = server.join();
    // Whatever happened, every published file is exactly right and nothing temporary is left.
    for (path, data) in &files {
        if let Ok(copy) = fs::read(client_dir.path().join(path)) {
            assert_eq!(&copy, data, "{path} was published wrong");
        }
    }
    assert!(
        leftovers(client_dir.path()).is_empty(),
        "{:?}",
        leftovers(client_dir.path())
    );
    (client_dir, files, result)
}

#[test]
fn bytes_flipped_in_flight_never_publish_a_wrong_file() {
    let mut failures = 0;
    for at in [100, 2_000, 500_000, 1_500_000, 3_000_000, 3_100_000] {
        let (_dir, _files, result) = sabotaged_fetch(at, false);
        match result {
            Err(_) => failures += 1,
            Ok(outcomes) => failures += outcomes.iter().filter(|o| o.is_err()).count(),
        }
    }
    assert!(failures >= 6, "every corruption was detected somewhere");
}

#[test]
fn a_cut_connection_is_a_clean_error() {
    for at in [50, 1_000_000, 3_200_000] {
        let (_dir, _files, result) = sabotaged_fetch(at, true);
        let error = result.expect_err("the session cannot succeed");
        assert!(
            matches!(error, ProtocolError::Truncated | ProtocolError::Io(_)),
            "{error}"
        );
    }
}

#[test]
fn a_read_only_server_says_so_and_refuses_every_push() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir_all(root.join("kept")).unwrap();
    fs::write(root.join("kept/file"), b"original").unwrap();
    let local = dir.path().join("local");
    fs::write(&local, b"replacement").unwrap();
    let (to_server, server_in) = memory_pipe(PIPE);
    let (server_out, from_server) = memory_pipe(PIPE);
    let roots = Roots::new(vec![root.clone()]).unwrap();
    let server = thread::spawn(move || {
        transfer_engine::protocol::serve_with(
            server_in,
            server_out,
            &roots,
            transfer_engine::protocol::ServeOptions { read_only: true },
        )
        .map(drop)
    });
    let mut client = Client::connect(from_server, to_server, options()).unwrap();
    assert!(client.peer_read_only());
    let at = |path: &str| root.join(path);
    let items = vec![
        PushItem::File {
            local: local.clone(),
            remote_path: at("kept/file"),
        },
        PushItem::File {
            local,
            remote_path: at("new"),
        },
        PushItem::Directory {
            remote_path: at("dir"),
            mode: 0o755,
        },
        PushItem::Symlink {
            remote_path: at("link"),
            target: "/etc".into(),
        },
        PushItem::Remove {
            remote_path: at("kept"),
        },
    ];
    let outcomes = client.push(&items, |_| {}).unwrap();
    assert_eq!(outcomes.len(), items.len());
    for outcome in &outcomes {
        let error = outcome.result.as_ref().unwrap_err();
        assert!(
            error.detail.contains("refused") && error.detail.contains("read-only"),
            "{}: {error}",
            outcome.remote_path.display()
        );
    }
    assert_eq!(fs::read(root.join("kept/file")).unwrap(), b"original");
    let mut names: Vec<_> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, vec!["kept"]);
    // Reads are served as ever.
    fs::create_dir_all(dir.path().join("copy/kept")).unwrap();
    let fetched = client
        .fetch(
            &requests(&root, &dir.path().join("copy"), &["kept/file"]),
            |_| {},
        )
        .unwrap();
    assert!(fetched[0].result.is_ok(), "{:?}", fetched[0].result);
    client.finish().unwrap();
    server.join().unwrap().unwrap();
}

/// A client that does not announce `FEATURE_ERROR_KINDS` (an older barsync) gets a
/// `RequestError` exactly as before: the request id and the words, nothing after them.
#[test]
fn an_older_client_gets_request_errors_without_the_kind_byte() {
    use transfer_engine::protocol::frame::{Fields, FrameReader};
    use transfer_engine::protocol::handshake::{handshake, FEATURE_RANGES, FEATURE_ZSTD};
    let server_dir = tempfile::tempdir().unwrap();
    let (from_server, to_server, server) = start_server(server_dir.path(), |w| w);
    let mut reader = FrameReader::new(from_server);
    let mut writer = FrameWriter::new(to_server);
    handshake(&mut reader, &mut writer, FEATURE_ZSTD | FEATURE_RANGES).unwrap();
    let mut signature = Vec::new();
    transfer_engine::signature(&[], &transfer_engine::SignatureOptions::default())
        .encode(&mut signature);
    let missing = server_dir.path().join("missing");
    writer
        .start()
        .u32(0)
        .path(&missing)
        .u64(signature.len() as u64)
        .u8(0)
        .u8(0);
    writer.send(Kind::FileRequest).unwrap();
    writer.start().u32(0).rest(&signature);
    writer.send(Kind::SignatureChunk).unwrap();
    writer.flush().unwrap();
    let (kind, payload) = reader.expect_frame().unwrap();
    assert_eq!(kind, Kind::RequestError);
    let mut fields = Fields::new(kind, payload);
    assert_eq!(fields.u32().unwrap(), 0);
    assert!(fields.str().unwrap().contains("No such file"));
    fields
        .end()
        .expect("no kind byte for a client that did not ask for it");
    writer.start();
    writer.send(Kind::RequestsDone).unwrap();
    writer.flush().unwrap();
    assert_eq!(reader.expect_frame().unwrap().0, Kind::ServerDone);
    server.join().unwrap().unwrap();
}

/// A listing of many small files, as a resync asks for one: the client reads back every entry
/// exactly, and the whole listing costs a fraction of its entries' bytes (packed and
/// compressed `ListBatch` frames; one `ListEntry` frame each took about 44 bytes per entry).
#[test]
fn a_listing_of_many_files_is_exact_and_compact() {
    let server_dir = tempfile::tempdir().unwrap();
    let root = server_dir.path();
    let count = 10_000;
    for index in 0..count {
        let directory = root.join(format!("d{:02}", index % 40));
        fs::create_dir_all(&directory).unwrap();
        fs::write(
            directory.join(format!("f{index:05}")),
            vec![b'x'; index % 3000],
        )
        .unwrap();
    }
    std::os::unix::fs::symlink("d00/f00000", root.join("link")).unwrap();
    let (input, output, server) = start_server(root, |w| w);
    let mut client = Client::connect(input, output, options()).unwrap();
    let before = client.traffic().1;
    let listing = client.list(root, true).unwrap().unwrap();
    let received = client.traffic().1 - before;
    assert_eq!(
        listing.len(),
        count + 40 + 1,
        "files, directories, the symlink"
    );
    for entry in &listing {
        let path = root.join(entry.path.as_path());
        let meta = fs::symlink_metadata(&path).unwrap();
        match entry.kind {
            EntryKind::File => assert_eq!(entry.size, meta.len(), "{}", path.display()),
            EntryKind::Directory => assert!(meta.is_dir()),
            EntryKind::Symlink => assert_eq!(
                entry.target.as_deref(),
                Some(std::ffi::OsStr::new("d00/f00000"))
            ),
        }
        assert_eq!(entry.mtime.0, meta.mtime(), "{}", path.display());
        assert_eq!(entry.mode, meta.mode() & 0o7777, "{}", path.display());
    }
    let per_entry = received as f64 / listing.len() as f64;
    assert!(
        per_entry < 12.0,
        "the listing took {received} bytes, {per_entry:.1} per entry"
    );
    client.finish().unwrap();
    server.join().unwrap().unwrap();
}

/// A client that does not announce `FEATURE_LIST_BATCH` (an older barsync) still gets one
/// `ListEntry` frame per entry.
#[test]
fn an_older_client_gets_a_listing_entry_by_entry() {
    use transfer_engine::protocol::frame::{Fields, FrameReader};
    use transfer_engine::protocol::handshake::{handshake, FEATURE_RANGES, FEATURE_ZSTD};
    let server_dir = tempfile::tempdir().unwrap();
    for name in ["a", "b", "c"] {
        fs::write(server_dir.path().join(name), name).unwrap();
    }
    let (from_server, to_server, server) = start_server(server_dir.path(), |w| w);
    let mut reader = FrameReader::new(from_server);
    let mut writer = FrameWriter::new(to_server);
    handshake(&mut reader, &mut writer, FEATURE_ZSTD | FEATURE_RANGES).unwrap();
    writer.start().u32(0).path(server_dir.path()).u8(1);
    writer.send(Kind::List).unwrap();
    writer.flush().unwrap();
    let mut names = Vec::new();
    loop {
        let (kind, payload) = reader.expect_frame().unwrap();
        let mut fields = Fields::new(kind, payload);
        assert_eq!(fields.u32().unwrap(), 0);
        match kind {
            Kind::ListEntry => names.push(fields.path().unwrap().to_owned()),
            Kind::ListEnd => break,
            other => panic!("an older client got {other:?}"),
        }
    }
    assert_eq!(names, [Path::new("a"), Path::new("b"), Path::new("c")]);
    writer.start();
    writer.send(Kind::RequestsDone).unwrap();
    writer.flush().unwrap();
    assert_eq!(reader.expect_frame().unwrap().0, Kind::ServerDone);
    server.join().unwrap().unwrap();
}
