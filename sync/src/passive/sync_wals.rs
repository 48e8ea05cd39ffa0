//! `sync-wals SERVER`: copies the primary's new WAL files into this node's archive, as Barman's
//! passive does, and lists each in the xlog db exactly once.
//!
//! Order of effects, so that a crash anywhere leaves a consistent catalog: (1) every WAL file
//! is copied, verified and published in its hash directory; (2) under the xlog db lock, the
//! lines of the WALs not listed yet are appended and fsynced; (3) `sync-wals.info` is replaced
//! atomically. A crash before (2) leaves unlisted files that the next run finds identical and
//! lists; a crash between (2) and (3) makes the next run copy nothing and append nothing. The
//! WAL names come from the primary and are checked against the WAL grammar before any path is
//! built from them. Temporary files of a run that was killed are removed by the next one,
//! under the same lock.

use std::time::Instant;

use transfer_engine::confine::{make_dirs_below, Destination, InTheWay, RelativePath};
use transfer_engine::copy::partial_path;
use transfer_engine::protocol::{FetchRequest, FetchTarget, WriteMode};

use super::backup_plan::local_basis;
use super::primary_sessions::PrimarySessions;
use super::{Events, PassiveError, PassiveServer, SyncFailure, TransferTotals};
use crate::catalog::available_backups;
use crate::config::ServerConfig;
use crate::lock::{self, LockKind};
use crate::syncinfo::{load_primary_info, PrimaryInfo};
use crate::wal::WalName;
use crate::xlogdb::{LockedXlogDb, WalEntry};
use transfer_engine::fetch::{run_jobs_retrying, Job};

/// What sync-wals did.
#[derive(Debug, Default)]
pub struct WalsOutcome {
    /// WAL files copied (or found already complete).
    pub files: u64,
    /// Lines appended to the xlog db.
    pub listed: u64,
    pub totals: TransferTotals,
    pub seconds: f64,
    /// Why nothing was copied, when nothing was (Barman's message).
    pub skipped: Option<String>,
}

/// The state file: the primary's xlog db coordinates after the last WAL sync.
fn sync_wals_info_path(server: &ServerConfig) -> std::path::PathBuf {
    server.wals_directory().join("sync-wals.info")
}

/// Reads `sync-wals.info` (`<last_name>\t<last_position>`); `None` when missing or unusable
/// (Barman stops with "Expected 2 arguments, got 1" on an empty file: barsync warns and
/// syncs from the start, which costs nothing but time since no line is listed twice).
pub fn read_sync_wals_info(server: &ServerConfig, events: &dyn Events) -> Option<(String, u64)> {
    let path = sync_wals_info_path(server);
    let text = std::fs::read_to_string(&path).ok()?;
    let parsed = text.split_once('\t').and_then(|(name, position)| {
        let position = position.trim().parse::<u64>().ok()?;
        WalName::parse(name).ok()?;
        Some((name.to_owned(), position))
    });
    if parsed.is_none() {
        events.warning(&format!(
            "{} is malformed ({text:?}); WALs are synced from the start of the primary's list",
            path.display()
        ));
    }
    parsed
}

/// Removes the temporary files a killed WAL sync left in `wals_directory` and its hash
/// directories. Only with the WAL sync lock held: then no other run is writing there, and only
/// barsync's own temporary names are touched (partial transfers are kept: they are a basis).
pub(crate) fn remove_orphaned_temporary_files(
    wals_directory: &std::path::Path,
    events: &dyn Events,
) {
    let Ok(top) = std::fs::read_dir(wals_directory) else {
        return;
    };
    let mut directories = vec![wals_directory.to_path_buf()];
    directories.extend(
        top.flatten()
            .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
            .map(|entry| entry.path()),
    );
    for directory in directories {
        let Ok(listing) = std::fs::read_dir(&directory) else {
            continue;
        };
        for entry in listing.flatten() {
            let orphan = entry.file_type().is_ok_and(|t| t.is_file())
                && transfer_engine::fs::is_temp_name(&entry.file_name());
            if orphan {
                if let Err(error) = std::fs::remove_file(entry.path()) {
                    events.warning(&format!(
                        "cannot remove the temporary file {}: {error}",
                        entry.path().display()
                    ));
                }
            }
        }
    }
}

