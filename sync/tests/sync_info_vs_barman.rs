//! `barsync sync-info` against `barman sync-info` (real Barman 3.20.1) on the same catalogs:
//! byte-identical stdout, same exit codes and error messages, for full and incremental
//! requests; the two documented bug fixes get their own assertions.

mod common;

use barsync_sync::python::json::{self, Json};
use common::*;

#[test]
fn shared_fixture_full_incremental_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    make_fixture(dir.path());
    let config = dir.path().join("primary.conf");
    let full = assert_same_sync_info(&config, "pg", &[]);
    assert_eq!(last_position_of(&full), "503");
    assert_eq!(wal_names_of(&full).len(), 9);
    let sample = std::fs::read_to_string(fixtures().join("sample-sync-info-3.20.1.json")).unwrap();
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
            .filter(|l| l.starts_with("WARNING"))
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
