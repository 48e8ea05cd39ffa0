//! The parsed configuration of many servers, each setting one option to a valid, odd or
//! invalid value, compared with Barman's own `Server(...).config.to_json()` run in one Python
//! process: the `config` object of sync-info must match key for key.

mod common;

use barsync_sync::config::Config;
use barsync_sync::python::json::{self, Json};
use common::*;

const DUMP_CONFIGS: &str = r#"
import json, sys
import barman.output
import barman
from barman.config import Config
from barman.server import Server
from barman.utils import BarmanEncoder
barman.__config__ = config = Config(sys.argv[1])
result = {}
for name in sorted(config.server_names()):
    server = Server(config.get_server(name))
    result[name] = json.dumps(server.config.to_json(), cls=BarmanEncoder, indent=4)
json.dump(result, open(sys.argv[2], "w"))
"#;

/// (option, values) pairs: each value becomes one server section.
fn cases() -> Vec<(&'static str, Vec<&'static str>)> {
    let booleans = vec!["Yes", "0", "off", "T", "bogus", "None", ""];
    let ints = vec!["7", " 8 ", "x", "1_0", "-2", "None"];
    let sizes = vec!["10", "5 Ki", "3Gi", "7 T", "bad", "4 Mi "];
    let intervals = vec![
        "1 day", "3 weeks", "2 months", "25 hours", "1 Hour", "bad", "0 days",
    ];
    vec![
        ("archiver", booleans.clone()),
        ("network_compression", booleans.clone()),
        ("forward_config_path", booleans.clone()),
        ("worm_mode", booleans.clone()),
        ("streaming_archiver", vec!["on", "off"]),
        ("parallel_jobs", ints.clone()),
        ("basebackup_retry_times", ints.clone()),
        ("basebackup_retry_sleep", ints.clone()),
        ("check_timeout", ints),
        ("cloud_staging_max_size", sizes.clone()),
        ("last_backup_minimum_size", sizes),
        ("last_backup_maximum_age", intervals.clone()),
        ("last_wal_maximum_age", intervals),
        ("reuse_backup", vec!["COPY", "link", "off", "maybe", ""]),
        (
            "backup_method",
            vec!["RSYNC", "local-rsync", "postgres", "bad"],
        ),
        (
            "backup_options",
            vec![
                "exclusive_backup",
                "CONCURRENT_BACKUP",
                "external_configuration",
                "concurrent_backup,exclusive_backup",
                "bogus",
                "",
            ],
        ),
        ("recovery_options", vec!["get-wal", "delta-restore", "bad"]),
        (
            "compression",
            vec!["GZIP", "bzip2", "zstd", "custom", "bad", ""],
        ),
        ("compression_level", vec!["-3", "HIGH", "9", "x"]),
        ("encryption", vec!["NONE", "gpg", "x"]),
        ("backup_compression", vec!["gzip", "LZ4", "bad"]),
        ("backup_compression_format", vec!["TAR", "zip"]),
        ("staging_path", vec!["/abs", "relative"]),
        ("staging_location", vec!["remote", "REMOTE"]),
        ("slot_name", vec!["My_Slot", "bad-name"]),
        ("snapshot_disks", vec!["a,b", "a,,b"]),
        ("create_slot", vec!["AUTO", "never"]),
        ("combine_mode", vec!["LINK", "copy-file-range", "bad"]),
        ("aws_encryption", vec!["AES256", "aes256"]),
        (
            "retention_policy",
            vec![
                "REDUNDANCY 2",
                "redundancy  3 ",
                "recovery window of 1 day",
                "RECOVERY WINDOW OF 2 MONTHS",
                "recovery window of 3 weeks",
                "bad policy",
                "",
            ],
        ),
        ("wal_retention_policy", vec!["MAIN", "main", "other"]),
        ("retention_policy_mode", vec!["auto", "manual"]),
        ("minimum_redundancy", vec!["3", "-1", "many"]),
        ("bandwidth_limit", vec!["100", "0", "fast"]),
        (
            "tablespace_bandwidth_limit",
            vec!["tbs1:100 tbs2:200", "tbs1:0 bad tbs3:x", "tbs:100"],
        ),
        (
            "primary_ssh_command",
            vec!["ssh barman@primary", "None", ""],
        ),
        (
            "description",
            vec!["'quoted'", "\"double\"", "it's", "%%%%percent"],
        ),
        ("active", vec!["false", "nonsense"]),
        ("conninfo", vec!["None", ""]),
        ("ssh_command", vec!["None", "  "]),
        ("streaming_conninfo", vec!["host=s"]),
    ]
}

