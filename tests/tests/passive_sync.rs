//! The passive node against a real Barman catalog behind a real sshd: the sample primary of
//! `barsync_sync::fixture::sample` (no PostgreSQL), a passive synced by `barsync cron`,
//! `sync-backup` and `sync-wals`, then read by real Barman. The PostgreSQL end-to-end test lives in
//! `passive_postgres.rs`.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use barsync_tests::passive_rig::{
    barman_program, describe, fixture_primary, PassiveRig, RigOptions,
};

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn xlogdb_names(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.split('\t').next().unwrap().to_owned())
        .collect()
}

/// The files of backup `id` on the fixture primary, as a passive copies them (all but
/// `backup.info`).
fn primary_backup_files(primary: &Path, id: &str) -> Vec<(String, Vec<u8>)> {
    files_below(&primary.join(format!("primary-home/pg/base/{id}")))
        .into_iter()
        .filter(|(path, _)| path != "backup.info")
        .collect()
}

/// Every regular file below `root`, as (relative path, content).
fn files_below(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                let relative = entry
                    .path()
                    .strip_prefix(root)
                    .unwrap()
                    .display()
                    .to_string();
                found.push((relative, fs::read(entry.path()).unwrap()));
            }
        }
    }
    found.sort();
    found
}

#[test]
fn cron_syncs_every_backup_and_wal_and_barman_reads_them() {
    let primary = fixture_primary();
    let primary_conf = primary.path().join("primary.conf");
    let rig = PassiveRig::new(&primary_conf, &RigOptions::default());
    let cron = rig.barsync(&["cron"]);
    assert!(cron.status.success(), "{}", describe(&cron));
    let text = stdout(&cron);
    assert!(
        text.contains("Backup 20240101T120000 of server pg synced"),
        "{text}"
    );
    assert!(
        text.contains("Backup 20240102T120000 of server pg synced"),
        "{text}"
    );

    // Real Barman on the passive: both backups DONE, with the primary's WAL sizes.
    let passive_list = rig.barman(&["list-backups", "pg"]);
    let primary_list = Command::new(barman_program())
        .args(["-c", primary_conf.to_str().unwrap(), "list-backups", "pg"])
        .output()
        .unwrap();
    assert!(passive_list.status.success(), "{}", describe(&passive_list));
    let strip_type = |text: &str| {
        text.replace(" - F - ", " - ? - ")
            .replace(" - R - ", " - ? - ")
    };
    assert_eq!(
        strip_type(&stdout(&passive_list)),
        strip_type(&stdout(&primary_list)),
        "list-backups differs from the primary's"
    );
    for id in ["20240101T120000", "20240102T120000"] {
        let show = rig.barman(&["show-backup", "pg", id]);
        assert!(show.status.success(), "{}", describe(&show));
        assert!(stdout(&show).contains("Status                 : DONE"));
        let info = fs::read_to_string(
            rig.server_directory()
                .join(format!("meta/{id}-backup.info")),
        )
        .unwrap();
        assert!(
            info.contains("mode=passive\n")
                && info.contains("status=DONE\n")
                && info.contains("error=None\n"),
            "{info}"
        );
        // The copy is the primary's tree minus backup.info: byte for byte.
        let theirs = primary_backup_files(primary.path(), id);
        let ours = files_below(&rig.server_directory().join(format!("base/{id}")));
        assert_eq!(ours, theirs, "backup {id} differs from the primary's");
    }

    // The xlog db lists each WAL the primary offered exactly once, files on disk.
    let xlogdb = rig.server_directory().join("wals/pg-xlog.db");
    let names = xlogdb_names(&xlogdb);
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        names.len(),
        unique.len(),
        "duplicate xlog db lines: {names:?}"
    );
    assert_eq!(names.len(), 9, "{names:?}");
    assert!(names.contains(&"00000002.history".to_owned()));
    for name in &names {
        let relative = if name.ends_with(".history") {
            name.clone()
        } else {
            format!("{}/{name}", &name[..16])
        };
        let ours = fs::read(rig.server_directory().join("wals").join(&relative)).unwrap();
        let theirs = fs::read(primary.path().join("primary-home/pg/wals").join(&relative)).unwrap();
        assert_eq!(ours, theirs, "{relative}");
    }
    assert_eq!(
        fs::read_to_string(rig.server_directory().join("wals/sync-wals.info")).unwrap(),
        "000000020000000000000007\t503"
    );

    // A second cron finds nothing to do and changes nothing.
    let before = fs::read(&xlogdb).unwrap();
    let again = rig.barsync(&["cron"]);
    assert!(again.status.success(), "{}", describe(&again));
    assert!(!stdout(&again).contains("synced:"), "{}", describe(&again));
    assert_eq!(fs::read(&xlogdb).unwrap(), before);
    // sync-wals.info removed (Barman's workaround for old WALs): still no duplicate line.
    fs::remove_file(rig.server_directory().join("wals/sync-wals.info")).unwrap();
    let resync = rig.barsync(&["cron"]);
    assert!(resync.status.success(), "{}", describe(&resync));
    assert_eq!(fs::read(&xlogdb).unwrap(), before, "WALs listed twice");
}

