//! `check` for a passive node, as a typed report: the same checks in the same order for every
//! server, whatever happens (for monitoring), each `OK` with a detail or `FAILED` with a
//! reason. The probes of the primary over ssh live in [`ssh_probe`]; the local ones (the
//! configuration, the directories, `primary.info`, the cron lock, the catalog and the ages of
//! the last synced backup and WAL) here. The binary renders a [`ServerChecks`] as Barman's
//! lines, `--json` (its `Serialize` form) or `--nagios`.

pub mod ssh_probe;

use serde::Serialize;

use crate::backup_info::BackupStatus;
use crate::catalog::load_backups;
use crate::config::{OptionValue, ServerConfig};
use crate::human::{human_duration, now_seconds};
use crate::passive::cron::{cron_lock, CronLock};
use crate::syncinfo::load_primary_info;

/// The outcome of one check: `ok`, and the detail (OK) or the reason (FAILED).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

impl Check {
    fn new(name: &'static str, result: Result<String, String>) -> Check {
        match result {
            Ok(detail) => Check {
                name,
                ok: true,
                detail,
            },
            Err(reason) => Check {
                name,
                ok: false,
                detail: reason,
            },
        }
    }

    /// `\tNAME: OK (detail)` or `\tNAME: FAILED (reason)`, as Barman prints a check.
    pub fn line(&self) -> String {
        match (self.ok, self.detail.is_empty()) {
            (true, true) => format!("\t{}: OK", self.name),
            (true, false) => format!("\t{}: OK ({})", self.name, self.detail),
            (false, _) => format!("\t{}: FAILED ({})", self.name, self.detail),
        }
    }
}

/// Every check of one server.
#[derive(Debug, Clone, Serialize)]
pub struct ServerChecks {
    pub server: String,
    pub ok: bool,
    pub checks: Vec<Check>,
}

impl ServerChecks {
    /// The checks that failed.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|check| !check.ok)
    }
}

/// Runs every check of `server`; `remote_barsync` is the barsync program on the primary.
pub fn check_server(server: &ServerConfig, remote_barsync: &str) -> ServerChecks {
    let checks = checks(server, remote_barsync);
    ServerChecks {
        server: server.name().to_owned(),
        ok: checks.iter().all(|check| check.ok),
        checks,
    }
}

/// The `configuration` check: `FAILED` with every setting of the server's section and of
/// `[barman]` that Barman ignores or misreads.
pub fn configuration_check(server: &ServerConfig) -> Result<String, String> {
    let problems: Vec<String> = server
        .config_warnings
        .iter()
        .map(ToString::to_string)
        .collect();
    match problems.len() {
        0 => Ok(String::new()),
        1 => Err(problems.join("")),
        n => Err(format!(
            "{n} settings ignored or misread: {}",
            problems.join("; ")
        )),
    }
}

