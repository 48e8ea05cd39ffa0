//! `barsync demo`: the main job on an embedded default, needing nothing installed.
//!
//! In a temporary directory it builds a Barman *primary* catalog (server `pg`: two DONE
//! backups of PostgreSQL-like relation files made of 8 KiB pages, backup.info files in `meta/`
//! as Barman writes them, WAL segments in hash directories with their xlog db) and a *passive*
//! Barman configuration whose `primary_ssh_command` is a generated local wrapper standing in
//! for ssh: it runs the remote command with `/bin/sh`, where `barsync` is this very binary
//! and `barman` is `barsync sync-info -c <primary.conf>`. The passive's cron then runs through
//! the library as `barsync cron` does, with the real protocol through child `barsync serve`
//! processes over pipes. The demo changes the primary (a third backup sharing most pages with
//! the second, new WALs), syncs again, prints what crossed the pipes against what was synced,
//! and checks the passive: every file equal to the primary's, every backup.info DONE, the
//! xlog db listing each WAL once.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use barsync_sync::backup_info::{BackupInfo, BackupStatus};
use barsync_sync::config::Config;
use barsync_sync::fixture::{self, shell_quote, BackupSpec, FakePrimary};
use barsync_sync::passive::cron::ServerCron;
use barsync_sync::passive::{
    run_cron, BackupOutcome, Events, FetchEvents, PassiveOptions, TransferTotals,
};
use barsync_transport::TransportPreference;
use transfer_engine::protocol::FetchReport;

use crate::output::{mib, ui, PassiveEvents};

const PAGE: usize = 8192;

pub const AFTER_HELP: &str = concat!(
    "Examples:
  barsync demo                      # 128 MiB backups: about 10 s on 2 cores
  barsync demo --size-mib 1024      # larger backups
  barsync demo --dir /tmp/demo      # keep the catalogs, then look at them with Barman:
  barman -c /tmp/demo/passive.conf list-backups pg

Needs nothing but barsync: the primary is answered by this binary (sync-info and serve)
through a local stand-in for ssh.
",
    exit_codes!()
);

#[derive(clap::Args)]
pub struct Args {
    /// Size of each sample backup (the PostgreSQL cluster) in MiB
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(4..))]
    size_mib: u64,
    /// Build the catalogs in this directory and keep them (default: a temporary one, removed)
    #[arg(long)]
    dir: Option<PathBuf>,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let root = match &args.dir {
        Some(dir) => {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            dir.canonicalize()?
        }
        None => std::env::temp_dir().join(format!("barsync-demo-{}", std::process::id())),
    };
    ensure!(
        !root.join("primary-home").exists(),
        "{} already holds a demo: choose an empty directory",
        root.display()
    );
    let result = demo(args.size_mib, &root);
    if args.dir.is_none() {
        let _ = fs::remove_dir_all(&root);
    }
    result
}

/// The primary being built: its catalog and what it holds.
struct Primary {
    catalog: FakePrimary,
    segment_size: u64,
    next_segment: u64,
    rng: XorShift,
}

