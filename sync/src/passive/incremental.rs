//! PostgreSQL 17 block-level incremental chains on the passive node: it owns each local
//! parent's `children_backup_ids`, so that real Barman on this node (`list-backups`,
//! `show-backup`, `delete`, retention) walks the same backup tree as on the primary.
//!
//! Barman 3.20.1 (`Server.sync_parent_backup_info`, PR #1159, issues #1115 and #1167): before
//! a backup that has a `parent_backup_id` is synced, a parent the primary no longer lists means
//! the backup is skipped, and a parent present locally gets the primary's
//! `children_backup_ids`, under the parent's `.<S>-<ID>.lock`. barsync takes the same skip and
//! the same lock, and differs in two ways:
//! - The list written is the primary's list restricted to the backups this node has (any
//!   status: what Barman's `get_backup` finds), followed by the local backups naming that
//!   parent which the primary no longer lists (local copies kept after a delete there), by ID.
//!   Barman's `delete` fails on both other shapes: a listed child with no backup.info
//!   (`Could not find backup_id`, leaving a `-delete_this` marker behind) and a child missing
//!   from its parent's list (`'NoneType' object has no attribute 'remove'`). Once everything is
//!   synced, the list is exactly the primary's. It is written after the child's own backup.info
//!   (SYNCING) exists, so the child being copied is listed.
//! - Every cron run brings every local backup's list in line, not only when a new child is
//!   synced (Barman leaves an already-synced parent stale otherwise). A backup whose copy is
//!   running (its `-sync-backup` lock is held) is left to that copy, which computes its own list
//!   the same way when it writes its backup.info.
//!
//! Only a list that differs is written, atomically through [`BackupInfo::save`].

use crate::backup_info::{BackupInfo, BackupInfoError};
use crate::catalog::{load_backups, CatalogEntry};
use crate::config::ServerConfig;
use crate::lock::{self, LockError, LockKind};
use crate::python::json::Json;
use crate::syncinfo::PrimaryInfo;

use super::{Events, PassiveError};

/// What bringing one parent's `children_backup_ids` in line did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refresh {
    /// The list was already right; nothing was written.
    Unchanged,
    /// backup.info was rewritten with these children.
    Updated(Vec<String>),
    /// Another process holds one of the backup's locks; the message says which. The next cron
    /// run tries again.
    Busy(String),
    /// The backup has no backup.info on this node (any more).
    Absent,
}

/// Failures while keeping a chain right.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("cannot read the catalog of server {server}: {source}")]
    Catalog {
        server: String,
        source: BackupInfoError,
    },
    #[error("Unable to lock backup {parent} of server {server}: {source}")]
    Lock {
        server: String,
        parent: String,
        source: LockError,
    },
    /// Barman's `SyncError` text for the same failure.
    #[error("Unable to write {parent} backup.info file for server {server}: {source}")]
    Write {
        server: String,
        parent: String,
        source: BackupInfoError,
    },
}

impl From<ChainError> for PassiveError {
    fn from(error: ChainError) -> PassiveError {
        match error {
            ChainError::Catalog { source, .. } => PassiveError::BackupInfo(source),
            ChainError::Lock { source, .. } => PassiveError::Lock(source),
            write @ ChainError::Write { .. } => PassiveError::Sync(write.to_string()),
        }
    }
}

/// The primary's sync-info entry of backup `id`.
fn primary_entry<'a>(primary: &'a PrimaryInfo, id: &str) -> Option<&'a Json> {
    primary
        .backups
        .iter()
        .find(|(backup_id, _)| backup_id == id)
        .map(|(_, entry)| entry)
}

/// The primary's `parent_backup_id` of backup `id` (none when null, absent or not a string).
pub fn primary_parent<'a>(primary: &'a PrimaryInfo, id: &str) -> Option<&'a str> {
    match primary_entry(primary, id)?.get("parent_backup_id") {
        Some(Json::Str(parent)) if !parent.is_empty() => Some(parent),
        _ => None,
    }
}

