//! `sync-info --primary` side by side with `barman sync-info --primary` on the shared fixture
//! (its fakessh runs the primary's real Barman): same remote command, same output, same
//! primary.info, same self-recovery and error handling.

mod common;

use std::path::Path;

use barsync_sync::syncinfo::{run_sync_info, CommandOutcome, RemoteProgram, SyncInfoArgs};
use common::*;

fn ours(config: &Path, extra: &[&str]) -> CommandOutcome {
    run_sync_info(&SyncInfoArgs {
        config: Some(config),
        server: "pg",
        last_wal: extra.first().copied(),
        last_position: extra.get(1).copied(),
        primary: true,
        remote_program: RemoteProgram::Barman,
        ..SyncInfoArgs::default()
    })
}

fn last_ssh_calls(base: &Path, count: usize) -> Vec<String> {
    let log = std::fs::read_to_string(base.join("ssh.log")).unwrap();
    let lines: Vec<String> = log.lines().map(str::to_owned).collect();
    lines[lines.len().saturating_sub(count)..].to_vec()
}

/// Runs Barman then barsync with the same `--primary` request; compares stdout, exit code,
/// warnings and errors, the remote commands run, and primary.info.
fn compare(base: &Path, config: &Path, extra: &[&str], remote_calls: usize) -> CommandOutcome {
    let primary_info = base.join("passive-home/pg/primary.info");
    let _ = std::fs::remove_file(&primary_info);
    let mut args = vec!["sync-info", "--primary", "pg"];
    args.extend_from_slice(extra);
    let barman = run_barman(config, &args);
    let barman_calls = last_ssh_calls(base, remote_calls);
    let barman_file = std::fs::read(&primary_info).ok();
    let _ = std::fs::remove_file(&primary_info);
    let outcome = ours(config, extra);
    let our_calls = last_ssh_calls(base, remote_calls);
    assert_eq!(our_calls, barman_calls, "remote commands for {extra:?}");
    assert_eq!(
        String::from_utf8_lossy(&outcome.stdout),
        String::from_utf8_lossy(&barman.stdout),
        "stdout for {extra:?}"
    );
    assert_eq!(
        barman.status.code(),
        Some(i32::from(outcome.exit_code)),
        "exit code for {extra:?}: {:?}",
        outcome.stderr
    );
    let barman_stderr: Vec<String> = String::from_utf8_lossy(&barman.stderr)
        .lines()
        .filter(|l| l.starts_with("WARNING") || l.starts_with("ERROR"))
        .map(str::to_owned)
        .collect();
    let our_stderr: Vec<String> = outcome
        .stderr
        .iter()
        .flat_map(|l| l.lines())
        .map(str::to_owned)
        .collect();
    assert_eq!(our_stderr, barman_stderr, "stderr for {extra:?}");
    assert_eq!(
        std::fs::read(&primary_info).ok(),
        barman_file,
        "primary.info for {extra:?}"
    );
    outcome
}

#[test]
fn full_and_incremental_requests_and_self_recovery() {
    let dir = tempfile::tempdir().unwrap();
    make_fixture(dir.path());
    let passive = dir.path().join("passive.conf");
    let full = compare(dir.path(), &passive, &[], 1);
    assert_eq!(full.exit_code, 0);
    assert!(last_ssh_calls(dir.path(), 1)[0].ends_with("[primary-barman] [barman sync-info pg]"));
    let primary_info = std::fs::read(dir.path().join("passive-home/pg/primary.info")).unwrap();
    let direct = run_barman(&dir.path().join("primary.conf"), &["sync-info", "pg"]);
    assert_eq!(
        primary_info, direct.stdout,
        "primary.info holds the primary's raw output"
    );

    let incremental = compare(
        dir.path(),
        &passive,
        &["000000020000000000000007", "503"],
        1,
    );
    assert!(last_ssh_calls(dir.path(), 1)[0]
        .ends_with("[barman sync-info pg 000000020000000000000007  503 ]"));
    assert!(String::from_utf8_lossy(&incremental.stdout).contains("\"wals\": [],"));

    // The primary answers 1 (older than its first WAL): both retry with a full request.
    let recovered = compare(dir.path(), &passive, &["000000000000000000000001"], 2);
    assert_eq!(recovered.exit_code, 0);
    assert!(recovered.stderr[0].starts_with("WARNING: sync-info is out of sync. Self-recovery"));
}

#[test]
fn forwarded_config_path_and_failures() {
    let dir = tempfile::tempdir().unwrap();
    make_fixture(dir.path());
    let passive = dir.path().join("passive.conf");
    let text = std::fs::read_to_string(&passive).unwrap();

    let forwarded = dir.path().join("forward.conf");
    std::fs::write(&forwarded, format!("{text}forward_config_path = true\n")).unwrap();
    compare(dir.path(), &forwarded, &[], 1);
    let call = &last_ssh_calls(dir.path(), 1)[0];
    assert!(
        call.ends_with(&format!("[barman -c {} sync-info pg]", forwarded.display())),
        "{call}"
    );

    let ssh_fails = dir.path().join("ssh-fails.conf");
    let failing = text.replace(
        &format!(
            "primary_ssh_command = {}/bin/fakessh primary-barman",
            dir.path().display()
        ),
        "primary_ssh_command = sh -c 'echo ssh: connect refused >&2; exit 255' --",
    );
    assert_ne!(failing, text);
    std::fs::write(&ssh_fails, failing).unwrap();
    let outcome = compare(
        dir.path(),
        &ssh_fails,
        &["000000020000000000000007", "503"],
        0,
    );
    assert_eq!(outcome.exit_code, 1);
    assert_eq!(
        outcome.stderr,
        // The same line as Barman's, without the newline Barman keeps from ssh's output (a
        // blank line in its log): the primary's error output is joined on one line.
        vec!["ERROR: sync-info execution on remote primary server pg failed: ssh: connect refused"]
    );

    let not_passive = compare(dir.path(), &dir.path().join("primary.conf"), &[], 0);
    assert_eq!(not_passive.stderr, vec!["ERROR: server pg is not passive"]);
}

#[test]
fn malformed_answer_is_a_clear_error_and_nothing_is_saved() {
    let dir = tempfile::tempdir().unwrap();
    make_fixture(dir.path());
    let text = std::fs::read_to_string(dir.path().join("passive.conf")).unwrap();
    let config = dir.path().join("bad-json.conf");
    let fake_primary = format!("{}/bin/fakessh primary-barman", dir.path().display());
    std::fs::write(
        &config,
        text.replace(
            &fake_primary,
            "printf '{\"last_position\": \"503\"}' ; true",
        ),
    )
    .unwrap();
    let outcome = ours(&config, &[]);
    assert_eq!(outcome.exit_code, 1);
    assert_eq!(
        outcome.stderr,
        vec!["ERROR: sync-info from the primary of server pg: field 'last_position': expected an integer, found a string"]
    );
    assert!(!dir.path().join("passive-home/pg/primary.info").exists());
}
