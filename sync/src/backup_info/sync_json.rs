//! A backup as a sync-info `backups` entry (`BackupInfo.to_json`) and back
//! (`BackupInfo.from_json`): alphabetical fields, `backup_label` as a `repr()` string,
//! ctime times plus `begin_time_iso`/`end_time_iso`, tablespaces as lists.

use super::{BackupInfo, BackupInfoError, FIELDS, HIDDEN_IF_NULL, INT_FIELDS};
use crate::python::datetime::DateTime;
use crate::python::json::Json;
use crate::python::literal::{self, PyValue};

/// A Python value as `json.dump` writes it.
pub fn python_to_json(value: &PyValue) -> Json {
    match value {
        PyValue::None => Json::Null,
        PyValue::Bool(value) => Json::Bool(*value),
        PyValue::Int(value) => Json::Int(*value),
        PyValue::Float(value) => Json::Float(*value),
        PyValue::Str(text) => Json::Str(text.clone()),
        PyValue::List(items) | PyValue::Tuple(items) => {
            Json::Array(items.iter().map(python_to_json).collect())
        }
        PyValue::Dict(entries) => Json::Object(
            entries
                .iter()
                .map(|(key, value)| {
                    let key = match key {
                        PyValue::Str(text) => text.clone(),
                        PyValue::None => "null".to_owned(),
                        PyValue::Bool(true) => "true".to_owned(),
                        PyValue::Bool(false) => "false".to_owned(),
                        other => other.repr(),
                    };
                    (key, python_to_json(value))
                })
                .collect(),
        ),
    }
}

/// A JSON value as `json.loads` gives it to Python.
pub fn json_to_python(value: &Json) -> PyValue {
    match value {
        Json::Null => PyValue::None,
        Json::Bool(value) => PyValue::Bool(*value),
        Json::Int(value) => PyValue::Int(*value),
        Json::Float(value) => PyValue::Float(*value),
        Json::Str(text) => PyValue::Str(text.clone()),
        Json::Array(items) => PyValue::List(items.iter().map(json_to_python).collect()),
        Json::Object(entries) => PyValue::Dict(
            entries
                .iter()
                .map(|(key, value)| (PyValue::Str(key.clone()), json_to_python(value)))
                .collect(),
        ),
    }
}

/// Why a sync-info backup entry cannot become a backup.info.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("backup {backup_id}: field '{field}': {reason}")]
pub struct EntryError {
    pub backup_id: String,
    pub field: String,
    pub reason: String,
}

impl BackupInfo {
    /// The sync-info JSON entry Barman 3.20.1 prints for this backup.
    pub fn to_sync_json(&self) -> Result<Json, BackupInfoError> {
        let mut entries: Vec<(String, Json)> = Vec::new();
        for field in FIELDS {
            let value = self.field_json(field)?;
            if value == Json::Null && HIDDEN_IF_NULL.contains(&field) {
                continue;
            }
            entries.push((field.to_owned(), value));
        }
        entries.push(("backup_id".to_owned(), Json::Str(self.backup_id.clone())));
        for (field, iso_key) in [
            ("begin_time", "begin_time_iso"),
            ("end_time", "end_time_iso"),
        ] {
            if let Some(time) = self.time(field)? {
                entries.push((iso_key.to_owned(), Json::Str(time.isoformat())));
            }
        }
        Ok(Json::Object(entries))
    }

    fn field_json(&self, field: &str) -> Result<Json, BackupInfoError> {
        let Some(text) = self.text(field) else {
            return Ok(match field {
                "status" if self.raw(field).is_none() => Json::Str("EMPTY".to_owned()),
                "xlog_segment_size" if self.raw(field).is_none() => Json::Int(16_777_216),
                _ => Json::Null,
            });
        };
        if INT_FIELDS.contains(&field) {
            return Ok(self.int(field)?.map_or(Json::Null, Json::Int));
        }
        Ok(match field {
            "begin_time" | "end_time" => self
                .time(field)?
                .map_or(Json::Null, |t| Json::Str(t.ctime())),
            // dump=null_repr: the repr() of the evaluated literal, null when falsy.
            "backup_label" => match self.literal(field)? {
                Some(value) if value.is_truthy() => Json::Str(value.repr()),
                _ => Json::Null,
            },
            "tablespaces" => match self.literal(field)? {
                Some(value) if value.is_truthy() => python_to_json(&value),
                _ => Json::Null,
            },
            "included_files" | "copy_stats" | "snapshots_info" => self
                .literal(field)?
                .map_or(Json::Null, |value| python_to_json(&value)),
            "children_backup_ids" if text.is_empty() => Json::Null,
            _ => Json::Str(text.to_owned()),
        })
    }

