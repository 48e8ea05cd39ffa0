//! barsync's SFTP client against OpenSSH's own `sftp-server` (run directly over pipes, as sshd
//! runs it for the `sftp` subsystem), with the checksum tool run by a local `sh` standing in
//! for the host's: listings, pipelined downloads of many files and of large ones, resumption,
//! names that are not UTF-8, symlinks, and pushes that replace files.

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use transfer_engine::confine::Destination;
use transfer_engine::protocol::{EntryKind, PushItem};
use transfer_engine::sftp::{
    RemoteShell, SftpFetch, SftpFile, SftpSource, ShellProcess, Verification,
};
use transfer_engine::{FileError, FileErrorKind};

/// OpenSSH's sftp-server (Debian's path, or `$BARSYNC_TEST_SFTP_SERVER`).
fn sftp_server() -> PathBuf {
    let path = std::env::var_os("BARSYNC_TEST_SFTP_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/openssh/sftp-server"));
    assert!(
        path.exists(),
        "{} is missing: install openssh-server (or set BARSYNC_TEST_SFTP_SERVER)",
        path.display()
    );
    path
}

/// The host's commands, run by a local `sh`.
struct LocalShell;

impl RemoteShell for LocalShell {
    fn start(&self, command: &str) -> Result<ShellProcess, String> {
        let child = Command::new("sh")
            .args(["-c", command])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        Ok(ShellProcess::from_child(child))
    }
}

/// Counts the SFTP packets that pass (by their length prefixes).
struct PacketCounter {
    /// Bytes still to skip in the current packet, or the length bytes seen so far.
    left: usize,
    header: Vec<u8>,
    count: Arc<AtomicUsize>,
}

impl PacketCounter {
    fn new(count: Arc<AtomicUsize>) -> PacketCounter {
        PacketCounter {
            left: 0,
            header: Vec::new(),
            count,
        }
    }

