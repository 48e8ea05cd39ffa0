//! Catalog files shared with real Barman 3.20.1: backup.info and xlog db lines written by
//! Barman round-trip through barsync byte for byte (and convert to the same JSON), and the
//! files barsync writes are accepted by `barman list-backups` and `barman show-backup`.

mod common;

use std::path::Path;
use std::process::Command;

use barsync_sync::backup_info::BackupInfo;
use barsync_sync::config::Config;
use barsync_sync::syncinfo::{sync_info_json, SyncPoint};
use barsync_sync::xlogdb::{self, LockedXlogDb, WalEntry};
use common::*;

const WRITE_WITH_BARMAN: &str = r#"
import datetime, json, sys
from dateutil import tz
import barman.output
from barman.infofile import BackupInfo, WalFileInfo, Tablespace
from barman.utils import BarmanEncoder
out = sys.argv[1]

full = BackupInfo(backup_id="20240301T101010")
full.status = "DONE"
full.begin_wal = "000000010000000000000002"
full.end_wal = "000000010000000000000003"
full.begin_xlog = "0/2000028"
full.backup_label = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nLABEL: it's \"quoted\" \u00e9 \u2028 \x01 \\ back\n"
full.begin_time = datetime.datetime(2024, 3, 1, 10, 10, 10, 123456, tzinfo=tz.tzutc())
full.end_time = datetime.datetime(2024, 3, 1, 11, 0, 0, tzinfo=tz.tzoffset(None, -(5 * 3600 + 1800)))
full.included_files = ["/etc/a.conf", "/etc/it's.conf"]
full.copy_stats = {"copy_time": 1.1, "analysis_time": 1e-05, "number_of_workers": 4, "serialized_copy_time": 123456789.12345679, "nested": {"a": [1, 2.5, None, True]}}
full.tablespaces = [Tablespace("tbs1", 16387, "/srv/a"), Tablespace("tbs two", 16400, "/srv/b c")]
full.children_backup_ids = ["20240302T000000", "20240303T000000"]
full.size = 123456789012
full.deduplicated_size = 100
full.timeline = 1
full.version = 170002
full.mode = "postgres"
full.systemid = "7318000000000000001"
full.backup_name = "nightly backup \u00fc"
full.server_name = "pg"
full.error = "failure syncing server pg backup x: {'ret': 23, 'out': '', 'err': 'rsync: [Receiver] \\n'}"
full.save(filename=out + "/full-backup.info")

BackupInfo(backup_id="20240302T000000").save(filename=out + "/empty-backup.info")

for name in ("full", "empty"):
    loaded = BackupInfo(backup_id=name)
    loaded.load(filename=out + "/%s-backup.info" % name)
    with open(out + "/%s.json" % name, "w") as f:
        json.dump(loaded.to_json(), f, cls=BarmanEncoder, indent=4)

lines = []
for i, t in enumerate([1704110700.0, 1406019329.93, 1732617263.1234567, 0.1 + 0.2, 1e16, 1.5e-7, 123456789.0]):
    compression = [None, "gzip", "bzip2", "zstd"][i % 4]
    encryption = "gpg" if i == 5 else None
    lines.append(WalFileInfo(name="0000000100000000000000%02X" % (i + 1), size=16777216 - i, time=t,
                             compression=compression, encryption=encryption).to_xlogdb_line())
lines.append(WalFileInfo(name="00000002.history", size=41, time=1704197100.5).to_xlogdb_line())
with open(out + "/xlog.db", "w") as f:
    f.write("".join(lines))
"#;

