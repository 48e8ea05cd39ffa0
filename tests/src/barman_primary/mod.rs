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

mod barman;
mod fingerprint;
mod postgres;
mod process;
mod restore;
mod ssh;

use std::cell::Cell;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[cfg(doc)] // Only named by the module documentation.
use crate::sshd::TestSshd;

pub use fingerprint::{TableDigest, TableFingerprint};
pub use restore::verify_restored_cluster;

use postgres::{free_port, require_postgres_user};
use process::check_output;

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

/// A PostgreSQL 15 cluster with pgbench data, backed up by a real Barman primary (server
/// [`SERVER_NAME`]). See the module documentation.
pub struct BarmanPrimary {
    directory: tempfile::TempDir,
    port: u16,
    barman: PathBuf,
    pg_bin: PathBuf,
    running: bool,
    last_backup_start: Cell<Option<Instant>>,
    /// `postgresql.conf` lines a test added.
    extra_settings: Vec<String>,
}

impl BarmanPrimary {
    /// Creates the cluster (`initdb`), starts it on a free port of 127.0.0.1, loads pgbench data
    /// at `scale` (`pgbench -i -s scale`, 100 000 accounts per unit, ~16 MB of data each) and
    /// writes the Barman configuration. No backup is taken yet.
    pub fn start(scale: u32) -> io::Result<BarmanPrimary> {
        Self::start_with_settings(scale, &[])
    }

    /// [`BarmanPrimary::start`] with more `postgresql.conf` lines (e.g. `archive_timeout =
    /// 10s`), appended after the fixture's own settings (so they win).
    pub fn start_with_settings(scale: u32, settings: &[&str]) -> io::Result<BarmanPrimary> {
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
            extra_settings: settings.iter().map(|line| (*line).to_owned()).collect(),
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

    fn path(&self, relative: &str) -> PathBuf {
        self.directory.path().join(relative)
    }
}
