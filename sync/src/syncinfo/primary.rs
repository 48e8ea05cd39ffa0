//! `sync-info --primary`: asks the primary Barman (or barsync) over `primary_ssh_command` for
//! its sync-info, retries with a full request when an incremental one exits 1 (Barman's
//! "self-recovery"), and saves the raw answer atomically as `<backup_directory>/primary.info`.
//! The answer is bounded ([`SyncInfoLimits`]): a primary that streams forever or never
//! answers is cut off (its whole process group killed) with an error naming the limit.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::parse::PrimaryInfo;
use super::{SyncInfoError, SyncPoint};
use crate::config::ServerConfig;

/// The program that answers on the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RemoteProgram {
    #[default]
    Barman,
    Barsync,
}

impl RemoteProgram {
    fn name(self) -> &'static str {
        match self {
            RemoteProgram::Barman => "barman",
            RemoteProgram::Barsync => "barsync",
        }
    }
}

/// Bounds on one sync-info request to a primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncInfoLimits {
    /// The answer's size at most (JSON text).
    pub max_bytes: u64,
    /// The time from starting `primary_ssh_command` to the end of the answer.
    pub timeout: Duration,
}

impl SyncInfoLimits {
    /// 256 MiB is about 1.5 million WALs in Barman's layout; 10 minutes is far more than
    /// Barman takes to list them.
    pub const DEFAULT: SyncInfoLimits = SyncInfoLimits {
        max_bytes: 256 << 20,
        timeout: Duration::from_secs(600),
    };
}

impl Default for SyncInfoLimits {
    fn default() -> Self {
        SyncInfoLimits::DEFAULT
    }
}

/// What the primary answered.
#[derive(Debug, Clone)]
pub struct PrimaryAnswer {
    /// stdout exactly as received (what `primary.info` holds).
    pub raw: Vec<u8>,
    pub info: PrimaryInfo,
}

/// The remote command line, as Barman builds it (note the spaces around the optional
/// arguments): `barman [-c CONFIG] sync-info SERVER[ LAST_WAL [ LAST_POSITION ]]`.
pub fn remote_command_line(
    server: &ServerConfig,
    config_file: &Path,
    program: RemoteProgram,
    point: &SyncPoint,
) -> String {
    let mut command = if server.forward_config_path() {
        format!(
            "{} -c {} sync-info {}",
            program.name(),
            config_file.display(),
            server.name()
        )
    } else {
        format!("{} sync-info {}", program.name(), server.name())
    };
    if let Some(last_wal) = &point.last_wal {
        command.push_str(&format!(" {last_wal} "));
        if let Some(position) = point.last_position {
            command.push_str(&format!(" {position} "));
        }
    }
    command
}

/// `shell_quote`: single quotes, with embedded quotes as `'\''`.
pub fn shell_quote(argument: &str) -> String {
    format!("'{}'", argument.replace('\'', "'\\''"))
}

/// Runs sync-info on the primary of the passive `server` and saves `primary.info`.
/// `warn` receives Barman's warnings (the self-recovery notice).
pub fn fetch_primary_info(
    server: &ServerConfig,
    config_file: &Path,
    program: RemoteProgram,
    point: &SyncPoint,
    limits: &SyncInfoLimits,
    warn: &mut dyn FnMut(String),
) -> Result<PrimaryAnswer, SyncInfoError> {
    let Some(ssh_command) = server
        .primary_ssh_command()
        .map(crate::ssh_liveness::with_liveness)
    else {
        return Err(SyncInfoError::Sync(format!(
            "server {} is not passive",
            server.name()
        )));
    };
    let mut point = point.clone();
    let output = loop {
        let line = format!(
            "{ssh_command} {}",
            shell_quote(&remote_command_line(server, config_file, program, &point))
        );
        let mut command = Command::new("/bin/sh");
        command.arg("-c").arg(&line).stdin(Stdio::null());
        if let Some(prefix) = server.text("path_prefix").filter(|p| !p.is_empty()) {
            let path = std::env::var("PATH").unwrap_or_default();
            command.env("PATH", format!("{prefix}:{path}"));
        }
        let output = run_bounded(command, server.name(), limits)?;
        if output.status.success() {
            break output;
        }
        if output.status.code() == Some(1) && point.last_wal.is_some() {
            warn(format!(
                "sync-info is out of sync. Self-recovery procedure started: requesting full synchronisation from primary server {}",
                server.name()
            ));
            point = SyncPoint::default();
            continue;
        }
        return Err(SyncInfoError::Sync(format!(
            "sync-info execution on remote primary server {} failed: {}",
            server.name(),
            crate::human::one_line(&String::from_utf8_lossy(&output.stderr))
        )));
    };
    let text = std::str::from_utf8(&output.stdout).map_err(|_| {
        SyncInfoError::Sync(format!(
            "sync-info from the primary of server {} is not UTF-8",
            server.name()
        ))
    })?;
    let info = PrimaryInfo::parse(server.name(), text)?;
    make_directories(server)?;
    let path = server.primary_info_path();
    crate::fsutil::atomic_write(&path, &output.stdout).map_err(|source| {
        SyncInfoError::Sync(format!(
            "Cannot open primary.info file for server {}: {source}",
            server.name()
        ))
    })?;
    Ok(PrimaryAnswer {
        raw: output.stdout,
        info,
    })
}

