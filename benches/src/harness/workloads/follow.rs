//! W11: how soon a WAL segment the primary archived is on the passive (issue 16). A PostgreSQL
//! 15 + Barman primary with `archive_timeout = 10s`, pgbench writing about 6 MB of WAL a second
//! and `barman archive-wal` in a loop ([`barsync_tests::follow_load::WalLoad`], the load of the
//! `follow` end-to-end test); two passive nodes of it, each reaching the primary's sshd through
//! its own shaping proxy (the `--rtt-ms`/`--rate-mbit` link): one runs `barsync follow`, the
//! other Barman's own passive sync, `barman cron`, started every 60 s as cron would start it
//! (whether or not the previous run has ended; Barman's locks sort that out). Both run at the
//! same time, on the same segments.
//!
//! Measured, per segment and for each passive: the delay from the moment the segment is in the
//! primary's `wals/` to the moment its line is in the passive's xlog db (both tools append it
//! once the file is in place), both seen by one thread looking every 5 ms
//! ([`barsync_tests::follow_load::WalClock`]). The first `follow_segments` segments that land
//! once the load runs are counted; the run ends when both passives list them all. Checked: each
//! counted segment is listed once by each passive, and `follow` exits 0 on SIGTERM. `--runs`
//! does not apply (one window of segments, a delay per segment).

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use barsync_tests::barman_primary::BarmanPrimary;
use barsync_tests::follow_load::{trips, xlogdb_names, Trip, WalClock, WalLoad};
use barsync_tests::passive_rig::{PassiveRig, RigOptions};

use super::passive::{barman_cmd, barsync_cmd, shape_rig};
use super::{fixture, Context, Outcome};
use crate::harness::report::{LatencyRow, LatencyStats};
use crate::harness::runner;
use crate::harness::{HarnessError, Result};

/// How often cron starts `barman cron` on the Barman passive.
const CRON_PERIOD: Duration = Duration::from_secs(60);
/// pgbench transactions a second (about 100 KB of WAL each: a segment every ~3 s).
const RATE: u32 = 60;

