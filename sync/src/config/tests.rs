//! Unit tests of configuration reading; the comparison with real Barman is in sync/tests/.

use super::*;
use std::fs;

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("barman.conf");
    fs::write(&path, text).unwrap();
    path
}

#[test]
fn server_overrides_global_and_defaults_derive_paths() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "[barman]\nbarman_home = /srv/barman\nprimary_ssh_command = ssh global\ncompression = gzip\nparallel_jobs = 2\n\n[pg]\nprimary_ssh_command = \"ssh server\"\nParallel_Jobs = 4\nnetwork_compression = yes\nreuse_backup = LINK\nretention_policy = recovery window of 2 weeks\nminimum_redundancy = 2\nbandwidth_limit = 100\nunknown_option = kept quietly\n[other]\n",
    );
    let config = Config::load(Some(&path)).unwrap();
    assert_eq!(config.server_names(), vec!["pg", "other"]);
    let pg = config.server("pg").unwrap().unwrap();
    assert_eq!(pg.primary_ssh_command(), Some("ssh server"));
    assert!(pg.is_passive());
    assert_eq!(pg.parallel_jobs(), 4);
    assert_eq!(pg.compression(), Some("gzip"));
    assert!(pg.network_compression());
    assert_eq!(pg.reuse_backup(), ReuseBackup::Link);
    assert_eq!(pg.bandwidth_limit(), Some(100));
    assert_eq!(pg.minimum_redundancy(), 2);
    assert_eq!(
        pg.retention_policy(),
        Some(RetentionPolicy::RecoveryWindow {
            count: 2,
            unit: WindowUnit::Weeks
        })
    );
    assert_eq!(pg.backup_directory(), PathBuf::from("/srv/barman/pg"));
    assert_eq!(
        pg.basebackups_directory(),
        PathBuf::from("/srv/barman/pg/base")
    );
    assert_eq!(
        pg.xlogdb_path(),
        PathBuf::from("/srv/barman/pg/wals/pg-xlog.db")
    );
    assert_eq!(pg.lock_directory(), PathBuf::from("/srv/barman"));
    let unknown: Vec<&str> = pg.warnings.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(unknown, vec!["unknown_option"], "Barman warns about it too");
    let other = config.server("other").unwrap().unwrap();
    assert_eq!(
        other.primary_ssh_command(),
        Some("ssh global"),
        "global primary_ssh_command applies"
    );
    assert!(config.server("missing").unwrap().is_none());
}

#[test]
fn empty_or_none_server_value_stops_inheritance() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "[barman]\nbarman_home = /b\ncompression = gzip\nprimary_ssh_command = ssh x\n[a]\ncompression =\nprimary_ssh_command = None\n",
    );
    let server = Config::load(Some(&path))
        .unwrap()
        .server("a")
        .unwrap()
        .unwrap();
    assert_eq!(server.compression(), None);
    assert!(!server.is_passive());
}

#[test]
fn invalid_values_are_ignored_with_barman_warning() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "[barman]\nbarman_home = /b\nparallel_jobs = 3\n[a]\nparallel_jobs = many\nprimary_ssh_command = ssh x\n");
    let server = Config::load(Some(&path))
        .unwrap()
        .server("a")
        .unwrap()
        .unwrap();
    assert_eq!(
        server.parallel_jobs(),
        3,
        "falls back to the global value as Barman does"
    );
    let lines: Vec<String> = server
        .warnings
        .iter()
        .filter_map(ConfigWarning::barman_line)
        .collect();
    assert_eq!(
        lines,
        vec!["Ignoring invalid configuration value 'many' for key parallel_jobs in [a] section: invalid literal for int() with base 10: 'many'"]
    );
}

#[test]
fn includes_add_servers_but_may_not_touch_globals() {
    let dir = tempfile::tempdir().unwrap();
    let includes = dir.path().join("conf.d");
    fs::create_dir(&includes).unwrap();
    fs::write(
        includes.join("b.conf"),
        "[b]\nprimary_ssh_command = ssh b\n",
    )
    .unwrap();
    fs::write(
        includes.join("a.conf"),
        "[a]\nprimary_ssh_command = ssh a\n",
    )
    .unwrap();
    fs::write(includes.join("ignored.txt"), "[c]\n").unwrap();
    let text = format!(
        "[barman]\nbarman_home = /b\nconfiguration_files_directory = {}\n",
        includes.display()
    );
    let path = write_config(dir.path(), &text);
    let config = Config::load(Some(&path)).unwrap();
    assert_eq!(config.server_names(), vec!["a", "b"]);
    fs::write(
        includes.join("c.conf"),
        "[barman]\nbarman_home = /elsewhere\n",
    )
    .unwrap();
    let err = Config::load(Some(&path)).unwrap_err();
    assert!(
        matches!(err, ConfigError::GlobalSectionInInclude(ref name) if name == "c.conf"),
        "{err}"
    );
}

