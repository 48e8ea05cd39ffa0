//! Where and how to reach the far side once an ssh command line and ssh_config are applied:
//! [`SshTarget`] (host, port, user, keys, known_hosts files, host key policy, timeouts,
//! keepalives, and the reasons the in-process transport cannot honour the command), plus the
//! local facts it is built from (home directory, local user name, `%`-token expansion).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::ssh_command::Settings;
use crate::{Peer, TransportError};

/// How unknown host keys are treated (OpenSSH `StrictHostKeyChecking`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrictHostKeyChecking {
    /// Unknown hosts are refused (`yes`, and `ask`, which cannot ask without a terminal).
    Yes,
    /// Unknown hosts are accepted and their key is appended to the first user known_hosts file.
    AcceptNew,
    /// Unknown hosts are accepted and not recorded (changed keys are still refused).
    No,
}

impl StrictHostKeyChecking {
    pub(super) fn parse(value: &str) -> Option<StrictHostKeyChecking> {
        match value.to_ascii_lowercase().as_str() {
            "yes" | "ask" => Some(StrictHostKeyChecking::Yes),
            "accept-new" => Some(StrictHostKeyChecking::AcceptNew),
            "no" | "off" => Some(StrictHostKeyChecking::No),
            _ => None,
        }
    }

    /// The OpenSSH spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            StrictHostKeyChecking::Yes => "yes",
            StrictHostKeyChecking::AcceptNew => "accept-new",
            StrictHostKeyChecking::No => "no",
        }
    }
}

/// The user's home directory (`$HOME`, else `/root` for root, else `/`).
pub fn home_directory() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// The name of the local user (`$USER`, `$LOGNAME`, else the passwd entry of the uid).
pub fn local_user_name() -> String {
    for variable in ["USER", "LOGNAME"] {
        if let Ok(name) = std::env::var(variable) {
            if !name.is_empty() {
                return name;
            }
        }
    }
    // SAFETY: getpwuid returns a pointer to static storage or null; we copy the name at once.
    unsafe {
        let entry = libc::getpwuid(libc::getuid());
        if !entry.is_null() && !(*entry).pw_name.is_null() {
            return std::ffi::CStr::from_ptr((*entry).pw_name)
                .to_string_lossy()
                .into_owned();
        }
    }
    "root".to_string()
}

/// Where and how to connect, once the command line and the config file are applied.
#[derive(Clone, Debug)]
pub struct SshTarget {
    /// The host as written in the command (the config alias).
    pub alias: String,
    /// The host to connect to (HostName, else the alias).
    pub host_name: String,
    /// TCP port.
    pub port: u16,
    /// Remote user name.
    pub user: String,
    /// Private keys to try, in order (explicit `-i`/IdentityFile, else the default key files).
    pub identity_files: Vec<PathBuf>,
    /// Whether ssh-agent identities are tried first (not with `IdentitiesOnly yes`).
    pub use_agent: bool,
    /// known_hosts files of the user; new keys are appended to the first one.
    pub user_known_hosts_files: Vec<PathBuf>,
    /// System-wide known_hosts files (read only).
    pub global_known_hosts_files: Vec<PathBuf>,
    /// Unknown host policy.
    pub strict_host_key_checking: StrictHostKeyChecking,
    /// Write new known_hosts entries hashed (`HashKnownHosts yes`).
    pub hash_known_hosts: bool,
    /// The name looked up in known_hosts instead of the host name (`HostKeyAlias`).
    pub host_key_alias: Option<String>,
    /// Cipher list chosen by the user (`-c` or `Ciphers`), if any.
    pub ciphers: Option<String>,
    /// TCP connect and handshake timeout.
    pub connect_timeout: Option<Duration>,
    /// Keepalive interval (`ServerAliveInterval`); `None` when off.
    pub server_alive_interval: Option<Duration>,
    /// Unanswered keepalives before the connection is declared dead.
    pub server_alive_count_max: u32,
    /// Ask for zlib compression.
    pub compression: bool,
    /// Why the in-process transport cannot honour the command (empty when it can).
    pub in_process_blockers: Vec<String>,
}

