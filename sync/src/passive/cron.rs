//! `cron` for passive servers: for each one, in name order and under its cron lock, ask the
//! primary for its sync-info, purge the local FAILED backups it no longer has, copy every
//! missing backup (oldest first, all of them: Barman starts one per run), bring every local
//! incremental parent's `children_backup_ids` in line with the primary's chain
//! ([`incremental`]; Barman only does it when a child is synced), then the WALs; then, every
//! run, whatever the sync did, the passive's own retention policy (which reads those chains).
//!
//! It runs in the foreground to completion and reports per server, so a scheduler sees a
//! failure in the exit status. A sync already running elsewhere (barsync or Barman, same lock
//! files) is skipped, not waited for, except the WAL sync, whose lock Barman also waits for.

use std::path::Path;

use super::incremental::{self, Refresh};
use super::retention::{self, Candidate};
use super::status;
use super::sync_backup::{delete_backup, purge_reason, sync_backup_with, BackupOutcome};
use super::sync_wals::{read_sync_wals_info, sync_wals_locked, WalsOutcome};
use super::{Events, FetchEvents, PassiveError, PassiveOptions, PassiveServer, SyncFailure};
use crate::catalog::{available_backups, load_backups};
use crate::config::{Config, ServerConfig};
use crate::human::human_duration;
use crate::lock::{self, LockError, LockKind};
use crate::syncinfo::{fetch_primary_info, SyncPoint};

/// What cron did for one server.
#[derive(Debug, Default)]
pub struct ServerCron {
    pub server: String,
    /// Why the server was skipped (another cron holds its lock, or it is inactive).
    pub skipped: Option<String>,
    /// A failure that stopped this server's sync (sync-info, locks, the catalog).
    pub error: Option<String>,
    /// Local FAILED backups purged because the primary no longer has them.
    pub purged: Vec<String>,
    /// Each backup attempted, with its outcome.
    pub backups: Vec<(String, Result<BackupOutcome, SyncFailure>)>,
    /// Local backups whose `children_backup_ids` differed from the chain, with what the
    /// refresh did.
    pub parents: Vec<(String, Result<Refresh, String>)>,
    /// The WAL sync, when there were WALs to consider.
    pub wals: Option<Result<WalsOutcome, SyncFailure>>,
    /// Local backups deleted by the passive's retention policy.
    pub retired: Vec<String>,
}

impl ServerCron {
    /// Whether something failed.
    pub fn failed(&self) -> bool {
        self.error.is_some()
            || self.backups.iter().any(|(_, r)| r.is_err())
            || self.parents.iter().any(|(_, r)| r.is_err())
            || matches!(self.wals, Some(Err(_)))
    }

    /// The copies of the backups and the WALs together.
    pub fn totals(&self) -> super::TransferTotals {
        let mut totals = super::TransferTotals::default();
        for (_, outcome) in &self.backups {
            if let Ok(BackupOutcome::Synced { totals: t, .. }) = outcome {
                totals.add(t);
            }
        }
        if let Some(Ok(outcome)) = &self.wals {
            totals.add(&outcome.totals);
        }
        totals
    }

    /// Every error of the run: the one that stopped it, then those of backups and WALs.
    pub fn errors(&self) -> Vec<String> {
        let mut errors: Vec<String> = self.error.iter().cloned().collect();
        errors.extend(
            self.backups
                .iter()
                .filter_map(|(_, outcome)| outcome.as_ref().err().map(|e| e.message.clone())),
        );
        if let Some(Err(error)) = &self.wals {
            errors.push(error.message.clone());
        }
        errors
    }
}

/// What cron did.
#[derive(Debug, Default)]
pub struct CronReport {
    pub servers: Vec<ServerCron>,
}

impl CronReport {
    pub fn failed(&self) -> bool {
        self.servers.iter().any(ServerCron::failed)
    }
}

/// A cron run that has shown no progress for this long while holding its server's cron lock
/// is reported as possibly hung (a file or part finished counts as progress).
pub const STALE_AFTER_SECONDS: f64 = 30.0 * 60.0;

/// The cron lock of a server, seen from outside (by another cron, or `check`).
#[derive(Debug, Clone, PartialEq)]
pub enum CronLock {
    Free,
    /// Held by a run that showed progress within [`STALE_AFTER_SECONDS`].
    Running(lock::Holder),
    /// Held by a run with no progress for longer: it may be hung.
    Stale(lock::Holder),
}