impl<'a> Context<'a> {
    pub(super) fn w11(&mut self) -> Result<Outcome> {
        if let Some(reason) = self.primary_unavailable() {
            return Ok(Outcome::Skipped(reason));
        }
        let segments = self.options.follow_segments;
        if segments == 0 {
            return Err(HarnessError::Invalid(
                "--follow-segments must be at least 1".into(),
            ));
        }
        let shape = self.options.link;
        let barman = self.barman.clone().expect("barman found");
        let barsync = self.options.barsync.clone();
        let progress = self.progress;
        progress(
            "   starting PostgreSQL 15 + Barman primary (archive_timeout = 10s), pgbench -i -s 1",
        );
        let primary =
            fixture(|| BarmanPrimary::start_with_settings(1, &["archive_timeout = 10s"]))?
                .map_err(HarnessError::io("starting the Barman primary"))?;
        let backup = fixture(|| primary.backup())?;
        fixture(|| primary.archive_wals())?;
        let config = primary.config_path();

        progress("   two passives: one synced by barsync cron, the other by barman sync-info/-backup/-wals");
        let ours = fixture(|| PassiveRig::new(&config, &RigOptions::default()))?;
        let theirs = fixture(|| PassiveRig::new(&config, &RigOptions::default()))?;
        runner::run_quiet(&mut barsync_cmd(&barsync, "cron", &ours.config, &[]))?;
        for args in [
            &["sync-info", "--primary", "pg"][..],
            &["sync-backup", "pg", &backup],
            &["sync-wals", "pg"],
        ] {
            runner::run_quiet(&mut barman_cmd(&barman, &theirs.config, args))?;
        }
        let _our_link = shape_rig(&ours, shape)?;
        let _their_link = shape_rig(&theirs, shape)?;

        let primary_wals = primary.barman_home().join("pg/wals");
        let primary_xlogdb = primary_wals.join("pg-xlog.db");
        let xlogdb = |rig: &PassiveRig| rig.server_directory().join("wals/pg-xlog.db");
        let clock = WalClock::start(primary_wals, vec![xlogdb(&ours), xlogdb(&theirs)]);
        let before = xlogdb_names(&primary_xlogdb);

        let log = self.work.join("w11-follow.log");
        let mut follower = Follower::start(&barsync, &ours.config, &log)?;
        follower.wait_for("connected to", Duration::from_secs(60))?;
        progress("   barsync follow connected; pgbench and the archive loop started");
        let load = fixture(|| WalLoad::start(&primary, &self.work.join("w11-load.sql"), RATE))?
            .map_err(HarnessError::io("starting pgbench"))?;
        let cron = CronTicks::start(
            &barman,
            &theirs.config,
            &self.work.join("w11-barman-cron.log"),
        );

        let landed = |clock: &WalClock| clock.seen().landed_since(&before);
        let window = Duration::from_secs(30 * segments as u64 + 120);
        let started = Instant::now();
        let mut reported = 0;
        while landed(&clock).len() < segments {
            if started.elapsed() > window {
                return Err(HarnessError::Check(format!(
                    "only {} of {segments} segments landed in {} s:\n{}",
                    landed(&clock).len(),
                    window.as_secs(),
                    primary.log_tail()
                )));
            }
            follower.check_running()?;
            let count = landed(&clock).len();
            if count >= reported + 10 {
                reported = count;
                progress(&format!(
                    "   {count}/{segments} segments landed ({:.0} s)",
                    started.elapsed().as_secs_f64()
                ));
            }
            thread::sleep(Duration::from_millis(100));
        }
        load.stop();
        let counted: Vec<String> = landed(&clock).into_iter().take(segments).collect();
        progress(&format!(
            "   {segments} segments landed in {:.0} s; load stopped, waiting for both passives",
            started.elapsed().as_secs_f64()
        ));
        let all_listed = |clock: &WalClock, passive: usize| {
            let seen = clock.seen();
            counted
                .iter()
                .all(|name| seen.passives[passive].contains_key(name))
        };
        wait_until(Duration::from_secs(120), || all_listed(&clock, 0)).map_err(|_| {
            HarnessError::Check(format!(
                "barsync follow did not list every segment within 120 s:\n{}",
                follower.output()
            ))
        })?;
        wait_until(CRON_PERIOD * 3 + Duration::from_secs(60), || {
            all_listed(&clock, 1)
        })
        .map_err(|_| {
            HarnessError::Check(format!(
                "Barman's cron did not list every segment within 4 minutes:\n{}",
                cron.output()
            ))
        })?;
        let ticks = cron.stop();
        let seen = clock.stop();
        follower.stop()?;
        // The `sync-wals` a tick started runs detached from `barman cron`: let it end before
        // its passive goes away.
        let wal_lock = theirs.home.join(".pg-sync-wal.lock");
        let _ = wait_until(Duration::from_secs(60), || !held(&wal_lock));

        for (rig, who) in [(&ours, "barsync follow"), (&theirs, "barman cron")] {
            let names = xlogdb_names(&xlogdb(rig));
            for name in &counted {
                let times = names.iter().filter(|listed| *listed == name).count();
                if times != 1 {
                    return Err(HarnessError::Check(format!(
                        "{who}: {name} is listed {times} times in the passive's xlog db"
                    )));
                }
            }
        }
        let ours_trips = trips(&seen, 0, &counted);
        let theirs_trips = trips(&seen, 1, &counted);
        let after_tick = since_tick(&theirs_trips, &ticks);
        let link = format!(
            "{} ms RTT, {:.0} Mbit/s",
            shape.one_way_delay.as_millis() * 2,
            shape.rate_bytes_per_second as f64 * 8.0 / 1e6
        );
        let clock_words = "delay per segment from the moment it is in the primary's wals/ to the \
                           moment its line is in the passive's xlog db, both seen by one thread \
                           looking every 5 ms";
        let row = LatencyRow {
            id: "W11".into(),
            workload: format!(
                "WAL segment in the primary's wals/ -> in the passive's xlog db, {link}"
            ),
            barsync: LatencyStats::new(
                "barsync follow",
                &format!(
                    "one `barsync follow pg` running throughout; {clock_words}; PostgreSQL 15, \
                     archive_timeout = 10s, pgbench at {RATE} tx/s (~6 MB of WAL/s), barman \
                     archive-wal every 0.1 s on the primary"
                ),
                ours_trips.iter().map(Trip::seconds).collect(),
            ),
            anchor: LatencyStats::new(
                "barman cron every 60 s",
                &format!(
                    "a second passive on the same primary at the same time, `barman cron` \
                     started every {} s as cron starts it (full-minute ticks, not an estimate); \
                     {clock_words}; {} ticks; the segments were listed a median of {:.1} s \
                     (max {:.1} s) after the tick that shipped them (sync-info, then sync-wals' \
                     rsync)",
                    CRON_PERIOD.as_secs(),
                    ticks.len(),
                    crate::harness::median(&after_tick),
                    after_tick.iter().copied().fold(0.0, f64::max)
                ),
                theirs_trips.iter().map(Trip::seconds).collect(),
            ),
        };
        Ok(Outcome::Latencies(vec![row]))
    }
}