fn checks(server: &ServerConfig, remote_barsync: &str) -> Vec<Check> {
    let mut checks = vec![Check::new("configuration", configuration_check(server))];
    let Some(ssh) = server
        .primary_ssh_command()
        .filter(|c| !c.trim().is_empty())
    else {
        checks.push(Check::new(
            "passive node",
            Err("primary_ssh_command is not set: this server is not a passive node".into()),
        ));
        return checks;
    };
    let probe = ssh_probe::probe(server, ssh, remote_barsync);
    // Also when the look for programs was refused (a key pinned to `barsync serve
    // --read-only` on the primary refuses shell commands): the session says what the shell
    // could not. Always the line, for a stable set of checks.
    let serve = if probe.connected {
        ssh_probe::serve_mode(server, remote_barsync)
    } else {
        Err(ssh_probe::NOT_REACHED.into())
    };
    checks.extend(probe.checks);
    checks.extend(ssh_probe::program_checks(
        &probe.lookup,
        remote_barsync,
        &serve,
    ));
    checks.push(Check::new(
        "barsync serve",
        serve.map(ssh_probe::ServeMode::detail),
    ));
    checks.push(Check::new("directories", directories(server)));
    let primary = load_primary_info(server);
    let primary_info_saved = server.primary_info_path().exists();
    checks.push(Check::new(
        "primary.info",
        match &primary {
            Err(_) if !primary_info_saved => {
                Ok("not saved yet: the first `barsync cron` saves it".into())
            }
            Ok(info) => Ok(format!(
                "{} backups and {} WALs listed by the primary{}",
                info.backups.len(),
                info.wals.len(),
                crate::fsutil::age_seconds(&server.primary_info_path())
                    .map(|a| format!(", saved {} ago", human_duration(a)))
                    .unwrap_or_default()
            )),
            Err(error) => Err(format!("{error}; run `barsync cron` first")),
        },
    ));
    checks.push(Check::new(
        "compression",
        match &primary {
            Ok(info) => {
                let theirs = info.config.compression.as_deref();
                let ours = server.compression();
                if theirs == ours {
                    Ok(format!("{} on both nodes", ours.unwrap_or("none")))
                } else {
                    Err(format!(
                        "the primary stores WALs with compression {}, this node is configured with {}: WAL sync stops until they match",
                        theirs.unwrap_or("None"),
                        ours.unwrap_or("None")
                    ))
                }
            }
            Err(_) => Ok("not checked: no primary.info yet".into()),
        },
    ));
    checks.push(Check::new(
        "cron lock",
        match cron_lock(server) {
            CronLock::Free => Ok("not held".into()),
            CronLock::Running(holder) => Ok(format!(
                "held by process {}, a cron run making progress ({} ago)",
                holder.pid,
                human_duration(holder.idle_seconds)
            )),
            CronLock::Stale(holder) => Err(format!(
                "held by process {} with no progress for {}: that run may be hung, and every later cron skips this server",
                holder.pid,
                human_duration(holder.idle_seconds)
            )),
        },
    ));
    let backups = load_backups(server);
    checks.push(Check::new(
        "failed backups",
        match &backups {
            Ok(entries) => {
                let failed: Vec<&str> = entries
                    .iter()
                    .filter(|e| e.info.status().ok() == Some(BackupStatus::Failed))
                    .map(|e| e.info.backup_id())
                    .collect();
                if failed.is_empty() {
                    Ok("there are 0 failed backups".into())
                } else {
                    Err(format!(
                        "there are {} failed backups: {} (the next cron retries them)",
                        failed.len(),
                        failed.join(", ")
                    ))
                }
            }
            Err(error) => Err(error.to_string()),
        },
    ));
    checks.push(Check::new(
        "last synced backup",
        match &backups {
            Ok(entries) => {
                let last = entries
                    .iter()
                    .filter(|e| e.info.status().ok() == Some(BackupStatus::Done))
                    .max_by(|a, b| a.info.backup_id().cmp(b.info.backup_id()));
                match last {
                    None => never_synced(server, "last_backup_maximum_age", "backup"),
                    Some(entry) => {
                        let id = entry.info.backup_id();
                        let ended = entry
                            .info
                            .time("end_time")
                            .ok()
                            .flatten()
                            .map(|t| now_seconds() - t.unix_seconds() as f64);
                        within(server, "last_backup_maximum_age", id, ended)
                    }
                }
            }
            Err(error) => Err(error.to_string()),
        },
    ));
    checks.push(Check::new(
        "last synced WAL",
        match crate::xlogdb::read_entries(server) {
            Ok(entries) => match entries.iter().max_by(|a, b| a.name.cmp(&b.name)) {
                None => never_synced(server, "last_wal_maximum_age", "WAL"),
                Some(last) => within(
                    server,
                    "last_wal_maximum_age",
                    &last.name,
                    Some(now_seconds() - last.time),
                ),
            },
            Err(error) => Err(error.to_string()),
        },
    ));
    checks.push(Check::new("WAL lag", wal_lag(server)));
    checks
}

