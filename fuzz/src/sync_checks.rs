//! Checks of barsync-sync's readers of Barman files and of a primary's sync-info:
//! `sync_info_parse`, `backup_info_parse`, `xlogdb_parse`, `config_parse` and the WAL and
//! backup names of `path_validate`.
//!
//! Shared by the fuzz targets and `sync/tests/fuzz_corpus.rs` (included there with `#[path]`),
//! so only `std` and `barsync_sync` may be used here.

use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use barsync_sync::backup_info::{BackupInfo, FIELDS, HIDDEN_IF_NULL, INT_FIELDS, LITERAL_FIELDS};
use barsync_sync::config::Config;
use barsync_sync::python::datetime::DateTime;
use barsync_sync::python::json::{self, Json};
use barsync_sync::python::literal::{self, PyValue};
use barsync_sync::python::{float, parse_int};
use barsync_sync::syncinfo::PrimaryInfo;
use barsync_sync::wal::{BackupId, WalName};
use barsync_sync::xlogdb::{self, WalEntry};

/// The backup ID the fuzzed backup.info files are read under.
const BACKUP_ID: &str = "20240101T120000";

/// `sync_info_parse`: `data` is the sync-info JSON a primary answered. Properties: any JSON
/// document dumps to text that parses back to it; every backup entry a passive would store
/// becomes a backup.info text that reads back to the same values; every WAL entry a passive
/// would accept becomes an xlog db line that reads back to it.
pub fn sync_info_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(document) = json::parse(text) {
        json_round_trip(&document);
    }
    let Ok(info) = PrimaryInfo::parse("pg", text) else {
        return;
    };
    for id in info.backup_ids() {
        let Ok(Some((backup, _unknown))) = info.backup("pg", id) else {
            continue;
        };
        assert_eq!(backup.backup_id(), id);
        exercise_accessors(&backup);
        file_round_trip(&backup);
    }
    for wal in &info.wals {
        json_round_trip(&wal.to_json());
        // What a passive accepts (sync-wals checks the name and the size) it appends to its
        // xlog db, which Barman reads too: the line must read back to the entry.
        if let Some(name) = wal.wal_name().filter(|_| wal.size >= 0) {
            wal_name_properties(&wal.name, &name);
            stored_wal_line_round_trip(wal);
        }
    }
}

/// The xlog db line of `wal` splits into its five columns as Python's `str.split()` splits
/// it (Barman's reader), and reads back to `wal` (a `"None"` text reads as null, as in
/// Barman).
fn stored_wal_line_round_trip(wal: &WalEntry) {
    let line = wal.to_line();
    let python_columns = line
        .split(|c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c))
        .filter(|column| !column.is_empty())
        .count();
    assert_eq!(python_columns, 5, "xlog db line {line:?} of {wal:?}");
    let again = WalEntry::parse_line(&line).unwrap_or_else(|| panic!("{line:?} does not parse"));
    let null_text = |value: &Option<String>| value.clone().filter(|text| text != "None");
    assert_eq!(again.name, wal.name);
    assert_eq!(again.size, wal.size);
    assert!(again.time == wal.time || (again.time.is_nan() && wal.time.is_nan()));
    assert_eq!(again.compression, null_text(&wal.compression), "{line:?}");
    assert_eq!(again.encryption, null_text(&wal.encryption), "{line:?}");
}

/// Python's `json.loads(json.dumps(doc, indent=4))` gives `doc` back (NaN aside, which is not
/// equal to itself): the dump parses, to the same document, and dumps to the same text.
pub fn json_round_trip(document: &Json) {
    let dumped = document.dump_indented();
    let again = json::parse(&dumped)
        .unwrap_or_else(|error| panic!("a dumped document does not parse: {error}\n{dumped}"));
    if !json_has_nan(document) {
        assert_eq!(&again, document, "dump:\n{dumped}");
    }
    assert_eq!(again.dump_indented(), dumped);
}

fn json_has_nan(value: &Json) -> bool {
    match value {
        Json::Float(number) => number.is_nan(),
        Json::Array(items) => items.iter().any(json_has_nan),
        Json::Object(entries) => entries.iter().any(|(_, value)| json_has_nan(value)),
        _ => false,
    }
}

