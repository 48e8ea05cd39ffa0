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
    assert!(pg.warnings.is_empty(), "{:?}", pg.warnings);
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
    assert_eq!(
        server.warnings,
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
