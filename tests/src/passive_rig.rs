//! A passive node for end-to-end tests: a Barman configuration whose server `pg` has
//! `primary_ssh_command` pointing at a real sshd on loopback, behind which a wrapper makes
//! `barman` mean "Barman with the primary's configuration" (and `barsync`, unless left out,
//! the workspace's binary), so both `barman sync-info` and `barsync serve` run as they would
//! on a primary host.
//!
//! ```no_run
//! # use std::path::Path;
//! let rig = barsync_tests::passive_rig::PassiveRig::new(
//!     Path::new("/tmp/fx/primary.conf"),
//!     &barsync_tests::passive_rig::RigOptions::default(),
//! );
//! let output = rig.barsync(&["cron"]);
//! let listing = rig.barman(&["list-backups", "pg"]);
//! ```

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use barsync_sync::fixture;

use crate::binaries::barsync;
use crate::sshd::TestSshd;

/// How to build the rig.
#[derive(Debug, Clone)]
pub struct RigOptions {
    /// Whether `barsync` is installed on the "primary" (else the passive falls back to SFTP).
    pub barsync_on_primary: bool,
    /// Extra lines for the passive's `[pg]` section (e.g. `reuse_backup = link`).
    pub server_lines: Vec<String>,
    /// Whether the system's directories are on the "primary"'s PATH (else only its own
    /// `barman` wrapper, and `barsync` if installed, are: no `sha256sum` nor `b3sum`).
    pub system_path_on_primary: bool,
}

impl Default for RigOptions {
    fn default() -> Self {
        RigOptions {
            barsync_on_primary: true,
            server_lines: Vec::new(),
            system_path_on_primary: true,
        }
    }
}

/// A passive Barman node reaching a primary through sshd.
pub struct PassiveRig {
    pub directory: tempfile::TempDir,
    pub sshd: TestSshd,
    /// The passive's Barman configuration file.
    pub config: PathBuf,
    /// The passive's `barman_home`.
    pub home: PathBuf,
}

/// Real Barman 3.20.1: `$BARSYNC_TEST_BARMAN`, else the workspace's `.venv`.
pub fn barman_program() -> PathBuf {
    let path = std::env::var_os("BARSYNC_TEST_BARMAN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/barman"));
    assert!(
        path.is_file(),
        "real Barman 3.20.1 not found at {} (set BARSYNC_TEST_BARMAN or run scripts/test)",
        path.display()
    );
    path
}

fn write_executable(path: &Path, text: &str) {
    fixture::write_executable(path, text).unwrap();
}

impl PassiveRig {
    /// A passive for the primary whose Barman configuration is `primary_config`.
    pub fn new(primary_config: &Path, options: &RigOptions) -> PassiveRig {
        let directory = tempfile::Builder::new()
            .prefix("barsync-passive-")
            .tempdir()
            .unwrap();
        let bin = directory.path().join("primary-bin");
        fs::create_dir_all(&bin).unwrap();
        write_executable(
            &bin.join("barman"),
            &fixture::barman_wrapper(&barman_program(), primary_config),
        );
        if options.barsync_on_primary {
            std::os::unix::fs::symlink(barsync(), bin.join("barsync")).unwrap();
        }
        let system = if options.system_path_on_primary {
            ":/usr/local/bin:/usr/bin:/bin"
        } else {
            ""
        };
        let sshd =
            TestSshd::start_with_config_lines(&[format!("SetEnv PATH={}{system}", bin.display())])
                .expect("start sshd");
        let home = directory.path().join("passive-home");
        fs::create_dir_all(&home).unwrap();
        let config = directory.path().join("passive.conf");
        let log_file = format!(
            "log_file = {}",
            directory.path().join("passive.log").display()
        );
        let ssh = format!("primary_ssh_command = {}", sshd.ssh_command());
        let mut server_lines = vec!["description = passive copy of pg", ssh.as_str()];
        server_lines.extend(options.server_lines.iter().map(String::as_str));
        let text = fixture::barman_conf(
            &home,
            sshd.user(),
            &[&log_file, "log_level = INFO"],
            "pg",
            &server_lines,
        );
        fs::write(&config, text).unwrap();
        PassiveRig {
            directory,
            sshd,
            config,
            home,
        }
    }