/// `backup_info_parse`: `data` is a backup.info file. Properties: the text barsync writes back
/// reads back to the same values, every key included; the typed accessors never panic, and
/// what they decode survives Python's `repr`/`str` round trips; the sync-info entry of the
/// backup gives a backup.info that reads back the same.
pub fn backup_info_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(info) = BackupInfo::parse(BACKUP_ID, text, Path::new("fuzz-backup.info")) else {
        return;
    };
    exercise_accessors(&info);
    let again = file_round_trip(&info);
    // Keys not in FIELDS are kept too: find them in the text as the reader splits it.
    for line in text.split_inclusive('\n') {
        if line.trim().is_empty() || line.trim_end().starts_with('#') {
            continue;
        }
        let (key, _) = line.split_once('=').expect("the file parsed");
        let key = key.trim();
        assert_eq!(
            stored_value(&again, key),
            stored_value(&info, key),
            "key {key:?} changed through the written file"
        );
    }
    if let Ok(entry) = info.to_sync_json() {
        json_round_trip(&entry);
        if let Ok((received, unknown)) = BackupInfo::from_sync_json(BACKUP_ID, &entry) {
            assert!(unknown.is_empty(), "own keys reported unknown: {unknown:?}");
            exercise_accessors(&received);
            file_round_trip(&received);
        }
    }
}

/// What `to_file_text` writes for `key` (`None`: no line).
fn stored_value<'a>(info: &'a BackupInfo, key: &str) -> Option<&'a str> {
    let value = info.raw(key).unwrap_or(match key {
        "status" => "EMPTY",
        "xlog_segment_size" => "16777216",
        _ if FIELDS.contains(&key) => "None",
        _ => return None,
    });
    if value == "None" && HIDDEN_IF_NULL.contains(&key) {
        None
    } else {
        Some(value)
    }
}

/// Writes `info` as backup.info text and reads it back: every field keeps its value (up to the
/// surrounding whitespace the reader strips, as Barman's does), and writing what was read
/// gives a text that reads back to exactly it. Returns what was read back.
fn file_round_trip(info: &BackupInfo) -> BackupInfo {
    let read_back = |text: &str| {
        BackupInfo::parse(info.backup_id(), text, Path::new("written-backup.info"))
            .unwrap_or_else(|error| panic!("written backup.info does not parse: {error}\n{text}"))
    };
    let written = info.to_file_text();
    let again = read_back(&written);
    for key in FIELDS {
        assert_eq!(
            stored_value(&again, key),
            stored_value(info, key).map(str::trim),
            "field {key} changed through the written file:\n{written}"
        );
    }
    let rewritten = again.to_file_text();
    assert_eq!(read_back(&rewritten), again, "written:\n{rewritten}");
    again
}

/// Calls every typed accessor; decoded values must survive Python's round trips.
fn exercise_accessors(info: &BackupInfo) {
    let _ = info.status();
    let _ = info.tablespaces();
    let _ = (info.begin_wal(), info.end_wal(), info.parent_backup_id());
    let _ = info.children_backup_ids();
    for key in FIELDS {
        let _ = info.text(key);
    }
    for key in INT_FIELDS {
        if let Ok(Some(value)) = info.int(key) {
            assert_eq!(parse_int(&value.to_string()), Some(value));
        }
    }
    for key in LITERAL_FIELDS {
        if let Ok(Some(value)) = info.literal(key) {
            literal_round_trip(&value);
        }
    }
    for key in ["begin_time", "end_time"] {
        if let Ok(Some(time)) = info.time(key) {
            datetime_round_trip(&time);
        }
    }
}

/// `ast.literal_eval(repr(value)) == value` for values without NaN or infinities (whose
/// `repr` Python cannot evaluate either).
fn literal_round_trip(value: &PyValue) {
    if py_has_non_finite(value) {
        return;
    }
    let text = value.repr();
    let again = literal::parse(&text)
        .unwrap_or_else(|error| panic!("repr {text:?} does not evaluate: {error}"));
    assert_eq!(&again, value, "repr {text:?}");
}

fn py_has_non_finite(value: &PyValue) -> bool {
    match value {
        PyValue::Float(number) => !number.is_finite(),
        PyValue::List(items) | PyValue::Tuple(items) => items.iter().any(py_has_non_finite),
        PyValue::Dict(entries) => entries
            .iter()
            .any(|(key, value)| py_has_non_finite(key) || py_has_non_finite(value)),
        _ => false,
    }
}

/// `str()` and `isoformat()` of a time parse back to it; `ctime()` to the same wall time.
fn datetime_round_trip(time: &DateTime) {
    for text in [time.to_python_str(), time.isoformat()] {
        assert_eq!(DateTime::parse(&text).as_ref(), Ok(time), "{text:?}");
    }
    let ctime = time.ctime();
    let wall = DateTime::parse(&ctime).unwrap_or_else(|e| panic!("ctime {ctime:?}: {e}"));
    assert_eq!(
        (wall.year, wall.month, wall.day),
        (time.year, time.month, time.day)
    );
    assert_eq!(
        (wall.hour, wall.minute, wall.second),
        (time.hour, time.minute, time.second)
    );
    let _ = time.unix_seconds();
}