fn demo(size_mib: u64, root: &Path) -> Result<ExitCode> {
    let started = Instant::now();
    let size = size_mib << 20;
    let mut primary = Primary {
        catalog: FakePrimary::create(&root.join("primary-home"), "pg")?,
        segment_size: (size / 8).next_power_of_two().clamp(1 << 20, 16 << 20),
        next_segment: 1,
        rng: XorShift(0x2545_F491_4F6C_DD1D),
    };
    let passive_conf = write_configs(root, &primary.catalog)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
    let first_id = backup_id(now - 2 * 86_400);
    let second_id = backup_id(now - 86_400);
    let third_id = backup_id(now);

    let relations = primary.cluster(&first_id, size)?;
    primary.backup(&first_id, now - 2 * 86_400, 3)?;
    primary.traffic(&first_id, &second_id, &relations)?;
    primary.backup(&second_id, now - 86_400, 3)?;
    let (files, _) = fixture::files_and_bytes(&primary.catalog.backup_directory(&first_id))?;
    ui().result(&format!(
        "barsync demo: a Barman primary and a passive node in {}",
        root.display()
    ));
    ui().result(&format!(
        "  primary: server pg, 2 DONE backups of {} ({files} files each, 8 KiB pages), {} WAL segments of {}",
        mib(size),
        primary.segments(),
        mib(primary.segment_size)
    ));
    ui().result(
        "  passive: barsync cron through `barsync serve` over pipes (a local stand-in for ssh)",
    );

    let config = Config::load(Some(&passive_conf))?;
    let options = PassiveOptions {
        transport: TransportPreference::Subprocess,
        config_file: passive_conf.clone(),
        ..PassiveOptions::default()
    };
    ui().result("round 1: the empty passive node syncs both backups and the WALs");
    let (first, _) = cron(&config, &options)?;

    primary.traffic(&second_id, &third_id, &relations)?;
    primary.backup(&third_id, now, 2)?;
    ui().result(&format!(
        "round 2: pgbench-like traffic, then backup {third_id} on the primary (1% of pages rewritten, a table grown, a new relation) and 2 new WALs"
    ));
    let (second, third) = cron(&config, &options)?;

    let verified = verify(&primary, &root.join("passive-home"))?;
    let third_wire = third.received_bytes + third.sent_bytes;
    ui().result(&format!(
        "verified: {} backups DONE on the passive, all {} files identical to the primary's ({}); the xlog db lists each of {} WALs once",
        verified.backups,
        verified.files,
        mib(verified.bytes),
        verified.wals
    ));
    ui().result(&format!(
        "backup {third_id}: {} synced with {} on the wire ({:.2}%), {} of its {} files linked to the previous backup",
        mib(third.bytes),
        mib(third_wire),
        100.0 * third_wire as f64 / third.bytes.max(1) as f64,
        third.linked,
        third.files,
    ));
    ui().result(&format!(
        "in all: round 1 sent {} for {} synced, round 2 sent {} for {}; {:.1} s",
        mib(first.received_bytes + first.sent_bytes),
        mib(first.bytes),
        mib(second.received_bytes + second.sent_bytes),
        mib(second.bytes),
        started.elapsed().as_secs_f64()
    ));
    Ok(ExitCode::SUCCESS)
}

/// Writes primary.conf, passive.conf and the stand-in programs; returns passive.conf.
fn write_configs(root: &Path, primary: &FakePrimary) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the barsync binary")?;
    for directory in ["bin", "primary-bin", "passive-home"] {
        fs::create_dir_all(root.join(directory))?;
    }
    let primary_conf = root.join("primary.conf");
    primary.write_config(
        &primary_conf,
        &["compression ="],
        "\"barsync demo primary\"",
        "ssh postgres@127.0.0.1",
        &[],
    )?;
    let passive_conf = root.join("passive.conf");
    let ssh = format!(
        "primary_ssh_command = {} primary",
        root.join("bin/demo-ssh").display()
    );
    fs::write(
        &passive_conf,
        fixture::barman_conf(
            &root.join("passive-home"),
            &fixture::current_user(),
            &["compression ="],
            "pg",
            &[
                "description = \"barsync demo passive node\"",
                &ssh,
                "reuse_backup = link",
            ],
        ),
    )?;
    let quote = |path: &Path| shell_quote(&path.display().to_string());
    fixture::write_executable(
        &root.join("bin/demo-ssh"),
        &fixture::ssh_stand_in(&format!("{}:$PATH", quote(&root.join("primary-bin"))), None),
    )?;
    std::os::unix::fs::symlink(&exe, root.join("primary-bin/barsync"))?;
    fixture::write_executable(
        &root.join("primary-bin/barman"),
        &format!(
            "#!/bin/sh\n# The primary's Barman, for sync-info: barsync answers as Barman 3.20.1 would.\n\
             [ \"$1\" = sync-info ] || {{ echo \"demo: only sync-info is available\" >&2; exit 1; }}\n\
             shift\nexec {} sync-info -c {} \"$@\"\n",
            quote(&exe),
            quote(&primary_conf)
        ),
    )?;
    Ok(passive_conf)
}

/// Runs cron once and prints one line per copy; the sum of the copies, and the totals of the
/// last backup copied.
fn cron(config: &Config, options: &PassiveOptions) -> Result<(TransferTotals, TransferTotals)> {
    let events = DemoEvents(PassiveEvents::new());
    let report = run_cron(config, Some("pg"), options, &events)?;
    events.0.finish();
    let server: &ServerCron = report.servers.first().context("cron skipped server pg")?;
    if let Some(error) = &server.error {
        bail!("cron: {error}");
    }
    let mut sum = TransferTotals::default();
    let mut last = TransferTotals::default();
    for (id, outcome) in &server.backups {
        match outcome {
            Ok(BackupOutcome::Synced {
                totals, seconds, ..
            }) => {
                row(&format!("backup {id}"), totals, *seconds);
                sum.add(totals);
                last = totals.clone();
            }
            Ok(other) => bail!("backup {id} was not synced: {other:?}"),
            Err(error) => bail!("backup {id}: {error}"),
        }
    }
    match &server.wals {
        Some(Ok(outcome)) if outcome.skipped.is_none() => {
            row("WALs", &outcome.totals, outcome.seconds);
            sum.add(&outcome.totals);
        }
        Some(Ok(outcome)) => bail!("WALs not synced: {:?}", outcome.skipped),
        Some(Err(error)) => bail!("WALs: {error}"),
        None => bail!("WALs not synced"),
    }
    Ok((sum, last))
}

