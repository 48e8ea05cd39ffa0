//! `sync-backup SERVER BACKUP_ID`: copies one backup of the primary, as Barman's passive does,
//! through the delta engine.
//!
//! The decisions are Barman's (`check_sync_required`, from the saved `primary.info`): a backup
//! absent on the primary is an error, or purged when it is FAILED locally, or kept when it is
//! complete locally; a backup DONE locally is already synced. Otherwise, under Barman's
//! `.<S>-<ID>-sync-backup.lock`, the backup.info is written SYNCING (`mode=passive`), every file
//! is copied and verified, the directories are fsynced, the published tree is walked without
//! following links and checked against the primary's listing ([`super::verify_tree`]: real
//! directories, regular files of the listed sizes, no temporary name left), and only then is it
//! saved DONE (with any earlier error cleared). Any failure saves it FAILED with Barman's error text; the next
//! run resumes from what was published.
//!
//! Incremental backups follow [`incremental`]: one whose parent the primary no longer lists is
//! skipped (Barman's `sync_parent_backup_info`), and once its backup.info is written its local
//! parent's `children_backup_ids` is brought in line; a backup's own list is computed from
//! this node's catalog each time it is saved.

use std::path::{Path, PathBuf};
use std::time::Instant;

use transfer_engine::confine::{
    is_not_followed, make_dirs_below, open_below, Destination, InTheWay, RelativePath,
};
use transfer_engine::fetch::{run_jobs_retrying, FetchSession, SessionSource};
use transfer_engine::fs::remove_at;

use super::backup_plan::{plan_backup, BackupPlan};
use super::incremental;
use super::retention::{self, Candidate};
use super::verify_tree::verify_tree;
use super::{
    create_real_directory, Events, PassiveError, PassiveServer, SyncFailure, TransferTotals,
};
use crate::backup_info::{BackupInfo, BackupStatus};
use crate::catalog::{load_backups, CatalogEntry};
use crate::config::{ReuseBackup, ServerConfig};
use crate::lock::{self, LockError, LockKind};
use crate::syncinfo::{load_primary_info, PrimaryInfo};
use crate::wal::BackupId;

/// What sync-backup did.
#[derive(Debug)]
pub enum BackupOutcome {
    /// The backup was copied and is DONE.
    Synced {
        backup_id: String,
        totals: TransferTotals,
        seconds: f64,
    },
    /// Nothing to do; Barman's message says why.
    NothingToDo(String),
    /// A local FAILED backup the primary no longer has was deleted.
    Purged(String),
}

/// Runs sync-backup for `requested` (an ID or a shortcut: latest, last, oldest, first,
/// last-failed) from the saved `primary.info`.
pub fn sync_backup(
    passive: &PassiveServer<'_>,
    requested: &str,
) -> Result<BackupOutcome, PassiveError> {
    let primary = load_primary_info(passive.config())?;
    sync_backup_with(passive, &primary, requested)
}