/// `xlogdb_parse`: `data` is an xlog db. Properties: a file that parses has one entry per line;
/// each entry's line (`to_line`) parses back to it; the latest-by-name view is sorted and
/// unique; each line alone parses as it does within the file.
pub fn xlogdb_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut offset = 0u64;
    for line in xlogdb::lines_with_offsets(text) {
        assert_eq!(line.offset, offset);
        offset += line.text.len() as u64;
        if let Some(entry) = WalEntry::parse_line(line.text) {
            wal_entry_round_trip(&entry);
        }
    }
    assert_eq!(offset, text.len() as u64);
    let Ok(entries) = xlogdb::parse_content(text, Path::new("fuzz-xlog.db")) else {
        return;
    };
    assert_eq!(entries.len(), text.split_inclusive('\n').count());
    for entry in &entries {
        wal_entry_round_trip(entry);
    }
    let latest = xlogdb::latest_by_name(&entries);
    assert!(latest.windows(2).all(|pair| pair[0].name < pair[1].name));
    let rewritten: String = entries.iter().map(WalEntry::to_line).collect();
    let again = xlogdb::parse_content(&rewritten, Path::new("rewritten-xlog.db"))
        .expect("rewritten xlog db parses");
    assert_eq!(again.len(), entries.len());
}

fn wal_entry_round_trip(entry: &WalEntry) {
    assert!(!entry.name.is_empty() && !entry.name.contains(char::is_whitespace));
    let line = entry.to_line();
    let again = WalEntry::parse_line(&line).unwrap_or_else(|| panic!("{line:?} does not parse"));
    assert_eq!(again.name, entry.name);
    assert_eq!(again.size, entry.size);
    assert!(
        again.time == entry.time || (again.time.is_nan() && entry.time.is_nan()),
        "time {} became {} through {line:?}",
        entry.time,
        again.time
    );
    assert_eq!(again.compression, entry.compression);
    assert_eq!(again.encryption, entry.encryption);
    assert_eq!(again.to_line(), line);
    assert!(
        float::parse(&float::repr(entry.time)).is_some(),
        "repr of a time does not parse"
    );
    json_round_trip(&entry.to_json());
    if let Some(name) = entry.wal_name() {
        wal_name_properties(&entry.name, &name);
    }
}

/// Stands for the include directory in fuzzed configuration text (the only one it may name).
pub const INCLUDE_PLACEHOLDER: &str = "@CONFD@";

/// `config_parse`: `data` is a barman.conf, optionally followed by a NUL and a file of the
/// `configuration_files_directory`, which the text names as `@CONFD@`. Inputs naming any other
/// include directory are skipped, so a run reads no file but these two. Properties: loading
/// and building every server never panics; each server is found by its name; the servers'
/// JSON round-trips.
pub fn config_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if !includes_only_placeholder(text) {
        return;
    }
    let (main, include) = match text.split_once('\0') {
        Some((main, include)) => (main, Some(include)),
        None => (text, None),
    };
    let dir = config_dir();
    let include_dir = dir.join("conf.d");
    let include_file = include_dir.join("fuzz.conf");
    match include {
        Some(include) => std::fs::write(&include_file, include).expect("writing the include"),
        None => {
            let _ = std::fs::remove_file(&include_file);
        }
    }
    let main_file = dir.join("barman.conf");
    let main = main.replace(INCLUDE_PLACEHOLDER, &include_dir.to_string_lossy());
    std::fs::write(&main_file, main).expect("writing the configuration");

    let Ok(config) = Config::load(Some(&main_file)) else {
        return;
    };
    let _ = config.sections();
    let _ = config.all_option_warnings();
    let _ = config.global_path_conflicts();
    let names = config.server_names();
    for (section, options) in config.sections() {
        for (key, _) in options {
            let _ = config.source(&section, &key);
        }
    }
    let Ok(servers) = config.servers() else {
        return;
    };
    let expected: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|name| *name != "all")
        .collect();
    let built: Vec<&str> = servers.iter().map(|server| server.name()).collect();
    assert_eq!(built, expected);
    for server in &servers {
        json_round_trip(&server.to_json());
        let _ = (server.barman_home(), server.lock_directory());
        let _ = (server.backup_directory(), server.basebackups_directory());
        let _ = (server.meta_directory(), server.wals_directory());
        let _ = (server.xlogdb_directory(), server.xlogdb_path());
        let _ = (
            server.legacy_xlogdb_path(),
            server.incoming_wals_directory(),
        );
        let _ = (server.streaming_wals_directory(), server.errors_directory());
        let _ = (server.primary_info_path(), server.primary_ssh_command());
        let _ = (server.is_passive(), server.forward_config_path());
        let _ = (server.compression(), server.parallel_jobs());
        let _ = (server.bandwidth_limit(), server.network_compression());
        let _ = (server.reuse_backup(), server.basebackup_retry_times());
        let _ = (server.basebackup_retry_sleep(), server.retention_policy());
        let _ = (server.minimum_redundancy(), server.is_disabled());
    }
    // Each lookup builds every server again: a few are enough.
    for server in servers.iter().take(3) {
        let found = config
            .server(server.name())
            .expect("servers() built it")
            .expect("a server of servers() is found by name");
        assert_eq!(found.name(), server.name());
    }
    if names.iter().any(|name| name == "all") {
        assert!(config.server("all").is_err());
    }
}

