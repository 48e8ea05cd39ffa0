//! A real Barman primary for end-to-end tests: [`BarmanPrimary`] owns one temporary directory
//! under `/tmp` holding a PostgreSQL 15 cluster filled by `pgbench -i` and a Barman 3.20.1
//! server `pg` that backs it up with `backup_method = postgres` (pg_basebackup) and receives its
//! WAL through `archive_command` into `incoming/`. Dropping it stops PostgreSQL and deletes the
//! directory.
//!
//! Layout of [`BarmanPrimary::directory`]:
//! - `postgres/` (owned by the `postgres` OS user): `data/` (PGDATA), `socket/` (Unix socket),
//!   `wal-staging/` (where `archive_command` copies a WAL before `mv`-ing it into Barman's
//!   `incoming/`, so Barman never sees a half-written file) and `postgres.log`;
//! - `primary-home/` (`barman_home`; `pg/incoming/` is owned by `postgres`), `primary.conf`,
//!   `barman.log`;
//! - `bin/barman`: `exec <venv barman> -c <primary.conf> "$@"`, for ssh sessions (below).
//!
//! PostgreSQL refuses to run as root, so `initdb`, `pg_ctl` and `postgres` run as the
//! `postgres` OS user (`runuser`); Barman, `psql` and `pgbench` run as the current user (root),
//! which is `barman_user`.
//!
//! ```no_run
//! use barsync_tests::barman_primary::{verify_restored_cluster, BarmanPrimary};
//! let primary = BarmanPrimary::start(5).expect("primary");
//! let first = primary.backup(); // DONE, e.g. "20261126T161128"
//! primary.pgbench_run(1000);
//! let second = primary.backup();
//! primary.archive_wals();
//! let expected = primary.table_fingerprint();
//! // ... barman recover, or sync to a passive and recover there ...
//! # let restored = std::path::Path::new("/tmp/x");
//! verify_restored_cluster(restored, &expected).expect("restored cluster matches");
//! ```
//!
//! # Reaching the primary over ssh as a passive node does
//! A passive runs `<primary_ssh_command> "barman sync-info pg"` (and rsync or barsync through
//! the same command), so on the remote side `barman` must be this primary's Barman with its
//! `-c primary.conf`. [`BarmanPrimary::remote_path_dir`] holds such a `barman` wrapper, and
//! [`BarmanPrimary::sshd_config_lines`] gives the `SetEnv PATH=<that dir>:<standard PATH>` line
//! for [`TestSshd::start_with_config_lines`]; [`BarmanPrimary::start_sshd`] does both:
//!
//! ```no_run
//! # let primary = barsync_tests::barman_primary::BarmanPrimary::start(1).unwrap();
//! let sshd = primary.start_sshd().expect("sshd");
//! // A passive's `primary_ssh_command = <sshd.ssh_command()>`; `barman sync-info pg` over it
//! // answers with this primary's catalog.
//! ```
//!
//! The session's shell still reads the login user's rc files (root's `.bashrc` here prepends
//! pyenv shims and cargo's bin): the wrapper wins as long as none of those directories holds a
//! `barman`, which [`BarmanPrimary::start_sshd`] checks.
//!
//! # Settings that matter
//! PostgreSQL: `wal_level = replica`, `archive_mode = on`, `max_wal_senders` (pg_basebackup),
//! pg_hba `trust` for `replication` from 127.0.0.1. Barman: `backup_method = postgres` with
//! `streaming_conninfo`, `archiver = on`, `path_prefix` = the PostgreSQL 15 bin directory (so
//! Barman runs the matching pg_basebackup) and `immediate_checkpoint = true`: without it
//! pg_basebackup waits for a spread checkpoint, almost two minutes with the default
//! `checkpoint_timeout`. WAL files are not compressed (`compression` unset).
//!
//! # What the catalog looks like (scale 5, seen with Barman 3.20.1 and PostgreSQL 15)
//! - A backup `base/<ID>/data/` is ~97 MiB in ~978 files and 27 directories, all owned by root
//!   with mode 0600 (directories 0700), including pg_basebackup's `backup_manifest` and the
//!   cluster's `postgresql.conf`/`pg_hba.conf`. pg_basebackup (plain format) does not keep the
//!   source mtimes: every file's mtime is the moment it was written, within the copy's second
//!   or two. There is no `base/<ID>/backup.info`; it is `meta/<ID>-backup.info` (`mode=postgres`,
//!   `backup_type` full, `end_wal` = `begin_wal`, `end_offset=0`).
//! - `wals/0000000100000000/` holds plain 16 MiB segments and `<seg>.<offset>.backup` files
//!   (338 bytes), still owned by `postgres` with mode 0600 (Barman moves them from
//!   `incoming/`); xlog db compression and encryption columns are `None`.
//! - When the first backup completes Barman deletes the older WALs: after two backups, a
//!   `pgbench_run` between them and [`BarmanPrimary::archive_wals`], the xlog db has six lines
//!   (…06, …06.00000028.backup, …07, …08, …08.00000028.backup, …09).

