//! A real OpenSSH server for tests: [`TestSshd`] starts `/usr/sbin/sshd` (or `$BARSYNC_TEST_SSHD`)
//! on 127.0.0.1 on a free port, as the current user, with everything it needs generated in its
//! own temporary directory: a host key, a client key, `authorized_keys`, a `known_hosts` that
//! trusts the host key, and `sshd_config` (`UsePAM no`, `StrictModes no`, root login by key).
//! It waits until the server answers with its SSH banner and kills it (and the sessions it
//! started) on drop.
//!
//! ```no_run
//! let sshd = barsync_tests::sshd::TestSshd::start().expect("sshd");
//! let command = sshd.ssh_command(); // "ssh -F none -p PORT -i KEY -o UserKnownHostsFile=... root@127.0.0.1"
//! // hand `command` to barsync (e.g. as Barman's primary_ssh_command) or run it.
//! ```
//!
//! Helpers: [`TestSshd::ssh_command_with`] for another known_hosts file or
//! StrictHostKeyChecking value, [`TestSshd::rotate_host_key`] to make the recorded key stale,
//! [`TestSshd::kill_sessions`] to cut every open connection, [`TestSshd::pause_sessions`] to
//! make the server silent (keepalive tests), [`TestSshd::log`] for diagnostics.
//! [`TestSshd::start_with_config_lines`] appends lines to the generated `sshd_config` (e.g.
//! `SetEnv PATH=...` so that sessions find test wrappers first).

use std::fs;
use std::io::{self, Read};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long [`TestSshd::start`] waits for the server's banner.
const STARTUP_DEADLINE: Duration = Duration::from_secs(10);

/// A running sshd for one test (or one group of tests). Killed on drop.
pub struct TestSshd {
    directory: tempfile::TempDir,
    sshd_program: PathBuf,
    port: u16,
    user: String,
    extra_config: Vec<String>,
    child: Option<Child>,
}

impl TestSshd {
    /// Generates keys and config in a new temporary directory and starts sshd on a free port.
    pub fn start() -> io::Result<TestSshd> {
        TestSshd::start_with_config_lines(&[])
    }

