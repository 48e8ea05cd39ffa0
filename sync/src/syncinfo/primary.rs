//! `sync-info --primary`: asks the primary Barman (or barsync) over `primary_ssh_command` for
//! its sync-info, retries with a full request when an incremental one exits 1 (Barman's
//! "self-recovery"), and saves the raw answer atomically as `<backup_directory>/primary.info`.

use std::path::Path;
use std::process::{Command, Stdio};

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
    warn: &mut dyn FnMut(String),
) -> Result<PrimaryAnswer, SyncInfoError> {
    let Some(ssh_command) = server.primary_ssh_command() else {
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
        let output = command.output().map_err(|source| SyncInfoError::Io {
            path: "/bin/sh".into(),
            source,
        })?;
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
            String::from_utf8_lossy(&output.stderr)
        )));
    };
    let text = String::from_utf8(output.stdout.clone()).map_err(|_| {
        SyncInfoError::Sync(format!(
            "sync-info from the primary of server {} is not UTF-8",
            server.name()
        ))
    })?;
    let info = PrimaryInfo::parse(server.name(), &text)?;
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