use std::cell::Cell;
use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::sshd::TestSshd;

/// The Barman server name of the fixture.
pub const SERVER_NAME: &str = "pg";

/// The pgbench tables that [`TableFingerprint`] covers, in its order.
pub const PGBENCH_TABLES: [&str; 4] = [
    "pgbench_accounts",
    "pgbench_branches",
    "pgbench_tellers",
    "pgbench_history",
];

/// PATH of ssh sessions after the wrapper directory (Debian's sshd default).
const STANDARD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The database pgbench and the fingerprint use.
const DATABASE: &str = "postgres";

/// How long a backup may take to reach DONE, WAL archiving included.
const BACKUP_DEADLINE: Duration = Duration::from_secs(60);

/// How long Barman waits for one WAL (`--wait-timeout`, `--archive-timeout`).
const WAL_WAIT_SECONDS: &str = "30";

/// Path of the Barman executable: `$BARSYNC_TEST_BARMAN`, else the workspace's
/// `.venv/bin/barman`. Panics with installation instructions when it is missing.
pub fn barman_path() -> PathBuf {
    let path = match std::env::var_os("BARSYNC_TEST_BARMAN") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/barman"),
    };
    assert!(
        path.is_file(),
        "Barman is missing at {}: install it with `cd {}/.. && PYENV_VERSION=3.12.1 python3.12 -m venv .venv \
         && .venv/bin/pip install barman==3.20.1`, or point BARSYNC_TEST_BARMAN at a barman executable",
        path.display(),
        env!("CARGO_MANIFEST_DIR")
    );
    path
}

/// The PostgreSQL 15 bin directory: `$BARSYNC_TEST_PG_BIN`, else `/usr/lib/postgresql/15/bin`.
/// Panics when `initdb` is not there.
pub fn pg_bin() -> PathBuf {
    let path = std::env::var_os("BARSYNC_TEST_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
    assert!(
        path.join("initdb").is_file(),
        "PostgreSQL binaries are missing: no initdb in {} (install postgresql-15, or point \
         BARSYNC_TEST_PG_BIN at a PostgreSQL bin directory)",
        path.display()
    );
    path
}

/// A new temporary directory under `/tmp` that the `postgres` OS user can traverse (mode
/// 0755), e.g. as the parent of a `barman recover` destination for
/// [`verify_restored_cluster`]. Removed on drop.
pub fn scratch_dir(prefix: &str) -> io::Result<tempfile::TempDir> {
    let directory = tempfile::Builder::new().prefix(prefix).tempdir_in("/tmp")?;
    fs::set_permissions(directory.path(), fs::Permissions::from_mode(0o755))?;
    Ok(directory)
}

/// Row count and content digest of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDigest {
    pub table: String,
    pub rows: u64,
    /// md5 (hex) of the concatenated md5s of the rows' text forms, sorted: independent of the
    /// physical row order, so equal for a cluster and its restored copy.
    pub md5: String,
}