/// The state of `server`'s cron lock, without taking it.
pub fn cron_lock(server: &ServerConfig) -> CronLock {
    let path = server
        .lock_directory()
        .join(LockKind::Cron.file_name(server.name()));
    match lock::holder(&path) {
        None => CronLock::Free,
        Some(holder) if holder.idle_seconds > STALE_AFTER_SECONDS => CronLock::Stale(holder),
        Some(holder) => CronLock::Running(holder),
    }
}

/// [`Events`] passed on unchanged, marking progress on the cron lock ([`lock::LockGuard::touch`])
/// as files and parts arrive, at most every few seconds.
struct Heartbeat<'a> {
    events: &'a dyn Events,
    lock: &'a lock::LockGuard,
    last: std::sync::Mutex<std::time::Instant>,
}

impl Heartbeat<'_> {
    fn beat(&self) {
        let mut last = self.last.lock().unwrap();
        if last.elapsed() >= std::time::Duration::from_secs(5) {
            self.lock.touch();
            *last = std::time::Instant::now();
        }
    }
}

impl Events for Heartbeat<'_> {
    fn info(&self, message: &str) {
        self.events.info(message);
    }
    fn plan(&self, label: &str, files: u64, bytes: u64) {
        self.events.plan(label, files, bytes);
    }
    fn backup_finished(
        &self,
        server: &str,
        id: &str,
        outcome: &Result<BackupOutcome, SyncFailure>,
    ) {
        self.lock.touch();
        self.events.backup_finished(server, id, outcome);
    }
    fn wals_finished(&self, server: &str, outcome: &Result<WalsOutcome, SyncFailure>) {
        self.lock.touch();
        self.events.wals_finished(server, outcome);
    }
}

impl FetchEvents for Heartbeat<'_> {
    fn warning(&self, message: &str) {
        self.events.warning(message);
    }
    fn file_done(
        &self,
        path: &Path,
        result: &Result<transfer_engine::protocol::FetchReport, transfer_engine::FileError>,
    ) {
        self.beat();
        self.events.file_done(path, result);
    }
    fn part_done(&self, path: &Path, bytes: u64) {
        self.beat();
        self.events.part_done(path, bytes);
    }
}

/// Runs cron for every passive server of `config` (or only `only`, when given).
pub fn run_cron(
    config: &Config,
    only: Option<&str>,
    options: &PassiveOptions,
    events: &dyn Events,
) -> Result<CronReport, PassiveError> {
    let mut servers = config.servers()?;
    servers.sort_by(|a, b| a.name().cmp(b.name()));
    let mut report = CronReport::default();
    for server in servers {
        if only.is_some_and(|name| name != server.name()) {
            continue;
        }
        if !server.is_passive() || server.is_disabled() {
            continue;
        }
        if !server.is_active() {
            // Barman's `Server.cron` returns at once for an inactive server: no sync, no
            // retention.
            let message = format!(
                "Server {} is inactive (active = false): skipped, as Barman's cron skips it",
                server.name()
            );
            events.info(&message);
            report.servers.push(ServerCron {
                server: server.name().to_owned(),
                skipped: Some(message),
                ..ServerCron::default()
            });
            continue;
        }
        report.servers.push(cron_server(&server, options, events));
    }
    if let Some(name) = only {
        if report.servers.is_empty() {
            return Err(PassiveError::Sync(format!(
                "server {name} is not passive (or does not exist, or is disabled)"
            )));
        }
    }
    Ok(report)
}

fn cron_server(server: &ServerConfig, options: &PassiveOptions, events: &dyn Events) -> ServerCron {
    let name = server.name();
    let mut result = ServerCron {
        server: name.to_owned(),
        ..ServerCron::default()
    };
    let _cron_lock = match lock::acquire(&server.lock_directory(), name, &LockKind::Cron, false) {
        Ok(guard) => guard,
        Err(LockError::Busy(_)) => {
            let message = format!(
                "Another cron process is already running on server {name}. Skipping to the next server"
            );
            events.info(&message);
            if let CronLock::Stale(holder) = cron_lock(server) {
                events.warning(&format!(
                    "the cron lock of server {name} is held by process {} with no progress for {}: that run may be hung (look at it, or stop it; the next run resumes its copies)",
                    holder.pid,
                    human_duration(holder.idle_seconds)
                ));
            }
            result.skipped = Some(message);
            return result;
        }
        Err(error) => {
            result.error = Some(error.to_string());
            return result;
        }
    };
    let start = std::time::Instant::now();
    let heartbeat = Heartbeat {
        events,
        lock: &_cron_lock,
        last: std::sync::Mutex::new(std::time::Instant::now()),
    };
    let events: &dyn Events = &heartbeat;
    // One set of sessions serves every copy of this server's run.
    let passive = match PassiveServer::new(server, options, events) {
        Ok(passive) => passive,
        Err(error) => {
            result.error = Some(error.to_string());
            return result;
        }
    };
    if let Err(error) = sync_server(&passive, &mut result) {
        result.error = Some(error.to_string());
    }
    // The passive's own retention is local: it runs every time, after a failed sync too (as
    // Barman's cron runs it after `sync_cron`, whatever that did).
    if let Err(error) = apply_retention(server, options, events, &mut result) {
        let message = format!("retention policy: {error}");
        result.error = Some(match result.error.take() {
            Some(first) => format!("{first}; {message}"),
            None => message,
        });
    }
    if let Err(error) = status::record_cron(server, &result, start.elapsed().as_secs_f64()) {
        events.warning(&format!(
            "the state of this run for `barsync status`: {error}"
        ));
    }
    for error in passive.close_sessions() {
        events.warning(&error);
    }
    result
}

