//! `barsync sync-backup`, `sync-wals` and `cron`: the passive node commands, printed the way
//! Barman prints them (information on stdout, `WARNING:`/`ERROR:` on stderr, exit status 1 on
//! failure), with progress while they copy, a summary of what crossed the network, and the
//! same summary as one JSON document with `--json`. Also what every passive command does
//! first ([`preflight`]: the `barman_user` refusal, the configuration warnings) and the
//! `configuration` line of `barsync check`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use barsync_sync::config::Config;
use barsync_sync::passive::dry_run::{
    plan_cron_all, plan_sync_backup, plan_sync_wals, DryRun, ServerPlan,
};
use barsync_sync::passive::report::{BackupReport, ServerCronReport, TotalsReport, WalsReport};
use barsync_sync::passive::{
    run_cron, sync_backup, sync_wals, BackupOutcome, PassiveOptions, PassiveServer, SyncFailure,
    TransferTotals, WalsOutcome,
};
use barsync_sync::syncinfo::{RemoteProgram, SyncInfoLimits};
use barsync_transport::TransportPreference;

use crate::output::{mib, ui, PassiveEvents};

pub const SYNC_BACKUP_HELP: &str = concat!(
    "Examples:
  barsync sync-backup pg 20240101T120000     # one backup, from the saved primary.info
  barsync sync-backup pg latest              # the primary's newest backup
  barsync sync-backup -c /etc/barman.conf pg oldest --json

The backup list comes from primary.info, saved by the last `barsync cron` or
`barsync sync-info --primary` (as Barman's sync-backup, this does not ask the primary).
",
    exit_codes!()
);

pub const SYNC_WALS_HELP: &str = concat!(
    "Examples:
  barsync sync-wals pg                       # the WALs listed in the saved primary.info
  barsync sync-wals -c /etc/barman.conf pg --json
",
    exit_codes!()
);

pub const CRON_HELP: &str = concat!(
    "Examples:
  barsync cron                               # every passive server of the configuration
  barsync cron -c /etc/barman.conf pg        # only server pg
  barsync cron -q                            # from cron: warnings and errors only
  barsync cron --remote barsync              # the primary has barsync but not Barman

Runs in the foreground to completion (Barman's cron starts detached processes): sync-info,
then every missing backup (oldest first), then the WALs. Safe to run next to `barman cron`:
both take the same lock files.
",
    exit_codes!()
);

/// Options shared by the passive commands.
#[derive(clap::Args, Debug)]
pub struct Common {
    /// Barman configuration file (default: ~/.barman.conf, /etc/barman.conf, /etc/barman/barman.conf)
    #[arg(short = 'c', long = "config")]
    pub config: Option<PathBuf>,
    /// Sessions (parallel copies) per sync; default: the server's parallel_jobs when set, else
    /// one per core (2 to 8)
    #[arg(short = 'j', long = "jobs", value_parser = parse_jobs)]
    jobs: Option<usize>,
    /// The barsync program on the primary (started as `barsync serve`)
    #[arg(long, default_value = "barsync")]
    remote_barsync: String,
    /// Copy whole files over SFTP even if barsync is installed on the primary
    #[arg(long)]
    sftp: bool,
    /// SSH transport for primary_ssh_command: auto, in-process (libssh2) or subprocess (ssh)
    #[arg(long, value_enum, default_value = "auto")]
    transport: Transport,
    /// Files of at least twice this size are fetched in parts of this size, shared by the
    /// sessions (bytes, or with K, M, G: 64M, 1G); 0 never splits
    #[arg(long, default_value = "64M", value_parser = parse_size)]
    part_size: u64,
    /// Print the summary as one JSON document on stdout (information goes to stderr)
    #[arg(long)]
    pub json: bool,
    /// Show what would be done (backups copied or skipped and why, WALs, purges, what
    /// retention would delete) and change nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,
}

#[derive(clap::Args, Debug)]
pub struct SyncBackupArgs {
    #[command(flatten)]
    pub common: Common,
    /// Server name (a passive server section of the configuration)
    #[arg(add = clap_complete::ArgValueCompleter::new(crate::generate::passive_servers))]
    server: String,
    /// Backup ID, or latest, last, oldest, first, last-failed
    backup_id: String,
}

#[derive(clap::Args, Debug)]
pub struct SyncWalsArgs {
    #[command(flatten)]
    pub common: Common,
    /// Server name (a passive server section of the configuration)
    #[arg(add = clap_complete::ArgValueCompleter::new(crate::generate::passive_servers))]
    server: String,
}

/// Bounds on the primary's sync-info answer (cron, sync-info --primary).
#[derive(clap::Args, Debug)]
pub struct SyncInfoBounds {
    /// Largest sync-info answer accepted from the primary (bytes, or with K, M, G); a larger
    /// one is cut off and fails the sync
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    sync_info_max_size: u64,
    /// Seconds the primary has to answer sync-info completely before it is cut off
    #[arg(long, default_value_t = 600)]
    sync_info_timeout: u64,
}

impl SyncInfoBounds {
    pub fn limits(&self) -> SyncInfoLimits {
        SyncInfoLimits {
            max_bytes: self.sync_info_max_size,
            timeout: std::time::Duration::from_secs(self.sync_info_timeout),
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct CronArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub sync_info: SyncInfoBounds,
    /// Program that answers sync-info on the primary
    #[arg(long, value_enum, default_value = "barman")]
    remote: crate::sync_info::Remote,
    /// Only this server (default: every passive server)
    #[arg(add = clap_complete::ArgValueCompleter::new(crate::generate::passive_servers))]
    server: Option<String>,
}

/// The SSH transport named on the command line (`--transport`).
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Transport {
    /// the ssh command when it is installed (with fast ciphers unless the configuration names
    /// its own), else libssh2 in this process
    Auto,
    /// libssh2, in this process
    InProcess,
    /// the ssh command, as a subprocess
    Subprocess,
}

impl From<Transport> for TransportPreference {
    fn from(transport: Transport) -> TransportPreference {
        match transport {
            Transport::Auto => TransportPreference::Auto,
            Transport::InProcess => TransportPreference::InProcess,
            Transport::Subprocess => TransportPreference::Subprocess,
        }
    }
}

/// A number of sessions: at least one.
fn parse_jobs(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(jobs) => Ok(jobs),
        Err(_) => Err(format!("{text:?} is not a number of sessions")),
    }
}

/// A size in bytes, optionally with a binary suffix: `65536`, `64K`, `64M`, `1G` (or `64MiB`).
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let shift = match text[digits.len()..].to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KIB" | "KB" => 10,
        "M" | "MIB" | "MB" => 20,
        "G" | "GIB" | "GB" => 30,
        other => return Err(format!("unknown size unit {other:?} (use K, M or G)")),
    };
    let number: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a size (examples: 0, 65536, 64M, 1G)"))?;
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// What every passive command does first, before it writes or logs anything: refuse to run
/// as another user than `barman_user`, as Barman does (`Some(exit status)` then), and queue
/// a warning for each setting Barman ignores or misreads (printed and logged once output is
/// set up). A configuration that does not load is left to the command, which reports it.
pub fn preflight(config: Option<Option<&std::path::Path>>) -> Option<ExitCode> {
    let config = Config::load(config?).ok()?;
    if let Err(refusal) = config.check_user() {
        eprintln!("ERROR: {refusal}");
        return Some(ExitCode::from(1));
    }
    for warning in config.warnings().unwrap_or_default() {
        crate::output::warn_once_initialised(warning.to_string());
    }
    None
}

fn setup(common: &Common) -> Result<(Config, PassiveOptions)> {
    let config = Config::load(common.config.as_deref())?;
    let options = PassiveOptions {
        remote_barsync: common.remote_barsync.clone(),
        transport: common.transport.into(),
        jobs: common.jobs,
        config_file: config.config_file().to_path_buf(),
        remote_program: RemoteProgram::Barman,
        force_sftp: common.sftp,
        part_size: common.part_size,
        ..PassiveOptions::default()
    };
    Ok((config, options))
}

/// The servers a command names: every passive server that is not disabled for `all` (as
/// Barman's `all`), else the one named.
pub fn servers_named(
    config: &Config,
    name: &str,
) -> Result<Vec<barsync_sync::config::ServerConfig>> {
    if name == "all" {
        Ok(config
            .servers()?
            .into_iter()
            .filter(|s| s.is_passive() && !s.is_disabled())
            .collect())
    } else {
        Ok(vec![server(config, name)?])
    }
}

pub fn server(config: &Config, name: &str) -> Result<barsync_sync::config::ServerConfig> {
    config
        .server(name)?
        .with_context(|| format!("Unknown server '{name}'"))
}

/// One line about a copy: files, sizes, what crossed the network, how it was verified.
pub fn totals_line(totals: &TransferTotals, seconds: f64) -> String {
    let verified: Vec<String> = totals
        .verified_by
        .iter()
        .map(|(how, count)| format!("{count} by {how}"))
        .collect();
    let linked = if totals.linked > 0 {
        format!(", {} linked", totals.linked)
    } else {
        String::new()
    };
    let split = if totals.split_files > 0 {
        format!(", {} split into {} parts", totals.split_files, totals.parts)
    } else {
        String::new()
    };
    format!(
        "{} files, {}{linked}{split}; {} received, {} sent, {} reused; {} sessions; verified: {}; {seconds:.1} s",
        totals.files,
        mib(totals.bytes),
        mib(totals.received_bytes),
        mib(totals.sent_bytes),
        mib(totals.reused_bytes),
        totals.sessions,
        if verified.is_empty() { "nothing to verify".to_owned() } else { verified.join(", ") },
    )
}

pub(crate) fn backup_line(server: &str, outcome: &BackupOutcome) -> String {
    match outcome {
        BackupOutcome::Synced {
            backup_id,
            totals,
            seconds,
        } => format!(
            "Backup {backup_id} of server {server} synced: {}",
            totals_line(totals, *seconds)
        ),
        BackupOutcome::NothingToDo(message) | BackupOutcome::Purged(message) => message.clone(),
    }
}

pub(crate) fn wals_line(server: &str, outcome: &WalsOutcome) -> Option<String> {
    if outcome.skipped.is_some() {
        return None;
    }
    Some(format!(
        "WALs of server {server} synced ({} new in the xlog db): {}",
        outcome.listed,
        totals_line(&outcome.totals, outcome.seconds)
    ))
}

/// What `sync-backup --json` prints.
#[derive(serde::Serialize)]
struct SyncBackupDocument<'a> {
    command: &'static str,
    server: &'a str,
    ok: bool,
    #[serde(flatten)]
    backup: BackupReport,
    total_duration_seconds: f64,
}

/// What `sync-wals --json` prints.
#[derive(serde::Serialize)]
struct SyncWalsDocument<'a> {
    command: &'static str,
    server: &'a str,
    ok: bool,
    #[serde(flatten)]
    wals: WalsReport,
}