/// The contents of the pgbench tables ([`PGBENCH_TABLES`]), to compare a cluster with a
/// restored copy of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableFingerprint {
    pub tables: Vec<TableDigest>,
}

impl TableFingerprint {
    /// The digest of `table`, if covered.
    pub fn table(&self, table: &str) -> Option<&TableDigest> {
        self.tables.iter().find(|digest| digest.table == table)
    }
}

impl fmt::Display for TableFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, digest) in self.tables.iter().enumerate() {
            if index > 0 {
                f.write_str(", ")?;
            }
            write!(
                f,
                "{}: {} rows md5 {}",
                digest.table, digest.rows, digest.md5
            )?;
        }
        Ok(())
    }
}

/// A PostgreSQL 15 cluster with pgbench data, backed up by a real Barman primary (server
/// [`SERVER_NAME`]). See the module documentation.
pub struct BarmanPrimary {
    directory: tempfile::TempDir,
    port: u16,
    barman: PathBuf,
    pg_bin: PathBuf,
    running: bool,
    last_backup_start: Cell<Option<Instant>>,
}

impl BarmanPrimary {
    /// Creates the cluster (`initdb`), starts it on a free port of 127.0.0.1, loads pgbench data
    /// at `scale` (`pgbench -i -s scale`, 100 000 accounts per unit, ~16 MB of data each) and
    /// writes the Barman configuration. No backup is taken yet.
    pub fn start(scale: u32) -> io::Result<BarmanPrimary> {
        let barman = barman_path();
        let pg_bin = pg_bin();
        require_postgres_user();
        let directory = scratch_dir("barsync-barman-primary-")?;
        let mut primary = BarmanPrimary {
            directory,
            port: 0,
            barman,
            pg_bin,
            running: false,
            last_backup_start: Cell::new(None),
        };
        primary.create_directories()?;
        primary.initdb()?;
        let mut last_error = None;
        for _ in 0..5 {
            primary.port = free_port()?;
            primary.write_postgresql_conf()?;
            match primary.start_postgres() {
                Ok(()) => {
                    last_error = None;
                    break;
                }
                Err(error) => last_error = Some(error),
            }
        }
        if let Some(error) = last_error {
            return Err(error);
        }
        primary.write_barman_conf()?;
        primary.write_wrapper()?;
        let output = primary
            .command(primary.pg_bin.join("pgbench"))
            .args(["-i", "-q", "-s", &scale.to_string()])
            .arg(DATABASE)
            .output()?;
        check_output(&output, "pgbench -i")?;
        Ok(primary)
    }

    /// The fixture's temporary directory.
    pub fn directory(&self) -> &Path {
        self.directory.path()
    }

    /// The primary's Barman configuration file (`primary.conf`).
    pub fn config_path(&self) -> PathBuf {
        self.path("primary.conf")
    }

    /// Barman's `barman_home`; the server's catalog is `barman_home()/pg`.
    pub fn barman_home(&self) -> PathBuf {
        self.path("primary-home")
    }

    /// The Barman server name, `pg`.
    pub fn server_name(&self) -> &str {
        SERVER_NAME
    }

    /// PostgreSQL's TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// PostgreSQL's Unix socket directory.
    pub fn socket_directory(&self) -> PathBuf {
        self.path("postgres/socket")
    }

    /// PostgreSQL's data directory (owned by `postgres`).
    pub fn data_directory(&self) -> PathBuf {
        self.path("postgres/data")
    }

    /// The Barman executable (without `-c`).
    pub fn barman(&self) -> &Path {
        &self.barman
    }

    /// The PostgreSQL bin directory in use.
    pub fn pg_bin(&self) -> &Path {
        &self.pg_bin
    }

    /// The directory holding the `barman` wrapper (`exec <barman> -c <primary.conf> "$@"`); put
    /// it first in PATH of whatever should see this primary as "barman".
    pub fn remote_path_dir(&self) -> PathBuf {
        self.path("bin")
    }

