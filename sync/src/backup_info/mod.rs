//! backup.info files (`meta/<ID>-backup.info`, legacy `base/<ID>/backup.info`) read and
//! written exactly as Barman's `FieldListFile`: `key=value` lines sorted by key, `None` for
//! null, Python literals, `str(datetime)` times. The raw text of every value is kept, so a
//! file written by Barman is written back byte for byte.

mod sync_json;

pub use sync_json::{json_to_python, python_to_json, EntryError};

use std::collections::BTreeMap;
use std::path::Path;

use crate::python::datetime::DateTime;
use crate::python::literal::{self, PyValue};
use crate::python::parse_int;

/// Every field of Barman 3.20.1's `BackupInfo`, in file (alphabetical) order.
pub const FIELDS: [&str; 35] = [
    "backup_label",
    "backup_name",
    "begin_offset",
    "begin_time",
    "begin_wal",
    "begin_xlog",
    "children_backup_ids",
    "cluster_size",
    "compression",
    "config_file",
    "copy_stats",
    "data_checksums",
    "deduplicated_size",
    "encryption",
    "end_offset",
    "end_time",
    "end_wal",
    "end_xlog",
    "error",
    "hba_file",
    "ident_file",
    "included_files",
    "mode",
    "parent_backup_id",
    "pgdata",
    "server_name",
    "size",
    "snapshots_info",
    "status",
    "summarize_wal",
    "systemid",
    "tablespaces",
    "timeline",
    "version",
    "xlog_segment_size",
];

/// Fields Barman leaves out of the file and the JSON when they are null.
pub const HIDDEN_IF_NULL: [&str; 2] = ["backup_name", "snapshots_info"];

/// Fields loaded with `int()`.
pub const INT_FIELDS: [&str; 8] = [
    "begin_offset",
    "cluster_size",
    "deduplicated_size",
    "end_offset",
    "size",
    "timeline",
    "version",
    "xlog_segment_size",
];

/// Fields loaded with `ast.literal_eval`.
pub const LITERAL_FIELDS: [&str; 5] = [
    "backup_label",
    "copy_stats",
    "included_files",
    "snapshots_info",
    "tablespaces",
];

/// The life cycle of a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupStatus {
    Empty,
    Started,
    WaitingForWals,
    Done,
    Syncing,
    Failed,
}

impl BackupStatus {
    pub fn parse(text: &str) -> Option<BackupStatus> {
        Some(match text {
            "EMPTY" => BackupStatus::Empty,
            "STARTED" => BackupStatus::Started,
            "WAITING_FOR_WALS" => BackupStatus::WaitingForWals,
            "DONE" => BackupStatus::Done,
            "SYNCING" => BackupStatus::Syncing,
            "FAILED" => BackupStatus::Failed,
            _ => return None,
        })
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            BackupStatus::Empty => "EMPTY",
            BackupStatus::Started => "STARTED",
            BackupStatus::WaitingForWals => "WAITING_FOR_WALS",
            BackupStatus::Done => "DONE",
            BackupStatus::Syncing => "SYNCING",
            BackupStatus::Failed => "FAILED",
        }
    }

    /// `STATUS_COPY_DONE`: the statuses sync-info lists and a passive counts as present.
    pub fn is_copy_done(&self) -> bool {
        matches!(self, BackupStatus::WaitingForWals | BackupStatus::Done)
    }
}

/// A tablespace of a backup: `(name, oid, location)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tablespace {
    pub name: String,
    pub oid: u32,
    pub location: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupInfoError {
    #[error("cannot access {}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("invalid line {text} in file {}", path.display())]
    BadLine {
        path: std::path::PathBuf,
        text: String,
    },
    #[error("{}: {source}", path.display())]
    NotUtf8 {
        path: std::path::PathBuf,
        source: std::string::FromUtf8Error,
    },
    #[error("backup {backup_id}: field {field}: {reason}")]
    BadField {
        backup_id: String,
        field: String,
        reason: String,
    },
}

/// The metadata of one backup, value texts as they appear in backup.info.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupInfo {
    backup_id: String,
    values: BTreeMap<String, String>,
}

