//! The Barman side of the primary: running `barman -c primary.conf`, taking backups and
//! reading their status from the catalog, archiving WAL, and writing `primary.conf` and the
//! `barman` wrapper.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use barsync_sync::fixture;

use super::process::{describe, tail};
use super::{BarmanPrimary, BACKUP_DEADLINE, SERVER_NAME, WAL_WAIT_SECONDS};

impl BarmanPrimary {
    /// Runs `barman -c primary.conf ARGS...` and returns its output, whatever its exit status.
    pub fn run_barman<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new(&self.barman);
        command
            .arg("-c")
            .arg(self.config_path())
            .args(args)
            .current_dir(self.directory())
            .stdin(Stdio::null());
        command
            .output()
            .unwrap_or_else(|error| panic!("cannot run {}: {error}", self.barman.display()))
    }

    /// Takes a backup with `barman backup --wait pg` and returns its ID once its status is
    /// DONE (forcing WAL switches and archiving while it waits). Panics, with Barman's output,
    /// if it does not get there within a minute.
    pub fn backup(&self) -> String {
        // Backup IDs have a one-second resolution.
        if let Some(previous) = self.last_backup_start.get() {
            let since = previous.elapsed();
            if since < Duration::from_millis(1100) {
                std::thread::sleep(Duration::from_millis(1100) - since);
            }
        }
        self.last_backup_start.set(Some(Instant::now()));
        let before = self.backup_ids();
        let output = self.run_barman([
            "backup",
            "--wait",
            "--wait-timeout",
            WAL_WAIT_SECONDS,
            SERVER_NAME,
        ]);
        let mut transcript = describe("barman backup --wait pg", &output);
        let new: Vec<String> = self
            .backup_ids()
            .into_iter()
            .filter(|id| !before.contains(id))
            .collect();
        let [id] = new.as_slice() else {
            let check = self.run_barman(["check", SERVER_NAME]);
            panic!(
                "barman backup made {} new backups ({new:?}), expected one\n{transcript}\n{}",
                new.len(),
                describe("barman check pg", &check)
            );
        };
        let deadline = Instant::now() + BACKUP_DEADLINE;
        loop {
            let status = self.backup_status(id);
            if status.as_deref() == Some("DONE") {
                return id.clone();
            }
            if Instant::now() > deadline || matches!(status.as_deref(), Some("FAILED") | None) {
                panic!(
                    "backup {id} of the Barman primary is {status:?}, not DONE\n{transcript}\n\
                     barman.log tail:\n{}",
                    tail(&self.path("barman.log"), 30)
                );
            }
            let switch = self.run_barman([
                "switch-wal",
                "--force",
                "--archive",
                "--archive-timeout",
                WAL_WAIT_SECONDS,
                SERVER_NAME,
            ]);
            transcript.push_str(&describe("barman switch-wal --force --archive pg", &switch));
            let check = self.run_barman(["check-backup", SERVER_NAME, id]);
            transcript.push_str(&describe("barman check-backup pg", &check));
        }
    }

    /// The IDs of the backups in the primary's catalog (`meta/*-backup.info`), sorted.
    pub fn backup_ids(&self) -> Vec<String> {
        let meta = self.barman_home().join(SERVER_NAME).join("meta");
        let mut ids: Vec<String> = fs::read_dir(&meta)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|entry| {
                        let name = entry.file_name().to_string_lossy().into_owned();
                        name.strip_suffix("-backup.info").map(str::to_owned)
                    })
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }

    /// The `status` in the backup.info of backup `id`, if it exists.
    pub fn backup_status(&self, id: &str) -> Option<String> {
        let info = self
            .barman_home()
            .join(SERVER_NAME)
            .join("meta")
            .join(format!("{id}-backup.info"));
        let text = fs::read_to_string(info).ok()?;
        text.lines()
            .find_map(|line| line.strip_prefix("status="))
            .map(str::to_owned)
    }

    /// Closes the current WAL segment and archives everything: `barman switch-wal --force
    /// --archive pg` (CHECKPOINT + `pg_switch_wal()`, then `archive-wal` until the closed segment
    /// is in the catalog) and one more `barman archive-wal pg`. Afterwards every change made
    /// before the call is in a WAL in the primary's `wals/` and xlog db. Panics on failure.
    pub fn archive_wals(&self) {
        let switch = self.run_barman([
            "switch-wal",
            "--force",
            "--archive",
            "--archive-timeout",
            WAL_WAIT_SECONDS,
            SERVER_NAME,
        ]);
        let archive = self.run_barman(["archive-wal", SERVER_NAME]);
        if !switch.status.success() || !archive.status.success() {
            panic!(
                "archiving the WAL of the Barman primary failed\n{}{}postgres.log tail:\n{}",
                describe("barman switch-wal --force --archive pg", &switch),
                describe("barman archive-wal pg", &archive),
                self.log_tail()
            );
        }
    }

    pub(super) fn write_barman_conf(&self) -> io::Result<()> {
        let log_file = format!("log_file = {}", self.path("barman.log").display());
        let conninfo = format!(
            "conninfo = host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        );
        let streaming_conninfo = format!(
            "streaming_conninfo = host=127.0.0.1 port={} user=postgres",
            self.port
        );
        let path_prefix = format!("path_prefix = {}", self.pg_bin.display());
        let config = fixture::barman_conf(
            &self.barman_home(),
            &fixture::current_user(),
            &[&log_file, "log_level = INFO"],
            SERVER_NAME,
            &[
                "description = barsync-tests Barman primary",
                &conninfo,
                &streaming_conninfo,
                "backup_method = postgres",
                "backup_options = concurrent_backup",
                "immediate_checkpoint = true",
                "archiver = on",
                "streaming_archiver = off",
                &path_prefix,
            ],
        );
        fs::write(self.config_path(), config)
    }

    pub(super) fn write_wrapper(&self) -> io::Result<()> {
        fixture::write_executable(
            &self.remote_path_dir().join("barman"),
            &fixture::barman_wrapper(&self.barman, &self.config_path()),
        )
        .map_err(io::Error::other)
    }
}
