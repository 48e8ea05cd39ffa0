//! `barsync check` on a passive node behind a real sshd, against the hand-made Barman primary
//! of `make-barman-fixture.sh`: before the first sync, after it, and with a changed host key.

use barsync_tests::passive_rig::{describe, fixture_primary, PassiveRig, RigOptions};

fn line<'a>(output: &'a str, check: &str) -> &'a str {
    output
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{check}: ")))
        .unwrap_or_else(|| panic!("no {check:?} line in:\n{output}"))
}

#[test]
fn check_reports_each_check_and_a_changed_host_key() {
    let primary = fixture_primary();
    let mut rig = PassiveRig::new(&primary.path().join("primary.conf"), &RigOptions::default());

    // A fresh passive: the primary is reachable, nothing is synced yet.
    let fresh = rig.barsync(&["check", "pg"]);
    let text = String::from_utf8_lossy(&fresh.stdout).into_owned();
    assert_eq!(fresh.status.code(), Some(1), "{}", describe(&fresh));
    assert!(text.starts_with("Server pg:"), "{text}");
    for check in [
        "ssh",
        "ssh host key",
        "ssh output clean",
        "barsync on the primary",
        "barman on the primary",
        "directories",
    ] {
        assert!(
            line(&text, check).contains(": OK"),
            "{check} not OK:\n{}",
            describe(&fresh)
        );
    }
    assert!(line(&text, "last synced backup").contains("FAILED (no backup synced yet)"));
    assert!(line(&text, "primary.info").contains("FAILED"));

    // After a sync every check passes, with the newest backup and WAL named.
    let cron = rig.barsync(&["cron"]);
    assert!(cron.status.success(), "{}", describe(&cron));
    let synced = rig.barsync(&["check", "pg"]);
    let text = String::from_utf8_lossy(&synced.stdout).into_owned();
    assert_eq!(synced.status.code(), Some(0), "{}", describe(&synced));
    assert!(!text.contains("FAILED"), "{text}");
    assert!(line(&text, "last synced backup").contains("20240102T120000"));
    assert!(line(&text, "last synced WAL").contains("000000020000000000000007"));
    assert!(line(&text, "compression").contains("OK"));
    let json = rig.barsync(&["check", "--json", "pg"]);
    assert_eq!(json.status.code(), Some(0), "{}", describe(&json));
    let document: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(document["ok"], true, "{document}");
    let checks = document["servers"][0]["checks"].as_array().unwrap();
    assert_eq!(
        checks.len(),
        text.lines().count() - 1,
        "one per line: {document}"
    );
    let backup = checks
        .iter()
        .find(|c| c["name"] == "last synced backup")
        .unwrap();
    assert!(backup["detail"]
        .as_str()
        .unwrap()
        .contains("20240102T120000"));

    // A different host key on the same address is reported as a changed host key.
    rig.sshd.rotate_host_key().unwrap();
    let changed = rig.barsync(&["check", "pg"]);
    let text = String::from_utf8_lossy(&changed.stdout).into_owned();
    assert_eq!(changed.status.code(), Some(1), "{}", describe(&changed));
    assert!(
        line(&text, "ssh host key").contains("FAILED (the primary's host key has CHANGED"),
        "{}",
        describe(&changed)
    );
    assert!(line(&text, "ssh").contains("FAILED"), "{text}");
    let json = rig.barsync(&["check", "--json", "pg"]);
    assert_eq!(json.status.code(), Some(1), "{}", describe(&json));
    let document: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(document["ok"], false, "{document}");
    let key = &document["servers"][0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "ssh host key")
        .unwrap();
    assert_eq!(key["ok"], false, "{document}");
    assert!(
        key["detail"].as_str().unwrap().contains("CHANGED"),
        "{document}"
    );
}

#[test]
fn check_fails_on_a_compression_mismatch_and_an_old_backup() {
    let primary = fixture_primary();
    let rig = PassiveRig::new(
        &primary.path().join("primary.conf"),
        &RigOptions {
            server_lines: vec!["last_backup_maximum_age = 1 day".into()],
            ..RigOptions::default()
        },
    );
    let cron = rig.barsync(&["cron"]);
    assert!(cron.status.success(), "{}", describe(&cron));
    // The fixture's backups are from 2024: older than a day.
    let output = rig.barsync(&["check", "pg"]);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        line(&text, "last synced backup").contains("more than last_backup_maximum_age"),
        "{text}"
    );
    // This node now says gzip; the primary stores WALs uncompressed.
    let config = std::fs::read_to_string(&rig.config).unwrap();
    std::fs::write(
        &rig.config,
        config.replace("[pg]\n", "[pg]\ncompression = gzip\n"),
    )
    .unwrap();
    let output = rig.barsync(&["check", "pg"]);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        line(&text, "compression").contains("FAILED (the primary stores WALs with compression None, this node is configured with gzip"),
        "{text}"
    );
}
