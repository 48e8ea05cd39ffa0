//! Tree copies through a real session over in-memory pipes: rsync semantics and resuming.

mod common;

use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::thread;

use barsync_transport::{memory_pipe, PipeReader, PipeWriter};
use common::random_bytes;
use transfer_engine::confine::Roots;
use transfer_engine::copy::{partial_path, pull, CopyError, CopyOptions, CopyReport};
use transfer_engine::protocol::client::ClientOptions;
use transfer_engine::protocol::{serve, Client};

/// Runs `work` in a session with a server on `root`; `cut_after`: the server's output breaks
/// after that many bytes. Returns the client's result and the server's.
fn session(
    root: &Path,
    cut_after: Option<usize>,
    work: impl FnOnce(&mut Client<PipeReader, PipeWriter>) -> Result<CopyReport, CopyError>,
) -> (Result<CopyReport, String>, Result<(), String>) {
    let (to_server, server_in) = memory_pipe(1 << 20);
    let (server_out, from_server) = memory_pipe(1 << 20);
    let roots = Roots::new(vec![root.to_path_buf()]).unwrap();
    let server = thread::spawn(move || {
        let output = Cut {
            inner: server_out,
            left: cut_after.unwrap_or(usize::MAX),
        };
        serve(server_in, output, &roots)
    });
    let result = Client::connect(
        from_server,
        to_server,
        ClientOptions {
            compression: Some(1),
            ..ClientOptions::default()
        },
    )
    .map_err(|e| e.to_string())
    .and_then(|mut client| {
        let report = work(&mut client).map_err(|e| e.to_string())?;
        client.finish().map_err(|e| e.to_string())?;
        Ok(report)
    });
    let served = server.join().unwrap().map(drop).map_err(|e| e.to_string());
    (result, served)
}

/// Runs one pull session; `cut_after`: the server's output breaks after that many bytes.
fn copy(
    root: &Path,
    source: &str,
    destination: &Path,
    options: CopyOptions,
    cut_after: Option<usize>,
) -> Result<CopyReport, String> {
    let contents = source.ends_with('/');
    session(root, cut_after, |client| {
        pull(
            client,
            Path::new(source),
            contents,
            destination,
            &options,
            |_| {},
        )
    })
    .0
}

struct Cut<W: Write> {
    inner: W,
    left: usize,
}

impl<W: Write> Write for Cut<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "cut"));
        }
        let n = buf.len().min(self.left);
        self.inner.write_all(&buf[..n])?;
        self.left -= n;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn recursive() -> CopyOptions {
    CopyOptions {
        recursive: true,
        ..Default::default()
    }
}

fn source_tree(root: &Path) {
    fs::create_dir_all(root.join("src/sub/deeper")).unwrap();
    fs::write(root.join("src/a"), random_bytes(200_000, 1)).unwrap();
    fs::write(root.join("src/sub/b"), random_bytes(5000, 2)).unwrap();
    fs::write(root.join("src/sub/deeper/c"), b"").unwrap();
    std::os::unix::fs::symlink("../a", root.join("src/sub/link")).unwrap();
}

fn assert_same_tree(a: &Path, b: &Path) {
    let list = |root: &Path| {
        let mut out = Vec::new();
        let mut pending = vec![root.to_path_buf()];
        while let Some(dir) = pending.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let meta = fs::symlink_metadata(&path).unwrap();
                let rel = path.strip_prefix(root).unwrap().to_path_buf();
                if meta.is_dir() {
                    pending.push(path.clone());
                    out.push((rel, b"dir".to_vec()));
                } else if meta.file_type().is_symlink() {
                    out.push((
                        rel,
                        fs::read_link(&path)
                            .unwrap()
                            .to_string_lossy()
                            .as_bytes()
                            .to_vec(),
                    ));
                } else {
                    out.push((rel, fs::read(&path).unwrap()));
                }
            }
        }
        out.sort();
        out
    };
    assert_eq!(list(a), list(b));
}

#[test]
fn trailing_slash_copies_contents_and_no_slash_copies_the_directory() {
    let server = tempfile::tempdir().unwrap();
    let client = tempfile::tempdir().unwrap();
    source_tree(server.path());
    copy(
        server.path(),
        "src",
        &client.path().join("one"),
        recursive(),
        None,
    )
    .unwrap();
    assert_same_tree(&server.path().join("src"), &client.path().join("one/src"));
    copy(
        server.path(),
        "src/",
        &client.path().join("two"),
        recursive(),
        None,
    )
    .unwrap();
    assert_same_tree(&server.path().join("src"), &client.path().join("two"));
    assert!(fs::symlink_metadata(client.path().join("two/sub/link"))
        .unwrap()
        .file_type()
        .is_symlink());
    let error = copy(
        server.path(),
        "src",
        &client.path().join("three"),
        CopyOptions::default(),
        None,
    )
    .unwrap_err();
    assert!(error.contains("use -r"), "{error}");
}

