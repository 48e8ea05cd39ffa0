//! A steady WAL load on a [`BarmanPrimary`] and the clock of each segment's trip to a passive
//! node, shared by the `follow` end-to-end test (`tests/passive_follow.rs`) and `barsync
//! bench`'s W11: [`WalLoad`] runs pgbench with [`LOAD_SCRIPT`] at a fixed rate and `barman
//! archive-wal` in a loop (so a segment reaches the primary's `wals/` a fraction of a second
//! after PostgreSQL switched it); [`WalClock`] looks every 5 ms at the primary's `wals/` and
//! at the xlog db of each passive, and keeps the moment it first saw each WAL name in each;
//! [`trips`] turns those into per-segment delays and [`percentile`] summarises them.
//!
//! The delay measured is from the moment a segment is in the primary's `wals/` to the moment
//! its line is in a passive's xlog db (barsync and Barman append it only once the file is in
//! place), both as seen by the same thread, so the 5 ms of the look add at most that much.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use crate::barman_primary::BarmanPrimary;

/// The pgbench script of the load: one account updated and 1,000 history rows inserted per
/// transaction, about 100 KB of WAL (at 60 transactions a second, a 16 MiB segment every ~3 s).
pub const LOAD_SCRIPT: &str = "\\set aid random(1, 100000 * :scale)
\\set delta random(-5000, 5000)
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime, filler) SELECT 1, 1, :aid, :delta, now(), substr(md5(random()::text), 1, 22) FROM generate_series(1, 1000);
";

