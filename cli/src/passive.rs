//! `barsync sync-backup`, `sync-wals` and `cron`: the passive node commands, printed the way
//! Barman prints them (information on stdout, `WARNING:`/`ERROR:` on stderr, exit status 1 on
//! failure), with a summary of what crossed the network.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context, Result};
use barsync_sync::config::Config;
use barsync_sync::passive::{
    run_cron, sync_backup, sync_wals, BackupOutcome, Events, PassiveOptions, TransferTotals,
    WalsOutcome,
};
use barsync_sync::syncinfo::RemoteProgram;
use transfer_engine::protocol::FetchReport;
use transfer_engine::transport::TransportPreference;

/// Options shared by the passive commands.
#[derive(clap::Args, Debug)]
pub struct Common {
    /// Barman configuration file (default: ~/.barman.conf, /etc/barman.conf, /etc/barman/barman.conf)
    #[arg(short = 'c', long = "config")]
    config: Option<PathBuf>,
    /// Sessions (parallel copies) per sync; default: the server's parallel_jobs when set, else
    /// one per core (2 to 8)
    #[arg(short = 'j', long = "jobs")]
    jobs: Option<usize>,
    /// The barsync program on the primary (started as `barsync serve`)
    #[arg(long, default_value = "barsync")]
    remote_barsync: String,
    /// Copy whole files over SFTP even if barsync is installed on the primary
    #[arg(long)]
    sftp: bool,
    /// SSH transport for primary_ssh_command: auto, in-process (libssh2) or subprocess (ssh)
    #[arg(long, default_value = "auto")]
    transport: String,
    /// Print every file as it is copied
    #[arg(short, long)]
    verbose: bool,
    /// Print only warnings and errors
    #[arg(short, long)]
    quiet: bool,
}

#[derive(clap::Args, Debug)]
pub struct SyncBackupArgs {
    #[command(flatten)]
    common: Common,
    /// Server name (a passive server section of the configuration)
    server: String,
    /// Backup ID, or latest, last, oldest, first, last-failed
    backup_id: String,
}

#[derive(clap::Args, Debug)]
pub struct SyncWalsArgs {
    #[command(flatten)]
    common: Common,
    /// Server name (a passive server section of the configuration)
    server: String,
}

#[derive(clap::Args, Debug)]
pub struct CronArgs {
    #[command(flatten)]
    common: Common,
    /// Program that answers sync-info on the primary
    #[arg(long, value_enum, default_value = "barman")]
    remote: crate::sync_info::Remote,
    /// Only this server (default: every passive server)
    server: Option<String>,
}

/// Prints what the library reports.
struct Console {
    verbose: bool,
    quiet: bool,
    files: AtomicU64,
}

impl Events for Console {
    fn info(&self, message: &str) {
        if !self.quiet {
            println!("{message}");
        }
    }
    fn warning(&self, message: &str) {
        eprintln!("WARNING: {message}");
    }
    fn file_done(&self, path: &str, result: &Result<FetchReport, String>) {
        self.files.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(report) if self.verbose => {
                let how = if report.linked {
                    "linked".to_owned()
                } else {
                    format!(
                        "{} received, {} reused",
                        mib(report.received_bytes),
                        mib(report.reused_bytes)
                    )
                };
                eprintln!("{path}: {} ({how})", mib(report.len));
            }
            Err(message) if self.verbose => eprintln!("ERROR: {message}"),
            _ => {}
        }
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1048576.0)
}

fn setup(common: &Common) -> Result<(Config, PassiveOptions, Console)> {
    let config = Config::load(common.config.as_deref())?;
    let transport = match common.transport.as_str() {
        "auto" => TransportPreference::Auto,
        "in-process" => TransportPreference::InProcess,
        "subprocess" => TransportPreference::Subprocess,
        other => bail!("unknown transport {other:?} (auto, in-process, subprocess)"),
    };
    let options = PassiveOptions {
        remote_barsync: common.remote_barsync.clone(),
        transport,
        jobs: common.jobs,
        config_file: config.config_file().to_path_buf(),
        remote_program: RemoteProgram::Barman,
        force_sftp: common.sftp,
        barman: PathBuf::from("barman"),
    };
    let console = Console {
        verbose: common.verbose,
        quiet: common.quiet,
        files: AtomicU64::new(0),
    };
    Ok((config, options, console))
}

fn server(config: &Config, name: &str) -> Result<barsync_sync::config::ServerConfig> {
    config
        .server(name)?
        .with_context(|| format!("Unknown server '{name}'"))
}

/// One line about a copy: files, sizes, what crossed the network, how it was verified.
fn totals_line(totals: &TransferTotals, seconds: f64) -> String {
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
    format!(
        "{} files, {}{linked}; {} received, {} sent, {} reused; {} sessions; verified: {}; {seconds:.1} s",
        totals.files,
        mib(totals.bytes),
        mib(totals.received_bytes),
        mib(totals.sent_bytes),
        mib(totals.reused_bytes),
        totals.sessions,
        if verified.is_empty() { "nothing to verify".to_owned() } else { verified.join(", ") },
    )
}

fn backup_line(server: &str, outcome: &BackupOutcome) -> String {
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

fn wals_line(server: &str, outcome: &WalsOutcome) -> Option<String> {
    if outcome.skipped.is_some() {
        return None;
    }
    Some(format!(
        "WALs of server {server} synced ({} new in the xlog db): {}",
        outcome.listed,
        totals_line(&outcome.totals, outcome.seconds)
    ))
}

pub fn run_sync_backup(args: &SyncBackupArgs) -> Result<ExitCode> {
    let (config, options, console) = setup(&args.common)?;
    let server = server(&config, &args.server)?;
    let outcome = sync_backup(&server, &args.backup_id, &options, &console)?;
    console.info(&backup_line(server.name(), &outcome));
    Ok(ExitCode::SUCCESS)
}

pub fn run_sync_wals(args: &SyncWalsArgs) -> Result<ExitCode> {
    let (config, options, console) = setup(&args.common)?;
    let server = server(&config, &args.server)?;
    let outcome = sync_wals(&server, &options, &console)?;
    if let Some(line) = wals_line(server.name(), &outcome) {
        console.info(&line);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_cron_command(args: &CronArgs) -> Result<ExitCode> {
    let (config, mut options, console) = setup(&args.common)?;
    options.remote_program = match args.remote {
        crate::sync_info::Remote::Barman => RemoteProgram::Barman,
        crate::sync_info::Remote::Barsync => RemoteProgram::Barsync,
    };
    let report = run_cron(&config, args.server.as_deref(), &options, &console)?;
    for server in &report.servers {
        let name = &server.server;
        if let Some(error) = &server.error {
            eprintln!("ERROR: server {name}: {error}");
        }
        for (id, outcome) in &server.backups {
            match outcome {
                Ok(outcome) => console.info(&backup_line(name, outcome)),
                Err(error) => eprintln!("ERROR: server {name} backup {id}: {error}"),
            }
        }
        match &server.wals {
            Some(Ok(outcome)) => {
                if let Some(line) = wals_line(name, outcome) {
                    console.info(&line);
                }
            }
            Some(Err(error)) => eprintln!("ERROR: {error}"),
            None => {}
        }
    }
    Ok(if report.failed() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
