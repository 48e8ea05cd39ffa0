//! A file truncated while it is mapped (a source shrinking under the sender, a basis shrinking
//! under the patcher) is reported as changed; it does not kill the process with SIGBUS.

mod common;

use std::fs;

use common::{random_bytes, sign};
use transfer_engine::delta::{CollectOps, Op};
use transfer_engine::{delta_with, DeltaOptions, DeltaSink, MappedFile, Patcher};

fn truncate(path: &std::path::Path, len: u64) {
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

#[test]
fn a_map_of_a_file_truncated_under_it_reads_zeros_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("file");
    let data = random_bytes(1 << 20, 1);
    fs::write(&path, &data).unwrap();
    let map = MappedFile::open(&path).unwrap();
    assert_eq!(map[100], data[100]);
    assert!(!map.changed());
    truncate(&path, 8192);
    // Pages past the new end read as zeros instead of raising SIGBUS.
    assert!(map[500_000..].iter().all(|&b| b == 0));
    assert!(map.faulted());
    assert!(map.changed());
    // Pages before the new end still read the file.
    assert_eq!(map[..8192], data[..8192]);
    drop(map);
    // A new map of the same file is a fresh start.
    let again = MappedFile::open(&path).unwrap();
    assert_eq!(again.len(), 8192);
    assert!(!again.faulted() && !again.changed());
}

#[test]
fn a_file_rewritten_in_place_while_mapped_is_changed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("file");
    fs::write(&path, random_bytes(100_000, 2)).unwrap();
    let map = MappedFile::open(&path).unwrap();
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(later)
        .unwrap();
    assert!(!map.faulted());
    assert!(map.changed());
}

#[test]
fn a_basis_truncated_during_a_patch_fails_the_patch_not_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("basis");
    let basis = random_bytes(4 << 20, 3);
    fs::write(&path, &basis).unwrap();
    let mut new = basis.clone();
    new[1_000_000] ^= 1;
    let map = MappedFile::open(&path).unwrap();
    let signature = sign(&map, Some(8192));
    let mut ops = CollectOps::default();
    let summary = delta_with(&new, &signature, &mut ops, &DeltaOptions::default()).unwrap();
    truncate(&path, 1 << 20);
    let mut patcher = Patcher::new(
        &map,
        &signature,
        summary.digest_block_size,
        Vec::new(),
        Some(summary.new_len),
    )
    .unwrap()
    .releasing(Some(&map));
    let applied: Result<(), _> = ops.0.iter().try_for_each(|op| match op {
        Op::Copy { first, count } => patcher.copy(*first, *count),
        Op::Literal(data) => patcher.literal(data),
    });
    let finished = applied.and_then(|()| patcher.finish(summary.new_len, &summary.digest));
    assert!(
        finished.is_err(),
        "the zeros read past the new end do not verify"
    );
    assert!(map.faulted());
}

/// In a child process (this test binary run again): with the handler installed by a registered
/// map, reads a truncated file through a map that is not registered.
fn fault_outside_registered_maps() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("file");
    fs::write(&path, random_bytes(1 << 20, 4)).unwrap();
    let registered = MappedFile::open(&path).unwrap();
    let file = fs::File::open(&path).unwrap();
    // SAFETY: the point of the test: this map is truncated under it, and the read faults.
    let unregistered = unsafe { memmap2::Mmap::map(&file).unwrap() };
    truncate(&path, 4096);
    let byte = std::hint::black_box(&unregistered[600_000]);
    println!(
        "read {byte} without a fault; registered: {}",
        registered.len()
    );
}

#[test]
fn a_fault_outside_registered_maps_still_kills_the_process() {
    if std::env::var_os("BARSYNC_FAULT_CHILD").is_some() {
        fault_outside_registered_maps();
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_fault_outside_registered_maps_still_kills_the_process",
            "--nocapture",
        ])
        .env("BARSYNC_FAULT_CHILD", "1")
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGBUS),
        "{:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
}