/// The WAL lag behind the primary's newest WAL known here (`primary.info`, or what `follow`
/// last read): FAILED beyond `follow_max_lag` (default 5 minutes).
fn wal_lag(server: &ServerConfig) -> Result<String, String> {
    let segment_size = crate::passive::status::local_segment_size(server);
    let lag = crate::passive::status::wal_lag(server, segment_size).map_err(|e| e.to_string())?;
    let limit = server.follow_max_lag().as_secs_f64();
    let Some(theirs) = &lag.primary_newest else {
        return Ok("the primary's WALs are not known yet (no primary.info, no follow)".into());
    };
    let source = match lag.source {
        Some("follow") => "as read by follow",
        _ => "as listed in primary.info",
    };
    let seen = lag
        .primary_seen_seconds
        .map(|age| format!(" {} ago", human_duration(age)))
        .unwrap_or_default();
    let Some(ours) = lag.newest_here.as_ref().map(|wal| wal.name.as_str()) else {
        return Ok(format!(
            "no WAL here yet; the primary's newest is {theirs} ({source}{seen})"
        ));
    };
    let segments = lag
        .segments
        .map(|n| format!("{n} segments"))
        .unwrap_or_else(|| "on another timeline".to_owned());
    match lag.seconds {
        Some(seconds) if seconds > limit => Err(format!(
            "{ours} here, {segments} and {} behind the primary's {theirs} ({source}{seen}), \
             more than follow_max_lag ({})",
            human_duration(seconds),
            human_duration(limit)
        )),
        Some(seconds) if seconds > 0.0 => Ok(format!(
            "{segments} and {} behind the primary's {theirs} ({source}{seen}); \
             follow_max_lag {}",
            human_duration(seconds),
            human_duration(limit)
        )),
        _ if lag.segments == Some(0) || ours >= theirs.as_str() => Ok(format!(
            "caught up: {ours} is the primary's newest ({source}{seen})"
        )),
        _ => Ok(format!(
            "{segments} behind the primary's {theirs} ({source}{seen})"
        )),
    }
}

/// Nothing synced yet: FAILED when the server sets a maximum age `option` (as Barman's check
/// fails without backups then), else OK: a new node is ready for its first cron.
fn never_synced(server: &ServerConfig, option: &str, what: &str) -> Result<String, String> {
    match server.get(option) {
        OptionValue::Interval { .. } => Err(format!("no {what} synced yet, and {option} is set")),
        _ => Ok(format!(
            "no {what} synced yet: the next `barsync cron` copies the primary's"
        )),
    }
}

/// OK with the age of `what`, or FAILED when older than the server's `option`.
fn within(
    server: &ServerConfig,
    option: &str,
    what: &str,
    age: Option<f64>,
) -> Result<String, String> {
    let Some(age) = age else {
        return Ok(format!("{what}, age unknown"));
    };
    let limit = match server.get(option) {
        OptionValue::Interval { days, seconds } => Some((days * 86_400 + seconds) as f64),
        _ => None,
    };
    match limit {
        Some(limit) if age > limit => Err(format!(
            "{what} is {} old, more than {option} ({})",
            human_duration(age),
            human_duration(limit)
        )),
        _ => Ok(format!("{what}, {} old", human_duration(age))),
    }
}

/// The server's directories exist (created when missing, as Barman's check does) and can be
/// written to.
fn directories(server: &ServerConfig) -> Result<String, String> {
    let directories = [
        server.backup_directory(),
        server.basebackups_directory(),
        server.meta_directory(),
        server.wals_directory(),
        server.lock_directory(),
    ];
    for directory in &directories {
        std::fs::create_dir_all(directory)
            .map_err(|e| format!("{}: cannot create: {e}", directory.display()))?;
        let probe = directory.join(format!(".barsync-check-{}", std::process::id()));
        std::fs::write(&probe, b"")
            .map_err(|e| format!("{}: not writable: {e}", directory.display()))?;
        let _ = std::fs::remove_file(&probe);
    }
    Ok(String::new())
}