    fn pass(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.left > 0 {
                let skip = self.left.min(bytes.len());
                self.left -= skip;
                bytes = &bytes[skip..];
                continue;
            }
            self.header.push(bytes[0]);
            bytes = &bytes[1..];
            if self.header.len() == 4 {
                self.left = u32::from_be_bytes(self.header[..].try_into().unwrap()) as usize;
                self.header.clear();
                self.count.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

/// The server's side, seen by the client: requests written and replies read are counted, and
/// the most requests ever waiting for a reply is kept.
struct Counted {
    sent: Arc<AtomicUsize>,
    received: Arc<AtomicUsize>,
    most_in_flight: Arc<AtomicUsize>,
}

struct CountingWriter<W> {
    inner: W,
    counter: PacketCounter,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.counter.pass(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct CountingReader<R> {
    inner: R,
    counter: PacketCounter,
    sent: Arc<AtomicUsize>,
    most_in_flight: Arc<AtomicUsize>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let in_flight = self
            .sent
            .load(Ordering::SeqCst)
            .saturating_sub(self.counter.count.load(Ordering::SeqCst));
        self.most_in_flight.fetch_max(in_flight, Ordering::SeqCst);
        let n = self.inner.read(buf)?;
        self.counter.pass(&buf[..n]);
        Ok(n)
    }
}

/// A session with a new `sftp-server` whose working directory is `dir`.
fn session(dir: &Path) -> (SftpSource, Child, Counted) {
    let mut child = Command::new(sftp_server())
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("running sftp-server");
    let counted = Counted {
        sent: Arc::default(),
        received: Arc::default(),
        most_in_flight: Arc::default(),
    };
    let reader = CountingReader {
        inner: child.stdout.take().unwrap(),
        counter: PacketCounter::new(counted.received.clone()),
        sent: counted.sent.clone(),
        most_in_flight: counted.most_in_flight.clone(),
    };
    let writer = CountingWriter {
        inner: child.stdin.take().unwrap(),
        counter: PacketCounter::new(counted.sent.clone()),
    };
    let source = SftpSource::over_stream(
        Box::new(reader),
        Box::new(writer),
        "local-sftp-server".into(),
        Some(Arc::new(LocalShell)),
    )
    .expect("SFTP session");
    (source, child, counted)
}

/// Deterministic incompressible bytes.
fn noise(len: usize, mut state: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Fetches `names` (below `remote`) into `local`, each with its partial copy beside it.
fn fetch_all(
    source: &mut SftpSource,
    remote: &Path,
    local: &Path,
    names: &[&[u8]],
) -> Vec<Result<SftpFetch, FileError>> {
    let remotes: Vec<PathBuf> = names
        .iter()
        .map(|name| remote.join(OsStr::from_bytes(name)))
        .collect();
    let destinations: Vec<Destination> = names
        .iter()
        .map(|name| Destination::trusted(&local.join(OsStr::from_bytes(name))).unwrap())
        .collect();
    let partials: Vec<std::ffi::OsString> = names
        .iter()
        .map(|name| transfer_engine::names::partial(OsStr::from_bytes(name)))
        .collect();
    let files: Vec<SftpFile<'_>> = (0..names.len())
        .map(|i| SftpFile {
            remote: &remotes[i],
            destination: &destinations[i],
            partial: &partials[i],
            max_len: None,
            link_basis: None,
        })
        .collect();
    let mut results: Vec<Option<Result<SftpFetch, FileError>>> = vec![None; names.len()];
    source.fetch_many(&files, &mut |index, result| {
        assert!(results[index].is_none(), "{index} reported twice");
        results[index] = Some(result);
    });
    results.into_iter().map(Option::unwrap).collect()
}

#[test]
fn many_files_and_a_large_one_come_whole_with_many_reads_in_flight() {
    let remote = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    let big = noise(9 << 20, 1);
    fs::write(remote.path().join("big"), &big).unwrap();
    let mut names: Vec<Vec<u8>> = vec![b"big".to_vec()];
    for i in 0..300u64 {
        let name = format!("small-{i:03}").into_bytes();
        fs::write(
            remote.path().join(OsStr::from_bytes(&name)),
            noise(100 + i as usize * 37, i + 2),
        )
        .unwrap();
        names.push(name);
    }
    fs::write(remote.path().join("empty"), b"").unwrap();
    names.push(b"empty".to_vec());
    let (mut source, mut child, counted) = session(remote.path());
    assert_ne!(source.verification(), Verification::SizeAndMtime);
    let listed = source.list(remote.path(), true).unwrap();
    assert_eq!(listed.len(), names.len());
    // The large file alone: many READs wait for their replies at once.
    counted.most_in_flight.store(0, Ordering::SeqCst);
    let results = fetch_all(&mut source, remote.path(), local.path(), &[b"big"]);
    assert_eq!(results[0].as_ref().unwrap().len, 9 << 20);
    assert_eq!(fs::read(local.path().join("big")).unwrap(), big);
    let most = counted.most_in_flight.swap(0, Ordering::SeqCst);
    assert!(most >= 32, "at most {most} requests in flight for one file");
    // The small ones: many files in progress at once.
    let name_refs: Vec<&[u8]> = names[1..].iter().map(Vec::as_slice).collect();
    let sent_before = counted.sent.load(Ordering::SeqCst);
    let results = fetch_all(&mut source, remote.path(), local.path(), &name_refs);
    for (name, result) in name_refs.iter().zip(&results) {
        let fetched = result.as_ref().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(fetched.verification, source.verification());
        let name = OsStr::from_bytes(name);
        assert_eq!(
            fs::read(local.path().join(name)).unwrap(),
            fs::read(remote.path().join(name)).unwrap(),
            "{name:?}"
        );
    }
    let most = counted.most_in_flight.load(Ordering::SeqCst);
    assert!(
        most >= 32,
        "at most {most} requests in flight for small files"
    );
    // Per small file: OPEN, FSTAT and READ together, then FSTAT and CLOSE; nothing more.
    let sent = counted.sent.load(Ordering::SeqCst) - sent_before;
    assert_eq!(sent, 5 * name_refs.len(), "{sent} requests");
    source.close().unwrap();
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_partial_copy_is_resumed_and_a_longer_one_restarted() {
    let remote = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    let data = noise(3 << 20, 5);
    fs::write(remote.path().join("a"), &data).unwrap();
    fs::write(remote.path().join("b"), &data[..1000]).unwrap();
    fs::write(local.path().join(".a.barsync-partial"), &data[..1 << 20]).unwrap();
    // Longer than the remote file: not a prefix of it.
    fs::write(local.path().join(".b.barsync-partial"), vec![7u8; 5000]).unwrap();
    let (mut source, _child, _) = session(remote.path());
    let results = fetch_all(&mut source, remote.path(), local.path(), &[b"a", b"b"]);
    let a = results[0].as_ref().unwrap();
    assert_eq!((a.len, a.received_bytes), (3 << 20, 2 << 20));
    let b = results[1].as_ref().unwrap();
    assert_eq!((b.len, b.received_bytes), (1000, 1000));
    // A file gone since it was listed fails as missing, naming it; the session goes on.
    let results = fetch_all(&mut source, remote.path(), local.path(), &[b"gone", b"a"]);
    let gone = results[0].as_ref().unwrap_err();
    assert_eq!(gone.kind, FileErrorKind::Missing, "{gone}");
    assert_eq!(gone.remote, remote.path().join("gone"));
    assert!(gone.detail.contains("gone: open"), "{gone}");
    assert!(results[1].is_ok());
    assert_eq!(fs::read(local.path().join("a")).unwrap(), data);
    assert_eq!(fs::read(local.path().join("b")).unwrap(), &data[..1000]);
    assert!(!local.path().join(".a.barsync-partial").exists());
}

/// A partial copy whose bytes differ from the remote file's (not a prefix of it) fails the
/// check, is discarded, and the file is fetched again from the start.
#[test]
fn a_corrupt_partial_copy_fails_the_check_and_the_file_is_fetched_again() {
    let remote = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    let data = noise(1 << 20, 9);
    fs::write(remote.path().join("f"), &data).unwrap();
    fs::write(local.path().join(".f.barsync-partial"), vec![0u8; 4096]).unwrap();
    let (mut source, _child, _) = session(remote.path());
    let results = fetch_all(&mut source, remote.path(), local.path(), &[b"f"]);
    let f = results[0].as_ref().unwrap();
    assert_eq!(f.received_bytes, 1 << 20, "fetched again whole");
    assert_eq!(fs::read(local.path().join("f")).unwrap(), data);
}

#[test]
fn listings_see_symlinks_without_following_them_and_names_are_bytes() {
    let remote = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("secret"), b"outside").unwrap();
    let tree = remote.path().join("tree");
    fs::create_dir_all(tree.join(OsStr::from_bytes(b"dir-\xff"))).unwrap();
    fs::write(
        tree.join(OsStr::from_bytes(b"dir-\xff"))
            .join(OsStr::from_bytes(b"caf\xe9")),
        b"latin-1",
    )
    .unwrap();
    std::os::unix::fs::symlink(outside.path(), tree.join("link-out")).unwrap();
    std::os::unix::fs::symlink(OsStr::from_bytes(b"dir-\xff"), tree.join("link-in")).unwrap();
    let (mut source, _child, _) = session(remote.path());
    let entries = source.list(&tree, true).unwrap();
    let shown: Vec<(Vec<u8>, EntryKind, Option<Vec<u8>>)> = entries
        .iter()
        .map(|e| {
            (
                e.path.as_bytes().to_vec(),
                e.kind,
                e.target.as_ref().map(|t| t.as_bytes().to_vec()),
            )
        })
        .collect();
    assert_eq!(
        shown,
        vec![
            (b"dir-\xff".to_vec(), EntryKind::Directory, None),
            (b"dir-\xff/caf\xe9".to_vec(), EntryKind::File, None),
            (
                b"link-in".to_vec(),
                EntryKind::Symlink,
                Some(b"dir-\xff".to_vec())
            ),
            (
                b"link-out".to_vec(),
                EntryKind::Symlink,
                Some(outside.path().as_os_str().as_bytes().to_vec())
            ),
        ]
    );
    // A missing path is the server's refusal, and the session goes on.
    let error = source
        .list(&remote.path().join("missing"), true)
        .unwrap_err();
    assert!(!error.is_session(), "{error}");
    assert!(source.list(&tree, false).is_ok());
}

#[test]
fn pushes_create_replace_link_and_remove() {
    let remote = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    let data = noise(2 << 20, 11);
    fs::write(local.path().join("file"), &data).unwrap();
    let target = remote.path().join("dst");
    fs::create_dir_all(target.join("old/inner")).unwrap();
    fs::write(target.join("old/inner/x"), b"x").unwrap();
    fs::write(target.join("file"), b"an older version").unwrap();
    let (mut source, _child, _) = session(remote.path());
    let items = vec![
        PushItem::Directory {
            remote_path: target.join("new-dir"),
            mode: 0o750,
        },
        PushItem::File {
            local: local.path().join("file"),
            remote_path: target.join("file"),
        },
        PushItem::Symlink {
            remote_path: target.join("link"),
            target: PathBuf::from("file"),
        },
        PushItem::Remove {
            remote_path: target.join("old"),
        },
    ];
    let outcomes = source.apply_items(&items, &mut |_| {}).unwrap();
    assert_eq!(outcomes.len(), 4);
    for outcome in &outcomes {
        assert!(outcome.result.is_ok(), "{:?}", outcome);
    }
    assert_eq!(fs::read(target.join("file")).unwrap(), data);
    assert_eq!(
        fs::read_link(target.join("link")).unwrap(),
        Path::new("file")
    );
    assert!(target.join("new-dir").is_dir());
    assert!(!target.join("old").exists());
    assert!(!target.join(".file.barsync-partial").exists());
    use std::os::unix::fs::MetadataExt;
    let (pushed, original) = (
        fs::metadata(target.join("file")).unwrap(),
        fs::metadata(local.path().join("file")).unwrap(),
    );
    assert_eq!(pushed.mtime(), original.mtime());
    assert_eq!(pushed.mode() & 0o7777, original.mode() & 0o7777);
}
