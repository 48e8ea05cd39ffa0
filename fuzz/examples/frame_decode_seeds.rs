//! Writes seed inputs for the `frame_decode` target: the bytes a real `barsync serve` sends while
//! answering the client session the target runs (`engine_checks::run_client_session`), for a
//! few server trees. Run from `fuzz/`:
//! `cargo +nightly run --example frame_decode_seeds -- corpus/frame_decode`

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use barsync_fuzz::engine_checks::{run_client_session, session_basis, session_push_source};
use transfer_engine::confine::Roots;
use transfer_engine::protocol::serve;
use barsync_transport::memory_pipe;

/// Passes writes through and keeps a copy of them.
struct Tee<W> {
    inner: W,
    copy: Arc<Mutex<Vec<u8>>>,
}

impl<W: Write> Write for Tee<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.copy.lock().unwrap().extend_from_slice(&buf[..written]);
        Ok(written)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Bytes that zstd cannot shrink (a simple xorshift stream).
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

/// What the server answers when the session's remote root is `remote_root` below `root`.
/// Also returns how many of the session's requests succeeded.
fn record(root: &Path, remote_root: &Path, client_dir: &Path) -> (Vec<u8>, usize) {
    let roots = Roots::new(vec![root.to_path_buf()]).expect("roots");
    let (to_server, server_input) = memory_pipe(16);
    let (server_output, from_server) = memory_pipe(16);
    let copy = Arc::new(Mutex::new(Vec::new()));
    let tee = Tee {
        inner: server_output,
        copy: copy.clone(),
    };
    let server = std::thread::spawn(move || {
        let _ = serve(server_input, tee, &roots);
    });
    let succeeded = run_client_session(from_server, to_server, client_dir, remote_root);
    server.join().expect("server thread");
    let bytes = copy.lock().unwrap().clone();
    (bytes, succeeded)
}

fn fill(root: &Path) {
    let basis = session_basis();
    let mut new = noise(6_000, 7);
    new.extend((0..14_000u32).map(|i| (i % 97) as u8));
    let mut changed = basis.clone();
    changed[5_000..5_100].copy_from_slice(&noise(100, 3));
    changed.extend_from_slice(b"appended after the basis");
    let mut in_place = basis.clone();
    in_place[9_000..9_050].fill(b'x');
    let mut pushed = session_push_source();
    pushed.truncate(4_000);
    std::fs::write(root.join("new.bin"), new).unwrap();
    std::fs::write(root.join("changed.bin"), changed).unwrap();
    std::fs::write(root.join("inplace.bin"), in_place).unwrap();
    std::fs::write(root.join("same.bin"), &basis).unwrap();
    std::fs::write(root.join("pushed.bin"), pushed).unwrap();
    std::fs::write(root.join("old.bin"), b"to be removed").unwrap();
    std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
    std::fs::write(root.join("sub/deeper/file"), b"nested").unwrap();
    std::os::unix::fs::symlink("new.bin", root.join("link")).unwrap();
}

fn main() {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .expect("usage: frame_decode_seeds DIR"),
    );
    std::fs::create_dir_all(&out).unwrap();
    let scratch = std::env::temp_dir().join(format!("barsync-seeds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let full = scratch.join("full");
    let empty = scratch.join("empty");
    let client = scratch.join("client");
    for dir in [&full, &empty, &client] {
        std::fs::create_dir_all(dir).unwrap();
    }
    fill(&full);
    let sessions = [
        ("session-full", record(&full, &full, &client)),
        ("session-empty-root", record(&empty, &empty, &client)),
        (
            "session-missing-root",
            record(&empty, &empty.join("missing"), &client),
        ),
    ];
    for (name, (bytes, succeeded)) in &sessions {
        std::fs::write(out.join(name), bytes).unwrap();
        println!(
            "{name}: {} bytes, {succeeded} of 8 requests succeeded",
            bytes.len()
        );
    }
    let (full_session, full_succeeded) = &sessions[0].1;
    assert_eq!(
        *full_succeeded, 8,
        "every request of the full session succeeds"
    );
    // The server's Hello alone, and a Hello followed by a Fatal.
    let hello_len = 5 + u32::from_le_bytes(full_session[1..5].try_into().unwrap()) as usize;
    std::fs::write(out.join("hello-only"), &full_session[..hello_len]).unwrap();
    let mut fatal = full_session[..hello_len].to_vec();
    let message = b"server refused the session";
    fatal.push(2);
    fatal.extend_from_slice(&(4 + message.len() as u32).to_le_bytes());
    fatal.extend_from_slice(&(message.len() as u32).to_le_bytes());
    fatal.extend_from_slice(message);
    std::fs::write(out.join("hello-fatal"), fatal).unwrap();
    std::fs::remove_dir_all(&scratch).unwrap();
}