#[test]
fn resync_skips_unchanged_and_delete_removes_extraneous() {
    let server = tempfile::tempdir().unwrap();
    let client = tempfile::tempdir().unwrap();
    source_tree(server.path());
    let dest = client.path().join("dst");
    let first = copy(server.path(), "src/", &dest, recursive(), None).unwrap();
    assert_eq!((first.files, first.transferred), (3, 3));
    let again = copy(server.path(), "src/", &dest, recursive(), None).unwrap();
    assert_eq!((again.transferred, again.skipped), (0, 3));

    fs::write(dest.join("extra"), b"x").unwrap();
    fs::create_dir_all(dest.join("old/dir")).unwrap();
    fs::remove_file(server.path().join("src/sub/b")).unwrap();
    let dry = copy(
        server.path(),
        "src/",
        &dest,
        CopyOptions {
            delete: true,
            dry_run: true,
            ..recursive()
        },
        None,
    )
    .unwrap();
    assert_eq!(dry.deleted, 3, "{:?}", dry.plan);
    assert!(
        dest.join("extra").exists() && dest.join("sub/b").exists(),
        "a dry run changes nothing"
    );
    let real = copy(
        server.path(),
        "src/",
        &dest,
        CopyOptions {
            delete: true,
            ..recursive()
        },
        None,
    )
    .unwrap();
    assert_eq!(real.deleted, 3);
    assert_same_tree(&server.path().join("src"), &dest);

    // --checksum finds a change that keeps size and mtime.
    let a = dest.join("a");
    let mtime = fs::metadata(&a).unwrap().modified().unwrap();
    let mut data = fs::read(&a).unwrap();
    data[10] ^= 1;
    fs::write(&a, &data).unwrap();
    fs::File::options()
        .write(true)
        .open(&a)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let by_stat = copy(server.path(), "src/", &dest, recursive(), None).unwrap();
    assert_eq!(by_stat.transferred, 0);
    let by_content = copy(
        server.path(),
        "src/",
        &dest,
        CopyOptions {
            checksum: true,
            ..recursive()
        },
        None,
    )
    .unwrap();
    assert_eq!(by_content.transferred, 2);
    assert!(by_content.received_bytes < 40_000, "{by_content:?}");
    assert_same_tree(&server.path().join("src"), &dest);
}

#[test]
fn an_interrupted_copy_resumes_from_what_arrived() {
    let server = tempfile::tempdir().unwrap();
    let client = tempfile::tempdir().unwrap();
    fs::create_dir_all(server.path().join("src")).unwrap();
    let done = random_bytes(300_000, 5);
    let big = random_bytes(8 << 20, 6);
    fs::write(server.path().join("src/a_done"), &done).unwrap();
    fs::write(server.path().join("src/b_big"), &big).unwrap();
    let dest = client.path().join("dst");
    let options = CopyOptions {
        recursive: true,
        ..Default::default()
    };

    // The link breaks after the first file and half of the second.
    let error = copy(
        server.path(),
        "src/",
        &dest,
        options,
        Some(300_000 + (4 << 20)),
    )
    .unwrap_err();
    assert!(error.contains("connection"), "{error}");
    assert_eq!(
        fs::read(dest.join("a_done")).unwrap(),
        done,
        "the complete file was published"
    );
    assert!(
        !dest.join("b_big").exists(),
        "nothing incomplete is published"
    );
    let partial = partial_path(&dest.join("b_big"));
    let kept = fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    assert!(
        kept > 1 << 20,
        "the received part is kept for resuming ({kept} bytes)"
    );

    let resumed = copy(server.path(), "src/", &dest, options, None).unwrap();
    assert_eq!(resumed.skipped, 1, "the complete file is not sent again");
    assert_eq!(resumed.transferred, 1);
    assert!(
        resumed.received_bytes < (8 << 20) - kept + 200_000,
        "{resumed:?} kept {kept}"
    );
    assert_eq!(fs::read(dest.join("b_big")).unwrap(), big);
    assert!(!partial.exists(), "the partial file is gone once complete");
}