#[test]
fn every_option_parses_like_barman() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let user = String::from_utf8(
        std::process::Command::new("id")
            .arg("-un")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let mut text = format!(
        "[barman]\nbarman_home = {}\nbarman_user = {}\nlog_file = {}/barman.log\nbandwidth_limit = 100\n",
        home.display(),
        user.trim(),
        dir.path().display()
    );
    let mut servers = Vec::new();
    for (key, values) in cases() {
        for (index, value) in values.iter().enumerate() {
            let name = format!("s-{key}-{index}");
            text.push_str(&format!(
                "\n[{name}]\nconninfo = host=127.0.0.1 port=1\nssh_command = ssh pg\nbackup_options = concurrent_backup\n{key} = {value}\n"
            ));
            servers.push(name);
        }
    }
    let config_path = dir.path().join("barman.conf");
    std::fs::write(&config_path, text).unwrap();
    let results_path = dir.path().join("configs.json");
    let output = std::process::Command::new(barman_python())
        .arg("-c")
        .arg(DUMP_CONFIGS)
        .arg(&config_path)
        .arg(&results_path)
        .env("PYTHONHASHSEED", "0")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let results = json::parse(&std::fs::read_to_string(&results_path).unwrap()).unwrap();
    let ours_by_name = Config::load(Some(&config_path)).unwrap().servers().unwrap();
    assert_eq!(ours_by_name.len(), servers.len());
    let mut mismatches = Vec::new();
    for (name, server) in servers.iter().zip(&ours_by_name) {
        assert_eq!(server.name(), name);
        let Some(Json::Str(expected)) = results.get(name) else {
            panic!("Barman has no server {name}")
        };
        let ours = server.to_json().dump_indented();
        if &ours != expected {
            let expected_json = json::parse(expected).unwrap();
            let ours_json = json::parse(&ours).unwrap();
            let (Json::Object(theirs), Json::Object(mine)) = (&expected_json, &ours_json) else {
                panic!()
            };
            for ((key, their_value), (_, my_value)) in theirs.iter().zip(mine) {
                if their_value != my_value {
                    mismatches.push(format!(
                        "[{name}] {key}: Barman {their_value:?}, barsync {my_value:?}"
                    ));
                }
            }
            if theirs.len() != mine.len() {
                mismatches.push(format!("[{name}] {} keys vs {}", theirs.len(), mine.len()));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} servers compared; mismatches:\n{}",
        servers.len(),
        mismatches.join("\n")
    );
}

const DUMP_SECTIONS: &str = r#"
import json, sys
from barman.config import ConfigMapping
parser = ConfigMapping(strict=False)
for path in sys.argv[2:]:
    parser.read_config(path)
json.dump([[s, [[k, v] for k, v in parser.items(s, raw=True)]] for s in parser.sections()], open(sys.argv[1], "w"))
"#;

/// Odd but valid ConfigParser input, read by Barman's `ConfigMapping` and by barsync.
#[test]
fn configparser_edge_cases_read_like_barman() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.conf");
    let second = dir.path().join("second.conf");
    std::fs::write(
        &first,
        "# leading comment\r\n[DEFAULT]\r\nshared = from default\r\nbase = /srv\r\n\r\n[barman]\r\nbarman_home = %(base)s/barman\r\nKey With Spaces = x\r\n\tindented_key = y\r\n[pg]\r\ncolon: value with = sign\r\nempty =\r\nlong = first\r\n   second line\r\n\r\n\r\n   after blank lines\r\n   # not a comment inside? it is\r\n   ; nor this\r\nlast = v ; inline comment kept\r\nrepeated = one\r\nrepeated = two\r\npercent = 100%%%%\r\nchain = %(long)s|%(shared)s\r\n[pg]\r\nreopened = yes\r\n[weird name with spaces]\r\na=b\r\n",
    )
    .unwrap();
    std::fs::write(
        &second,
        "[pg]\nrepeated = three\nlate = %(repeated)s\n[other]\nx = 1\n",
    )
    .unwrap();
    let output_path = dir.path().join("sections.json");
    let output = std::process::Command::new(barman_python())
        .arg("-c")
        .arg(DUMP_SECTIONS)
        .arg(&output_path)
        .arg(&first)
        .arg(&second)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let barman = json::parse(&std::fs::read_to_string(&output_path).unwrap()).unwrap();

    let main = dir.path().join("main.conf");
    let include_dir = dir.path().join("inc");
    std::fs::create_dir(&include_dir).unwrap();
    std::fs::copy(&second, include_dir.join("second.conf")).unwrap();
    let first_text = std::fs::read_to_string(&first).unwrap();
    let with_include = first_text.replacen(
        "[barman]\r\n",
        &format!(
            "[barman]\r\nconfiguration_files_directory = {}\r\n",
            include_dir.display()
        ),
        1,
    );
    std::fs::write(&main, with_include).unwrap();
    let ours = Config::load(Some(&main)).unwrap().sections();
    let ours_json = Json::Array(
        ours.into_iter()
            .map(|(section, options)| {
                let options = options
                    .into_iter()
                    .filter(|(key, _)| key != "configuration_files_directory")
                    .map(|(k, v)| Json::Array(vec![Json::Str(k), Json::Str(v)]))
                    .collect();
                Json::Array(vec![Json::Str(section), Json::Array(options)])
            })
            .collect(),
    );
    assert_eq!(ours_json.dump_indented(), barman.dump_indented());
}