/// What a `--dry-run --json` prints.
#[derive(serde::Serialize)]
struct DryRunDocument<'a> {
    command: &'a str,
    dry_run: bool,
    ok: bool,
    servers: Vec<PlanOrError<'a>>,
}

/// One server of a dry run: its plan, or why there is none.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum PlanOrError<'a> {
    Plan(&'a DryRun),
    Error {
        server: &'a str,
        errors: Vec<&'a String>,
    },
}

/// What `cron --json` prints.
#[derive(serde::Serialize)]
struct CronDocument {
    command: &'static str,
    ok: bool,
    servers: Vec<ServerCronReport>,
    totals: TotalsReport,
    errors: Vec<String>,
}

/// Prints what a run would do, as text or one JSON document.
fn print_dry_run(command: &str, plans: &[ServerPlan], json: bool) -> ExitCode {
    let failed = plans.iter().any(|(_, plan)| plan.is_err());
    if json {
        crate::output::print_document(&DryRunDocument {
            command,
            dry_run: true,
            ok: !failed,
            servers: plans
                .iter()
                .map(|(name, plan)| match plan {
                    Ok(plan) => PlanOrError::Plan(plan),
                    Err(error) => PlanOrError::Error {
                        server: name,
                        errors: vec![error],
                    },
                })
                .collect(),
        });
    }
    for (name, plan) in plans {
        match plan {
            Ok(plan) => {
                for line in dry_run_lines(plan) {
                    ui().info(&line);
                }
            }
            Err(error) => ui().error(&format!("server {name}: {error}")),
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// A dry run's plan for one server, one line per action.
fn dry_run_lines(plan: &DryRun) -> Vec<String> {
    let name = &plan.server;
    let mut lines = vec![format!("Dry run for server {name} (nothing is changed):")];
    for id in &plan.purge {
        lines.push(format!(
            "  would purge local backup {id} (FAILED here, absent on the primary)"
        ));
    }
    for backup in &plan.copy {
        lines.push(format!(
            "  would copy backup {}{}{}",
            backup.backup_id,
            backup
                .bytes
                .map(|b| format!(
                    " ({} as the primary declares it)",
                    crate::list_backups::size(b)
                ))
                .unwrap_or_default(),
            backup
                .resumes
                .as_deref()
                .map(|status| format!(", resuming the {status} copy here"))
                .unwrap_or_default()
        ));
    }
    for skip in &plan.skip {
        lines.push(format!(
            "  would not copy backup {}: {}",
            skip.backup_id, skip.reason
        ));
    }
    let wals = &plan.wals;
    if let Some(why) = &wals.skipped {
        lines.push(format!("  would copy no WAL: {why}"));
    } else if let (Some(first), Some(last)) = (&wals.first, &wals.last) {
        lines.push(format!(
            "  would copy {} WAL files ({}): {first} to {last}",
            wals.files,
            crate::list_backups::size(wals.bytes)
        ));
    }
    for id in &plan.retention {
        lines.push(format!("  retention policy would then delete backup {id}"));
    }
    if lines.len() == 1 {
        lines.push("  nothing to do".to_owned());
    }
    lines
}

pub fn run_sync_backup(args: &SyncBackupArgs) -> Result<ExitCode> {
    let (config, options) = setup(&args.common)?;
    let server = server(&config, &args.server)?;
    if args.common.dry_run {
        let plan = barsync_sync::syncinfo::load_primary_info(&server)
            .map_err(|e| e.to_string())
            .and_then(|primary| {
                plan_sync_backup(&server, &primary, &args.backup_id).map_err(|e| e.to_string())
            });
        let plans = [(server.name().to_owned(), plan)];
        return Ok(print_dry_run("sync-backup", &plans, args.common.json));
    }
    let events = PassiveEvents::new();
    let start = Instant::now();
    let outcome = PassiveServer::new(&server, &options, &events)
        .and_then(|passive| sync_backup(&passive, &args.backup_id));
    events.finish();
    let failed = outcome.is_err();
    let outcome = outcome.map_err(SyncFailure::from);
    if args.common.json {
        crate::output::print_document(&SyncBackupDocument {
            command: "sync-backup",
            server: server.name(),
            ok: !failed,
            backup: BackupReport::new(&args.backup_id, &outcome),
            total_duration_seconds: (start.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        });
    }
    match outcome {
        Ok(outcome) => {
            ui().info(&backup_line(server.name(), &outcome));
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            ui().error(&error.message);
            events.explain_failure(server.name(), &error);
            Ok(ExitCode::from(1))
        }
    }
}

pub fn run_sync_wals(args: &SyncWalsArgs) -> Result<ExitCode> {
    let (config, options) = setup(&args.common)?;
    let server = server(&config, &args.server)?;
    if args.common.dry_run {
        let plan = barsync_sync::syncinfo::load_primary_info(&server)
            .map_err(|e| e.to_string())
            .and_then(|primary| plan_sync_wals(&server, &primary).map_err(|e| e.to_string()));
        let plans = [(server.name().to_owned(), plan)];
        return Ok(print_dry_run("sync-wals", &plans, args.common.json));
    }
    let events = PassiveEvents::new();
    let outcome = PassiveServer::new(&server, &options, &events)
        .and_then(|passive| sync_wals(&passive))
        .map_err(SyncFailure::from);
    events.finish();
    if args.common.json {
        crate::output::print_document(&SyncWalsDocument {
            command: "sync-wals",
            server: server.name(),
            ok: outcome.is_ok(),
            wals: WalsReport::new(&outcome),
        });
    }
    match outcome {
        Ok(outcome) => {
            if let Some(line) = wals_line(server.name(), &outcome) {
                ui().info(&line);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            ui().error(&error.message);
            events.explain_failure(server.name(), &error);
            Ok(ExitCode::from(1))
        }
    }
}

pub fn run_cron_command(args: &CronArgs) -> Result<ExitCode> {
    let (config, mut options) = setup(&args.common)?;
    options.remote_program = match args.remote {
        crate::sync_info::Remote::Barman => RemoteProgram::Barman,
        crate::sync_info::Remote::Barsync => RemoteProgram::Barsync,
    };
    options.sync_info_limits = args.sync_info.limits();
    let events = PassiveEvents::new();
    if args.common.dry_run {
        let plans = plan_cron_all(&config, args.server.as_deref(), &options, &events)?;
        return Ok(print_dry_run("cron", &plans, args.common.json));
    }
    let start = Instant::now();
    let report = run_cron(&config, args.server.as_deref(), &options, &events);
    events.finish();
    let report = report?;
    // Each backup and WAL sync was reported as it finished (`PassiveEvents`).
    for server in &report.servers {
        if let Some(error) = &server.error {
            ui().error(&format!("server {}: {error}", server.server));
        }
    }
    if args.common.json {
        let servers: Vec<ServerCronReport> =
            report.servers.iter().map(ServerCronReport::new).collect();
        let errors = servers.iter().flat_map(|s| s.errors.clone()).collect();
        let mut totals = TransferTotals::default();
        for server in &report.servers {
            totals.add(&server.totals());
        }
        crate::output::print_document(&CronDocument {
            command: "cron",
            ok: !report.failed(),
            servers,
            totals: TotalsReport::new(&totals, start.elapsed().as_secs_f64()),
            errors,
        });
    }
    Ok(if report.failed() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert!(parse_size("12Q").unwrap_err().contains("unknown size unit"));
        assert!(parse_size("M").is_err());
        assert!(parse_size("99999999999G")
            .unwrap_err()
            .contains("too large"));
    }
}
