//! `barsync sync-info` against `barman sync-info` (real Barman 3.20.1) on the same catalogs:
//! byte-identical stdout, same exit codes and error messages, for full and incremental
//! requests; the two documented bug fixes get their own assertions.

mod common;

use barsync_sync::python::json::{self, Json};
use common::*;

fn wal_names_of(document: &str) -> Vec<String> {
    let parsed = json::parse(document).unwrap();
    match parsed.get("wals") {
        Some(Json::Array(items)) => items
            .iter()
            .map(|item| match item.get("name") {
                Some(Json::Str(name)) => name.clone(),
                other => panic!("bad wal entry {other:?}"),
            })
            .collect(),
        other => panic!("no wals: {other:?}"),
    }
}

fn last_position_of(document: &str) -> String {
    match json::parse(document).unwrap().get("last_position") {
        Some(Json::Int(position)) => position.to_string(),
        other => panic!("no last_position: {other:?}"),
    }
}

#[test]
fn shared_fixture_full_incremental_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    make_fixture(dir.path());
    let config = dir.path().join("primary.conf");
    let full = assert_same_sync_info(&config, "pg", &[]);
    assert_eq!(last_position_of(&full), "503");
    assert_eq!(wal_names_of(&full).len(), 9);
    let sample =
        std::fs::read_to_string(shared().join("docs/sample-sync-info-3.20.1.json")).unwrap();
    let sample_backups = json::parse(&sample).unwrap().get("backups").cloned();
    assert_eq!(
        json::parse(&full).unwrap().get("backups").cloned(),
        sample_backups,
        "backups as in the shared sample"
    );
    for extra in [
        &["000000020000000000000007", "503"][..],
        &["000000010000000000000004", "17"],
        &["000000010000000000000004"],
        &["000000010000000000000005.00000028.backup", "300"],
        &["00000002.history"],
        &["000000000000000000000001"],
        &["000000030000000000000001"],
        &["000000010000000000000002", "999999"],
    ] {
        assert_same_sync_info(&config, "pg", extra);
    }
    assert_same_sync_info(&config, "nosuch", &[]);
    let missing = dir.path().join("missing.conf");
    let barman = run_barman(&missing, &["sync-info", "pg"]);
    let ours = run_barsync(&missing, "pg", None, None);
    assert_eq!((barman.status.code(), ours.exit_code), (Some(1), 1));
    assert_eq!(
        ours.stderr.join("\n") + "\n",
        String::from_utf8_lossy(&barman.stderr)
    );
}

#[test]
fn bad_last_position_exits_2_and_zero_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    make_fixture(dir.path());
    let config = dir.path().join("primary.conf");
    for bad in ["abc", "-3"] {
        let barman = run_barman(
            &config,
            &["sync-info", "pg", "000000010000000000000004", bad],
        );
        let ours = run_barsync(&config, "pg", Some("000000010000000000000004"), Some(bad));
        assert_eq!(barman.status.code(), Some(2));
        assert_eq!(ours.exit_code, 2);
        let barman_reason = String::from_utf8_lossy(&barman.stderr)
            .lines()
            .last()
            .unwrap()
            .replace("barman", "barsync");
        assert_eq!(ours.stderr, vec![barman_reason]);
    }
    // Barman rejects 0 (rc 2) and a passive that stored position 0 wedges; barsync treats 0 as
    // the offset of the first line, which is what the primary meant.
    assert_eq!(
        run_barman(
            &config,
            &["sync-info", "pg", "000000010000000000000001", "0"]
        )
        .status
        .code(),
        Some(2)
    );
    let ours = run_barsync(&config, "pg", Some("000000010000000000000001"), Some("0"));
    assert_eq!(ours.exit_code, 0, "{:?}", ours.stderr);
    let barman_without_position =
        run_barman(&config, &["sync-info", "pg", "000000010000000000000001"]);
    assert_eq!(
        ours.stdout, barman_without_position.stdout,
        "position 0 = reading from the start"
    );
}