#[test]
fn sync_backup_decides_as_barman_does() {
    let primary = fixture_primary();
    let rig = PassiveRig::new(&primary.path().join("primary.conf"), &RigOptions::default());
    // No primary.info yet: Barman's message.
    let early = rig.barsync(&["sync-backup", "pg", "20240101T120000"]);
    assert_eq!(early.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&early.stderr)
            .contains("Cannot open primary.info file for server pg"),
        "{}",
        describe(&early)
    );
    let info = rig.barsync(&["sync-info", "--primary", "pg"]);
    assert!(info.status.success(), "{}", describe(&info));
    // A shortcut Barman ignores: latest is the newest backup of the primary.
    let latest = rig.barsync(&["sync-backup", "pg", "latest"]);
    assert!(latest.status.success(), "{}", describe(&latest));
    assert!(stdout(&latest).contains("Backup 20240102T120000 of server pg synced"));
    let again = rig.barsync(&["sync-backup", "pg", "20240102T120000"]);
    assert!(again.status.success());
    assert!(stdout(&again).contains("Backup 20240102T120000 is already synced with pg server"));
    let absent = rig.barsync(&["sync-backup", "pg", "20230101T000000"]);
    assert_eq!(absent.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&absent.stderr)
        .contains("Backup 20230101T000000 is absent on pg server"));
    // The per-backup lock held by someone else (Barman or another barsync).
    let _held = barsync_sync::lock::acquire(
        &rig.home,
        "pg",
        &barsync_sync::lock::LockKind::SyncBackup("20240101T120000"),
        false,
    )
    .unwrap();
    let busy = rig.barsync(&["sync-backup", "pg", "20240101T120000"]);
    assert_eq!(busy.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&busy.stderr)
            .contains("Another synchronisation process for backup 20240101T120000 of server pg is already running."),
        "{}",
        describe(&busy)
    );
    // sync-wals waits for a base backup that covers the first WAL.
    let wals = rig.barsync(&["sync-wals", "pg"]);
    assert!(wals.status.success(), "{}", describe(&wals));
    assert!(
        String::from_utf8_lossy(&wals.stderr).contains(
            "Skipping WAL synchronisation for server pg: no available local backup for 000000010000000000000002"
        ),
        "{}",
        describe(&wals)
    );
}

#[test]
fn a_non_passive_server_is_refused_with_barmans_message() {
    let primary = fixture_primary();
    let conf = primary.path().join("primary.conf");
    for args in [
        vec![
            "sync-backup",
            "-c",
            conf.to_str().unwrap(),
            "pg",
            "20240101T120000",
        ],
        vec!["sync-wals", "-c", conf.to_str().unwrap(), "pg"],
    ] {
        let output = Command::new(barsync_tests::binaries::barsync())
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1));
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("ERROR: server pg is not passive"),
            "{}",
            describe(&output)
        );
    }
}

