//! What cron prints, with the real binary on a passive node behind a real sshd: each backup's
//! line as soon as that backup is synced, timestamps on stderr when it is not a terminal (a
//! cron mail, a log collector), and `-vv` saying more than `-v`.

use barsync_tests::passive_rig::{describe, fixture_primary, PassiveRig, RigOptions};

fn text_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn position(haystack: &str, needle: &str) -> usize {
    haystack
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in:\n{haystack}"))
}

#[test]
fn cron_reports_each_backup_as_it_is_synced() {
    let primary = fixture_primary();
    let rig = PassiveRig::new(&primary.path().join("primary.conf"), &RigOptions::default());
    let cron = rig.barsync(&["cron"]);
    assert!(cron.status.success(), "{}", describe(&cron));
    let out = text_of(&cron.stdout);
    let first_done = position(&out, "Backup 20240101T120000 of server pg synced");
    let second_start = position(&out, "Starting copy of backup 20240102T120000");
    let second_done = position(&out, "Backup 20240102T120000 of server pg synced");
    let wals_done = position(&out, "WALs of server pg synced");
    assert!(
        first_done < second_start && second_start < second_done && second_done < wals_done,
        "{out}"
    );
    // The WAL copy reports the sessions it used (the backups' sessions, reused).
    let wal_line = out
        .lines()
        .find(|l| l.contains("WALs of server pg synced"))
        .unwrap();
    assert!(!wal_line.contains(" 0 sessions"), "{wal_line}");
}

#[test]
fn stderr_lines_carry_a_timestamp_when_stderr_is_not_a_terminal() {
    let primary = fixture_primary();
    let rig = PassiveRig::new(&primary.path().join("primary.conf"), &RigOptions::default());
    // The primary's WALs are uncompressed; this node says gzip: WAL sync warns.
    let config = std::fs::read_to_string(&rig.config).unwrap();
    std::fs::write(
        &rig.config,
        config.replace("[pg]\n", "[pg]\ncompression = gzip\n"),
    )
    .unwrap();
    let cron = rig.barsync(&["cron"]);
    let err = text_of(&cron.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "{}", describe(&cron));
    for line in lines {
        let stamp: Vec<char> = line.chars().take(19).collect();
        let shape: String = stamp
            .iter()
            .map(|c| if c.is_ascii_digit() { '9' } else { *c })
            .collect();
        assert_eq!(
            shape,
            "9999-99-99 99:99:99",
            "{line:?}\n{}",
            describe(&cron)
        );
    }
}

#[test]
fn very_verbose_says_more_than_verbose() {
    let primary = fixture_primary();
    let verbose_rig = PassiveRig::new(&primary.path().join("primary.conf"), &RigOptions::default());
    let very_rig = PassiveRig::new(&primary.path().join("primary.conf"), &RigOptions::default());
    let verbose = verbose_rig.barsync(&["cron", "-v"]);
    let very = very_rig.barsync(&["cron", "-vv"]);
    assert!(verbose.status.success(), "{}", describe(&verbose));
    assert!(very.status.success(), "{}", describe(&very));
    let (v, vv) = (text_of(&verbose.stderr), text_of(&very.stderr));
    assert!(
        vv.lines().count() > v.lines().count(),
        "-v:\n{v}\n-vv:\n{vv}"
    );
    // Per file at -vv: what crossed the wire each way and how it was verified.
    assert!(
        vv.lines().any(|l| l.contains("PG_VERSION")
            && l.contains("signature")
            && l.contains("verified by")),
        "{vv}"
    );
}

#[test]
fn a_cron_lock_held_without_progress_is_reported_by_cron_and_check() {
    let primary = fixture_primary();
    let rig = PassiveRig::new(&primary.path().join("primary.conf"), &RigOptions::default());
    let check = rig.barsync(&["check", "pg"]);
    let text = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(text.contains("\tcron lock: OK (not held)"), "{text}");

    // Another process (here: this test) holds the server's cron lock and has shown no
    // progress for two hours: a hung run.
    let guard =
        barsync_sync::lock::acquire(&rig.home, "pg", &barsync_sync::lock::LockKind::Cron, false)
            .unwrap();
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(guard.path())
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    let cron = rig.barsync(&["cron"]);
    assert_eq!(cron.status.code(), Some(0), "{}", describe(&cron));
    let err = text_of(&cron.stderr);
    assert!(
        err.contains("WARNING: ")
            && err.contains(&format!("held by process {}", std::process::id()))
            && err.contains("no progress for 2 hours"),
        "{}",
        describe(&cron)
    );
    let check = rig.barsync(&["check", "pg"]);
    assert_eq!(check.status.code(), Some(1), "{}", describe(&check));
    let text = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(
        text.contains("\tcron lock: FAILED (held by process"),
        "{text}"
    );
    drop(guard);
}

#[test]
fn a_primary_that_accepts_connections_and_never_answers_fails_cron_instead_of_hanging_it() {
    let primary = fixture_primary();
    let rig = PassiveRig::new(&primary.path().join("primary.conf"), &RigOptions::default());
    // A "primary" whose TCP port accepts connections (the kernel completes them) and then
    // says nothing: a blackholed host, as far as ssh can tell.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port().to_string();
    let config = std::fs::read_to_string(&rig.config).unwrap();
    let port = rig.sshd.port().to_string();
    std::fs::write(&rig.config, config.replace(&port, &silent_port)).unwrap();
    let mut cron = rig
        .barsync_command(&["cron"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn barsync");
    let start = std::time::Instant::now();
    let finished = loop {
        if cron.try_wait().unwrap().is_some() {
            break true;
        }
        if start.elapsed() > std::time::Duration::from_secs(90) {
            let _ = cron.kill();
            break false;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let output = cron.wait_with_output().unwrap();
    assert!(
        finished,
        "cron still hung after 90 s: {}",
        describe(&output)
    );
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        text_of(&output.stderr).contains("Failed to retrieve the primary node status"),
        "{}",
        describe(&output)
    );
    drop(silent);
}

/// Output into a closed pipe (`barsync status --json | head -c 0`) is not a crash: no panic,
/// no backtrace, and the command's own exit status.
#[test]
fn output_into_a_closed_pipe_does_not_panic() {
    let primary = fixture_primary();
    let rig = PassiveRig::new(&primary.path().join("primary.conf"), &RigOptions::default());
    let cron = rig.barsync(&["cron"]);
    assert_eq!(cron.status.code(), Some(0), "{}", describe(&cron));
    for args in [
        &["status", "--json"][..],
        &["status"][..],
        &["list-backups", "pg"][..],
        &["list-backups", "--json", "pg"][..],
        &["check", "--json", "pg"][..],
        &["check", "--nagios", "pg"][..],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let output = rig
            .barsync_command(args)
            .stdout(writer)
            .output()
            .expect("barsync runs");
        let stderr = text_of(&output.stderr);
        assert!(
            !stderr.contains("panicked") && output.status.code() != Some(101),
            "{args:?}: {}",
            describe(&output)
        );
    }
}
