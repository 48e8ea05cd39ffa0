//! `--dry-run` of `cron`, `sync-backup` and `sync-wals`: what a run would do, from the same
//! rules as the run itself, changing nothing on this node (no lock taken, no file written):
//! the local FAILED backups it would purge, the backups it would copy and the ones it leaves
//! alone on purpose (and why), the WALs it would copy, and the backups the retention policy
//! would then delete.

use serde::Serialize;

use super::cron::sync_point;
use super::retention::{self, Candidate};
use super::sync_backup::{purge_reason, resolve_backup_id, skipped_on_purpose};
use super::sync_wals::{select_wals, WalSelection};
use super::{Events, PassiveError, PassiveOptions, Quiet};
use crate::backup_info::BackupInfo;
use crate::backup_info::BackupStatus;
use crate::catalog::available_backups;
use crate::catalog::load_backups;
use crate::config::{Config, ServerConfig};
use crate::syncinfo::{fetch_primary_info, PrimaryInfo};

/// A server's name and its plan, or why it could not be made.
pub type ServerPlan = (String, Result<DryRun, String>);

/// What a run would do for one server.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DryRun {
    pub server: String,
    /// Local FAILED backups the primary no longer has: purged.
    pub purge: Vec<String>,
    /// Backups that would be copied (or resumed), oldest first.
    pub copy: Vec<PlannedBackup>,
    /// Backups of the primary left alone on purpose, with Barman's message.
    pub skip: Vec<SkippedBackup>,
    /// The WALs that would be copied.
    pub wals: PlannedWals,
    /// Local backups the retention policy would delete after the copies.
    pub retention: Vec<String>,
}

/// A backup a run would copy.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedBackup {
    pub backup_id: String,
    /// Its size as the primary declared it.
    pub bytes: Option<u64>,
    /// A SYNCING or FAILED copy here that the run would resume.
    pub resumes: Option<String>,
}

/// A backup of the primary a run would not copy.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedBackup {
    pub backup_id: String,
    pub reason: String,
}

/// The WALs a run would copy (the primary's, after the last one synced here).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PlannedWals {
    /// Why none would be copied (Barman's message), when none would.
    pub skipped: Option<String>,
    pub files: u64,
    pub bytes: u64,
    pub first: Option<String>,
    pub last: Option<String>,
}

/// What `cron` would do for every passive server of `config` (or only `only`): each primary
/// is asked for its sync-info as cron asks (the answer is saved as `primary.info`, as
/// `sync-info --primary` saves it), and the plan is made from it. One result per server.
pub fn plan_cron_all(
    config: &Config,
    only: Option<&str>,
    options: &PassiveOptions,
    events: &dyn Events,
) -> Result<Vec<ServerPlan>, PassiveError> {
    let mut servers = config.servers()?;
    servers.sort_by(|a, b| a.name().cmp(b.name()));
    let mut plans = Vec::new();
    for server in servers {
        if only.is_some_and(|name| name != server.name())
            || !server.is_passive()
            || server.is_disabled()
        {
            continue;
        }
        if !server.is_active() {
            events.info(&format!(
                "Server {} is inactive (active = false): cron would skip it, as Barman's cron does",
                server.name()
            ));
            continue;
        }
        let mut warn = |message: String| events.warning(&message);
        let plan = fetch_primary_info(
            &server,
            &options.config_file,
            options.remote_program,
            &sync_point(&server, events),
            &options.sync_info_limits,
            &mut warn,
        )
        .map_err(|e| format!("Failed to retrieve the primary node status: {e}"))
        .and_then(|answer| plan_cron(&server, &answer.info).map_err(|e| e.to_string()));
        plans.push((server.name().to_owned(), plan));
    }
    let inactive = |name: &str| {
        config
            .server(name)
            .ok()
            .flatten()
            .is_some_and(|server| server.is_passive() && !server.is_active())
    };
    if let (Some(name), true) = (only, plans.is_empty()) {
        if inactive(name) {
            return Ok(plans);
        }
        return Err(PassiveError::Sync(format!(
            "server {name} is not passive (or does not exist, or is disabled)"
        )));
    }
    Ok(plans)
}

/// What a `cron` run would do for `server`, given the primary's `primary` answer.
pub fn plan_cron(server: &ServerConfig, primary: &PrimaryInfo) -> Result<DryRun, PassiveError> {
    let mut plan = DryRun {
        server: server.name().to_owned(),
        ..DryRun::default()
    };
    let local = load_backups(server)?;
    for entry in &local {
        if purge_reason(server, primary, entry).is_some() {
            plan.purge.push(entry.info.backup_id().to_owned());
        }
    }
    let mut ids: Vec<&str> = primary.backup_ids().collect();
    ids.sort_unstable();
    for id in ids {
        plan_backup(server, primary, &local, id, &mut plan)?;
    }
    plan.wals = plan_wals(server, primary, &plan.copy)?;
    plan.retention = retention_after(server, primary, &local, &plan)?;
    Ok(plan)
}