#[test]
fn sftp_when_the_primary_has_no_barsync() {
    let primary = fixture_primary();
    let rig = PassiveRig::new(
        &primary.path().join("primary.conf"),
        &RigOptions {
            barsync_on_primary: false,
            ..RigOptions::default()
        },
    );
    let cron = rig.barsync(&["cron"]);
    assert!(cron.status.success(), "{}", describe(&cron));
    // Said once per run, not once per copy (two backups and the WALs here).
    assert_eq!(
        String::from_utf8_lossy(&cron.stderr)
            .matches("copying whole files over SFTP")
            .count(),
        1,
        "{}",
        describe(&cron)
    );
    assert!(
        stdout(&cron).contains("SFTP, remote"),
        "{}",
        describe(&cron)
    );
    let list = rig.barman(&["list-backups", "pg"]);
    assert_eq!(
        stdout(&list).matches("WAL Size").count(),
        2,
        "{}",
        describe(&list)
    );
    let names = xlogdb_names(&rig.server_directory().join("wals/pg-xlog.db"));
    assert_eq!(names.len(), 9);
}

/// `primary_ssh_command` names a Host alias of its own ssh_config (`-F`), reached only through
/// `ProxyJump`: the SFTP fallback goes through that ssh command (`-s … sftp`), as sync-info
/// does, so the primary without barsync is synced. (Before, SFTP went through libssh2, which
/// refused: "option `proxyjump jump` is not supported by the in-process transport".)
#[test]
fn sftp_goes_through_the_primary_ssh_command_with_its_proxyjump() {
    let primary = fixture_primary();
    let rig = PassiveRig::new(
        &primary.path().join("primary.conf"),
        &RigOptions {
            barsync_on_primary: false,
            ..RigOptions::default()
        },
    );
    let sshd = &rig.sshd;
    let common = format!(
        "  HostName 127.0.0.1\n  Port {}\n  User {}\n  IdentityFile {}\n  IdentitiesOnly yes\n  \
         UserKnownHostsFile {}\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  \
         BatchMode yes\n",
        sshd.port(),
        sshd.user(),
        sshd.client_key().display(),
        sshd.known_hosts().display()
    );
    let config = rig.directory.path().join("ssh_config");
    fs::write(
        &config,
        format!("Host jump\n{common}\nHost primary-alias\n{common}  ProxyJump jump\n"),
    )
    .unwrap();
    rig.set_primary_ssh_command(&format!("ssh -F {} primary-alias", config.display()));
    let cron = rig.barsync(&["cron"]);
    assert!(cron.status.success(), "{}", describe(&cron));
    assert!(
        stdout(&cron).contains("SFTP, remote"),
        "{}",
        describe(&cron)
    );
    let list = rig.barman(&["list-backups", "pg"]);
    assert_eq!(
        stdout(&list).matches("WAL Size").count(),
        2,
        "{}",
        describe(&list)
    );
    let log = sshd.log();
    assert!(log.contains("Starting session: subsystem 'sftp'"), "{log}");
    // Every session came through the jump: one more login per session.
    let logins = log.matches("Accepted publickey").count();
    let sessions = log.matches("Starting session:").count();
    assert_eq!(logins, 2 * sessions, "{log}");
}

#[test]
fn reuse_backup_link_shares_identical_files_between_backups() {
    let primary = fixture_primary();
    let rig = PassiveRig::new(
        &primary.path().join("primary.conf"),
        &RigOptions {
            server_lines: vec!["reuse_backup = link".into()],
            ..RigOptions::default()
        },
    );
    let cron = rig.barsync(&["cron"]);
    assert!(cron.status.success(), "{}", describe(&cron));
    let (linked, _) = links_to_the_previous_backup(&rig);
    assert!(linked > 0, "no identical file was linked");
    assert!(stdout(&cron).contains("linked"), "{}", describe(&cron));
}

