//! The workloads of issue 6 and how each is measured. [`Context`] owns the scratch space (a
//! local directory, and a "remote" directory reached over SSH: on loopback by default), the
//! sshd, the lazily built data of each workload and the Barman primary shared by W3, W4 and W7.
//!
//! | id | data | barsync | anchor |
//! |---|---|---|---|
//! | W1 | one new file of `size_mib` incompressible bytes | `copy` | `rsync -a` |
//! | W2 | the W1 file with 1% rewritten (100 regions of 100 KiB per GiB) over a copy of the original | `copy`, `copy --inplace` | `rsync -a`, `rsync -rLKpts --inplace` (as Barman) |
//! | W3 | 64 WAL segments of 16 MiB from PostgreSQL 15 running pgbench (synthetic stand-in without PostgreSQL/Barman) | `copy -r` | `rsync -a` |
//! | W4 | the second of two Barman backups, the first already on the passive (`reuse_backup = link`) | `sync-backup` | `barman sync-backup` |
//! | W5 | 10,000 files of 2 KiB: initial copy, then a resync with nothing changed | `copy -r` | `rsync -a` |
//! | W6 | W2 and W3 through [`super::proxy::ShapingProxy`] (40 ms RTT, 100 Mbit/s) | as W2/W3 | as W2/W3 |
//! | W7 | a cold passive of a Barman primary with two backups and archived WALs | one `cron` | `barman sync-info --primary`, `sync-backup` per backup, `sync-wals` |
//!
//! W4 and W7 always use a local PostgreSQL + Barman primary behind its own loopback sshd
//! ([`barsync_tests::passive_rig::PassiveRig`]), also when a remote host is given; W6 needs
//! the loopback sshd (the proxy must know the server's address).

use std::cell::RefCell;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::time::{Duration, Instant};

use barsync_tests::barman_primary::BarmanPrimary;
use barsync_tests::passive_rig::{PassiveRig, RigOptions};
use barsync_tests::sshd::TestSshd;

use super::proxy::ShapingProxy;
use super::report::{Row, SideStats};
use super::runner::{self, barsync_wire_bytes, measure, rsync_wire_bytes, Measurement};
use super::{HarnessError, Options, Result};

const MIB: u64 = 1024 * 1024;
const WAL_SEGMENT: u64 = 16 * MIB;
/// Size of a W5 file.
const SMALL_FILE: usize = 2048;
/// W2: rewritten regions and their length (per GiB of file).
const REGIONS_PER_GIB: u64 = 100;
const REGION_LEN: usize = 100 * 1024;
/// How long W3 may run pgbench to get its segments before topping up with synthetic ones.
const WAL_GENERATION_LIMIT: Duration = Duration::from_secs(900);

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
}

impl Workload {
    pub const ALL: [Workload; 7] = [
        Workload::W1,
        Workload::W2,
        Workload::W3,
        Workload::W4,
        Workload::W5,
        Workload::W6,
        Workload::W7,
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
        }
    }
}

impl FromStr for Workload {
    type Err = HarnessError;
    fn from_str(text: &str) -> Result<Workload> {
        Workload::ALL
            .into_iter()
            .find(|w| w.id().eq_ignore_ascii_case(text.trim()))
            .ok_or_else(|| HarnessError::Invalid(format!("unknown workload {text:?} (W1..W7)")))
    }
}

/// What running a workload gave.
pub enum Outcome {
    Rows(Vec<Row>),
    Skipped(String),
}