#[test]
fn missing_file_and_syntax_errors_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.conf");
    assert_eq!(
        Config::load(Some(&missing)).unwrap_err().to_string(),
        format!("Configuration file '{}' does not exist", missing.display())
    );
    let path = write_config(dir.path(), "[barman]\nbarman_home = /b\nthis is wrong\n");
    let err = Config::load(Some(&path)).unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}:3: ", path.display())), "{err}");
}

#[test]
fn models_are_not_servers() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "[barman]\nbarman_home = /b\n[pg]\nconninfo = x\n[pg:switch]\nmodel = true\ncluster = pg\n",
    );
    assert_eq!(
        Config::load(Some(&path)).unwrap().server_names(),
        vec!["pg"]
    );
}

#[test]
fn barman_user_defaults_to_barman_and_must_be_the_running_user() {
    let dir = tempfile::tempdir().unwrap();
    let unset = write_config(dir.path(), "[barman]\nbarman_home = /b\n");
    assert_eq!(Config::load(Some(&unset)).unwrap().barman_user, "barman");
    let path = write_config(
        dir.path(),
        "[barman]\nbarman_home = /b\nbarman_user = \"nobody\"\n",
    );
    let config = Config::load(Some(&path)).unwrap();
    assert_eq!(config.barman_user, "nobody");
    let nobody = user_uid("nobody").expect("user nobody exists");
    assert!(check_user_uid("nobody", nobody).is_ok());
    assert_eq!(
        check_user_uid("nobody", nobody + 1)
            .unwrap_err()
            .to_string(),
        "please run barman as 'nobody' user"
    );
    assert_eq!(
        check_user_uid("no_such_user_h5", 0)
            .unwrap_err()
            .to_string(),
        "the configured user 'no_such_user_h5' does not exists"
    );
}

#[test]
fn ignored_settings_are_listed_with_file_line_section_key_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "[barman]\nbarman_home = /b\nlog_file = /b/barman.log ; the log\nparallel_job = 3\n\
         [pg]\nprimary_ssh_command = ssh pg\nreuse_backup = link ; hard links\n\
         primary_ssh_comand = ssh pg\nbandwidth_limit = fast\nlast_backup_maximum_age = 2 dayz\n\
         log_file = /elsewhere\n[typo]\nprimary_ssh_comand = ssh typo\nreuse_backup = lnk\n",
    );
    let config = Config::load(Some(&path)).unwrap();
    let warnings = config.warnings().unwrap();
    let found: Vec<(usize, &str, &str, &str, String)> = warnings
        .iter()
        .map(|w| {
            let (file, line) = w.location.clone().unwrap();
            assert_eq!(file, path);
            let kind = match &w.problem {
                Problem::UnknownKey {
                    did_you_mean: Some(known),
                    ..
                } => format!("typo of {known}"),
                Problem::UnknownKey {
                    global_only: true, ..
                } => "global only".to_owned(),
                Problem::UnknownKey { .. } => "unknown".to_owned(),
                Problem::InvalidValue { .. } => "invalid".to_owned(),
                Problem::Fallback { .. } => "fallback".to_owned(),
                Problem::InlineComment { comment } => format!("comment {comment}"),
            };
            (
                line,
                w.section.as_str(),
                w.key.as_str(),
                w.value.as_str(),
                kind,
            )
        })
        .collect();
    let expected: Vec<(usize, &str, &str, &str, String)> = vec![
        (
            3,
            "barman",
            "log_file",
            "/b/barman.log ; the log",
            "comment ; the log".into(),
        ),
        (
            4,
            "barman",
            "parallel_job",
            "3",
            "typo of parallel_jobs".into(),
        ),
        (
            7,
            "pg",
            "reuse_backup",
            "link ; hard links",
            "invalid".into(),
        ),
        (
            7,
            "pg",
            "reuse_backup",
            "link ; hard links",
            "comment ; hard links".into(),
        ),
        (
            8,
            "pg",
            "primary_ssh_comand",
            "ssh pg",
            "typo of primary_ssh_command".into(),
        ),
        (9, "pg", "bandwidth_limit", "fast", "fallback".into()),
        (
            10,
            "pg",
            "last_backup_maximum_age",
            "2 dayz",
            "invalid".into(),
        ),
        (11, "pg", "log_file", "/elsewhere", "global only".into()),
        (
            13,
            "typo",
            "primary_ssh_comand",
            "ssh typo",
            "typo of primary_ssh_command".into(),
        ),
        (14, "typo", "reuse_backup", "lnk", "invalid".into()),
    ];
    assert_eq!(found, expected);
    let text = warnings[4].to_string();
    assert_eq!(
        text,
        format!(
            "Invalid configuration option \"primary_ssh_comand\" in [pg] section (value 'ssh pg'), ignored: did you mean primary_ssh_command? ({} line 8)",
            path.display()
        )
    );
    let pg = config.server("pg").unwrap().unwrap();
    let keys: Vec<&str> = pg.config_warnings.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "log_file",
            "parallel_job",
            "reuse_backup",
            "reuse_backup",
            "primary_ssh_comand",
            "bandwidth_limit",
            "last_backup_maximum_age",
            "log_file"
        ],
        "its own section's and [barman]'s"
    );
    assert_eq!(
        config.all_option_warnings().unwrap(),
        vec![
            "Invalid configuration option \"parallel_job\" in [barman] section.",
            "Invalid configuration option \"primary_ssh_comand\" in [pg] section.",
            "Invalid configuration option \"log_file\" in [pg] section.",
            "Ignoring invalid configuration value '2 dayz' for key last_backup_maximum_age in [pg] section: Invalid value for a time interval 2 dayz",
            "Ignoring invalid configuration value 'link ; hard links' for key reuse_backup in [pg] section: Invalid value (use 'copy', 'link' or 'off')",
            "Invalid configuration option \"primary_ssh_comand\" in [typo] section.",
            "Ignoring invalid configuration value 'lnk' for key reuse_backup in [typo] section: Invalid value (use 'copy', 'link' or 'off')",
        ],
        "Barman's own lines, in Barman's order"
    );
}

