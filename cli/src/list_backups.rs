//! `barsync list-backups SERVER`: the primary's backups (from `primary.info`, or asked afresh
//! with `--refresh`) and this passive node's, side by side ([`barsync_sync::backup_list`]),
//! rendered as a table or JSON.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use barsync_sync::backup_list::{backup_rows, BackupRow};
use barsync_sync::config::{Config, ServerConfig};
use barsync_sync::syncinfo::{
    fetch_primary_info, load_primary_info, RemoteProgram, SyncInfoLimits, SyncPoint,
};
use serde::Serialize;

use crate::output::{ui, FailureDocument};

pub const AFTER_HELP: &str = concat!(
    "Examples:
  barsync list-backups pg                 # from the primary.info saved by the last cron
  barsync list-backups --refresh pg       # ask the primary first (saves primary.info)
  barsync list-backups --json pg
  barsync -c /etc/barman.conf list-backups all   # every passive server

States: synced (DONE here), syncing (a copy is running or was cut: the next cron resumes it),
failed (the next cron retries it), missing (not copied yet), obsolete (this node's retention
policy would delete it: not copied, as Barman does), skipped (an incremental backup whose parent
the primary no longer has), local only (the primary has deleted it; kept here as Barman does).
",
    exit_codes!()
);

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Barman configuration file (default: ~/.barman.conf, /etc/barman.conf, /etc/barman/barman.conf)
    #[arg(short = 'c', long = "config")]
    pub config: Option<PathBuf>,
    /// Ask the primary for its list now (through primary_ssh_command) instead of reading the
    /// primary.info saved by the last sync
    #[arg(long)]
    refresh: bool,
    /// Program that answers sync-info on the primary (with --refresh)
    #[arg(long, value_enum, default_value = "barman")]
    remote: crate::sync_info::Remote,
    /// Print one JSON document on stdout
    #[arg(long)]
    pub json: bool,
    /// Server name (a passive server section of the configuration), or `all`
    #[arg(add = clap_complete::ArgValueCompleter::new(crate::generate::passive_servers_or_all))]
    server: String,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let config = Config::load(args.config.as_deref())?;
    if args.server != "all" {
        let server = crate::passive::server(&config, &args.server)?;
        let rows = rows(&config, &server, args)?;
        if args.json {
            crate::output::print_document(&ServerDocument::new(&server, rows));
        } else {
            print_server(&server, &rows, args);
        }
        return Ok(ExitCode::SUCCESS);
    }
    // `all`: every passive server, as `barman list-backups all`; one that fails is reported
    // and the others are still listed.
    let servers = crate::passive::servers_named(&config, "all")?;
    let mut listed = Vec::new();
    let mut failed = false;
    for server in &servers {
        match rows(&config, server, args) {
            Ok(rows) => {
                if !args.json {
                    print_server(server, &rows, args);
                }
                listed.push(Ok(rows));
            }
            Err(error) => {
                failed = true;
                let message = format!("Server {}: {error:#}", server.name());
                ui().error(&message);
                listed.push(Err(message));
            }
        }
    }
    if args.json {
        let documents = servers
            .iter()
            .zip(listed)
            .map(|(server, listed)| match listed {
                Ok(rows) => ServerEntry::Listed(ServerDocument::new(server, rows)),
                Err(message) => {
                    ServerEntry::Failed(FailureDocument::server(server.name(), message))
                }
            })
            .collect();
        crate::output::print_document(&AllDocument {
            command: "list-backups",
            ok: !failed,
            servers: documents,
        });
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// One server's rows: the primary's backups (from `primary.info`, or asked now) and this
/// node's, side by side.
fn rows(config: &Config, server: &ServerConfig, args: &Args) -> Result<Vec<BackupRow>> {
    let primary = if args.refresh {
        let mut warn = |message: String| ui().warning(&message);
        let program = match args.remote {
            crate::sync_info::Remote::Barman => RemoteProgram::Barman,
            crate::sync_info::Remote::Barsync => RemoteProgram::Barsync,
        };
        fetch_primary_info(
            server,
            config.config_file(),
            program,
            &SyncPoint::default(),
            &SyncInfoLimits::DEFAULT,
            &mut warn,
        )
        .map(|answer| answer.info)
        .context("asking the primary")?
    } else {
        load_primary_info(server).context("run `barsync cron` first, or use --refresh")?
    };
    Ok(backup_rows(server, &primary)?)
}

/// What `list-backups --json` prints for one server.
#[derive(Serialize)]
struct ServerDocument<'a> {
    command: &'static str,
    server: &'a str,
    ok: bool,
    backups: Vec<BackupRow>,
}

impl<'a> ServerDocument<'a> {
    fn new(server: &'a ServerConfig, backups: Vec<BackupRow>) -> ServerDocument<'a> {
        ServerDocument {
            command: "list-backups",
            server: server.name(),
            ok: true,
            backups,
        }
    }
}

/// One server of `list-backups all --json`: its list, or why it could not be listed.
#[derive(Serialize)]
#[serde(untagged)]
enum ServerEntry<'a> {
    Listed(ServerDocument<'a>),
    Failed(FailureDocument<'a>),
}

/// What `list-backups all --json` prints.
#[derive(Serialize)]
struct AllDocument<'a> {
    command: &'static str,
    ok: bool,
    servers: Vec<ServerEntry<'a>>,
}

/// One server's list as text.
fn print_server(server: &ServerConfig, rows: &[BackupRow], args: &Args) {
    let source = if args.refresh {
        "asked now".to_owned()
    } else {
        saved_ago(&server.primary_info_path())
    };
    ui().result(&format!(
        "Server {} (primary's list: {source})",
        server.name()
    ));
    ui().result(&format!(
        "  {:<17} {:<17} {:>11}   {:<11} {:>11}",
        "Backup ID", "Primary", "size", "Passive", "on disk"
    ));
    for row in rows {
        ui().result(&format!(
            "  {:<17} {:<17} {:>11}   {:<11} {:>11}",
            row.backup_id,
            row.primary_status.as_deref().unwrap_or("-"),
            row.primary_size.map(size).unwrap_or_else(|| "-".into()),
            row.state.as_str(),
            row.passive_bytes_on_disk
                .map(size)
                .unwrap_or_else(|| "-".into()),
        ));
    }
    if rows.is_empty() {
        ui().result("  (no backups on either node)");
    }
    for row in rows {
        if let Some(note) = &row.note {
            ui().result(&format!("  {}: {note}", row.backup_id));
        }
    }
}

fn saved_ago(path: &Path) -> String {
    path.metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
        .map(|age| {
            format!(
                "primary.info saved {} ago",
                barsync_sync::human::human_duration(age.as_secs_f64())
            )
        })
        .unwrap_or_else(|| "primary.info".into())
}

/// Barman's `pretty_size`: `72.1 KiB`.
pub fn size(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}
