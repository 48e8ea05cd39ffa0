//! `barsync follow` against the sample Barman primary behind a real sshd (no PostgreSQL):
//! WALs appended to the primary's archive as Barman does (file first, then its xlog db line)
//! reach the passive, listed once, while `barsync cron` runs next to it; the SFTP fallback
//! (the primary's xlog db looked at every poll interval); a rewritten primary xlog db (Barman
//! drops the lines of deleted WALs); a second follower refused; SIGTERM; `status` and `check`
//! (`follow_max_lag`) reporting the lag.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use barsync_tests::passive_rig::{describe, fixture_primary, PassiveRig, RigOptions};

/// Appends WAL `name` (16 KiB) to the primary's archive as Barman's archiver does: the file in
/// its hash directory first, then its line in the xlog db; `time` is its archival time.
fn archive(primary: &Path, name: &str, time: f64) -> Vec<u8> {
    let wals = primary.join("primary-home/pg/wals");
    let data = barsync_tests::noise::incompressible(16384, name.len() as u64 + time as u64);
    let path = wals.join(&name[..16]).join(name);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, &data).unwrap();
    let mut db = fs::OpenOptions::new()
        .append(true)
        .open(wals.join("pg-xlog.db"))
        .unwrap();
    db.write_all(format!("{name}\t16384\t{time:.1}\tNone\tNone\n").as_bytes())
        .unwrap();
    data
}

fn passive_xlogdb(rig: &PassiveRig) -> PathBuf {
    rig.server_directory().join("wals/pg-xlog.db")
}

fn listed(rig: &PassiveRig) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for line in fs::read_to_string(passive_xlogdb(rig))
        .unwrap_or_default()
        .lines()
    {
        let name = line.split_whitespace().next().unwrap().to_owned();
        *counts.entry(name).or_default() += 1;
    }
    counts
}

