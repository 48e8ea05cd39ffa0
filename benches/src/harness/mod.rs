//! The side-by-side benchmark harness behind `barsync bench` (issue 6; in a `barsync` built with
//! `--features bench`): it owns the options of a benchmark run, the typed errors, and the order
//! of work: prepare each workload once, then alternate barsync and its anchor (rsync, or
//! Barman's own passive commands) through the same sshd, and collect one [`Row`] per measured
//! case into a [`Report`].
//!
//! Modules:
//! - [`workloads`]: the data of W1–W11 and where it lives (a local scratch directory and a
//!   "remote" directory reached over SSH — on loopback by default);
//! - [`runner`]: running one command with its wall time, wire bytes, and the peak RSS and CPU
//!   seconds of the local client process tree (`wait4`);
//! - [`proxy`]: the userspace TCP proxy that shapes W6's link (delay and rate);
//! - [`report`]: the machine, the versions, the table and the JSON.
//!
//! The harness reuses the end-to-end fixtures of the `barsync-tests` crate (a path
//! dependency): [`barsync_tests::sshd::TestSshd`] for the loopback sshd,
//! [`barsync_tests::barman_primary::BarmanPrimary`] for the PostgreSQL 15 + pgbench + Barman
//! primary of W3, W4, W7 and W11, [`barsync_tests::passive_rig::fixture_primary`] for the
//! sample Barman primary of W8 (no PostgreSQL), [`barsync_tests::passive_rig::PassiveRig`] for
//! the passive nodes of W4, W7, W8 and W11, and [`barsync_tests::follow_load`] for W11's WAL
//! load and its per-segment clock (shared with the `follow` end-to-end test). Those fixtures panic on failure (they are test helpers); the
//! harness turns such a panic into [`HarnessError::Fixture`].

/// The shaping proxy, shared with the end-to-end tests (`barsync_tests::proxy`).
pub use barsync_tests::proxy;
pub mod report;
pub mod runner;
pub mod targets;
pub mod workloads;

use std::path::PathBuf;

pub use report::{Floor, LatencyRow, LatencyStats, Machine, Report, Row, SideStats, Versions};
pub use workloads::Workload;

/// Everything that can stop a benchmark run.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}):\n{output}")]
    CommandFailed {
        command: String,
        status: String,
        output: String,
    },
    #[error("fixture failed: {0}")]
    Fixture(String),
    #[error("{0}")]
    Invalid(String),
    #[error("a result did not check out: {0}")]
    Check(String),
}

impl HarnessError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
        let context = context.into();
        move |source| HarnessError::Io { context, source }
    }
}

pub type Result<T> = std::result::Result<T, HarnessError>;

/// A remote host to benchmark against instead of the loopback sshd.
#[derive(Debug, Clone)]
pub struct RemoteHost {
    /// The ssh command including the destination, e.g. `ssh -p 2222 user@host`: its last word is
    /// the destination, the rest is handed to rsync's `-e` and barsync's `-e`.
    pub ssh: String,
    /// A scratch directory on the remote host (created; its workload subdirectories are
    /// overwritten).
    pub dir: String,
}

/// The link of W6 (the shaping proxy lives with the test fixtures, which share it).
pub use barsync_tests::proxy::LinkShape;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The barsync binary to measure (also the one served on the loopback "remote").
    pub barsync: PathBuf,
    /// The program the remote runs as `barsync serve` (default: `barsync` for a remote host,
    /// [`Options::barsync`] on loopback).
    pub remote_barsync: Option<String>,
    /// Real Barman (W4, W7, W8 and the PostgreSQL WAL of W3); `None`: `$BARSYNC_TEST_BARMAN`, then
    /// the workspace's `.venv/bin/barman`.
    pub barman: Option<PathBuf>,
    pub workloads: Vec<Workload>,
    /// Size of the W1/W2 file (also W8's segment).
    pub size_mib: u64,
    /// Measured runs of each side per case.
    pub runs: usize,
    /// pgbench scale of the primary of W4 and W7.
    pub scale: u32,
    /// WAL segments in W3.
    pub wal_segments: usize,
    /// Files in W5.
    pub small_files: usize,
    /// WAL segments measured in W11 (`barsync follow` against a cron-driven Barman passive).
    pub follow_segments: usize,
    pub link: LinkShape,
    /// `None`: a private sshd on 127.0.0.1.
    pub remote: Option<RemoteHost>,
    /// Where local data goes (default: a new directory under /tmp, removed afterwards).
    pub work_dir: Option<PathBuf>,
}