#[test]
fn single_line_xlogdb_gives_position_zero_that_barsync_accepts_back() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = generate_catalog(
        dir.path(),
        &CatalogSpec {
            backups: 1,
            wals_per_backup: 0,
            ..CatalogSpec::default()
        },
    );
    let xlogdb = catalog.home.join("pg/wals/pg-xlog.db");
    let first_line = std::fs::read_to_string(&xlogdb)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_owned()
        + "\n";
    std::fs::write(&xlogdb, &first_line).unwrap();
    let full = assert_same_sync_info(&catalog.config, "pg", &[]);
    assert_eq!(last_position_of(&full), "0");
    let name = &first_line[..24];
    let ours = run_barsync(&catalog.config, "pg", Some(name), Some("0"));
    assert_eq!(ours.exit_code, 0);
    assert_eq!(
        wal_names_of(std::str::from_utf8(&ours.stdout).unwrap()),
        Vec::<String>::new()
    );
}

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
fn history_file_of_first_backup_timeline_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    make_fixture(dir.path());
    let config = dir.path().join("primary.conf");
    let meta = dir.path().join("primary-home/pg/meta");
    // Make the oldest backup start on timeline 2, as in Barman issue #1102.
    for id in ["20240101T120000", "20240102T120000"] {
        let path = meta.join(format!("{id}-backup.info"));
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace(
                "begin_wal=00000001000000000000000",
                "begin_wal=00000002000000000000000",
            )
            .replace(
                "begin_wal=000000020000000000000002",
                "begin_wal=000000020000000000000007",
            )
            .replace(
                "begin_wal=000000020000000000000005",
                "begin_wal=000000020000000000000007",
            );
        std::fs::write(&path, text).unwrap();
    }
    let barman = run_barman(&config, &["sync-info", "pg"]);
    assert_eq!(barman.status.code(), Some(0));
    let barman_stdout = String::from_utf8(barman.stdout).unwrap();
    let ours = run_barsync(&config, "pg", None, None);
    let ours_stdout = String::from_utf8(ours.stdout).unwrap();
    assert_eq!(
        wal_names_of(&barman_stdout),
        vec!["000000020000000000000007"],
        "Barman drops the history file"
    );
    assert_eq!(
        wal_names_of(&ours_stdout),
        vec!["00000002.history", "000000020000000000000007"]
    );
    // Apart from that entry, the documents are identical.
    let mut ours_json = json::parse(&ours_stdout).unwrap();
    if let Json::Object(entries) = &mut ours_json {
        for (key, value) in entries.iter_mut() {
            if key == "wals" {
                if let Json::Array(items) = value {
                    items.retain(|item| {
                        item.get("name") != Some(&Json::Str("00000002.history".into()))
                    });
                }
            }
        }
    }
    assert_eq!(ours_json.dump_indented(), barman_stdout);
}

