//! What the passive commands tell a machine (`--json`): the outcomes of `sync-backup`,
//! `sync-wals` and `cron` as typed values that derive `Serialize`. The binary prints them as
//! they are; it makes the text lines of the same outcomes itself.

use std::collections::BTreeMap;

use serde::Serialize;

use super::cron::ServerCron;
use super::sync_backup::BackupOutcome;
use super::sync_wals::WalsOutcome;
use super::{SyncFailure, TransferTotals};
use transfer_engine::FileErrorKind;

/// A duration in seconds, to the millisecond.
fn rounded(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

/// The totals of a copy.
#[derive(Debug, Clone, Serialize)]
pub struct TotalsReport {
    pub files: u64,
    pub bytes_synced: u64,
    pub bytes_on_the_wire: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub bytes_reused: u64,
    pub files_linked: u64,
    pub files_split: u64,
    pub parts: u64,
    pub sessions: u64,
    /// How files were verified, with counts.
    pub verified: BTreeMap<&'static str, u64>,
    pub duration_seconds: f64,
}

impl TotalsReport {
    pub fn new(totals: &TransferTotals, seconds: f64) -> TotalsReport {
        TotalsReport {
            files: totals.files,
            bytes_synced: totals.bytes,
            bytes_on_the_wire: totals.received_bytes + totals.sent_bytes,
            bytes_received: totals.received_bytes,
            bytes_sent: totals.sent_bytes,
            bytes_reused: totals.reused_bytes,
            files_linked: totals.linked,
            files_split: totals.split_files,
            parts: totals.parts,
            sessions: totals.sessions,
            verified: totals
                .verified_by
                .iter()
                .map(|(how, count)| (how.label(), *count))
                .collect(),
            duration_seconds: rounded(seconds),
        }
    }
}

/// How one backup's sync ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupResult {
    Synced,
    NothingToDo,
    Purged,
    Failed,
}

/// One backup's sync.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    pub backup_id: String,
    pub outcome: BackupResult,
    /// Barman's message (nothing to do, purged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<String>>,
    /// The kind of file failure behind the error (`out_of_space`, `corrupt`, …), when files
    /// failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<&'static str>,
    /// The copy's totals (a synced backup).
    #[serde(flatten)]
    pub totals: Option<TotalsReport>,
}

impl BackupReport {
    /// The report of backup `id` (as requested) from its outcome.
    pub fn new(id: &str, outcome: &Result<BackupOutcome, SyncFailure>) -> BackupReport {
        let report = |backup_id: &str, outcome| BackupReport {
            backup_id: backup_id.to_owned(),
            outcome,
            message: None,
            errors: None,
            error_kind: None,
            totals: None,
        };
        match outcome {
            Ok(BackupOutcome::Synced {
                backup_id,
                totals,
                seconds,
            }) => BackupReport {
                totals: Some(TotalsReport::new(totals, *seconds)),
                ..report(backup_id, BackupResult::Synced)
            },
            Ok(BackupOutcome::NothingToDo(message)) => BackupReport {
                message: Some(message.clone()),
                ..report(id, BackupResult::NothingToDo)
            },
            Ok(BackupOutcome::Purged(message)) => BackupReport {
                message: Some(message.clone()),
                ..report(id, BackupResult::Purged)
            },
            Err(error) => BackupReport {
                errors: Some(vec![error.message.clone()]),
                error_kind: error.kind.map(FileErrorKind::name),
                ..report(id, BackupResult::Failed)
            },
        }
    }
}

/// How a WAL sync ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WalsResult {
    Synced,
    Skipped,
    Failed,
}

/// One server's WAL sync.
#[derive(Debug, Clone, Serialize)]
pub struct WalsReport {
    pub outcome: WalsResult,
    /// Lines appended to the xlog db (a sync that ran).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listed_in_xlog_db: Option<u64>,
    /// Why nothing was copied (`null` when something was; absent when the sync failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<String>>,
    /// The kind of file failure behind the error (`out_of_space`, `corrupt`, …), when files
    /// failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<&'static str>,
    #[serde(flatten)]
    pub totals: Option<TotalsReport>,
}

impl WalsReport {
    pub fn new(outcome: &Result<WalsOutcome, SyncFailure>) -> WalsReport {
        match outcome {
            Ok(outcome) => WalsReport {
                outcome: if outcome.skipped.is_some() {
                    WalsResult::Skipped
                } else {
                    WalsResult::Synced
                },
                listed_in_xlog_db: Some(outcome.listed),
                message: Some(outcome.skipped.clone()),
                errors: None,
                error_kind: None,
                totals: Some(TotalsReport::new(&outcome.totals, outcome.seconds)),
            },
            Err(error) => WalsReport {
                outcome: WalsResult::Failed,
                listed_in_xlog_db: None,
                message: None,
                errors: Some(vec![error.message.clone()]),
                error_kind: error.kind.map(FileErrorKind::name),
                totals: None,
            },
        }
    }
}

/// One server's cron run.
#[derive(Debug, Clone, Serialize)]
pub struct ServerCronReport {
    pub server: String,
    pub ok: bool,
    /// Why the server was skipped (another run holds its lock, or it is inactive).
    pub skipped: Option<String>,
    pub purged: Vec<String>,
    pub backups: Vec<BackupReport>,
    pub wals: Option<WalsReport>,
    /// The backups' and the WALs' copies together.
    pub totals: TotalsReport,
    pub errors: Vec<String>,
}

impl ServerCronReport {
    pub fn new(server: &ServerCron) -> ServerCronReport {
        ServerCronReport {
            server: server.server.clone(),
            ok: !server.failed(),
            skipped: server.skipped.clone(),
            purged: server.purged.clone(),
            backups: server
                .backups
                .iter()
                .map(|(id, outcome)| BackupReport::new(id, outcome))
                .collect(),
            wals: server.wals.as_ref().map(WalsReport::new),
            totals: TotalsReport::new(&server.totals(), 0.0),
            errors: server.errors(),
        }
    }
}
