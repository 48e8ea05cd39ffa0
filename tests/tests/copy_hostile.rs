//! A hostile far side of a copy: a pull whose listing names `a` as a symlink to a directory
//! outside the destination and then a file `a/x` below it, over `barsync serve` and over SFTP
//! (a real session through sshd; only the listing is forged), and a push that sends the same
//! to `barsync serve`. Nothing may be written outside the destination, and the file is refused
//! with a message naming it.

use std::fs;
use std::path::{Path, PathBuf};

use barsync_tests::{binaries, sshd::TestSshd};
use barsync_transport::libssh2::Libssh2Transport;
use barsync_transport::{choose_transport, TransportPreference};
use transfer_engine::confine::RelativePath;
use transfer_engine::copy::{pull, CopyError, CopyOptions, PullSource};
use transfer_engine::protocol::client::ClientOptions;
use transfer_engine::protocol::{Client, Entry, EntryKind, FetchOutcome, FetchRequest, PushItem};
use transfer_engine::sftp::SftpSource;

/// A real far side whose listing is replaced by a forged one; with `swap`, the directory
/// `swap.0` is replaced by a symlink to `swap.1` once the copy has created it, just before the
/// files are fetched (a directory swapped during the copy).
struct Forged<'a> {
    inner: &'a mut dyn PullSource,
    listing: Vec<Entry>,
    swap: Option<(PathBuf, PathBuf)>,
}

impl PullSource for Forged<'_> {
    fn list(
        &mut self,
        _path: &Path,
        _recursive: bool,
    ) -> Result<Result<Vec<Entry>, transfer_engine::FileError>, CopyError> {
        Ok(Ok(self.listing.clone()))
    }
    fn fetch(
        &mut self,
        requests: &[FetchRequest],
        progress: &mut dyn FnMut(&FetchOutcome),
    ) -> Result<Vec<FetchOutcome>, CopyError> {
        if let Some((directory, target)) = self.swap.take() {
            fs::remove_dir_all(&directory).unwrap();
            std::os::unix::fs::symlink(target, &directory).unwrap();
        }
        self.inner.fetch(requests, progress)
    }
}

fn entry(path: &str, kind: EntryKind, size: u64, target: Option<&Path>) -> Entry {
    Entry {
        path: RelativePath::new(path).unwrap(),
        kind,
        size,
        mtime: (1_700_000_000, 0),
        mode: 0o644,
        target: target.map(|t| t.as_os_str().to_owned()),
    }
}

/// The remote tree (`src/a/x`, `src/b/y` real files), an empty `outside` directory, and the
/// forged listings to try: `a` a symlink to `outside` before or after `a/x`, `a` a file.
struct Scene {
    remote: tempfile::TempDir,
    local: tempfile::TempDir,
    outside: PathBuf,
}

const SWAPPED: &str = "directory swapped before the fetch";

const X: &[u8] = b"authorized_keys of the attacker\n";

impl Scene {
    fn new() -> Scene {
        let remote = tempfile::tempdir().unwrap();
        fs::create_dir_all(remote.path().join("src/a")).unwrap();
        fs::create_dir_all(remote.path().join("src/b")).unwrap();
        fs::write(remote.path().join("src/a/x"), X).unwrap();
        fs::write(remote.path().join("src/b/y"), X).unwrap();
        let local = tempfile::tempdir().unwrap();
        let outside = local.path().join("outside");
        fs::create_dir(&outside).unwrap();
        Scene {
            remote,
            local,
            outside,
        }
    }

    fn listings(&self) -> Vec<(&'static str, Vec<Entry>)> {
        let directory = || entry("a", EntryKind::Directory, 0, None);
        let len = X.len() as u64;
        let link = || entry("a", EntryKind::Symlink, 0, Some(&self.outside));
        let x = || entry("a/x", EntryKind::File, len, None);
        let b = || entry("b", EntryKind::Directory, 0, None);
        let y = || entry("b/y", EntryKind::File, len, None);
        vec![
            ("symlink then file", vec![link(), x(), b(), y()]),
            ("file then symlink", vec![x(), link(), b(), y()]),
            (
                "file below a file",
                vec![entry("a", EntryKind::File, len, None), x(), b(), y()],
            ),
            (
                "directory then symlink",
                vec![directory(), link(), x(), b(), y()],
            ),
            // Honest listing; `a` is swapped for a symlink after it was created.
            (SWAPPED, vec![directory(), x(), b(), y()]),
        ]
    }