/// The primary's `children_backup_ids` of backup `id`, split as Barman's `load_backup_ids`
/// does (empty when null, absent or not a string).
pub fn primary_children<'a>(primary: &'a PrimaryInfo, id: &str) -> Vec<&'a str> {
    match primary_entry(primary, id).and_then(|entry| entry.get("children_backup_ids")) {
        Some(Json::Str(text)) => text.split(',').filter(|s| !s.is_empty()).collect(),
        _ => Vec::new(),
    }
}

/// Barman's check before an incremental backup is synced: the message saying why backup `id`
/// is skipped when the primary lists it with a parent the primary no longer has.
pub fn missing_parent(server: &str, primary: &PrimaryInfo, id: &str) -> Option<String> {
    let parent = primary_parent(primary, id)?;
    if primary.backup_ids().any(|b| b == parent) {
        return None;
    }
    Some(format!(
        "Parent backup {parent} of incremental backup {id} is absent on {server} server; \
         skipping sync of this incremental"
    ))
}

/// The `children_backup_ids` backup `parent` should have on this node: the local backups whose
/// `parent_backup_id` is `parent`, in the order of `order` (the primary's list), then by ID.
pub fn expected_children(catalog: &[CatalogEntry], parent: &str, order: &[&str]) -> Vec<String> {
    let mut children: Vec<&str> = catalog
        .iter()
        .filter(|e| e.info.parent_backup_id() == Some(parent) && e.info.backup_id() != parent)
        .map(|e| e.info.backup_id())
        .collect();
    children.sort_unstable();
    children.dedup();
    let mut expected: Vec<String> = Vec::with_capacity(children.len());
    for id in order {
        if children.contains(id) && !expected.iter().any(|e| e == id) {
            expected.push((*id).to_owned());
        }
    }
    for id in children {
        if !expected.iter().any(|e| e == id) {
            expected.push(id.to_owned());
        }
    }
    expected
}

/// The order the children of `info` follow: the primary's list when the primary lists the
/// backup, else the one on this node.
fn reference_order<'a>(primary: Option<&'a PrimaryInfo>, info: &'a BackupInfo) -> Vec<&'a str> {
    match primary {
        Some(primary) if primary.backup_ids().any(|b| b == info.backup_id()) => {
            primary_children(primary, info.backup_id())
        }
        _ => info.children_backup_ids(),
    }
}

/// Whether `info` already holds `expected`.
fn holds(info: &BackupInfo, expected: &[String]) -> bool {
    info.children_backup_ids().iter().eq(expected.iter())
}

/// Sets the `children_backup_ids` of `info` (a backup about to be written by its own copy)
/// from `catalog` and the primary's list.
pub fn set_expected_children(
    info: &mut BackupInfo,
    catalog: &[CatalogEntry],
    primary: &PrimaryInfo,
) {
    let order = primary_children(primary, info.backup_id());
    let expected = expected_children(catalog, info.backup_id(), &order);
    let refs: Vec<&str> = expected.iter().map(String::as_str).collect();
    info.set_children_backup_ids(&refs);
}

