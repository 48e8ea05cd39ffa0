//! `barsync list-backups SERVER`: the primary's backups (from `primary.info`, or asked afresh
//! with `--refresh`) and this passive node's, side by side: synced, missing, syncing, failed or
//! local only, with the primary's size and what is on this node's disk.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use barsync_sync::backup_info::BackupStatus;
use barsync_sync::catalog::load_backups;
use barsync_sync::config::{Config, ServerConfig};
use barsync_sync::passive::sync_backup::{skipped_on_purpose, SkipReason};
use barsync_sync::syncinfo::{
    fetch_primary_info, load_primary_info, RemoteProgram, SyncInfoLimits, SyncPoint,
};
use serde_json::json;

use crate::output::ui;

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

struct Row {
    id: String,
    primary_status: Option<String>,
    primary_size: Option<u64>,
    state: &'static str,
    local_status: Option<String>,
    local_bytes: Option<u64>,
    /// Why a backup of the primary is not copied on purpose (Barman's message).
    note: Option<String>,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let config = Config::load(args.config.as_deref())?;
    if args.server != "all" {
        let server = crate::passive::server(&config, &args.server)?;
        let rows = rows(&config, &server, args)?;
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&server_json(&server, &rows))?
            );
        } else {
            print_server(&server, &rows, args);
        }
        return Ok(ExitCode::SUCCESS);
    }
    // `all`: every passive server, as `barman list-backups all`; one that fails is reported
    // and the others are still listed.
    let mut documents = Vec::new();
    let mut failed = false;
    for server in crate::passive::servers_named(&config, "all")? {
        match rows(&config, &server, args) {
            Ok(rows) if args.json => documents.push(server_json(&server, &rows)),
            Ok(rows) => print_server(&server, &rows, args),
            Err(error) => {
                failed = true;
                let message = format!("Server {}: {error:#}", server.name());
                ui().error(&message);
                documents.push(json!({"server": server.name(), "ok": false, "errors": [message]}));
            }
        }
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "command": "list-backups",
                "ok": !failed,
                "servers": documents,
            }))?
        );
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// One server's rows: the primary's backups and this node's, side by side.
fn rows(config: &Config, server: &ServerConfig, args: &Args) -> Result<Vec<Row>> {
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
    let local = load_backups(server)?;
    let mut ids: Vec<String> = primary
        .backup_ids()
        .map(str::to_owned)
        .chain(local.iter().map(|e| e.info.backup_id().to_owned()))
        .collect();
    ids.sort();
    ids.dedup();
    let base = server.basebackups_directory();
    let mut rows = Vec::with_capacity(ids.len());
    for id in ids {
        let remote = primary.backup(server.name(), &id).ok().flatten();
        let entry = local.iter().find(|e| e.info.backup_id() == id);
        let local_status = entry.and_then(|e| e.info.status().ok());
        let mut note = None;
        let state = match (remote.is_some(), local_status) {
            (_, Some(BackupStatus::Done | BackupStatus::WaitingForWals)) if remote.is_none() => {
                "local only"
            }
            (_, Some(BackupStatus::Done | BackupStatus::WaitingForWals)) => "synced",
            (_, Some(BackupStatus::Syncing)) => "syncing",
            (_, Some(BackupStatus::Failed)) => "failed",
            (true, _) => match skipped_on_purpose(server, &primary, &local, &id)? {
                Some(skip) => {
                    note = Some(skip.message);
                    match skip.reason {
                        SkipReason::Obsolete => "obsolete",
                        SkipReason::ParentAbsent => "skipped",
                    }
                }
                None => "missing",
            },
            (false, _) => "local only",
        };
        let directory = base.join(&id);
        rows.push(Row {
            primary_status: remote
                .as_ref()
                .and_then(|(info, _)| info.text("status").map(str::to_owned)),
            primary_size: remote.as_ref().and_then(|(info, _)| {
                info.int("size")
                    .ok()
                    .flatten()
                    .and_then(|v| u64::try_from(v).ok())
            }),
            state,
            local_status: local_status.map(|s| s.as_str().to_owned()),
            local_bytes: directory.is_dir().then(|| disk_bytes(&directory)),
            note,
            id,
        });
    }
    Ok(rows)
}

/// One server's list as a JSON object.
fn server_json(server: &ServerConfig, rows: &[Row]) -> serde_json::Value {
    let backups: Vec<_> = rows
        .iter()
        .map(|r| {
            json!({
                "backup_id": r.id,
                "state": r.state,
                "primary_status": r.primary_status,
                "primary_size": r.primary_size,
                "passive_status": r.local_status,
                "passive_bytes_on_disk": r.local_bytes,
                "note": r.note,
            })
        })
        .collect();
    json!({
        "command": "list-backups",
        "server": server.name(),
        "ok": true,
        "backups": backups,
    })
}

/// One server's list as text.
fn print_server(server: &ServerConfig, rows: &[Row], args: &Args) {
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
            row.id,
            row.primary_status.as_deref().unwrap_or("-"),
            row.primary_size.map(size).unwrap_or_else(|| "-".into()),
            row.state,
            row.local_bytes.map(size).unwrap_or_else(|| "-".into()),
        ));
    }
    if rows.is_empty() {
        ui().result("  (no backups on either node)");
    }
    for row in rows {
        if let Some(note) = &row.note {
            ui().result(&format!("  {}: {note}", row.id));
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
                crate::check::human(age.as_secs_f64())
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

/// Bytes of the regular files below `directory` (hard links to another backup counted too).
fn disk_bytes(directory: &Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![directory.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => pending.push(entry.path()),
                Ok(kind) if kind.is_file() => {
                    total += entry.metadata().map(|m| m.len()).unwrap_or(0)
                }
                _ => {}
            }
        }
    }
    total
}
