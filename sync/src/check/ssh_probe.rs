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

/// The ssh checks, from two commands run through `primary_ssh_command` as Barman runs it.
pub(super) fn ssh_checks(server: &ServerConfig, ssh: &str, remote_barsync: &str) -> Vec<Check> {
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
    let unreached = || Err("not checked: the primary was not reached".to_owned());
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
            unreached()
        } else if stdout.trim().is_empty() {
            Ok(String::new())
        } else {
            Err(format!(
                "the primary's shell printed {:?} for `true`: it would corrupt sync-info and sessions",
                stdout.trim()
            ))
        },
    ));
    let programs = [remote_barsync, "barman"];
    let script = programs
        .iter()
        .map(|p| {
            format!(
                "printf '%s\\n' \"$(command -v {} 2>/dev/null)\"",
                shell_quote(p)
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let found: Vec<String> = if !connected {
        Vec::new()
    } else {
        match run_remote(server, &prefix, &script) {
            Ok((Some(0), out, _)) => out.lines().map(str::to_owned).collect(),
            Ok((_, _, err)) => vec![format!("!{}", last_lines(&err)); 2],
            Err(error) => vec![format!("!{error}"); 2],
        }
    };
    for (index, (name, program)) in [
        ("barsync on the primary", remote_barsync),
        ("barman on the primary", "barman"),
    ]
    .into_iter()
    .enumerate()
    {
        let line = found.get(index).map(String::as_str).unwrap_or("");
        let result = match line {
            _ if !connected => unreached(),
            // Without barsync there, syncs still work, whole files over SFTP verified by the
            // primary's checksum program: a supported setup, not a failure.
            "" if index == 0 => Ok(format!("not installed: whole files over SFTP, verified by the primary's b3sum or sha256sum (install `{program}` there for delta transfers)")),
            "" => Err("`barman` is not on the primary's PATH: sync-info cannot run (or use `barsync cron --remote barsync`)".to_owned()),
            error if error.starts_with('!') => Err(format!("cannot look: {}", &error[1..])),
            path => Ok(path.to_owned()),
        };
        checks.push(Check::new(name, result));
    }
    checks
}

/// Whether the primary's `barsync serve` refuses writes, from the `Hello` of a session opened
/// as the passive opens them (roots from `primary.info`). Read-write is OK, with a hint.
pub(super) fn serve_mode(server: &ServerConfig, remote_barsync: &str) -> Result<String, String> {
    use crate::passive::primary_link::PrimaryLink;
    use crate::passive::{PassiveOptions, Quiet};
    let Ok(primary) = load_primary_info(server) else {
        return Ok("not checked: no primary.info yet (run `barsync cron`)".into());
    };
    let options = PassiveOptions {
        remote_barsync: remote_barsync.to_owned(),
        ..PassiveOptions::default()
    };
    let link = PrimaryLink::new(server, &primary, &options).map_err(|e| e.to_string())?;
    let session = link.open(&Quiet).map_err(|e| e.to_string())?;
    let read_only = session.serves_read_only();
    session.close()?;
    match read_only {
        Some(true) => Ok("read-only: the primary refuses any write from this node".into()),
        Some(false) => Ok("read-write: pin this node's key to `barsync serve --read-only` on the primary (README, \"A read-only key on the primary\")".into()),
        None => Ok("not checked: the primary is reached over SFTP".into()),
    }
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
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.chars().all(|c| c == '@'))
        .collect();
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
