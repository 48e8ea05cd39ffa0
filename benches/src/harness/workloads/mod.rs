//! The workloads of issue 6 and how each is measured. This module owns the [`Workload`] enum,
//! the [`Context`] of a run and its dispatch ([`Context::run`]), and the shared plumbing: the
//! scratch space (a local directory, and a "remote" directory reached over SSH: on loopback by
//! default), the sshd, publishing generated data to the remote directory, and small helpers.
//! Each family of workloads lives in its own module:
//!
//! - `big_file`: W1 and W2 (and W2's in-place variant), one big incompressible file;
//! - `wal`: W3, WAL segments (real from the Barman primary, or a synthetic stand-in);
//! - `small_files`: W5, many small files (initial copy and a no-change resync);
//! - `shaped`: W6, W2 and W3 through the shaping proxy;
//! - `passive`: W4 and W7, barsync against Barman's own passive commands;
//! - `split`: W8, a backup's one big relation segment, split into parts or not;
//! - `sftp`: W10, W1's file and W5's files through the SFTP fallback;
//! - `follow`: W11, `barsync follow`'s per-segment delay against a cron-driven Barman passive;
//! - `primary`: the PostgreSQL 15 + Barman primary shared by W3, W4 and W7;
//! - `measure`: the alternating barsync/anchor runs of one case;
//! - `floors`: the machine's floors measured beside W1 and W2 (one ssh stream, a local rebuild).
//!
//! | id | data | barsync | anchor |
//! |---|---|---|---|
//! | W1 | one new file of `size_mib` incompressible bytes | `copy` | `rsync -a`, `rsync -a --fsync`; floor: one ssh stream |
//! | W2 | the W1 file with 1% rewritten (100 regions of 100 KiB per GiB) over a copy of the original | `copy`, `copy --inplace` | `rsync -a`, `rsync -a --fsync`, `rsync -rLKpts --inplace` (as Barman); floors: `cp` + `sync -f`, `copy_file_range` + `fsync` |
//! | W3 | 64 WAL segments of 16 MiB from PostgreSQL 15 running pgbench (synthetic stand-in without PostgreSQL/Barman) | `copy -r` | `rsync -a` |
//! | W4 | the second of two Barman backups, the first already on the passive (`reuse_backup = link`) | `sync-backup` | `barman sync-backup` |
//! | W5 | 10,000 files of 2 KiB: initial copy, then a resync with nothing changed | `copy -r` | `rsync -a` |
//! | W6 | W2 and W3 through [`super::proxy::ShapingProxy`] (40 ms RTT, 100 Mbit/s) | as W2/W3 | as W2/W3 |
//! | W7 | a cold passive of a Barman primary with two backups and archived WALs | one `cron` | `barman sync-info --primary`, `sync-backup` per backup, `sync-wals` |
//! | W8 | the second of two backups of the fixture primary (no PostgreSQL) whose largest file is a `size_mib` relation segment, the W1 file in the first and the W2 file (1% rewritten) in the second; the first already on the passive (`reuse_backup = link`) | `sync-backup -j 2` (default part size, 64M: split), `sync-backup -j 2 --part-size 0` | `barman sync-backup` |
//! | W9 | W7 through the shaping proxy (the `--rtt-ms`/`--rate-mbit` link, default 40 ms RTT, 100 Mbit/s) in front of the primary's sshd | one `cron` | as W7 |
//! | W10 | W1's file and W5's files, no barsync on the far side | `copy`, `copy -r` falling back to SFTP | OpenSSH's `sftp` (`get`, `get -r`), `rsync -a` |
//! | W11 | a PostgreSQL 15 + Barman primary with `archive_timeout = 10s` and pgbench writing (a segment every ~3 s), `follow_segments` segments, each passive behind its own shaping proxy (`--rtt-ms`/`--rate-mbit`) | `follow`: delay per segment from the primary's `wals/` to the passive's xlog db (median, p99) | `barman cron` on a second passive every 60 s, the delay taken the same way |
//!
//! W4, W7, W8, W9 and W11 always use a local Barman primary (W4, W7: PostgreSQL + Barman; W8: the
//! sample primary of `barsync_sync::fixture::sample`) behind its own loopback sshd
//! ([`barsync_tests::passive_rig::PassiveRig`]), also when a remote host is given; W6 needs
//! the loopback sshd (the proxy must know the server's address).