/// What `sync-backup` of `requested` (an ID, or `latest`, `oldest`, …) would do: the backup
/// alone, no WALs, no retention.
pub fn plan_sync_backup(
    server: &ServerConfig,
    primary: &PrimaryInfo,
    requested: &str,
) -> Result<DryRun, PassiveError> {
    let mut plan = DryRun {
        server: server.name().to_owned(),
        ..DryRun::default()
    };
    let local = load_backups(server)?;
    let id = resolve_backup_id(requested, primary, &local)?;
    plan_backup(server, primary, &local, &id, &mut plan)?;
    Ok(plan)
}

/// What `sync-wals` would do.
pub fn plan_sync_wals(
    server: &ServerConfig,
    primary: &PrimaryInfo,
) -> Result<DryRun, PassiveError> {
    Ok(DryRun {
        server: server.name().to_owned(),
        wals: plan_wals(server, primary, &[])?,
        ..DryRun::default()
    })
}

/// Adds backup `id` of the primary to `plan`: copied, or skipped on purpose (a DONE copy here
/// is neither).
fn plan_backup(
    server: &ServerConfig,
    primary: &PrimaryInfo,
    local: &[crate::catalog::CatalogEntry],
    id: &str,
    plan: &mut DryRun,
) -> Result<(), PassiveError> {
    let here = local.iter().find(|e| e.info.backup_id() == id);
    let status = here.and_then(|e| e.info.status().ok());
    if matches!(
        status,
        Some(BackupStatus::Done | BackupStatus::WaitingForWals)
    ) {
        return Ok(());
    }
    if let Some(skip) = skipped_on_purpose(server, primary, local, id)? {
        plan.skip.push(SkippedBackup {
            backup_id: id.to_owned(),
            reason: skip.message,
        });
        return Ok(());
    }
    let bytes = primary
        .backup(server.name(), id)
        .ok()
        .flatten()
        .and_then(|(info, _)| info.int("size").ok().flatten())
        .and_then(|size| u64::try_from(size).ok());
    plan.copy.push(PlannedBackup {
        backup_id: id.to_owned(),
        bytes,
        resumes: status.map(|s| s.as_str().to_owned()),
    });
    Ok(())
}

/// The WALs a sync would copy, by the rule of `sync-wals` ([`select_wals`]), counting the
/// backups `copies` would bring first among this node's.
fn plan_wals(
    server: &ServerConfig,
    primary: &PrimaryInfo,
    copies: &[PlannedBackup],
) -> Result<PlannedWals, PassiveError> {
    let mut backups: Vec<BackupInfo> = available_backups(server)?
        .into_iter()
        .map(|entry| entry.info)
        .collect();
    for planned in copies {
        if let Some((info, _)) = primary
            .backup(server.name(), &planned.backup_id)
            .ok()
            .flatten()
        {
            backups.push(info);
        }
    }
    let oldest = backups
        .iter()
        .min_by(|a, b| a.backup_id().cmp(b.backup_id()));
    let mut wals = PlannedWals::default();
    match select_wals(server, primary, oldest, &Quiet)? {
        WalSelection::Skip { message, .. } => wals.skipped = Some(message),
        WalSelection::Copy(to_copy) => {
            for (wal, _) in to_copy {
                wals.files += 1;
                wals.bytes += u64::try_from(wal.size).unwrap_or(0);
                wals.first.get_or_insert_with(|| wal.name.clone());
                wals.last = Some(wal.name.clone());
            }
        }
    }
    Ok(wals)
}

/// The backups retention would delete once the planned copies are DONE here.
fn retention_after(
    server: &ServerConfig,
    primary: &PrimaryInfo,
    local: &[crate::catalog::CatalogEntry],
    plan: &DryRun,
) -> Result<Vec<String>, PassiveError> {
    let meta = server.meta_directory();
    let mut candidates: Vec<Candidate> = local
        .iter()
        .filter(|e| !plan.purge.iter().any(|id| id == e.info.backup_id()))
        .map(|e| Candidate::from_info(&e.info, &meta))
        .collect();
    for planned in &plan.copy {
        if let Some((info, _)) = primary
            .backup(server.name(), &planned.backup_id)
            .ok()
            .flatten()
        {
            candidates.retain(|c| c.id != planned.backup_id);
            candidates.push(Candidate {
                done: true,
                ..Candidate::from_info(&info, &meta)
            });
        }
    }
    Ok(retention::would_delete(server, &candidates))
}
