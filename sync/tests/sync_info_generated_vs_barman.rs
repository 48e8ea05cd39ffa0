//! `barsync sync-info` against real Barman 3.20.1 on generated catalogs: many backups,
//! thousands of WALs, several timelines, compressed WALs, tablespaces, legacy backup.info,
//! duplicate xlog db lines, a rebuilt xlog db, and hundreds of incremental requests.

mod common;

use barsync_sync::python::json::{self, Json};
use common::*;

#[test]
fn generated_catalog_many_backups_thousands_of_wals_timelines_compression() {
    let dir = tempfile::tempdir().unwrap();
    let spec = CatalogSpec {
        backups: 40,
        wals_per_backup: 60,
        timelines: 3,
        compression: Some("gzip"),
        tablespaces: 2,
        legacy_backup_info: true,
        mixed_statuses: true,
        ..CatalogSpec::default()
    };
    let catalog = generate_catalog(dir.path(), &spec);
    assert!(catalog.wal_names.len() > 2400);
    let full = assert_same_sync_info(&catalog.config, "pg", &[]);
    let position = last_position_of(&full);
    let last = catalog.wal_names.last().unwrap().clone();
    let middle = catalog.wal_names[catalog.wal_names.len() / 2].clone();
    assert_same_sync_info(&catalog.config, "pg", &[&last, &position]);
    assert_same_sync_info(&catalog.config, "pg", &[&middle]);
    assert_same_sync_info(&catalog.config, "pg", &[&middle, "12345"]);
    let history = catalog
        .wal_names
        .iter()
        .find(|n| n.ends_with(".history"))
        .unwrap()
        .clone();
    assert_same_sync_info(&catalog.config, "pg", &[&history]);
}

#[test]
fn generated_catalog_with_duplicates_and_small_shapes() {
    for spec in [
        CatalogSpec {
            duplicate_lines: true,
            ..CatalogSpec::default()
        },
        CatalogSpec {
            backups: 0,
            ..CatalogSpec::default()
        },
        CatalogSpec {
            tablespaces: 0,
            compression: Some("bzip2"),
            ..CatalogSpec::default()
        },
        CatalogSpec {
            server: "main-db".into(),
            legacy_backup_info: true,
            ..CatalogSpec::default()
        },
    ] {
        let dir = tempfile::tempdir().unwrap();
        let catalog = generate_catalog(dir.path(), &spec);
        let full = assert_same_sync_info(&catalog.config, &spec.server, &[]);
        let position = last_position_of(&full);
        let names = &catalog.wal_names;
        assert_same_sync_info(
            &catalog.config,
            &spec.server,
            &[&names[names.len() - 1], &position],
        );
        assert_same_sync_info(&catalog.config, &spec.server, &[&names[1]]);
    }
}

#[test]
fn missing_xlogdb_is_rebuilt_like_barman_does() {
    let dir = tempfile::tempdir().unwrap();
    let spec = CatalogSpec {
        backups: 3,
        wals_per_backup: 5,
        timelines: 2,
        compression: Some("gzip"),
        ..CatalogSpec::default()
    };
    let catalog = generate_catalog(dir.path(), &spec);
    let wals = catalog.home.join("pg/wals");
    // Stray files Barman's rebuild skips, and a legacy xlog.db it deletes.
    std::fs::write(
        wals.join("0000000100000000/000000010000000000000099.tmp"),
        b"x",
    )
    .unwrap();
    std::fs::write(
        wals.join("0000000100000000/000000010000000000000098.partial"),
        b"x",
    )
    .unwrap();
    std::fs::write(wals.join("unexpected"), b"x").unwrap();
    let xlogdb = wals.join("pg-xlog.db");

    std::fs::remove_file(&xlogdb).unwrap();
    std::fs::write(wals.join("xlog.db"), b"legacy").unwrap();
    let barman = run_barman(&catalog.config, &["sync-info", "pg"]);
    assert_eq!(
        barman.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&barman.stderr)
    );
    let rebuilt_by_barman = std::fs::read_to_string(&xlogdb).unwrap();
    assert!(!wals.join("xlog.db").exists());

    std::fs::remove_file(&xlogdb).unwrap();
    std::fs::write(wals.join("xlog.db"), b"legacy").unwrap();
    let ours = run_barsync(&catalog.config, "pg", None, None);
    assert_eq!(ours.exit_code, 0, "{:?}", ours.stderr);
    assert_eq!(
        std::fs::read_to_string(&xlogdb).unwrap(),
        rebuilt_by_barman,
        "rebuilt xlog db"
    );
    assert!(!wals.join("xlog.db").exists());
    assert_eq!(
        String::from_utf8(ours.stdout).unwrap(),
        String::from_utf8(barman.stdout).unwrap()
    );
    assert!(
        rebuilt_by_barman.contains("\tgzip\tNone\n") && rebuilt_by_barman.contains(".history\t")
    );
}

