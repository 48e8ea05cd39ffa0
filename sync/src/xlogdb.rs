//! The xlog db (`<xlogdb_directory>/<SERVER>-xlog.db`): one line per archived WAL file,
//! `name\tsize\ttime\tcompression\tencryption\n`. Read tolerantly (3 to 5 whitespace-separated
//! columns, duplicates, any order), appended and rebuilt under Barman's `.<SERVER>-xlogdb.lock`
//! with fsync, times written as Python's `str(float)`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::config::ServerConfig;
use crate::lock::{self, LockError, LockGuard, LockKind};
use crate::python::json::Json;
use crate::python::{float, parse_int};
use crate::wal::WalName;

/// One xlog db line (`WalFileInfo`).
#[derive(Debug, Clone, PartialEq)]
pub struct WalEntry {
    pub name: String,
    pub size: i64,
    /// Modification time, seconds since the epoch.
    pub time: f64,
    pub compression: Option<String>,
    pub encryption: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum XlogDbError {
    #[error("cannot access {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot parse line {line_number} of {}: {text:?}", path.display())]
    BadLine {
        path: PathBuf,
        line_number: usize,
        text: String,
    },
    #[error(transparent)]
    Lock(#[from] LockError),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> XlogDbError + '_ {
    move |source| XlogDbError::Io {
        path: path.to_owned(),
        source,
    }
}

impl WalEntry {
    /// `WalFileInfo.from_xlogdb_line`: `None` for a line Barman cannot parse.
    pub fn parse_line(line: &str) -> Option<WalEntry> {
        let columns: Vec<&str> = line.split_whitespace().collect();
        if !(3..=5).contains(&columns.len()) {
            return None;
        }
        let optional = |index: usize| {
            columns
                .get(index)
                .filter(|value| **value != "None")
                .map(|value| (*value).to_owned())
        };
        Some(WalEntry {
            name: columns[0].to_owned(),
            size: i64::try_from(parse_int(columns[1])?).ok()?,
            time: float::parse(columns[2])?,
            compression: optional(3),
            encryption: optional(4),
        })
    }

    /// `WalFileInfo.to_xlogdb_line`.
    pub fn to_line(&self) -> String {
        format!(
            "{}\t{}\t{}\t{}\t{}\n",
            self.name,
            self.size,
            float::repr(self.time),
            self.compression.as_deref().unwrap_or("None"),
            self.encryption.as_deref().unwrap_or("None")
        )
    }

    /// `WalFileInfo.to_json`: keys sorted.
    pub fn to_json(&self) -> Json {
        let optional = |value: &Option<String>| value.clone().map_or(Json::Null, Json::Str);
        Json::Object(vec![
            ("compression".to_owned(), optional(&self.compression)),
            ("encryption".to_owned(), optional(&self.encryption)),
            ("name".to_owned(), Json::Str(self.name.clone())),
            ("size".to_owned(), Json::Int(i128::from(self.size))),
            ("time".to_owned(), Json::Float(self.time)),
        ])
    }

    /// The parsed WAL name, if it follows Barman's grammar.
    pub fn wal_name(&self) -> Option<WalName> {
        WalName::parse(&self.name).ok()
    }
}

/// One line of the file with its byte offset, as sync-info needs positions.
#[derive(Debug, Clone, PartialEq)]
pub struct PositionedLine<'a> {
    pub offset: u64,
    /// The line text including its newline, if it has one.
    pub text: &'a str,
}

/// Splits xlog db content into lines with their starting offsets.
pub fn lines_with_offsets(content: &str) -> impl Iterator<Item = PositionedLine<'_>> {
    let mut offset = 0u64;
    content.split_inclusive('\n').map(move |text| {
        let line = PositionedLine { offset, text };
        offset += text.len() as u64;
        line
    })
}

/// Parses a whole xlog db, failing on the first line Barman could not parse.
pub fn parse_content(content: &str, path: &Path) -> Result<Vec<WalEntry>, XlogDbError> {
    content
        .split_inclusive('\n')
        .enumerate()
        .map(|(index, text)| {
            WalEntry::parse_line(text).ok_or_else(|| XlogDbError::BadLine {
                path: path.to_owned(),
                line_number: index + 1,
                text: text.to_owned(),
            })
        })
        .collect()
}

/// The entries by name, one per name (the last line wins) in name order: the view of a
/// catalog that may hold duplicate and unsorted lines.
pub fn latest_by_name(entries: &[WalEntry]) -> Vec<WalEntry> {
    let mut by_name: std::collections::BTreeMap<&str, &WalEntry> =
        std::collections::BTreeMap::new();
    for entry in entries {
        by_name.insert(&entry.name, entry);
    }
    by_name.into_values().cloned().collect()
}

/// An open xlog db, with Barman's xlogdb lock held while it lives.
pub struct LockedXlogDb {
    path: PathBuf,
    _guard: LockGuard,
}