/// How the passive's second backup shares files with its first: (files that are hard links to
/// the first's, files whose content equals the first's). Panics on a link between files whose
/// content differs.
fn links_to_the_previous_backup(rig: &PassiveRig) -> (usize, usize) {
    let base = rig.server_directory().join("base");
    let (first, second) = (base.join("20240101T120000"), base.join("20240102T120000"));
    let (mut linked, mut identical) = (0, 0);
    for (relative, content) in files_below(&second) {
        let older = first.join(&relative);
        let Ok(old_content) = fs::read(&older) else {
            continue;
        };
        let same_inode = fs::metadata(&older).unwrap().ino()
            == fs::metadata(second.join(&relative)).unwrap().ino();
        assert!(
            !same_inode || old_content == content,
            "{relative} is linked to a different file"
        );
        linked += usize::from(same_inode);
        identical += usize::from(old_content == content);
    }
    (linked, identical)
}

/// "N linked" from the summary line of backup `id` (0 when it says nothing about links).
fn linked_in_summary(text: &str, id: &str) -> usize {
    let line = text
        .lines()
        .find(|l| l.contains(&format!("Backup {id} of server pg synced")))
        .unwrap_or_else(|| panic!("no summary for {id} in {text}"));
    line.split(" linked")
        .next()
        .filter(|before| before.len() < line.len())
        .and_then(|before| before.rsplit(' ').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// Over SFTP (no barsync on the primary), `reuse_backup = link` links the files the primary's
/// checksum tool (`sha256sum` here; `b3sum` when installed) shows identical to the previous
/// backup's, copies the others, and says how many it linked, as the barsync path does.
#[test]
fn reuse_backup_link_over_sftp_links_what_the_primarys_checksum_shows_identical() {
    let primary = fixture_primary();
    let rig = PassiveRig::new(
        &primary.path().join("primary.conf"),
        &RigOptions {
            barsync_on_primary: false,
            server_lines: vec!["reuse_backup = link".into()],
            ..RigOptions::default()
        },
    );
    let cron = rig.barsync(&["cron"]);
    assert!(cron.status.success(), "{}", describe(&cron));
    assert!(
        stdout(&cron).contains("SFTP, remote"),
        "{}",
        describe(&cron)
    );
    let (linked, identical) = links_to_the_previous_backup(&rig);
    assert!(
        identical > 0,
        "the fixture has no file shared by its backups"
    );
    assert_eq!(linked, identical, "{}", describe(&cron));
    assert_eq!(
        linked_in_summary(&stdout(&cron), "20240102T120000"),
        linked,
        "{}",
        describe(&cron)
    );
    let id = "20240102T120000";
    let ours = files_below(&rig.server_directory().join(format!("base/{id}")));
    assert_eq!(ours, primary_backup_files(primary.path(), id));
}

/// Over SFTP the primary's checksum tool runs once per batch of files, not once per file:
/// each run is a round trip and a process on the primary (300 files over a 50 ms link would
/// otherwise cost 15 s in round trips alone). Counted in sshd's log of started commands.
#[test]
fn sftp_runs_the_checksum_tool_once_per_batch_not_once_per_file() {
    let primary = fixture_primary();
    let data = primary
        .path()
        .join("primary-home/pg/base/20240102T120000/data/base/1");
    for index in 0..300u64 {
        fs::write(
            data.join(format!("{}", 40000 + index)),
            barsync_tests::noise::incompressible(1000, index + 1),
        )
        .unwrap();
    }
    let rig = PassiveRig::new(
        &primary.path().join("primary.conf"),
        &RigOptions {
            server_lines: vec!["reuse_backup = link".into()],
            ..RigOptions::default()
        },
    );
    let cron = rig.barsync(&["cron", "--sftp"]);
    assert!(cron.status.success(), "{}", describe(&cron));
    assert!(
        stdout(&cron).contains("by SFTP, remote"),
        "{}",
        describe(&cron)
    );
    let log = rig.sshd.log();
    let commands = log.matches("Starting session: command").count();
    assert!(
        (1..40).contains(&commands),
        "{commands} commands for 2 backups of 5 and 305 files and 9 WALs:\n{log}"
    );
}

/// Without a checksum tool on the primary, identity cannot be proved: nothing is linked (size
/// and mtime alone never make a link), every file is copied and checked by size and mtime.
#[test]
fn reuse_backup_link_over_sftp_without_a_checksum_tool_links_nothing() {
    let primary = fixture_primary();
    let rig = PassiveRig::new(
        &primary.path().join("primary.conf"),
        &RigOptions {
            barsync_on_primary: false,
            system_path_on_primary: false,
            server_lines: vec!["reuse_backup = link".into()],
        },
    );
    let cron = rig.barsync(&["cron"]);
    assert!(cron.status.success(), "{}", describe(&cron));
    assert!(
        stdout(&cron).contains("SFTP, size and mtime only"),
        "{}",
        describe(&cron)
    );
    let (linked, identical) = links_to_the_previous_backup(&rig);
    assert!(
        identical > 0,
        "the fixture has no file shared by its backups"
    );
    assert_eq!(linked, 0, "{}", describe(&cron));
    assert_eq!(linked_in_summary(&stdout(&cron), "20240102T120000"), 0);
    let id = "20240102T120000";
    let ours = files_below(&rig.server_directory().join(format!("base/{id}")));
    assert_eq!(ours, primary_backup_files(primary.path(), id));
}

/// Adds `count` files of `mib` MiB of incompressible data to the primary's newest backup.
fn grow_primary_backup(primary: &Path, count: usize, mib: usize) -> u64 {
    let directory = primary.join("primary-home/pg/base/20240102T120000/data/base/1");
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for index in 0..count {
        let mut data = vec![0u8; mib << 20];
        for chunk in data.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        fs::write(directory.join(format!("{}", 20000 + index)), &data).unwrap();
    }
    (count * (mib << 20)) as u64
}

/// "X MiB received" from a summary line.
fn mib_received(text: &str, id: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.contains(&format!("Backup {id} of server pg synced")))
        .unwrap_or_else(|| panic!("no summary for {id} in {text}"));
    let before = line.split(" MiB received").next().unwrap();
    before.rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn a_cut_connection_fails_the_backup_and_the_next_run_resumes() {
    let primary = fixture_primary();
    let added = grow_primary_backup(primary.path(), 4, 16);
    let rig = PassiveRig::new(
        &primary.path().join("primary.conf"),
        &RigOptions {
            // 16 MiB/s over every session: the 64 MiB take about 4 s. No retry round within
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
    let id = "20240102T120000";
    let cut = rig.sync_backup_cut(&[], id, std::time::Duration::from_millis(1500));
    assert!(
        String::from_utf8_lossy(&cut.stderr)
            .contains(&format!("failure syncing server pg backup {id}")),
        "{}",
        describe(&cut)
    );
    let listing = rig.barman(&["list-backups", "pg"]);
    assert!(
        stdout(&listing).contains("FAILED"),
        "{}",
        describe(&listing)
    );

    let resumed = rig.barsync(&["sync-backup", "pg", id]);
    assert!(resumed.status.success(), "{}", describe(&resumed));
    assert_eq!(rig.backup_status(id), "DONE");
    let info = fs::read_to_string(
        rig.server_directory()
            .join(format!("meta/{id}-backup.info")),
    )
    .unwrap();
    assert!(
        info.contains("error=None\n"),
        "the old error survived: {info}"
    );
    let received = mib_received(&stdout(&resumed), id);
    let total = added as f64 / 1048576.0;
    assert!(
        received < total * 0.8,
        "the resumed run received {received:.1} MiB of {total:.1}: completed files were sent again"
    );
    let theirs = primary_backup_files(primary.path(), id);
    let ours = files_below(&rig.server_directory().join(format!("base/{id}")));
    assert_eq!(ours.len(), theirs.len());
    assert!(
        ours == theirs,
        "the resumed backup differs from the primary's"
    );
}

#[test]
fn barsync_killed_at_random_points_never_leaves_a_done_backup_incomplete() {
    let primary = fixture_primary();
    grow_primary_backup(primary.path(), 3, 8);
    let rig = PassiveRig::new(
        &primary.path().join("primary.conf"),
        &RigOptions {
            server_lines: vec!["bandwidth_limit = 20000".into()],
            ..RigOptions::default()
        },
    );
    let id = "20240102T120000";
    let theirs = primary_backup_files(primary.path(), id);
    // Kill `barsync cron` (SIGKILL) after 0.2 .. 1.4 s, six times; check the catalog after each.
    for round in 0..6u64 {
        let mut child = Command::new(barsync_tests::binaries::barsync())
            .args(["cron", "-c", rig.config.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200 + round * 240));
        let _ = child.kill();
        let _ = child.wait();
        if rig.backup_status(id) == "DONE" {
            let ours = files_below(&rig.server_directory().join(format!("base/{id}")));
            assert!(ours == theirs, "round {round}: a DONE backup is incomplete");
        }
        let xlogdb = rig.server_directory().join("wals/pg-xlog.db");
        if xlogdb.exists() {
            let names = xlogdb_names(&xlogdb);
            let mut unique = names.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(
                names.len(),
                unique.len(),
                "round {round}: duplicate xlog db lines"
            );
            for name in &names {
                let relative = if name.ends_with(".history") {
                    name.clone()
                } else {
                    format!("{}/{name}", &name[..16])
                };
                assert!(
                    rig.server_directory()
                        .join("wals")
                        .join(&relative)
                        .is_file(),
                    "round {round}: {name} listed but not on disk"
                );
            }
        }
    }
    let finish = rig.barsync(&["cron"]);
    assert!(finish.status.success(), "{}", describe(&finish));
    assert_eq!(rig.backup_status(id), "DONE");
    let ours = files_below(&rig.server_directory().join(format!("base/{id}")));
    assert!(
        ours == theirs,
        "the final backup differs from the primary's"
    );
    assert_eq!(
        xlogdb_names(&rig.server_directory().join("wals/pg-xlog.db")).len(),
        9
    );
}

#[test]
fn the_passives_own_retention_policy_is_applied_by_barman() {
    let primary = fixture_primary();
    let rig = PassiveRig::new(
        &primary.path().join("primary.conf"),
        &RigOptions {
            server_lines: vec!["retention_policy = REDUNDANCY 1".into()],
            ..RigOptions::default()
        },
    );
    let cron = rig.barsync(&["cron"]);
    assert!(cron.status.success(), "{}", describe(&cron));
    assert!(
        stdout(&cron).contains("Enforcing retention policy: removing backup 20240101T120000"),
        "{}",
        describe(&cron)
    );
    let list = rig.barman(&["list-backups", "pg"]);
    let text = stdout(&list);
    assert!(
        text.contains("20240102T120000") && !text.contains("20240101T120000"),
        "{text}"
    );
    // The primary still has the obsolete backup: it is not copied again.
    let again = rig.barsync(&["cron"]);
    assert!(again.status.success(), "{}", describe(&again));
    assert!(!stdout(&again).contains("synced:"), "{}", describe(&again));
    assert!(!rig.server_directory().join("base/20240101T120000").exists());
}

#[test]
fn retention_runs_every_cron_and_an_obsolete_backup_is_not_called_missing() {
    let primary = fixture_primary();
    let rig = PassiveRig::new(&primary.path().join("primary.conf"), &RigOptions::default());
    let cron = rig.barsync(&["cron"]);
    assert!(cron.status.success(), "{}", describe(&cron));
    assert_eq!(rig.backup_status("20240101T120000"), "DONE");

    // The operator adds a retention policy; the primary has no new WAL since the last run.
    let mut config = fs::read_to_string(&rig.config).unwrap();
    config.push_str("retention_policy = REDUNDANCY 1\n");
    fs::write(&rig.config, config).unwrap();
    let cron = rig.barsync(&["cron"]);
    assert!(cron.status.success(), "{}", describe(&cron));
    assert!(
        stdout(&cron).contains("No WAL synchronisation required"),
        "{}",
        describe(&cron)
    );
    assert!(
        stdout(&cron).contains("Enforcing retention policy: removing backup 20240101T120000"),
        "{}",
        describe(&cron)
    );
    assert_eq!(rig.backup_status("20240101T120000"), "absent");

    // list-backups says why the passive does not have it.
    let list = rig.barsync(&["list-backups", "pg"]);
    assert!(list.status.success(), "{}", describe(&list));
    let row = stdout(&list)
        .lines()
        .find(|l| l.contains("20240101T120000"))
        .unwrap_or_else(|| panic!("no row: {}", describe(&list)))
        .to_owned();
    assert!(
        row.contains("obsolete") && !row.contains("missing"),
        "{row}"
    );
    let json = rig.barsync(&["list-backups", "--json", "pg"]);
    let document: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let backup = document["backups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["backup_id"] == "20240101T120000")
        .unwrap();
    assert_eq!(backup["state"], "obsolete", "{document}");
    assert!(backup["note"]
        .as_str()
        .unwrap()
        .contains("obsolete for local retention policies"));
}

#[test]
fn a_barsync_passive_is_the_primary_of_another_passive() {
    let primary = fixture_primary();
    let middle = PassiveRig::new(&primary.path().join("primary.conf"), &RigOptions::default());
    let first = middle.barsync(&["cron"]);
    assert!(first.status.success(), "{}", describe(&first));
    // The second tier asks the middle node (its Barman catalog, written by barsync).
    let leaf = PassiveRig::new(&middle.config, &RigOptions::default());
    let second = leaf.barsync(&["cron"]);
    assert!(second.status.success(), "{}", describe(&second));
    for id in ["20240101T120000", "20240102T120000"] {
        let theirs = primary_backup_files(primary.path(), id);
        assert!(
            files_below(&leaf.server_directory().join(format!("base/{id}"))) == theirs,
            "backup {id} on the second tier differs from the primary's"
        );
    }
    let leaf_wals = xlogdb_names(&leaf.server_directory().join("wals/pg-xlog.db"));
    let middle_wals = xlogdb_names(&middle.server_directory().join("wals/pg-xlog.db"));
    assert_eq!(leaf_wals, middle_wals);
    let list = leaf.barman(&["list-backups", "pg"]);
    assert_eq!(
        stdout(&list).matches("WAL Size").count(),
        2,
        "{}",
        describe(&list)
    );
}

#[test]
fn bandwidth_limit_paces_the_barsync_and_the_sftp_paths() {
    let primary = fixture_primary();
    grow_primary_backup(primary.path(), 1, 4);
    for sftp in [false, true] {
        let rig = PassiveRig::new(
            &primary.path().join("primary.conf"),
            &RigOptions {
                // 1 MiB/s for all sessions together: the 4 MiB of random data take 4 s.
                server_lines: vec!["bandwidth_limit = 1024".into()],
                ..RigOptions::default()
            },
        );
        let info = rig.barsync(&["sync-info", "--primary", "pg"]);
        assert!(info.status.success(), "{}", describe(&info));
        let mut args = vec!["sync-backup", "pg", "20240102T120000"];
        if sftp {
            args.push("--sftp");
        }
        let start = std::time::Instant::now();
        let sync = rig.barsync(&args);
        let seconds = start.elapsed().as_secs_f64();
        assert!(sync.status.success(), "{}", describe(&sync));
        assert!(
            seconds > 3.0,
            "sftp={sftp}: 4 MiB at 1 MiB/s took {seconds:.2} s: bandwidth_limit was not applied"
        );
    }
}

/// A backup file whose name holds a tab, a newline, 240 bytes or bytes that are not UTF-8 (legal names; PostgreSQL never
/// makes them, an operator or an extension could) is synced like any other, and Barman's
/// catalog of the passive reads the backup as the primary's.
#[test]
fn backup_files_with_odd_names_are_synced_and_barman_reads_the_backup() {
    odd_names_synced(&["cron"]);
}

/// Over SFTP the primary's checksum tool escapes such names in its output (`\HASH  new\nline`):
/// they are verified like the others.
#[test]
fn backup_files_with_odd_names_are_synced_over_sftp() {
    odd_names_synced(&["cron", "--sftp"]);
}

fn odd_names_synced(cron_args: &[&str]) {
    let primary = fixture_primary();
    let data = primary
        .path()
        .join("primary-home/pg/base/20240102T120000/data");
    let odd = [
        "tab\there".to_string(),
        "new\nline".to_string(),
        format!("{}.long", "l".repeat(235)),
    ];
    for (i, name) in odd.iter().enumerate() {
        fs::write(data.join(name), format!("odd {i}").repeat(5000)).unwrap();
    }
    // A name that is not UTF-8 (bytes are legal in names).
    let latin1: &std::ffi::OsStr = std::os::unix::ffi::OsStrExt::from_bytes(b"caf\xe9");
    fs::write(data.join(latin1), b"latin-1".repeat(5000)).unwrap();
    let rig = PassiveRig::new(&primary.path().join("primary.conf"), &RigOptions::default());
    let cron = rig.barsync(cron_args);
    assert!(cron.status.success(), "{}", describe(&cron));
    let id = "20240102T120000";
    assert!(
        stdout(&cron).contains(&format!("Backup {id} of server pg synced")),
        "{}",
        describe(&cron)
    );
    let ours = files_below(&rig.server_directory().join(format!("base/{id}")));
    assert_eq!(ours, primary_backup_files(primary.path(), id));
    assert_eq!(
        fs::read(
            rig.server_directory()
                .join(format!("base/{id}/data"))
                .join(latin1)
        )
        .unwrap(),
        b"latin-1".repeat(5000)
    );
    let show = rig.barman(&["show-backup", "pg", id]);
    assert!(show.status.success(), "{}", describe(&show));
    assert!(
        stdout(&show).contains("Status                 : DONE"),
        "{}",
        describe(&show)
    );
    let list = rig.barman(&["list-backups", "pg"]);
    assert!(list.status.success(), "{}", describe(&list));
    assert_eq!(stdout(&list).lines().count(), 2, "{}", describe(&list));
    // Nothing of barsync's own is left beside the files.
    let leftovers = barsync_tests::leftovers::barsync_names_in(
        &rig.server_directory().join(format!("base/{id}/data")),
    );
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A local FAILED backup the primary no longer lists is purged, with Barman's warning, by
/// `sync-backup` and by `cron` alike; a DONE one the primary dropped is kept.
#[test]
fn a_failed_backup_the_primary_dropped_is_purged_by_cron_and_sync_backup() {
    let primary = fixture_primary();
    let rig = PassiveRig::new(&primary.path().join("primary.conf"), &RigOptions::default());
    let cron = rig.barsync(&["cron"]);
    assert!(cron.status.success(), "{}", describe(&cron));
    let base = rig.server_directory().join("base");
    let meta = rig.server_directory().join("meta");
    let template = fs::read_to_string(meta.join("20240101T120000-backup.info")).unwrap();
    let plant = |id: &str, status: &str| {
        let text: String = template
            .lines()
            .map(|line| {
                if line.starts_with("backup_id=") {
                    format!("backup_id={id}\n")
                } else if line.starts_with("status=") {
                    format!("status={status}\n")
                } else {
                    format!("{line}\n")
                }
            })
            .collect();
        fs::create_dir_all(base.join(id)).unwrap();
        fs::write(meta.join(format!("{id}-backup.info")), text).unwrap();
    };
    plant("20230101T000000", "FAILED");
    plant("20230102T000000", "FAILED");
    plant("20230103T000000", "DONE");
    let purge = |id: &str| {
        format!(
            "Backup {id} is absent on pg server and is incomplete locally, purging local backup"
        )
    };
    let one = rig.barsync(&["sync-backup", "pg", "20230101T000000"]);
    assert!(one.status.success(), "{}", describe(&one));
    assert!(
        String::from_utf8_lossy(&one.stderr).contains(&purge("20230101T000000")),
        "{}",
        describe(&one)
    );
    assert_eq!(rig.backup_status("20230101T000000"), "absent");
    assert!(!base.join("20230101T000000").exists());
    let cron = rig.barsync(&["cron"]);
    assert!(cron.status.success(), "{}", describe(&cron));
    assert!(
        String::from_utf8_lossy(&cron.stderr).contains(&purge("20230102T000000")),
        "{}",
        describe(&cron)
    );
    assert_eq!(rig.backup_status("20230102T000000"), "absent");
    assert!(!base.join("20230102T000000").exists());
    assert_eq!(
        rig.backup_status("20230103T000000"),
        "DONE",
        "a DONE backup is kept"
    );
}