    /// Builds backup.info values from a sync-info entry (`BackupInfo.from_json`). Keys that
    /// are not backup.info fields are returned, not stored: a newer primary may send them.
    /// `backup_label` is decoded once, so the passive's file matches the primary's (Barman's
    /// passive double-encodes it).
    pub fn from_sync_json(
        backup_id: &str,
        entry: &Json,
    ) -> Result<(BackupInfo, Vec<String>), EntryError> {
        let error = |field: &str, reason: String| EntryError {
            backup_id: backup_id.to_owned(),
            field: field.to_owned(),
            reason,
        };
        let Json::Object(pairs) = entry else {
            return Err(error(
                "<entry>",
                format!("expected an object, found {}", entry.type_name()),
            ));
        };
        let mut info = BackupInfo::new(backup_id);
        let mut unknown = Vec::new();
        for (key, value) in pairs {
            if matches!(
                key.as_str(),
                "backup_id" | "begin_time_iso" | "end_time_iso"
            ) {
                continue;
            }
            if !FIELDS.contains(&key.as_str()) {
                unknown.push(key.clone());
                continue;
            }
            let text = field_text(key, value, entry).map_err(|reason| error(key, reason))?;
            info.set_raw(key, &text);
        }
        Ok((info, unknown))
    }
}

/// The backup.info text of one field from its JSON value.
fn field_text(field: &str, value: &Json, entry: &Json) -> Result<String, String> {
    if field == "begin_time" || field == "end_time" {
        let iso = entry
            .get(&format!("{field}_iso"))
            .filter(|v| **v != Json::Null);
        let source = iso.unwrap_or(value);
        return match source {
            Json::Null => Ok("None".to_owned()),
            Json::Str(text) => DateTime::parse(text)
                .map(|t| t.to_python_str())
                .map_err(|e| e.to_string()),
            other => Err(format!(
                "expected a date string, found {}",
                other.type_name()
            )),
        };
    }
    if *value == Json::Null {
        return Ok("None".to_owned());
    }
    if INT_FIELDS.contains(&field) {
        return match value {
            Json::Int(number) => Ok(number.to_string()),
            other => Err(format!("expected an integer, found {}", other.type_name())),
        };
    }
    match field {
        "backup_label" => match value {
            Json::Str(text) => {
                let decoded = literal::parse(text).unwrap_or_else(|_| PyValue::Str(text.clone()));
                Ok(if decoded.is_truthy() {
                    decoded.repr()
                } else {
                    "None".to_owned()
                })
            }
            other => Err(format!("expected a string, found {}", other.type_name())),
        },
        "tablespaces" => {
            let Json::Array(items) = value else {
                return Err(format!("expected a list, found {}", value.type_name()));
            };
            let mut tuples = Vec::new();
            for item in items {
                match item {
                    Json::Array(parts)
                        if matches!(
                            parts.as_slice(),
                            [Json::Str(_), Json::Int(_), Json::Str(_)]
                        ) =>
                    {
                        tuples.push(PyValue::Tuple(parts.iter().map(json_to_python).collect()));
                    }
                    _ => return Err("entries must be [name, oid, location]".to_owned()),
                }
            }
            Ok(if tuples.is_empty() {
                "None".to_owned()
            } else {
                PyValue::List(tuples).repr()
            })
        }
        "included_files" | "copy_stats" | "snapshots_info" => {
            let python = json_to_python(value);
            Ok(if python.is_truthy() {
                python.repr()
            } else {
                "None".to_owned()
            })
        }
        _ => match value {
            // backup.info holds one value per line: a line break would inject other fields.
            Json::Str(text) if text.contains('\n') => Err("contains a line break".to_owned()),
            Json::Str(text) => Ok(text.clone()),
            other => Err(format!("expected a string, found {}", other.type_name())),
        },
    }
}
