//! sync-info JSON received from a primary (any Barman 3.x, or barsync): unknown fields are
//! ignored, the fields a passive uses are checked strictly, and errors name the primary's
//! server and the field.

use crate::backup_info::BackupInfo;
use crate::python::json::{self, Json};
use crate::xlogdb::WalEntry;

/// The parts of a primary's sync-info that a passive node uses.
#[derive(Debug, Clone, PartialEq)]
pub struct PrimaryInfo {
    pub last_position: u64,
    pub last_name: String,
    /// Backup ID and its JSON entry, in the primary's order.
    pub backups: Vec<(String, Json)>,
    pub wals: Vec<WalEntry>,
    pub version: Option<String>,
    pub config: PrimaryConfig,
}

/// The primary's configuration keys a passive reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrimaryConfig {
    /// Absent in Barman 3.16.1 output.
    pub name: Option<String>,
    pub basebackups_directory: String,
    pub wals_directory: String,
    pub compression: Option<String>,
    /// Where the primary's `receive-wal` writes (`*.partial`); only `follow --partial` reads
    /// it. Absent from an older or trimmed answer.
    pub streaming_wals_directory: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrimaryInfoError {
    #[error("sync-info from the primary of server {server} is not valid JSON: {source}")]
    Json {
        server: String,
        source: json::JsonError,
    },
    #[error("sync-info from the primary of server {server}: field '{field}': {reason}")]
    Field {
        server: String,
        field: String,
        reason: String,
    },
}

impl PrimaryInfo {
    /// Parses sync-info text received for `server`.
    pub fn parse(server: &str, text: &str) -> Result<PrimaryInfo, PrimaryInfoError> {
        let fields = Fields { server };
        // WAL entries become records as they are read (a full sync-info may list millions).
        let mut wals = Vec::new();
        let mut wal_error = None;
        let parsed = json::parse_streaming(text, "wals", &mut |item| {
            match fields.wal(&item, &format!("wals[{}]", wals.len())) {
                Ok(wal) => wals.push(wal),
                Err(error) => wal_error = Some(error),
            }
            wal_error.is_none()
        });
        if let Some(error) = wal_error {
            return Err(error);
        }
        let document = parsed.map_err(|source| PrimaryInfoError::Json {
            server: server.to_owned(),
            source,
        })?;
        let last_position = fields.int(&document, "last_position", "last_position")?;
        let last_position = u64::try_from(last_position)
            .map_err(|_| fields.error("last_position", "must not be negative"))?;
        let last_name = fields.string(&document, "last_name", "last_name")?;
        let backups = match fields.required(&document, "backups", "backups")? {
            Json::Object(entries) => {
                for (id, entry) in entries {
                    // The ID becomes a directory name on the passive.
                    crate::wal::BackupId::parse(id)
                        .map_err(|e| fields.error(&format!("backups.{id}"), &e.to_string()))?;
                    if !matches!(entry, Json::Object(_)) {
                        return Err(fields.error(
                            &format!("backups.{id}"),
                            &format!("expected an object, found {}", entry.type_name()),
                        ));
                    }
                }
                entries.clone()
            }
            other => {
                return Err(fields.error(
                    "backups",
                    &format!("expected an object, found {}", other.type_name()),
                ))
            }
        };
        match fields.required(&document, "wals", "wals")? {
            Json::Array(_) => {}
            other => {
                return Err(fields.error(
                    "wals",
                    &format!("expected an array, found {}", other.type_name()),
                ))
            }
        };
        let version = match document.get("version") {
            Some(Json::Str(text)) => Some(text.clone()),
            _ => None,
        };
        let config_json = fields.required(&document, "config", "config")?;
        if !matches!(config_json, Json::Object(_)) {
            return Err(fields.error(
                "config",
                &format!("expected an object, found {}", config_json.type_name()),
            ));
        }
        let config = PrimaryConfig {
            name: fields.optional_string(config_json, "name", "config.name")?,
            basebackups_directory: fields.string(
                config_json,
                "basebackups_directory",
                "config.basebackups_directory",
            )?,
            wals_directory: fields.string(
                config_json,
                "wals_directory",
                "config.wals_directory",
            )?,
            compression: {
                fields.required(config_json, "compression", "config.compression")?;
                fields.optional_string(config_json, "compression", "config.compression")?
            },
            streaming_wals_directory: fields
                .optional_string(
                    config_json,
                    "streaming_wals_directory",
                    "config.streaming_wals_directory",
                )
                .ok()
                .flatten(),
        };
        Ok(PrimaryInfo {
            last_position,
            last_name,
            backups,
            wals,
            version,
            config,
        })
    }

