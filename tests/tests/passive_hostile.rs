//! A hostile or broken primary: forged sync-info (malformed JSON, `..` in backup IDs and WAL
//! names, sizes that lie), symlinks in a backup, and a symlink planted on the passive. Each is
//! refused with an error naming what was wrong, exit status 1, and nothing is written outside
//! the passive's own directories, not even when a directory of a backup is swapped for a
//! symlink in the middle of its sync; such a swap also keeps the backup from DONE (the final
//! verification walks the tree without following links), and the next run completes it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use barsync_sync::config::Config;
use barsync_sync::passive::sync_backup::sync_backup;
use barsync_sync::passive::{Events, FetchEvents, PassiveOptions, PassiveServer};
use barsync_tests::noise::incompressible;
use barsync_tests::passive_rig::{
    barman_program, describe, fixture_primary, AtLimit, PassiveRig, RigOptions,
};

/// The primary's real sync-info JSON.
fn real_sync_info(primary: &Path) -> String {
    let output = Command::new(barman_program())
        .args([
            "-c",
            primary.join("primary.conf").to_str().unwrap(),
            "sync-info",
            "pg",
        ])
        .output()
        .unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap()
}

/// Makes the primary answer sync-info with `json` instead of Barman's answer.
fn forge_sync_info(rig: &PassiveRig, json: &str) {
    let answer = rig.directory.path().join("forged.json");
    fs::write(&answer, json).unwrap();
    let wrapper = rig.directory.path().join("primary-bin/barman");
    fs::write(&wrapper, format!("#!/bin/sh\ncat '{}'\n", answer.display())).unwrap();
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Every path below `root` (files, directories, links).
fn everything_below(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(listing) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in listing.flatten() {
            found.push(entry.path());
            if entry.file_type().unwrap().is_dir() {
                pending.push(entry.path());
            }
        }
    }
    found.sort();
    found
}

#[test]
fn malformed_json_is_refused_and_primary_info_kept() {
    let primary = fixture_primary();
    let rig = PassiveRig::new(&primary.path().join("primary.conf"), &RigOptions::default());
    let good = rig.barsync(&["sync-info", "--primary", "pg"]);
    assert!(good.status.success(), "{}", describe(&good));
    let saved = fs::read(rig.server_directory().join("primary.info")).unwrap();
    for forged in ["{\"backups\": ", "[]", "{\"last_position\": -1}", ""] {
        forge_sync_info(&rig, forged);
        let cron = rig.barsync(&["cron"]);
        assert_eq!(
            cron.status.code(),
            Some(1),
            "{forged:?}: {}",
            describe(&cron)
        );
        assert!(
            stderr(&cron).contains("sync-info from the primary of server pg"),
            "{forged:?}: {}",
            describe(&cron)
        );
        assert_eq!(
            fs::read(rig.server_directory().join("primary.info")).unwrap(),
            saved,
            "{forged:?} replaced primary.info"
        );
    }
}

#[test]
fn traversal_in_backup_ids_and_wal_names_is_refused() {
    let primary = fixture_primary();
    let real = real_sync_info(primary.path());
    let rig = PassiveRig::new(&primary.path().join("primary.conf"), &RigOptions::default());
    let outside = rig.directory.path().join("outside");
    let cases = [
        (
            real.replace("\"20240102T120000\": {", "\"../../../outside\": {"),
            "is not a backup ID",
        ),
        (
            real.replace(
                "\"name\": \"000000010000000000000003\"",
                "\"name\": \"../../../outside/x\"",
            ),
            "not a WAL file name",
        ),
        (
            real.replace(
                "\"name\": \"000000010000000000000003\"",
                "\"name\": \"/etc/passwd\"",
            ),
            "not a WAL file name",
        ),
    ];
    for (forged, expected) in cases {
        assert_ne!(forged, real, "the forgery did not apply");
        forge_sync_info(&rig, &forged);
        let cron = rig.barsync(&["cron"]);
        assert_eq!(cron.status.code(), Some(1), "{}", describe(&cron));
        assert!(
            stderr(&cron).contains(expected),
            "{expected}: {}",
            describe(&cron)
        );
        assert!(
            !outside.exists(),
            "something was written outside the passive"
        );
        for path in everything_below(rig.directory.path()) {
            assert!(
                !path.to_string_lossy().contains("outside"),
                "{} was created",
                path.display()
            );
        }
    }
}

