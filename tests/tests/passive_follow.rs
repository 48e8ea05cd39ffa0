//! `barsync follow` end to end with every real component: PostgreSQL 15 with
//! `archive_timeout = 10s` and pgbench writing, a real Barman 3.20.1 primary archiving its WAL
//! (`barman archive-wal` in a loop), sshd on 127.0.0.1 behind the shaping proxy (40 ms round
//! trip, 100 Mbit/s), and a barsync passive whose `barsync follow` ships each segment.
//!
//! Measured: for each segment, the delay from the moment it appears in the primary's `wals/`
//! to the moment its line is in the passive's xlog db (which follow appends only once the file
//! is fsynced), both seen by this test looking every 5 ms; median and p99 are printed. On the
//! way, the link is cut (every connection through the proxy) and later the follower is killed
//! with SIGKILL, each shortly after a segment landed (while it is being shipped), and
//! restarted. Checked afterwards: every WAL of the primary's xlog db is on the passive,
//! byte-identical, listed once; `sync-wals.info` is the primary's last line; no temporary file
//! is left; SIGTERM stops the follower with status 0; `status` shows no lag and `check` passes
//! its lag line; and real Barman on the passive recovers a cluster to the newest WAL shipped,
//! which PostgreSQL starts with the primary's tables as they were at the last switch.
//!
//! Two sizes: the CI variant (12 segments, bounds of 2 s median and 5 s p99 for a shared
//! machine) and an ignored long one (100 segments, the bounds of 1 s and 3 s):
//! `cargo test -p barsync-tests --test passive_follow -- --ignored --nocapture` (with
//! `BARSYNC_BIN=target/release/barsync` for the published figures: the tests otherwise run the
//! debug build).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use barsync_tests::barman_primary::{scratch_dir, verify_restored_cluster, BarmanPrimary};
use barsync_tests::follow_load::{is_segment, percentile, trips, xlogdb_names, WalClock, WalLoad};
use barsync_tests::passive_rig::{describe, PassiveRig, RigOptions};
use barsync_tests::proxy::{LinkShape, ShapingProxy};

/// The link of `barsync bench`'s W6: 40 ms round trip, 100 Mbit/s (or
/// `$BARSYNC_TEST_LINK_MBIT` Mbit/s).
fn link() -> LinkShape {
    let mbit: u64 = std::env::var("BARSYNC_TEST_LINK_MBIT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    LinkShape {
        one_way_delay: Duration::from_millis(20),
        rate_bytes_per_second: mbit * 125_000,
    }
}

/// What one run does and what it must achieve.
struct Plan {
    /// Segments to see shipped while pgbench writes.
    segments: usize,
    /// pgbench transactions per second (each writes about 100 KB of WAL).
    rate: u32,
    median_bound: Duration,
    p99_bound: Duration,
    link: LinkShape,
}

fn start_follower(rig: &PassiveRig, round: usize) -> Child {
    let dir = rig.directory.path();
    let stdout = fs::File::create(dir.join(format!("follow-{round}.out"))).unwrap();
    let stderr = fs::File::create(dir.join(format!("follow-{round}.err"))).unwrap();
    rig.barsync_command(&["follow", "pg", "--max-backoff", "2"])
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("start barsync follow")
}

fn follower_output(rig: &PassiveRig, round: usize) -> String {
    let dir = rig.directory.path();
    format!(
        "--- follow-{round} stdout\n{}\n--- follow-{round} stderr\n{}",
        fs::read_to_string(dir.join(format!("follow-{round}.out"))).unwrap_or_default(),
        fs::read_to_string(dir.join(format!("follow-{round}.err"))).unwrap_or_default()
    )
}

