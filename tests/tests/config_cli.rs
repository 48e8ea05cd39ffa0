//! The barsync binary on configurations that are wrong in ways Barman tolerates: another
//! `barman_user` than the one running (refused, as Barman refuses), and settings Barman
//! ignores (misspelt keys, invalid values, inline comments), which barsync must say out loud.
//! No primary is needed: every command stops or fails before reaching it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use barsync_tests::binaries::barsync;

/// The passive commands, each as run against server `pg`.
const PASSIVE_COMMANDS: [&[&str]; 6] = [
    &["cron"],
    &["sync-backup", "pg", "latest"],
    &["sync-wals", "pg"],
    &["check", "pg"],
    &["list-backups", "pg"],
    &["sync-info", "pg"],
];

fn current_user() -> String {
    let output = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// A configuration with one passive server `pg` (its primary unreachable) under `dir`.
fn write_config(dir: &Path, barman_lines: &str, server_lines: &str) -> PathBuf {
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let path = dir.join("barman.conf");
    std::fs::write(
        &path,
        format!(
            "[barman]\nbarman_home = {}\n{barman_lines}\n[pg]\nprimary_ssh_command = false\n{server_lines}\n",
            home.display()
        ),
    )
    .unwrap();
    path
}

fn run(config: &Path, args: &[&str]) -> Output {
    Command::new(barsync())
        .arg(args[0])
        .arg("-c")
        .arg(config)
        .args(&args[1..])
        .output()
        .unwrap()
}

fn describe(args: &[&str], output: &Output) -> String {
    format!(
        "barsync {args:?}: rc {:?}\n--- stdout\n{}--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Everything under `root`, relative, sorted.
fn tree(root: &Path) -> Vec<String> {
    let mut paths = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            paths.push(path.strip_prefix(root).unwrap().display().to_string());
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
    paths.sort();
    paths
}

#[test]
fn another_barman_user_is_refused_with_barmans_message() {
    let dir = tempfile::tempdir().unwrap();
    // `nobody` exists everywhere and is never the user running the tests.
    assert_ne!(current_user(), "nobody");
    let config = write_config(dir.path(), "barman_user = nobody", "");
    for args in PASSIVE_COMMANDS {
        let output = run(&config, args);
        assert_eq!(output.status.code(), Some(1), "{}", describe(args, &output));
        assert_eq!(
            String::from_utf8_lossy(&output.stderr),
            "ERROR: please run barman as 'nobody' user\n",
            "{}",
            describe(args, &output)
        );
        assert!(output.stdout.is_empty(), "{}", describe(args, &output));
    }
    assert!(
        tree(&dir.path().join("home")).is_empty(),
        "nothing written as the wrong user: {:?}",
        tree(&dir.path().join("home"))
    );

    // Unset, barman_user is Barman's default, `barman`; a user that does not exist is named.
    let unknown = write_config(dir.path(), "barman_user = no_such_user_h5", "");
    let output = run(&unknown, &["cron"]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        describe(&["cron"], &output)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "ERROR: the configured user 'no_such_user_h5' does not exists\n"
    );
    if current_user() != "barman" {
        let unset = write_config(dir.path(), "", "");
        let output = run(&unset, &["sync-wals", "pg"]);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{}",
            describe(&["sync-wals"], &output)
        );
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("'barman'"),
            "{}",
            describe(&["sync-wals"], &output)
        );
    }

    // The user running barsync is accepted: the commands go on (and fail on the primary).
    let own = write_config(dir.path(), &format!("barman_user = {}", current_user()), "");
    let output = run(&own, &["sync-info", "pg"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        describe(&["sync-info"], &output)
    );
}