#[test]
fn config_object_matches_barman_for_varied_configurations() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = generate_catalog(
        dir.path(),
        &CatalogSpec {
            backups: 1,
            wals_per_backup: 1,
            ..CatalogSpec::default()
        },
    );
    let includes = dir.path().join("conf.d");
    std::fs::create_dir(&includes).unwrap();
    let home = catalog.home.display().to_string();
    let user = String::from_utf8(
        std::process::Command::new("id")
            .arg("-un")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    std::fs::write(
        &catalog.config,
        format!(
            "[barman]\nbarman_home = {home}\nbarman_user = {}\nlog_file = {}/barman.log\nconfiguration_files_directory = {}\ncompression = GZIP\nparallel_jobs = 3\nbasebackup_retry_times = 2\nnetwork_compression = on\nreuse_backup = LINK\nlast_backup_maximum_age = 2 weeks\nminimum_redundancy = 2\n; a comment\n# another\n",
            user.trim(),
            dir.path().display(),
            includes.display()
        ),
    )
    .unwrap();
    std::fs::write(
        includes.join("10-pg.conf"),
        "[pg]\ndescription = \"multi\n  line\"\nconninfo = host=127.0.0.1 port=1 dbname=postgres\nssh_command = ssh pg\nbackup_options = concurrent_backup\narchiver = yes\nprimary_ssh_command = ssh barman@primary\nforward_config_path = true\nretention_policy = recovery window of 4 weeks\nbandwidth_limit = 1000\ntablespace_bandwidth_limit = tbs1:100 tbs2:1000 bad\nlast_wal_maximum_age = 25 hours\ncloud_staging_max_size = 5 Mi\ncompression_level = 5\nslot_name = My_Slot\nsnapshot_disks = a,b\nparallel_jobs = lots\nstreaming_archiver_name = %(ssh_command)s-%%%%x\nimmediate_checkpoint = maybe\nwal_retention_policy = main\ncustom_option_barman_ignores = 1\n",
    )
    .unwrap();
    std::fs::write(
        includes.join("20-others.conf"),
        format!(
            "[noconninfo]\nssh_command = ssh x\nbackup_method = postgres\nbackup_options = exclusive_backup\n\n[local]\nconninfo = host=x\nbackup_method = local-rsync\nstreaming_archiver = on\nslot_name = s1\nretention_policy = REDUNDANCY x\nminimum_redundancy = -1\n\n[plain]\nconninfo = host=y\nssh_command = ssh y\nbackup_directory = {home}/custom\nwals_directory = {home}/custom/base\nencryption = none\nrecovery_options = get-wal\nretention_policy = redundancy 2\nwal_retention_policy = MAIN\n"
        ),
    )
    .unwrap();
    for server in ["pg", "noconninfo", "local", "plain"] {
        let server_dir = catalog.home.join(server);
        if !server_dir.exists() {
            std::fs::create_dir_all(server_dir.join("wals")).unwrap();
            std::fs::write(server_dir.join(format!("wals/{server}-xlog.db")), "").unwrap();
        }
        std::fs::create_dir_all(catalog.home.join("custom/wals")).unwrap();
        assert_same_sync_info(&catalog.config, server, &[]);
        let barman = run_barman(&catalog.config, &["sync-info", server]);
        let barman_warnings: Vec<String> = String::from_utf8_lossy(&barman.stderr)
            .lines()
            // barsync ignores unknown options quietly, where Barman warns about them.
            .filter(|l| l.starts_with("WARNING") && !l.contains("Invalid configuration option"))
            .map(str::to_owned)
            .collect();
        let ours = run_barsync(&catalog.config, server, None, None);
        let our_warnings: Vec<String> = ours
            .stderr
            .iter()
            .filter(|l| l.starts_with("WARNING"))
            .cloned()
            .collect();
        assert_eq!(our_warnings, barman_warnings, "warnings for {server}");
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

fn tree(root: &std::path::Path) -> Vec<String> {
    let mut paths = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            paths.push(path.strip_prefix(root).unwrap().display().to_string());
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
    paths.sort();
    paths
}

#[test]
fn fresh_passive_node_answers_and_creates_what_barman_creates() {
    let dir = tempfile::tempdir().unwrap();
    make_fixture(dir.path());
    let config = dir.path().join("passive.conf");
    let home = dir.path().join("passive-home");
    let barman = run_barman(&config, &["sync-info", "pg"]);
    assert_eq!(
        barman.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&barman.stderr)
    );
    let barman_tree = tree(&home);
    std::fs::remove_dir_all(&home).unwrap();
    std::fs::create_dir(&home).unwrap();
    let ours = run_barsync(&config, "pg", None, None);
    assert_eq!(ours.exit_code, 0, "{:?}", ours.stderr);
    assert_eq!(
        String::from_utf8(ours.stdout).unwrap(),
        String::from_utf8(barman.stdout).unwrap()
    );
    assert_eq!(tree(&home), barman_tree);
    assert!(
        barman_tree.contains(&"pg/wals/pg-xlog.db".to_owned()),
        "{barman_tree:?}"
    );
}

#[test]
fn shared_directories_and_all_are_errors_as_in_barman() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = generate_catalog(dir.path(), &CatalogSpec::default());
    let mut text = std::fs::read_to_string(&catalog.config).unwrap();
    text.push_str(&format!(
        "\n[copy]\nconninfo = host=x\nssh_command = ssh x\nbackup_directory = {}/pg\n\n[self]\nconninfo = host=x\nssh_command = ssh x\nwals_directory = %(backup_directory)s\nbackup_directory = {}/self\n",
        catalog.home.display(),
        catalog.home.display()
    ));
    let conflicting = dir.path().join("conflicting.conf");
    std::fs::write(&conflicting, &text).unwrap();
    assert_same_sync_info(&conflicting, "pg", &[]);
    assert_same_sync_info(&conflicting, "all", &[]);
    // Directories that collide within one server only disable it; sync-info still answers.
    let only_self = text.replace(
        &format!("backup_directory = {}/pg\n", catalog.home.display()),
        "",
    );
    let own_conflict = dir.path().join("own-conflict.conf");
    std::fs::write(&own_conflict, only_self).unwrap();
    std::fs::create_dir_all(catalog.home.join("self")).unwrap();
    let document = assert_same_sync_info(&own_conflict, "self", &[]);
    assert!(document.contains("\"disabled\": true"));
}