/// The primary's WAL segment size: the largest valid `xlog_segment_size` of its backups, else
/// PostgreSQL's largest (1 GiB). It bounds the size a WAL may be declared with.
pub(crate) fn segment_size(primary: &PrimaryInfo) -> u64 {
    primary
        .backups
        .iter()
        .filter_map(|(_, entry)| match entry.get("xlog_segment_size") {
            Some(crate::python::json::Json::Int(size)) if crate::wal::is_segment_size(*size) => {
                Some(*size as u64)
            }
            _ => None,
        })
        .max()
        .unwrap_or(crate::wal::MAX_SEGMENT_SIZE)
}

/// Runs sync-wals from the saved `primary.info`, under Barman's WAL sync lock (waiting for a
/// running WAL sync as Barman does).
pub fn sync_wals(passive: &PassiveServer<'_>) -> Result<WalsOutcome, PassiveError> {
    let server = passive.config();
    let _lock = lock::acquire(
        &server.lock_directory(),
        server.name(),
        &LockKind::SyncWal,
        true,
    )?;
    let primary = load_primary_info(server)?;
    sync_wals_locked(passive, &primary)
}

/// What a WAL sync copies: the primary's WALs after the last one synced, or why nothing.
pub(crate) enum WalSelection<'a> {
    /// Nothing to copy: Barman's message, and whether it is a warning.
    Skip { message: String, warning: bool },
    /// Each WAL with its path below the wals directory, in the primary's order, once each.
    Copy(Vec<(&'a WalEntry, String)>),
}

/// The WALs of `primary` a sync copies, given the oldest backup this node has (or will have:
/// a dry run counts the backups it would copy first). One rule for `sync-wals` and its dry run.
pub(crate) fn select_wals<'a>(
    server: &ServerConfig,
    primary: &'a PrimaryInfo,
    oldest_backup: Option<&crate::backup_info::BackupInfo>,
    events: &dyn Events,
) -> Result<WalSelection<'a>, PassiveError> {
    let last = read_sync_wals_info(server, events);
    let wals = PrimaryWals {
        compression: primary.config.compression.as_deref(),
        segment_size: segment_size(primary),
        wals: &primary.wals,
        require_segment: true,
    };
    select_from(
        server,
        &wals,
        oldest_backup,
        last.as_ref().map(|(name, _)| name.as_str()),
    )
}

/// What the WAL rules look at on the primary's side: its compression, its WAL segment size
/// and the WALs it lists (in its xlog db's order): from its sync-info answer (`sync-wals`,
/// `cron`), or from the lines `follow` read in its xlog db.
pub(crate) struct PrimaryWals<'a> {
    pub compression: Option<&'a str>,
    pub segment_size: u64,
    pub wals: &'a [WalEntry],
    /// Barman's rule for a whole list: without a WAL segment in it, nothing is copied. `follow`
    /// reads the list a few lines at a time, and a batch of only a `.backup` or `.history`
    /// file is still copied (once a local backup exists).
    pub require_segment: bool,
}