#[test]
fn a_wal_larger_than_declared_is_refused() {
    wal_larger_than_declared(&["cron"]);
}

#[test]
fn a_wal_larger_than_declared_is_refused_over_sftp() {
    wal_larger_than_declared(&["cron", "--sftp"]);
}

fn wal_larger_than_declared(cron_args: &[&str]) {
    let primary = fixture_primary();
    let real = real_sync_info(primary.path());
    let rig = PassiveRig::new(&primary.path().join("primary.conf"), &RigOptions::default());
    // Backups first (so the WAL sync is not waiting for one), then WALs with a lying size.
    let cron = rig.barsync(&["cron"]);
    assert!(cron.status.success(), "{}", describe(&cron));
    fs::remove_file(rig.server_directory().join("wals/sync-wals.info")).unwrap();
    let wal = rig
        .server_directory()
        .join("wals/0000000100000000/000000010000000000000003");
    fs::remove_file(&wal).unwrap();
    let forged = real.replace(
        "\"name\": \"000000010000000000000003\",\n            \"size\": 16384",
        "\"name\": \"000000010000000000000003\",\n            \"size\": 100",
    );
    assert_ne!(forged, real, "the forgery did not apply");
    forge_sync_info(&rig, &forged);
    let lying = rig.barsync(cron_args);
    assert_eq!(lying.status.code(), Some(1), "{}", describe(&lying));
    assert!(
        stderr(&lying).contains("more than the 100 expected"),
        "{}",
        describe(&lying)
    );
    assert!(!wal.exists(), "an oversize WAL was published");
    let leftovers: Vec<_> = everything_below(&rig.server_directory().join("wals"))
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains("barsync-"))
        })
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn symlinks_in_a_backup_and_planted_on_the_passive_are_never_followed() {
    let primary = fixture_primary();
    let id = "20240102T120000";
    let evil = primary
        .path()
        .join(format!("primary-home/pg/base/{id}/data/evil"));
    std::os::unix::fs::symlink("/etc", &evil).unwrap();
    let rig = PassiveRig::new(&primary.path().join("primary.conf"), &RigOptions::default());
    let cron = rig.barsync(&["cron"]);
    assert_eq!(cron.status.code(), Some(1), "{}", describe(&cron));
    assert!(
        stderr(&cron).contains("is a symbolic link"),
        "{}",
        describe(&cron)
    );
    let info = fs::read_to_string(
        rig.server_directory()
            .join(format!("meta/{id}-backup.info")),
    )
    .unwrap();
    assert!(info.contains("status=FAILED"), "{info}");
    fs::remove_file(&evil).unwrap();

    // A symlink planted on the passive where a directory of the backup goes.
    let target = rig.directory.path().join("elsewhere");
    fs::create_dir_all(&target).unwrap();
    let planted = rig
        .server_directory()
        .join(format!("base/{id}/data/global"));
    fs::remove_dir_all(&planted).ok();
    fs::create_dir_all(planted.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&target, &planted).unwrap();
    let again = rig.barsync(&["cron"]);
    assert_eq!(again.status.code(), Some(1), "{}", describe(&again));
    assert!(
        stderr(&again).contains("a symlink is never followed"),
        "{}",
        describe(&again)
    );
    assert_eq!(
        fs::read_dir(&target).unwrap().count(),
        0,
        "written through the link"
    );
}

