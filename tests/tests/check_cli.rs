//! `barsync check` on a passive node behind a real sshd, against the sample Barman primary of
//! `barsync_sync::fixture::sample`: before the first sync, after it, and with a changed host
//! key.

use barsync_tests::passive_rig::{describe, fixture_primary, PassiveRig, RigOptions};

/// The names of the checks printed, in order.
fn check_names(output: &str) -> Vec<String> {
    output
        .lines()
        .skip(1)
        .map(|l| l.trim_start().split(": ").next().unwrap().to_owned())
        .collect()
}

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

    // A fresh passive: the primary is reachable, nothing is synced yet, and no maximum age
    // is set: the node is ready for its first cron, so check passes (as the README says to
    // run it first).
    let fresh = rig.barsync(&["check", "pg"]);
    let text = String::from_utf8_lossy(&fresh.stdout).into_owned();
    assert_eq!(fresh.status.code(), Some(0), "{}", describe(&fresh));
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
    assert!(line(&text, "last synced backup").contains("OK (no backup synced yet"));
    assert!(line(&text, "last synced WAL").contains("OK (no WAL synced yet"));
    assert!(line(&text, "primary.info").contains("OK (not saved yet"));
    let fresh_names = check_names(&text);

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
    assert_eq!(
        check_names(&text),
        fresh_names,
        "the same checks, in the same order"
    );
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
    // cron fails, with ssh's complaint on the one line of its error (not ssh's banner spread
    // over the log).
    let cron = rig.barsync(&["cron"]);
    assert_eq!(cron.status.code(), Some(1), "{}", describe(&cron));
    let stderr = String::from_utf8_lossy(&cron.stderr).into_owned();
    let error = stderr
        .lines()
        .find(|l| l.contains("sync-info execution on remote primary server pg failed"))
        .unwrap_or_else(|| panic!("{}", describe(&cron)));
    assert!(
        error.contains("HOST IDENTIFICATION HAS CHANGED")
            && error.contains("Host key verification failed"),
        "{}",
        describe(&cron)
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

#[test]
fn check_keeps_its_shape_when_the_primary_is_unreachable_and_speaks_nagios() {
    let primary = fixture_primary();
    let rig = PassiveRig::new(&primary.path().join("primary.conf"), &RigOptions::default());
    let reachable = rig.barsync(&["check", "pg"]);
    let reachable_text = String::from_utf8_lossy(&reachable.stdout).into_owned();
    assert_eq!(reachable.status.code(), Some(0), "{}", describe(&reachable));
    let nagios = rig.barsync(&["check", "--nagios", "pg"]);
    assert_eq!(nagios.status.code(), Some(0), "{}", describe(&nagios));
    assert_eq!(
        String::from_utf8_lossy(&nagios.stdout).trim(),
        "BARSYNC OK - Ready to serve the Espresso backup for pg",
        "{}",
        describe(&nagios)
    );
    // The passing checks are not written to the log one by one on every run.
    let log = std::fs::read_to_string(rig.directory.path().join("passive.log")).unwrap_or_default();
    assert!(!log.contains("ssh output clean"), "{log}");

    // Nothing listens on the primary's port any more.
    let config = std::fs::read_to_string(&rig.config).unwrap();
    let port = rig.sshd.port().to_string();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port().to_string();
    drop(closed);
    std::fs::write(&rig.config, config.replace(&port, &closed_port)).unwrap();
    let unreachable = rig.barsync(&["check", "pg"]);
    let text = String::from_utf8_lossy(&unreachable.stdout).into_owned();
    assert_eq!(
        unreachable.status.code(),
        Some(1),
        "{}",
        describe(&unreachable)
    );
    assert_eq!(check_names(&text), check_names(&reachable_text), "{text}");
    assert!(line(&text, "ssh").contains("FAILED"), "{text}");
    assert!(!line(&text, "ssh host key").contains("OK"), "{text}");
    assert!(
        line(&text, "barsync on the primary").contains("FAILED"),
        "{text}"
    );
    let nagios = rig.barsync(&["check", "--nagios", "pg"]);
    assert_eq!(nagios.status.code(), Some(2), "{}", describe(&nagios));
    let text = String::from_utf8_lossy(&nagios.stdout).into_owned();
    let first = text.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("BARSYNC CRITICAL - server pg has issues * pg FAILED: ")
            && first.contains("ssh"),
        "{}",
        describe(&nagios)
    );
    assert!(
        text.lines().any(|l| l.starts_with("pg.ssh: FAILED (")),
        "{text}"
    );
}

