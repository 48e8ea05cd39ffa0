//! `barsync status` on a passive node behind a real sshd: before any sync, after a cron, and
//! when the primary has archived WALs the passive does not have yet.

use std::fs;

use barsync_tests::passive_rig::{describe, fixture_primary, PassiveRig, RigOptions};

fn line<'a>(text: &'a str, label: &str) -> &'a str {
    text.lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{text}"))
}

#[test]
fn status_shows_the_last_backup_the_wal_lag_and_the_last_cron() {
    let primary = fixture_primary();
    let rig = PassiveRig::new(&primary.path().join("primary.conf"), &RigOptions::default());

    let fresh = rig.barsync(&["status", "pg"]);
    assert_eq!(fresh.status.code(), Some(0), "{}", describe(&fresh));
    let text = String::from_utf8_lossy(&fresh.stdout).into_owned();
    assert!(
        line(&text, "last synced backup:").contains("none yet"),
        "{text}"
    );
    assert!(line(&text, "last cron:").contains("never"), "{text}");

    let cron = rig.barsync(&["cron"]);
    assert!(cron.status.success(), "{}", describe(&cron));
    let synced = rig.barsync(&["status", "pg"]);
    let text = String::from_utf8_lossy(&synced.stdout).into_owned();
    assert!(
        line(&text, "last synced backup:").contains("20240102T120000"),
        "{text}"
    );
    assert!(
        line(&text, "last synced backup:").contains("2 DONE"),
        "{text}"
    );
    assert!(line(&text, "WALs:").contains("caught up"), "{text}");
    assert!(line(&text, "last cron:").contains("OK"), "{text}");
    assert!(
        line(&text, "last cron:").contains("2 backups synced"),
        "{text}"
    );
    assert!(!line(&text, "disk:").contains(" 0 B"), "{text}");

    // The primary's list now says it has WALs three segments ahead of this node's newest.
    let info_path = rig.server_directory().join("primary.info");
    let info = fs::read_to_string(&info_path).unwrap();
    let newest_here = "000000020000000000000007";
    assert!(info.contains(newest_here), "{info}");
    let mut document: serde_json::Value = serde_json::from_str(&info).unwrap();
    document["last_name"] = serde_json::json!("00000002000000000000000A");
    fs::write(&info_path, document.to_string()).unwrap();
    let behind = rig.barsync(&["status", "--json", "pg"]);
    assert_eq!(behind.status.code(), Some(0), "{}", describe(&behind));
    let json: serde_json::Value = serde_json::from_slice(&behind.stdout).unwrap();
    let server = &json["servers"][0];
    assert_eq!(server["server"], "pg", "{json}");
    assert_eq!(server["wal_lag_segments"], 3, "{json}");
    assert_eq!(server["newest_wal"]["name"], newest_here, "{json}");
    assert_eq!(server["last_cron"]["ok"], true, "{json}");
    assert_eq!(server["backups_done"], 2, "{json}");

    // A failed run is what status shows next.
    let config = fs::read_to_string(&rig.config).unwrap();
    let port = rig.sshd.port().to_string();
    fs::write(&rig.config, config.replace(&port, "1")).unwrap();
    let failed = rig.barsync(&["cron"]);
    assert_eq!(failed.status.code(), Some(1), "{}", describe(&failed));
    let after = rig.barsync(&["status"]);
    let text = String::from_utf8_lossy(&after.stdout).into_owned();
    assert!(line(&text, "last cron:").contains("FAILED"), "{text}");
}
