//! Checking a restored copy of the primary: [`verify_restored_cluster`] starts PostgreSQL on
//! a recovered data directory, waits for recovery, compares its pgbench tables with a
//! [`TableFingerprint`] and stops it again ([`RunningCluster`] makes sure it does).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::fingerprint::{fingerprint, TableFingerprint};
use super::postgres::{as_postgres, chown_postgres, free_port, psql, require_postgres_user};
use super::process::{check_output, tail};
use super::{pg_bin, scratch_dir, PGBENCH_TABLES};

/// Starts PostgreSQL on `data_directory` (typically the destination of `barman recover`),
/// waits until it has finished recovery, compares the pgbench tables with `expected` and stops
/// it again.
///
/// The directory is modified: it is chowned to `postgres` (mode 0700) and
/// `postgresql.auto.conf` gets overrides appended: `listen_addresses = ''`, a free port and a
/// private socket directory (so the primary's `port`/`unix_socket_directories` do not clash),
/// `archive_mode = off` (Barman's recover sets `archive_command = false`), `fsync = off`, and
/// `recovery_target_action = 'promote'` when `recovery.signal` is present. PostgreSQL replays
/// the WAL that `barman recover` copied into `pg_wal/` (or `barman_wal/` with a target); a
/// `restore_command` running `barman get-wal` / `barman-wal-restore` is refused, as Barman
/// refuses `get-wal` for a user other than `barman_user`. Every parent of `data_directory` must
/// be traversable by `postgres` (see [`scratch_dir`]).
///
/// Errors name the step and carry the server log's tail.
pub fn verify_restored_cluster(
    data_directory: &Path,
    expected: &TableFingerprint,
) -> Result<(), String> {
    let pg_bin = pg_bin();
    require_postgres_user();
    let data_directory = data_directory
        .canonicalize()
        .map_err(|error| format!("restored cluster {}: {error}", data_directory.display()))?;
    if !data_directory.join("PG_VERSION").is_file() {
        return Err(format!(
            "{} is not a PostgreSQL data directory (no PG_VERSION)",
            data_directory.display()
        ));
    }
    for file in ["postgresql.auto.conf", "postgresql.conf"] {
        let text = fs::read_to_string(data_directory.join(file)).unwrap_or_default();
        for line in text.lines() {
            let line = line.trim_start();
            if line.starts_with("restore_command")
                && (line.contains("get-wal") || line.contains("barman-wal-restore"))
            {
                return Err(format!(
                    "{}/{file} fetches WAL through Barman ({line}); recover without --get-wal \
                     so that the WAL files are copied into the data directory",
                    data_directory.display()
                ));
            }
        }
    }
    let scratch = scratch_dir("barsync-verify-")
        .map_err(|error| format!("cannot create a socket directory: {error}"))?;
    let socket = scratch.path().to_path_buf();
    let log = socket.join("postgres.log");
    let port = free_port().map_err(|error| format!("cannot pick a port: {error}"))?;
    let mut overrides = format!(
        "\n# barsync-tests verify_restored_cluster\n\
         listen_addresses = ''\n\
         port = {port}\n\
         unix_socket_directories = '{}'\n\
         archive_mode = off\n\
         fsync = off\n",
        socket.display()
    );
    if data_directory.join("recovery.signal").exists() {
        overrides.push_str("recovery_target_action = 'promote'\n");
    }
    let auto_conf = data_directory.join("postgresql.auto.conf");
    let mut text = fs::read_to_string(&auto_conf).unwrap_or_default();
    text.push_str(&overrides);
    fs::write(&auto_conf, text)
        .map_err(|error| format!("cannot write {}: {error}", auto_conf.display()))?;
    fs::write(&log, "").map_err(|error| format!("cannot create {}: {error}", log.display()))?;
    fs::set_permissions(&data_directory, fs::Permissions::from_mode(0o700))
        .map_err(|error| format!("chmod {}: {error}", data_directory.display()))?;
    chown_postgres(&data_directory).map_err(|error| error.to_string())?;
    chown_postgres(&socket).map_err(|error| error.to_string())?;
    let reachable = as_postgres(Path::new("test"))
        .arg("-r")
        .arg(data_directory.join("PG_VERSION"))
        .current_dir("/")
        .status()
        .map_err(|error| format!("cannot run runuser: {error}"))?;
    if !reachable.success() {
        return Err(format!(
            "the postgres user cannot reach {}: make its parent directories traversable \
             (e.g. recover into a barman_primary::scratch_dir())",
            data_directory.display()
        ));
    }

    let mut server = RunningCluster {
        pg_bin: pg_bin.clone(),
        data_directory: data_directory.clone(),
        started: false,
    };
    let output = as_postgres(&pg_bin.join("pg_ctl"))
        .args(["-w", "-t", "120", "-D"])
        .arg(&data_directory)
        .arg("-l")
        .arg(&log)
        .arg("start")
        .current_dir("/")
        .output()
        .map_err(|error| format!("cannot run pg_ctl: {error}"))?;
    server.started = true;
    if let Err(error) = check_output(&output, "pg_ctl start") {
        return Err(format!(
            "the restored cluster in {} did not start: {error}\nserver log tail:\n{}",
            data_directory.display(),
            tail(&log, 40)
        ));
    }
    let with_log = |error: String| format!("{error}\nserver log tail:\n{}", tail(&log, 40));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut in_recovery = true;
    while Instant::now() < deadline {
        let answer =
            psql(&pg_bin, &socket, port, &["SELECT pg_is_in_recovery()"]).map_err(with_log)?;
        if answer.trim() == "f" {
            in_recovery = false;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let actual = fingerprint(&pg_bin, &socket, port).map_err(with_log)?;
    server.stop().map_err(with_log)?;
    if &actual != expected {
        let mut differences = String::new();
        for table in PGBENCH_TABLES {
            let (want, got) = (expected.table(table), actual.table(table));
            if want != got {
                differences.push_str(&format!("  {table}: expected {want:?}, found {got:?}\n"));
            }
        }
        return Err(format!(
            "the restored cluster in {} differs from the expected tables{}:\n{differences}\
             server log tail:\n{}",
            data_directory.display(),
            if in_recovery {
                " (it was still in recovery after 60 s)"
            } else {
                ""
            },
            tail(&log, 40)
        ));
    }
    Ok(())
}

/// Stops a cluster started by [`verify_restored_cluster`], also on early return.
struct RunningCluster {
    pg_bin: PathBuf,
    data_directory: PathBuf,
    started: bool,
}

impl RunningCluster {
    fn stop(&mut self) -> Result<(), String> {
        if !self.started {
            return Ok(());
        }
        self.started = false;
        let output = as_postgres(&self.pg_bin.join("pg_ctl"))
            .args(["-w", "-t", "60", "-m", "fast", "-D"])
            .arg(&self.data_directory)
            .arg("stop")
            .current_dir("/")
            .output()
            .map_err(|error| format!("cannot run pg_ctl: {error}"))?;
        check_output(&output, "pg_ctl stop").map_err(|error| error.to_string())
    }
}

impl Drop for RunningCluster {
    fn drop(&mut self) {
        if self.started {
            let _ = as_postgres(&self.pg_bin.join("pg_ctl"))
                .args(["-w", "-m", "immediate", "-D"])
                .arg(&self.data_directory)
                .arg("stop")
                .current_dir("/")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
