//! The passive node: `sync-backup`, `sync-wals` and `cron`, copying a primary Barman's backups
//! and WALs into this node's catalog through the barsync delta engine.
//!
//! Data flow (file names follow it):
//! - a [`PassiveServer`] is one server for one run: its configuration, the operator's
//!   [`PassiveOptions`], its [`Events`] and the sessions its copies share;
//! - [`primary_sessions`] reaches the primary through `primary_ssh_command`: a `barsync serve`
//!   session confined to the primary's backup and WAL directories, or SFTP when barsync is not
//!   installed there;
//! - [`mod@sync_backup`] decides as Barman does whether a backup needs copying, plans its files
//!   ([`backup_plan`]: a basis for each from the local backups, following `reuse_backup`),
//!   and moves it SYNCING → DONE or FAILED;
//! - [`mod@sync_wals`] copies new WALs and appends them to the xlog db, exactly once;
//! - [`incremental`] keeps the `children_backup_ids` of local parents of PG17 incremental
//!   backups in line with the primary's chain, and skips a child whose parent is gone;
//! - the engine's fetch layer ([`transfer_engine::fetch`]) runs the file copies of either on
//!   `parallel_jobs` sessions of the [`PrimarySessions`](primary_sessions::PrimarySessions), largest
//!   first, under one throttle for `bandwidth_limit`; very large files are split into parts the
//!   sessions share;
//! - [`cron`] runs sync-info, every missing backup and the WALs for each passive server;
//! - [`mod@follow`] ships each WAL as soon as the primary archives it, with `sync-wals`' rules.
//!
//! Every file is verified against the sender's blake3 digest before it is published (temp
//! file, fsync, rename, directory fsync); a backup is DONE only once all of its files are.

pub mod backup_plan;
pub mod cron;
pub mod dry_run;
pub mod follow;
pub mod incremental;
pub mod primary_sessions;
pub mod report;
pub mod retention;
pub mod server;
pub mod status;
pub mod sync_backup;
pub mod sync_wals;
pub mod verify_tree;

use std::path::PathBuf;

use barsync_transport::TransportPreference;

use crate::syncinfo::RemoteProgram;
use transfer_engine::fetch::FilesFailed;

pub use cron::{run_cron, CronReport};
pub use follow::{follow, FollowOptions, FollowSummary};
pub use server::PassiveServer;
pub use sync_backup::{sync_backup, BackupOutcome};
pub use sync_wals::{sync_wals, WalsOutcome};
pub use transfer_engine::fetch::{FetchEvents, TransferTotals};
pub use transfer_engine::{FileError, FileErrorKind};