fn wait_listed(rig: &PassiveRig, name: &str, follower: &mut Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !listed(rig).contains_key(name) {
        if let Ok(Some(status)) = follower.try_wait() {
            panic!(
                "follow exited ({status:?}) before {name} came:\n{}",
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{name} never reached the passive:\n{}",
            fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start(rig: &PassiveRig, args: &[&str]) -> (Child, PathBuf) {
    let log = rig.directory.path().join(format!(
        "follow-{}.log",
        std::process::id() ^ args.len() as u32
    ));
    let file = fs::File::create(&log).unwrap();
    let mut all = vec!["follow", "pg"];
    all.extend_from_slice(args);
    let child = rig
        .barsync_command(&all)
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .expect("start barsync follow");
    // Connected: what is archived from now on is shipped by the watch (or the poll), not by
    // the WAL sync of its start.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("connected to")
    {
        assert!(
            Instant::now() < deadline,
            "follow did not connect:\n{}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, log)
}

fn terminate(mut child: Child, log: &Path) -> String {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = child.wait().unwrap();
    let text = fs::read_to_string(log).unwrap_or_default();
    assert!(status.success(), "follow exited with {status:?}:\n{text}");
    assert!(text.contains("stopped"), "{text}");
    text
}

fn assert_listed_once(rig: &PassiveRig) {
    let twice: Vec<_> = listed(rig).into_iter().filter(|(_, n)| *n > 1).collect();
    assert!(twice.is_empty(), "listed more than once: {twice:?}");
}

fn synced_rig(primary: &Path, options: &RigOptions) -> PassiveRig {
    let rig = PassiveRig::new(&primary.join("primary.conf"), options);
    let cron = rig.barsync(&["cron"]);
    assert!(cron.status.success(), "{}", describe(&cron));
    rig
}

const T: f64 = 1_704_200_000.0;

#[test]
fn new_wals_are_shipped_at_once_and_cron_runs_beside_follow() {
    let primary = fixture_primary();
    let rig = synced_rig(primary.path(), &RigOptions::default());
    let (mut follower, log) = start(&rig, &[]);
    let data = archive(primary.path(), "000000020000000000000008", T);
    let start = Instant::now();
    wait_listed(&rig, "000000020000000000000008", &mut follower, &log);
    let took = start.elapsed();
    let here = rig
        .server_directory()
        .join("wals/0000000200000000/000000020000000000000008");
    assert_eq!(fs::read(&here).unwrap(), data);
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(
        fs::read_to_string(&log)
            .unwrap()
            .contains("the primary watches its xlog db"),
        "{}",
        fs::read_to_string(&log).unwrap()
    );

    // cron and follow side by side: each WAL listed once, whoever ships it.
    for (i, name) in ["000000020000000000000009", "00000002000000000000000A"]
        .iter()
        .enumerate()
    {
        archive(primary.path(), name, T + 10.0 * (i + 1) as f64);
        let cron = rig.barsync(&["cron"]);
        assert!(cron.status.success(), "{}", describe(&cron));
    }
    wait_listed(&rig, "00000002000000000000000A", &mut follower, &log);
    archive(primary.path(), "00000002000000000000000B", T + 40.0);
    wait_listed(&rig, "00000002000000000000000B", &mut follower, &log);
    assert_listed_once(&rig);
    // The state follows the xlog db line of the batch's last WAL at once.
    let state_path = rig.server_directory().join("wals/sync-wals.info");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let state = fs::read_to_string(&state_path).unwrap();
        if state.starts_with("00000002000000000000000B\t") {
            break;
        }
        assert!(Instant::now() < deadline, "{state}");
        std::thread::sleep(Duration::from_millis(20));
    }

    // A second follower of the same server is refused.
    let second = rig.barsync(&["follow", "pg"]);
    assert_eq!(second.status.code(), Some(1), "{}", describe(&second));
    assert!(
        String::from_utf8_lossy(&second.stderr)
            .contains("Another barsync follow is already running"),
        "{}",
        describe(&second)
    );

    // status names the follower and shows no lag.
    let status = rig.barsync(&["status", "pg"]);
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(text.contains("caught up"), "{text}");
    assert!(text.contains("follow: running"), "{text}");
    assert!(
        text.contains("last shipped 00000002000000000000000B"),
        "{text}"
    );
    terminate(follower, &log);
    let status = rig.barsync(&["status", "pg", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(json["servers"][0]["follow"]["running"], false, "{json}");
}

#[test]
fn over_sftp_the_follower_polls_and_a_rewritten_xlog_db_is_followed() {
    let primary = fixture_primary();
    let rig = synced_rig(
        primary.path(),
        &RigOptions {
            barsync_on_primary: false,
            ..RigOptions::default()
        },
    );
    let (mut follower, log) = start(&rig, &["--poll-interval", "0.2"]);
    archive(primary.path(), "000000020000000000000008", T);
    wait_listed(&rig, "000000020000000000000008", &mut follower, &log);
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.contains("every poll interval"), "{text}");

    // Barman deletes the oldest backup and the WALs before the next one: it rewrites its
    // xlog db without their lines (a new file renamed into place), then archives more.
    let db = primary.path().join("primary-home/pg/wals/pg-xlog.db");
    let kept: String = fs::read_to_string(&db)
        .unwrap()
        .lines()
        .filter(|l| &l[..24] >= "000000010000000000000005")
        .map(|l| format!("{l}\n"))
        .collect();
    let new = db.with_extension("new");
    fs::write(&new, kept).unwrap();
    fs::rename(&new, &db).unwrap();
    archive(primary.path(), "000000020000000000000009", T + 10.0);
    wait_listed(&rig, "000000020000000000000009", &mut follower, &log);
    assert_listed_once(&rig);
    let text = terminate(follower, &log);
    assert!(text.contains("reading it from the start"), "{text}");
}

#[test]
fn check_fails_beyond_follow_max_lag() {
    let primary = fixture_primary();
    let rig = synced_rig(primary.path(), &RigOptions::default());
    let lag_line = |output: &std::process::Output| {
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .find(|l| l.trim_start().starts_with("WAL lag: "))
            .unwrap_or_else(|| panic!("no WAL lag line:\n{}", describe(output)))
            .to_owned()
    };
    let caught_up = rig.barsync(&["check", "pg"]);
    assert!(caught_up.status.success(), "{}", describe(&caught_up));
    assert!(
        lag_line(&caught_up).contains("OK (caught up"),
        "{}",
        describe(&caught_up)
    );

    // The primary archives two WALs, the newest 10 minutes after the passive's newest; the
    // passive learns of them (sync-info) without copying them.
    let newest_here = 1_704_197_200.0;
    archive(
        primary.path(),
        "000000020000000000000008",
        newest_here + 300.0,
    );
    archive(
        primary.path(),
        "000000020000000000000009",
        newest_here + 600.0,
    );
    let info = rig.barsync(&["sync-info", "--primary", "pg"]);
    assert!(info.status.success(), "{}", describe(&info));
    let behind = rig.barsync(&["check", "pg"]);
    assert_eq!(behind.status.code(), Some(1), "{}", describe(&behind));
    let line = lag_line(&behind);
    assert!(line.contains("FAILED (000000020000000000000007 here, 2 segments and 10 minutes behind the primary's 000000020000000000000009"), "{line}");
    assert!(
        line.contains("more than follow_max_lag (5 minutes)"),
        "{line}"
    );

    // A larger follow_max_lag passes.
    let text = fs::read_to_string(&rig.config).unwrap();
    fs::write(
        &rig.config,
        text.replace("[pg]\n", "[pg]\nfollow_max_lag = 15 minutes\n"),
    )
    .unwrap();
    let allowed = rig.barsync(&["check", "pg"]);
    assert!(allowed.status.success(), "{}", describe(&allowed));
    assert!(
        lag_line(&allowed).contains("OK (2 segments and 10 minutes behind"),
        "{}",
        describe(&allowed)
    );
    assert!(
        !String::from_utf8_lossy(&allowed.stderr).contains("follow_max_lag"),
        "barsync warned about its own option:\n{}",
        describe(&allowed)
    );
}

/// A link that dies without a word: the proxy keeps every open connection up but delivers
/// nothing more (no reset, no end of file), as a lost route does. `follow`'s sessions add
/// `ServerAliveInterval=5`, `ServerAliveCountMax=3` to the rig's `ssh` command, so ssh gives
/// the session up within ~15 s; the follower reconnects (new connections pass) and ships the
/// WAL archived meanwhile, well within 40 s. With `cron`'s keep-alives (15 s × 4) the same
/// takes over a minute.
#[test]
fn a_silently_dead_link_is_noticed_within_seconds() {
    use barsync_tests::proxy::{LinkShape, ShapingProxy};
    let primary = fixture_primary();
    let rig = synced_rig(primary.path(), &RigOptions::default());
    let upstream = format!("127.0.0.1:{}", rig.sshd.port()).parse().unwrap();
    let proxy = ShapingProxy::start(
        upstream,
        LinkShape {
            one_way_delay: Duration::from_millis(1),
            rate_bytes_per_second: 0,
        },
    )
    .expect("start the proxy");
    rig.set_primary_ssh_command(&rig.ssh_command_via(proxy.port()));
    let (mut follower, log) = start(&rig, &["--max-backoff", "2"]);
    archive(primary.path(), "000000020000000000000008", T);
    wait_listed(&rig, "000000020000000000000008", &mut follower, &log);

    let silenced = proxy.blackhole();
    assert!(silenced >= 1, "no connection to silence");
    let dead_at = Instant::now();
    let data = archive(primary.path(), "000000020000000000000009", T + 10.0);
    let deadline = dead_at + Duration::from_secs(40);
    while !listed(&rig).contains_key("000000020000000000000009") {
        let failure = if Instant::now() >= deadline {
            Some("the WAL archived after the link died was not shipped within 40 s")
        } else if !matches!(follower.try_wait(), Ok(None)) {
            Some("follow exited")
        } else {
            None
        };
        if let Some(failure) = failure {
            let _ = follower.kill();
            let _ = follower.wait();
            panic!(
                "{failure}:\n{}",
                fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = dead_at.elapsed();
    let here = rig
        .server_directory()
        .join("wals/0000000200000000/000000020000000000000009");
    assert_eq!(fs::read(&here).unwrap(), data);
    assert_listed_once(&rig);
    let text = terminate(follower, &log);
    assert!(text.contains("reconnecting in"), "{text}");
    eprintln!("shipped {took:?} after the link died silently");
}