/// Barman's rules for which of `primary.wals` a WAL sync copies, after `last` (the last WAL
/// name synced, from `sync-wals.info`): the compression must match; a local backup must cover
/// the first WAL; each name must follow the WAL grammar and its size fit the segment size; a
/// name listed twice is copied once. The one copy of these rules: `sync-wals`, `cron`, their
/// dry run and `follow` all go through it.
pub(crate) fn select_from<'a>(
    server: &ServerConfig,
    primary: &PrimaryWals<'a>,
    oldest_backup: Option<&crate::backup_info::BackupInfo>,
    last: Option<&str>,
) -> Result<WalSelection<'a>, PassiveError> {
    let name = server.name();
    let failed = |reason: String| {
        PassiveError::Sync(format!(
            "WAL synchronisation for server {name} failed with: {reason}"
        ))
    };
    let local_compression = server.compression();
    if primary.compression != local_compression {
        return Err(failed(format!(
            "Compression method on server {name} ({}) does not match local compression method ({})",
            primary.compression.unwrap_or("None"),
            local_compression.unwrap_or("None")
        )));
    }
    let skip = |message: String, warning: bool| Ok(WalSelection::Skip { message, warning });
    let first_remote = primary
        .wals
        .iter()
        .find(|wal| matches!(WalName::parse(&wal.name), Ok(w) if w.is_segment()));
    if first_remote.is_none() && (primary.require_segment || primary.wals.is_empty()) {
        return skip(
            format!("No WAL synchronisation required for server {name}"),
            false,
        );
    }
    let Some(first_backup) = oldest_backup else {
        return skip(format!("No base backup for server {name}"), true);
    };
    if let Some(first_remote) = first_remote.filter(|first| {
        first_backup
            .begin_wal()
            .is_some_and(|wal| wal > first.name.as_str())
    }) {
        return skip(
            format!(
                "Skipping WAL synchronisation for server {name}: no available local backup for {}",
                first_remote.name
            ),
            true,
        );
    }
    let segment_size = primary.segment_size;
    let size_limit = crate::wal::archived_size_limit(segment_size);
    let mut seen = std::collections::HashSet::new();
    let mut to_copy: Vec<(&WalEntry, String)> = Vec::new();
    for wal in primary.wals {
        if last.is_some_and(|last_name| wal.name.as_str() <= last_name) {
            continue;
        }
        let parsed =
            WalName::parse(&wal.name).map_err(|e| failed(format!("the primary lists {e}")))?;
        if wal.size < 0 || wal.size as u64 > size_limit {
            return Err(failed(format!(
                "the primary lists WAL {} with size {}, more than a WAL file of \
                 xlog_segment_size {segment_size} can be ({size_limit} bytes with room for \
                 compression or encryption)",
                wal.name, wal.size
            )));
        }
        if seen.insert(wal.name.as_str()) {
            let relative = parsed.relative_path(&wal.name);
            to_copy.push((wal, relative.to_string_lossy().into_owned()));
        }
    }
    Ok(WalSelection::Copy(to_copy))
}

/// The oldest backup of this node that WALs can follow (WAITING_FOR_WALS or DONE).
pub(crate) fn oldest_local_backup(
    server: &ServerConfig,
) -> Result<Option<crate::backup_info::BackupInfo>, PassiveError> {
    let mut backups = available_backups(server)?;
    backups.sort_by(|a, b| a.info.backup_id().cmp(b.info.backup_id()));
    Ok(backups.into_iter().next().map(|entry| entry.info))
}

/// Writes `sync-wals.info` (`<last_name>\t<last_position>`, the primary's xlog db
/// coordinates) atomically, unless it already names a later WAL: `cron`, `sync-wals` and
/// `follow` may run one after the other with answers of different ages, and the state never
/// moves back (moving back would only cost copies again, never a duplicate line).
pub(crate) fn advance_sync_wals_info(
    server: &ServerConfig,
    last_name: &str,
    last_position: u64,
    events: &dyn Events,
) -> Result<(), PassiveError> {
    if read_sync_wals_info(server, events).is_some_and(|(name, _)| name.as_str() > last_name) {
        return Ok(());
    }
    let state = format!("{last_name}\t{last_position}");
    let state_path = sync_wals_info_path(server);
    crate::fsutil::atomic_write(&state_path, state.as_bytes())
        .map_err(PassiveError::io(&state_path))
}

/// What [`copy_and_list`] did.
#[derive(Debug, Default)]
pub(crate) struct Shipped {
    pub files: u64,
    pub listed: u64,
    pub totals: TransferTotals,
}