use std::fs;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use barsync_tests::barman_primary::BarmanPrimary;
use barsync_tests::sshd::TestSshd;

use super::report::{Floor, LatencyRow, Row};
use super::runner::{self, Measurement};
use super::{HarnessError, Options, Result};

mod big_file;
mod floors;
mod follow;
mod measure;
mod passive;
mod primary;
mod sftp;
mod shaped;
mod small_files;
mod split;
mod wal;

pub use big_file::{rewrite_regions, write_random_file};
pub use primary::pg_bin_dir;
pub use wal::write_synthetic_wal;

const MIB: u64 = 1024 * 1024;

/// A workload of issue 6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    W1,
    W2,
    W3,
    W4,
    W5,
    W6,
    W7,
    W8,
    W9,
    W10,
    W11,
}

impl Workload {
    pub const ALL: [Workload; 11] = [
        Workload::W1,
        Workload::W2,
        Workload::W3,
        Workload::W4,
        Workload::W5,
        Workload::W6,
        Workload::W7,
        Workload::W8,
        Workload::W9,
        Workload::W10,
        Workload::W11,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Workload::W1 => "W1",
            Workload::W2 => "W2",
            Workload::W3 => "W3",
            Workload::W4 => "W4",
            Workload::W5 => "W5",
            Workload::W6 => "W6",
            Workload::W7 => "W7",
            Workload::W8 => "W8",
            Workload::W9 => "W9",
            Workload::W10 => "W10",
            Workload::W11 => "W11",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Workload::W1 => "one new incompressible file",
            Workload::W2 => "the same file after 1% scattered rewrites",
            Workload::W3 => "WAL segments of 16 MiB",
            Workload::W4 => "second base backup, the first on the passive",
            Workload::W5 => "10,000 files of 2 KiB",
            Workload::W6 => "W2 and W3 through 40 ms RTT, 100 Mbit/s",
            Workload::W7 => "cold Barman passive of a real primary",
            Workload::W8 => "one big relation segment changed 1%, split files or not",
            Workload::W9 => "W7 through the shaped link (default 40 ms RTT, 100 Mbit/s)",
            Workload::W10 => "the SFTP fallback: W1's file and W5's files",
            Workload::W11 => "follow latency: each WAL segment from the primary to the passive",
        }
    }
}

impl FromStr for Workload {
    type Err = HarnessError;
    fn from_str(text: &str) -> Result<Workload> {
        Workload::ALL
            .into_iter()
            .find(|w| w.id().eq_ignore_ascii_case(text.trim()))
            .ok_or_else(|| HarnessError::Invalid(format!("unknown workload {text:?} (W1..W11)")))
    }
}

/// What running a workload gave.
pub enum Outcome {
    Rows(Vec<Row>),
    /// Rows and the floors measured beside them.
    RowsAndFloors(Vec<Row>, Vec<Floor>),
    /// Latency cases (W11).
    Latencies(Vec<LatencyRow>),
    Skipped(String),
}

/// The Barman primary of W3/W4/W7 and its two backups.
struct Primary {
    primary: BarmanPrimary,
    first: String,
    second: String,
}

/// One side of a case: a setup before each run (not measured) and the measured run.
struct Side<'s> {
    tool: String,
    setup: Box<dyn FnMut() -> Result<()> + 's>,
    run: Box<dyn FnMut() -> Result<(Measurement, String)> + 's>,
    wire: fn(&str) -> Option<u64>,
}

/// Scratch space, sshd and prepared data of a benchmark run.
pub struct Context<'a> {
    options: &'a Options,
    progress: &'a dyn Fn(&str),
    _scratch: Option<tempfile::TempDir>,
    work: PathBuf,
    sshd: Option<TestSshd>,
    ssh: String,
    host: String,
    remote_dir: String,
    remote_barsync: String,
    barman: Option<PathBuf>,
    primary: Option<Primary>,
    /// Which of W2's and W3's data exist already (`have_v2`: `gen/big.v2`, of W2 and W8).
    have_v2: bool,
    have_w2: bool,
    have_w3: bool,
    notes: Vec<String>,
}