#[test]
fn check_json_answers_for_a_bad_configuration_or_an_unknown_server() {
    let primary = fixture_primary();
    let rig = PassiveRig::new(&primary.path().join("primary.conf"), &RigOptions::default());
    let good = std::fs::read_to_string(&rig.config).unwrap();
    for (config, args) in [
        (good.clone(), &["check", "--json", "nosuchserver"][..]),
        (
            "barman_home = /x\n".to_owned() + &good,
            &["check", "--json", "pg"],
        ),
    ] {
        std::fs::write(&rig.config, config).unwrap();
        let output = rig.barsync(args);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{args:?}: {}",
            describe(&output)
        );
        let document: serde_json::Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", describe(&output)));
        assert_eq!(document["command"], "check", "{document}");
        assert_eq!(document["ok"], false, "{document}");
        assert!(!document["errors"][0].as_str().unwrap().is_empty());
    }
    std::fs::write(&rig.config, good).unwrap();
    let nagios = rig.barsync(&["check", "--nagios", "nosuchserver"]);
    assert_eq!(nagios.status.code(), Some(2), "{}", describe(&nagios));
    assert!(
        String::from_utf8_lossy(&nagios.stdout).starts_with("BARSYNC CRITICAL - "),
        "{}",
        describe(&nagios)
    );
}

#[test]
fn an_sftp_only_primary_can_pass_check() {
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
    let output = rig.barsync(&["check", "pg"]);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert!(
        line(&text, "barsync on the primary").contains("OK (not installed: whole files over SFTP"),
        "{text}"
    );
}

#[test]
fn check_says_whether_the_primarys_serve_is_read_only() {
    let primary = fixture_primary();
    let rig = PassiveRig::new(&primary.path().join("primary.conf"), &RigOptions::default());
    let cron = rig.barsync(&["cron"]);
    assert!(cron.status.success(), "{}", describe(&cron));
    let open = rig.barsync(&["check", "pg"]);
    let text = String::from_utf8_lossy(&open.stdout).into_owned();
    assert!(
        line(&text, "barsync serve").contains("OK (read-write"),
        "{}",
        describe(&open)
    );
    // The primary pins the passive's key with the README's dispatcher: barsync serve always
    // runs --read-only, sync-info runs without a shell, check's `true` answers, nothing else.
    let dispatcher = rig.directory.path().join("pin-serve");
    std::fs::write(
        &dispatcher,
        format!(
            "#!/bin/sh\nset -f\ncase \"$SSH_ORIGINAL_COMMAND\" in\n  \"'barsync' serve \"*) exec barsync serve --read-only --root '{}' ;;\n  \"barman sync-info \"*) exec $SSH_ORIGINAL_COMMAND ;;\n  true) exit 0 ;;\n  *) echo \"refused by barsync-passive-key\" >&2; exit 1 ;;\nesac\n",
            primary.path().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &dispatcher,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let keys = rig.sshd.directory().join("authorized_keys");
    let key = std::fs::read_to_string(&keys).unwrap();
    std::fs::write(&keys, format!("command=\"{}\" {key}", dispatcher.display())).unwrap();
    let pinned = rig.barsync(&["check", "pg"]);
    let text = String::from_utf8_lossy(&pinned.stdout).into_owned();
    assert!(
        line(&text, "barsync serve").contains("OK (read-only"),
        "{}",
        describe(&pinned)
    );
    // The key refuses the shell command that looks for programs: what the session and the
    // last sync-info showed stands in, and the recommended setup passes its check.
    assert!(
        line(&text, "barsync on the primary").contains("OK (answered a barsync session"),
        "{}",
        describe(&pinned)
    );
    assert!(
        line(&text, "barman on the primary")
            .contains("OK (not looked for: the primary's key refuses shell commands"),
        "{}",
        describe(&pinned)
    );
    assert_eq!(pinned.status.code(), Some(0), "{}", describe(&pinned));
    // And the passive still syncs through it.
    let again = rig.barsync(&["cron"]);
    assert!(again.status.success(), "{}", describe(&again));
}