/// [`sync_backup`] with the primary's sync-info already loaded (cron).
pub fn sync_backup_with(
    passive: &PassiveServer<'_>,
    primary: &PrimaryInfo,
    requested: &str,
) -> Result<BackupOutcome, PassiveError> {
    let (server, events) = (passive.config(), passive.events());
    let local = load_backups(server)?;
    let id = resolve_backup_id(requested, primary, &local)?;
    let local_entry = local.iter().find(|e| e.info.backup_id() == id);
    let on_primary = primary.backup_ids().any(|b| b == id);
    let name = server.name();
    if let Some(entry) = local_entry {
        if let Some(message) = purge_reason(server, primary, entry) {
            events.warning(&message);
            delete_backup(server, entry, events)?;
            return Ok(BackupOutcome::Purged(message));
        }
    }
    match (on_primary, local_entry) {
        (false, None) => {
            return Err(PassiveError::Sync(format!(
                "Backup {id} is absent on {name} server"
            )))
        }
        (false, Some(_)) => {
            return Ok(BackupOutcome::NothingToDo(format!(
                "Backup {id} is absent on {name} server, but present locally (local copy only)"
            )))
        }
        (true, Some(entry)) if entry.info.status()? == BackupStatus::Done => {
            return Ok(BackupOutcome::NothingToDo(format!(
                "Backup {id} is already synced with {name} server"
            )))
        }
        (true, _) => {}
    }
    if let Some(skip) = skipped_on_purpose(server, primary, &local, &id)? {
        return Ok(BackupOutcome::NothingToDo(skip.message));
    }
    let (remote_info, _) = primary
        .backup(name, &id)
        .map_err(crate::syncinfo::SyncInfoError::from)?
        .expect("the backup is listed by the primary");
    let meta = server.meta_directory();
    let _lock = lock::acquire(
        &server.lock_directory(),
        name,
        &LockKind::SyncBackup(&id),
        false,
    )
    .map_err(|error| match error {
        LockError::Busy(_) => PassiveError::Busy(format!(
            "Another synchronisation process for backup {id} of server {name} is already running."
        )),
        other => other.into(),
    })?;
    let mut info = remote_info;
    info.set_text("server_name", Some(name));
    info.set_text("mode", Some("passive"));
    info.set_text("error", None);
    info.set_status(BackupStatus::Syncing);
    incremental::set_expected_children(&mut info, &local, primary);
    std::fs::create_dir_all(&meta).map_err(PassiveError::io(&meta))?;
    info.save(&meta)?;
    events.info(&format!("Starting copy of backup {id} for server {name}"));
    let start = Instant::now();
    let copied = incremental::refresh_parent_of(server, primary, &info, events)
        .map_err(|e| SyncFailure::from(e.to_string()))
        .and_then(|()| copy_backup(passive, primary, &info, &local));
    // Children synced by another process during the copy are listed too.
    match load_backups(server) {
        Ok(catalog) => incremental::set_expected_children(&mut info, &catalog, primary),
        Err(error) => events.warning(&format!(
            "children_backup_ids of backup {id} of server {name} left as before the copy: {error}"
        )),
    }
    match copied {
        Ok(totals) => {
            info.set_status(BackupStatus::Done);
            info.set_text("error", None);
            info.save(&meta)?;
            Ok(BackupOutcome::Synced {
                backup_id: id,
                totals,
                seconds: start.elapsed().as_secs_f64(),
            })
        }
        Err(reason) => {
            let error = reason.prefixed(&format!("failure syncing server {name} backup {id}: "));
            info.set_status(BackupStatus::Failed);
            info.set_text("error", Some(&error.message));
            info.save(&meta)?;
            Err(PassiveError::Failed(error))
        }
    }
}

/// Barman's rule for a local backup the primary no longer lists: when it is FAILED here (an
/// incomplete copy that can never be finished) it is purged, with Barman's warning (`Some`).
/// The one place the rule is decided: `cron`, `sync-backup` and their dry runs ask here.
pub fn purge_reason(
    server: &ServerConfig,
    primary: &PrimaryInfo,
    entry: &CatalogEntry,
) -> Option<String> {
    let id = entry.info.backup_id();
    (entry.info.raw("status") == Some("FAILED") && !primary.backup_ids().any(|b| b == id)).then(
        || {
            format!(
                "Backup {id} is absent on {} server and is incomplete locally, purging local backup",
                server.name()
            )
        },
    )
}

/// The backup ID a request names: an ID, or a shortcut resolved against the primary's list
/// (`last-failed` against the local FAILED backups, the only place those exist).
pub(crate) fn resolve_backup_id(
    requested: &str,
    primary: &PrimaryInfo,
    local: &[CatalogEntry],
) -> Result<String, PassiveError> {
    let mut remote: Vec<&str> = primary.backup_ids().collect();
    remote.sort_unstable();
    let resolved = match requested {
        "latest" | "last" => remote.last().map(|s| s.to_string()),
        "oldest" | "first" => remote.first().map(|s| s.to_string()),
        "last-failed" => local
            .iter()
            .filter(|e| e.info.raw("status") == Some("FAILED"))
            .map(|e| e.info.backup_id().to_owned())
            .max(),
        other => Some(other.to_owned()),
    };
    let resolved = resolved.ok_or_else(|| {
        PassiveError::Sync(format!("No backup matches '{requested}' on the primary"))
    })?;
    BackupId::parse(&resolved).map_err(|e| PassiveError::Sync(e.to_string()))?;
    Ok(resolved)
}

