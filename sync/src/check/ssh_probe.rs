//! The checks of a passive node that reach its primary: `primary_ssh_command` run as Barman
//! runs it (`<command> -o BatchMode=yes true`, through `/bin/sh` with the server's
//! `path_prefix`), the classification of ssh's complaints about the host key (changed, or not
//! verifiable), a shell that prints nothing of its own, the barsync and barman programs on
//! the primary's `PATH`, and whether its `barsync serve` refuses writes (from a session opened
//! as the passive opens them). A primary that cannot be reached gives the same checks, failed
//! as "not checked", so monitoring always sees the same set.

use std::path::Path;
use std::process::{Command, Stdio};

use super::Check;
use crate::config::ServerConfig;
use crate::syncinfo::{load_primary_info, shell_quote};

/// What ssh's stderr says about the primary's host key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeyComplaint {
    /// Nothing about the host key.
    None,
    /// `REMOTE HOST IDENTIFICATION HAS CHANGED`: a new key, or someone in between.
    Changed,
    /// The key is unknown or does not match, and ssh refused it in batch mode.
    Unverified,
}

/// Classifies ssh's stderr.
pub fn host_key_complaint(stderr: &str) -> HostKeyComplaint {
    if stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") {
        HostKeyComplaint::Changed
    } else if stderr.contains("Host key verification failed")
        || stderr.contains("host key")
            && (stderr.contains("not known") || stderr.contains("mismatch"))
    {
        HostKeyComplaint::Unverified
    } else {
        HostKeyComplaint::None
    }
}

/// What the primary's shell said when asked where the barsync and barman programs are.
pub(super) enum ProgramLookup {
    /// The primary was not reached.
    Unreached,
    /// One line per program: its path, or empty when it is not on the `PATH`.
    Found(Vec<String>),
    /// The command was refused or failed (a key pinned to a forced command refuses it): why.
    Refused(String),
}

/// The first ssh checks (host key, connection, clean output) and the look for programs.
pub(super) struct SshProbe {
    pub checks: Vec<Check>,
    pub connected: bool,
    pub lookup: ProgramLookup,
}

