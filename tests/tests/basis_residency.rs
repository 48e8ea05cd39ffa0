//! A large basis does not stay resident on the receiving side: with `reuse_backup = link` a
//! 1 GiB relation segment that did not change is hashed and linked, and its mapped pages must
//! be released as they are read (the passive's peak RSS would otherwise grow with the size of
//! the largest file). The sender is a real `barsync serve` subprocess, so only the receiver's
//! memory is in this process; its peak (VmHWM) is reset before each fetch.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use transfer_engine::protocol::client::ClientOptions;
use transfer_engine::protocol::{Client, FetchReport, FetchRequest};
use transfer_engine::split_file::SplitFile;

const MIB: u64 = 1 << 20;
/// Large enough that keeping it resident is unmistakable, small enough for CI.
const FILE: u64 = 256 * MIB;
/// What the receiver may hold at its peak: a released window of the map (8 MiB), buffers,
/// the signature.
const LIMIT: u64 = 112 * MIB;

fn write_noise(path: &Path, len: u64) {
    let mut file = std::io::BufWriter::new(fs::File::create(path).unwrap());
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut chunk = vec![0u8; MIB as usize];
    for _ in 0..len / MIB {
        for word in chunk.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        file.write_all(&chunk).unwrap();
    }
    file.flush().unwrap();
}

/// The tests measure this process's memory: one at a time.
static MEASURING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Resets this process's peak resident set size to its current size.
fn reset_peak() {
    fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM");
}

