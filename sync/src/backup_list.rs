//! `list-backups` for a passive node, as a typed report: the primary's backups (from its
//! sync-info) and this node's, side by side, each in one [`BackupState`] (synced, syncing,
//! failed, missing, obsolete, skipped, local only), with the primary's size and what is on
//! this node's disk. The binary renders the rows as a table or as JSON (their `Serialize`
//! form).

use std::path::Path;

use serde::Serialize;

use crate::backup_info::BackupStatus;
use crate::catalog::load_backups;
use crate::config::ServerConfig;
use crate::passive::sync_backup::{skipped_on_purpose, SkipReason};
use crate::passive::PassiveError;
use crate::syncinfo::PrimaryInfo;

/// Where a backup stands on this node, against the primary's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupState {
    /// DONE (or WAITING_FOR_WALS) here, and the primary has it.
    Synced,
    /// A copy is running or was cut: the next cron resumes it.
    Syncing,
    /// FAILED here: the next cron retries it.
    Failed,
    /// The primary has it, this node not yet.
    Missing,
    /// This node's retention policy would delete it: not copied, as Barman does.
    Obsolete,
    /// An incremental backup whose parent the primary no longer has.
    Skipped,
    /// The primary deleted it; kept here, as Barman does.
    #[serde(rename = "local only")]
    LocalOnly,
}

impl BackupState {
    /// The word the table shows.
    pub fn as_str(self) -> &'static str {
        match self {
            BackupState::Synced => "synced",
            BackupState::Syncing => "syncing",
            BackupState::Failed => "failed",
            BackupState::Missing => "missing",
            BackupState::Obsolete => "obsolete",
            BackupState::Skipped => "skipped",
            BackupState::LocalOnly => "local only",
        }
    }
}

/// One backup, on the primary and on this node.
#[derive(Debug, Clone, Serialize)]
pub struct BackupRow {
    pub backup_id: String,
    pub state: BackupState,
    /// The primary's status of it (`None`: the primary does not list it).
    pub primary_status: Option<String>,
    /// Its size on the primary, in bytes.
    pub primary_size: Option<u64>,
    /// Its status in this node's catalog.
    pub passive_status: Option<String>,
    /// Bytes of its directory on this node (hard links to another backup counted too).
    pub passive_bytes_on_disk: Option<u64>,
    /// Why the primary's backup is not copied on purpose (Barman's message).
    pub note: Option<String>,
}

/// The rows of `server`: every backup either node has, by backup ID.
pub fn backup_rows(
    server: &ServerConfig,
    primary: &PrimaryInfo,
) -> Result<Vec<BackupRow>, PassiveError> {
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
            (false, Some(BackupStatus::Done | BackupStatus::WaitingForWals)) => {
                BackupState::LocalOnly
            }
            (true, Some(BackupStatus::Done | BackupStatus::WaitingForWals)) => BackupState::Synced,
            (_, Some(BackupStatus::Syncing)) => BackupState::Syncing,
            (_, Some(BackupStatus::Failed)) => BackupState::Failed,
            (true, _) => match skipped_on_purpose(server, primary, &local, &id)? {
                Some(skip) => {
                    note = Some(skip.message);
                    match skip.reason {
                        SkipReason::Obsolete => BackupState::Obsolete,
                        SkipReason::ParentAbsent => BackupState::Skipped,
                    }
                }
                None => BackupState::Missing,
            },
            (false, _) => BackupState::LocalOnly,
        };
        let directory = base.join(&id);
        rows.push(BackupRow {
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
            passive_status: local_status.map(|s| s.as_str().to_owned()),
            passive_bytes_on_disk: directory.is_dir().then(|| disk_bytes(&directory)),
            note,
            backup_id: id,
        });
    }
    Ok(rows)
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