fn row(label: &str, totals: &TransferTotals, seconds: f64) {
    let wire = totals.received_bytes + totals.sent_bytes;
    ui().result(&format!(
        "  {label:<23} {:>5} files {:>10} synced {:>10} on the wire ({:>5.1}%) {:>5} linked {:>10} reused {:>6.2} s",
        totals.files,
        mib(totals.bytes),
        mib(wire),
        100.0 * wire as f64 / totals.bytes.max(1) as f64,
        totals.linked,
        mib(totals.reused_bytes),
        seconds
    ));
}

/// Progress and warnings as usual; Barman's information lines only with `-v`.
struct DemoEvents(PassiveEvents);

impl Events for DemoEvents {
    fn info(&self, message: &str) {
        tracing::debug!("{message}");
    }
    fn plan(&self, label: &str, files: u64, bytes: u64) {
        self.0.plan(label, files, bytes);
    }
}

impl FetchEvents for DemoEvents {
    fn warning(&self, message: &str) {
        self.0.warning(message);
    }
    fn file_done(
        &self,
        path: &std::path::Path,
        result: &Result<FetchReport, transfer_engine::FileError>,
    ) {
        self.0.file_done(path, result);
    }
}

/// `YYYYmmddTHHMMSS` of a Unix time, in UTC.
fn backup_id(unix: i64) -> String {
    let (date, time) = civil(unix);
    format!("{}T{}", date.replace('-', ""), time.replace(':', ""))
}

/// (`YYYY-mm-dd`, `HH:MM:SS`) of a Unix time, in UTC.
fn civil(unix: i64) -> (String, String) {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        format!("{year:04}-{month:02}-{day:02}"),
        format!(
            "{:02}:{:02}:{:02}",
            secs / 3600,
            secs % 3600 / 60,
            secs % 60
        ),
    )
}

impl Primary {
    fn server(&self) -> PathBuf {
        self.catalog.server_directory()
    }

    fn segments(&self) -> u64 {
        self.next_segment - 1
    }

    fn wal_name(&self, segment: u64) -> String {
        let per_log = (1u64 << 32) / self.segment_size;
        format!("00000001{:08X}{:08X}", segment / per_log, segment % per_log)
    }

    /// A PostgreSQL-like data directory of `size` bytes for backup `id`: a few large tables
    /// (pgbench_accounts and friends), their indexes, and many small catalog relations.
    fn cluster(&mut self, id: &str, size: u64) -> Result<Vec<String>> {
        let data = self.server().join("base").join(id).join("data");
        for directory in [
            "global",
            "base/1",
            "base/4",
            "base/5",
            "pg_wal",
            "pg_tblspc",
            "pg_xact",
            "pg_multixact/members",
            "pg_multixact/offsets",
            "pg_logical",
        ] {
            fs::create_dir_all(data.join(directory))?;
        }
        fs::write(data.join("PG_VERSION"), "16\n")?;
        fs::write(
            data.join("postgresql.auto.conf"),
            "# Do not edit this file manually!\n",
        )?;
        fs::write(data.join("global/pg_control"), self.rng.pages(PAGE))?;
        fs::write(data.join("pg_xact/0000"), self.rng.pages(4 * PAGE))?;
        let mut relations = Vec::new();
        let mut written = 0u64;
        // Small catalog relations: 3 databases x 120 files of 1 to 16 pages (fewer pages
        // for small clusters: the catalog stays under a quarter of the size).
        let max_pages = (size / 4 / 360 / PAGE as u64 * 2).clamp(1, 16);
        let mut oid = 1200u64;
        for database in ["1", "4", "5"] {
            for _ in 0..120 {
                let pages = 1 + self.rng.next() % max_pages;
                let path = format!("base/{database}/{oid}");
                fs::write(data.join(&path), self.rng.pages(pages as usize * PAGE))?;
                written += pages * PAGE as u64;
                oid += 1;
            }
        }
        // The large tables take the rest: 60%, 20%, 10%, ... of it.
        let rest = size.saturating_sub(written);
        let shares = [60u64, 20, 10, 6, 4];
        for (index, share) in shares.iter().enumerate() {
            let pages = (rest * share / 100 / PAGE as u64).max(1);
            let path = format!("base/5/{}", 16_384 + index as u64 * 3);
            fs::write(data.join(&path), self.rng.pages(pages as usize * PAGE))?;
            relations.push(path);
        }
        Ok(relations)
    }