    /// sshd_config lines that make ssh sessions find [`BarmanPrimary::remote_path_dir`] first:
    /// `SetEnv PATH=<remote_path_dir>:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`.
    pub fn sshd_config_lines(&self) -> Vec<String> {
        self.sshd_config_lines_with_path(&[])
    }

    /// Like [`BarmanPrimary::sshd_config_lines`] with `extra_directories` in PATH between the
    /// wrapper directory and the standard directories (e.g. where a test's `barsync` binary
    /// is). The paths must not contain spaces.
    pub fn sshd_config_lines_with_path(&self, extra_directories: &[&Path]) -> Vec<String> {
        let mut path = self.remote_path_dir().display().to_string();
        for directory in extra_directories {
            path.push(':');
            path.push_str(&directory.display().to_string());
        }
        vec![format!("SetEnv PATH={path}:{STANDARD_PATH}")]
    }

    /// Starts a [`TestSshd`] with [`BarmanPrimary::sshd_config_lines`], and checks that `barman`
    /// in its sessions is this primary's wrapper: its `ssh_command()` is then a working
    /// `primary_ssh_command` for a passive node.
    pub fn start_sshd(&self) -> io::Result<TestSshd> {
        self.start_sshd_with_path(&[])
    }

    /// Like [`BarmanPrimary::start_sshd`] with `extra_directories` in the sessions' PATH (see
    /// [`BarmanPrimary::sshd_config_lines_with_path`]).
    pub fn start_sshd_with_path(&self, extra_directories: &[&Path]) -> io::Result<TestSshd> {
        let sshd = TestSshd::start_with_config_lines(
            &self.sshd_config_lines_with_path(extra_directories),
        )?;
        let output = Command::new("sh")
            .arg("-c")
            .arg(format!("{} 'command -v barman'", sshd.ssh_command()))
            .stdin(Stdio::null())
            .output()?;
        check_output(&output, "ssh ... command -v barman")?;
        let found = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        let expected = self.remote_path_dir().join("barman");
        if Path::new(&found) != expected {
            return Err(io::Error::other(format!(
                "over ssh, `barman` resolves to {found:?}, not {}: the login shell's rc files \
                 put another barman first in PATH",
                expected.display()
            )));
        }
        Ok(sshd)
    }

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

