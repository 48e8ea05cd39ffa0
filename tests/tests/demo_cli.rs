//! `barsync demo` as a user runs it: a sample Barman primary and passive node built in a
//! temporary directory, synced twice through child `barsync serve` processes, verified.

use std::process::Command;

use barsync_tests::binaries::barsync;

#[test]
fn demo_syncs_a_sample_primary_twice_and_verifies_the_passive() {
    let output = Command::new(barsync())
        .args(["demo", "--size-mib", "8"])
        .output()
        .expect("run barsync demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "status {:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status.code()
    );
    for expected in [
        "2 DONE backups of 8.0 MiB",
        "round 1:",
        "round 2:",
        "on the wire",
        "verified: 3 backups DONE on the passive, all ",
        "the xlog db lists each of 11 WALs once",
        "files linked to the previous backup",
    ] {
        assert!(stdout.contains(expected), "{expected:?} missing:\n{stdout}");
    }
    // The third backup shares most of its pages with the second: a small part of it
    // crosses the pipes.
    let line = stdout
        .lines()
        .find(|l| l.contains("synced with") && l.contains("on the wire ("))
        .unwrap_or_else(|| panic!("no third-backup line:\n{stdout}"));
    let percent: f64 = line
        .split("on the wire (")
        .nth(1)
        .and_then(|rest| rest.split('%').next())
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no percentage in {line:?}"));
    assert!(percent < 25.0, "{line}");
}

#[test]
fn demo_keeps_its_catalogs_in_dir_and_barsync_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(barsync())
        .args(["demo", "--size-mib", "4", "--dir"])
        .arg(dir.path())
        .output()
        .expect("run barsync demo");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let passive = dir.path().join("passive.conf");
    let listing = Command::new(barsync())
        .args(["list-backups", "-c"])
        .arg(&passive)
        .arg("pg")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.status.success(), "{text}");
    assert_eq!(text.matches("synced").count(), 3, "{text}");
    let json = Command::new(barsync())
        .args(["cron", "--json", "-c"])
        .arg(&passive)
        .output()
        .unwrap();
    assert!(
        json.status.success(),
        "{}",
        String::from_utf8_lossy(&json.stderr)
    );
    let text = String::from_utf8_lossy(&json.stdout);
    assert!(text.trim_start().starts_with('{'), "{text}");
    for expected in [
        "\"command\": \"cron\"",
        "\"ok\": true",
        "\"server\": \"pg\"",
        "\"bytes_on_the_wire\": 0",
    ] {
        assert!(text.contains(expected), "{expected} missing:\n{text}");
    }
}