fn sync_server(passive: &PassiveServer<'_>, result: &mut ServerCron) -> Result<(), PassiveError> {
    let (server, options, events) = (passive.config(), passive.options(), passive.events());
    let name = server.name();
    let point = sync_point(server, events);
    let mut warn = |message: String| events.warning(&message);
    // Only the parsed answer is kept (the raw text is dropped here).
    let primary = fetch_primary_info(
        server,
        &options.config_file,
        options.remote_program,
        &point,
        &options.sync_info_limits,
        &mut warn,
    )
    .map_err(|e| PassiveError::Sync(format!("Failed to retrieve the primary node status: {e}")))?
    .info;
    for entry in load_backups(server)? {
        if let Some(message) = purge_reason(server, &primary, &entry) {
            events.warning(&message);
            delete_backup(server, &entry, events)?;
            result.purged.push(entry.info.backup_id().to_owned());
        }
    }
    let local: Vec<String> = available_backups(server)?
        .iter()
        .map(|e| e.info.backup_id().to_owned())
        .collect();
    let mut missing: Vec<String> = primary
        .backup_ids()
        .filter(|id| !local.iter().any(|l| l == id))
        .map(str::to_owned)
        .collect();
    missing.sort_unstable();
    if primary.backups.is_empty() {
        events.info(&format!(
            "No backup synchronisation required for server {name}"
        ));
    }
    for id in missing {
        match sync_backup_with(passive, &primary, &id) {
            Err(PassiveError::Busy(_)) => {
                events.info(&format!(
                    "A synchronisation process for backup {id} on server {name} is already in progress"
                ));
            }
            outcome => {
                let outcome = outcome.map_err(SyncFailure::from);
                events.backup_finished(name, &id, &outcome);
                result.backups.push((id, outcome));
            }
        }
    }
    for (parent, refresh) in incremental::refresh_all(server, &primary)? {
        match &refresh {
            Ok(refresh) => incremental::report(name, &parent, refresh, events),
            Err(error) => events.warning(&error.to_string()),
        }
        result
            .parents
            .push((parent, refresh.map_err(|e| e.to_string())));
    }
    if primary.wals.is_empty() {
        events.info(&format!(
            "No WAL synchronisation required for server {name}"
        ));
        return Ok(());
    }
    let _wal_lock = lock::acquire(&server.lock_directory(), name, &LockKind::SyncWal, true)?;
    let wals = sync_wals_locked(passive, &primary).map_err(SyncFailure::from);
    events.wals_finished(name, &wals);
    result.wals = Some(wals);
    Ok(())
}

/// What cron asks the primary for: the WALs after its coordinates from the last WAL sync.
/// Position 0 (a one-line xlog db) is sent as a full request: a Barman primary rejects 0 and
/// would wedge the sync.
pub(crate) fn sync_point(server: &ServerConfig, events: &dyn Events) -> SyncPoint {
    match read_sync_wals_info(server, events) {
        Some((last_wal, position)) if position > 0 => SyncPoint {
            last_wal: Some(last_wal),
            last_position: Some(position),
        },
        _ => SyncPoint::default(),
    }
}

/// The passive's own retention policy, applied by Barman's `delete` (see [`retention`]).
fn apply_retention(
    server: &ServerConfig,
    options: &PassiveOptions,
    events: &dyn Events,
    result: &mut ServerCron,
) -> Result<(), PassiveError> {
    if server.retention_policy().is_none() {
        return Ok(());
    }
    let meta = server.meta_directory();
    let candidates: Vec<Candidate> = load_backups(server)?
        .iter()
        .map(|e| Candidate::from_info(&e.info, &meta))
        .collect();
    result.retired = retention::apply(
        server,
        &options.config_file,
        &options.barman,
        &candidates,
        events,
    )?;
    Ok(())
}