/// True when every `configuration_files_directory` in `text` (keys are matched case-insensitively,
/// as the reader lower-cases them; no other character lower-cases into this ASCII key) has the
/// value `@CONFD@` alone on its line. Conservative: any other mention skips the input.
fn includes_only_placeholder(text: &str) -> bool {
    const KEY: &str = "configuration_files_directory";
    let lower = text.to_ascii_lowercase();
    let mut position = 0;
    while let Some(found) = lower[position..].find(KEY) {
        let after_key = position + found + KEY.len();
        let rest = text[after_key..].trim_start_matches([' ', '\t']);
        let Some(value) = rest.strip_prefix(['=', ':']) else {
            return false;
        };
        let line = value.split('\n').next().unwrap_or("");
        if line.trim() != INCLUDE_PLACEHOLDER {
            return false;
        }
        position = text.len() - value.len() + line.len();
    }
    true
}

/// The directory of the configuration files (and of `conf.d/`).
fn config_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch_dir("config");
        std::fs::create_dir_all(dir.join("conf.d")).expect("creating conf.d");
        dir
    })
}

/// This process's scratch directory `barsync-fuzz-{label}-{pid}` (in /dev/shm when there is
/// one), created once; those left by processes that are gone are removed first (libFuzzer
/// exits without running destructors).
fn scratch_dir(label: &str) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let prefix = format!("barsync-fuzz-{label}-");
    if Path::new("/proc/self").exists() {
        for entry in std::fs::read_dir(&base).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|name| name.strip_prefix(&prefix)) else {
                continue;
            };
            if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = base.join(format!("{prefix}{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating a scratch directory");
    dir
}

/// `path_validate` (sync half): each line of `data`, and the whole of it, as a WAL name or a
/// backup ID. Properties: an accepted WAL name is a single plain file name whose hash
/// directory is its first 16 characters in upper case (none for history files), and its
/// relative path is that directory and the name, with no `..` and not absolute; an accepted
/// backup ID is 15 ASCII characters of one plain path component.
pub fn wal_and_backup_names(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for candidate in std::iter::once(text).chain(text.split('\n')) {
        if let Ok(name) = WalName::parse(candidate) {
            wal_name_properties(candidate, &name);
        }
        if let Ok(id) = BackupId::parse(candidate) {
            assert_eq!(id.as_str(), candidate);
            assert_eq!(id.to_string(), candidate);
            assert!(candidate.len() == 15 && candidate.is_ascii());
            assert!(single_plain_component(candidate), "{candidate:?}");
        }
    }
}

fn single_plain_component(name: &str) -> bool {
    let mut components = Path::new(name).components();
    matches!(components.next(), Some(Component::Normal(n)) if n == name)
        && components.next().is_none()
}

fn wal_name_properties(text: &str, name: &WalName) {
    assert!(text.is_ascii(), "{text:?}");
    assert!(single_plain_component(text), "{text:?}");
    assert_eq!(WalName::parse(text).as_ref(), Ok(name));
    let hash_dir = name.hash_dir();
    let relative = name.relative_path(text);
    match name {
        WalName::History { timeline } => {
            assert_eq!(hash_dir, "");
            assert_eq!(text.len(), 16);
            assert_eq!(relative, Path::new(text));
            assert_eq!(format!("{timeline:08X}"), text[..8].to_ascii_uppercase());
        }
        _ => {
            assert_eq!(hash_dir, text[..16].to_ascii_uppercase());
            assert_eq!(relative, Path::new(&hash_dir).join(text));
            assert_eq!(
                format!("{:08X}", name.timeline()),
                text[..8].to_ascii_uppercase()
            );
        }
    }
    assert!(
        relative
            .components()
            .all(|component| matches!(component, Component::Normal(_))),
        "{relative:?}"
    );
    assert_eq!(relative.file_name().and_then(|n| n.to_str()), Some(text));
}
