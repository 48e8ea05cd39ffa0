//! End to end with every real component: PostgreSQL 15 running pgbench with WAL archiving, a
//! real Barman 3.20.1 primary taking pg_basebackup backups, sshd on 127.0.0.1, and a barsync
//! passive node synced by `barsync cron`; then real Barman on the passive lists, shows and
//! recovers the latest backup, and PostgreSQL starts from it with the primary's data.
//!
//! One primary serves three passives in turn (PostgreSQL is the slow part to set up):
//! 1. barsync on the primary: the first backup, then a second one after more pgbench traffic,
//!    delta-transferred against the first (the bytes that crossed are printed);
//! 2. no barsync on the primary: the SFTP path;
//! 3. `barman cron` and `barsync cron` started together on one passive.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use barsync_tests::barman_primary::{scratch_dir, verify_restored_cluster, BarmanPrimary};
use barsync_tests::passive_rig::{describe, PassiveRig, RigOptions};

/// pgbench scale: about 150 MB of data, so a backup is some 1,000 files and ~160 MiB.
const SCALE: u32 = 10;

fn text(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `Number of WALs` and `Status` lines of `barman show-backup`.
fn wal_summary(output: &std::process::Output) -> Vec<String> {
    text(output)
        .lines()
        .filter(|l| l.contains("Number of WALs") || l.contains("Status "))
        .map(|l| l.trim().to_owned())
        .collect()
}

/// Checks that Barman on the passive sees `ids` DONE with the primary's WAL counts, recovers
/// the last one, and that PostgreSQL starts from it with `expected` data.
fn check_passive(
    primary: &BarmanPrimary,
    rig: &PassiveRig,
    ids: &[String],
    expected: &barsync_tests::barman_primary::TableFingerprint,
) {
    let list = rig.barman(&["list-backups", "pg"]);
    assert!(list.status.success(), "{}", describe(&list));
    for id in ids {
        let passive = rig.barman(&["show-backup", "pg", id]);
        let theirs = primary.run_barman(["show-backup", "pg", id.as_str()]);
        assert!(passive.status.success(), "{}", describe(&passive));
        assert!(text(&passive).contains("Status                 : DONE"));
        assert_eq!(
            wal_summary(&passive),
            wal_summary(&theirs),
            "backup {id}: WAL counts differ from the primary's"
        );
        assert!(text(&list).contains(id.as_str()), "{}", describe(&list));
    }
    let restore = scratch_dir("barsync-restore-").unwrap();
    let destination = restore.path().join("data");
    let latest = ids.last().unwrap();
    let recover = rig.barman(&["recover", "pg", latest, destination.to_str().unwrap()]);
    assert!(recover.status.success(), "{}", describe(&recover));
    verify_restored_cluster(&destination, expected)
        .unwrap_or_else(|e| panic!("the cluster recovered on the passive is wrong: {e}"));
}

/// The `X MiB received` and `Y MiB` (size) of a backup's summary line.
fn received_and_size(cron: &str, id: &str) -> (f64, f64) {
    let line = cron
        .lines()
        .find(|l| l.contains(&format!("Backup {id} of server pg synced")))
        .unwrap_or_else(|| panic!("no summary for {id}:\n{cron}"));
    let number_before = |marker: &str| -> f64 {
        let before = line.split(marker).next().unwrap();
        before.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let size_part = line.split("files, ").nth(1).unwrap();
    let size: f64 = size_part.split(' ').next().unwrap().parse().unwrap();
    (number_before(" MiB received"), size)
}

/// Waits until no Barman sync subprocess holds a lock of the passive.
fn wait_for_barman_syncs(rig: &PassiveRig) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let busy = std::fs::read_dir(&rig.home)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "lock"))
            .any(|path| {
                barsync_sync::lock::acquire_path(&path, false)
                    .is_err_and(|e| matches!(e, barsync_sync::lock::LockError::Busy(_)))
            });
        if !busy {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Barman's sync processes never finished"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn barsync_passive_of_a_real_barman_primary_restores_the_primarys_data() {
    let start = Instant::now();
    let phase = |what: &str| eprintln!("[{:6.1} s] {what}", start.elapsed().as_secs_f64());
    let primary = BarmanPrimary::start(SCALE).expect("start PostgreSQL and the Barman primary");
    phase("primary started");
    let first = primary.backup();
    primary.pgbench_run(500);
    primary.archive_wals();
    phase("first backup taken");

    // 1. barsync on the primary; reuse_backup = link.
    let rig = PassiveRig::new(
        &primary.config_path(),
        &RigOptions {
            server_lines: vec!["reuse_backup = link".into()],
            ..RigOptions::default()
        },
    );
    // Parts of 16 MiB: pgbench_accounts (about 130 MiB at scale 10) is fetched in parts by
    // both sessions, so what PostgreSQL starts from below includes assembled files.
    let cron = rig.barsync(&["cron", "--part-size", "16M"]);
    assert!(cron.status.success(), "{}", describe(&cron));
    assert!(text(&cron).contains("split into"), "{}", describe(&cron));
    phase("first cron");
    let expected_first = primary.table_fingerprint();
    check_passive(
        &primary,
        &rig,
        std::slice::from_ref(&first),
        &expected_first,
    );
    phase("first backup recovered on the passive");

    primary.pgbench_run(2000);
    let second = primary.backup();
    primary.pgbench_run(200);
    primary.archive_wals();
    let expected = primary.table_fingerprint();
    phase("second backup taken");
    let cron = rig.barsync(&["cron", "--part-size", "16M"]);
    assert!(cron.status.success(), "{}", describe(&cron));
    assert!(text(&cron).contains("split into"), "{}", describe(&cron));
    phase("second cron");
    let (received, size) = received_and_size(&text(&cron), &second);
    eprintln!(
        "second backup {second}: {received:.1} MiB crossed the network for a {size:.1} MiB backup ({:.1}%)",
        100.0 * received / size
    );
    assert!(
        received < size * 0.5,
        "the second backup was not delta-transferred against the first: {received:.1} of {size:.1} MiB"
    );
    // Nothing more to do, and the primary's WALs are all on the passive.
    let again = rig.barsync(&["cron"]);
    assert!(again.status.success(), "{}", describe(&again));
    assert!(!text(&again).contains("synced:"), "{}", describe(&again));
    check_passive(&primary, &rig, &[first.clone(), second.clone()], &expected);
    phase("second backup recovered on the passive");

    // 2. No barsync on the primary: SFTP, whole files; reuse_backup = link links the second
    // backup's files that the primary's checksum tool shows identical to the first's.
    let sftp = PassiveRig::new(
        &primary.config_path(),
        &RigOptions {
            barsync_on_primary: false,
            server_lines: vec!["reuse_backup = link".into()],
            ..RigOptions::default()
        },
    );
    let cron = sftp.barsync(&["cron"]);
    assert!(cron.status.success(), "{}", describe(&cron));
    assert!(text(&cron).contains("SFTP, remote"), "{}", describe(&cron));
    let summary = text(&cron)
        .lines()
        .find(|l| l.contains(&format!("Backup {second} of server pg synced")))
        .map(str::to_owned)
        .unwrap_or_default();
    eprintln!("over SFTP: {summary}");
    assert!(summary.contains(" linked;"), "{}", describe(&cron));
    phase("SFTP cron");
    check_passive(&primary, &sftp, &[first.clone(), second.clone()], &expected);
    phase("SFTP passive recovered");

    // 3. barman cron and barsync cron at once on one passive.
    let both = PassiveRig::new(&primary.config_path(), &RigOptions::default());
    let barman_cron = Command::new(barsync_tests::passive_rig::barman_program())
        .args(["-c", both.config.to_str().unwrap(), "cron"])
        .output();
    let barsync_cron = both.barsync(&["cron"]);
    let barman_cron = barman_cron.unwrap();
    phase("barman cron and barsync cron");
    assert!(barman_cron.status.success(), "{}", describe(&barman_cron));
    wait_for_barman_syncs(&both);
    // Whatever each managed, one more barsync cron completes the node.
    let finish = both.barsync(&["cron"]);
    assert!(
        finish.status.success(),
        "{}\n{}",
        describe(&barsync_cron),
        describe(&finish)
    );
    wait_for_barman_syncs(&both);
    phase("finishing cron");
    check_passive(&primary, &both, &[first, second], &expected);
    phase("concurrent passive recovered");
    assert_wals_on_disk(&both.server_directory());
}

/// Every line of the passive's xlog db names a file that is on disk.
fn assert_wals_on_disk(server_directory: &Path) {
    let xlogdb = std::fs::read_to_string(server_directory.join("wals/pg-xlog.db")).unwrap();
    for line in xlogdb.lines() {
        let name = line.split_whitespace().next().unwrap();
        let relative = if name.ends_with(".history") {
            name.to_owned()
        } else {
            format!("{}/{name}", &name[..16])
        };
        assert!(
            server_directory.join("wals").join(&relative).is_file(),
            "{name} is in the xlog db but not on disk"
        );
    }
}