impl BackupInfo {
    /// An empty backup (status `EMPTY`, every other field null).
    pub fn new(backup_id: &str) -> BackupInfo {
        BackupInfo {
            backup_id: backup_id.to_owned(),
            values: BTreeMap::new(),
        }
    }

    /// Parses backup.info text as `FieldListFile.load` does. Unknown keys are kept (Barman
    /// would refuse the file; barsync carries them through).
    pub fn parse(backup_id: &str, text: &str, path: &Path) -> Result<BackupInfo, BackupInfoError> {
        let mut info = BackupInfo::new(backup_id);
        for line in text.split_inclusive('\n') {
            if line.trim().is_empty() || line.trim_end().starts_with('#') {
                continue;
            }
            // A key starting with `#` (after blanks) would be written back as a comment.
            let Some((key, value)) = line
                .split_once('=')
                .filter(|(key, _)| !key.trim().starts_with('#'))
            else {
                return Err(BackupInfoError::BadLine {
                    path: path.to_owned(),
                    text: line.trim().to_owned(),
                });
            };
            info.values
                .insert(key.trim().to_owned(), value.trim().to_owned());
        }
        Ok(info)
    }

    /// Reads a backup.info file; the backup ID comes from its name as Barman's
    /// `detect_backup_id` does (`<ID>-backup.info`, else the parent directory).
    pub fn read(path: &Path) -> Result<BackupInfo, BackupInfoError> {
        let bytes = std::fs::read(path).map_err(|source| BackupInfoError::Io {
            path: path.to_owned(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|source| BackupInfoError::NotUtf8 {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&backup_id_from_path(path), &text, path)
    }

    /// The file text as `FieldListFile.save` writes it: every field sorted, defaults for
    /// missing ones, null hidden fields left out.
    pub fn to_file_text(&self) -> String {
        let mut keys: Vec<&str> = FIELDS.to_vec();
        keys.extend(
            self.values
                .keys()
                .map(String::as_str)
                .filter(|k| !FIELDS.contains(k)),
        );
        keys.sort_unstable();
        let mut out = String::new();
        for key in keys {
            let value = self
                .raw(key)
                .map(str::to_owned)
                .unwrap_or_else(|| default_text(key).to_owned());
            if value == "None" && HIDDEN_IF_NULL.contains(&key) {
                continue;
            }
            out.push_str(key);
            out.push('=');
            out.push_str(&value);
            out.push('\n');
        }
        out
    }

    /// Writes `<meta_directory>/<ID>-backup.info` atomically (temp, fsync, rename, dir fsync).
    pub fn save(&self, meta_directory: &Path) -> Result<std::path::PathBuf, BackupInfoError> {
        let path = meta_directory.join(format!("{}-backup.info", self.backup_id));
        crate::fsutil::atomic_write(&path, self.to_file_text().as_bytes()).map_err(|source| {
            BackupInfoError::Io {
                path: path.clone(),
                source,
            }
        })?;
        Ok(path)
    }

    pub fn backup_id(&self) -> &str {
        &self.backup_id
    }

    /// The value text of `key` as in the file (`None` when the key is absent).
    pub fn raw(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// Sets the value text of `key` exactly (`"None"` for null).
    pub fn set_raw(&mut self, key: &str, text: &str) {
        self.values.insert(key.to_owned(), text.to_owned());
    }

    /// A string field, `None` when null or absent.
    pub fn text(&self, key: &str) -> Option<&str> {
        self.raw(key).filter(|value| *value != "None")
    }

    /// Sets a plain string field (`None` for null). backup.info holds one field per line: a
    /// line break in `value` (a failure naming a file whose name holds one) would end the
    /// field and start lines of its own, other fields or lines no reader accepts, so line
    /// breaks are written as `\n` and `\r`.
    pub fn set_text(&mut self, key: &str, value: Option<&str>) {
        let value = value.map(|text| text.replace('\n', "\\n").replace('\r', "\\r"));
        self.set_raw(key, value.as_deref().unwrap_or("None"));
    }

    /// An integer field.
    pub fn int(&self, key: &str) -> Result<Option<i128>, BackupInfoError> {
        match self.text(key) {
            None => Ok(None),
            Some(text) => parse_int(text)
                .map(Some)
                .ok_or_else(|| self.bad_field(key, "not an integer")),
        }
    }

    /// A Python-literal field, evaluated.
    pub fn literal(&self, key: &str) -> Result<Option<PyValue>, BackupInfoError> {
        match self.text(key) {
            None => Ok(None),
            Some(text) => literal::parse(text)
                .map(Some)
                .map_err(|e| self.bad_field(key, &e.to_string())),
        }
    }

    /// A time field (`begin_time`, `end_time`).
    pub fn time(&self, key: &str) -> Result<Option<DateTime>, BackupInfoError> {
        match self.text(key) {
            None => Ok(None),
            Some(text) => DateTime::parse(text)
                .map(Some)
                .map_err(|e| self.bad_field(key, &e.to_string())),
        }
    }

    pub fn status(&self) -> Result<BackupStatus, BackupInfoError> {
        let text = self.raw("status").unwrap_or("EMPTY");
        BackupStatus::parse(text)
            .ok_or_else(|| self.bad_field("status", &format!("unknown status {text:?}")))
    }

    pub fn set_status(&mut self, status: BackupStatus) {
        self.set_raw("status", status.as_str());
    }

    pub fn begin_wal(&self) -> Option<&str> {
        self.text("begin_wal")
    }

    pub fn end_wal(&self) -> Option<&str> {
        self.text("end_wal")
    }

    pub fn parent_backup_id(&self) -> Option<&str> {
        self.text("parent_backup_id")
    }

    /// `children_backup_ids`, stored comma-joined.
    pub fn children_backup_ids(&self) -> Vec<&str> {
        self.text("children_backup_ids")
            .map(|t| t.split(',').filter(|s| !s.is_empty()).collect())
            .unwrap_or_default()
    }

    pub fn set_children_backup_ids(&mut self, ids: &[&str]) {
        let joined = ids.join(",");
        self.set_text(
            "children_backup_ids",
            (!joined.is_empty()).then_some(joined.as_str()),
        );
    }

    /// The tablespaces, empty when there are none.
    pub fn tablespaces(&self) -> Result<Vec<Tablespace>, BackupInfoError> {
        let Some(value) = self.literal("tablespaces")? else {
            return Ok(Vec::new());
        };
        let items = match value {
            PyValue::List(items) | PyValue::Tuple(items) => items,
            _ => return Err(self.bad_field("tablespaces", "not a list")),
        };
        items
            .iter()
            .map(|item| match item {
                PyValue::List(parts) | PyValue::Tuple(parts) => match parts.as_slice() {
                    [PyValue::Str(name), PyValue::Int(oid), PyValue::Str(location)] => {
                        Ok(Tablespace {
                            name: name.clone(),
                            oid: u32::try_from(*oid)
                                .map_err(|_| self.bad_field("tablespaces", "oid out of range"))?,
                            location: location.clone(),
                        })
                    }
                    _ => {
                        Err(self.bad_field("tablespaces", "entries must be (name, oid, location)"))
                    }
                },
                _ => Err(self.bad_field("tablespaces", "entries must be tuples")),
            })
            .collect()
    }

    fn bad_field(&self, field: &str, reason: &str) -> BackupInfoError {
        BackupInfoError::BadField {
            backup_id: self.backup_id.clone(),
            field: field.to_owned(),
            reason: reason.to_owned(),
        }
    }
}

/// The text Barman writes for a field that was never set.
fn default_text(key: &str) -> &'static str {
    match key {
        "status" => "EMPTY",
        "xlog_segment_size" => "16777216",
        _ => "None",
    }
}

/// `detect_backup_id`: `<ID>-backup.info` gives ID, `base/<ID>/backup.info` the directory.
pub fn backup_id_from_path(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.strip_suffix("-backup.info") {
        Some(id) if !id.is_empty() => id.to_owned(),
        _ => path
            .parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests;