/// Failures of the passive commands. `Sync` carries Barman's own messages.
#[derive(Debug, thiserror::Error)]
pub enum PassiveError {
    #[error("{0}")]
    Sync(String),
    /// A backup or WAL copy failed: Barman's words, and the kind of file failure behind it.
    #[error("{0}")]
    Failed(SyncFailure),
    /// Another process holds the lock of this operation (Barman's message).
    #[error("{0}")]
    Busy(String),
    #[error(transparent)]
    SyncInfo(#[from] crate::syncinfo::SyncInfoError),
    #[error(transparent)]
    BackupInfo(#[from] crate::backup_info::BackupInfoError),
    #[error(transparent)]
    XlogDb(#[from] crate::xlogdb::XlogDbError),
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Why a backup or WAL sync failed: the words for it (Barman's own where Barman has them) and,
/// when files did not arrive, the kind of the failure that matters most (a full disk first).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SyncFailure {
    /// What failed, in words.
    pub message: String,
    /// The kind of the file failure behind it, when files failed.
    pub kind: Option<FileErrorKind>,
}

impl SyncFailure {
    /// The same failure, its words after `prefix` (Barman's "failure syncing …: ").
    pub fn prefixed(self, prefix: &str) -> SyncFailure {
        SyncFailure {
            message: format!("{prefix}{}", self.message),
            kind: self.kind,
        }
    }

    /// Whether this side's disk filled up.
    pub fn is_out_of_space(&self) -> bool {
        self.kind == Some(FileErrorKind::OutOfSpace)
    }
}

impl From<String> for SyncFailure {
    fn from(message: String) -> SyncFailure {
        SyncFailure {
            message,
            kind: None,
        }
    }
}

impl From<FilesFailed> for SyncFailure {
    fn from(failed: FilesFailed) -> SyncFailure {
        SyncFailure {
            kind: Some(failed.first.kind),
            message: failed.to_string(),
        }
    }
}

impl From<PassiveError> for SyncFailure {
    fn from(error: PassiveError) -> SyncFailure {
        match error {
            PassiveError::Failed(failure) => failure,
            other => other.to_string().into(),
        }
    }
}

impl PassiveError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> PassiveError {
        let path = path.into();
        move |source| PassiveError::Io { path, source }
    }
}

/// How the passive commands reach the primary and how hard they work: the operator's
/// settings, plain data (the runtime state of a run is its [`PassiveServer`]).
#[derive(Debug, Clone)]
pub struct PassiveOptions {
    /// The barsync program on the primary (`barsync serve` is started with it).
    pub remote_barsync: String,
    /// Which SSH transport runs `primary_ssh_command`.
    pub transport: TransportPreference,
    /// Sessions per copy; `None`: the server's `parallel_jobs` when set, else [`default_jobs`].
    pub jobs: Option<usize>,
    /// The configuration file (forwarded with `forward_config_path`).
    pub config_file: PathBuf,
    /// What answers sync-info on the primary.
    pub remote_program: RemoteProgram,
    /// Never start `barsync serve`: copy whole files over SFTP.
    pub force_sftp: bool,
    /// Barman on this node, which deletes the backups retention reports OBSOLETE.
    pub barman: PathBuf,
    /// Files of at least twice this size are fetched in parts of this size, shared by the
    /// sessions; 0 never splits.
    pub part_size: u64,
    /// Bounds on the primary's sync-info answer (cron).
    pub sync_info_limits: crate::syncinfo::SyncInfoLimits,
    /// How soon a session whose primary went silent is declared dead (when
    /// `primary_ssh_command` runs `ssh` and does not say).
    pub liveness: crate::ssh_liveness::Liveness,
}

impl Default for PassiveOptions {
    fn default() -> Self {
        PassiveOptions {
            remote_barsync: "barsync".into(),
            transport: TransportPreference::Auto,
            jobs: None,
            config_file: PathBuf::new(),
            remote_program: RemoteProgram::Barman,
            force_sftp: false,
            barman: PathBuf::from("barman"),
            part_size: DEFAULT_PART_SIZE,
            sync_info_limits: crate::syncinfo::SyncInfoLimits::DEFAULT,
            liveness: crate::ssh_liveness::Liveness::DEFAULT,
        }
    }
}

/// Part size for very large files: a 1 GiB relation segment is 16 parts.
pub const DEFAULT_PART_SIZE: u64 = 64 << 20;

/// Sessions per copy when `parallel_jobs` is not set: one per core, at least 2 (a session
/// waiting on the network leaves the CPU to another), at most 8.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 8)
}

/// What the passive commands tell their caller as they go (the CLI prints it): the fetch
/// layer's events ([`FetchEvents`]: warnings, files and parts done) and Barman's own.
pub trait Events: FetchEvents {
    /// A Barman-style informational line (stdout).
    fn info(&self, message: &str);
    /// A copy is about to start: `label` names it (a backup ID, or `WALs`), with its number of
    /// files and their total size as the primary declared them (for progress displays).
    fn plan(&self, _label: &str, _files: u64, _bytes: u64) {}
    /// `cron` is done with backup `id` of `server` (so a report can say it as it happens).
    fn backup_finished(
        &self,
        _server: &str,
        _id: &str,
        _outcome: &Result<BackupOutcome, SyncFailure>,
    ) {
    }
    /// `cron` is done with the WALs of `server`.
    fn wals_finished(&self, _server: &str, _outcome: &Result<WalsOutcome, SyncFailure>) {}
}

/// Events that go nowhere (for callers that only want the returned reports).
pub struct Quiet;

impl Events for Quiet {
    fn info(&self, _message: &str) {}
}

impl FetchEvents for Quiet {
    fn warning(&self, _message: &str) {}
}

/// The number of sessions for `server`.
pub(crate) fn jobs_for(server: &crate::config::ServerConfig, options: &PassiveOptions) -> usize {
    options
        .jobs
        .or_else(|| {
            server
                .is_explicit("parallel_jobs")
                .then(|| server.parallel_jobs() as usize)
        })
        .unwrap_or_else(default_jobs)
        .max(1)
}

/// How a copy for `server` uses its sessions.
pub(crate) fn pool_settings(
    server: &crate::config::ServerConfig,
    options: &PassiveOptions,
) -> transfer_engine::fetch::PoolSettings {
    transfer_engine::fetch::PoolSettings {
        workers: jobs_for(server, options),
        retry: retry_for(server),
        part_size: options.part_size,
    }
}

/// Rounds of fetching failed files again within one run: `basebackup_retry_times` and
/// `basebackup_retry_sleep` when set, else one round after one second (Barman's default is
/// no retry; a file corrupted in flight deserves one).
pub(crate) fn retry_for(server: &crate::config::ServerConfig) -> transfer_engine::fetch::Retry {
    transfer_engine::fetch::Retry {
        times: if server.is_explicit("basebackup_retry_times") {
            server.basebackup_retry_times()
        } else {
            1
        },
        sleep: std::time::Duration::from_secs(if server.is_explicit("basebackup_retry_sleep") {
            u64::from(server.basebackup_retry_sleep())
        } else {
            1
        }),
    }
}

/// Barman's refusal of passive commands on a server that is not passive.
pub(crate) fn require_passive(server: &crate::config::ServerConfig) -> Result<(), PassiveError> {
    if server.is_passive() {
        Ok(())
    } else {
        Err(PassiveError::Sync(format!(
            "server {} is not passive",
            server.name()
        )))
    }
}

/// Creates `path` (and its parents) as a real directory; an existing symlink or file there is
/// an error, so a link planted on the passive never redirects a copy.
pub(crate) fn create_real_directory(path: &std::path::Path) -> Result<(), String> {
    match path.symlink_metadata() {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(format!(
            "{} exists and is not a directory (a symlink is never followed)",
            path.display()
        )),
        Err(_) => {
            std::fs::create_dir_all(path).map_err(|e| format!("creating {}: {e}", path.display()))
        }
    }
}