/// (VmHWM, VmRSS) of this process, bytes.
fn memory() -> (u64, u64) {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
            .unwrap()
            * 1024
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Fetches `requests` from a `barsync serve --root root` subprocess.
fn fetch(
    root: &Path,
    requests: &[FetchRequest],
) -> Vec<Result<FetchReport, transfer_engine::FileError>> {
    let mut child = Command::new(barsync_tests::binaries::barsync())
        .args(["serve", "--root"])
        .arg(root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start barsync serve");
    let mut client = Client::connect(
        child.stdout.take().unwrap(),
        child.stdin.take().unwrap(),
        ClientOptions {
            compression: Some(3),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    let outcomes = client.fetch(requests, |_| {}).unwrap();
    client.finish().unwrap();
    assert!(child.wait().unwrap().success());
    outcomes.into_iter().map(|o| o.result).collect()
}

fn request(root: &Path, basis: &Path, destination: &Path) -> FetchRequest {
    FetchRequest {
        remote_path: root.join("segment"),
        destination: transfer_engine::confine::Destination::trusted(destination).unwrap(),
        basis: Some(basis.to_path_buf()),
        max_len: Some(FILE),
        partial: None,
        target: transfer_engine::protocol::FetchTarget::WholeFile(
            transfer_engine::protocol::WriteMode::LinkIdentical,
        ),
    }
}

/// A primary's `segment` of [`FILE`] bytes, the same file as the basis in `old`, and an empty
/// `new`: (their directory, root, old, new).
fn primary_with_basis() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let dir = tempfile::tempdir().unwrap();
    let (root, old, new) = (
        dir.path().join("primary"),
        dir.path().join("old"),
        dir.path().join("new"),
    );
    for d in [&root, &old, &new] {
        fs::create_dir_all(d).unwrap();
    }
    write_noise(&root.join("segment"), FILE);
    fs::copy(root.join("segment"), old.join("segment")).unwrap();
    (dir, root, old, new)
}

#[test]
fn an_identical_large_file_is_linked_without_keeping_its_basis_resident() {
    let _alone = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let (_dir, root, old, new) = primary_with_basis();

    // Whole file, one session.
    reset_peak();
    let (_, before) = memory();
    let report = fetch(
        &root,
        &[request(&root, &old.join("segment"), &new.join("whole"))],
    )
    .remove(0)
    .unwrap();
    let (peak, _) = memory();
    assert!(report.linked);
    assert!(
        peak - before < LIMIT,
        "linking a {} MiB file raised the peak RSS by {} MiB",
        FILE / MIB,
        (peak - before) / MIB
    );

    // In parts of 64 MiB, then linked by the split file.
    let split = SplitFile::new(
        transfer_engine::confine::Destination::trusted(&new.join("split")).unwrap(),
        FILE,
        Some(old.join("segment")),
        None,
        true,
    );
    let requests: Vec<FetchRequest> = split
        .parts(64 * MIB)
        .into_iter()
        .map(|part| FetchRequest {
            max_len: Some(part.len),
            target: transfer_engine::protocol::FetchTarget::Part(part),
            ..request(&root, &old.join("segment"), &new.join("split"))
        })
        .collect();
    reset_peak();
    let (_, before) = memory();
    for result in fetch(&root, &requests) {
        result.unwrap();
    }
    assert!(split.finish().unwrap().linked);
    let (peak, _) = memory();
    assert!(
        peak - before < LIMIT,
        "linking a {} MiB file in parts raised the peak RSS by {} MiB",
        FILE / MIB,
        (peak - before) / MIB
    );
}

/// A split file whose parts are mostly identical to the basis, one changed: assembling it
/// copies the identical parts from the basis into the new file, and those pages must be
/// released as they are copied (a 128 MiB part used to be resident whole: W7's passive peaked
/// at 130 MiB with a 130 MiB relation in two parts).
#[test]
fn assembling_parts_identical_to_the_basis_does_not_keep_it_resident() {
    let _alone = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let (_dir, root, old, new) = primary_with_basis();
    // The second half changes; the first half stays as in the basis.
    {
        use std::os::unix::fs::FileExt;
        let file = fs::OpenOptions::new()
            .write(true)
            .open(root.join("segment"))
            .unwrap();
        file.write_all_at(&[0xA5; 4096], FILE - MIB).unwrap();
    }
    let split = SplitFile::new(
        transfer_engine::confine::Destination::trusted(&new.join("split")).unwrap(),
        FILE,
        Some(old.join("segment")),
        None,
        true,
    );
    let requests: Vec<FetchRequest> = split
        .parts(FILE / 2)
        .into_iter()
        .map(|part| FetchRequest {
            max_len: Some(part.len),
            target: transfer_engine::protocol::FetchTarget::Part(part),
            ..request(&root, &old.join("segment"), &new.join("split"))
        })
        .collect();
    // Receiving the changed half copies its unchanged 127 MiB prefix from the basis.
    reset_peak();
    let (_, before) = memory();
    for result in fetch(&root, &requests) {
        result.unwrap();
    }
    let (peak, _) = memory();
    assert!(
        peak - before < 64 * MIB,
        "receiving two {} MiB parts against the basis raised the peak RSS by {} MiB",
        FILE / 2 / MIB,
        (peak - before) / MIB
    );
    reset_peak();
    let (_, before) = memory();
    let report = split.finish().unwrap();
    let (peak, _) = memory();
    assert!(!report.linked);
    assert_eq!(
        fs::read(new.join("split")).unwrap(),
        fs::read(root.join("segment")).unwrap()
    );
    assert!(
        peak - before < 64 * MIB,
        "assembling a {} MiB file from the basis raised the peak RSS by {} MiB",
        FILE / MIB,
        (peak - before) / MIB
    );
}

/// Two sessions signing the two halves of one large basis at once (parts of a split file, as
/// a passive's `parallel_jobs` sessions do) hold only a small released window each: with
/// windows of 32 MiB the pair held 64 MiB of the basis (W7's peak RSS: 77 MiB).
#[test]
fn signing_parts_of_a_basis_at_once_keeps_a_small_window_each() {
    use transfer_engine::signature::signature_of_map_range;
    use transfer_engine::{MappedFile, SignatureOptions};
    let _alone = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("basis");
    write_noise(&path, FILE);
    let map = MappedFile::from_file(&fs::File::open(&path).unwrap()).unwrap();
    let half = (FILE / 2) as usize;
    reset_peak();
    let (_, before) = memory();
    std::thread::scope(|scope| {
        for range in [0..half, half..2 * half] {
            let map = &map;
            scope.spawn(move || {
                let options = SignatureOptions {
                    parallel: true,
                    ..SignatureOptions::default()
                };
                signature_of_map_range(map, range, &options)
            });
        }
    });
    let (peak, _) = memory();
    assert!(
        peak - before < 40 * MIB,
        "signing two {} MiB halves at once raised the peak RSS by {} MiB",
        half as u64 / MIB,
        (peak - before) / MIB
    );
}