    /// The backup.info of backup `id` as the primary describes it, plus the keys it sent that
    /// barsync does not know.
    pub fn backup(
        &self,
        server: &str,
        id: &str,
    ) -> Result<Option<(BackupInfo, Vec<String>)>, PrimaryInfoError> {
        let Some((_, entry)) = self.backups.iter().find(|(backup_id, _)| backup_id == id) else {
            return Ok(None);
        };
        BackupInfo::from_sync_json(id, entry)
            .map(Some)
            .map_err(|error| PrimaryInfoError::Field {
                server: server.to_owned(),
                field: format!("backups.{id}.{}", error.field),
                reason: error.reason,
            })
    }

    /// The backup IDs the primary lists, in its order.
    pub fn backup_ids(&self) -> impl Iterator<Item = &str> {
        self.backups.iter().map(|(id, _)| id.as_str())
    }
}

struct Fields<'a> {
    server: &'a str,
}

impl Fields<'_> {
    fn error(&self, field: &str, reason: &str) -> PrimaryInfoError {
        PrimaryInfoError::Field {
            server: self.server.to_owned(),
            field: field.to_owned(),
            reason: reason.to_owned(),
        }
    }

    fn required<'j>(
        &self,
        object: &'j Json,
        key: &str,
        path: &str,
    ) -> Result<&'j Json, PrimaryInfoError> {
        object.get(key).ok_or_else(|| self.error(path, "missing"))
    }

    fn int(&self, object: &Json, key: &str, path: &str) -> Result<i128, PrimaryInfoError> {
        match self.required(object, key, path)? {
            Json::Int(value) => Ok(*value),
            other => Err(self.error(
                path,
                &format!("expected an integer, found {}", other.type_name()),
            )),
        }
    }

    fn string(&self, object: &Json, key: &str, path: &str) -> Result<String, PrimaryInfoError> {
        match self.required(object, key, path)? {
            Json::Str(text) => Ok(text.clone()),
            other => Err(self.error(
                path,
                &format!("expected a string, found {}", other.type_name()),
            )),
        }
    }

    fn optional_string(
        &self,
        object: &Json,
        key: &str,
        path: &str,
    ) -> Result<Option<String>, PrimaryInfoError> {
        match object.get(key) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::Str(text)) => Ok(Some(text.clone())),
            Some(other) => Err(self.error(
                path,
                &format!("expected a string or null, found {}", other.type_name()),
            )),
        }
    }

    fn wal(&self, item: &Json, path: &str) -> Result<WalEntry, PrimaryInfoError> {
        if !matches!(item, Json::Object(_)) {
            return Err(self.error(
                path,
                &format!("expected an object, found {}", item.type_name()),
            ));
        }
        let size = self.int(item, "size", &format!("{path}.size"))?;
        let name = self.string(item, "name", &format!("{path}.name"))?;
        // The name becomes a path on the passive: only Barman's WAL grammar is accepted.
        crate::wal::WalName::parse(&name)
            .map_err(|e| self.error(&format!("{path}.name"), &e.to_string()))?;
        if size < 0 {
            return Err(self.error(&format!("{path}.size"), "negative"));
        }
        // The size drives planning (parts, progress): bounded before anything is built on it.
        let limit = crate::wal::archived_size_limit(crate::wal::MAX_SEGMENT_SIZE);
        if size > i128::from(limit) {
            return Err(self.error(
                &format!("{path}.size"),
                &format!(
                    "WAL {name} is declared {size} bytes; no WAL file is larger than {limit} \
                     (1 GiB, PostgreSQL's largest segment, plus room for compression or encryption)"
                ),
            ));
        }
        let time = match self.required(item, "time", &format!("{path}.time"))? {
            Json::Float(value) => *value,
            Json::Int(value) => *value as f64,
            other => {
                return Err(self.error(
                    &format!("{path}.time"),
                    &format!("expected a number, found {}", other.type_name()),
                ))
            }
        };
        Ok(WalEntry {
            name,
            size: i64::try_from(size)
                .map_err(|_| self.error(&format!("{path}.size"), "out of range"))?,
            time,
            compression: self.xlogdb_column(item, "compression", &format!("{path}.compression"))?,
            encryption: self.xlogdb_column(item, "encryption", &format!("{path}.encryption"))?,
        })
    }

    /// An optional string that a passive writes as one column of an xlog db line: it must be
    /// one non-empty word for Barman's `str.split()` (no whitespace, no control character).
    fn xlogdb_column(
        &self,
        item: &Json,
        key: &str,
        path: &str,
    ) -> Result<Option<String>, PrimaryInfoError> {
        let value = self.optional_string(item, key, path)?;
        match &value {
            Some(text)
                if text.is_empty()
                    || text.contains(|c: char| c.is_whitespace() || c.is_control()) =>
            {
                Err(self.error(path, "must be one word (it becomes an xlog db column)"))
            }
            _ => Ok(value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{"last_position": 503, "last_name": "000000020000000000000007",
        "backups": {"20240101T120000": {"status": "DONE", "begin_wal": "000000010000000000000002", "future": 1}},
        "wals": [{"compression": null, "name": "000000010000000000000002", "size": 16384, "time": 1704110700.0}],
        "version": "3.13.0", "unknown_top_level": [1, 2],
        "config": {"basebackups_directory": "/b/pg/base", "wals_directory": "/b/pg/wals", "compression": null, "other": 1}}"#;

    #[test]
    fn tolerant_of_unknown_and_old_fields() {
        let info = PrimaryInfo::parse("pg", MINIMAL).unwrap();
        assert_eq!(info.last_position, 503);
        assert_eq!(
            info.wals[0].encryption, None,
            "pre-3.14 primaries send no encryption"
        );
        assert_eq!(info.config.name, None, "3.16.1 primaries send no name");
        assert_eq!(
            info.backup_ids().collect::<Vec<_>>(),
            vec!["20240101T120000"]
        );
        let (backup, unknown) = info.backup("pg", "20240101T120000").unwrap().unwrap();
        assert_eq!(backup.begin_wal(), Some("000000010000000000000002"));
        assert_eq!(unknown, vec!["future"]);
    }

    #[test]
    fn wal_columns_that_would_break_the_xlog_db_are_refused() {
        // Found by the sync_info_parse fuzz target: a compression of "gzip x" was accepted and
        // a passive appended "<name>\t16384\t...\tgzip x\tNone" to its xlog db, six columns
        // that neither barsync nor Barman can read back.
        for bad in ["gzip x", "", "gzip\\nx", "a\\u001cb"] {
            let text = MINIMAL.replace(
                "\"compression\": null, \"name\"",
                &format!("\"compression\": \"{bad}\", \"name\""),
            );
            match PrimaryInfo::parse("pg", &text) {
                Err(PrimaryInfoError::Field { field, .. }) => {
                    assert_eq!(field, "wals[0].compression")
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        let gzip = MINIMAL.replace(
            "\"compression\": null, \"name\"",
            "\"compression\": \"gzip\", \"name\"",
        );
        assert_eq!(
            PrimaryInfo::parse("pg", &gzip).unwrap().wals[0]
                .compression
                .as_deref(),
            Some("gzip")
        );
    }

    #[test]
    fn strict_about_used_fields() {
        let cases = [
            (MINIMAL.replace("503", "\"503\""), "last_position"),
            (
                MINIMAL.replace("\"size\": 16384", "\"size\": \"16384\""),
                "wals[0].size",
            ),
            (
                MINIMAL.replace("\"wals_directory\": \"/b/pg/wals\",", ""),
                "config.wals_directory",
            ),
            (
                MINIMAL.replace("\"compression\": null, \"other\"", "\"other\""),
                "config.compression",
            ),
            (
                MINIMAL.replace("\"name\": \"000000010000000000000002\", ", ""),
                "wals[0].name",
            ),
        ];
        for (text, field) in cases {
            match PrimaryInfo::parse("pg", &text) {
                Err(PrimaryInfoError::Field { field: found, .. }) => assert_eq!(found, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        let err = PrimaryInfo::parse("pg", "{\"last_position\": ").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("sync-info from the primary of server pg is not valid JSON"),
            "{err}"
        );
    }
}