/// Brings the `children_backup_ids` of local backup `parent` in line with
/// [`expected_children`], under its `.<S>-<ID>.lock` (as Barman) and its `-sync-backup` lock
/// (a copy of it in progress would overwrite the change). The catalog is read once both are
/// held, so a parent deleted meanwhile is not brought back.
pub fn refresh_parent(
    server: &ServerConfig,
    primary: Option<&PrimaryInfo>,
    parent: &str,
) -> Result<Refresh, ChainError> {
    // Not a backup ID: no backup.info can hold it, and it must not name a lock file.
    if crate::wal::BackupId::parse(parent).is_err() {
        return Ok(Refresh::Absent);
    }
    let name = server.name();
    let lock_directory = server.lock_directory();
    let lock_error = |source: LockError| ChainError::Lock {
        server: name.to_owned(),
        parent: parent.to_owned(),
        source,
    };
    let _backup_lock = match lock::acquire(&lock_directory, name, &LockKind::Backup(parent), false)
    {
        Ok(guard) => guard,
        Err(LockError::Busy(_)) => {
            return Ok(Refresh::Busy(format!(
                "Backup {parent} is locked on server {name}; skipping parent backup.info refresh"
            )))
        }
        Err(error) => return Err(lock_error(error)),
    };
    let _sync_lock =
        match lock::acquire(&lock_directory, name, &LockKind::SyncBackup(parent), false) {
            Ok(guard) => guard,
            Err(LockError::Busy(_)) => {
                return Ok(Refresh::Busy(format!(
                    "Backup {parent} of server {name} is being synchronised; \
                     its copy writes its children_backup_ids"
                )))
            }
            Err(error) => return Err(lock_error(error)),
        };
    let catalog = load_backups(server).map_err(|source| ChainError::Catalog {
        server: name.to_owned(),
        source,
    })?;
    let Some(entry) = catalog.iter().find(|e| e.info.backup_id() == parent) else {
        return Ok(Refresh::Absent);
    };
    let order = reference_order(primary, &entry.info);
    let expected = expected_children(&catalog, parent, &order);
    if holds(&entry.info, &expected) {
        return Ok(Refresh::Unchanged);
    }
    let mut info = entry.info.clone();
    let refs: Vec<&str> = expected.iter().map(String::as_str).collect();
    info.set_children_backup_ids(&refs);
    let write_error = |source: BackupInfoError| ChainError::Write {
        server: name.to_owned(),
        parent: parent.to_owned(),
        source,
    };
    let meta = server.meta_directory();
    std::fs::create_dir_all(&meta).map_err(|source| {
        write_error(BackupInfoError::Io {
            path: meta.clone(),
            source,
        })
    })?;
    info.save(&meta).map_err(write_error)?;
    Ok(Refresh::Updated(expected))
}

/// A backup ID with what refreshing its list did.
pub type ParentRefresh = (String, Result<Refresh, ChainError>);

/// cron, once per run: [`refresh_parent`] for every local backup whose list differs from the
/// expected one. Each result is returned; a failure of one does not stop the others.
pub fn refresh_all(
    server: &ServerConfig,
    primary: &PrimaryInfo,
) -> Result<Vec<ParentRefresh>, ChainError> {
    let catalog = load_backups(server).map_err(|source| ChainError::Catalog {
        server: server.name().to_owned(),
        source,
    })?;
    let mut results = Vec::new();
    for entry in &catalog {
        let id = entry.info.backup_id();
        let order = reference_order(Some(primary), &entry.info);
        if holds(&entry.info, &expected_children(&catalog, id, &order)) {
            continue;
        }
        results.push((id.to_owned(), refresh_parent(server, Some(primary), id)));
    }
    Ok(results)
}

/// Tells `events` what a refresh of `parent` did (nothing when nothing changed).
pub fn report(server: &str, parent: &str, refresh: &Refresh, events: &dyn Events) {
    match refresh {
        Refresh::Updated(children) => events.info(&format!(
            "Synchronised children_backup_ids of backup {parent} of server {server}: {}",
            if children.is_empty() {
                "None".to_owned()
            } else {
                children.join(",")
            }
        )),
        Refresh::Busy(message) => events.info(message),
        Refresh::Unchanged | Refresh::Absent => {}
    }
}

