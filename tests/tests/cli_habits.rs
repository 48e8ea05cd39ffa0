//! Barman's command-line habits, with the real binary on a passive node behind a real sshd:
//! the configuration before the subcommand (`barsync -c FILE COMMAND`, as `barman -c FILE
//! COMMAND`), `all` wherever a server is named, and usage errors (exit status 2) for values
//! that cannot work.

use barsync_tests::passive_rig::{describe, fixture_primary, PassiveRig, RigOptions};

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn the_configuration_before_the_command_is_accepted_by_every_passive_command() {
    let primary = fixture_primary();
    let rig = PassiveRig::new(&primary.path().join("primary.conf"), &RigOptions::default());

    let cron = rig.barsync_config_first(&["cron"]);
    assert_eq!(cron.status.code(), Some(0), "{}", describe(&cron));
    assert_eq!(rig.backup_status("20240102T120000"), "DONE");
    for args in [
        &["sync-backup", "pg", "latest"][..],
        &["sync-wals", "pg"],
        &["list-backups", "pg"],
        &["check", "pg"],
        &["sync-info", "pg"],
        &["cron", "pg"],
    ] {
        let output = rig.barsync_config_first(args);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{args:?}: {}",
            describe(&output)
        );
    }
    // The subcommand's own -c still works, and wins over the one before it.
    let both = rig.barsync(&["list-backups", "pg"]);
    assert_eq!(both.status.code(), Some(0), "{}", describe(&both));

    // -c before a command that reads no configuration is a usage error, not silently ignored.
    let copy = rig.barsync_config_first(&["copy", "/nonexistent-a", "/nonexistent-b"]);
    assert_eq!(copy.status.code(), Some(2), "{}", describe(&copy));
}

#[test]
fn list_backups_all_lists_every_passive_server() {
    let primary = fixture_primary();
    let rig = PassiveRig::new(&primary.path().join("primary.conf"), &RigOptions::default());
    let cron = rig.barsync(&["cron"]);
    assert_eq!(cron.status.code(), Some(0), "{}", describe(&cron));

    let all = rig.barsync(&["list-backups", "all"]);
    assert_eq!(all.status.code(), Some(0), "{}", describe(&all));
    let text = stdout(&all);
    assert!(text.starts_with("Server pg "), "{text}");
    assert!(text.contains("20240102T120000"), "{text}");
    let json = rig.barsync(&["list-backups", "--json", "all"]);
    assert_eq!(json.status.code(), Some(0), "{}", describe(&json));
    let document: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(document["ok"], true, "{document}");
    assert_eq!(document["servers"][0]["server"], "pg", "{document}");
    assert!(document["servers"][0]["backups"].as_array().unwrap().len() >= 2);
}

#[test]
fn values_that_cannot_work_are_usage_errors() {
    let primary = fixture_primary();
    let rig = PassiveRig::new(&primary.path().join("primary.conf"), &RigOptions::default());
    for args in [
        &["cron", "--transport", "foo"][..],
        &["sync-wals", "pg", "--transport", "ssh2"],
        &["cron", "-j", "0"],
        &["sync-backup", "pg", "latest", "--jobs", "0"],
        &["copy", "--transport", "foo", "/a", "/b"],
    ] {
        let output = rig.barsync(args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            describe(&output)
        );
        assert!(
            !rig.server_directory().join("base").exists(),
            "{args:?} started a sync"
        );
    }
}

/// What the shell completion of `barsync WORDS...` offers for the last word (clap's
/// `COMPLETE=bash` protocol, as the script from `COMPLETE=bash barsync` calls it), with the
/// configuration at `~/.barman.conf`.
fn complete(home: &std::path::Path, words: &[&str]) -> Vec<String> {
    let output = std::process::Command::new(barsync_tests::binaries::barsync())
        .env("HOME", home)
        .env("COMPLETE", "bash")
        .env("_CLAP_COMPLETE_INDEX", (words.len() - 1).to_string())
        .env("_CLAP_COMPLETE_COMP_TYPE", "9")
        .env("_CLAP_COMPLETE_SPACE", "true")
        .env("_CLAP_IFS", "\n")
        .arg("--")
        .args(words)
        .output()
        .expect("run barsync");
    assert!(output.status.success(), "{}", describe(&output));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn shell_completion_offers_the_passive_server_names() {
    let primary = fixture_primary();
    let rig = PassiveRig::new(&primary.path().join("primary.conf"), &RigOptions::default());
    let home = tempfile::tempdir().unwrap();
    let mut config = std::fs::read_to_string(&rig.config).unwrap();
    config.push_str("\n[main]\ndescription = not passive\nconninfo = host=x\n");
    std::fs::write(home.path().join(".barman.conf"), config).unwrap();

    let check = complete(home.path(), &["barsync", "check", ""]);
    assert!(check.contains(&"pg".to_owned()), "{check:?}");
    assert!(check.contains(&"all".to_owned()), "{check:?}");
    assert!(!check.contains(&"main".to_owned()), "{check:?}");
    let sync_wals = complete(home.path(), &["barsync", "sync-wals", "p"]);
    assert_eq!(sync_wals, vec!["pg".to_owned()]);
    let commands = complete(home.path(), &["barsync", "sta"]);
    assert_eq!(commands, vec!["status".to_owned()]);
}

/// A server with `active = false` is left alone by cron, as Barman's cron leaves it (nothing
/// copied, its retention not applied), and cron says so; the other servers are synced.
#[test]
fn cron_skips_an_inactive_server_as_barman_does() {
    let primary = fixture_primary();
    let rig = PassiveRig::new(
        &primary.path().join("primary.conf"),
        &RigOptions {
            server_lines: vec!["active = false".to_owned()],
            ..RigOptions::default()
        },
    );
    for args in [
        &["cron", "--dry-run"][..],
        &["cron", "--dry-run", "pg"][..],
        &["cron"][..],
        &["cron", "pg"][..],
    ] {
        let cron = rig.barsync(args);
        assert_eq!(cron.status.code(), Some(0), "{}", describe(&cron));
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&cron.stdout),
            String::from_utf8_lossy(&cron.stderr)
        );
        assert!(
            said.contains("Server pg is inactive (active = false)"),
            "{}",
            describe(&cron)
        );
        let base = rig.server_directory().join("base");
        let copied = std::fs::read_dir(&base).map(|d| d.count()).unwrap_or(0);
        assert_eq!(copied, 0, "{args:?} copied backups of an inactive server");
    }
}
