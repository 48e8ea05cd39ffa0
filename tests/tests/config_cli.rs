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

/// The configuration: inline comments as in the old README sample, misspelt keys and
/// invalid values. Barman warns about each and goes on; barsync must say as much, on stderr and
/// in the log, naming the file, line, section, key and value, and `check` must fail on them.
#[test]
fn ignored_settings_are_warned_about_and_fail_check() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("barsync.log");
    let config = write_config(
        dir.path(),
        &format!(
            "barman_user = {}\nlog_file = {}\nparallel_job = 3\n",
            current_user(),
            log.display()
        ),
        "reuse_backup = link ; hard links to the previous backup\n\
         parallel_jobs = 4 # sessions\n\
         primary_ssh_comand = ssh barman@pg\n\
         bandwidth_limit = fast\n\
         last_backup_maximum_age = 2 dayz\n\
         [typo]\n\
         primary_ssh_comand = ssh barman@typo\n\
         reuse_backup = lnk\n",
    );
    let file = config.display().to_string();

    // Barman itself warns about each of these (and keeps going).
    let barman = Command::new(barsync_tests::passive_rig::barman_program())
        .arg("-c")
        .arg(&config)
        .arg("list-servers")
        .output()
        .unwrap();
    let barman_stderr = String::from_utf8_lossy(&barman.stderr).into_owned();
    for key in [
        "parallel_job",
        "primary_ssh_comand",
        "reuse_backup",
        "parallel_jobs",
    ] {
        assert!(
            barman_stderr.contains(key),
            "Barman names {key}:\n{barman_stderr}"
        );
    }

    let cron = run(&config, &["cron"]);
    let stderr = String::from_utf8_lossy(&cron.stderr).into_owned();
    let expected = [
        // [barman]: a misspelt key, with the key it resembles.
        ("parallel_job", "did you mean parallel_jobs?", 5),
        (
            "reuse_backup",
            "'link ; hard links to the previous backup'",
            9,
        ),
        ("reuse_backup", "inline comment", 9),
        ("parallel_jobs", "inline comment", 10),
        (
            "primary_ssh_comand",
            "did you mean primary_ssh_command?",
            11,
        ),
        ("bandwidth_limit", "'fast'", 12),
        ("last_backup_maximum_age", "'2 dayz'", 13),
        ("primary_ssh_comand", "[typo]", 15),
        ("reuse_backup", "'lnk'", 16),
    ];
    for (key, detail, line) in expected {
        let found = stderr.lines().any(|l| {
            l.contains("WARNING: ")
                && l.contains(key)
                && l.contains(detail)
                && l.contains(&format!("{file} line {line}"))
        });
        assert!(
            found,
            "no warning about {key} ({detail}) at line {line}:\n{}",
            describe(&["cron"], &cron)
        );
    }
    for args in PASSIVE_COMMANDS.iter().filter(|a| a[0] != "sync-info") {
        let output = run(&config, args);
        assert!(
            String::from_utf8_lossy(&output.stderr).contains(&format!(
                "WARNING: Invalid configuration option \"primary_ssh_comand\" in [typo] section (value 'ssh barman@typo'), ignored: did you mean primary_ssh_command? ({file} line 15)"
            )),
            "{}",
            describe(args, &output)
        );
    }
    // sync-info stands in for `barman sync-info`: Barman's own lines, as Barman prints them.
    let sync_info = run(&config, &["sync-info", "pg"]);
    let ours: Vec<&str> = std::str::from_utf8(&sync_info.stderr)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("WARNING"))
        .collect();
    let barmans: Vec<&str> = barman_stderr
        .lines()
        .filter(|l| l.starts_with("WARNING") && !l.contains("archiver"))
        .collect();
    assert_eq!(ours, barmans);
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        logged.contains("WARNING: Invalid configuration option \"primary_ssh_comand\""),
        "the log has the warnings too:\n{logged}"
    );

    // check fails on a configuration line that names the problems of the server.
    let check = run(&config, &["check", "pg"]);
    let text = String::from_utf8_lossy(&check.stdout).into_owned();
    assert_eq!(
        check.status.code(),
        Some(1),
        "{}",
        describe(&["check"], &check)
    );
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("configuration: "))
        .unwrap_or_else(|| panic!("no configuration line:\n{}", describe(&["check"], &check)));
    assert!(line.contains("FAILED"), "{line}");
    assert!(line.contains("did you mean primary_ssh_command?"), "{line}");
    assert!(line.contains("bandwidth_limit"), "{line}");
    let typo = run(&config, &["check", "typo"]);
    let text = String::from_utf8_lossy(&typo.stdout).into_owned();
    assert_eq!(
        typo.status.code(),
        Some(1),
        "{}",
        describe(&["check"], &typo)
    );
    assert!(
        text.contains("did you mean primary_ssh_command?"),
        "{}",
        describe(&["check", "typo"], &typo)
    );

    // Without the problems, the configuration check passes.
    let clean = write_config(
        dir.path(),
        &format!("barman_user = {}", current_user()),
        "reuse_backup = link\n",
    );
    let check = run(&clean, &["check", "pg"]);
    let text = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(
        text.contains("\tconfiguration: OK"),
        "{}",
        describe(&["check"], &check)
    );
    assert!(!String::from_utf8_lossy(&check.stderr).contains("WARNING"));
}