impl SshTarget {
    pub(super) fn from_settings(alias: &str, settings: Settings) -> SshTarget {
        let home = home_directory();
        let host_name = settings
            .host_name
            .clone()
            .unwrap_or_else(|| alias.to_string());
        let port = settings.port.unwrap_or(22);
        let user = settings.user.clone().unwrap_or_else(local_user_name);
        let expand = |path: &str| expand_path(path, &home, alias, &host_name, port, &user);
        let identity_files = if settings.identity_files.is_empty() {
            ["id_ed25519", "id_ecdsa", "id_rsa"]
                .iter()
                .map(|name| home.join(".ssh").join(name))
                .collect()
        } else {
            settings
                .identity_files
                .iter()
                .map(|path| expand(path))
                .collect()
        };
        let user_known_hosts_files = match &settings.user_known_hosts_files {
            Some(files) => files
                .iter()
                .filter(|f| f.as_str() != "none")
                .map(|f| expand(f))
                .collect(),
            None => vec![
                home.join(".ssh/known_hosts"),
                home.join(".ssh/known_hosts2"),
            ],
        };
        let global_known_hosts_files = match &settings.global_known_hosts_files {
            Some(files) => files
                .iter()
                .filter(|f| f.as_str() != "none")
                .map(|f| expand(f))
                .collect(),
            None => vec![
                PathBuf::from("/etc/ssh/ssh_known_hosts"),
                PathBuf::from("/etc/ssh/ssh_known_hosts2"),
            ],
        };
        SshTarget {
            alias: alias.to_string(),
            host_name: host_name.clone(),
            port,
            user: user.clone(),
            identity_files,
            use_agent: !settings.identities_only.unwrap_or(false),
            user_known_hosts_files,
            global_known_hosts_files,
            strict_host_key_checking: settings
                .strict_host_key_checking
                .unwrap_or(StrictHostKeyChecking::Yes),
            hash_known_hosts: settings.hash_known_hosts.unwrap_or(false),
            host_key_alias: settings.host_key_alias.clone(),
            ciphers: settings.ciphers.clone(),
            connect_timeout: settings.connect_timeout.filter(|t| !t.is_zero()),
            server_alive_interval: settings.server_alive_interval.filter(|t| !t.is_zero()),
            server_alive_count_max: settings.server_alive_count_max.unwrap_or(3).max(1),
            compression: settings.compression.unwrap_or(false),
            in_process_blockers: settings.blockers,
        }
    }

    /// The peer, `user@host:port`.
    pub fn peer(&self) -> Peer {
        Peer::ssh(Some(&self.user), &self.host_name, self.port)
    }

    /// Ok when the in-process transport can honour the command, else the reasons, joined.
    pub fn check_in_process_support(&self) -> Result<(), TransportError> {
        if self.in_process_blockers.is_empty() {
            Ok(())
        } else {
            Err(TransportError::InProcessUnsupported {
                peer: self.peer(),
                reasons: self.in_process_blockers.join("; "),
            })
        }
    }
}

/// Expands `~/` and the `%d %u %r %h %p %n %%` tokens of ssh_config paths.
fn expand_path(
    path: &str,
    home: &Path,
    alias: &str,
    host: &str,
    port: u16,
    remote_user: &str,
) -> PathBuf {
    let path = match path.strip_prefix("~/") {
        Some(rest) => format!("{}/{}", home.display(), rest),
        None => path.to_string(),
    };
    let mut expanded = String::new();
    let mut chars = path.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            expanded.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => expanded.push_str(&home.display().to_string()),
            Some('u') => expanded.push_str(&local_user_name()),
            Some('r') => expanded.push_str(remote_user),
            Some('h') => expanded.push_str(host),
            Some('n') => expanded.push_str(alias),
            Some('p') => expanded.push_str(&port.to_string()),
            Some('%') => expanded.push('%'),
            Some(other) => {
                expanded.push('%');
                expanded.push(other);
            }
            None => expanded.push('%'),
        }
    }
    PathBuf::from(expanded)
}
