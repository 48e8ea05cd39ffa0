//! `barsync serve` on the far side of a real sshd, reached through each SSH transport.

use std::fs;
use std::path::Path;

use barsync_tests::{binaries, sshd::TestSshd};
use barsync_transport::{choose_transport, TransportPreference};
use transfer_engine::protocol::client::ClientOptions;
use transfer_engine::protocol::{Client, EntryKind, FetchRequest};

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn fetch_tree(
    client: &mut Client<impl std::io::Read, impl std::io::Write + Send>,
    remote: &Path,
    local: &Path,
) -> Vec<u64> {
    let listing = client.list(remote, true).unwrap().unwrap();
    for dir in listing.iter().filter(|e| e.kind == EntryKind::Directory) {
        fs::create_dir_all(local.join(dir.path.as_path())).unwrap();
    }
    let requests: Vec<FetchRequest> = listing
        .iter()
        .filter(|e| e.kind == EntryKind::File)
        .map(|e| FetchRequest {
            remote_path: remote.join(e.path.as_path()),
            destination: transfer_engine::confine::Destination::trusted(
                &local.join(e.path.as_path()),
            )
            .unwrap(),
            basis: Some(local.join(e.path.as_path())),
            max_len: Some(e.size),
            partial: None,
            target: transfer_engine::protocol::FetchTarget::NEW_FILE,
        })
        .collect();
    let outcomes = client.fetch(&requests, |_| {}).unwrap();
    outcomes
        .into_iter()
        .map(|o| o.result.unwrap().received_bytes)
        .collect()
}

fn round_trip(preference: TransportPreference) {
    let sshd = TestSshd::start().expect("sshd");
    let remote = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    fs::create_dir_all(remote.path().join("base/data")).unwrap();
    let big = pseudo_random(4 << 20, 7);
    fs::write(remote.path().join("base/data/16384"), &big).unwrap();
    for i in 0..50 {
        fs::write(
            remote.path().join(format!("base/data/small{i}")),
            pseudo_random(3000, i),
        )
        .unwrap();
    }

    let transport = choose_transport(&sshd.ssh_command(), preference).unwrap();
    let command = format!(
        "{} serve --root {}",
        binaries::barsync().display(),
        remote.path().display()
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

    let first = fetch_tree(&mut client, remote.path(), local.path());
    assert_eq!(first.len(), 51);
    assert_eq!(fs::read(local.path().join("base/data/16384")).unwrap(), big);

    let mut changed = big.clone();
    changed[2_000_000..2_000_100].fill(0);
    fs::write(remote.path().join("base/data/16384"), &changed).unwrap();
    let second = fetch_tree(&mut client, remote.path(), local.path());
    assert_eq!(
        fs::read(local.path().join("base/data/16384")).unwrap(),
        changed
    );
    let total: u64 = second.iter().sum();
    assert!(
        total < 200_000,
        "resync of unchanged files and one changed page sent {total} bytes"
    );

    client.finish().unwrap();
    let status = exit.wait().unwrap();
    assert!(
        status.success(),
        "barsync serve exited with {status:?}: {}",
        status.stderr_text()
    );
}

#[test]
fn protocol_over_libssh2() {
    round_trip(TransportPreference::InProcess);
}

#[test]
fn protocol_over_ssh_subprocess() {
    round_trip(TransportPreference::Subprocess);
}

/// The link probe through a real sshd: on loopback the session measures a fast link and asks
/// for level 1; through the shaping proxy (40 ms round trip, 100 Mbit/s) it keeps level 3.
/// Each session fetches a new file of `PROBE_WORTH` bytes (zeros, sparse), which is worth a probe.
#[test]
fn the_level_follows_the_link_measured_through_ssh() {
    use barsync_tests::proxy::{LinkShape, ShapingProxy};
    use transfer_engine::protocol::probe::{FAST_LINK, FAST_LINK_LEVEL, PROBE_WORTH};

    let sshd = TestSshd::start().expect("sshd");
    let remote = tempfile::tempdir().unwrap();
    fs::File::create(remote.path().join("zeros"))
        .unwrap()
        .set_len(PROBE_WORTH)
        .unwrap();
    let command = format!(
        "{} serve --root {}",
        binaries::barsync().display(),
        remote.path().display()
    );
    let proxy = ShapingProxy::start(
        format!("127.0.0.1:{}", sshd.port()).parse().unwrap(),
        LinkShape::default(),
    )
    .unwrap();
    let shaped = sshd.ssh_command_via(proxy.port()).unwrap();
    let options = ClientOptions {
        compression: Some(3),
        adapt_compression: true,
    };
    let probe = |ssh: &str| {
        let transport = choose_transport(ssh, TransportPreference::Subprocess).unwrap();
        let (reader, writer, exit) = transport.open(&command).unwrap().split();
        let mut client = Client::connect(reader, writer, options).unwrap();
        let local = tempfile::tempdir().unwrap();
        let destination = local.path().join("zeros");
        let request = FetchRequest {
            remote_path: remote.path().join("zeros"),
            destination: transfer_engine::confine::Destination::trusted(&destination).unwrap(),
            basis: None,
            max_len: Some(PROBE_WORTH),
            partial: None,
            target: transfer_engine::protocol::FetchTarget::NEW_FILE,
        };
        let outcomes = client.fetch(&[request], |_| {}).unwrap();
        outcomes[0].result.as_ref().unwrap();
        assert_eq!(fs::metadata(&destination).unwrap().len(), PROBE_WORTH);
        let seen = (
            client.link_speed().expect("probed").bytes_per_second(),
            client.compression(),
        );
        client.finish().unwrap();
        assert!(exit.wait().unwrap().success());
        seen
    };
    // Loopback measures 120-160 MB/s here; a busy machine can stall one probe's few
    // milliseconds, so a few sessions are allowed.
    let loopback: Vec<_> = (0..5).map(|_| probe(&sshd.ssh_command())).collect();
    assert!(
        loopback
            .iter()
            .any(|&(speed, level)| speed >= FAST_LINK && level == Some(FAST_LINK_LEVEL)),
        "loopback: {loopback:?}"
    );
    assert!(
        loopback
            .iter()
            .all(|&(speed, level)| (speed >= FAST_LINK) == (level == Some(FAST_LINK_LEVEL))),
        "loopback: {loopback:?}"
    );
    let wan = probe(&shaped);
    assert!(wan.0 < FAST_LINK && wan.1 == Some(3), "100 Mbit/s: {wan:?}");
}