/// Runs one push session: local `source` to `destination` below the server's `root`.
fn push_to(
    root: &Path,
    source: &Path,
    contents: bool,
    destination: &str,
    options: CopyOptions,
) -> Result<CopyReport, String> {
    let (result, served) = session(root, None, |client| {
        transfer_engine::copy::push(
            client,
            source,
            contents,
            Path::new(destination),
            &options,
            |_| {},
        )
    });
    served?;
    result
}

#[test]
fn push_creates_updates_and_deletes_a_remote_tree() {
    let local = tempfile::tempdir().unwrap();
    let remote = tempfile::tempdir().unwrap();
    source_tree(local.path());
    let first = push_to(
        remote.path(),
        &local.path().join("src"),
        false,
        "backup",
        recursive(),
    )
    .unwrap();
    assert!(first.errors.is_empty(), "{:?}", first.errors);
    assert_eq!(first.transferred, 3);
    assert_same_tree(&local.path().join("src"), &remote.path().join("backup/src"));

    let again = push_to(
        remote.path(),
        &local.path().join("src"),
        false,
        "backup",
        recursive(),
    )
    .unwrap();
    assert_eq!((again.transferred, again.skipped), (0, 3));

    let mut a = fs::read(local.path().join("src/a")).unwrap();
    a[100_000] ^= 1;
    fs::write(local.path().join("src/a"), &a).unwrap();
    fs::remove_dir_all(local.path().join("src/sub/deeper")).unwrap();
    fs::write(remote.path().join("backup/src/stray"), b"x").unwrap();
    let update = push_to(
        remote.path(),
        &local.path().join("src"),
        false,
        "backup",
        CopyOptions {
            delete: true,
            ..recursive()
        },
    )
    .unwrap();
    assert!(update.errors.is_empty(), "{:?}", update.errors);
    assert_eq!((update.transferred, update.deleted), (1, 2), "{update:?}");
    assert!(
        update.sent_bytes < 60_000,
        "a one-byte change sent {} bytes",
        update.sent_bytes
    );
    assert_same_tree(&local.path().join("src"), &remote.path().join("backup/src"));
}

#[test]
fn push_never_writes_through_a_symlink_on_the_server() {
    let local = tempfile::tempdir().unwrap();
    let remote = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    fs::create_dir_all(local.path().join("src/evil")).unwrap();
    fs::write(local.path().join("src/evil/file"), b"payload").unwrap();
    fs::create_dir_all(remote.path().join("backup/src")).unwrap();
    std::os::unix::fs::symlink(outside.path(), remote.path().join("backup/src/evil")).unwrap();
    let report = push_to(
        remote.path(),
        &local.path().join("src/"),
        true,
        "backup/src",
        recursive(),
    )
    .unwrap();
    // The symlink is replaced by a real directory, and nothing lands outside the root.
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(
        fs::read_dir(outside.path()).unwrap().next().is_none(),
        "nothing written outside the root"
    );
    assert!(fs::symlink_metadata(remote.path().join("backup/src/evil"))
        .unwrap()
        .is_dir());
    assert_eq!(
        fs::read(remote.path().join("backup/src/evil/file")).unwrap(),
        b"payload"
    );
}

#[test]
fn in_place_updates_rewrite_only_what_changed() {
    use std::os::unix::fs::MetadataExt;
    let server = tempfile::tempdir().unwrap();
    let client = tempfile::tempdir().unwrap();
    fs::create_dir_all(server.path().join("src")).unwrap();
    let data = random_bytes(6 << 20, 8);
    fs::write(server.path().join("src/rel"), &data).unwrap();
    let dest = client.path().join("dst");
    let options = CopyOptions {
        recursive: true,
        in_place: true,
        ..Default::default()
    };
    copy(server.path(), "src/", &dest, options, None).unwrap();
    let inode = fs::metadata(dest.join("rel")).unwrap().ino();

    let mut changed = data.clone();
    changed[3_000_000..3_000_010].fill(7);
    fs::write(server.path().join("src/rel"), &changed).unwrap();
    // A distinct mtime (two writes can share one coarse file-system timestamp tick).
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    fs::File::options()
        .write(true)
        .open(server.path().join("src/rel"))
        .unwrap()
        .set_modified(later)
        .unwrap();
    let report = copy(server.path(), "src/", &dest, options, None).unwrap();
    assert_eq!(report.transferred, 1);
    assert_eq!(fs::read(dest.join("rel")).unwrap(), changed);
    assert_eq!(
        fs::metadata(dest.join("rel")).unwrap().ino(),
        inode,
        "updated in place, not replaced"
    );
    assert!(report.received_bytes < 60_000, "{report:?}");
}