    /// Pulls every forged listing through `source`, each into a fresh destination, and checks
    /// that nothing reached `outside` and that `a/x` was refused by name (every case is tried;
    /// the failures of all are reported together).
    fn pull_all(&self, source: &mut dyn PullSource, remote_source: &str) {
        let mut failures = Vec::new();
        for (case, listing) in self.listings() {
            let destination = self
                .local
                .path()
                .join(format!("dest-{}", case.replace(' ', "-")));
            let mut forged = Forged {
                inner: &mut *source,
                listing,
                swap: (case == SWAPPED).then(|| (destination.join("a"), self.outside.clone())),
            };
            let options = CopyOptions {
                recursive: true,
                ..CopyOptions::default()
            };
            let report = pull(
                &mut forged,
                Path::new(remote_source),
                true,
                &destination,
                &options,
                |_| {},
            );
            for entry in fs::read_dir(&self.outside).unwrap() {
                let path = entry.unwrap().path();
                failures.push(format!("{case}: written outside the destination: {path:?}"));
                fs::remove_file(path).unwrap();
            }
            let report = match report {
                Ok(report) => report,
                Err(e) => {
                    failures.push(format!("{case}: the copy failed as a whole: {e}"));
                    continue;
                }
            };
            if !report.errors.iter().any(|e| e.contains("a/x")) {
                failures.push(format!("{case}: no error names a/x: {:?}", report.errors));
            }
            if fs::read(destination.join("b/y")).ok().as_deref() != Some(X) {
                failures.push(format!("{case}: the honest file b/y is missing"));
            }
            if destination.join("a/x").exists() {
                failures.push(format!("{case}: the refused file a/x is there"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}

#[test]
fn a_pull_over_serve_never_writes_through_a_listed_symlink() {
    let sshd = TestSshd::start().expect("sshd");
    let scene = Scene::new();
    let transport = choose_transport(&sshd.ssh_command(), TransportPreference::InProcess).unwrap();
    let command = format!(
        "{} serve --root {}",
        binaries::barsync().display(),
        scene.remote.path().display()
    );
    let (reader, writer, exit) = transport.open(&command).unwrap().split();
    let mut client = Client::connect(
        reader,
        writer,
        ClientOptions {
            compression: Some(3),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    scene.pull_all(&mut client, "src/");
    client.finish().unwrap();
    assert!(exit.wait().unwrap().success());
}

#[test]
fn a_pull_over_sftp_never_writes_through_a_listed_symlink() {
    let sshd = TestSshd::start().expect("sshd");
    let scene = Scene::new();
    // libssh2's sftp subsystem (the transport for hosts without an ssh program).
    let transport = Libssh2Transport::from_command_string(&sshd.ssh_command()).unwrap();
    let mut source = SftpSource::open(std::sync::Arc::new(transport)).unwrap();
    let remote_source = format!("{}/src/", scene.remote.path().display());
    scene.pull_all(&mut source, &remote_source);
}

#[test]
fn a_push_to_serve_never_writes_through_a_pushed_symlink() {
    let sshd = TestSshd::start().expect("sshd");
    let remote = tempfile::tempdir().unwrap();
    fs::create_dir(remote.path().join("dst")).unwrap();
    let outside = remote.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let local = tempfile::tempdir().unwrap();
    let file = local.path().join("x");
    fs::write(&file, X).unwrap();
    let transport = choose_transport(&sshd.ssh_command(), TransportPreference::InProcess).unwrap();
    let command = format!(
        "{} serve --root {}",
        binaries::barsync().display(),
        remote.path().join("dst").display()
    );
    let (reader, writer, exit) = transport.open(&command).unwrap().split();
    let mut client = Client::connect(reader, writer, ClientOptions::default()).unwrap();
    let items = vec![
        PushItem::Symlink {
            remote_path: "a".into(),
            target: outside.clone(),
        },
        PushItem::File {
            local: file.clone(),
            remote_path: "a/x".into(),
        },
        PushItem::Directory {
            remote_path: "a/d".into(),
            mode: 0o755,
        },
        PushItem::Remove {
            remote_path: "a/keep".into(),
        },
        PushItem::Symlink {
            remote_path: "a/l".into(),
            target: "/".into(),
        },
        PushItem::File {
            local: file,
            remote_path: "b".into(),
        },
    ];
    fs::write(outside.join("keep"), b"keep").unwrap();
    let outcomes = client.push(&items, |_| {}).unwrap();
    client.finish().unwrap();
    assert!(exit.wait().unwrap().success());
    let mut found: Vec<String> = fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    assert_eq!(found, vec!["keep"], "written outside the root");
    for outcome in &outcomes[1..5] {
        let message = outcome.result.as_ref().unwrap_err();
        assert!(
            message
                .detail
                .contains(&*outcome.remote_path.to_string_lossy())
                && message.detail.contains("symlink"),
            "{}: {message}",
            outcome.remote_path.display()
        );
    }
    assert!(outcomes[0].result.is_ok() && outcomes[5].result.is_ok());
    assert_eq!(fs::read(remote.path().join("dst/b")).unwrap(), X);
}
