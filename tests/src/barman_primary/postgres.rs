//! The PostgreSQL side of the primary: the `postgres` OS user (`runuser`, `chown`, its
//! existence check), free ports, psql, the cluster's directories, `initdb`, `postgresql.conf`
//! and `pg_hba.conf`, starting it with `pg_ctl` and stopping it on drop, pgbench runs and
//! queries.

use std::fs;
use std::io;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::process::{check_output, tail};
use super::{BarmanPrimary, DATABASE};

impl BarmanPrimary {
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

    /// Starts `pgbench -n -c 1 -f SCRIPT -T seconds [-R rate]` in the background (as the
    /// current user, against this cluster); the caller waits for or kills it.
    pub fn pgbench_spawn(
        &self,
        script: &Path,
        seconds: u32,
        rate: Option<u32>,
    ) -> io::Result<std::process::Child> {
        let mut command = self.command(self.pg_bin.join("pgbench"));
        command
            .args(["-n", "-c", "1", "-f"])
            .arg(script)
            .args(["-T", &seconds.to_string()]);
        if let Some(rate) = rate {
            command.args(["-R", &rate.to_string()]);
        }
        command
            .arg(DATABASE)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
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

    /// A command for psql or pgbench against this cluster, run as the current user.
    pub(super) fn command(&self, program: PathBuf) -> Command {
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

    pub(super) fn create_directories(&self) -> io::Result<()> {
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

    pub(super) fn initdb(&self) -> io::Result<()> {
        let output = as_postgres(&self.pg_bin.join("initdb"))
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
            .args(["--no-sync", "--no-instructions", "-D"])
            .arg(self.data_directory())
            .current_dir(self.directory())
            .output()?;
        check_output(&output, "initdb")
    }

    pub(super) fn write_postgresql_conf(&self) -> io::Result<()> {
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
        for line in &self.extra_settings {
            text.push_str(line);
            text.push('\n');
        }
        fs::write(&conf, text)?;
        fs::write(
            self.data_directory().join("pg_hba.conf"),
            "local all all trust\nlocal replication all trust\n\
             host all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n",
        )
    }

    pub(super) fn start_postgres(&mut self) -> io::Result<()> {
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

/// Runs `statements` (each as one `-c`) with psql as the current user over the Unix socket.
pub(super) fn psql(
    pg_bin: &Path,
    socket: &Path,
    port: u16,
    statements: &[&str],
) -> Result<String, String> {
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
pub(super) fn as_postgres(program: &Path) -> Command {
    let mut command = Command::new("runuser");
    command
        .args(["-u", "postgres", "--"])
        .arg(program)
        .stdin(Stdio::null());
    command
}

pub(super) fn chown_postgres(path: &Path) -> io::Result<()> {
    let output = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .output()?;
    check_output(&output, "chown -R postgres:postgres")
}

pub(super) fn require_postgres_user() {
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

pub(super) fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}
