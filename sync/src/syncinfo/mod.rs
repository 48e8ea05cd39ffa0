//! sync-info: the JSON a primary publishes about its catalog (produced exactly as Barman
//! 3.20.1 prints it), its parsing on a passive node, and fetching it from a primary.

mod command;
mod parse;
mod primary;
mod produce;

pub use command::{
    parse_last_position, run_sync_info, CommandOutcome, SyncInfoArgs, EXIT_BAD_ARGUMENTS,
    EXIT_SYNC_ERROR,
};
pub use parse::{PrimaryConfig, PrimaryInfo, PrimaryInfoError};
pub use primary::{
    fetch_primary_info, load_primary_info, remote_command_line, shell_quote, PrimaryAnswer,
    RemoteProgram, SyncInfoLimits,
};
pub use produce::{
    select_wals, sync_info_json, sync_info_text, SyncPoint, WalSelection, BARMAN_VERSION,
};

use std::path::PathBuf;

/// Failures of sync-info. `Sync` is Barman's `SyncError` (exit code 1, `ERROR: <message>`).
#[derive(Debug, thiserror::Error)]
pub enum SyncInfoError {
    #[error("{0}")]
    Sync(String),
    #[error(transparent)]
    XlogDb(#[from] crate::xlogdb::XlogDbError),
    #[error(transparent)]
    BackupInfo(#[from] crate::backup_info::BackupInfoError),
    #[error(transparent)]
    PrimaryInfo(#[from] PrimaryInfoError),
    /// The primary's answer exceeded [`SyncInfoLimits::max_bytes`].
    #[error("sync-info from the primary of server {server} is larger than {limit} bytes, the limit (raise it with --sync-info-max-size); the primary was cut off")]
    AnswerTooLarge { server: String, limit: u64 },
    /// The primary did not finish its answer within [`SyncInfoLimits::timeout`].
    #[error("sync-info from the primary of server {server}: no complete answer within {seconds} seconds (raise the limit with --sync-info-timeout); the primary was cut off")]
    TimedOut { server: String, seconds: f64 },
    #[error("cannot access {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}
