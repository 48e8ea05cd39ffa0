//! The backups of one server as Barman's `BackupManager` finds them: legacy
//! `base/*/backup.info` first, then `meta/*-backup.info` (which wins for the same ID), in
//! directory (glob) order, filtered by status.

use std::path::{Path, PathBuf};

use crate::backup_info::{BackupInfo, BackupInfoError};
use crate::config::ServerConfig;

/// One backup found in the catalog, with the file it was read from.
#[derive(Debug, Clone)]
pub struct CatalogEntry {
    pub info: BackupInfo,
    pub path: PathBuf,
}

/// All backups of `server`, in Barman's cache order (the order sync-info prints them).
pub fn load_backups(server: &ServerConfig) -> Result<Vec<CatalogEntry>, BackupInfoError> {
    let mut entries: Vec<CatalogEntry> = Vec::new();
    let mut add = |path: PathBuf| -> Result<(), BackupInfoError> {
        let info = BackupInfo::read(&path)?;
        match entries
            .iter_mut()
            .find(|e| e.info.backup_id() == info.backup_id())
        {
            Some(existing) => *existing = CatalogEntry { info, path },
            None => entries.push(CatalogEntry { info, path }),
        }
        Ok(())
    };
    let base = server.basebackups_directory();
    for name in visible_names(&base) {
        let directory = base.join(&name);
        let legacy = directory.join("backup.info");
        if directory.is_dir() && legacy.symlink_metadata().is_ok() {
            add(legacy)?;
        }
    }
    let meta = server.meta_directory();
    for name in visible_names(&meta) {
        if name.ends_with("-backup.info") {
            add(meta.join(name))?;
        }
    }
    Ok(entries)
}

/// The backups sync-info lists and a passive counts as present: `WAITING_FOR_WALS` and `DONE`.
pub fn available_backups(server: &ServerConfig) -> Result<Vec<CatalogEntry>, BackupInfoError> {
    Ok(load_backups(server)?
        .into_iter()
        .filter(|entry| matches!(entry.info.raw("status"), Some("WAITING_FOR_WALS" | "DONE")))
        .collect())
}

/// Names in `directory` that a `*` glob matches (not starting with a dot), in directory order.
fn visible_names(directory: &Path) -> Vec<String> {
    let Ok(listing) = std::fs::read_dir(directory) else {
        return Vec::new();
    };
    listing
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('.'))
        .collect()
}