    /// Runs `barsync SUBCOMMAND -c <passive config> ARGS...` (the first element of `args` is
    /// the subcommand).
    pub fn barsync(&self, args: &[&str]) -> Output {
        self.barsync_command(args).output().expect("run barsync")
    }

    /// The command [`PassiveRig::barsync`] runs (with Barman on PATH, as on a Barman passive
    /// node), to spawn it.
    pub fn barsync_command(&self, args: &[&str]) -> Command {
        let mut command = self.barsync_bare(&[args[0]]);
        command.arg("-c").arg(&self.config).args(&args[1..]);
        command
    }

    /// Runs `barsync -c <passive config> ARGS...`: the configuration before the subcommand,
    /// as `barman -c FILE COMMAND` is written.
    pub fn barsync_config_first(&self, args: &[&str]) -> Output {
        let mut command = self.barsync_bare(&["-c"]);
        command.arg(&self.config).args(args);
        command.output().expect("run barsync")
    }

    /// `barsync ARGS...` with Barman on PATH and nothing added.
    fn barsync_bare(&self, args: &[&str]) -> Command {
        let mut command = Command::new(barsync());
        command.args(args);
        let venv_bin = barman_program().parent().unwrap().to_path_buf();
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![venv_bin];
        paths.extend(std::env::split_paths(&path));
        command.env("PATH", std::env::join_paths(paths).unwrap());
        command
    }

    /// Runs real Barman with the passive's configuration.
    pub fn barman(&self, args: &[&str]) -> Output {
        Command::new(barman_program())
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("run barman")
    }

    /// The passive server's backup directory (`<home>/pg`).
    pub fn server_directory(&self) -> PathBuf {
        self.home.join("pg")
    }

    /// The `status=` of backup `id` in the passive's catalog, `absent` without a backup.info.
    pub fn backup_status(&self, id: &str) -> String {
        fs::read_to_string(
            self.server_directory()
                .join(format!("meta/{id}-backup.info")),
        )
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("status="))
        .unwrap_or("absent")
        .to_owned()
    }

    /// Replaces `primary_ssh_command` in the passive's configuration.
    pub fn set_primary_ssh_command(&self, command: &str) {
        let text = fs::read_to_string(&self.config).unwrap();
        let replaced: Vec<String> = text
            .lines()
            .map(|line| {
                if line.starts_with("primary_ssh_command") {
                    format!("primary_ssh_command = {command}")
                } else {
                    line.to_owned()
                }
            })
            .collect();
        fs::write(&self.config, replaced.join("\n") + "\n").unwrap();
    }

    /// The ssh command to the primary through a TCP proxy on `port` of 127.0.0.1 (such as a
    /// [`ShapingProxy`](crate::proxy::ShapingProxy) in front of the rig's sshd), with a
    /// known_hosts recording the sshd's host key for that port.
    pub fn ssh_command_via(&self, port: u16) -> String {
        self.sshd.ssh_command_via(port).unwrap()
    }

    /// Routes every `barsync serve` session through a forwarder that stops the first session
    /// to have sent `limit` bytes right there, as `at_limit` says (later sessions, and the
    /// others, pass everything). Deterministic cuts: nothing depends on timing.
    pub fn forward_serve_sessions(&self, limit: u64, at_limit: AtLimit) -> ServeForwarder {
        let dir = self.directory.path();
        let control = ServeForwarder {
            reached: dir.join("forwarder-reached"),
            release: dir.join("forwarder-release"),
        };
        let script = dir.join("forwarder.py");
        fs::write(&script, FORWARDER).unwrap();
        let mode = match at_limit {
            AtLimit::Cut => "cut",
            AtLimit::Hold => "hold",
        };
        let wrapper = dir.join("forwardssh");
        write_executable(
            &wrapper,
            &format!(
                "#!/bin/sh\n\
                 case \"$*\" in\n\
                 *serve*) exec python3 '{script}' {limit} '{reached}' '{release}' {mode} \"$@\" ;;\n\
                 esac\n\
                 exec \"$@\"\n",
                script = script.display(),
                reached = control.reached.display(),
                release = control.release.display(),
            ),
        );
        self.set_primary_ssh_command(&format!(
            "{} {}",
            wrapper.display(),
            self.sshd.ssh_command()
        ));
        control
    }

    /// Starts `barsync sync-backup ARGS... pg ID`, cuts every SSH session once the backup has
    /// been SYNCING for `after`, and returns what the run printed; checks it failed (status 1)
    /// and left the backup FAILED.
    pub fn sync_backup_cut(&self, args: &[&str], id: &str, after: std::time::Duration) -> Output {
        let mut all = vec!["sync-backup"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["pg", id]);
        let child = self
            .barsync_command(&all)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn barsync");
        std::thread::sleep(after);
        assert_eq!(self.backup_status(id), "SYNCING", "not syncing at the cut");
        assert!(self.sshd.kill_sessions().unwrap() > 0, "no session to cut");
        let cut = child.wait_with_output().expect("wait for barsync");
        assert_eq!(cut.status.code(), Some(1), "{}", describe(&cut));
        assert_eq!(self.backup_status(id), "FAILED", "{}", describe(&cut));
        cut
    }
}