/// Waits until `condition` holds, or panics after `timeout` with `what`.
fn wait_for(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

fn run(plan: &Plan) {
    let start = Instant::now();
    let phase = |what: &str| eprintln!("[{:6.1} s] {what}", start.elapsed().as_secs_f64());
    let primary = BarmanPrimary::start_with_settings(1, &["archive_timeout = 10s"])
        .expect("start PostgreSQL and the Barman primary");
    let backup = primary.backup();
    primary.archive_wals();
    phase("primary started, backup taken");

    let rig = PassiveRig::new(&primary.config_path(), &RigOptions::default());
    let cron = rig.barsync(&["cron"]);
    assert!(cron.status.success(), "{}", describe(&cron));
    phase("passive synced by cron");

    let upstream = format!("127.0.0.1:{}", rig.sshd.port()).parse().unwrap();
    let proxy = ShapingProxy::start(upstream, plan.link).expect("start the shaping proxy");
    rig.set_primary_ssh_command(&rig.ssh_command_via(proxy.port()));

    let primary_wals = primary.barman_home().join("pg/wals");
    let primary_xlogdb = primary_wals.join("pg-xlog.db");
    let passive_wals = rig.server_directory().join("wals");
    let passive_xlogdb = passive_wals.join("pg-xlog.db");
    let clock = WalClock::start(primary_wals.clone(), vec![passive_xlogdb.clone()]);
    let before: Vec<String> = xlogdb_names(&primary_xlogdb);

    let mut round = 0;
    let mut follower = start_follower(&rig, round);
    wait_for(Duration::from_secs(30), "the follower to connect", || {
        follower_output(&rig, 0).contains("connected to")
    });
    phase("follower connected");

    let load = WalLoad::start(&primary, &rig.directory.path().join("load.sql"), plan.rate)
        .expect("start pgbench and the archiving loop");

    let landed_new = |clock: &WalClock| clock.seen().landed_since(&before).len();
    // Waits for the next segment to land, then for `after` (it is being shipped then).
    let next_landing = |after: Duration| {
        let count = landed_new(&clock);
        wait_for(Duration::from_secs(60), "a segment to land", || {
            landed_new(&clock) > count
        });
        thread::sleep(after);
        Instant::now()
    };
    let mut faults = Vec::new();

    wait_for(Duration::from_secs(300), "a third of the segments", || {
        landed_new(&clock) >= plan.segments / 3
    });
    let cut_at = next_landing(Duration::from_millis(150));
    let cut = proxy.cut();
    assert!(cut >= 1, "no connection to cut");
    faults.push(cut_at);
    phase(&format!("link cut ({cut} connections)"));

    wait_for(
        Duration::from_secs(300),
        "two thirds of the segments",
        || landed_new(&clock) >= 2 * plan.segments / 3,
    );
    let kill_at = next_landing(Duration::from_millis(150));
    follower.kill().unwrap();
    follower.wait().unwrap();
    faults.push(kill_at);
    phase("follower killed");
    thread::sleep(Duration::from_millis(500));
    round += 1;
    follower = start_follower(&rig, round);

    wait_for(Duration::from_secs(300), "all the segments", || {
        landed_new(&clock) >= plan.segments
    });
    load.stop();
    let expected = primary.table_fingerprint();
    primary.archive_wals();
    phase("pgbench stopped, last segment archived");

    // Every WAL of the primary reaches the passive.
    let primary_names = xlogdb_names(&primary_xlogdb);
    let newest = primary_names
        .iter()
        .filter(|n| is_segment(n))
        .max()
        .unwrap()
        .clone();
    wait_for(
        Duration::from_secs(60),
        "the newest WAL on the passive",
        || xlogdb_names(&passive_xlogdb).contains(&newest),
    );
    thread::sleep(Duration::from_millis(300));
    let seen = clock.stop();

    // SIGTERM: exit 0 once done.
    let term = Command::new("kill")
        .args(["-TERM", &follower.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = follower.wait().unwrap();
    let output = format!(
        "{}\n{}",
        follower_output(&rig, 0),
        follower_output(&rig, round)
    );
    assert!(status.success(), "follow exited with {status:?}\n{output}");
    assert!(follower_output(&rig, round).contains("stopped"), "{output}");
    // The cut hit a transfer (the batch fetched the file again on a new session) or the
    // session between two (the follower reconnected).
    let first = follower_output(&rig, 0);
    assert!(
        first.contains("the link was cut") || first.contains("reconnecting in"),
        "the cut was not seen\n{output}"
    );

    // Nothing lost, nothing listed twice, every file identical.
    let passive_names = xlogdb_names(&passive_xlogdb);
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for name in &passive_names {
        *counts.entry(name).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, &n)| n > 1).collect();
    assert!(
        twice.is_empty(),
        "listed more than once: {twice:?}\n{output}"
    );
    for name in &primary_names {
        assert!(
            counts.contains_key(name.as_str()),
            "{name} is not on the passive\n{output}"
        );
        let relative = if name.ends_with(".history") {
            PathBuf::from(name)
        } else {
            Path::new(&name[..16]).join(name)
        };
        assert!(
            fs::read(primary_wals.join(&relative)).unwrap()
                == fs::read(passive_wals.join(&relative)).unwrap(),
            "{name} differs on the passive"
        );
    }
    let primary_db = fs::read_to_string(&primary_xlogdb).unwrap();
    let last_line_at = primary_db
        .trim_end_matches('\n')
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let last_name = primary_db[last_line_at..]
        .split_whitespace()
        .next()
        .unwrap();
    assert_eq!(
        fs::read_to_string(passive_wals.join("sync-wals.info")).unwrap(),
        format!("{last_name}\t{last_line_at}")
    );
    for entry in fs::read_dir(&passive_wals).unwrap().flatten() {
        if entry.path().is_dir() {
            let left = barsync_tests::leftovers::barsync_names_in(&entry.path());
            assert!(
                left.is_empty(),
                "left in {}: {left:?}",
                entry.path().display()
            );
        }
    }

    // The measure.
    let mut all = Vec::new();
    let mut calm = Vec::new();
    for trip in trips(&seen, 0, &seen.landed_since(&before)) {
        let (landed, listed, delay) = (trip.landed, trip.listed, trip.seconds());
        all.push(delay);
        // A segment in flight at a fault, or landed during the outage after it, is not a
        // measure of the follower's latency.
        let disturbed = faults
            .iter()
            .any(|fault| landed <= *fault + Duration::from_secs(5) && listed >= *fault);
        if !disturbed {
            calm.push(delay);
        }
    }
    all.sort_by(f64::total_cmp);
    calm.sort_by(f64::total_cmp);
    let line = |what: &str, values: &[f64]| {
        format!(
            "{what}: {} segments, median {:.3} s, p99 {:.3} s, max {:.3} s",
            values.len(),
            percentile(values, 50.0),
            percentile(values, 99.0),
            values.last().copied().unwrap_or(0.0)
        )
    };
    eprintln!(
        "follow latency (landed in the primary's wals/ -> fsynced and in the passive's xlog db), \
         {} ms RTT, {} Mbit/s:\n  {}\n  {}",
        plan.link.one_way_delay.as_millis() * 2,
        plan.link.rate_bytes_per_second * 8 / 1_000_000,
        line("undisturbed", &calm),
        line("all, faults included", &all)
    );
    assert!(
        calm.len() >= plan.segments / 2,
        "{}",
        line("undisturbed", &calm)
    );
    assert!(
        percentile(&calm, 50.0) <= plan.median_bound.as_secs_f64(),
        "{}",
        line("undisturbed", &calm)
    );
    assert!(
        percentile(&calm, 99.0) <= plan.p99_bound.as_secs_f64(),
        "{}",
        line("undisturbed", &calm)
    );

    // status and check: caught up.
    let status = rig.barsync(&["status", "pg", "--json"]);
    assert!(status.status.success(), "{}", describe(&status));
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(json["servers"][0]["wal_lag_segments"], 0, "{json}");

    // Real Barman recovers the newest WAL shipped.
    let restore = scratch_dir("barsync-follow-restore-").unwrap();
    let destination = restore.path().join("data");
    let recover = rig.barman(&["recover", "pg", &backup, destination.to_str().unwrap()]);
    assert!(recover.status.success(), "{}", describe(&recover));
    verify_restored_cluster(&destination, &expected)
        .unwrap_or_else(|e| panic!("the cluster recovered from the passive is wrong: {e}"));
    phase("recovered on the passive");
    drop(proxy);
}

#[test]
fn follow_ships_each_segment_within_seconds_through_cuts_and_a_kill() {
    run(&Plan {
        segments: 12,
        rate: 60,
        median_bound: Duration::from_secs(2),
        p99_bound: Duration::from_secs(5),
        link: link(),
    });
}

/// The measure: 100 segments, median within 1 s and p99 within 3 s.
#[test]
#[ignore = "about five minutes; run with --ignored for the published figures"]
fn follow_latency_over_100_segments() {
    run(&Plan {
        segments: 100,
        rate: 60,
        median_bound: Duration::from_secs(1),
        p99_bound: Duration::from_secs(3),
        link: link(),
    });
}

/// The setup of the `--partial` tests: a Barman primary whose real `pg_receivewal` streams
/// into Barman's `streaming/` (writing the current segment as `<segment>.partial`), a barsync
/// passive synced by `cron`, and `follow --partial` running on it.
struct PartialScene {
    primary: BarmanPrimary,
    backup: String,
    rig: PassiveRig,
    streaming: PathBuf,
    receiver: Child,
    follower: Child,
}

impl PartialScene {
    fn start() -> PartialScene {
        let primary = BarmanPrimary::start(1).expect("start PostgreSQL and the Barman primary");
        let backup = primary.backup();
        primary.archive_wals();
        let rig = PassiveRig::new(&primary.config_path(), &RigOptions::default());
        let cron = rig.barsync(&["cron"]);
        assert!(cron.status.success(), "{}", describe(&cron));

        let streaming = primary.barman_home().join("pg/streaming");
        fs::create_dir_all(&streaming).unwrap();
        let mut receiver = Command::new(primary.pg_bin().join("pg_receivewal"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &primary.port().to_string(),
                "-U",
                "postgres",
            ])
            .arg("-D")
            .arg(&streaming)
            .args(["--synchronous", "--no-loop", "--no-password"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pg_receivewal");
        let deadline = Instant::now() + Duration::from_secs(30);
        while primary
            .query("SELECT count(*) FROM pg_stat_replication")
            .trim()
            != "1"
        {
            if let Ok(Some(status)) = receiver.try_wait() {
                let mut said = String::new();
                use std::io::Read;
                let _ = receiver.stderr.take().unwrap().read_to_string(&mut said);
                panic!("pg_receivewal exited ({status:?}): {said}");
            }
            assert!(Instant::now() < deadline, "pg_receivewal never streamed");
            thread::sleep(Duration::from_millis(50));
        }

        let log = rig.directory.path().join("follow-partial.log");
        let file = fs::File::create(&log).unwrap();
        let follower = rig
            .barsync_command(&["follow", "pg", "--partial"])
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start barsync follow --partial");
        wait_for(Duration::from_secs(30), "the follower to connect", || {
            fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("connected to")
        });
        PartialScene {
            primary,
            backup,
            rig,
            streaming,
            receiver,
            follower,
        }
    }

    /// The WAL segment holding the byte at `lsn` on the primary (`pg_walfile_name` alone
    /// names the previous segment for an LSN on a segment boundary).
    fn segment_of(&self, lsn: &str) -> String {
        self.primary
            .query(&format!("SELECT pg_walfile_name('{lsn}'::pg_lsn + 1)"))
            .trim()
            .to_owned()
    }

    fn current_lsn(&self) -> String {
        self.primary
            .query("SELECT pg_current_wal_lsn()")
            .trim()
            .to_owned()
    }

    /// Waits until `pg_receivewal` has flushed everything written so far and the follower's
    /// copy of the primary's partial file is identical to it; checks `status` names it; then
    /// stops the follower (SIGTERM, status 0) and `pg_receivewal`, and checks that no partial
    /// file reached `wals/`. Returns the partial file's name and this node's copy.
    fn catch_up_and_stop(&mut self) -> (String, Vec<u8>) {
        let lsn = self.current_lsn();
        wait_for(
            Duration::from_secs(30),
            "pg_receivewal to flush them",
            || {
                self.primary
                    .query(&format!(
                        "SELECT count(*) FROM pg_stat_replication WHERE flush_lsn >= '{lsn}'"
                    ))
                    .trim()
                    == "1"
            },
        );
        let partial_name = fs::read_dir(&self.streaming)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.ends_with(".partial"))
            .expect("a partial segment on the primary");
        let ours = self
            .rig
            .server_directory()
            .join("barsync-partial")
            .join(&partial_name);
        wait_for(
            Duration::from_secs(30),
            "the partial copy to catch up",
            || fs::read(&ours).ok() == fs::read(self.streaming.join(&partial_name)).ok(),
        );
        let copy = fs::read(&ours).unwrap();
        let status = self.rig.barsync(&["status", "pg"]);
        assert!(
            String::from_utf8_lossy(&status.stdout).contains(&format!("partial {partial_name}")),
            "{}",
            describe(&status)
        );
        let sent = Command::new("kill")
            .args(["-TERM", &self.follower.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        assert!(self.follower.wait().unwrap().success());
        let _ = self.receiver.kill();
        let _ = self.receiver.wait();
        let in_wals: Vec<_> = walk_names(&self.rig.server_directory().join("wals"))
            .into_iter()
            .filter(|n| n.contains("partial"))
            .collect();
        assert!(in_wals.is_empty(), "partial files in wals/: {in_wals:?}");
        (partial_name, copy)
    }

    /// `barman recover pg <backup> <destination> ARGS...` on the passive, into a new scratch
    /// directory (kept until the returned guard is dropped).
    fn recover(&self, args: &[&str]) -> (tempfile::TempDir, PathBuf) {
        let restore = scratch_dir("barsync-partial-restore-").unwrap();
        let destination = restore.path().join("data");
        let mut command = vec!["recover", "pg", &self.backup, destination.to_str().unwrap()];
        command.extend_from_slice(args);
        let recover = self.rig.barman(&command);
        assert!(recover.status.success(), "{}", describe(&recover));
        (restore, destination)
    }
}

impl Drop for PartialScene {
    fn drop(&mut self) {
        let _ = self.follower.kill();
        let _ = self.follower.wait();
        let _ = self.receiver.kill();
        let _ = self.receiver.wait();
    }
}

/// `follow --partial`: the follower keeps a copy of the primary's `<segment>.partial` in
/// `barsync-partial/` (never `wals/`). Transactions made after the last archived WAL are then
/// only in that partial file: real Barman on the passive recovers the backup with the
/// archived WALs, the partial copy goes into `pg_wal/` under its segment name (the README's
/// recovery steps), and PostgreSQL starts with the primary's tables as they were after those
/// transactions. Without the partial copy, the same recovery lacks them (the control).
#[test]
fn partial_wal_recovers_the_transactions_not_archived_yet() {
    let mut scene = PartialScene::start();
    // Transactions after the last archived WAL: only in the partial segment.
    scene.primary.pgbench_run(300);
    let expected = scene.primary.table_fingerprint();
    let (partial_name, copy) = scene.catch_up_and_stop();

    // The primary's site is lost: recover on the passive, with and without the partial copy.
    let segment = partial_name.trim_end_matches(".partial");
    let recover = |with_partial: bool| {
        let (restore, destination) = scene.recover(&[]);
        if with_partial {
            fs::write(destination.join("pg_wal").join(segment), &copy).unwrap();
        }
        let result = verify_restored_cluster(&destination, &expected);
        drop(restore);
        result
    };
    recover(true).unwrap_or_else(|e| panic!("recovered with the partial WAL: {e}"));
    assert!(
        recover(false).is_err(),
        "without the partial WAL the recovery has the same data: the partial proved nothing"
    );
}

/// `follow --partial` with a recovery target inside the partial segment: pgbench
/// transactions, then one marked transaction (the target: its xid, and the WAL position just
/// after its commit), then more pgbench transactions, all in the segment `pg_receivewal` is
/// still writing (checked: the LSNs before and after are in the partial file's segment, so
/// none of it is archived). Real Barman on the passive recovers with `--target-xid`, and
/// again with `--target-lsn`, putting the WALs in `barman_wal/`; the partial copy goes there
/// under its segment name (the README's steps with a target), and PostgreSQL, promoted at
/// the target, has the primary's tables exactly as they were after the marked transaction:
/// everything up to it, nothing after it. Without the partial copy the target is never
/// reached (the control).
#[test]
fn partial_wal_recovers_to_a_target_inside_it() {
    let mut scene = PartialScene::start();
    let first_lsn = scene.current_lsn();
    scene.primary.pgbench_run(100);
    // The target: one transaction, its xid, and the insert position after its commit record.
    let xid = scene
        .primary
        .query(
            "UPDATE pgbench_branches SET bbalance = bbalance + 1000000 WHERE bid = 1 \
             RETURNING pg_current_xact_id()",
        )
        .trim()
        .to_owned();
    let target_lsn = scene
        .primary
        .query("SELECT pg_current_wal_insert_lsn()")
        .trim()
        .to_owned();
    let expected = scene.primary.table_fingerprint();
    // After the target: more transactions, which the recovery must not have.
    scene.primary.pgbench_run(100);
    let last_lsn = scene.current_lsn();
    assert_ne!(
        scene.primary.table_fingerprint(),
        expected,
        "the transactions after the target changed nothing"
    );
    let segment = scene.segment_of(&first_lsn);
    assert_eq!(
        (scene.segment_of(&target_lsn), scene.segment_of(&last_lsn)),
        (segment.clone(), segment.clone()),
        "the transactions do not all lie in one segment ({first_lsn} .. {last_lsn})"
    );
    let (partial_name, copy) = scene.catch_up_and_stop();
    assert_eq!(
        partial_name,
        format!("{segment}.partial"),
        "the target's segment is not the partial one"
    );
    let archived = xlogdb_names(&scene.rig.server_directory().join("wals/pg-xlog.db"));
    assert!(
        archived.iter().all(|name| name.as_str() < segment.as_str()),
        "the target's segment is archived already: {archived:?}"
    );

    // The README's steps with a target: Barman copies the WALs into `barman_wal/` and
    // PostgreSQL restores them from there; the partial copy goes there too.
    let recover = |target: &[&str], with_partial: bool| {
        let (restore, destination) = scene.recover(target);
        let wal_dest = destination.join("barman_wal");
        assert!(
            wal_dest.is_dir(),
            "barman recover {target:?} made no barman_wal/ in {}",
            destination.display()
        );
        if with_partial {
            fs::write(wal_dest.join(&segment), &copy).unwrap();
        }
        let result = verify_restored_cluster(&destination, &expected);
        drop(restore);
        result
    };
    for target in [["--target-xid", &xid], ["--target-lsn", &target_lsn]] {
        recover(&target, true).unwrap_or_else(|e| {
            panic!("recovered to {target:?} with the partial WAL in barman_wal/: {e}")
        });
    }
    let without = recover(&["--target-xid", &xid], false);
    let error = without
        .expect_err("without the partial WAL the target was reached: the partial proved nothing");
    assert!(
        error.contains("recovery ended before configured recovery target was reached"),
        "without the partial WAL the recovery failed otherwise: {error}"
    );
}

fn walk_names(root: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.path().is_dir() {
                pending.push(entry.path());
            } else {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
    }
    names
}