/// Whether `name` is a WAL segment's name (24 hexadecimal digits; not a `.history`,
/// `.backup` or `.partial`).
pub fn is_segment(name: &str) -> bool {
    name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The names of an xlog db, in file order (empty when it cannot be read).
pub fn xlogdb_names(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// The `p`th percentile of `sorted` (nearest rank); 0 when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The first-seen times of each WAL name: in the primary's `wals/`, and in each watched
/// passive's xlog db (in the order given to [`WalClock::start`]).
#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub primary: BTreeMap<String, Instant>,
    pub passives: Vec<BTreeMap<String, Instant>>,
}

impl Seen {
    /// The segments that landed in the primary's `wals/` and are not in `before`.
    pub fn landed_since(&self, before: &[String]) -> Vec<String> {
        self.primary
            .keys()
            .filter(|name| !before.contains(name))
            .cloned()
            .collect()
    }
}

/// A thread that looks every 5 ms at the primary's `wals/` (its hash directories) and at each
/// passive's xlog db, until stopped or dropped.
pub struct WalClock {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl WalClock {
    /// Starts looking at `primary_wals` (a server's `wals/` directory) and `passive_xlogdbs`.
    pub fn start(primary_wals: PathBuf, passive_xlogdbs: Vec<PathBuf>) -> WalClock {
        let seen = Arc::new(Mutex::new(Seen {
            primary: BTreeMap::new(),
            passives: vec![BTreeMap::new(); passive_xlogdbs.len()],
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop) = (seen.clone(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let now = Instant::now();
                    let mut found = Vec::new();
                    if let Ok(top) = fs::read_dir(&primary_wals) {
                        for hash in top.flatten().filter(|e| e.path().is_dir()) {
                            if let Ok(files) = fs::read_dir(hash.path()) {
                                for file in files.flatten() {
                                    found.push(file.file_name().to_string_lossy().into_owned());
                                }
                            }
                        }
                    }
                    let listed: Vec<Vec<String>> = passive_xlogdbs
                        .iter()
                        .map(|path| xlogdb_names(path))
                        .collect();
                    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                    for name in found.into_iter().filter(|n| is_segment(n)) {
                        seen.primary.entry(name).or_insert(now);
                    }
                    for (index, names) in listed.into_iter().enumerate() {
                        for name in names {
                            seen.passives[index].entry(name).or_insert(now);
                        }
                    }
                    drop(seen);
                    thread::sleep(Duration::from_millis(5));
                }
            })
        };
        WalClock {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// What was seen so far (the clock goes on once the guard is dropped).
    pub fn seen(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops looking and returns what was seen.
    pub fn stop(mut self) -> Seen {
        self.halt();
        self.seen().clone()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for WalClock {
    fn drop(&mut self) {
        self.halt();
    }
}

/// One segment's trip: when it landed in the primary's `wals/`, when a passive listed it.
#[derive(Debug, Clone)]
pub struct Trip {
    pub name: String,
    pub landed: Instant,
    pub listed: Instant,
}

impl Trip {
    /// The delay, in seconds.
    pub fn seconds(&self) -> f64 {
        self.listed
            .saturating_duration_since(self.landed)
            .as_secs_f64()
    }
}

/// The trip of each of `names` seen both in the primary's `wals/` and in passive `passive`'s
/// xlog db (the others are left out).
pub fn trips<'n>(
    seen: &Seen,
    passive: usize,
    names: impl IntoIterator<Item = &'n String>,
) -> Vec<Trip> {
    names
        .into_iter()
        .filter_map(|name| {
            Some(Trip {
                name: name.clone(),
                landed: *seen.primary.get(name)?,
                listed: *seen.passives.get(passive)?.get(name)?,
            })
        })
        .collect()
}

/// pgbench writing [`LOAD_SCRIPT`] at a fixed rate on the primary and `barman archive-wal` in a
/// loop (every 100 ms; Barman's cron does it once a minute, but the delay measured starts when
/// a segment is in `wals/`, whoever moved it there). Stopped by [`WalLoad::stop`] or on drop.
pub struct WalLoad {
    pgbench: Child,
    stop: Arc<AtomicBool>,
    archiver: Option<thread::JoinHandle<()>>,
}

impl WalLoad {
    /// Starts the load: `rate` pgbench transactions a second (the script is written to
    /// `script`).
    pub fn start(primary: &BarmanPrimary, script: &Path, rate: u32) -> io::Result<WalLoad> {
        fs::write(script, LOAD_SCRIPT)?;
        let stop = Arc::new(AtomicBool::new(false));
        let archiver = {
            let (barman, config, stop) = (
                primary.barman().to_path_buf(),
                primary.config_path(),
                stop.clone(),
            );
            let server = primary.server_name().to_owned();
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let _ = Command::new(&barman)
                        .arg("-c")
                        .arg(&config)
                        .args(["-q", "archive-wal", &server])
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                    thread::sleep(Duration::from_millis(100));
                }
            })
        };
        let pgbench = match primary.pgbench_spawn(script, 24 * 3600, Some(rate)) {
            Ok(child) => child,
            Err(error) => {
                stop.store(true, Ordering::SeqCst);
                let _ = archiver.join();
                return Err(error);
            }
        };
        Ok(WalLoad {
            pgbench,
            stop,
            archiver: Some(archiver),
        })
    }

    /// Stops pgbench, then the archiving loop (a segment PostgreSQL archived after that is
    /// left in Barman's `incoming/`: call [`BarmanPrimary::archive_wals`] to move it).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        let _ = self.pgbench.kill();
        let _ = self.pgbench.wait();
        self.stop.store(true, Ordering::SeqCst);
        if let Some(archiver) = self.archiver.take() {
            let _ = archiver.join();
        }
    }
}

impl Drop for WalLoad {
    fn drop(&mut self) {
        self.halt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), 50.0);
        assert_eq!(percentile(&values, 99.0), 99.0);
        assert_eq!(percentile(&[0.5], 99.0), 0.5);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }

    #[test]
    fn segment_names() {
        assert!(is_segment("000000010000000000000042"));
        assert!(!is_segment("000000010000000000000042.partial"));
        assert!(!is_segment("00000002.history"));
    }
}
