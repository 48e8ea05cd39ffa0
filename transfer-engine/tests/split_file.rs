//! Split files: one remote file fetched in parts over several concurrent sessions, assembled,
//! verified part by part, and published once; linked when every part matches the basis;
//! refused when the sender's file changes between parts or a part is missing.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;

use barsync_transport::memory_pipe;
use common::random_bytes;
use transfer_engine::confine::Roots;
use transfer_engine::protocol::client::ClientOptions;
use transfer_engine::protocol::{serve, Client, FetchReport, FetchRequest};
use transfer_engine::split_file::{FilePart, SplitFile};
use transfer_engine::FileError;

const MIB: usize = 1 << 20;

/// A connected client and its server thread, serving `root`.
struct Session {
    client: Client<barsync_transport::PipeReader, barsync_transport::PipeWriter>,
    server: thread::JoinHandle<()>,
}

fn session(root: &Path) -> Session {
    let (to_server, server_in) = memory_pipe(1 << 20);
    let (server_out, from_server) = memory_pipe(1 << 20);
    let roots = Roots::new(vec![root.to_path_buf()]).unwrap();
    let server = thread::spawn(move || {
        serve(server_in, server_out, &roots).unwrap();
    });
    let client = Client::connect(
        from_server,
        to_server,
        ClientOptions {
            compression: Some(3),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    assert!(client.supports_parts());
    Session { client, server }
}

fn part_request(name: &str, part: &FilePart) -> FetchRequest {
    FetchRequest {
        remote_path: name.into(),
        destination: part.file.destination().clone(),
        basis: part.file.basis().map(Path::to_path_buf),
        max_len: Some(part.len),
        partial: None,
        target: transfer_engine::protocol::FetchTarget::Part(part.clone()),
    }
}

/// Fetches `parts` of `name` over `sessions` concurrent sessions, part `i` on session
/// `i % sessions`; one result per part, in order.
fn fetch_parts(
    root: &Path,
    name: &str,
    parts: &[FilePart],
    sessions: usize,
) -> Vec<Result<FetchReport, FileError>> {
    let mut results: Vec<Option<Result<FetchReport, FileError>>> = vec![None; parts.len()];
    thread::scope(|scope| {
        let workers: Vec<_> = (0..sessions)
            .map(|s| {
                let mine: Vec<(usize, FetchRequest)> = parts
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| i % sessions == s)
                    .map(|(i, part)| (i, part_request(name, part)))
                    .collect();
                scope.spawn(move || {
                    let Session { mut client, server } = session(root);
                    let requests: Vec<FetchRequest> = mine.iter().map(|(_, r)| r.clone()).collect();
                    let outcomes = client.fetch(&requests, |_| {}).unwrap();
                    client.finish().unwrap();
                    server.join().unwrap();
                    outcomes
                        .into_iter()
                        .map(|o| (mine[o.index].0, o.result))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for worker in workers {
            for (index, result) in worker.join().unwrap() {
                results[index] = Some(result);
            }
        }
    });
    results.into_iter().map(Option::unwrap).collect()
}

struct Dirs {
    _temp: tempfile::TempDir,
    server: PathBuf,
    old: PathBuf,
    new: PathBuf,
}

fn dirs() -> Dirs {
    let temp = tempfile::tempdir().unwrap();
    let (server, old, new) = (
        temp.path().join("server"),
        temp.path().join("old"),
        temp.path().join("new"),
    );
    for d in [&server, &old, &new] {
        fs::create_dir_all(d).unwrap();
    }
    Dirs {
        _temp: temp,
        server,
        old,
        new,
    }
}

/// Names in `dir` other than `except`: temporary or partial files left behind.
fn leftovers(dir: &Path, except: &[&str]) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !except.contains(&name.as_str()))
        .collect()
}

#[test]
fn parts_fetched_over_three_sessions_assemble_the_file_against_a_basis() {
    let d = dirs();
    let new = random_bytes(7 * MIB + 12_345, 1);
    let mut old = new.clone();
    for at in [10, 2 * MIB + 7, 5 * MIB, 7 * MIB + 100] {
        old[at] ^= 0x5a;
    }
    old.truncate(6 * MIB); // the new file also grew
    fs::write(d.server.join("seg"), &new).unwrap();
    fs::write(d.old.join("seg"), &old).unwrap();
    let split = SplitFile::new(
        transfer_engine::confine::Destination::trusted(&d.new.join("seg")).unwrap(),
        new.len() as u64,
        Some(d.old.join("seg")),
        Some(d.new.join("seg.partial")),
        false,
    );
    let parts = split.parts(MIB as u64);
    assert_eq!(parts.len(), 8);
    let results = fetch_parts(&d.server, "seg", &parts, 3);
    let reports: Vec<FetchReport> = results.into_iter().map(Result::unwrap).collect();
    let total: u64 = reports.iter().map(|r| r.len).sum();
    assert_eq!(total, new.len() as u64);
    let reused: u64 = reports.iter().map(|r| r.reused_bytes).sum();
    let received: u64 = reports.iter().map(|r| r.received_bytes).sum();
    assert!(
        reused > 5 * MIB as u64,
        "most of the old bytes are reused, got {reused}"
    );
    assert!(
        received < 2 * MIB as u64,
        "only the changes and the growth cross, got {received}"
    );
    assert!(
        !d.new.join("seg").exists(),
        "nothing published before finish"
    );
    let report = split.finish().unwrap();
    assert!(!report.linked);
    assert_eq!(fs::read(d.new.join("seg")).unwrap(), new);
    let (source, copy) = (
        fs::metadata(d.server.join("seg")).unwrap(),
        fs::metadata(d.new.join("seg")).unwrap(),
    );
    assert_eq!(
        (copy.mtime(), copy.mtime_nsec(), copy.mode() & 0o7777),
        (source.mtime(), source.mtime_nsec(), source.mode() & 0o7777)
    );
    assert_eq!(leftovers(&d.new, &["seg"]), Vec::<String>::new());
}

#[test]
fn a_file_without_basis_is_fetched_whole_in_parts() {
    let d = dirs();
    let new = random_bytes(3 * MIB + 1, 2);
    fs::write(d.server.join("f"), &new).unwrap();
    let split = SplitFile::new(
        transfer_engine::confine::Destination::trusted(&d.new.join("f")).unwrap(),
        new.len() as u64,
        None,
        None,
        true,
    );
    let parts = split.parts(MIB as u64);
    assert_eq!(parts.last().unwrap().len, 1);
    for result in fetch_parts(&d.server, "f", &parts, 2) {
        result.unwrap();
    }
    assert!(!split.finish().unwrap().linked);
    assert_eq!(fs::read(d.new.join("f")).unwrap(), new);
}

#[test]
fn linking_shares_the_basis_only_when_every_part_matches_it() {
    let d = dirs();
    let data = random_bytes(4 * MIB, 3);
    fs::write(d.server.join("same"), &data).unwrap();
    fs::write(d.old.join("same"), &data).unwrap();
    let mut changed = data.clone();
    changed[3 * MIB + 17] ^= 1;
    fs::write(d.server.join("changed"), &changed).unwrap();
    fs::write(d.old.join("changed"), &data).unwrap();

    let same = SplitFile::new(
        transfer_engine::confine::Destination::trusted(&d.new.join("same")).unwrap(),
        data.len() as u64,
        Some(d.old.join("same")),
        None,
        true,
    );
    let parts = same.parts(MIB as u64);
    for result in fetch_parts(&d.server, "same", &parts, 2) {
        assert_eq!(result.unwrap().reused_bytes, MIB as u64);
    }
    assert!(same.finish().unwrap().linked);
    assert_eq!(
        fs::metadata(d.new.join("same")).unwrap().ino(),
        fs::metadata(d.old.join("same")).unwrap().ino()
    );

    let split = SplitFile::new(
        transfer_engine::confine::Destination::trusted(&d.new.join("changed")).unwrap(),
        changed.len() as u64,
        Some(d.old.join("changed")),
        None,
        true,
    );
    let parts = split.parts(MIB as u64);
    for result in fetch_parts(&d.server, "changed", &parts, 2) {
        result.unwrap();
    }
    assert!(!split.finish().unwrap().linked);
    assert_eq!(fs::read(d.new.join("changed")).unwrap(), changed);
    assert_eq!(
        fs::read(d.old.join("changed")).unwrap(),
        data,
        "basis untouched"
    );
    assert_ne!(
        fs::metadata(d.new.join("changed")).unwrap().ino(),
        fs::metadata(d.old.join("changed")).unwrap().ino()
    );
    assert_eq!(
        leftovers(&d.new, &["same", "changed"]),
        Vec::<String>::new()
    );
}

#[test]
fn parts_of_different_versions_of_a_file_are_never_assembled() {
    let d = dirs();
    let data = random_bytes(2 * MIB, 4);
    let path = d.server.join("f");
    fs::write(&path, &data).unwrap();
    let split = SplitFile::new(
        transfer_engine::confine::Destination::trusted(&d.new.join("f")).unwrap(),
        data.len() as u64,
        None,
        None,
        false,
    );
    let parts = split.parts(MIB as u64);
    fetch_parts(&d.server, "f", &parts[..1], 1)
        .pop()
        .unwrap()
        .unwrap();
    // The sender's file is rewritten (same length, new mtime) before the second part.
    let file = fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000))
        .unwrap();
    drop(file);
    let second = fetch_parts(&d.server, "f", &parts[1..], 1).pop().unwrap();
    let message = second.unwrap_err();
    assert!(
        message
            .detail
            .contains("changed while its parts were fetched"),
        "{message}"
    );
    let refused = split.finish().unwrap_err();
    assert!(refused.detail.contains("changed"), "{refused}");
    assert!(!d.new.join("f").exists());

    // A file that grew since it was listed is refused too.
    let listed_shorter = SplitFile::new(
        transfer_engine::confine::Destination::trusted(&d.new.join("g")).unwrap(),
        data.len() as u64 - 1,
        None,
        None,
        false,
    );
    let message = fetch_parts(&d.server, "f", &listed_shorter.parts(MIB as u64), 1)
        .remove(0)
        .unwrap_err();
    assert!(message.detail.contains("it changed"), "{message}");
}

#[test]
fn a_missing_part_blocks_publishing_and_what_arrived_is_kept_as_partial() {
    let d = dirs();
    let data = random_bytes(3 * MIB, 5);
    fs::write(d.server.join("f"), &data).unwrap();
    let partial = d.new.join("f.partial");
    let split = SplitFile::new(
        transfer_engine::confine::Destination::trusted(&d.new.join("f")).unwrap(),
        data.len() as u64,
        None,
        Some(partial.clone()),
        false,
    );
    let parts = split.parts(MIB as u64);
    fetch_parts(&d.server, "f", &parts[..2], 2)
        .into_iter()
        .for_each(|r| drop(r.unwrap()));
    let message = split.finish().unwrap_err();
    assert!(
        message.detail.contains("parts missing from byte 2097152"),
        "{message}"
    );
    assert!(!d.new.join("f").exists());
    drop(parts);
    drop(Arc::try_unwrap(split).expect("the only handle"));
    let kept = fs::read(&partial).unwrap();
    assert_eq!(&kept[..2 * MIB], &data[..2 * MIB]);
    assert_eq!(leftovers(&d.new, &["f.partial"]), Vec::<String>::new());
}
