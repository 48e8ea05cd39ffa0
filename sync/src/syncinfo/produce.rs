//! `sync-info` output of a server, as Barman 3.20.1's `Server.sync_status` prints it: the
//! available backups, the WALs selected from the xlog db (full or incremental request), the
//! xlog db position, the version and the server configuration. Two Barman bugs are fixed:
//! `LAST_POSITION` 0 is a valid position, and a full request keeps the `.history` file of the
//! oldest backup's timeline.

use crate::catalog;
use crate::config::ServerConfig;
use crate::python::json::Json;
use crate::wal::WalName;
use crate::xlogdb::{lines_with_offsets, LockedXlogDb, WalEntry, XlogDbError};

use super::SyncInfoError;

/// The Barman version whose format barsync speaks; passives do not read it.
pub const BARMAN_VERSION: &str = "3.20.1";

/// Where the requester is in the primary's xlog db (`LAST_WAL [LAST_POSITION]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncPoint {
    pub last_wal: Option<String>,
    pub last_position: Option<u64>,
}

/// The sync-info document of `server`, as the JSON text Barman prints (no trailing newline).
pub fn sync_info_text(server: &ServerConfig, point: &SyncPoint) -> Result<String, SyncInfoError> {
    Ok(sync_info_json(server, point)?.dump_indented())
}

/// The sync-info document of `server`.
pub fn sync_info_json(server: &ServerConfig, point: &SyncPoint) -> Result<Json, SyncInfoError> {
    let backups = catalog::available_backups(server)?;
    let first_useful_wal: Option<String> = backups
        .iter()
        .min_by(|a, b| a.info.backup_id().cmp(b.info.backup_id()))
        .and_then(|entry| entry.info.begin_wal().map(str::to_owned));
    let xlogdb = LockedXlogDb::open(server)?;
    let content = xlogdb.read_to_string()?;
    let selection = select_wals(&content, point, first_useful_wal.as_deref(), xlogdb.path())?;
    drop(xlogdb);

    let mut backup_entries = Vec::with_capacity(backups.len());
    for entry in &backups {
        backup_entries.push((
            entry.info.backup_id().to_owned(),
            entry.info.to_sync_json()?,
        ));
    }
    Ok(Json::Object(vec![
        (
            "last_position".to_owned(),
            Json::Int(i128::from(selection.last_position)),
        ),
        ("last_name".to_owned(), Json::Str(selection.last_name)),
        ("backups".to_owned(), Json::Object(backup_entries)),
        (
            "wals".to_owned(),
            Json::Array(selection.wals.iter().map(WalEntry::to_json).collect()),
        ),
        ("version".to_owned(), Json::Str(BARMAN_VERSION.to_owned())),
        ("config".to_owned(), server.to_json()),
    ]))
}

/// The WALs to send and the position of the last xlog db line.
#[derive(Debug, Clone, PartialEq)]
pub struct WalSelection {
    pub wals: Vec<WalEntry>,
    pub last_position: u64,
    pub last_name: String,
}

/// `set_sync_starting_point`: resume at `last_position` only if the 24 characters there are
/// `last_wal`, else read the whole file.
fn starting_point(content: &str, point: &SyncPoint) -> u64 {
    let position = point.last_position.unwrap_or(0);
    let Ok(start) = usize::try_from(position) else {
        return 0;
    };
    let found = content
        .as_bytes()
        .get(start..)
        .map(|rest| &rest[..rest.len().min(24)]);
    match (found, &point.last_wal) {
        (Some(found), Some(last_wal)) if found == last_wal.as_bytes() => position,
        _ => 0,
    }
}