/// What a bounded command printed.
struct BoundedOutput {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Bytes of the primary's stderr kept for messages.
const STDERR_KEPT: u64 = 64 << 10;

/// Runs `command` in its own process group, reading at most `limits.max_bytes` of its stdout
/// within `limits.timeout`; past either, the group (the shell and its ssh) is killed.
fn run_bounded(
    mut command: Command,
    server: &str,
    limits: &SyncInfoLimits,
) -> Result<BoundedOutput, SyncInfoError> {
    let start = Instant::now();
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = command.spawn().map_err(|source| SyncInfoError::Io {
        path: "/bin/sh".into(),
        source,
    })?;
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let (out_sender, out_receiver) = mpsc::channel();
    let max_bytes = limits.max_bytes;
    std::thread::spawn(move || {
        let mut data = Vec::new();
        let read = stdout.take(max_bytes + 1).read_to_end(&mut data);
        let _ = out_sender.send(read.map(|_| data));
    });
    let (err_sender, err_receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut stderr = stderr;
        let _ = (&mut stderr).take(STDERR_KEPT).read_to_end(&mut kept);
        let _ = std::io::copy(&mut stderr, &mut std::io::sink());
        let _ = err_sender.send(kept);
    });
    let remaining = limits.timeout.saturating_sub(start.elapsed());
    let stdout = match out_receiver.recv_timeout(remaining) {
        Ok(Ok(data)) if data.len() as u64 > max_bytes => {
            kill_group(&mut child);
            return Err(SyncInfoError::AnswerTooLarge {
                server: server.to_owned(),
                limit: max_bytes,
            });
        }
        Ok(Ok(data)) => data,
        Ok(Err(source)) => {
            kill_group(&mut child);
            return Err(SyncInfoError::Io {
                path: "/bin/sh".into(),
                source,
            });
        }
        Err(_) => {
            kill_group(&mut child);
            return Err(SyncInfoError::TimedOut {
                server: server.to_owned(),
                seconds: limits.timeout.as_secs_f64(),
            });
        }
    };
    // stdout is closed: what is left is the exit, within what remains of the timeout.
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() < limits.timeout => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Ok(None) => {
                kill_group(&mut child);
                return Err(SyncInfoError::TimedOut {
                    server: server.to_owned(),
                    seconds: limits.timeout.as_secs_f64(),
                });
            }
            Err(source) => {
                return Err(SyncInfoError::Io {
                    path: "/bin/sh".into(),
                    source,
                })
            }
        }
    };
    let stderr = err_receiver
        .recv_timeout(Duration::from_secs(1))
        .unwrap_or_default();
    Ok(BoundedOutput {
        status,
        stdout,
        stderr,
    })
}

/// Kills the process group `child` leads, and reaps it.
fn kill_group(child: &mut Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) on the group this module created for `child`; no memory involved.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `Server._make_directories`: the server's directories and `meta/`.
fn make_directories(server: &ServerConfig) -> Result<(), SyncInfoError> {
    for directory in [
        server.backup_directory(),
        server.basebackups_directory(),
        server.wals_directory(),
        server.incoming_wals_directory(),
        server.streaming_wals_directory(),
        server.errors_directory(),
        server.meta_directory(),
    ] {
        std::fs::create_dir_all(&directory).map_err(|source| SyncInfoError::Io {
            path: directory.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Reads the `primary.info` saved by the last `--primary` request.
pub fn load_primary_info(server: &ServerConfig) -> Result<PrimaryInfo, SyncInfoError> {
    let path = server.primary_info_path();
    let text = std::fs::read_to_string(&path).map_err(|error| {
        SyncInfoError::Sync(format!(
            "Cannot open primary.info file for server {}: {error}",
            server.name()
        ))
    })?;
    Ok(PrimaryInfo::parse(server.name(), &text)?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn quoting_matches_barman() {
        assert_eq!(
            super::shell_quote("barman sync-info pg"),
            "'barman sync-info pg'"
        );
        assert_eq!(super::shell_quote("it's"), "'it'\\''s'");
    }
}