/// What a serve session routed through [`PassiveRig::forward_serve_sessions`] does once it has
/// sent its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtLimit {
    /// The session is cut there: the primary's side dies, the passive reads end of stream.
    Cut,
    /// The session holds its stream there until [`ServeForwarder::resume`] or
    /// [`ServeForwarder::cut`].
    Hold,
}

/// Control of the sessions routed by [`PassiveRig::forward_serve_sessions`].
#[derive(Debug)]
pub struct ServeForwarder {
    reached: PathBuf,
    release: PathBuf,
}

impl ServeForwarder {
    /// Whether a session has reached the limit.
    pub fn reached(&self) -> bool {
        self.reached.exists()
    }

    /// Waits up to `timeout` for a session to reach the limit; whether one did.
    pub fn wait_reached(&self, timeout: std::time::Duration) -> bool {
        let start = std::time::Instant::now();
        while start.elapsed() < timeout {
            if self.reached() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.reached()
    }

    /// Lets a held session go on.
    pub fn resume(&self) {
        fs::write(&self.release, "go").unwrap();
    }

    /// Cuts a held session (its ssh is killed, its stream ends).
    pub fn cut(&self) {
        fs::write(&self.release, "cut").unwrap();
    }
}

/// The forwarder [`PassiveRig::forward_serve_sessions`] puts between `barsync serve`'s ssh and
/// the passive: it copies the primary's stream and, in the first session to send `limit` bytes
/// (in all, over the session's life), stops after exactly that many.
const FORWARDER: &str = r#"import os, subprocess, sys, time
limit, reached, release, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
child = subprocess.Popen(sys.argv[5:], stdout=subprocess.PIPE)
source, out, seen, armed = child.stdout, sys.stdout.buffer, 0, True

def stop():
    child.kill()
    child.wait()
    sys.exit(0)

while True:
    chunk = source.read1(65536)
    if not chunk:
        break
    at = limit - seen
    seen += len(chunk)
    if armed and at < len(chunk):
        armed = False
        try:
            os.mkdir(reached)
        except FileExistsError:
            pass
        else:
            out.write(chunk[:at])
            out.flush()
            if mode == "cut":
                stop()
            while not os.path.exists(release):
                time.sleep(0.02)
            time.sleep(0.05)
            with open(release) as f:
                if f.read().strip() != "go":
                    stop()
            chunk = chunk[at:]
    out.write(chunk)
    out.flush()
sys.exit(child.wait())
"#;

/// stdout and stderr of a command, for assertion messages.
pub fn describe(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Builds the sample primary of [`barsync_sync::fixture::sample`] (no PostgreSQL) in a new
/// directory and returns it; its configuration is `primary.conf` there.
pub fn fixture_primary() -> tempfile::TempDir {
    let base = tempfile::Builder::new()
        .prefix("barsync-primary-")
        .tempdir()
        .unwrap();
    barsync_sync::fixture::sample::write(base.path()).expect("write the sample primary");
    base
}