/// Copies the files of the backup `info` describes; the reason of a failure.
fn copy_backup(
    passive: &PassiveServer<'_>,
    primary: &PrimaryInfo,
    info: &BackupInfo,
    local: &[CatalogEntry],
) -> Result<TransferTotals, SyncFailure> {
    let (server, events) = (passive.config(), passive.events());
    let id = info.backup_id();
    let sessions = passive
        .primary_sessions(primary)
        .map_err(|e| e.to_string())?;
    let remote_directory = sessions.backup_path(id);
    let mut session = match sessions.reuse() {
        Some(session) => session,
        None => sessions.open(events).map_err(|e| e.to_string())?,
    };
    let listing = match session.source().list(Path::new(&remote_directory), true) {
        Ok(Ok(listing)) => listing,
        Ok(Err(message)) => return Err(format!("listing {remote_directory}: {message}").into()),
        Err(error) => return Err(format!("{}: {error}", session.peer()).into()),
    };
    let oids: Vec<u32> = info
        .tablespaces()
        .map_err(|e| e.to_string())?
        .iter()
        .map(|t| t.oid)
        .collect();
    let base = server.basebackups_directory();
    let reference = reference_backup(&base, id, local);
    let plan = plan_backup(
        &listing,
        &remote_directory,
        &base,
        id,
        &oids,
        reference.as_deref(),
        server.reuse_backup() == ReuseBackup::Link,
    )?;
    prepare_destination(&base, id, &plan)?;
    events.plan(id, plan.jobs.len() as u64, plan.bytes);
    let report = run_jobs_retrying(
        &sessions,
        Some(session),
        &plan.jobs,
        &passive.pool_settings(),
        events,
    );
    report.check()?;
    finish_destination(&base, id, &plan)?;
    // Last, the tree as published, never through a link: what DONE promises.
    verify_tree(&base.join(id), &plan.expected)
        .map_err(|mismatch| format!("the copy does not match the primary's listing: {mismatch}"))?;
    let mut totals = report.totals;
    totals.files = plan.jobs.len() as u64;
    totals.bytes = plan.bytes;
    Ok(totals)
}

/// The primary's backups above the incremental `info` that this node does not have, nearest
/// first (for the retention check: a child goes with its root).
/// Why the passive leaves one of the primary's backups alone on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// An incremental backup whose parent the primary no longer has.
    ParentAbsent,
    /// Local retention would call it OBSOLETE once copied (Barman's check before a copy).
    Obsolete,
}

/// A backup of the primary that is not copied, and Barman's message saying why.
#[derive(Debug, Clone)]
pub struct Skip {
    pub reason: SkipReason,
    pub message: String,
}

/// Whether the primary's backup `id` is left alone on purpose (the checks Barman makes before
/// a copy, `SyncNothingToDo`), given the local catalog `local`. `None`: it is to be copied.
/// One rule for `sync-backup`, `cron` and `list-backups`.
pub fn skipped_on_purpose(
    server: &ServerConfig,
    primary: &PrimaryInfo,
    local: &[CatalogEntry],
    id: &str,
) -> Result<Option<Skip>, PassiveError> {
    let name = server.name();
    if let Some(message) = incremental::missing_parent(name, primary, id) {
        return Ok(Some(Skip {
            reason: SkipReason::ParentAbsent,
            message,
        }));
    }
    let Some((remote_info, _)) = primary
        .backup(name, id)
        .map_err(crate::syncinfo::SyncInfoError::from)?
    else {
        return Ok(None);
    };
    let meta = server.meta_directory();
    let candidates: Vec<Candidate> = local
        .iter()
        .map(|e| Candidate::from_info(&e.info, &meta))
        .collect();
    let remote_ancestors = remote_ancestors(primary, name, &remote_info, &candidates, &meta)?;
    let obsolete = retention::remote_is_obsolete(
        server,
        &candidates,
        Candidate::from_info(&remote_info, &meta),
        &remote_ancestors,
    );
    Ok(obsolete.then(|| Skip {
        reason: SkipReason::Obsolete,
        message: format!("Remote backup {name}/{id} is obsolete for local retention policies."),
    }))
}