/// The sample configuration of the README is what people paste: Barman must read every line
/// of it as meant.
#[test]
fn readme_sample_configuration_has_nothing_ignored() {
    let readme = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
        .expect("README.md at the workspace root");
    let start = readme
        .find("```ini\n[barman]")
        .expect("the README has a sample configuration");
    let sample = &readme[start + "```ini\n".len()..];
    let sample = &sample[..sample.find("```").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    let config = Config::load(Some(&write_config(dir.path(), sample))).unwrap();
    let warnings: Vec<String> = config
        .warnings()
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(warnings.is_empty(), "{warnings:#?}");
    let pg = config.server("pg").unwrap().unwrap();
    assert_eq!(pg.reuse_backup(), ReuseBackup::Link);
    assert_eq!(pg.parallel_jobs(), 4);
}

#[test]
fn log_file_and_level_are_read_as_barman_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let load = |text: &str| Config::load(Some(&write_config(dir.path(), text))).unwrap();
    let config = load("[barman]\nbarman_home = /srv\nlog_file = /var/log/barman/barman.log\nlog_level = warning\n");
    assert_eq!(
        config.log_file(),
        Some(LogFile {
            path: PathBuf::from("/var/log/barman/barman.log"),
            level: LogLevel::Warning
        })
    );
    let numeric = load("[barman]\nbarman_home = /srv\nlog_file = /l\nlog_level = 10\n");
    assert_eq!(numeric.log_file().unwrap().level, LogLevel::Debug);
    let unknown = load("[barman]\nbarman_home = /srv\nlog_file = /l\nlog_level = loud\n");
    assert_eq!(unknown.log_file().unwrap().level, LogLevel::Info);
    assert_eq!(
        load("[barman]\nbarman_home = /srv\nlog_file = None\n").log_file(),
        None
    );
    assert_eq!(load("[barman]\nbarman_home = /srv\n").log_file(), None);
}

#[test]
fn follow_max_lag_takes_seconds_or_a_unit() {
    use super::server::parse_lag;
    use std::time::Duration;
    assert_eq!(parse_lag("30"), Ok(Duration::from_secs(30)));
    assert_eq!(parse_lag("90 seconds"), Ok(Duration::from_secs(90)));
    assert_eq!(parse_lag("5 minutes"), Ok(Duration::from_secs(300)));
    assert_eq!(parse_lag("1 hour"), Ok(Duration::from_secs(3600)));
    assert_eq!(parse_lag("2 days"), Ok(Duration::from_secs(172_800)));
    for bad in ["", "0", "-5", "5 fortnights", "5 minutes later", "five"] {
        assert!(parse_lag(bad).is_err(), "{bad:?} accepted");
    }
}
