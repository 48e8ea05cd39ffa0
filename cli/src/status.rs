//! `barsync status [SERVER|all]`: each passive server at a glance (newest synced backup, WAL
//! lag behind the primary, the last cron run, disk use), as text or `--json`, from
//! `barsync_sync::passive::status`. It reads this node only: it never contacts the primary.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use barsync_sync::config::Config;
use barsync_sync::passive::status::{server_status, ServerStatus};

use crate::list_backups::size;
use crate::output::ui;
use barsync_sync::human::{human_duration as human, now_seconds};

pub const AFTER_HELP: &str = concat!(
    "Examples:
  barsync status                          # every passive server
  barsync status pg --json                # one server, for monitoring

Reads this node only (the primary's newest WAL is the one listed by the last sync): the
newest synced backup and its age, the backups by state, the WAL lag behind the primary in
segments and seconds, the last `barsync cron` run (when, its result, what it copied), and
the disk the backups and WALs use.
",
    exit_codes!()
);

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Barman configuration file (default: ~/.barman.conf, /etc/barman.conf, /etc/barman/barman.conf)
    #[arg(short = 'c', long = "config")]
    pub config: Option<PathBuf>,
    /// Print one JSON document on stdout
    #[arg(long)]
    pub json: bool,
    /// Server name (a passive server section), or `all` (the default)
    #[arg(default_value = "all", add = clap_complete::ArgValueCompleter::new(crate::generate::passive_servers_or_all))]
    server: String,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let config = Config::load(args.config.as_deref())?;
    let servers = crate::passive::servers_named(&config, &args.server)?;
    let mut statuses = Vec::new();
    for server in &servers {
        statuses.push(server_status(server)?);
    }
    if args.json {
        crate::output::print_document(&StatusDocument {
            command: "status",
            ok: true,
            servers: &statuses,
        });
    } else {
        for status in &statuses {
            print_status(status);
        }
        if statuses.is_empty() {
            ui().result("No passive server in the configuration");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `status --json` prints.
#[derive(serde::Serialize)]
struct StatusDocument<'a> {
    command: &'static str,
    ok: bool,
    servers: &'a [ServerStatus],
}

fn ago(seconds: Option<f64>) -> String {
    seconds.map_or_else(|| "age unknown".to_owned(), |s| format!("{} ago", human(s)))
}

fn print_status(status: &ServerStatus) {
    ui().result(&format!("Server {}:", status.server));
    let backups = format!(
        "{} DONE, {} syncing, {} failed",
        status.backups_done, status.backups_syncing, status.backups_failed
    );
    ui().result(&match &status.last_backup {
        Some(backup) => format!(
            "\tlast synced backup: {} (ended {}); {backups}",
            backup.name,
            ago(backup.age_seconds)
        ),
        None => format!("\tlast synced backup: none yet; {backups}"),
    });
    let here = status
        .newest_wal
        .as_ref()
        .map_or("none yet".to_owned(), |w| {
            format!("{} (archived {})", w.name, ago(w.age_seconds))
        });
    let lag = match (status.wal_lag_segments, status.wal_lag_seconds) {
        (Some(0), _) => "caught up".to_owned(),
        (Some(segments), Some(seconds)) => {
            format!("{segments} segments, {} behind", human(seconds))
        }
        (Some(segments), None) => format!("{segments} segments behind"),
        _ => "lag unknown".to_owned(),
    };
    let primary = match (
        &status.primary_newest_wal,
        status.primary_newest_seen_seconds,
    ) {
        (Some(wal), age) => format!("the primary's newest {wal} (listed {})", ago(age)),
        (None, _) => "the primary's newest unknown (no primary.info yet)".to_owned(),
    };
    ui().result(&format!("\tWALs: newest here {here}; {primary}: {lag}"));
    if let Some(follow) = &status.follow {
        let state = match (follow.running, follow.connected) {
            (true, true) => format!(
                "running (process {}), connected, {}",
                follow.pid.unwrap_or_default(),
                match follow.mode.as_deref() {
                    Some("poll") => "polling the primary's xlog db",
                    _ => "the primary watches its xlog db",
                }
            ),
            (true, false) => format!(
                "running (process {}), reconnecting{}",
                follow.pid.unwrap_or_default(),
                follow
                    .last_error
                    .as_ref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ),
            (false, _) => format!(
                "not running (last seen {})",
                ago(Some(follow.updated_seconds))
            ),
        };
        let shipped = match (&follow.shipped_newest, follow.shipped_seconds) {
            (Some(wal), age) => format!("; last shipped {wal} ({})", ago(age)),
            _ => String::new(),
        };
        let partial = match (&follow.partial_newest, follow.partial_bytes) {
            (Some(name), Some(bytes)) => format!(
                "; partial {name} ({bytes} bytes of WAL, {})",
                ago(follow.partial_seconds)
            ),
            _ => String::new(),
        };
        ui().result(&format!("\tfollow: {state}{shipped}{partial}"));
    }
    ui().result(&match &status.last_cron {
        Some(run) => {
            let since = now_seconds() - run.finished;
            format!(
                "\tlast cron: {}, {} ({} backups synced, {} WALs listed, {:.1} s){}",
                if run.ok { "OK" } else { "FAILED" },
                ago(Some(since)),
                run.backups_synced,
                run.wals_listed,
                run.duration_seconds,
                run.errors
                    .first()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            )
        }
        None => "\tlast cron: never run by barsync".to_owned(),
    });
    ui().result(&format!("\tdisk: {}", size(status.disk_bytes)));
}