fn remote_ancestors(
    primary: &PrimaryInfo,
    name: &str,
    info: &BackupInfo,
    local: &[Candidate],
    meta: &Path,
) -> Result<Vec<Candidate>, PassiveError> {
    let mut ancestors: Vec<Candidate> = Vec::new();
    let mut parent = info.parent_backup_id().map(str::to_owned);
    while let Some(id) = parent.take() {
        if local.iter().chain(&ancestors).any(|c| c.id == id) {
            break;
        }
        let Some((parent_info, _)) = primary
            .backup(name, &id)
            .map_err(crate::syncinfo::SyncInfoError::from)?
        else {
            break;
        };
        let candidate = Candidate::from_info(&parent_info, meta);
        parent = candidate.parent.clone();
        ancestors.push(candidate);
    }
    Ok(ancestors)
}

/// The local backup whose files are the best basis: the nearest older DONE backup with a
/// directory, else the nearest newer one.
fn reference_backup(base: &Path, id: &str, local: &[CatalogEntry]) -> Option<PathBuf> {
    let mut done: Vec<&str> = local
        .iter()
        .filter(|e| e.info.raw("status") == Some("DONE"))
        .map(|e| e.info.backup_id())
        .filter(|other| *other != id && base.join(other).is_dir())
        .collect();
    done.sort_unstable();
    let older = done.iter().rev().find(|other| **other < id);
    let newer = done.iter().find(|other| **other > id);
    older.or(newer).map(|other| base.join(other))
}

/// An error about `path`, saying so when a symlink (or a file) stood where a directory
/// belongs: nothing is done through it.
fn io_message(action: &str, path: &Path, error: std::io::Error) -> String {
    if is_not_followed(&error) {
        format!(
            "{action} {}: a symlink or file stands where a directory belongs \
             (a symlink is never followed): {error}",
            path.display()
        )
    } else {
        format!("{action} {}: {error}", path.display())
    }
}

/// `id/relative`, as a path below the base backups directory.
fn below_backup(id: &str, relative: &Path) -> Result<RelativePath, String> {
    RelativePath::new(id)
        .and_then(|backup| backup.join_path(&RelativePath::from_path(relative)?))
        .map_err(|e| e.to_string())
}

/// Removes what the primary does not have, creates the directories. Everything below `base`
/// (the server's base backups directory) is reached one component at a time without
/// following symlinks: a link planted on the passive, or swapped in during the sync, does not
/// redirect the copy, and nothing is removed or created through it.
fn prepare_destination(base: &Path, id: &str, plan: &BackupPlan) -> Result<(), String> {
    create_real_directory(base)?;
    let make = |relative: &RelativePath| {
        make_dirs_below(base, relative, InTheWay::Refuse)
            .map(drop)
            .map_err(|e| io_message("creating", &base.join(relative.as_path()), e))
    };
    make(&below_backup(id, Path::new(""))?)?;
    for stale in &plan.stale {
        let relative = below_backup(id, stale)?;
        let path = base.join(relative.as_path());
        let stale = Destination::new(base, relative).map_err(|e| e.to_string())?;
        let removed = stale
            .open_parent()
            .and_then(|dir| remove_at(&dir, stale.file_name()));
        match removed {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_message("removing", &path, e)),
        }
    }
    for (relative, _) in &plan.directories {
        make(&below_backup(id, relative.as_path())?)?;
    }
    Ok(())
}

/// After every file is in place: directory modes as on the primary (never setuid or setgid,
/// as files: see [`PrimarySessions`]), partial transfers removed, and every directory fsynced (so
/// the tree survives a crash once DONE is written); each directory reached from `base` without
/// following symlinks, as in [`prepare_destination`].
fn finish_destination(base: &Path, id: &str, plan: &BackupPlan) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    for job in &plan.jobs {
        let _ = job.request.remove_partial();
    }
    let open = |relative: &Path| -> Result<std::fs::File, String> {
        let relative = below_backup(id, relative)?;
        open_below(base, &relative, true)
            .map(std::fs::File::from)
            .map_err(|e| io_message("opening", &base.join(relative.as_path()), e))
    };
    let mut directories = vec![(base.join(id), open(Path::new(""))?)];
    for (relative, mode) in plan.directories.iter().rev() {
        let path = base.join(id).join(relative.as_path());
        let directory = open(relative.as_path())?;
        directory
            .set_permissions(std::fs::Permissions::from_mode(mode & 0o1777 | 0o700))
            .map_err(|e| format!("setting the mode of {}: {e}", path.display()))?;
        directories.push((path, directory));
    }
    for (path, directory) in directories {
        directory
            .sync_all()
            .map_err(|e| format!("fsync of {}: {e}", path.display()))?;
    }
    crate::fsutil::fsync_directory(base).map_err(|e| format!("fsync of {}: {e}", base.display()))
}