    /// Backup `to` = backup `from` after pgbench-like traffic: 1% of the pages of every
    /// other large table rewritten, the last one grown by 64 pages, a new relation, a few
    /// catalog files touched; everything else identical.
    fn traffic(&mut self, from: &str, to: &str, relations: &[String]) -> Result<()> {
        let base = self.server().join("base");
        copy_tree(&base.join(from), &base.join(to))?;
        let data = base.join(to).join("data");
        for (index, relation) in relations.iter().enumerate() {
            let path = data.join(relation);
            let mut bytes = fs::read(&path)?;
            let pages = bytes.len() / PAGE;
            if index % 2 == 0 {
                for _ in 0..(pages / 100).max(1) {
                    let page = self.rng.next() as usize % pages;
                    bytes[page * PAGE..(page + 1) * PAGE].copy_from_slice(&self.rng.pages(PAGE));
                }
            }
            if index + 1 == relations.len() {
                bytes.extend(self.rng.pages(64 * PAGE));
            }
            fs::write(&path, bytes)?;
        }
        let new_relation = format!("base/5/{}", 20_000 + self.next_segment);
        fs::write(data.join(new_relation), self.rng.pages(32 * PAGE))?;
        fs::write(data.join("global/pg_control"), self.rng.pages(PAGE))?;
        fs::write(data.join("base/1/1200"), self.rng.pages(2 * PAGE))?;
        Ok(())
    }

    /// Archives `count` WAL segments (the first is the backup's begin WAL, with its `.backup`
    /// file) and writes backup `id`'s backup.info DONE, as Barman does.
    fn backup(&mut self, id: &str, end: i64, count: u64) -> Result<()> {
        let begin = self.next_segment;
        let begin_wal = self.wal_name(begin);
        let end_wal = self.wal_name(begin + count - 1);
        let begin_time = end - 600;
        for segment in begin..begin + count {
            let name = self.wal_name(segment);
            let content = self.rng.pages(self.segment_size as usize);
            self.archive(&name, &content, begin_time + 60 * (segment - begin) as i64)?;
            if segment == begin {
                let label = format!(
                    "START WAL LOCATION: 0/{:X} (file {begin_wal})\nSTOP WAL LOCATION: 0/{:X} (file {end_wal})\n\
                     CHECKPOINT LOCATION: 0/{:X}\nBACKUP METHOD: streamed\nBACKUP FROM: primary\n\
                     LABEL: Barman backup pg {id}\nSTART TIMELINE: 1\nSTOP TIMELINE: 1\n",
                    begin * self.segment_size + 40,
                    (begin + count - 1) * self.segment_size + 312,
                    begin * self.segment_size + 96,
                );
                self.archive(
                    &format!("{begin_wal}.00000028.backup"),
                    label.as_bytes(),
                    begin_time + 1,
                )?;
            }
        }
        self.next_segment += count;
        let directory = self.catalog.backup_directory(id);
        let (_, size) = fixture::files_and_bytes(&directory)?;
        let (begin_date, begin_clock) = civil(begin_time);
        let (end_date, end_clock) = civil(end);
        let begin_xlog = format!("0/{:X}", begin * self.segment_size + 40);
        let label = format!(
            "START WAL LOCATION: {begin_xlog} (file {begin_wal})\nCHECKPOINT LOCATION: 0/{:X}\n\
             BACKUP METHOD: streamed\nBACKUP FROM: primary\nSTART TIME: {begin_date} {begin_clock} UTC\n\
             LABEL: Barman backup pg {id}\nSTART TIMELINE: 1\n",
            begin * self.segment_size + 96
        );
        fs::write(directory.join("data/backup_label"), &label)?;
        let info = BackupSpec {
            id,
            server: self.catalog.server(),
            label: &label,
            begin_time: &format!("{begin_date} {begin_clock}+00:00"),
            end_time: &format!("{end_date} {end_clock}+00:00"),
            begin_wal: &begin_wal,
            end_wal: &end_wal,
            begin_xlog: &begin_xlog,
            end_xlog: &format!("0/{:X}", (begin + count - 1) * self.segment_size + 312),
            size,
            xlog_segment_size: self.segment_size,
        }
        .to_backup_info();
        self.catalog.write_backup_info(&info)?;
        Ok(())
    }