/// Copies `to_copy` (each WAL with its path below the wals directory) from the primary through
/// `sessions` (`first`: a session already open, used first), each verified and published in its
/// hash directory, fsyncs the WAL directory, then appends to the xlog db the WALs it does not
/// list yet. The caller holds the WAL sync lock; nothing is listed unless every file is in.
pub(crate) fn copy_and_list(
    passive: &PassiveServer<'_>,
    sessions: &PrimarySessions,
    first: Option<super::primary_sessions::Session>,
    to_copy: &[(&WalEntry, String)],
) -> Result<Shipped, PassiveError> {
    let (server, events) = (passive.config(), passive.events());
    let name = server.name();
    let failed = |reason: String| {
        PassiveError::Sync(format!(
            "WAL synchronisation for server {name} failed with: {reason}"
        ))
    };
    let wals_directory = server.wals_directory();
    std::fs::create_dir_all(&wals_directory).map_err(PassiveError::io(&wals_directory))?;
    // A missing xlog db is created (from what the archive holds) before any file arrives, so
    // the new files are listed once, by the append below (Barman lists them twice).
    drop(LockedXlogDb::open(server)?);
    let mut jobs = Vec::with_capacity(to_copy.len());
    for (wal, relative) in to_copy {
        // Written below the wals directory (trusted, from the configuration) through directory
        // handles, never through a symlink.
        let confined = RelativePath::new(relative)
            .and_then(|relative| Destination::new(&wals_directory, relative))
            .map_err(|e| failed(e.to_string()))?;
        let destination = confined.path();
        make_dirs_below(confined.root(), &confined.parent(), InTheWay::Refuse).map_err(|e| {
            failed(format!(
                "creating the directory of {} (a symlink is never followed): {e}",
                destination.display()
            ))
        })?;
        let partial = partial_path(&destination);
        let (basis, exists) = match local_basis(&destination, &partial) {
            Some((basis, is_destination)) => (Some(basis), is_destination),
            None => (None, false),
        };
        jobs.push(Job {
            request: FetchRequest {
                remote_path: sessions.wal_path(relative).into(),
                destination: confined,
                basis,
                max_len: Some(wal.size as u64),
                partial: Some(partial),
                target: FetchTarget::WholeFile(if exists {
                    WriteMode::LinkIdentical
                } else {
                    WriteMode::NewFile
                }),
            },
            size: wal.size as u64,
        });
    }
    events.plan("WALs", jobs.len() as u64, jobs.iter().map(|j| j.size).sum());
    let report = run_jobs_retrying(sessions, first, &jobs, &passive.pool_settings(), events);
    // A WAL that came in after a cut (from its partial transfer, or again) needs that no more.
    for (job, result) in jobs.iter().zip(&report.results) {
        if result.is_ok() {
            let _ = job.request.remove_partial();
        }
    }
    report.check().map_err(|files| {
        PassiveError::Failed(SyncFailure::from(files).prefixed(&format!(
            "WAL synchronisation for server {name} failed with: "
        )))
    })?;
    crate::fsutil::fsync_directory(&wals_directory).map_err(PassiveError::io(&wals_directory))?;
    let entries: Vec<WalEntry> = to_copy.iter().map(|(wal, _)| (*wal).clone()).collect();
    let listed = LockedXlogDb::open(server)?.append_missing(&entries)?;
    let mut totals = report.totals;
    totals.files = jobs.len() as u64;
    totals.bytes = jobs.iter().map(|j| j.size).sum();
    Ok(Shipped {
        files: jobs.len() as u64,
        listed: listed as u64,
        totals,
    })
}

/// The body of sync-wals, with the WAL sync lock held by the caller.
pub(crate) fn sync_wals_locked(
    passive: &PassiveServer<'_>,
    primary: &PrimaryInfo,
) -> Result<WalsOutcome, PassiveError> {
    let (server, events) = (passive.config(), passive.events());
    remove_orphaned_temporary_files(&server.wals_directory(), events);
    let oldest_backup = oldest_local_backup(server)?;
    let to_copy = match select_wals(server, primary, oldest_backup.as_ref(), events)? {
        WalSelection::Copy(to_copy) => to_copy,
        WalSelection::Skip { message, warning } => {
            if warning {
                events.warning(&message);
            } else {
                events.info(&message);
            }
            return Ok(WalsOutcome {
                skipped: Some(message),
                ..WalsOutcome::default()
            });
        }
    };
    let start = Instant::now();
    let sessions = passive.primary_sessions(primary)?;
    let shipped = copy_and_list(passive, &sessions, None, &to_copy)?;
    advance_sync_wals_info(server, &primary.last_name, primary.last_position, events)?;
    Ok(WalsOutcome {
        files: shipped.files,
        listed: shipped.listed,
        totals: shipped.totals,
        seconds: start.elapsed().as_secs_f64(),
        skipped: None,
    })
}