#[test]
fn a_directory_swapped_for_a_symlink_during_the_copy_keeps_the_backup_from_done() {
    let primary = fixture_primary();
    let id = "20240102T120000";
    // 16 MiB of incompressible data: a chunk of its own, copied first; the session is held
    // inside it.
    let big = primary
        .path()
        .join(format!("primary-home/pg/base/{id}/data/base/1/50000"));
    fs::write(&big, incompressible(16 << 20, 0x9E37_79B9_7F4A_7C15)).unwrap();
    let rig = PassiveRig::new(&primary.path().join("primary.conf"), &RigOptions::default());
    let info = rig.barsync(&["sync-info", "--primary", "pg"]);
    assert!(info.status.success(), "{}", describe(&info));
    let forwarder = rig.forward_serve_sessions(1 << 20, AtLimit::Hold);
    let copy = rig
        .barsync_command(&["sync-backup", "-j", "1", "--part-size", "0", "pg", id])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn barsync");
    assert!(
        forwarder.wait_reached(std::time::Duration::from_secs(60)),
        "no session reached 1 MiB"
    );
    // data/global (pg_control, not copied yet) becomes a link to a directory outside.
    let global = rig
        .server_directory()
        .join(format!("base/{id}/data/global"));
    let elsewhere = rig.directory.path().join("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    fs::remove_dir(&global).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &global).unwrap();
    forwarder.resume();
    let copy = copy.wait_with_output().expect("wait for barsync");
    assert_eq!(rig.backup_status(id), "FAILED", "{}", describe(&copy));
    assert_eq!(copy.status.code(), Some(1), "{}", describe(&copy));
    assert!(
        stderr(&copy).contains("data/global"),
        "the error does not name the directory: {}",
        describe(&copy)
    );

    // The operator removes the link; the next run resumes and completes.
    fs::remove_file(&global).unwrap();
    let written_outside = everything_below(&elsewhere);
    let again = rig.barsync(&["sync-backup", "pg", id]);
    assert!(again.status.success(), "{}", describe(&again));
    assert_eq!(rig.backup_status(id), "DONE");
    assert!(global.join("pg_control").is_file());
    assert_eq!(everything_below(&elsewhere), written_outside);
}

/// Events that swap a directory of the backup for a symlink to `target` when the copy is
/// planned: after the destination's directories were created, before any file is fetched (a
/// directory swapped during a sync).
struct SwapAtPlan {
    directory: PathBuf,
    target: PathBuf,
    swapped: AtomicBool,
}

impl Events for SwapAtPlan {
    fn info(&self, _message: &str) {}
    fn plan(&self, label: &str, _files: u64, _bytes: u64) {
        if label != "WALs" && !self.swapped.swap(true, Ordering::SeqCst) {
            fs::remove_dir_all(&self.directory).unwrap();
            std::os::unix::fs::symlink(&self.target, &self.directory).unwrap();
        }
    }
}

impl FetchEvents for SwapAtPlan {
    fn warning(&self, _message: &str) {}
}

#[test]
fn a_directory_swapped_for_a_symlink_during_a_sync_gets_nothing_written_through_it() {
    let primary = fixture_primary();
    let rig = PassiveRig::new(
        &primary.path().join("primary.conf"),
        &RigOptions {
            server_lines: vec!["basebackup_retry_times = 0".into()],
            ..RigOptions::default()
        },
    );
    let info = rig.barsync(&["sync-info", "--primary", "pg"]);
    assert!(info.status.success(), "{}", describe(&info));
    let config = Config::load(Some(&rig.config)).unwrap();
    let server = config.server("pg").unwrap().unwrap();
    let options = PassiveOptions {
        config_file: rig.config.clone(),
        barman: barman_program(),
        ..PassiveOptions::default()
    };
    let id = "20240102T120000";
    let outside = rig.directory.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    let events = SwapAtPlan {
        directory: rig
            .server_directory()
            .join(format!("base/{id}/data/global")),
        target: outside.clone(),
        swapped: AtomicBool::new(false),
    };
    let passive = PassiveServer::new(&server, &options, &events).unwrap();
    let result = sync_backup(&passive, id);
    assert!(
        events.swapped.load(Ordering::SeqCst),
        "the copy was never planned"
    );
    assert_eq!(
        everything_below(&outside),
        Vec::<PathBuf>::new(),
        "written through the swapped directory"
    );
    let error = result.expect_err("the sync succeeded").to_string();
    assert!(
        error.contains("data/global/") && error.contains("symlinks are not followed"),
        "{error}"
    );
    assert_eq!(rig.backup_status(id), "FAILED");
}

/// Runs `barsync ARGS...` on the rig's passive, killed if it runs longer than `limit` (so a
/// passive that hangs fails the test instead of CI); what it printed and how long it took.
fn run_bounded(
    rig: &PassiveRig,
    args: &[&str],
    limit: std::time::Duration,
) -> (std::process::Output, std::time::Duration) {
    let out = rig.directory.path().join("bounded.out");
    let err = rig.directory.path().join("bounded.err");
    let start = std::time::Instant::now();
    let mut child = rig
        .barsync_command(args)
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!(
                "barsync {args:?} still running after {limit:?}; stderr so far:\n{}",
                fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let output = std::process::Output {
        status,
        stdout: fs::read(&out).unwrap(),
        stderr: fs::read(&err).unwrap(),
    };
    (output, start.elapsed())
}

const WAL_3_SIZE: &str = "\"name\": \"000000010000000000000003\",\n            \"size\": 16384";

#[test]
fn wal_sizes_no_segment_can_have_are_refused_before_anything_is_planned() {
    // Issue 13: a declared size of 10^15 made the planner split the WAL into parts until the
    // passive was OOM-killed; 2^40 took 11 s and failed with a misleading message.
    let primary = fixture_primary();
    let real = real_sync_info(primary.path());
    let rig = PassiveRig::new(&primary.path().join("primary.conf"), &RigOptions::default());
    for size in ["1099511627776", "1000000000000000"] {
        let forged = real.replace(
            WAL_3_SIZE,
            &format!("\"name\": \"000000010000000000000003\",\n            \"size\": {size}"),
        );
        assert_ne!(forged, real, "the forgery did not apply");
        forge_sync_info(&rig, &forged);
        let (cron, took) = run_bounded(&rig, &["cron"], std::time::Duration::from_secs(120));
        assert_eq!(cron.status.code(), Some(1), "{size}: {}", describe(&cron));
        let said = stderr(&cron);
        assert!(
            said.contains("server pg")
                && said.contains("000000010000000000000003")
                && said.contains(size)
                && said.contains("1 GiB"),
            "{size}: {}",
            describe(&cron)
        );
        assert!(
            took < std::time::Duration::from_secs(30),
            "{size}: took {took:?}"
        );
        assert!(
            !rig.server_directory().join("primary.info").exists(),
            "{size}: the forged sync-info was saved"
        );
    }
}

#[test]
fn a_wal_declared_larger_than_its_segment_size_is_refused() {
    // The primary's backups say xlog_segment_size = 16 MiB: a WAL of 40 MiB cannot be one.
    let primary = fixture_primary();
    let real = real_sync_info(primary.path());
    let rig = PassiveRig::new(&primary.path().join("primary.conf"), &RigOptions::default());
    let forged = real.replace(
        WAL_3_SIZE,
        "\"name\": \"000000010000000000000003\",\n            \"size\": 41943040",
    );
    assert_ne!(forged, real, "the forgery did not apply");
    forge_sync_info(&rig, &forged);
    let (cron, _) = run_bounded(&rig, &["cron"], std::time::Duration::from_secs(120));
    assert_eq!(cron.status.code(), Some(1), "{}", describe(&cron));
    let said = stderr(&cron);
    assert!(
        said.contains("WAL synchronisation for server pg failed")
            && said.contains("000000010000000000000003")
            && said.contains("41943040")
            && said.contains("xlog_segment_size 16777216"),
        "{}",
        describe(&cron)
    );
    assert!(
        !rig.server_directory()
            .join("wals/0000000100000000/000000010000000000000003")
            .exists(),
        "the WAL was copied"
    );
}

/// Makes the primary's `barman` run `script` (a shell script body) instead of Barman.
fn forge_primary_barman(rig: &PassiveRig, script: &str) {
    let wrapper = rig.directory.path().join("primary-bin/barman");
    fs::write(&wrapper, format!("#!/bin/sh\n{script}\n")).unwrap();
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_sync_info_that_never_ends_is_cut_at_its_size_limit() {
    let primary = fixture_primary();
    let rig = PassiveRig::new(&primary.path().join("primary.conf"), &RigOptions::default());
    forge_primary_barman(
        &rig,
        "printf '{\"wals\": ['\nexec yes '{\"name\": \"000000010000000000000003\", \"size\": 16384, \"time\": 1.0},'",
    );
    let (cron, took) = run_bounded(
        &rig,
        &["cron", "--sync-info-max-size", "4M"],
        std::time::Duration::from_secs(120),
    );
    assert_eq!(cron.status.code(), Some(1), "{}", describe(&cron));
    let said = stderr(&cron);
    assert!(
        said.contains("server pg")
            && said.contains("4194304 bytes")
            && said.contains("--sync-info-max-size"),
        "{}",
        describe(&cron)
    );
    assert!(took < std::time::Duration::from_secs(60), "took {took:?}");
    assert!(!rig.server_directory().join("primary.info").exists());
}

#[test]
fn a_primary_that_never_answers_sync_info_is_timed_out() {
    let primary = fixture_primary();
    let rig = PassiveRig::new(&primary.path().join("primary.conf"), &RigOptions::default());
    forge_primary_barman(&rig, "printf '{\"wals\": ['\nexec sleep 60");
    let (cron, took) = run_bounded(
        &rig,
        &["cron", "--sync-info-timeout", "3"],
        std::time::Duration::from_secs(120),
    );
    assert_eq!(cron.status.code(), Some(1), "{}", describe(&cron));
    let said = stderr(&cron);
    assert!(
        said.contains("server pg")
            && said.contains("3 seconds")
            && said.contains("--sync-info-timeout"),
        "{}",
        describe(&cron)
    );
    assert!(took < std::time::Duration::from_secs(30), "took {took:?}");
}

#[test]
fn setuid_and_setgid_bits_from_the_primary_are_dropped() {
    setid_bits_dropped(&["cron"]);
}

#[test]
fn setuid_and_setgid_bits_from_the_primary_are_dropped_over_sftp() {
    setid_bits_dropped(&["cron", "--sftp"]);
}

/// A backup never needs setuid or setgid: files (and directories) the passive writes never
/// get 04000 or 02000, whatever the primary's modes say.
fn setid_bits_dropped(cron_args: &[&str]) {
    let primary = fixture_primary();
    let id = "20240102T120000";
    let data = primary
        .path()
        .join(format!("primary-home/pg/base/{id}/data"));
    let modes = [("setuid-tool", 0o4755), ("setgid-tool", 0o2750)];
    for (name, mode) in modes {
        let path = data.join(name);
        fs::write(&path, b"#!/bin/sh\nid\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    }
    let shared = data.join("setgid-directory");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o2775)).unwrap();
    let rig = PassiveRig::new(&primary.path().join("primary.conf"), &RigOptions::default());
    let cron = rig.barsync(cron_args);
    assert!(cron.status.success(), "{}", describe(&cron));
    let copied = rig.server_directory().join(format!("base/{id}/data"));
    for (name, mode) in modes {
        let got = fs::metadata(copied.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777;
        assert_eq!(got, mode & 0o1777, "{name}: {got:o}");
    }
    let got = fs::metadata(copied.join("setgid-directory"))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(got, 0o775, "setgid-directory: {got:o}");
}
