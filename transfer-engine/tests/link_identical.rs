//! `link_identical` (Barman's `reuse_backup = link`): a file identical to its basis becomes a
//! hard link to the basis without a byte written; any difference, anywhere, gives a verified
//! copy and leaves the basis untouched.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::thread;

use barsync_transport::memory_pipe;
use common::random_bytes;
use transfer_engine::confine::Roots;
use transfer_engine::protocol::client::ClientOptions;
use transfer_engine::protocol::{serve, Client, FetchReport, FetchRequest};
use transfer_engine::FileError;

/// Fetches `names` from `server_root` into `destination`, each against the same name in
/// `basis_dir`, with `link_identical`.
fn fetch_linking(
    server_root: &Path,
    basis_dir: &Path,
    destination: &Path,
    names: &[&str],
) -> Vec<Result<FetchReport, FileError>> {
    let (to_server, server_in) = memory_pipe(1 << 20);
    let (server_out, from_server) = memory_pipe(1 << 20);
    let roots = Roots::new(vec![server_root.to_path_buf()]).unwrap();
    let server = thread::spawn(move || serve(server_in, server_out, &roots).map(drop));
    let mut client = Client::connect(
        from_server,
        to_server,
        ClientOptions {
            compression: Some(3),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    let requests: Vec<FetchRequest> = names
        .iter()
        .map(|name| FetchRequest {
            remote_path: name.into(),
            destination: transfer_engine::confine::Destination::trusted(&destination.join(name))
                .unwrap(),
            basis: Some(basis_dir.join(name)),
            max_len: None,
            partial: None,
            target: transfer_engine::protocol::FetchTarget::WholeFile(
                transfer_engine::protocol::WriteMode::LinkIdentical,
            ),
        })
        .collect();
    let outcomes = client.fetch(&requests, |_| {}).unwrap();
    client.finish().unwrap();
    server.join().unwrap().unwrap();
    outcomes.into_iter().map(|o| o.result).collect()
}

#[test]
fn identical_files_are_linked_and_others_copied() {
    let dir = tempfile::tempdir().unwrap();
    let (server, old, new) = (
        dir.path().join("server"),
        dir.path().join("old"),
        dir.path().join("new"),
    );
    for d in [&server, &old, &new] {
        fs::create_dir_all(d).unwrap();
    }
    let same = random_bytes(3 << 20, 1);
    let mut changed_middle = same.clone();
    changed_middle[1 << 20] ^= 1;
    let mut changed_first = same.clone();
    changed_first[0] ^= 1;
    let cases: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
        ("same", same.clone(), same.clone()),
        ("empty", Vec::new(), Vec::new()),
        ("middle", same.clone(), changed_middle.clone()),
        ("first", same.clone(), changed_first.clone()),
        ("shorter", same.clone(), same[..same.len() - 5].to_vec()),
        (
            "longer",
            same.clone(),
            [same.clone(), b"tail".to_vec()].concat(),
        ),
        ("prefix_blocks", same.clone(), same[..1 << 20].to_vec()),
    ];
    for (name, basis, sent) in &cases {
        fs::write(old.join(name), basis).unwrap();
        fs::write(server.join(name), sent).unwrap();
    }
    let names: Vec<&str> = cases.iter().map(|(n, _, _)| *n).collect();
    let results = fetch_linking(&server, &old, &new, &names);
    for ((name, basis, sent), result) in cases.iter().zip(&results) {
        let report = result.as_ref().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&fs::read(new.join(name)).unwrap(), sent, "{name}: content");
        assert_eq!(
            &fs::read(old.join(name)).unwrap(),
            basis,
            "{name}: basis untouched"
        );
        let shared = fs::metadata(new.join(name)).unwrap().ino()
            == fs::metadata(old.join(name)).unwrap().ino();
        let identical = basis == sent;
        assert_eq!(report.linked, identical, "{name}: linked");
        assert_eq!(shared, identical, "{name}: same inode");
    }
    let leftovers: Vec<_> = fs::read_dir(&new)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn a_file_already_in_place_is_verified_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (server, local) = (dir.path().join("server"), dir.path().join("local"));
    fs::create_dir_all(&server).unwrap();
    fs::create_dir_all(&local).unwrap();
    let data = random_bytes(1 << 20, 7);
    fs::write(server.join("f"), &data).unwrap();
    fs::write(local.join("f"), &data).unwrap();
    let inode = fs::metadata(local.join("f")).unwrap().ino();
    let results = fetch_linking(&server, &local, &local, &["f"]);
    let report = results[0].as_ref().unwrap();
    assert!(report.linked);
    assert_eq!(fs::metadata(local.join("f")).unwrap().ino(), inode);
    assert_eq!(fs::read(local.join("f")).unwrap(), data);
    assert_eq!(
        fs::read_dir(&local).unwrap().count(),
        1,
        "nothing else created"
    );
}

/// A retry of a file whose link was already published: the destination already is a link to
/// the basis's inode, so renaming the new temporary link over it is a no-op (POSIX) that
/// would leave the temporary name behind.
#[test]
fn linking_again_over_the_same_inode_leaves_no_temporary_name() {
    let dir = tempfile::tempdir().unwrap();
    let (server, old, new) = (
        dir.path().join("server"),
        dir.path().join("old"),
        dir.path().join("new"),
    );
    for d in [&server, &old, &new] {
        fs::create_dir_all(d).unwrap();
    }
    let data = random_bytes(1 << 20, 11);
    fs::write(server.join("f"), &data).unwrap();
    fs::write(old.join("f"), &data).unwrap();
    for round in 0..2 {
        let results = fetch_linking(&server, &old, &new, &["f"]);
        assert!(results[0].as_ref().unwrap().linked, "round {round}");
        assert_eq!(
            fs::metadata(new.join("f")).unwrap().ino(),
            fs::metadata(old.join("f")).unwrap().ino()
        );
        let names: Vec<String> = fs::read_dir(&new)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["f".to_owned()], "round {round}: {names:?}");
    }
}