    /// One archived WAL file: in its hash directory, listed in the xlog db with its mtime.
    fn archive(&mut self, name: &str, content: &[u8], time: i64) -> Result<()> {
        self.catalog.archive_wal(name, content, time as f64, None)?;
        Ok(())
    }
}

struct Verified {
    backups: usize,
    files: u64,
    bytes: u64,
    wals: usize,
}

/// The passive holds what the primary holds: every backup DONE with identical files, every
/// WAL identical and listed once in the xlog db.
fn verify(primary: &Primary, passive_home: &Path) -> Result<Verified> {
    let theirs = primary.server();
    let ours = passive_home.join("pg");
    let mut verified = Verified {
        backups: 0,
        files: 0,
        bytes: 0,
        wals: 0,
    };
    let mut ids: Vec<String> = fs::read_dir(theirs.join("base"))?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_>>()?;
    ids.sort();
    for id in &ids {
        let info = BackupInfo::read(&ours.join("meta").join(format!("{id}-backup.info")))
            .with_context(|| format!("backup {id} on the passive"))?;
        ensure!(
            info.status()? == BackupStatus::Done,
            "backup {id} is {} on the passive",
            info.status()?.as_str()
        );
        let (files, bytes) = same_tree(&theirs.join("base").join(id), &ours.join("base").join(id))?;
        verified.files += files;
        verified.bytes += bytes;
        verified.backups += 1;
    }
    for wal in primary.catalog.wals() {
        let relative = Path::new(&wal.name[..16]).join(&wal.name);
        let (a, b) = (
            theirs.join("wals").join(&relative),
            ours.join("wals").join(&relative),
        );
        ensure!(
            fs::read(&a)? == fs::read(&b).with_context(|| format!("{}", b.display()))?,
            "{} differs from the primary's",
            b.display()
        );
        verified.files += 1;
        verified.bytes += wal.size as u64;
    }
    let listed: Vec<String> = barsync_sync::xlogdb::parse_content(
        &fs::read_to_string(ours.join("wals/pg-xlog.db"))?,
        &ours.join("wals/pg-xlog.db"),
    )?
    .into_iter()
    .map(|e| e.name)
    .collect();
    let unique: BTreeSet<&String> = listed.iter().collect();
    ensure!(
        unique.len() == listed.len(),
        "the passive's xlog db lists a WAL twice"
    );
    let expected: BTreeSet<&String> = primary.catalog.wals().iter().map(|w| &w.name).collect();
    ensure!(
        unique == expected,
        "the passive's xlog db lists {:?}, the primary archived {:?}",
        unique,
        expected
    );
    verified.wals = listed.len();
    Ok(verified)
}

/// Both trees hold the same files with the same bytes; (files, bytes).
fn same_tree(theirs: &Path, ours: &Path) -> Result<(u64, u64)> {
    let a = files_below(theirs)?;
    let b = files_below(ours)?;
    if a != b {
        let missing: Vec<_> = a.difference(&b).take(3).collect();
        let extra: Vec<_> = b.difference(&a).take(3).collect();
        bail!(
            "{}: missing {missing:?}, not on the primary {extra:?}",
            ours.display()
        );
    }
    let mut bytes = 0;
    for relative in &a {
        let content = fs::read(theirs.join(relative))?;
        if content != fs::read(ours.join(relative))? {
            bail!(
                "{} differs from the primary's",
                ours.join(relative).display()
            );
        }
        bytes += content.len() as u64;
    }
    Ok((a.len() as u64, bytes))
}

fn files_below(root: &Path) -> Result<BTreeSet<PathBuf>> {
    let mut files = BTreeSet::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                pending.push(entry.path());
            } else {
                files.insert(entry.path().strip_prefix(root)?.to_path_buf());
            }
        }
    }
    Ok(files)
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    for relative in files_below(from)? {
        let target = to.join(&relative);
        fs::create_dir_all(target.parent().expect("below the root"))?;
        fs::copy(from.join(&relative), &target)?;
    }
    for directory in ["pg_wal", "pg_tblspc", "pg_logical", "pg_multixact/members"] {
        fs::create_dir_all(to.join("data").join(directory))?;
    }
    Ok(())
}

/// Deterministic page contents: random tuples in the first half, free space (zeros) after.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pages(&mut self, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        for page in out.chunks_mut(PAGE) {
            let used = page.len() / 2;
            for word in page[..used].chunks_mut(8) {
                let value = self.next().to_le_bytes();
                word.copy_from_slice(&value[..word.len()]);
            }
        }
        out
    }
}