impl LockedXlogDb {
    /// Opens the server's xlog db as `Server.xlogdb()` does: rebuilt from `wals/` if missing,
    /// then the blocking `.<S>-xlogdb.lock` is taken.
    pub fn open(server: &ServerConfig) -> Result<LockedXlogDb, XlogDbError> {
        let path = server.xlogdb_path();
        if !path.exists() {
            rebuild(server)?;
        }
        let guard = lock::acquire(
            &server.lock_directory(),
            server.name(),
            &LockKind::XlogDb,
            true,
        )?;
        Ok(LockedXlogDb {
            path,
            _guard: guard,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole file as text.
    pub fn read_to_string(&self) -> Result<String, XlogDbError> {
        let mut content = String::new();
        File::open(&self.path)
            .and_then(|mut file| file.read_to_string(&mut content))
            .map_err(io_error(&self.path))?;
        Ok(content)
    }

    /// Appends lines and fsyncs, as `with server.xlogdb("a")` does.
    pub fn append(&self, entries: &[WalEntry]) -> Result<(), XlogDbError> {
        let text: String = entries.iter().map(WalEntry::to_line).collect();
        let mut file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(io_error(&self.path))?;
        file.write_all(text.as_bytes())
            .and_then(|_| file.sync_all())
            .map_err(io_error(&self.path))
    }
}

impl LockedXlogDb {
    /// Appends the entries whose names the file does not list yet (each once, in the given
    /// order) and fsyncs; returns how many were appended. An unfinished last line (a crash in
    /// the middle of an earlier append) is cut off first, so the new lines start on a line of
    /// their own. This makes a repeated WAL sync harmless: no line is ever listed twice.
    pub fn append_missing(&self, entries: &[WalEntry]) -> Result<usize, XlogDbError> {
        let content = self.read_to_string()?;
        let complete = match content.rfind('\n') {
            Some(end) => end + 1,
            None => 0,
        };
        if complete < content.len() {
            let file = OpenOptions::new()
                .write(true)
                .open(&self.path)
                .map_err(io_error(&self.path))?;
            file.set_len(complete as u64)
                .and_then(|_| file.sync_all())
                .map_err(io_error(&self.path))?;
        }
        let mut listed: std::collections::HashSet<&str> = content[..complete]
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .collect();
        let missing: Vec<WalEntry> = entries
            .iter()
            .filter(|entry| listed.insert(entry.name.as_str()))
            .cloned()
            .collect();
        if !missing.is_empty() {
            self.append(&missing)?;
        }
        Ok(missing.len())
    }
}

/// The xlog db file to read for `server`: `<SERVER>-xlog.db`, or the pre-3.13 `wals/xlog.db`
/// when only that one exists (Barman itself would rebuild the new file and delete the old).
pub fn existing_path(server: &ServerConfig) -> Option<PathBuf> {
    [server.xlogdb_path(), server.legacy_xlogdb_path()]
        .into_iter()
        .find(|path| path.is_file())
}

/// Reads every entry of the server's xlog db (new or legacy name) without locking or
/// rebuilding; an empty list when there is none.
pub fn read_entries(server: &ServerConfig) -> Result<Vec<WalEntry>, XlogDbError> {
    let Some(path) = existing_path(server) else {
        return Ok(Vec::new());
    };
    let content = std::fs::read_to_string(&path).map_err(io_error(&path))?;
    parse_content(&content, &path)
}

/// `Server.rebuild_xlogdb`: creates the file if missing, then rewrites it from the archive
/// (hash directories in name order, history files at the root) under the xlogdb lock.
pub fn rebuild(server: &ServerConfig) -> Result<(), XlogDbError> {
    let path = server.xlogdb_path();
    if !path.exists() {
        let directory = server.xlogdb_directory();
        std::fs::create_dir_all(&directory).map_err(io_error(&directory))?;
        OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io_error(&path))?;
        let legacy = server.legacy_xlogdb_path();
        if let Err(error) = std::fs::remove_file(&legacy) {
            if error.kind() != std::io::ErrorKind::NotFound {
                return Err(XlogDbError::Io {
                    path: legacy,
                    source: error,
                });
            }
        }
    }
    let _guard = lock::acquire(
        &server.lock_directory(),
        server.name(),
        &LockKind::XlogDb,
        true,
    )?;
    let root = server.wals_directory();
    let own_name = format!("{}-xlog.db", server.name());
    let mut lines = String::new();
    for name in sorted_names(&root)? {
        if name.starts_with(&own_name) {
            continue;
        }
        let full = root.join(&name);
        if full.is_dir() {
            for wal in sorted_names(&full)? {
                let accepted = matches!(
                    WalName::parse(&wal),
                    Ok(WalName::Segment { .. } | WalName::BackupLabel { .. })
                );
                let wal_path = full.join(&wal);
                if accepted && !wal_path.is_dir() {
                    lines.push_str(&entry_from_file(&wal_path, &wal)?.to_line());
                }
            }
        } else if matches!(WalName::parse(&name), Ok(WalName::History { .. })) {
            lines.push_str(&entry_from_file(&full, &name)?.to_line());
        }
    }
    crate::fsutil::atomic_write(&path, lines.as_bytes()).map_err(io_error(&path))
}

fn sorted_names(directory: &Path) -> Result<Vec<String>, XlogDbError> {
    let mut names: Vec<String> = std::fs::read_dir(directory)
        .map_err(io_error(directory))?
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// `WalFileInfo.from_file`: size, mtime and the compression recognised by magic bytes.
pub fn entry_from_file(path: &Path, name: &str) -> Result<WalEntry, XlogDbError> {
    let metadata = std::fs::metadata(path).map_err(io_error(path))?;
    let mut start = [0u8; 10];
    let mut file = File::open(path).map_err(io_error(path))?;
    let read = file.read(&mut start).map_err(io_error(path))?;
    Ok(WalEntry {
        name: name.to_owned(),
        size: metadata.len() as i64,
        time: python_mtime(&metadata),
        compression: identify_compression(&start[..read]).map(str::to_owned),
        encryption: None,
    })
}

/// `os.stat().st_mtime`: seconds plus nanoseconds as a double, computed as CPython does.
pub fn python_mtime(metadata: &std::fs::Metadata) -> f64 {
    use std::os::unix::fs::MetadataExt;
    metadata.mtime() as f64 + metadata.mtime_nsec() as f64 * 1e-9
}

/// Barman's compression recognition by magic bytes, first match in registry name order.
pub fn identify_compression(start: &[u8]) -> Option<&'static str> {
    const MAGICS: [(&str, &[u8]); 6] = [
        ("bzip2", b"BZh"),
        ("gzip", b"\x1f\x8b\x08"),
        ("lz4", b"\x04\x22\x4d\x18"),
        ("snappy", b"\xff\x06\x00\x00sNaPpY"),
        ("xz", b"\xfd7zXZ\x00"),
        ("zstd", b"(\xb5/\xfd"),
    ];
    MAGICS
        .iter()
        .find(|(_, magic)| start.starts_with(magic))
        .map(|(name, _)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_tolerate_old_formats() {
        let line = "000000010000000000000002\t16777216\t1406019329.93\tNone\tNone\n";
        let entry = WalEntry::parse_line(line).unwrap();
        assert_eq!(entry.to_line(), line);
        let old = WalEntry::parse_line("000000010000000000000003 16384 1704111000").unwrap();
        assert_eq!(
            old.to_line(),
            "000000010000000000000003\t16384\t1704111000.0\tNone\tNone\n"
        );
        let four = WalEntry::parse_line("000000010000000000000003\t10\t1.5\tgzip").unwrap();
        assert_eq!(four.compression.as_deref(), Some("gzip"));
        assert!(WalEntry::parse_line("a b").is_none());
        assert!(WalEntry::parse_line("a 1 2 3 4 5").is_none());
        assert!(WalEntry::parse_line("a x 2").is_none());
    }

    #[test]
    fn offsets_and_duplicates() {
        let content = "b 1 1.0\na 1 2.0\nb 2 3.0";
        let offsets: Vec<u64> = lines_with_offsets(content).map(|l| l.offset).collect();
        assert_eq!(offsets, vec![0, 8, 16]);
        let entries = parse_content(content, Path::new("x")).unwrap();
        let latest = latest_by_name(&entries);
        assert_eq!(
            latest
                .iter()
                .map(|e| (e.name.as_str(), e.size))
                .collect::<Vec<_>>(),
            vec![("a", 1), ("b", 2)]
        );
        let err = parse_content("a 1 1.0\n\n", Path::new("x")).unwrap_err();
        assert!(
            matches!(err, XlogDbError::BadLine { line_number: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn legacy_name_is_read_when_alone() {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("barman.conf");
        let home = dir.path().display();
        std::fs::write(
            &config_path,
            format!("[barman]\nbarman_home = {home}\n[pg]\nprimary_ssh_command = ssh x\n"),
        )
        .unwrap();
        let server = crate::config::Config::load(Some(&config_path))
            .unwrap()
            .server("pg")
            .unwrap()
            .unwrap();
        assert!(read_entries(&server).unwrap().is_empty());
        std::fs::create_dir_all(server.wals_directory()).unwrap();
        std::fs::write(
            server.legacy_xlogdb_path(),
            "000000010000000000000001 16 1.0\n",
        )
        .unwrap();
        assert_eq!(existing_path(&server), Some(server.legacy_xlogdb_path()));
        assert_eq!(
            read_entries(&server).unwrap()[0].name,
            "000000010000000000000001"
        );
        std::fs::write(server.xlogdb_path(), "").unwrap();
        assert_eq!(existing_path(&server), Some(server.xlogdb_path()));
        assert!(read_entries(&server).unwrap().is_empty());
    }

    #[test]
    fn compression_magic() {
        assert_eq!(identify_compression(b"\x1f\x8b\x08\x00rest"), Some("gzip"));
        assert_eq!(identify_compression(b"BZh91AY"), Some("bzip2"));
        assert_eq!(identify_compression(b"WWWW"), None);
    }
}
