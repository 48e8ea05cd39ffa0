//! Very large files split into parts shared by the sessions (`--part-size`), against the
//! fixture Barman primary behind a real sshd: the parts are delta-transferred against the older
//! backup, assembled, verified and published; identical files are still linked with
//! `reuse_backup = link`; and a cut in the middle leaves the parts received so far as the basis
//! of the next run.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use barsync_tests::noise::incompressible;
use barsync_tests::passive_rig::{describe, fixture_primary, PassiveRig, RigOptions};
use serde_json::Value;

const OLDER: &str = "20240101T120000";
const NEWER: &str = "20240102T120000";
const MIB: usize = 1 << 20;

/// Deterministic incompressible bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    incompressible(len, seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
}

/// Where a relation file of backup `id` lives on the fixture primary.
fn primary_file(primary: &Path, id: &str, name: &str) -> PathBuf {
    primary.join(format!("primary-home/pg/base/{id}/data/base/1/{name}"))
}

fn passive_file(rig: &PassiveRig, id: &str, name: &str) -> PathBuf {
    rig.server_directory()
        .join(format!("base/{id}/data/base/1/{name}"))
}

/// `barsync sync-backup --json` of backup `id`, with extra arguments.
fn sync_backup(rig: &PassiveRig, id: &str, extra: &[&str]) -> (Output, Value) {
    let mut args = vec!["sync-backup", "--json"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["pg", id]);
    let output = rig.barsync(&args);
    let value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    (output, value)
}

#[test]
fn a_large_file_is_split_across_sessions_and_delta_transferred_against_the_older_backup() {
    let primary = fixture_primary();
    let old = noise(24 * MIB + 4321, 1);
    let mut new = old.clone();
    for at in [5, 7 * MIB, 15 * MIB + 3, 24 * MIB] {
        new[at] ^= 0xff;
    }
    new.extend_from_slice(&noise(MIB, 2)); // and it grew
    fs::write(primary_file(primary.path(), OLDER, "30000"), &old).unwrap();
    fs::write(primary_file(primary.path(), NEWER, "30000"), &new).unwrap();
    let rig = PassiveRig::new(&primary.path().join("primary.conf"), &RigOptions::default());
    let info = rig.barsync(&["sync-info", "--primary", "pg"]);
    assert!(info.status.success(), "{}", describe(&info));

    let (first, json) = sync_backup(&rig, OLDER, &["-j", "3", "--part-size", "4M"]);
    assert!(first.status.success(), "{}", describe(&first));
    assert_eq!(json["files_split"], 1, "{json}");
    assert_eq!(
        json["parts"], 7,
        "24 MiB + 4321 bytes in 4 MiB parts: {json}"
    );
    assert!(
        json["sessions"].as_u64().unwrap() >= 2,
        "the parts are shared by the sessions: {json}"
    );
    assert_eq!(fs::read(passive_file(&rig, OLDER, "30000")).unwrap(), old);

    let (second, json) = sync_backup(&rig, NEWER, &["-j", "3", "--part-size", "4M"]);
    assert!(second.status.success(), "{}", describe(&second));
    assert_eq!(json["files_split"], 1, "{json}");
    assert_eq!(json["parts"], 7, "{json}");
    assert_eq!(fs::read(passive_file(&rig, NEWER, "30000")).unwrap(), new);
    let received = json["bytes_received"].as_u64().unwrap();
    assert!(
        received < 4 * MIB as u64,
        "the changed file should cross as a delta (its growth and four changed blocks), \
         {received} bytes received: {json}"
    );
    let theirs = fs::metadata(primary_file(primary.path(), NEWER, "30000")).unwrap();
    let ours = fs::metadata(passive_file(&rig, NEWER, "30000")).unwrap();
    assert_eq!(
        (ours.mtime(), ours.mode() & 0o7777),
        (theirs.mtime(), theirs.mode() & 0o7777)
    );
    assert_eq!(rig.backup_status(NEWER), "DONE");
    let show = rig.barman(&["show-backup", "pg", NEWER]);
    assert!(show.status.success(), "{}", describe(&show));
}

#[test]
fn identical_split_files_are_linked_with_reuse_backup_link() {
    let primary = fixture_primary();
    let data = noise(12 * MIB, 3);
    fs::write(primary_file(primary.path(), OLDER, "30001"), &data).unwrap();
    fs::write(primary_file(primary.path(), NEWER, "30001"), &data).unwrap();
    let mut changed = data.clone();
    changed[9 * MIB] ^= 1;
    fs::write(primary_file(primary.path(), OLDER, "30002"), &data).unwrap();
    fs::write(primary_file(primary.path(), NEWER, "30002"), &changed).unwrap();
    let rig = PassiveRig::new(
        &primary.path().join("primary.conf"),
        &RigOptions {
            server_lines: vec!["reuse_backup = link".into()],
            ..RigOptions::default()
        },
    );
    let cron = rig.barsync(&["cron", "-j", "2", "--part-size", "2M"]);
    assert!(cron.status.success(), "{}", describe(&cron));
    assert!(
        String::from_utf8_lossy(&cron.stdout).contains("split into"),
        "{}",
        describe(&cron)
    );
    let inode = |id: &str, name: &str| fs::metadata(passive_file(&rig, id, name)).unwrap().ino();
    assert_eq!(
        inode(OLDER, "30001"),
        inode(NEWER, "30001"),
        "identical: linked"
    );
    assert_ne!(
        inode(OLDER, "30002"),
        inode(NEWER, "30002"),
        "changed: a copy"
    );
    assert_eq!(
        fs::read(passive_file(&rig, NEWER, "30002")).unwrap(),
        changed
    );
    assert_eq!(fs::read(passive_file(&rig, OLDER, "30002")).unwrap(), data);
}

#[test]
fn a_cut_in_the_middle_of_a_split_file_resumes_from_the_parts_received() {
    let primary = fixture_primary();
    let data = noise(48 * MIB, 4);
    fs::write(primary_file(primary.path(), NEWER, "30003"), &data).unwrap();
    let rig = PassiveRig::new(
        &primary.path().join("primary.conf"),
        &RigOptions {
            // 16 MiB/s over every session: the 48 MiB take about 3 s. No retry round within
            // the run, so the cut fails the backup.
            server_lines: vec![
                "bandwidth_limit = 16384".into(),
                "basebackup_retry_times = 0".into(),
            ],
            ..RigOptions::default()
        },
    );
    let info = rig.barsync(&["sync-info", "--primary", "pg"]);
    assert!(info.status.success(), "{}", describe(&info));
    rig.sync_backup_cut(
        &["-j", "2", "--part-size", "4M"],
        NEWER,
        std::time::Duration::from_millis(1500),
    );
    assert!(
        !passive_file(&rig, NEWER, "30003").exists(),
        "a split file is never published with parts missing"
    );

    let (resumed, json) = sync_backup(&rig, NEWER, &["-j", "2", "--part-size", "4M"]);
    assert!(resumed.status.success(), "{}", describe(&resumed));
    assert_eq!(rig.backup_status(NEWER), "DONE");
    assert_eq!(fs::read(passive_file(&rig, NEWER, "30003")).unwrap(), data);
    let received = json["bytes_received"].as_u64().unwrap();
    assert!(
        received < (data.len() as u64) * 8 / 10,
        "the resumed run received {received} of {} bytes: the parts received before the cut \
         were sent again ({json})",
        data.len()
    );
}