impl<'a> Context<'a> {
    /// Creates the scratch directories and starts the loopback sshd (or checks the remote
    /// host).
    pub fn new(options: &'a Options, progress: &'a dyn Fn(&str)) -> Result<Context<'a>> {
        let barsync = options
            .barsync
            .canonicalize()
            .map_err(HarnessError::io(format!(
                "barsync binary {}",
                options.barsync.display()
            )))?;
        // The fixtures of barsync-tests find barsync and Barman through these variables.
        std::env::set_var("BARSYNC_BIN", &barsync);
        let barman = find_barman(options.barman.as_deref());
        if let Some(barman) = &barman {
            std::env::set_var("BARSYNC_TEST_BARMAN", barman);
        }
        let (scratch, work) = match &options.work_dir {
            Some(dir) => {
                fs::create_dir_all(dir).map_err(HarnessError::io(dir.display().to_string()))?;
                (None, dir.clone())
            }
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("barsync-bench-")
                    .tempdir_in("/tmp")
                    .map_err(HarnessError::io("scratch directory"))?;
                let path = dir.path().to_path_buf();
                (Some(dir), path)
            }
        };
        let mut context = Context {
            options,
            progress,
            _scratch: scratch,
            work: work.clone(),
            sshd: None,
            ssh: String::new(),
            host: String::new(),
            remote_dir: String::new(),
            remote_barsync: String::new(),
            barman,
            primary: None,
            have_v2: false,
            have_w2: false,
            have_w3: false,
            notes: Vec::new(),
        };
        match &options.remote {
            Some(remote) => {
                let words: Vec<&str> = remote.ssh.split_whitespace().collect();
                if words.len() < 2 {
                    return Err(HarnessError::Invalid(format!(
                        "--ssh {:?}: give the whole command with the destination, e.g. \"ssh user@host\"",
                        remote.ssh
                    )));
                }
                context.host = words[words.len() - 1].to_owned();
                context.ssh = words[..words.len() - 1].join(" ");
                context.remote_dir = remote.dir.trim_end_matches('/').to_owned();
                context.remote_barsync = options
                    .remote_barsync
                    .clone()
                    .unwrap_or_else(|| "barsync".into());
                context.remote_shell(&format!("mkdir -p '{}'", context.remote_dir))?;
            }
            None => {
                progress("starting sshd on 127.0.0.1");
                let sshd = TestSshd::start().map_err(HarnessError::io("starting sshd"))?;
                context.ssh = ssh_command_for(&sshd, sshd.port(), &sshd.known_hosts());
                context.host = format!("{}@127.0.0.1", sshd.user());
                context.sshd = Some(sshd);
                context.remote_dir = work.join("remote").display().to_string();
                context.remote_barsync = options
                    .remote_barsync
                    .clone()
                    .unwrap_or_else(|| barsync.display().to_string());
                fs::create_dir_all(&context.remote_dir)
                    .map_err(HarnessError::io("remote directory"))?;
            }
        }
        for dir in ["gen", "dst"] {
            fs::create_dir_all(work.join(dir)).map_err(HarnessError::io("scratch directory"))?;
        }
        Ok(context)
    }

    /// Barman, when found.
    pub fn barman(&self) -> Option<PathBuf> {
        self.barman.clone()
    }

    /// Where the remote side is, for the report.
    pub fn target_description(&self) -> String {
        match &self.options.remote {
            Some(remote) => format!("{} ({}) via `{}`", self.host, remote.dir, self.ssh),
            None => "sshd on 127.0.0.1 (this machine), keys of its own".to_owned(),
        }
    }

    /// Notes gathered while preparing the workloads.
    pub fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }

    /// Prepares and measures one workload.
    pub fn run(&mut self, workload: Workload) -> Result<Outcome> {
        match workload {
            Workload::W1 => self.w1(),
            Workload::W2 => self.w2(),
            Workload::W3 => self.w3(),
            Workload::W4 => self.w4(),
            Workload::W5 => self.w5(),
            Workload::W6 => self.w6(),
            Workload::W7 => self.w7(),
            Workload::W8 => self.w8(),
            Workload::W9 => self.w9(),
            Workload::W10 => self.w10(),
            Workload::W11 => self.w11(),
        }
    }

    fn remote_spec(&self, relative: &str) -> String {
        format!("{}:{}/{relative}", self.host, self.remote_dir)
    }

    // ---- data ----

    /// Where the data of `relative` is generated: the remote directory itself on loopback,
    /// else `gen/remote/<relative>`, uploaded by [`Context::publish`].
    fn source_path(&self, relative: &str) -> PathBuf {
        if self.options.remote.is_some() {
            self.work.join("gen/remote").join(relative)
        } else {
            Path::new(&self.remote_dir).join(relative)
        }
    }

    /// Uploads `relative` to the remote host (no-op on loopback).
    fn publish(&self, relative: &str) -> Result<()> {
        if self.options.remote.is_none() {
            return Ok(());
        }
        let local = self.source_path(relative);
        self.remote_shell(&format!("mkdir -p '{}/{relative}'", self.remote_dir))?;
        (self.progress)(&format!("   uploading {relative} to {}", self.host));
        runner::run_quiet(
            Command::new("rsync")
                .args(["-a", "--delete", "-e", &self.ssh])
                .arg(format!("{}/", local.display()))
                .arg(format!("{}/", self.remote_spec(relative))),
        )?;
        Ok(())
    }

    fn remote_shell(&self, script: &str) -> Result<()> {
        let mut words: Vec<&str> = self.ssh.split_whitespace().collect();
        words.push(&self.host);
        words.push(script);
        runner::run_quiet(Command::new(words[0]).args(&words[1..]))?;
        Ok(())
    }
}