/// The WAL selection rules of `Server.sync_status` (plain string comparisons, as Barman).
pub fn select_wals(
    content: &str,
    point: &SyncPoint,
    first_useful_wal: Option<&str>,
    path: &std::path::Path,
) -> Result<WalSelection, SyncInfoError> {
    let start = starting_point(content, point);
    let last_wal = point.last_wal.as_deref();
    let mut check_first_wal = start == 0 && last_wal.is_some();
    // Fix of Barman's history bug: keep the history file of the oldest backup's timeline.
    let first_timeline_history = first_useful_wal
        .and_then(|wal| WalName::parse(wal).ok())
        .map(|wal| format!("{:08X}.history", wal.timeline()));
    let mut wals = Vec::new();
    let mut last: Option<(u64, String)> = None;
    let body = &content[usize::try_from(start).unwrap_or(0)..];
    for (index, line) in lines_with_offsets(body).enumerate() {
        let entry = WalEntry::parse_line(line.text).ok_or_else(|| XlogDbError::BadLine {
            path: path.to_owned(),
            text: line.text.to_owned(),
            line_number: index + 1,
        })?;
        last = Some((start + line.offset, entry.name.clone()));
        if check_first_wal {
            let last_wal = last_wal.expect("checked when set");
            if last_wal < entry.name.as_str() {
                return Err(SyncInfoError::Sync(format!(
                    "last_wal '{last_wal}' is older than the first available wal '{}'",
                    entry.name
                )));
            }
            check_first_wal = false;
        }
        match last_wal {
            Some(last_wal) if !last_wal.is_empty() => {
                if entry.name.as_str() <= last_wal {
                    continue;
                }
            }
            _ => {
                if let Some(first) = first_useful_wal.filter(|f| !f.is_empty()) {
                    let keep_history = first_timeline_history
                        .as_deref()
                        .is_some_and(|history| history.eq_ignore_ascii_case(&entry.name));
                    if entry.name.as_str() < first && !keep_history {
                        continue;
                    }
                }
            }
        }
        wals.push(entry);
    }
    let Some((offset, last_name)) = last else {
        return Ok(WalSelection {
            wals,
            last_position: 0,
            last_name: String::new(),
        });
    };
    if let Some(last_wal) = last_wal {
        if last_wal > last_name.as_str() {
            return Err(SyncInfoError::Sync(format!(
                "last_wal '{last_wal}' is newer than the last available wal  '{last_name}'"
            )));
        }
    }
    Ok(WalSelection {
        wals,
        last_position: offset,
        last_name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const XLOGDB: &str = "000000010000000000000001\t16\t1.0\tNone\tNone\n\
000000010000000000000002\t16\t2.0\tNone\tNone\n\
00000002.history\t41\t3.0\tNone\tNone\n\
000000020000000000000003\t16\t4.0\tNone\tNone\n";

    fn names(selection: &WalSelection) -> Vec<&str> {
        selection.wals.iter().map(|w| w.name.as_str()).collect()
    }

    fn point(wal: Option<&str>, position: Option<u64>) -> SyncPoint {
        SyncPoint {
            last_wal: wal.map(str::to_owned),
            last_position: position,
        }
    }

    #[test]
    fn full_request_drops_wals_before_first_backup() {
        let selection = select_wals(
            XLOGDB,
            &point(None, None),
            Some("000000010000000000000002"),
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(
            names(&selection),
            vec![
                "000000010000000000000002",
                "00000002.history",
                "000000020000000000000003"
            ]
        );
        assert_eq!(selection.last_position, 118);
        assert_eq!(selection.last_name, "000000020000000000000003");
    }

    #[test]
    fn history_of_first_backup_timeline_is_kept() {
        let selection = select_wals(
            XLOGDB,
            &point(None, None),
            Some("000000020000000000000003"),
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(
            names(&selection),
            vec!["00000002.history", "000000020000000000000003"],
            "Barman would drop the history file"
        );
    }

    #[test]
    fn incremental_requests() {
        let resume = select_wals(
            XLOGDB,
            &point(Some("000000020000000000000003"), Some(118)),
            None,
            Path::new("x"),
        )
        .unwrap();
        assert!(resume.wals.is_empty());
        assert_eq!(resume.last_position, 118);
        let wrong_position = select_wals(
            XLOGDB,
            &point(Some("000000010000000000000002"), Some(5)),
            None,
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(
            names(&wrong_position),
            vec!["00000002.history", "000000020000000000000003"]
        );
        let position_zero = select_wals(
            XLOGDB,
            &point(Some("000000010000000000000001"), Some(0)),
            None,
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(
            names(&position_zero).len(),
            3,
            "LAST_POSITION 0 is a valid position"
        );
        let too_old = select_wals(
            XLOGDB,
            &point(Some("000000000000000000000001"), None),
            None,
            Path::new("x"),
        )
        .unwrap_err();
        assert_eq!(too_old.to_string(), "last_wal '000000000000000000000001' is older than the first available wal '000000010000000000000001'");
        let too_new = select_wals(
            XLOGDB,
            &point(Some("000000030000000000000001"), None),
            None,
            Path::new("x"),
        )
        .unwrap_err();
        assert_eq!(too_new.to_string(), "last_wal '000000030000000000000001' is newer than the last available wal  '000000020000000000000003'");
    }

    #[test]
    fn empty_xlogdb() {
        let selection = select_wals("", &point(None, None), None, Path::new("x")).unwrap();
        assert_eq!(
            (selection.last_position, selection.last_name.as_str()),
            (0, "")
        );
    }
}
