//! Writes seed inputs for the `sftp_reply_decode` target: the bytes OpenSSH's `sftp-server`
//! sends while answering the SFTP session the target runs (`engine_checks::run_sftp_session`),
//! for a full tree, an empty one and a missing one. Run from `fuzz/`:
//! `cargo +nightly run --example sftp_seeds -- corpus/sftp_reply_decode [SFTP-SERVER]`
//! (default `/usr/lib/openssh/sftp-server`).

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use barsync_fuzz::engine_checks::{run_sftp_session, session_basis, session_push_source};

/// Passes reads through and keeps a copy of them.
struct Tee<R> {
    inner: R,
    copy: Arc<Mutex<Vec<u8>>>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.copy.lock().unwrap().extend_from_slice(&buf[..read]);
        Ok(read)
    }
}

/// What the server answers when the session's remote root is `remote_root`; also how many of
/// the session's requests succeeded.
fn record(server: &Path, remote_root: &Path, client_dir: &Path) -> (Vec<u8>, usize) {
    let mut child = Command::new(server)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("running sftp-server");
    let copy = Arc::new(Mutex::new(Vec::new()));
    let input = Tee {
        inner: child.stdout.take().unwrap(),
        copy: copy.clone(),
    };
    let output = child.stdin.take().unwrap();
    let succeeded = run_sftp_session(Box::new(input), Box::new(output), client_dir, remote_root);
    let _ = child.wait();
    let bytes = copy.lock().unwrap().clone();
    (bytes, succeeded)
}

fn fill(root: &Path) {
    let basis = session_basis();
    let mut changed = basis.clone();
    changed[5_000..5_100].fill(b'y');
    std::fs::write(root.join("new.bin"), session_push_source()).unwrap();
    std::fs::write(root.join("changed.bin"), changed).unwrap();
    std::fs::write(root.join("same.bin"), &basis).unwrap();
    std::fs::write(root.join("old.bin"), b"to be removed").unwrap();
    std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
    std::fs::write(root.join("sub/deeper/file"), b"nested").unwrap();
    std::os::unix::fs::symlink("new.bin", root.join("link")).unwrap();
}

fn main() {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(args.next().expect("usage: sftp_seeds DIR [SFTP-SERVER]"));
    let server =
        PathBuf::from(args.next().unwrap_or_else(|| "/usr/lib/openssh/sftp-server".into()));
    std::fs::create_dir_all(&out).unwrap();
    let scratch = std::env::temp_dir().join(format!("barsync-sftp-seeds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let full = scratch.join("full");
    let empty = scratch.join("empty");
    let client = scratch.join("client");
    for dir in [&full, &empty, &client] {
        std::fs::create_dir_all(dir).unwrap();
    }
    fill(&full);
    let sessions = [
        ("session-full", record(&server, &full, &client)),
        ("session-empty-root", record(&server, &empty, &client)),
        (
            "session-missing-root",
            record(&server, &empty.join("missing"), &client),
        ),
    ];
    for (name, (bytes, succeeded)) in &sessions {
        std::fs::write(out.join(name), bytes).unwrap();
        println!("{name}: {} bytes, {succeeded} of 7 requests succeeded", bytes.len());
    }
    assert_eq!(
        sessions[0].1 .1, 7,
        "every request of the full session succeeds"
    );
    let _ = std::fs::remove_dir_all(&scratch);
}