/// Deletes a local backup (its files and its backup.info), as `barman delete` does for a
/// backup that has no WALs of its own to release (a FAILED one).
pub(crate) fn delete_backup(
    server: &ServerConfig,
    entry: &CatalogEntry,
    events: &dyn Events,
) -> Result<(), PassiveError> {
    let id = entry.info.backup_id();
    events.info(&format!(
        "Deleting backup {id} for server {}",
        server.name()
    ));
    let directory = server.basebackups_directory().join(id);
    if directory.symlink_metadata().is_ok() {
        std::fs::remove_dir_all(&directory).map_err(PassiveError::io(&directory))?;
    }
    let meta = server.meta_directory().join(format!("{id}-backup.info"));
    if meta.exists() {
        std::fs::remove_file(&meta).map_err(PassiveError::io(&meta))?;
    }
    for directory in [server.basebackups_directory(), server.meta_directory()] {
        let _ = crate::fsutil::fsync_directory(&directory);
    }
    events.info(&format!("Deleted backup {id}"));
    // As Barman's delete: the parent no longer lists it.
    if let Some(parent) = entry.info.parent_backup_id() {
        let refresh = incremental::refresh_parent(server, None, parent)?;
        incremental::report(server.name(), parent, &refresh, events);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use transfer_engine::protocol::FetchRequest;

    use super::*;
    use transfer_engine::fetch::Job;

    /// `base/ID/data` is a symlink to `outside` (a directory swapped during the sync), which
    /// holds a file and is mode 0755.
    fn swapped() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(base.join("ID")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(outside.join("old"), b"keep").unwrap();
        std::fs::write(outside.join(".f.barsync-partial"), b"keep").unwrap();
        std::os::unix::fs::symlink(&outside, base.join("ID/data")).unwrap();
        (dir, base, outside)
    }

    fn plan(base: &Path) -> BackupPlan {
        let relative = |path: &str| RelativePath::new(path).unwrap();
        let destination = Destination::new(base, relative("ID/data/f")).unwrap();
        BackupPlan {
            directories: vec![(relative("data"), 0o700), (relative("data/sub"), 0o700)],
            jobs: vec![Job {
                request: FetchRequest {
                    remote_path: "/p/base/ID/data/f".into(),
                    basis: None,
                    max_len: Some(1),
                    partial: Some(base.join("ID/data/.f.barsync-partial")),
                    target: transfer_engine::protocol::FetchTarget::NEW_FILE,
                    destination,
                },
                size: 1,
            }],
            stale: vec![PathBuf::from("data/old")],
            bytes: 1,
            expected: Default::default(),
        }
    }

    #[test]
    fn preparing_never_removes_or_creates_through_a_swapped_directory() {
        let (_dir, base, outside) = swapped();
        let error = prepare_destination(&base, "ID", &plan(&base)).unwrap_err();
        assert!(error.contains("a symlink is never followed"), "{error}");
        assert!(outside.join("old").exists(), "removed through the link");
        assert!(!outside.join("sub").exists(), "created through the link");
    }

    #[test]
    fn finishing_never_changes_modes_or_removes_through_a_swapped_directory() {
        let (_dir, base, outside) = swapped();
        let mut plan = plan(&base);
        plan.directories.truncate(1);
        let error = finish_destination(&base, "ID", &plan).unwrap_err();
        assert!(error.contains("data"), "{error}");
        let mode = std::fs::metadata(&outside).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o755, "mode changed through the link");
        assert!(
            outside.join(".f.barsync-partial").exists(),
            "removed through the link"
        );
    }
}