/// sync-backup, once the backup.info of `child` is on disk: refreshes its parent's list, when
/// it has a parent on this node.
pub fn refresh_parent_of(
    server: &ServerConfig,
    primary: &PrimaryInfo,
    child: &BackupInfo,
    events: &dyn Events,
) -> Result<(), ChainError> {
    if let Some(parent) = child.parent_backup_id() {
        let refresh = refresh_parent(server, Some(primary), parent)?;
        report(server.name(), parent, &refresh, events);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    const B1: &str = "20240101T120000";
    const B2: &str = "20240102T120000";
    const B3: &str = "20240103T120000";

    fn server(home: &Path) -> ServerConfig {
        let path = home.join("barman.conf");
        std::fs::write(
            &path,
            format!(
                "[barman]\nbarman_home = {}\n\n[pg]\nprimary_ssh_command = ssh primary\n",
                home.display()
            ),
        )
        .unwrap();
        Config::load(Some(&path))
            .unwrap()
            .server("pg")
            .unwrap()
            .unwrap()
    }

    fn write_backup(server: &ServerConfig, id: &str, parent: Option<&str>, children: &[&str]) {
        let mut info = BackupInfo::new(id);
        info.set_text("mode", Some("passive"));
        info.set_raw("status", "DONE");
        info.set_text("parent_backup_id", parent);
        info.set_children_backup_ids(children);
        let meta = server.meta_directory();
        std::fs::create_dir_all(&meta).unwrap();
        info.save(&meta).unwrap();
    }

    fn children_on_disk(server: &ServerConfig, id: &str) -> String {
        let text =
            std::fs::read_to_string(server.meta_directory().join(format!("{id}-backup.info")))
                .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("children_backup_ids="))
            .unwrap()
            .to_owned()
    }

    /// A primary listing `backups` as (id, parent, children).
    fn primary(backups: &[(&str, Option<&str>, Option<&str>)]) -> PrimaryInfo {
        let quoted = |v: Option<&str>| v.map_or("null".to_owned(), |v| format!("\"{v}\""));
        let entries: Vec<String> = backups
            .iter()
            .map(|(id, parent, children)| {
                format!(
                    "\"{id}\": {{\"backup_id\": \"{id}\", \"status\": \"DONE\", \
                     \"parent_backup_id\": {}, \"children_backup_ids\": {}}}",
                    quoted(*parent),
                    quoted(*children)
                )
            })
            .collect();
        let text = format!(
            "{{\"last_position\": 0, \"last_name\": \"\", \"backups\": {{{}}}, \"wals\": [], \
             \"config\": {{\"name\": \"pg\", \"basebackups_directory\": \"/p/base\", \
             \"wals_directory\": \"/p/wals\", \"compression\": null}}}}",
            entries.join(", ")
        );
        PrimaryInfo::parse("pg", &text).unwrap()
    }

    #[test]
    fn the_primary_chain_is_read_from_its_sync_info() {
        let primary = primary(&[
            (B1, None, Some("20240102T120000,20240103T120000")),
            (B2, Some(B1), None),
        ]);
        assert_eq!(primary_parent(&primary, B2), Some(B1));
        assert_eq!(primary_parent(&primary, B1), None);
        assert_eq!(primary_children(&primary, B1), vec![B2, B3]);
        assert!(primary_children(&primary, B2).is_empty());
        assert!(primary_children(&primary, "20990101T000000").is_empty());
    }

    #[test]
    fn a_child_whose_parent_left_the_primary_is_skipped() {
        let primary = primary(&[(B2, Some(B1), None), (B3, Some(B2), None)]);
        let message = missing_parent("pg", &primary, B2).unwrap();
        assert_eq!(
            message,
            "Parent backup 20240101T120000 of incremental backup 20240102T120000 is absent on \
             pg server; skipping sync of this incremental"
        );
        assert_eq!(missing_parent("pg", &primary, B3), None, "parent listed");
        let full = self::primary(&[(B1, None, None)]);
        assert_eq!(missing_parent("pg", &full, B1), None, "not incremental");
    }

    #[test]
    fn expected_children_are_the_local_ones_in_the_primary_order() {
        let dir = tempfile::tempdir().unwrap();
        let server = server(dir.path());
        write_backup(&server, B1, None, &[]);
        write_backup(&server, B3, Some(B1), &[]);
        write_backup(&server, B2, Some(B1), &[]);
        write_backup(&server, "20240104T120000", Some(B2), &[]);
        let catalog = load_backups(&server).unwrap();
        // The primary's order wins; a child it lists that this node lacks is left out.
        assert_eq!(
            expected_children(&catalog, B1, &[B3, "20240105T120000", B2]),
            vec![B3, B2]
        );
        // Local children the primary no longer lists follow, by ID.
        assert_eq!(expected_children(&catalog, B1, &[B3]), vec![B3, B2]);
        assert_eq!(expected_children(&catalog, B1, &[]), vec![B2, B3]);
        assert_eq!(
            expected_children(&catalog, B2, &[]),
            vec!["20240104T120000"]
        );
        assert!(expected_children(&catalog, B3, &[B2]).is_empty());
    }

    #[test]
    fn refresh_writes_only_a_list_that_differs() {
        let dir = tempfile::tempdir().unwrap();
        let server = server(dir.path());
        write_backup(&server, B1, None, &[]);
        write_backup(&server, B2, Some(B1), &[]);
        let primary = primary(&[(B1, None, Some(B2)), (B2, Some(B1), None)]);
        assert_eq!(
            refresh_parent(&server, Some(&primary), B1).unwrap(),
            Refresh::Updated(vec![B2.to_owned()])
        );
        assert_eq!(children_on_disk(&server, B1), B2);
        let path = server.meta_directory().join(format!("{B1}-backup.info"));
        let before = std::fs::metadata(&path).unwrap();
        assert_eq!(
            refresh_parent(&server, Some(&primary), B1).unwrap(),
            Refresh::Unchanged
        );
        let after = std::fs::metadata(&path).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            before.ino(),
            after.ino(),
            "an unchanged list is not rewritten"
        );
        assert_eq!(
            refresh_parent(&server, Some(&primary), "20240109T120000").unwrap(),
            Refresh::Absent
        );
        assert!(!server
            .meta_directory()
            .join("20240109T120000-backup.info")
            .exists());
        assert_eq!(
            refresh_parent(&server, None, "../20240101T120000").unwrap(),
            Refresh::Absent
        );
    }

    #[test]
    fn refresh_waits_for_nobody_and_keeps_out_of_a_locked_backup() {
        let dir = tempfile::tempdir().unwrap();
        let server = server(dir.path());
        write_backup(&server, B1, None, &[]);
        write_backup(&server, B2, Some(B1), &[]);
        for kind in [LockKind::Backup(B1), LockKind::SyncBackup(B1)] {
            let held = lock::acquire(&server.lock_directory(), "pg", &kind, false).unwrap();
            let outcome = refresh_parent(&server, None, B1).unwrap();
            assert!(matches!(outcome, Refresh::Busy(_)), "{kind:?}: {outcome:?}");
            assert_eq!(children_on_disk(&server, B1), "None");
            drop(held);
        }
        assert_eq!(
            refresh_parent(&server, None, B1).unwrap(),
            Refresh::Updated(vec![B2.to_owned()])
        );
    }

    #[test]
    fn refresh_all_fixes_stale_and_phantom_children() {
        let dir = tempfile::tempdir().unwrap();
        let server = server(dir.path());
        // B1 lists a child this node does not have; B2 lists none although B3 names it.
        write_backup(&server, B1, None, &[B2, "20240105T120000"]);
        write_backup(&server, B2, Some(B1), &[]);
        write_backup(&server, B3, Some(B2), &[]);
        let primary = primary(&[
            (B1, None, Some("20240102T120000,20240105T120000")),
            (B2, Some(B1), Some(B3)),
            (B3, Some(B2), None),
        ]);
        let mut results = refresh_all(&server, &primary).unwrap();
        results.sort_by(|a, b| a.0.cmp(&b.0));
        let results: Vec<(String, Refresh)> = results
            .into_iter()
            .map(|(id, r)| (id, r.unwrap()))
            .collect();
        assert_eq!(
            results,
            vec![
                (B1.to_owned(), Refresh::Updated(vec![B2.to_owned()])),
                (B2.to_owned(), Refresh::Updated(vec![B3.to_owned()])),
            ]
        );
        assert_eq!(children_on_disk(&server, B1), B2);
        assert_eq!(children_on_disk(&server, B2), B3);
        assert_eq!(children_on_disk(&server, B3), "None");
        assert!(refresh_all(&server, &primary).unwrap().is_empty());
    }

    #[test]
    fn a_backup_being_written_gets_its_local_children() {
        let dir = tempfile::tempdir().unwrap();
        let server = server(dir.path());
        write_backup(&server, B2, Some(B1), &[]);
        let primary = primary(&[(B1, None, Some("20240102T120000,20240103T120000"))]);
        let mut info = BackupInfo::new(B1);
        set_expected_children(&mut info, &load_backups(&server).unwrap(), &primary);
        assert_eq!(info.raw("children_backup_ids"), Some(B2));
        let mut none = BackupInfo::new(B1);
        set_expected_children(&mut none, &[], &primary);
        assert_eq!(none.raw("children_backup_ids"), Some("None"));
    }
}