/// The ssh command (without destination) reaching `sshd` on `port` with `known_hosts`.
fn ssh_command_for(sshd: &TestSshd, port: u16, known_hosts: &Path) -> String {
    format!(
        "ssh -F none -p {port} -i {} -o UserKnownHostsFile={} -o GlobalKnownHostsFile=/dev/null \
         -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes -o BatchMode=yes",
        sshd.client_key().display(),
        known_hosts.display()
    )
}

/// Runs a fixture call of barsync-tests, turning its panic into [`HarnessError::Fixture`].
fn fixture<T>(call: impl FnOnce() -> T) -> Result<T> {
    catch_unwind(AssertUnwindSafe(call)).map_err(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "panic".to_owned());
        HarnessError::Fixture(message)
    })
}

fn find_barman(given: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = given {
        return path.is_file().then(|| path.to_path_buf());
    }
    let candidates = [
        std::env::var_os("BARSYNC_TEST_BARMAN").map(PathBuf::from),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/barman")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|path| path.is_file())
        .and_then(|path| path.canonicalize().ok())
}

fn size_label(mib: u64) -> String {
    if mib >= 1024 && (mib / 1024) * 1024 == mib {
        format!("{} GiB", mib / 1024)
    } else {
        format!("{mib} MiB")
    }
}

/// Empties `dir` (removing and recreating it).
fn reset_dir(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(HarnessError::io(dir.display().to_string())(error)),
    }
    fs::create_dir_all(dir).map_err(HarnessError::io(dir.display().to_string()))
}

fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    let _ = fs::remove_file(to);
    if fs::hard_link(from, to).is_err() {
        fs::copy(from, to).map_err(HarnessError::io(format!("copy to {}", to.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_parse_by_id() {
        assert_eq!("w3".parse::<Workload>().unwrap(), Workload::W3);
        assert_eq!("W8".parse::<Workload>().unwrap(), Workload::W8);
        assert_eq!("W10".parse::<Workload>().unwrap(), Workload::W10);
        assert_eq!("w11".parse::<Workload>().unwrap(), Workload::W11);
        assert!("W12".parse::<Workload>().is_err());
    }
}