fn python(script: &str, args: &[&Path]) {
    let output = Command::new(barman_python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn files_written_by_barman_round_trip_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    python(WRITE_WITH_BARMAN, &[dir.path()]);
    for name in ["full", "empty"] {
        let path = dir.path().join(format!("{name}-backup.info"));
        let original = std::fs::read_to_string(&path).unwrap();
        let info = BackupInfo::read(&path).unwrap();
        assert_eq!(
            info.to_file_text(),
            original,
            "{name}-backup.info written back"
        );
        let barman_json = std::fs::read_to_string(dir.path().join(format!("{name}.json"))).unwrap();
        assert_eq!(
            info.to_sync_json().unwrap().dump_indented(),
            barman_json,
            "{name} as sync-info JSON"
        );
        let (back, unknown) =
            BackupInfo::from_sync_json(info.backup_id(), &info.to_sync_json().unwrap()).unwrap();
        assert!(unknown.is_empty());
        assert_eq!(
            back.to_file_text(),
            original,
            "{name}: JSON back to backup.info"
        );
        assert!(info.save(&dir.path().join("missing")).is_err());
        std::fs::create_dir_all(dir.path().join("resaved")).unwrap();
        let saved = info.save(&dir.path().join("resaved")).unwrap();
        assert_eq!(std::fs::read_to_string(saved).unwrap(), original);
    }
    let xlog_path = dir.path().join("xlog.db");
    let original = std::fs::read_to_string(&xlog_path).unwrap();
    let entries = xlogdb::parse_content(&original, &xlog_path).unwrap();
    assert_eq!(entries.len(), 8);
    let rewritten: String = entries.iter().map(WalEntry::to_line).collect();
    assert_eq!(rewritten, original);
}

fn normalise(text: &[u8], from: &Path, to: &Path) -> String {
    String::from_utf8_lossy(text).replace(&from.display().to_string(), &to.display().to_string())
}

#[test]
fn barman_accepts_catalog_files_written_by_barsync() {
    let dir = tempfile::tempdir().unwrap();
    make_fixture(dir.path());
    let primary_conf = dir.path().join("primary.conf");
    let primary_home = dir.path().join("primary-home");
    let copy_home = dir.path().join("copy-home");
    let copy_conf = dir.path().join("copy.conf");
    let text = std::fs::read_to_string(&primary_conf).unwrap().replace(
        &primary_home.display().to_string(),
        &copy_home.display().to_string(),
    );
    std::fs::write(&copy_conf, text).unwrap();

    // The primary's catalog as sync-info describes it, rebuilt by barsync in an empty home.
    let primary = Config::load(Some(&primary_conf))
        .unwrap()
        .server("pg")
        .unwrap()
        .unwrap();
    let document = sync_info_json(&primary, &SyncPoint::default()).unwrap();
    let copy = Config::load(Some(&copy_conf))
        .unwrap()
        .server("pg")
        .unwrap()
        .unwrap();
    std::fs::create_dir_all(copy.meta_directory()).unwrap();
    std::fs::create_dir_all(copy.wals_directory()).unwrap();
    let Some(barsync_sync::python::json::Json::Object(backups)) = document.get("backups") else {
        panic!("no backups")
    };
    for (id, entry) in backups {
        let (info, unknown) = BackupInfo::from_sync_json(id, entry).unwrap();
        assert!(unknown.is_empty());
        info.save(&copy.meta_directory()).unwrap();
    }
    let primary_lines = std::fs::read_to_string(primary.xlogdb_path()).unwrap();
    let entries = xlogdb::parse_content(&primary_lines, &primary.xlogdb_path()).unwrap();
    let xlog = LockedXlogDb::open(&copy).unwrap();
    xlog.append(&entries).unwrap();
    drop(xlog);
    assert_eq!(
        std::fs::read_to_string(copy.xlogdb_path()).unwrap(),
        primary_lines
    );
    // show-backup reads timeline history files from the archive: copy the one WAL archive file
    // it opens (WAL copying itself is the passive node's business, not the catalog's).
    std::fs::copy(
        primary.wals_directory().join("00000002.history"),
        copy.wals_directory().join("00000002.history"),
    )
    .unwrap();

    let primary_list = run_barman(&primary_conf, &["list-backups", "pg"]);
    let copy_list = run_barman(&copy_conf, &["list-backups", "pg"]);
    assert_eq!(
        copy_list.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&copy_list.stderr)
    );
    let listing = String::from_utf8_lossy(&copy_list.stdout).into_owned();
    assert!(
        listing.contains("pg 20240101T120000") && listing.contains("pg 20240102T120000"),
        "{listing}"
    );
    assert_eq!(listing, String::from_utf8_lossy(&primary_list.stdout));
    for id in ["20240101T120000", "20240102T120000"] {
        let primary_show = run_barman(&primary_conf, &["show-backup", "pg", id]);
        let copy_show = run_barman(&copy_conf, &["show-backup", "pg", id]);
        assert_eq!(
            copy_show.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&copy_show.stderr)
        );
        let shown = String::from_utf8_lossy(&copy_show.stdout).into_owned();
        assert!(shown.contains("DONE") && shown.contains("tbs1"), "{shown}");
        assert_eq!(
            shown,
            normalise(&primary_show.stdout, &primary_home, &copy_home),
            "show-backup {id}"
        );
    }
}