    /// Like [`TestSshd::start`], with `lines` appended to the generated `sshd_config` (each one
    /// an sshd_config directive such as `SetEnv PATH=/some/bin:/usr/bin:/bin`).
    pub fn start_with_config_lines(lines: &[String]) -> io::Result<TestSshd> {
        let sshd_program = std::env::var_os("BARSYNC_TEST_SSHD")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/sbin/sshd"));
        let directory = tempfile::Builder::new().prefix("barsync-sshd-").tempdir()?;
        let user = barsync_sync::fixture::current_user();
        let mut sshd = TestSshd {
            directory,
            sshd_program,
            port: 0,
            user,
            extra_config: lines.to_vec(),
            child: None,
        };
        sshd.generate_key("host_key")?;
        sshd.generate_key("client_key")?;
        fs::copy(sshd.path("client_key.pub"), sshd.path("authorized_keys"))?;
        // Debian's sshd refuses to start without its privilege separation directory.
        fs::create_dir_all("/run/sshd").ok();
        let mut last_error = None;
        for _ in 0..5 {
            sshd.port = free_port()?;
            sshd.write_known_hosts()?;
            sshd.write_config()?;
            match sshd.launch() {
                Ok(()) => return Ok(sshd),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("sshd did not start")))
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The host to connect to: `127.0.0.1`.
    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    /// The login user (the user running the tests).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The temporary directory holding keys, config and log.
    pub fn directory(&self) -> &Path {
        self.directory.path()
    }

    /// The private key that `authorized_keys` accepts.
    pub fn client_key(&self) -> PathBuf {
        self.path("client_key")
    }

    /// A known_hosts file recording the current host key as `[127.0.0.1]:PORT`.
    pub fn known_hosts(&self) -> PathBuf {
        self.path("known_hosts")
    }

    /// The `known_hosts` line for the current host key.
    pub fn known_hosts_line(&self) -> io::Result<String> {
        let public_key = fs::read_to_string(self.path("host_key.pub"))?;
        let mut fields = public_key.split_whitespace();
        let (key_type, key) = (
            fields.next().unwrap_or_default(),
            fields.next().unwrap_or_default(),
        );
        Ok(format!("[127.0.0.1]:{} {key_type} {key}\n", self.port))
    }

    /// A known_hosts file (in this server's directory) recording the current host key as
    /// `[127.0.0.1]:PORT` for another `port`: that of a TCP forwarder in front of this server,
    /// such as a [`ShapingProxy`](crate::proxy::ShapingProxy).
    pub fn known_hosts_via(&self, port: u16) -> io::Result<PathBuf> {
        let path = self.path(&format!("known_hosts.{port}"));
        let line = self.known_hosts_line()?.replacen(
            &format!("[127.0.0.1]:{} ", self.port),
            &format!("[127.0.0.1]:{port} "),
            1,
        );
        fs::write(&path, line)?;
        Ok(path)
    }

    /// [`TestSshd::ssh_command`] through a TCP forwarder on `port` of 127.0.0.1, checking the
    /// host key against [`TestSshd::known_hosts_via`] that port.
    pub fn ssh_command_via(&self, port: u16) -> io::Result<String> {
        let known_hosts = self.known_hosts_via(port)?;
        Ok(self.ssh_command_with(&known_hosts, "yes").replacen(
            &format!("-p {} ", self.port),
            &format!("-p {port} "),
            1,
        ))
    }

    /// The ssh command (OpenSSH syntax) that reaches this server with strict host key checking
    /// against [`TestSshd::known_hosts`]:
    /// `ssh -F none -p PORT -i KEY -o UserKnownHostsFile=FILE -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes -o BatchMode=yes USER@127.0.0.1`.
    pub fn ssh_command(&self) -> String {
        self.ssh_command_with(&self.known_hosts(), "yes")
    }

    /// Like [`TestSshd::ssh_command`] with another known_hosts file and StrictHostKeyChecking
    /// value (`yes`, `accept-new`, `no`).
    pub fn ssh_command_with(&self, known_hosts: &Path, strict_host_key_checking: &str) -> String {
        self.ssh_command_with_key(&self.client_key(), known_hosts, strict_host_key_checking)
    }

    /// Like [`TestSshd::ssh_command_with`] with another private key (e.g. one not authorized).
    pub fn ssh_command_with_key(
        &self,
        key: &Path,
        known_hosts: &Path,
        strict_host_key_checking: &str,
    ) -> String {
        format!(
            "ssh -F none -p {} -i {} -o UserKnownHostsFile={} -o GlobalKnownHostsFile=/dev/null \
             -o StrictHostKeyChecking={strict_host_key_checking} -o IdentitiesOnly=yes -o BatchMode=yes {}@127.0.0.1",
            self.port,
            key.display(),
            known_hosts.display(),
            self.user
        )
    }

    /// Generates a new host key and restarts sshd with it on the same port. The known_hosts
    /// file of [`TestSshd::known_hosts`] is left as it was, so it now records a stale key.
    pub fn rotate_host_key(&mut self) -> io::Result<()> {
        self.stop();
        fs::remove_file(self.path("host_key"))?;
        fs::remove_file(self.path("host_key.pub"))?;
        self.generate_key("host_key")?;
        self.launch()
    }

    /// Kills (SIGKILL) every process that sshd started for connections (session processes and
    /// the commands they run): every open connection drops at once, the listener keeps running.
    pub fn kill_sessions(&self) -> io::Result<usize> {
        self.signal_sessions("-KILL")
    }

    /// Stops (SIGSTOP) every connection's processes: the TCP connections stay open but the
    /// server goes silent, as behind a dead network path. Undo with [`TestSshd::resume_sessions`].
    pub fn pause_sessions(&self) -> io::Result<usize> {
        self.signal_sessions("-STOP")
    }

    /// Continues (SIGCONT) the processes stopped by [`TestSshd::pause_sessions`].
    pub fn resume_sessions(&self) -> io::Result<usize> {
        self.signal_sessions("-CONT")
    }

    /// Sends `signal` (as `kill` spells it, e.g. `-KILL`) to every connection's processes.
    fn signal_sessions(&self, signal: &str) -> io::Result<usize> {
        let Some(child) = &self.child else {
            return Ok(0);
        };
        let descendants = descendants_of(child.id());
        for pid in &descendants {
            Command::new("kill")
                .arg(signal)
                .arg(pid.to_string())
                .status()?;
        }
        Ok(descendants.len())
    }

    /// What sshd logged so far (it runs with `-e`, logging to `sshd.log`).
    pub fn log(&self) -> String {
        fs::read_to_string(self.path("sshd.log")).unwrap_or_default()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.directory.path().join(name)
    }

    fn generate_key(&self, name: &str) -> io::Result<()> {
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "barsync-test", "-f"])
            .arg(self.path(name))
            .stdin(Stdio::null())
            .status()?;
        if !status.success() {
            return Err(io::Error::other(format!(
                "ssh-keygen failed for {name}: {status}"
            )));
        }
        Ok(())
    }

    fn write_known_hosts(&self) -> io::Result<()> {
        fs::write(self.known_hosts(), self.known_hosts_line()?)
    }

    fn write_config(&self) -> io::Result<()> {
        let mut config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {pid}\n\
             AuthorizedKeysFile {authorized}\nPermitRootLogin prohibit-password\nPubkeyAuthentication yes\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
             MaxStartups 64\nMaxSessions 64\nLogLevel VERBOSE\nSubsystem sftp internal-sftp\n",
            port = self.port,
            host_key = self.path("host_key").display(),
            pid = self.path("sshd.pid").display(),
            authorized = self.path("authorized_keys").display(),
        );
        // Sessions get a HOME of their own: the shell sshd starts reads `~/.bashrc`, and the
        // machine user's may run slow or blocking things (a `pyenv rehash` that waits a minute
        // on a lock left by a killed session). sshd honours only its first `SetEnv` line, so
        // the extra lines' variables join this one.
        let home = self.path("session-home");
        fs::create_dir_all(&home)?;
        let mut environment = vec![format!("HOME={}", home.display())];
        for line in &self.extra_config {
            match line.strip_prefix("SetEnv ") {
                Some(variables) => environment.push(variables.trim().to_owned()),
                None => {
                    config.push_str(line);
                    config.push('\n');
                }
            }
        }
        config.push_str(&format!("SetEnv {}\n", environment.join(" ")));
        fs::write(self.path("sshd_config"), config)
    }

    fn launch(&mut self) -> io::Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("sshd.log"))?;
        let mut child = Command::new(&self.sshd_program)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(self.path("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot run {}: {e}", self.sshd_program.display()),
                )
            })?;
        let deadline = Instant::now() + STARTUP_DEADLINE;
        loop {
            if let Some(status) = child.try_wait()? {
                return Err(io::Error::other(format!(
                    "sshd exited with {status}; log:\n{}",
                    self.log()
                )));
            }
            if banner_received(self.port) {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::other(format!(
                    "sshd did not answer within 10 s; log:\n{}",
                    self.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        let _ = self.kill_sessions();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TestSshd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn banner_received(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut banner = [0u8; 8];
    stream.read_exact(&mut banner).is_ok() && banner.starts_with(b"SSH-2.0")
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// All descendants of `pid`, children first, from `/proc/*/stat`.
fn descendants_of(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // Fields after the command name, which is in parentheses and may contain spaces.
            let Some(after_name) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            let parent = after_name
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse().ok());
            if let Some(parent) = parent {
                parents.push((child, parent));
            }
        }
    }
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(current) = frontier.pop() {
        for &(child, parent) in &parents {
            if parent == current && !found.contains(&child) {
                found.push(child);
                frontier.push(child);
            }
        }
    }
    found
}
