//! `--dry-run` of cron, sync-backup and sync-wals, with the real binary on a passive node
//! behind a real sshd: what would be copied, skipped, purged and deleted by retention, and
//! nothing changed on the passive.

use std::fs;
use std::path::Path;

use barsync_tests::passive_rig::{describe, fixture_primary, PassiveRig, RigOptions};

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Backups and WALs in the passive's catalog (what a dry run must not change).
fn catalog(server: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for directory in ["meta", "base"] {
        if let Ok(entries) = fs::read_dir(server.join(directory)) {
            found.extend(entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()));
        }
    }
    if let Ok(xlogdb) = fs::read_to_string(server.join("wals/pg-xlog.db")) {
        found.extend(xlogdb.lines().map(str::to_owned));
    }
    found.sort();
    found
}

#[test]
fn dry_runs_say_what_would_be_done_and_change_nothing() {
    let primary = fixture_primary();
    let rig = PassiveRig::new(
        &primary.path().join("primary.conf"),
        &RigOptions {
            server_lines: vec!["retention_policy = REDUNDANCY 1".into()],
            ..RigOptions::default()
        },
    );
    let server = rig.server_directory();

    let dry = rig.barsync(&["cron", "--dry-run"]);
    assert_eq!(dry.status.code(), Some(0), "{}", describe(&dry));
    let text = stdout(&dry);
    for expected in [
        "Dry run for server pg (nothing is changed):",
        "would copy backup 20240101T120000",
        "would copy backup 20240102T120000",
        "would copy 9 WAL files",
        "retention policy would then delete backup 20240101T120000",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing:\n{}",
            describe(&dry)
        );
    }
    assert_eq!(catalog(&server), Vec::<String>::new(), "{}", describe(&dry));
    assert!(
        !rig.home.join(".pg-cron.lock").exists() && !server.join("wals/sync-wals.info").exists()
    );

    let json = rig.barsync(&["cron", "-n", "--json"]);
    assert_eq!(json.status.code(), Some(0), "{}", describe(&json));
    let document: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let plan = &document["servers"][0];
    assert_eq!(document["dry_run"], true, "{document}");
    assert_eq!(plan["copy"].as_array().unwrap().len(), 2, "{document}");
    assert_eq!(plan["wals"]["files"], 9, "{document}");
    assert_eq!(plan["retention"][0], "20240101T120000", "{document}");

    // sync-backup and sync-wals plan from the saved primary.info.
    let backup = rig.barsync(&["sync-backup", "pg", "latest", "--dry-run"]);
    assert_eq!(backup.status.code(), Some(0), "{}", describe(&backup));
    assert!(
        stdout(&backup).contains("would copy backup 20240102T120000"),
        "{}",
        describe(&backup)
    );
    assert!(
        !stdout(&backup).contains("20240101T120000"),
        "{}",
        describe(&backup)
    );
    // sync-wals alone, with no backup here yet, would copy nothing, as it says.
    let wals = rig.barsync(&["sync-wals", "pg", "--dry-run"]);
    assert!(
        stdout(&wals).contains("would copy no WAL: No base backup for server pg"),
        "{}",
        describe(&wals)
    );
    assert_eq!(catalog(&server), Vec::<String>::new());

    // After the real run, the dry run says the obsolete backup is left alone, and why.
    let cron = rig.barsync(&["cron"]);
    assert!(cron.status.success(), "{}", describe(&cron));
    let after = catalog(&server);
    let dry = rig.barsync(&["cron", "--dry-run"]);
    let text = stdout(&dry);
    assert!(
        text.contains(
            "would not copy backup 20240101T120000: Remote backup pg/20240101T120000 is obsolete"
        ),
        "{}",
        describe(&dry)
    );
    assert!(!text.contains("would copy backup"), "{}", describe(&dry));
    assert!(
        text.contains("would copy no WAL: No WAL synchronisation required for server pg"),
        "{}",
        describe(&dry)
    );
    assert_eq!(catalog(&server), after);
}