    /// Runs `pgbench -n -c 2 -t transactions` (each client runs `transactions`). Panics on
    /// failure.
    pub fn pgbench_run(&self, transactions: u32) {
        let output = self
            .command(self.pg_bin.join("pgbench"))
            .args(["-n", "-c", "2", "-t", &transactions.to_string()])
            .arg(DATABASE)
            .output()
            .expect("run pgbench");
        if let Err(error) = check_output(&output, "pgbench -n") {
            panic!("{error}\npostgres.log tail:\n{}", self.log_tail());
        }
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

    /// Row counts and digests of the pgbench tables of the running primary. Panics on failure.
    pub fn table_fingerprint(&self) -> TableFingerprint {
        fingerprint(&self.pg_bin, &self.socket_directory(), self.port)
            .unwrap_or_else(|error| panic!("{error}\npostgres.log tail:\n{}", self.log_tail()))
    }

    /// Runs one SQL statement with psql (unaligned, tuples only) and returns its output.
    /// Panics on failure.
    pub fn query(&self, sql: &str) -> String {
        psql(&self.pg_bin, &self.socket_directory(), self.port, &[sql])
            .unwrap_or_else(|error| panic!("{error}\npostgres.log tail:\n{}", self.log_tail()))
    }

    /// The last lines of PostgreSQL's log.
    pub fn log_tail(&self) -> String {
        tail(&self.path("postgres/postgres.log"), 40)
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.directory.path().join(relative)
    }

    /// A command for psql or pgbench against this cluster, run as the current user.
    fn command(&self, program: PathBuf) -> Command {
        let mut command = Command::new(program);
        command
            .arg("-h")
            .arg(self.socket_directory())
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", "postgres"])
            .current_dir(self.directory())
            .stdin(Stdio::null());
        command
    }

    fn create_directories(&self) -> io::Result<()> {
        for directory in [
            "postgres/data",
            "postgres/socket",
            "postgres/wal-staging",
            "primary-home/pg/incoming",
            "bin",
        ] {
            fs::create_dir_all(self.path(directory))?;
        }
        fs::write(self.path("postgres/postgres.log"), "")?;
        fs::set_permissions(
            self.path("postgres/data"),
            fs::Permissions::from_mode(0o700),
        )?;
        chown_postgres(&self.path("postgres"))?;
        chown_postgres(&self.path("primary-home/pg/incoming"))
    }

    fn initdb(&self) -> io::Result<()> {
        let output = as_postgres(&self.pg_bin.join("initdb"))
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
            .args(["--no-sync", "--no-instructions", "-D"])
            .arg(self.data_directory())
            .current_dir(self.directory())
            .output()?;
        check_output(&output, "initdb")
    }

    fn write_postgresql_conf(&self) -> io::Result<()> {
        let staging = self.path("postgres/wal-staging");
        let incoming = self.path("primary-home/pg/incoming");
        let archive_command = format!(
            "cp %p {staging}/%f && mv -f {staging}/%f {incoming}/%f",
            staging = staging.display(),
            incoming = incoming.display()
        );
        let settings = format!(
            "\n# barsync-tests BarmanPrimary\n\
             listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = '{socket}'\n\
             wal_level = replica\n\
             archive_mode = on\n\
             archive_command = '{archive_command}'\n\
             max_wal_senders = 10\n\
             fsync = off\n\
             synchronous_commit = off\n\
             shared_buffers = 64MB\n\
             max_wal_size = 1GB\n\
             autovacuum = off\n",
            port = self.port,
            socket = self.socket_directory().display(),
        );
        // Rewritten on every start attempt: keep initdb's file and append the settings.
        let conf = self.data_directory().join("postgresql.conf");
        let original = self.path("postgres/postgresql.conf.initdb");
        if !original.exists() {
            fs::copy(&conf, &original)?;
        }
        let mut text = fs::read_to_string(&original)?;
        text.push_str(&settings);
        fs::write(&conf, text)?;
        fs::write(
            self.data_directory().join("pg_hba.conf"),
            "local all all trust\nlocal replication all trust\n\
             host all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n",
        )
    }

    fn start_postgres(&mut self) -> io::Result<()> {
        let output = as_postgres(&self.pg_bin.join("pg_ctl"))
            .args(["-w", "-t", "60", "-D"])
            .arg(self.data_directory())
            .arg("-l")
            .arg(self.path("postgres/postgres.log"))
            .arg("start")
            .current_dir(self.directory())
            .output()?;
        check_output(&output, "pg_ctl start")
            .map_err(|error| io::Error::other(format!("{error}\n{}", self.log_tail())))?;
        self.running = true;
        Ok(())
    }

    fn write_barman_conf(&self) -> io::Result<()> {
        let config = format!(
            "[barman]\n\
             barman_home = {home}\n\
             barman_user = {user}\n\
             log_file = {log}\n\
             log_level = INFO\n\
             \n\
             [{SERVER_NAME}]\n\
             description = barsync-tests Barman primary\n\
             conninfo = host=127.0.0.1 port={port} user=postgres dbname=postgres\n\
             streaming_conninfo = host=127.0.0.1 port={port} user=postgres\n\
             backup_method = postgres\n\
             backup_options = concurrent_backup\n\
             immediate_checkpoint = true\n\
             archiver = on\n\
             streaming_archiver = off\n\
             path_prefix = {pg_bin}\n",
            home = self.barman_home().display(),
            user = current_user()?,
            log = self.path("barman.log").display(),
            port = self.port,
            pg_bin = self.pg_bin.display(),
        );
        fs::write(self.config_path(), config)
    }

    fn write_wrapper(&self) -> io::Result<()> {
        let wrapper = self.remote_path_dir().join("barman");
        fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nexec '{}' -c '{}' \"$@\"\n",
                self.barman.display(),
                self.config_path().display()
            ),
        )?;
        fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755))
    }
}

