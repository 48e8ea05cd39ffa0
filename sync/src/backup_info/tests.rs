//! Unit tests of backup.info handling; round trips through real Barman are in sync/tests/.

use super::*;
use crate::python::json::Json;

const SAMPLE: &str = "backup_label='START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\\nCHECKPOINT LOCATION: 0/2000060\\n'
begin_offset=40
begin_time=2024-01-01 12:00:00.123456+00:00
begin_wal=000000010000000000000002
begin_xlog=0/2000028
children_backup_ids=None
cluster_size=57409
compression=None
config_file=/var/lib/postgresql/16/main/postgresql.conf
copy_stats={'copy_time': 1.25, 'analysis_time': 0.5, 'number_of_workers': 1, 'total_time': 2.0}
data_checksums=on
deduplicated_size=57409
encryption=None
end_offset=312
end_time=2024-01-01 12:05:00.654321+00:00
end_wal=000000010000000000000002
end_xlog=0/2000138
error=None
hba_file=/var/lib/postgresql/16/main/pg_hba.conf
ident_file=/var/lib/postgresql/16/main/pg_ident.conf
included_files=None
mode=rsync-concurrent
parent_backup_id=None
pgdata=/var/lib/postgresql/16/main
server_name=pg
size=57409
status=DONE
summarize_wal=off
systemid=7318000000000000001
tablespaces=[('tbs1', 16387, '/srv/pg/tbs1')]
timeline=1
version=160002
xlog_segment_size=16777216
";

fn sample() -> BackupInfo {
    BackupInfo::parse("20240101T120000", SAMPLE, Path::new("sample")).unwrap()
}

#[test]
fn file_round_trip_is_exact() {
    assert_eq!(sample().to_file_text(), SAMPLE);
}

#[test]
fn typed_accessors() {
    let info = sample();
    assert_eq!(info.status().unwrap(), BackupStatus::Done);
    assert_eq!(info.begin_wal(), Some("000000010000000000000002"));
    assert_eq!(
        info.tablespaces().unwrap(),
        vec![Tablespace {
            name: "tbs1".into(),
            oid: 16387,
            location: "/srv/pg/tbs1".into()
        }]
    );
    assert_eq!(info.int("size").unwrap(), Some(57409));
    assert!(info.children_backup_ids().is_empty());
}

#[test]
fn sync_json_shape_and_reverse() {
    let info = sample();
    let json = info.to_sync_json().unwrap();
    let Json::Object(entries) = &json else {
        panic!()
    };
    let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys.first(), Some(&"backup_label"));
    assert_eq!(
        &keys[keys.len() - 3..],
        &["backup_id", "begin_time_iso", "end_time_iso"]
    );
    assert!(
        !keys.contains(&"backup_name"),
        "null hidden fields are left out"
    );
    assert_eq!(
        json.get("begin_time"),
        Some(&Json::Str("Mon Jan  1 12:00:00 2024".into()))
    );
    assert_eq!(
        json.get("backup_label"),
        Some(&Json::Str("'START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\\nCHECKPOINT LOCATION: 0/2000060\\n'".into()))
    );
    assert_eq!(
        json.get("tablespaces"),
        Some(&Json::Array(vec![Json::Array(vec![
            Json::Str("tbs1".into()),
            Json::Int(16387),
            Json::Str("/srv/pg/tbs1".into())
        ])]))
    );
    let (back, unknown) = BackupInfo::from_sync_json("20240101T120000", &json).unwrap();
    assert!(unknown.is_empty());
    assert_eq!(
        back.to_file_text(),
        SAMPLE,
        "JSON -> backup.info gives the primary's file back"
    );
}

#[test]
fn from_sync_json_names_bad_fields_and_skips_unknown() {
    let mut json = sample().to_sync_json().unwrap();
    if let Json::Object(entries) = &mut json {
        entries.push(("new_field_of_barman_9".into(), Json::Int(1)));
    }
    let (_, unknown) = BackupInfo::from_sync_json("x", &json).unwrap();
    assert_eq!(unknown, vec!["new_field_of_barman_9"]);
    let bad = crate::python::json::parse(r#"{"size": "big"}"#).unwrap();
    let err = BackupInfo::from_sync_json("x", &bad).unwrap_err();
    assert_eq!(err.field, "size");
}

#[test]
fn key_that_would_be_written_as_a_comment_is_refused() {
    // Found by the backup_info_parse fuzz target's round-trip property: " #x=1" was kept as key
    // "#x", then written as "#x=1", a comment, and lost. Barman refuses this line too.
    let err = BackupInfo::parse("x", "status=DONE\n #x=1\n", Path::new("f")).unwrap_err();
    assert!(matches!(err, BackupInfoError::BadLine { ref text, .. } if text == "#x=1"));
    assert!(BackupInfo::parse("x", "# comment=with equals\nstatus=DONE\n", Path::new("f")).is_ok());
}

#[test]
fn from_sync_json_refuses_a_line_break_in_a_plain_field() {
    // Found by the sync_info_parse fuzz target's round-trip property: the value was stored as
    // is, so the backup.info written for it read back with other values (here a DONE backup
    // read back as FAILED).
    let mut json = sample().to_sync_json().unwrap();
    if let Json::Object(entries) = &mut json {
        for (key, value) in entries.iter_mut() {
            if key == "systemid" {
                *value = Json::Str("7318000000000000001\nstatus=FAILED".into());
            }
        }
    }
    let err = BackupInfo::from_sync_json("x", &json).unwrap_err();
    assert_eq!(err.field, "systemid");
}

#[test]
fn new_backup_gets_barman_defaults() {
    let mut info = BackupInfo::new("20240101T000000");
    info.set_status(BackupStatus::Syncing);
    let text = info.to_file_text();
    assert!(text.contains("status=SYNCING\n"));
    assert!(text.contains("xlog_segment_size=16777216\n"));
    assert!(!text.contains("backup_name"));
    assert_eq!(text.lines().count(), FIELDS.len() - HIDDEN_IF_NULL.len());
}

#[test]
fn backup_id_detection() {
    assert_eq!(
        backup_id_from_path(Path::new("/x/meta/20240101T120000-backup.info")),
        "20240101T120000"
    );
    assert_eq!(
        backup_id_from_path(Path::new("/x/base/20240101T120000/backup.info")),
        "20240101T120000"
    );
}

#[test]
fn a_text_field_with_a_line_break_keeps_the_file_readable() {
    // A failure naming a file whose name holds a newline (legal, and chosen by the primary):
    // written as is, the FAILED backup's file had a line no reader accepts, and every later
    // command on the server failed with "invalid line".
    let mut info = sample();
    info.set_status(BackupStatus::Failed);
    info.set_text("error", Some("failure: /b/x\nstatus=DONE: mismatch\r"));
    let text = info.to_file_text();
    assert_eq!(text.lines().count(), SAMPLE.lines().count(), "{text}");
    let back = BackupInfo::parse("20240101T120000", &text, Path::new("sample")).unwrap();
    assert_eq!(
        back.text("error"),
        Some("failure: /b/x\\nstatus=DONE: mismatch\\r")
    );
    assert_eq!(back.status().unwrap(), BackupStatus::Failed);
}