/// Runs Barman's own `Server.sync_status` for many requests in one Python process.
const SYNC_STATUS_BATCH: &str = r#"
import contextlib, io, json, sys
import barman.output
import barman
from barman.config import Config
from barman.server import Server
from barman.exceptions import SyncError
barman.__config__ = config = Config(sys.argv[1])
server = Server(config.get_server("pg"))
results = []
for last_wal, last_position in json.load(open(sys.argv[2])):
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            server.sync_status(last_wal, last_position)
        results.append({"ok": out.getvalue()})
    except SyncError as e:
        results.append({"error": str(e)})
json.dump(results, open(sys.argv[3], "w"))
"#;

#[test]
fn hundreds_of_incremental_requests_match_barmans_sync_status() {
    let clean = CatalogSpec {
        backups: 6,
        wals_per_backup: 8,
        timelines: 3,
        ..CatalogSpec::default()
    };
    let (documents, errors) = compare_request_batch(&clean);
    assert!(
        documents >= 100 && errors >= 10,
        "{documents} documents, {errors} errors"
    );
    // Duplicated lines at the end make an old WAL the last line, so many requests become
    // "newer than the last available wal" for both tools.
    let (documents, errors) = compare_request_batch(&CatalogSpec {
        duplicate_lines: true,
        ..clean
    });
    assert!(
        documents >= 30 && errors >= 30,
        "{documents} documents, {errors} errors"
    );
}

/// Compares Barman's and barsync's answers to many requests; returns how many documents and
/// how many errors were compared.
fn compare_request_batch(spec: &CatalogSpec) -> (usize, usize) {
    use barsync_sync::config::Config;
    use barsync_sync::syncinfo::{sync_info_text, SyncPoint};
    use barsync_sync::xlogdb::lines_with_offsets;

    let dir = tempfile::tempdir().unwrap();
    let catalog = generate_catalog(dir.path(), spec);
    let content = std::fs::read_to_string(catalog.home.join("pg/wals/pg-xlog.db")).unwrap();
    let mut requests: Vec<(Option<String>, Option<u64>)> = vec![(None, None)];
    for line in lines_with_offsets(&content) {
        let name = line.text.split('\t').next().unwrap().to_owned();
        requests.push((Some(name.clone()), Some(line.offset)));
        requests.push((Some(name.clone()), Some(line.offset + 1)));
        requests.push((Some(name.clone()), None));
        if name.len() == 24 {
            // A name between two archived ones, and the same name upper/lower cased.
            requests.push((Some(format!("{}0", &name[..23])), None));
            requests.push((Some(name.to_lowercase()), Some(line.offset)));
        }
    }
    requests.push((Some(String::new()), None));
    requests.push((Some("FFFFFFFF".to_owned()), Some(1_000_000)));
    requests.push((Some("00000001".to_owned()), Some(0)));

    let requests_path = dir.path().join("requests.json");
    let requests_json: Vec<String> = requests
        .iter()
        .map(|(wal, position)| {
            let wal = wal
                .as_ref()
                .map_or("null".to_owned(), |w| format!("\"{w}\""));
            let position = position.map_or("null".to_owned(), |p| p.to_string());
            format!("[{wal}, {position}]")
        })
        .collect();
    std::fs::write(&requests_path, format!("[{}]", requests_json.join(", "))).unwrap();
    let results_path = dir.path().join("results.json");
    let output = std::process::Command::new(barman_python())
        .arg("-c")
        .arg(SYNC_STATUS_BATCH)
        .arg(&catalog.config)
        .arg(&requests_path)
        .arg(&results_path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let results = json::parse(&std::fs::read_to_string(&results_path).unwrap()).unwrap();
    let Json::Array(results) = results else {
        panic!("results")
    };
    assert_eq!(results.len(), requests.len());

    let server = Config::load(Some(&catalog.config))
        .unwrap()
        .server("pg")
        .unwrap()
        .unwrap();
    let (mut compared_ok, mut compared_errors) = (0, 0);
    for ((last_wal, last_position), barman_result) in requests.iter().zip(&results) {
        let point = SyncPoint {
            last_wal: last_wal.clone(),
            last_position: *last_position,
        };
        let ours = sync_info_text(&server, &point);
        match (barman_result.get("ok"), barman_result.get("error"), ours) {
            (Some(Json::Str(expected)), None, Ok(text)) => {
                assert_eq!(&text, expected, "request {point:?}");
                compared_ok += 1;
            }
            (None, Some(Json::Str(expected)), Err(error)) => {
                assert_eq!(&error.to_string(), expected, "request {point:?}");
                compared_errors += 1;
            }
            (ok, error, ours) => panic!(
                "request {point:?}: Barman {ok:?} {error:?}, barsync {:?}",
                ours.map(|t| t.len())
            ),
        }
    }
    (compared_ok, compared_errors)
}