impl Options {
    /// The defaults: 1 GiB, 3 runs, every workload, pgbench scale 10 (the issue's
    /// reference uses 50), 64 WAL segments, 10,000 small files, 100 followed segments, 40 ms /
    /// 100 Mbit/s.
    pub fn new(barsync: PathBuf) -> Options {
        Options {
            barsync,
            remote_barsync: None,
            barman: None,
            workloads: Workload::ALL.to_vec(),
            size_mib: 1024,
            runs: 3,
            scale: 10,
            wal_segments: 64,
            small_files: 10_000,
            follow_segments: 100,
            link: LinkShape::default(),
            remote: None,
            work_dir: None,
        }
    }
}

/// Runs the benchmark: every selected workload, `runs` alternating runs per case. `progress`
/// receives one line per step (setup, each measured run).
pub fn run(options: &Options, progress: &dyn Fn(&str)) -> Result<Report> {
    if options.runs == 0 {
        return Err(HarnessError::Invalid("--runs must be at least 1".into()));
    }
    if options.size_mib == 0 {
        return Err(HarnessError::Invalid(
            "--size-mib must be at least 1".into(),
        ));
    }
    let mut context = workloads::Context::new(options, progress)?;
    let machine = Machine::detect();
    let versions = Versions::detect(options, context.barman().as_deref());
    let mut rows = Vec::new();
    let mut floors = Vec::new();
    let mut latencies = Vec::new();
    let mut skipped = Vec::new();
    for workload in &options.workloads {
        progress(&format!("== {} {}", workload.id(), workload.title()));
        // A workload that fails is reported as such; the others still run.
        let outcome = context
            .run(*workload)
            .unwrap_or_else(|error| workloads::Outcome::Skipped(format!("failed: {error}")));
        match outcome {
            workloads::Outcome::Rows(mut new_rows) => rows.append(&mut new_rows),
            workloads::Outcome::RowsAndFloors(mut new_rows, mut new_floors) => {
                rows.append(&mut new_rows);
                floors.append(&mut new_floors);
            }
            workloads::Outcome::Latencies(mut new_rows) => latencies.append(&mut new_rows),
            workloads::Outcome::Skipped(reason) => {
                progress(&format!("   skipped: {reason}"));
                skipped.push((workload.id().to_owned(), reason));
            }
        }
    }
    let mut notes = vec![
        "times: medians of alternating runs; ratio = anchor median / barsync median (above 1: barsync faster)".to_owned(),
        "rsync runs with the ssh command as given (the operator's default ssh settings); barsync copy picks its own cipher (aes128-gcm when the command names none): that choice is part of what is measured".to_owned(),
        "wire: payload bytes as each tool counts them: barsync's summary (MiB received + sent), rsync's --stats (total bytes sent + received); n/a where the tool does not say".to_owned(),
        "peak RSS: the largest VmHWM among the local client process and its descendants (ssh included; the remote side not counted), sampled every 5 ms, largest over runs; CPU: user + system of that process tree from wait4, median".to_owned(),
        "floors: what the machine alone takes for the same bytes, run in the same rounds; barsync / floor = barsync median / floor median (1: at the floor). rsync --fsync rows: rsync made as durable as barsync (which fsyncs every file)".to_owned(),
        "page cache warm on both sides (same machine on loopback); every destination reset before each run".to_owned(),
    ];
    notes.extend(context.notes());
    Ok(Report {
        machine,
        versions,
        runs: options.runs,
        size_mib: options.size_mib,
        scale: options.scale,
        target: context.target_description(),
        notes,
        rows,
        floors,
        latencies,
        skipped,
        load_after: Machine::loadavg(),
    })
}

/// Median of `values` (mean of the middle two for an even count); 0 when empty.
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let middle = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[middle]
    } else {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