/// The PostgreSQL 15 bin directory: `$BARSYNC_TEST_PG_BIN`, else `/usr/lib/postgresql/15/bin`.
pub fn pg_bin_dir() -> PathBuf {
    std::env::var_os("BARSYNC_TEST_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
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
    /// Which of W2's and W3's data exist already.
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
        }
    }

    // ---- workloads ----

    fn w1(&mut self) -> Result<Outcome> {
        self.ensure_w1()?;
        let size = size_label(self.options.size_mib);
        let dst = self.work.join("dst");
        let target = dst.join("big");
        let reset = || reset_dir(&dst);
        let row = self.compare(
            "W1",
            &format!("new {size} file (incompressible)"),
            self.copy_side(&self.ssh, &[], "w1/big", &target, Box::new(reset)),
            self.rsync_side(
                &self.ssh,
                "rsync -a",
                &["-a"],
                "w1/big",
                &target,
                Box::new(reset),
            ),
        )?;
        Ok(Outcome::Rows(vec![row]))
    }

    fn w2(&mut self) -> Result<Outcome> {
        self.ensure_w2()?;
        let size = size_label(self.options.size_mib);
        let mut rows = Vec::new();
        for (id, label, barsync_flags, rsync_tool, rsync_flags) in [
            ("W2", "1% rewritten", &[][..], "rsync -a", &["-a"][..]),
            (
                "W2-inplace",
                "1% rewritten, in place",
                &["--inplace"][..],
                "rsync -rLKpts --inplace",
                &["-rLKpts", "--inplace"][..],
            ),
        ] {
            let ssh = self.ssh.clone();
            rows.push(self.w2_case(
                &ssh,
                id,
                &format!("{size} file, {label}"),
                barsync_flags,
                rsync_tool,
                rsync_flags,
            )?);
        }
        Ok(Outcome::Rows(rows))
    }

    fn w2_case(
        &self,
        ssh: &str,
        id: &str,
        title: &str,
        barsync_flags: &[&str],
        rsync_tool: &str,
        rsync_flags: &[&str],
    ) -> Result<Row> {
        let dst = self.work.join("dst");
        let target = dst.join("big");
        let basis = self.work.join("gen/big.v1");
        let reset = || {
            reset_dir(&dst)?;
            fs::copy(&basis, &target).map_err(HarnessError::io("copying the W2 basis"))?;
            set_old_mtime(&target)
        };
        self.compare(
            id,
            title,
            self.copy_side(ssh, barsync_flags, "w2/big", &target, Box::new(reset)),
            self.rsync_side(
                ssh,
                rsync_tool,
                rsync_flags,
                "w2/big",
                &target,
                Box::new(reset),
            ),
        )
    }

    fn w3(&mut self) -> Result<Outcome> {
        self.ensure_w3()?;
        let ssh = self.ssh.clone();
        Ok(Outcome::Rows(vec![self.w3_case(&ssh, "W3")?]))
    }

    fn w3_case(&self, ssh: &str, id: &str) -> Result<Row> {
        let dst = self.work.join("dst");
        let target = dst.join("wals");
        let reset = || reset_dir(&dst);
        self.compare(
            id,
            &format!("{} WAL segments of 16 MiB", self.options.wal_segments),
            self.copy_side(ssh, &["-r"], "w3/", &target, Box::new(reset)),
            self.rsync_side(ssh, "rsync -a", &["-a"], "w3/", &target, Box::new(reset)),
        )
    }

    fn w5(&mut self) -> Result<Outcome> {
        self.ensure_w5()?;
        let count = self.options.small_files;
        let dst = self.work.join("dst");
        let target = dst.join("small");
        let pristine = self.work.join("gen/w5");
        let empty = || reset_dir(&dst);
        let initial = self.compare(
            "W5-initial",
            &format!("{count} x 2 KiB, initial copy"),
            self.copy_side(&self.ssh, &["-r"], "w5/", &target, Box::new(empty)),
            self.rsync_side(
                &self.ssh,
                "rsync -a",
                &["-a"],
                "w5/",
                &target,
                Box::new(empty),
            ),
        )?;
        let synced = || {
            reset_dir(&dst)?;
            runner::run_quiet(Command::new("cp").arg("-a").arg(&pristine).arg(&target)).map(|_| ())
        };
        let resync = self.compare(
            "W5-resync",
            &format!("{count} x 2 KiB, resync, none changed"),
            self.copy_side(&self.ssh, &["-r"], "w5/", &target, Box::new(synced)),
            self.rsync_side(
                &self.ssh,
                "rsync -a",
                &["-a"],
                "w5/",
                &target,
                Box::new(synced),
            ),
        )?;
        Ok(Outcome::Rows(vec![initial, resync]))
    }

    fn w6(&mut self) -> Result<Outcome> {
        if self.sshd.is_none() {
            return Ok(Outcome::Skipped(
                "needs the loopback sshd (the shaping proxy forwards to it); not run against a remote host".into(),
            ));
        }
        self.ensure_w2()?;
        self.ensure_w3()?;
        let sshd = self.sshd.as_ref().expect("loopback sshd");
        let upstream = format!("127.0.0.1:{}", sshd.port())
            .parse()
            .map_err(|_| HarnessError::Invalid("sshd address".into()))?;
        let proxy = ShapingProxy::start(upstream, self.options.link)
            .map_err(HarnessError::io("starting the shaping proxy"))?;
        let known_hosts = self.work.join("known_hosts.proxy");
        let line = sshd
            .known_hosts_line()
            .map_err(HarnessError::io("known_hosts"))?;
        let line = line.replacen(
            &format!("[127.0.0.1]:{} ", sshd.port()),
            &format!("[127.0.0.1]:{} ", proxy.port()),
            1,
        );
        fs::write(&known_hosts, line).map_err(HarnessError::io("known_hosts"))?;
        let ssh = ssh_command_for(sshd, proxy.port(), &known_hosts);
        let shape = self.options.link;
        let link = format!(
            "{} ms RTT, {:.0} Mbit/s",
            shape.one_way_delay.as_millis() * 2,
            shape.rate_bytes_per_second as f64 * 8.0 / 1e6
        );
        let size = size_label(self.options.size_mib);
        let w2 = self.w2_case(
            &ssh,
            "W6-W2",
            &format!("{size} file, 1% rewritten, {link}"),
            &[],
            "rsync -a",
            &["-a"],
        )?;
        let mut w3 = self.w3_case(&ssh, "W6-W3")?;
        w3.workload = format!("{}, {link}", w3.workload);
        drop(proxy);
        Ok(Outcome::Rows(vec![w2, w3]))
    }

    fn w4(&mut self) -> Result<Outcome> {
        if let Some(reason) = self.primary_unavailable() {
            return Ok(Outcome::Skipped(reason));
        }
        self.ensure_primary()?;
        let primary = self.primary.as_ref().expect("primary prepared");
        let config = primary.primary.config_path();
        let (first, second) = (primary.first.clone(), primary.second.clone());
        let barman = self.barman.clone().expect("barman found");
        let barsync = self.options.barsync.clone();
        let rig: RefCell<Option<PassiveRig>> = RefCell::new(None);
        let new_rig = || {
            rig.replace(None);
            let fresh = fixture(|| {
                PassiveRig::new(
                    &config,
                    &RigOptions {
                        server_lines: vec!["reuse_backup = link".into()],
                        ..RigOptions::default()
                    },
                )
            })?;
            let config = fresh.config.clone();
            rig.replace(Some(fresh));
            Ok::<PathBuf, HarnessError>(config)
        };
        let barsync_side = Side {
            tool: "barsync sync-backup".into(),
            setup: Box::new(|| {
                let passive = new_rig()?;
                runner::run_quiet(&mut barsync_cmd(
                    &barsync,
                    "sync-info",
                    &passive,
                    &["--primary", "pg"],
                ))?;
                runner::run_quiet(&mut barsync_cmd(
                    &barsync,
                    "sync-backup",
                    &passive,
                    &["pg", &first],
                ))?;
                Ok(())
            }),
            run: Box::new(|| {
                let passive = rig.borrow().as_ref().expect("rig").config.clone();
                let mut command = barsync_cmd(&barsync, "sync-backup", &passive, &["pg", &second]);
                let what = runner::describe(&command);
                let run = measure(&mut command)?;
                check_backups(&rig, &[&first, &second])?;
                Ok((run, what))
            }),
            wire: barsync_wire_bytes,
        };
        let barman_side = Side {
            tool: "barman sync-backup".into(),
            setup: Box::new(|| {
                let passive = new_rig()?;
                runner::run_quiet(&mut barman_cmd(
                    &barman,
                    &passive,
                    &["sync-info", "--primary", "pg"],
                ))?;
                runner::run_quiet(&mut barman_cmd(
                    &barman,
                    &passive,
                    &["sync-backup", "pg", &first],
                ))?;
                Ok(())
            }),
            run: Box::new(|| {
                let passive = rig.borrow().as_ref().expect("rig").config.clone();
                let mut command = barman_cmd(&barman, &passive, &["sync-backup", "pg", &second]);
                let what = runner::describe(&command);
                let run = measure(&mut command)?;
                check_backups(&rig, &[&first, &second])?;
                Ok((run, what))
            }),
            wire: |_| None,
        };
        let row = self.compare(
            "W4",
            &format!(
                "second backup ({}), first on the passive, reuse_backup = link",
                self.backup_size(&second)
            ),
            barsync_side,
            barman_side,
        )?;
        rig.replace(None);
        Ok(Outcome::Rows(vec![row]))
    }

    fn w7(&mut self) -> Result<Outcome> {
        if let Some(reason) = self.primary_unavailable() {
            return Ok(Outcome::Skipped(reason));
        }
        self.ensure_primary()?;
        let primary = self.primary.as_ref().expect("primary prepared");
        let config = primary.primary.config_path();
        let (first, second) = (primary.first.clone(), primary.second.clone());
        let primary_xlog = xlog_db(&primary.primary.barman_home().join("pg"));
        let wal_count = primary_xlog.lines().count();
        let barman = self.barman.clone().expect("barman found");
        let barsync = self.options.barsync.clone();
        let rig: RefCell<Option<PassiveRig>> = RefCell::new(None);
        let new_rig = || {
            rig.replace(None);
            let fresh = fixture(|| PassiveRig::new(&config, &RigOptions::default()))?;
            rig.replace(Some(fresh));
            Ok::<(), HarnessError>(())
        };
        let findings: RefCell<Vec<String>> = RefCell::new(Vec::new());
        let check = |rig: &RefCell<Option<PassiveRig>>, who: &str| {
            check_backups(rig, &[&first, &second])?;
            let home = rig.borrow().as_ref().expect("rig").server_directory();
            let synced = xlog_db(&home);
            let names = |text: &str| {
                let mut names: Vec<String> = text
                    .lines()
                    .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
                    .collect();
                names.sort();
                names
            };
            let mut unique = names(&synced);
            unique.dedup();
            let extra = synced.lines().count().saturating_sub(unique.len());
            if extra > 0 {
                findings.borrow_mut().push(format!(
                    "W7: {who} left {extra} duplicate lines in the passive's xlog db ({} lines for {} WALs)",
                    synced.lines().count(),
                    unique.len()
                ));
            }
            if unique != names(&primary_xlog) {
                return Err(HarnessError::Check(format!(
                    "the passive's xlog db differs from the primary's:\n--- passive\n{synced}--- primary\n{primary_xlog}"
                )));
            }
            Ok(())
        };
        let barsync_side = Side {
            tool: "barsync cron".into(),
            setup: Box::new(new_rig),
            run: Box::new(|| {
                let passive = rig.borrow().as_ref().expect("rig").config.clone();
                let mut command = barsync_cmd(&barsync, "cron", &passive, &[]);
                let what = runner::describe(&command);
                let run = measure(&mut command)?;
                check(&rig, "barsync cron")?;
                Ok((run, what))
            }),
            wire: barsync_wire_bytes,
        };
        let barman_side = Side {
            tool: "barman sync-info/-backup/-wals".into(),
            setup: Box::new(new_rig),
            run: Box::new(|| {
                let passive = rig.borrow().as_ref().expect("rig").config.clone();
                let mut run = measure(&mut barman_cmd(
                    &barman,
                    &passive,
                    &["sync-info", "--primary", "pg"],
                ))?;
                for id in [&first, &second] {
                    run = run.then(measure(&mut barman_cmd(
                        &barman,
                        &passive,
                        &["sync-backup", "pg", id],
                    ))?);
                }
                let mut last = barman_cmd(&barman, &passive, &["sync-wals", "pg"]);
                let what = format!(
                    "barman sync-info --primary pg; sync-backup pg {first}; sync-backup pg {second}; {}",
                    runner::describe(&last)
                );
                run = run.then(measure(&mut last)?);
                check(&rig, "Barman")?;
                Ok((run, what))
            }),
            wire: |_| None,
        };
        let row = self.compare(
            "W7",
            &format!(
                "cold passive: 2 backups ({} + {}), {wal_count} WAL entries",
                self.backup_size(&first),
                self.backup_size(&second)
            ),
            barsync_side,
            barman_side,
        )?;
        rig.replace(None);
        let mut findings = findings.into_inner();
        findings.dedup();
        self.notes.extend(findings);
        Ok(Outcome::Rows(vec![row]))
    }

    // ---- measuring ----

    /// `runs` rounds; in each, both sides run once, barsync first in even rounds and the
    /// anchor first in odd ones. Each run is preceded by its side's setup and a `sync`.
    fn compare<'s>(
        &self,
        id: &str,
        title: &str,
        mut barsync: Side<'s>,
        mut anchor: Side<'s>,
    ) -> Result<Row> {
        let mut results: [(Vec<Measurement>, Vec<Option<u64>>, String); 2] = Default::default();
        for round in 0..self.options.runs {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for index in order {
                let side = if index == 0 {
                    &mut barsync
                } else {
                    &mut anchor
                };
                (side.setup)()?;
                // SAFETY: sync(2) takes no arguments and cannot fail.
                unsafe { libc::sync() };
                let (run, command) = (side.run)()?;
                (self.progress)(&format!(
                    "   {id} {} run {}/{}: {:.2} s",
                    side.tool,
                    round + 1,
                    self.options.runs,
                    run.seconds
                ));
                let wire = (side.wire)(&run.stdout);
                let slot = &mut results[index];
                slot.1.push(wire);
                slot.0.push(run);
                slot.2 = command;
            }
        }
        let [b, a] = results;
        let barsync = SideStats::from_runs(&barsync.tool, &b.2, &b.0, &b.1);
        let anchor = SideStats::from_runs(&anchor.tool, &a.2, &a.0, &a.1);
        let row = Row::new(id, title, barsync, anchor);
        (self.progress)(&format!(
            "   {id}: barsync {:.2} s, {} {:.2} s, ratio {:.2}x",
            row.barsync.median_seconds, row.anchor.tool, row.anchor.median_seconds, row.ratio
        ));
        Ok(row)
    }

    /// `barsync copy [flags] HOST:REMOTE/source target` through `ssh`.
    fn copy_side<'s>(
        &'s self,
        ssh: &'s str,
        flags: &'s [&'s str],
        source: &'s str,
        target: &'s Path,
        setup: Box<dyn FnMut() -> Result<()> + 's>,
    ) -> Side<'s> {
        let tool = if flags.is_empty() {
            "barsync copy".to_owned()
        } else {
            format!("barsync copy {}", flags.join(" "))
        };
        Side {
            tool,
            setup,
            run: Box::new(move || {
                let mut command = Command::new(&self.options.barsync);
                command
                    .arg("copy")
                    .args(["--remote-barsync", &self.remote_barsync, "-e", ssh])
                    .args(flags)
                    .arg(self.remote_spec(source))
                    .arg(target);
                let what = runner::describe(&command);
                Ok((measure(&mut command)?, what))
            }),
            wire: barsync_wire_bytes,
        }
    }

    /// `rsync [flags] --stats -e ssh HOST:REMOTE/source target`.
    fn rsync_side<'s>(
        &'s self,
        ssh: &'s str,
        tool: &str,
        flags: &'s [&'s str],
        source: &'s str,
        target: &'s Path,
        setup: Box<dyn FnMut() -> Result<()> + 's>,
    ) -> Side<'s> {
        Side {
            tool: tool.to_owned(),
            setup,
            run: Box::new(move || {
                let mut command = Command::new("rsync");
                command
                    .args(flags)
                    .args(["--stats", "-e", ssh])
                    .arg(self.remote_spec(source))
                    .arg(target);
                let what = runner::describe(&command);
                Ok((measure(&mut command)?, what))
            }),
            wire: rsync_wire_bytes,
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

    fn ensure_w1(&mut self) -> Result<()> {
        let v1 = self.work.join("gen/big.v1");
        if !v1.exists() {
            (self.progress)(&format!(
                "   generating {} of incompressible data",
                size_label(self.options.size_mib)
            ));
            write_random_file(&v1, self.options.size_mib * MIB, 1)
                .map_err(HarnessError::io("generating the W1 file"))?;
        }
        let source = self.source_path("w1");
        if !source.join("big").exists() {
            fs::create_dir_all(&source).map_err(HarnessError::io("w1"))?;
            link_or_copy(&v1, &source.join("big"))?;
            self.publish("w1")?;
        }
        Ok(())
    }

    fn ensure_w2(&mut self) -> Result<()> {
        if self.have_w2 {
            return Ok(());
        }
        self.ensure_w1()?;
        let v2 = self.work.join("gen/big.v2");
        let len = self.options.size_mib * MIB;
        let regions = (REGIONS_PER_GIB * self.options.size_mib)
            .div_ceil(1024)
            .max(1);
        (self.progress)(&format!(
            "   rewriting {regions} regions of 100 KiB in a copy of the W1 file"
        ));
        fs::copy(self.work.join("gen/big.v1"), &v2).map_err(HarnessError::io("copying W1"))?;
        rewrite_regions(&v2, len, regions, REGION_LEN, 2)
            .map_err(HarnessError::io("rewriting W2 regions"))?;
        let source = self.source_path("w2");
        fs::create_dir_all(&source).map_err(HarnessError::io("w2"))?;
        link_or_copy(&v2, &source.join("big"))?;
        self.publish("w2")?;
        self.have_w2 = true;
        Ok(())
    }

    fn ensure_w3(&mut self) -> Result<()> {
        if self.have_w3 {
            return Ok(());
        }
        let source = self.source_path("w3");
        let _ = fs::remove_dir_all(&source);
        fs::create_dir_all(&source).map_err(HarnessError::io("w3"))?;
        let wanted = self.options.wal_segments;
        let mut real = 0;
        if self.primary_unavailable().is_none() {
            self.ensure_primary_started()?;
            real = self.collect_wal_segments(&source, wanted)?;
        }
        if real < wanted {
            (self.progress)(&format!(
                "   {} synthetic WAL segments (stand-in)",
                wanted - real
            ));
            for index in real..wanted {
                let name = format!("00000001000000FF{:08X}", index);
                write_synthetic_wal(&source.join(name), index as u64)
                    .map_err(HarnessError::io("synthetic WAL"))?;
            }
            self.notes.push(format!(
                "W3: {} of {wanted} WAL segments are a synthetic stand-in ({}): 8 KiB records of \
                 1 KiB random bytes and 7 KiB of pgbench-like tuples (zstd -3 ratio about 4x, \
                 like pgbench WAL)",
                wanted - real,
                self.primary_unavailable()
                    .unwrap_or_else(|| "pgbench did not produce enough WAL in time".into())
            ));
        } else {
            self.notes.push(format!(
                "W3: {wanted} WAL segments archived by the Barman primary while PostgreSQL 15 ran pgbench -i and pgbench (scale {})",
                self.options.scale
            ));
        }
        self.publish("w3")?;
        self.have_w3 = true;
        Ok(())
    }

    fn ensure_w5(&mut self) -> Result<()> {
        let pristine = self.work.join("gen/w5");
        if pristine.exists() {
            return Ok(());
        }
        let count = self.options.small_files;
        (self.progress)(&format!("   generating {count} files of 2 KiB"));
        let source = self.source_path("w5");
        fs::create_dir_all(&source).map_err(HarnessError::io("w5"))?;
        let data = crate::random_bytes(count * SMALL_FILE, 5);
        for (index, chunk) in data.chunks(SMALL_FILE).enumerate() {
            fs::write(source.join(format!("f{index:05}")), chunk)
                .map_err(HarnessError::io("w5 file"))?;
        }
        self.publish("w5")?;
        // The resync's destination: a copy with the same mtimes.
        runner::run_quiet(Command::new("cp").arg("-a").arg(&source).arg(&pristine))?;
        Ok(())
    }

    // ---- the Barman primary ----

    /// Why W4/W7 (and W3's real WAL) cannot run, if they cannot.
    fn primary_unavailable(&self) -> Option<String> {
        if self.barman.is_none() {
            return Some(
                "Barman not found (--barman, $BARSYNC_TEST_BARMAN or .venv/bin/barman)".into(),
            );
        }
        if !pg_bin_dir().join("initdb").is_file() {
            return Some(format!("no PostgreSQL in {}", pg_bin_dir().display()));
        }
        let postgres_user = Command::new("id")
            .args(["-u", "postgres"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !postgres_user {
            return Some("no `postgres` OS user to run PostgreSQL".into());
        }
        None
    }

    fn ensure_primary_started(&mut self) -> Result<()> {
        if self.primary.is_some() {
            return Ok(());
        }
        let scale = self.options.scale;
        (self.progress)(&format!(
            "   starting PostgreSQL 15 + Barman primary, pgbench -i -s {scale}"
        ));
        let primary = fixture(|| BarmanPrimary::start(scale))?
            .map_err(HarnessError::io("starting the Barman primary"))?;
        self.primary = Some(Primary {
            primary,
            first: String::new(),
            second: String::new(),
        });
        Ok(())
    }

    /// Two backups with pgbench traffic between them, and every WAL archived.
    fn ensure_primary(&mut self) -> Result<()> {
        self.ensure_primary_started()?;
        let primary = self.primary.as_mut().expect("started");
        if !primary.second.is_empty() {
            return Ok(());
        }
        let transactions = 1000 * self.options.scale;
        (self.progress)("   first backup (barman backup)");
        primary.first = fixture(|| primary.primary.backup())?;
        (self.progress)(&format!(
            "   pgbench: 2 clients x {transactions} transactions"
        ));
        fixture(|| primary.primary.pgbench_run(transactions))?;
        (self.progress)("   second backup");
        primary.second = fixture(|| primary.primary.backup())?;
        fixture(|| primary.primary.pgbench_run(transactions / 10))?;
        fixture(|| primary.primary.archive_wals())?;
        Ok(())
    }

    /// Runs pgbench until the primary has archived `wanted` full segments (or the time limit
    /// passes), then hard-links the first `wanted` into `destination`. Returns how many.
    fn collect_wal_segments(&mut self, destination: &Path, wanted: usize) -> Result<usize> {
        let primary = &self.primary.as_ref().expect("started").primary;
        let wals = primary.barman_home().join("pg/wals");
        let start = Instant::now();
        (self.progress)(&format!(
            "   running pgbench until {wanted} WAL segments are archived"
        ));
        let mut segments;
        loop {
            fixture(|| primary.archive_wals())?;
            segments = full_segments(&wals);
            (self.progress)(&format!(
                "   {} segments after {:.0} s",
                segments.len(),
                start.elapsed().as_secs_f64()
            ));
            if segments.len() >= wanted || start.elapsed() > WAL_GENERATION_LIMIT {
                break;
            }
            // A checkpoint first: the next updates write full-page images, as after each
            // checkpoint on a real server.
            fixture(|| primary.query("CHECKPOINT"))?;
            fixture(|| primary.pgbench_run(5000))?;
        }
        let taken = segments.len().min(wanted);
        for segment in &segments[..taken] {
            let name = segment.file_name().expect("segment name");
            link_or_copy(segment, &destination.join(name))?;
        }
        Ok(taken)
    }

    fn backup_size(&self, id: &str) -> String {
        let Some(primary) = &self.primary else {
            return "?".into();
        };
        let root = primary.primary.barman_home().join("pg/base").join(id);
        let (files, bytes) = tree_size(&root);
        format!("{:.0} MiB in {files} files", bytes as f64 / MIB as f64)
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

fn barsync_cmd(barsync: &Path, subcommand: &str, config: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(barsync);
    command.arg(subcommand).arg("-c").arg(config).args(args);
    command
}

fn barman_cmd(barman: &Path, config: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(barman);
    command.arg("-c").arg(config).args(args);
    command
}

/// Both backups are DONE in the passive's catalog.
fn check_backups(rig: &RefCell<Option<PassiveRig>>, ids: &[&String]) -> Result<()> {
    let rig = rig.borrow();
    let rig = rig.as_ref().expect("rig");
    for id in ids {
        let info = rig
            .server_directory()
            .join(format!("meta/{id}-backup.info"));
        let legacy = rig
            .server_directory()
            .join(format!("base/{id}/backup.info"));
        let text = fs::read_to_string(&info)
            .or_else(|_| fs::read_to_string(&legacy))
            .unwrap_or_default();
        if !text.lines().any(|line| line == "status=DONE") {
            return Err(HarnessError::Check(format!(
                "backup {id} is not DONE on the passive {}",
                rig.server_directory().display()
            )));
        }
    }
    Ok(())
}

/// The xlog db of a server directory (`wals/pg-xlog.db`, server `pg`), empty when missing.
fn xlog_db(server_directory: &Path) -> String {
    fs::read_to_string(server_directory.join("wals/pg-xlog.db")).unwrap_or_default()
}

/// Full 16 MiB WAL segments below `wals` (one level of timeline/log directories), by name.
fn full_segments(wals: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for directory in fs::read_dir(wals).into_iter().flatten().flatten() {
        for file in fs::read_dir(directory.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = file.file_name().to_string_lossy().into_owned();
            let is_segment = name.len() == 24 && name.chars().all(|c| c.is_ascii_hexdigit());
            if is_segment && file.metadata().is_ok_and(|m| m.len() == WAL_SEGMENT) {
                found.push(file.path());
            }
        }
    }
    found.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    found
}

fn tree_size(root: &Path) -> (u64, u64) {
    let mut files = 0;
    let mut bytes = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                files += 1;
                bytes += meta.len();
            }
        }
    }
    (files, bytes)
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

/// Sets the mtime of `path` to 2020-01-01, so that both tools see the basis as out of date.
fn set_old_mtime(path: &Path) -> Result<()> {
    let file = fs::File::options()
        .write(true)
        .open(path)
        .map_err(HarnessError::io(path.display().to_string()))?;
    let old = std::time::UNIX_EPOCH + Duration::from_secs(1_577_836_800);
    file.set_modified(old)
        .map_err(HarnessError::io(path.display().to_string()))
}

fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    let _ = fs::remove_file(to);
    if fs::hard_link(from, to).is_err() {
        fs::copy(from, to).map_err(HarnessError::io(format!("copy to {}", to.display())))?;
    }
    Ok(())
}

/// Writes `len` incompressible bytes, 8 MiB at a time (no whole-file buffer).
pub fn write_random_file(path: &Path, len: u64, seed: u64) -> io::Result<()> {
    let mut file = io::BufWriter::new(fs::File::create(path)?);
    let chunk = 8 * MIB;
    let mut written = 0;
    let mut index = 0;
    while written < len {
        let n = chunk.min(len - written);
        file.write_all(&crate::random_bytes(
            n as usize,
            seed.wrapping_mul(1_000_003) + index,
        ))?;
        written += n;
        index += 1;
    }
    file.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// Rewrites `regions` regions of `region_len` bytes in place, one at a scattered offset in
/// each of `regions` equal spans of the file (W2).
pub fn rewrite_regions(
    path: &Path,
    len: u64,
    regions: u64,
    region_len: usize,
    seed: u64,
) -> io::Result<()> {
    let file = fs::File::options().write(true).open(path)?;
    let span = len / regions.max(1);
    let jitter = crate::random_bytes(regions as usize * 8, seed ^ 0xfeed);
    for region in 0..regions {
        let offset = region as usize * 8;
        let random = u64::from_le_bytes(jitter[offset..offset + 8].try_into().expect("8 bytes"));
        let room = span.saturating_sub(region_len as u64).max(1);
        let start = (region * span + random % room).min(len.saturating_sub(region_len as u64));
        file.write_all_at(&crate::random_bytes(region_len, seed + region), start)?;
    }
    file.sync_all()
}

/// A synthetic 16 MiB WAL segment: 8 KiB records of 1 KiB random bytes then 7 KiB of
/// pgbench-like tuples (counters and blank filler), so that it compresses about like pgbench
/// WAL does.
pub fn write_synthetic_wal(path: &Path, seed: u64) -> io::Result<()> {
    let mut data = Vec::with_capacity(WAL_SEGMENT as usize);
    let random = crate::random_bytes(WAL_SEGMENT as usize / 8, seed + 77);
    let mut counter = seed * 1_000_000;
    for page in 0..(WAL_SEGMENT as usize / 8192) {
        data.extend_from_slice(&random[page * 1024..page * 1024 + 1024]);
        let mut tuples = Vec::with_capacity(7168);
        while tuples.len() < 7168 {
            counter += 1;
            tuples.extend_from_slice(
                format!(
                    "{:>10}|{:>4}|{:>8}|{:84}",
                    counter,
                    counter % 50,
                    counter % 9973,
                    ""
                )
                .as_bytes(),
            );
        }
        data.extend_from_slice(&tuples[..7168]);
    }
    fs::write(path, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_parse_by_id() {
        assert_eq!("w3".parse::<Workload>().unwrap(), Workload::W3);
        assert!("W8".parse::<Workload>().is_err());
    }

    #[test]
    fn regions_are_rewritten_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_random_file(&path, 4 * MIB + 5, 3).unwrap();
        let before = fs::read(&path).unwrap();
        rewrite_regions(&path, before.len() as u64, 4, 1000, 9).unwrap();
        let after = fs::read(&path).unwrap();
        assert_eq!(before.len(), after.len());
        let changed = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        assert!(changed > 3900 && changed <= 4000, "{changed}");
    }

    #[test]
    fn a_synthetic_segment_is_16_mib() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        write_synthetic_wal(&path, 1).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), WAL_SEGMENT);
    }
}