impl Drop for BarmanPrimary {
    fn drop(&mut self) {
        if self.running {
            let _ = as_postgres(&self.pg_bin.join("pg_ctl"))
                .args(["-w", "-m", "immediate", "-D"])
                .arg(self.data_directory())
                .arg("stop")
                .current_dir("/")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

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

/// The fingerprint SQL: for each table, its row count and the md5 of its rows' md5s in sorted
/// order (rows rendered with ISO dates).
fn fingerprint_sql() -> String {
    PGBENCH_TABLES
        .iter()
        .enumerate()
        .map(|(index, table)| {
            format!(
                "SELECT {index} AS n, '{table}' AS t, count(*), \
                 md5(coalesce(string_agg(h, '' ORDER BY h COLLATE \"C\"), '')) \
                 FROM (SELECT md5(r::text) AS h FROM {table} r) rows"
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
        + " ORDER BY n"
}

fn fingerprint(pg_bin: &Path, socket: &Path, port: u16) -> Result<TableFingerprint, String> {
    let output = psql(
        pg_bin,
        socket,
        port,
        &[
            "SET datestyle = 'ISO, YMD'",
            "SET timezone = 'UTC'",
            "SET extra_float_digits = 3",
            &fingerprint_sql(),
        ],
    )?;
    let mut tables = Vec::new();
    for line in output.lines().filter(|line| !line.is_empty()) {
        let fields: Vec<&str> = line.split('|').collect();
        let [_, table, rows, md5] = fields.as_slice() else {
            return Err(format!("unexpected fingerprint line {line:?}"));
        };
        tables.push(TableDigest {
            table: (*table).to_owned(),
            rows: rows
                .parse()
                .map_err(|_| format!("unexpected row count in {line:?}"))?,
            md5: (*md5).to_owned(),
        });
    }
    if tables.len() != PGBENCH_TABLES.len() {
        return Err(format!("unexpected fingerprint output {output:?}"));
    }
    Ok(TableFingerprint { tables })
}

/// Runs `statements` (each as one `-c`) with psql as the current user over the Unix socket.
fn psql(pg_bin: &Path, socket: &Path, port: u16, statements: &[&str]) -> Result<String, String> {
    let mut command = Command::new(pg_bin.join("psql"));
    command
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
        .arg(socket)
        .args(["-p", &port.to_string(), "-U", "postgres", "-d", "postgres"])
        .current_dir("/")
        .stdin(Stdio::null());
    for statement in statements {
        command.arg("-c").arg(statement);
    }
    let output = command
        .output()
        .map_err(|error| format!("cannot run psql: {error}"))?;
    check_output(&output, "psql").map_err(|error| error.to_string())?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A command running `program` as the `postgres` OS user.
fn as_postgres(program: &Path) -> Command {
    let mut command = Command::new("runuser");
    command
        .args(["-u", "postgres", "--"])
        .arg(program)
        .stdin(Stdio::null());
    command
}

fn chown_postgres(path: &Path) -> io::Result<()> {
    let output = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .output()?;
    check_output(&output, "chown -R postgres:postgres")
}

fn require_postgres_user() {
    let exists = Command::new("id")
        .args(["-u", "postgres"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|status| status.success())
        .unwrap_or(false);
    assert!(
        exists,
        "no `postgres` OS user: PostgreSQL refuses to run as root, create it with \
         `useradd --system --user-group --no-create-home postgres`"
    );
}

fn check_output(output: &Output, what: &str) -> io::Result<()> {
    if output.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )))
}

fn describe(what: &str, output: &Output) -> String {
    format!(
        "--- {what}: {}\nstdout:\n{}\nstderr:\n{}\n",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|error| format!("({error})"));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

fn current_user() -> io::Result<String> {
    let output = Command::new("id").arg("-un").output()?;
    let name = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if name.is_empty() {
        return Err(io::Error::other("cannot tell the current user (id -un)"));
    }
    Ok(name)
}