/// Runs `true`, then the look for programs, through `primary_ssh_command` as Barman runs it.
pub(super) fn probe(server: &ServerConfig, ssh: &str, remote_barsync: &str) -> SshProbe {
    let is_ssh = ssh
        .split_whitespace()
        .next()
        .and_then(|word| Path::new(word).file_name())
        .is_some_and(|name| name == "ssh");
    // Barman adds StrictHostKeyChecking=no; barsync keeps the configured policy, so that a
    // changed host key is seen here rather than ignored.
    let options = if is_ssh {
        " -o BatchMode=yes -o ConnectTimeout=10"
    } else {
        ""
    };
    let prefix = format!("{ssh}{options}");
    // The same checks in the same order whatever happens, for monitoring: those that need
    // the primary fail as "not checked" when it cannot be reached.
    let (status, stdout, stderr) = match run_remote(server, &prefix, "true") {
        Ok(output) => output,
        Err(error) => (None, String::new(), format!("cannot run /bin/sh: {error}")),
    };
    let said = last_lines(&stderr);
    let connected = status == Some(0);
    let mut checks = vec![Check::new(
        "ssh host key",
        match host_key_complaint(&stderr) {
            HostKeyComplaint::Changed => Err(format!(
                "the primary's host key has CHANGED since it was recorded in known_hosts: a new key, or someone in between; check it, then replace the old line (ssh-keygen -R HOST). ssh said: {said}"
            )),
            HostKeyComplaint::Unverified => {
                Err(format!("the primary's host key cannot be verified: {said}"))
            }
            HostKeyComplaint::None if !is_ssh => {
                Ok("not checked: primary_ssh_command is not ssh".into())
            }
            HostKeyComplaint::None if connected => Ok("known and unchanged".into()),
            HostKeyComplaint::None => Err("not verified: the primary was not reached".into()),
        },
    )];
    checks.push(Check::new(
        "ssh",
        if connected {
            Ok("Barman primary node".into())
        } else {
            Err(format!(
                "Connection failed using '{prefix}' return code {}{}",
                status.map_or("none (killed)".to_owned(), |c| c.to_string()),
                if said.is_empty() {
                    String::new()
                } else {
                    format!(": {said}")
                }
            ))
        },
    ));
    checks.push(Check::new(
        "ssh output clean",
        if !connected {
            Err(NOT_REACHED.to_owned())
        } else if stdout.trim().is_empty() {
            Ok(String::new())
        } else {
            Err(format!(
                "the primary's shell printed {:?} for `true`: it would corrupt sync-info and sessions",
                stdout.trim()
            ))
        },
    ));
    let script = [remote_barsync, "barman"]
        .iter()
        .map(|p| {
            format!(
                "printf '%s\\n' \"$(command -v {} 2>/dev/null)\"",
                shell_quote(p)
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let lookup = if !connected {
        ProgramLookup::Unreached
    } else {
        match run_remote(server, &prefix, &script) {
            Ok((Some(0), out, _)) => ProgramLookup::Found(out.lines().map(str::to_owned).collect()),
            Ok((_, _, err)) => ProgramLookup::Refused(last_lines(&err)),
            Err(error) => ProgramLookup::Refused(error.to_string()),
        }
    };
    SshProbe {
        checks,
        connected,
        lookup,
    }
}

pub(super) const NOT_REACHED: &str = "not checked: the primary was not reached";

/// `barsync on the primary` and `barman on the primary`. When the primary's key refuses the
/// look (a key pinned to a forced command, as the README recommends), what the barsync
/// session showed stands in for barsync, and barman is not looked for: sync-info, which
/// needs it, is what the key allows.
pub(super) fn program_checks(
    lookup: &ProgramLookup,
    remote_barsync: &str,
    serve: &Result<ServeMode, String>,
) -> Vec<Check> {
    let barsync = match lookup {
        ProgramLookup::Unreached => Err(NOT_REACHED.to_owned()),
        ProgramLookup::Found(lines) => match lines.first().map(String::as_str).unwrap_or("") {
            // Without barsync there, syncs still work, whole files over SFTP verified by the
            // primary's checksum program: a supported setup, not a failure.
            "" => Ok(format!("not installed: whole files over SFTP, verified by the primary's b3sum or sha256sum (install `{remote_barsync}` there for delta transfers)")),
            path => Ok(path.to_owned()),
        },
        ProgramLookup::Refused(why) => match serve {
            Ok(ServeMode::ReadOnly | ServeMode::ReadWrite) => Ok(format!(
                "answered a barsync session (the primary's key refuses the shell command that looks for programs: {why})"
            )),
            Ok(ServeMode::Sftp) => Ok(format!("not installed: whole files over SFTP (the primary's key refuses the shell command that looks for programs: {why})")),
            Ok(ServeMode::NoPrimaryInfo) => Ok(format!("not looked for: the primary's key refuses shell commands ({why}); the first `barsync cron` opens a session")),
            Err(error) => Err(format!("cannot look: {why}; and no session: {error}")),
        },
    };
    let barman = match lookup {
        ProgramLookup::Unreached => Err(NOT_REACHED.to_owned()),
        ProgramLookup::Found(lines) => match lines.get(1).map(String::as_str).unwrap_or("") {
            "" => Err("`barman` is not on the primary's PATH: sync-info cannot run (or use `barsync cron --remote barsync`)".to_owned()),
            path => Ok(path.to_owned()),
        },
        ProgramLookup::Refused(why) => Ok(format!(
            "not looked for: the primary's key refuses shell commands ({why}); sync-info, which it runs, is what `primary.info` shows"
        )),
    };
    vec![
        Check::new("barsync on the primary", barsync),
        Check::new("barman on the primary", barman),
    ]
}

/// What a session with the primary's `barsync serve` showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ServeMode {
    /// It refuses every write.
    ReadOnly,
    /// It accepts writes.
    ReadWrite,
    /// No barsync there: the session went to SFTP.
    Sftp,
    /// Not tried: no `primary.info` to find the roots yet.
    NoPrimaryInfo,
}

impl ServeMode {
    /// The `barsync serve` check's detail.
    pub(super) fn detail(self) -> String {
        match self {
            ServeMode::ReadOnly => "read-only: the primary refuses any write from this node".into(),
            ServeMode::ReadWrite => "read-write: pin this node's key to `barsync serve --read-only` on the primary (README, \"A read-only key on the primary\")".into(),
            ServeMode::Sftp => "not checked: the primary is reached over SFTP".into(),
            ServeMode::NoPrimaryInfo => "not checked: no primary.info yet (run `barsync cron`)".into(),
        }
    }
}

/// Whether the primary's `barsync serve` refuses writes, from the `Hello` of a session opened
/// as the passive opens them (roots from `primary.info`).
pub(super) fn serve_mode(server: &ServerConfig, remote_barsync: &str) -> Result<ServeMode, String> {
    use crate::passive::{PassiveOptions, PassiveServer, Quiet};
    use transfer_engine::fetch::SessionSource;
    let Ok(primary) = load_primary_info(server) else {
        return Ok(ServeMode::NoPrimaryInfo);
    };
    let options = PassiveOptions {
        remote_barsync: remote_barsync.to_owned(),
        ..PassiveOptions::default()
    };
    let passive = PassiveServer::new(server, &options, &Quiet).map_err(|e| e.to_string())?;
    let sessions = passive
        .primary_sessions(&primary)
        .map_err(|e| e.to_string())?;
    let session = sessions.open(&Quiet).map_err(|e| e.to_string())?;
    let read_only = session.serves_read_only();
    session.close()?;
    Ok(match read_only {
        Some(true) => ServeMode::ReadOnly,
        Some(false) => ServeMode::ReadWrite,
        None => ServeMode::Sftp,
    })
}

/// Runs `<prefix> '<command>'` through /bin/sh (with the server's `path_prefix`): exit code,
/// stdout, stderr.
fn run_remote(
    server: &ServerConfig,
    prefix: &str,
    command: &str,
) -> std::io::Result<(Option<i32>, String, String)> {
    let mut shell = Command::new("/bin/sh");
    shell
        .arg("-c")
        .arg(format!("{prefix} {}", shell_quote(command)))
        .stdin(Stdio::null());
    if let Some(path_prefix) = server.text("path_prefix").filter(|p| !p.is_empty()) {
        let path = std::env::var("PATH").unwrap_or_default();
        shell.env("PATH", format!("{path_prefix}:{path}"));
    }
    let output = shell.output()?;
    Ok((
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

/// The meaningful end of an error output, on one line.
fn last_lines(text: &str) -> String {
    let lines = crate::human::meaningful_lines(text);
    let start = lines.len().saturating_sub(2);
    lines[start..].join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_key_complaints_are_told_apart() {
        let changed = "@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n@@@@@\nHost key verification failed.";
        assert_eq!(host_key_complaint(changed), HostKeyComplaint::Changed);
        assert_eq!(
            host_key_complaint("No ED25519 host key is known for x and you have requested strict checking.\nHost key verification failed."),
            HostKeyComplaint::Unverified
        );
        assert_eq!(
            host_key_complaint("ssh: connect to host x port 22: Connection refused"),
            HostKeyComplaint::None
        );
        assert_eq!(last_lines(changed), "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @ Host key verification failed.");
    }
}