/// Waits until `condition` holds; `Err` after `timeout`.
fn wait_until(
    timeout: Duration,
    mut condition: impl FnMut() -> bool,
) -> std::result::Result<(), ()> {
    let deadline = Instant::now() + timeout;
    while !condition() {
        if Instant::now() > deadline {
            return Err(());
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Whether another process holds the `flock` on `path` (as Barman's lock files are taken).
fn held(path: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(file) = fs::File::open(path) else {
        return false;
    };
    // SAFETY: flock(2) on a descriptor this function owns; released when `file` closes.
    let taken = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    !taken
}

/// For each trip, seconds from the last cron tick before it was listed to its listing.
fn since_tick(trips: &[Trip], ticks: &[Instant]) -> Vec<f64> {
    trips
        .iter()
        .filter_map(|trip| {
            let tick = ticks.iter().filter(|tick| **tick <= trip.listed).max()?;
            Some(trip.listed.duration_since(*tick).as_secs_f64())
        })
        .collect()
}

/// `barsync follow pg` on a passive, its stdout and stderr in one log file.
struct Follower {
    child: Child,
    log: std::path::PathBuf,
}

impl Follower {
    fn start(barsync: &Path, config: &Path, log: &Path) -> Result<Follower> {
        let file = fs::File::create(log).map_err(HarnessError::io(log.display().to_string()))?;
        let copy = file
            .try_clone()
            .map_err(HarnessError::io(log.display().to_string()))?;
        let child = barsync_cmd(barsync, "follow", config, &["pg"])
            .stdin(Stdio::null())
            .stdout(copy)
            .stderr(file)
            .spawn()
            .map_err(HarnessError::io("starting barsync follow"))?;
        Ok(Follower {
            child,
            log: log.to_path_buf(),
        })
    }

    fn output(&self) -> String {
        runner::tail(&fs::read_to_string(&self.log).unwrap_or_default(), 40)
    }

    fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(HarnessError::CommandFailed {
                command: "barsync follow pg".into(),
                status: status.to_string(),
                output: self.output(),
            }),
            Err(error) => Err(HarnessError::io("barsync follow")(error)),
        }
    }

    fn wait_for(&mut self, text: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while !fs::read_to_string(&self.log)
            .unwrap_or_default()
            .contains(text)
        {
            self.check_running()?;
            if Instant::now() > deadline {
                return Err(HarnessError::Check(format!(
                    "barsync follow did not say {text:?} within {} s:\n{}",
                    timeout.as_secs(),
                    self.output()
                )));
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// SIGTERM; `follow` must exit 0 once the WALs in flight are done.
    fn stop(mut self) -> Result<()> {
        // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let status = self
            .child
            .wait()
            .map_err(HarnessError::io("barsync follow"))?;
        if !status.success() {
            return Err(HarnessError::CommandFailed {
                command: "barsync follow pg (stopped with SIGTERM)".into(),
                status: status.to_string(),
                output: self.output(),
            });
        }
        Ok(())
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A thread that starts `barman -c CONFIG cron` every [`CRON_PERIOD`], the first at once,
/// without waiting for the previous one (as cron does), and keeps the moments it did.
struct CronTicks {
    stop: Arc<AtomicBool>,
    ticks: Arc<Mutex<Vec<Instant>>>,
    thread: Option<thread::JoinHandle<()>>,
    log: std::path::PathBuf,
}

impl CronTicks {
    fn start(barman: &Path, config: &Path, log: &Path) -> CronTicks {
        let stop = Arc::new(AtomicBool::new(false));
        let ticks = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, ticks) = (stop.clone(), ticks.clone());
            let (barman, config, log) = (
                barman.to_path_buf(),
                config.to_path_buf(),
                log.to_path_buf(),
            );
            thread::spawn(move || {
                let mut running: Vec<Child> = Vec::new();
                let mut next = Instant::now();
                while !stop.load(Ordering::SeqCst) {
                    running.retain_mut(|child| matches!(child.try_wait(), Ok(None)));
                    if Instant::now() >= next {
                        next += CRON_PERIOD;
                        ticks
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(Instant::now());
                        let output = fs::OpenOptions::new().create(true).append(true).open(&log);
                        let mut command = Command::new(&barman);
                        command
                            .arg("-c")
                            .arg(&config)
                            .arg("cron")
                            .stdin(Stdio::null());
                        if let Ok(file) = output {
                            if let Ok(copy) = file.try_clone() {
                                command.stdout(copy).stderr(file);
                            }
                        }
                        if let Ok(child) = command.spawn() {
                            running.push(child);
                        }
                    }
                    thread::sleep(Duration::from_millis(50));
                }
                for mut child in running {
                    let _ = child.wait();
                }
            })
        };
        CronTicks {
            stop,
            ticks,
            thread: Some(thread),
            log: log.to_path_buf(),
        }
    }

    fn output(&self) -> String {
        runner::tail(&fs::read_to_string(&self.log).unwrap_or_default(), 40)
    }

    /// Stops ticking (a `barman cron` still running is waited for) and returns the ticks.
    fn stop(mut self) -> Vec<Instant> {
        self.halt();
        self.ticks.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for CronTicks {
    fn drop(&mut self) {
        self.halt();
    }
}
