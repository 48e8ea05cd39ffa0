//! Understanding an OpenSSH-style command string such as Barman's `primary_ssh_command`:
//! `ssh [-p PORT] [-i KEY] [-l USER] [-o Option=value | -o "Option value"]... [-q] [-C] [-T] [user@]host`.
//!
//! [`split_shell_words`] splits the string like a POSIX shell (quotes, backslashes).
//! [`SshCommand::parse`] reads the ssh options; [`SshCommand::resolve`] then applies an
//! ssh_config file (first obtained value wins, as in OpenSSH: command line, then the file in
//! order) and gives an [`SshTarget`]: where to connect, as whom, with which keys and host key
//! policy, and the list of reasons why the in-process transport cannot honour the command
//! ([`SshTarget::in_process_blockers`]), in which case the ssh subprocess must be used.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ssh_config::SshConfig;
use super::{Peer, TransportError};

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
    fn parse(value: &str) -> Option<StrictHostKeyChecking> {
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

/// Settings gathered from the command line and the config file; the first value obtained wins.
#[derive(Clone, Debug, Default)]
struct Settings {
    host_name: Option<String>,
    port: Option<u16>,
    user: Option<String>,
    identity_files: Vec<String>,
    user_known_hosts_files: Option<Vec<String>>,
    global_known_hosts_files: Option<Vec<String>>,
    strict_host_key_checking: Option<StrictHostKeyChecking>,
    connect_timeout: Option<Duration>,
    server_alive_interval: Option<Duration>,
    server_alive_count_max: Option<u32>,
    compression: Option<bool>,
    identities_only: Option<bool>,
    hash_known_hosts: Option<bool>,
    host_key_alias: Option<String>,
    ciphers: Option<String>,
    blockers: Vec<String>,
}

/// Options that change nothing for a non-interactive exec channel without forwarding.
const HARMLESS_OPTIONS: &[&str] = &[
    "batchmode",
    "loglevel",
    "checkhostip",
    "passwordauthentication",
    "kbdinteractiveauthentication",
    "challengeresponseauthentication",
    "pubkeyauthentication",
    "preferredauthentications",
    "addkeystoagent",
    "forwardagent",
    "forwardx11",
    "forwardx11trusted",
    "requesttty",
    "visualhostkey",
    "updatehostkeys",
    "serveralivecountmax",
    "tcpkeepalive",
    "escapechar",
    "exitonforwardfailure",
    "clearallforwardings",
    "gssapiauthentication",
    "gssapidelegatecredentials",
    "hostbasedauthentication",
    "sendenv",
    "setenv",
    "numberofpasswordprompts",
    "usekeychain",
    "macs",
    "kexalgorithms",
    "hostkeyalgorithms",
    "pubkeyacceptedkeytypes",
    "pubkeyacceptedalgorithms",
    "rekeylimit",
    "ipqos",
    "verifyhostkeydns",
    "connectionattempts",
    "identityagent",
    "canonicalizehostname",
    "addressfamily",
];

impl Settings {
    /// Applies one `Keyword value` (keyword lower-case). `origin` names where it came from.
    fn apply(&mut self, keyword: &str, value: &str, origin: &str) -> Result<(), String> {
        fn first<T>(slot: &mut Option<T>, value: T) {
            if slot.is_none() {
                *slot = Some(value);
            }
        }
        let seconds = |value: &str| -> Result<Duration, String> {
            value.parse::<u64>().map(Duration::from_secs).map_err(|_| {
                format!("{origin}: {keyword} wants a number of seconds, not `{value}`")
            })
        };
        let yes_no = |value: &str| -> Result<bool, String> {
            match value.to_ascii_lowercase().as_str() {
                "yes" | "true" => Ok(true),
                "no" | "false" => Ok(false),
                "delayed" if keyword == "compression" => Ok(true),
                _ => Err(format!(
                    "{origin}: {keyword} wants yes or no, not `{value}`"
                )),
            }
        };
        match keyword {
            "hostname" => first(&mut self.host_name, value.to_string()),
            "port" => first(
                &mut self.port,
                parse_port(value).map_err(|e| format!("{origin}: {e}"))?,
            ),
            "user" => first(&mut self.user, value.to_string()),
            "identityfile" => self.identity_files.push(value.to_string()),
            "userknownhostsfile" => first(
                &mut self.user_known_hosts_files,
                value.split_whitespace().map(str::to_string).collect(),
            ),
            "globalknownhostsfile" => first(
                &mut self.global_known_hosts_files,
                value.split_whitespace().map(str::to_string).collect(),
            ),
            "stricthostkeychecking" => {
                let policy = StrictHostKeyChecking::parse(value)
                    .ok_or_else(|| format!("{origin}: StrictHostKeyChecking wants yes, ask, accept-new or no, not `{value}`"))?;
                first(&mut self.strict_host_key_checking, policy)
            }
            "connecttimeout" => first(&mut self.connect_timeout, seconds(value)?),
            "serveraliveinterval" => first(&mut self.server_alive_interval, seconds(value)?),
            "compression" => first(&mut self.compression, yes_no(value)?),
            "identitiesonly" => first(&mut self.identities_only, yes_no(value)?),
            "hashknownhosts" => first(&mut self.hash_known_hosts, yes_no(value)?),
            "hostkeyalias" => first(&mut self.host_key_alias, value.to_string()),
            "ciphers" => first(&mut self.ciphers, value.to_string()),
            "proxycommand" | "proxyjump" if value.eq_ignore_ascii_case("none") => {}
            "controlmaster" if value.eq_ignore_ascii_case("no") => {}
            "controlpath" | "controlpersist" => {}
            _ if HARMLESS_OPTIONS.contains(&keyword) => {
                if keyword == "serveralivecountmax" {
                    let count = value.parse().map_err(|_| {
                        format!("{origin}: ServerAliveCountMax wants a number, not `{value}`")
                    })?;
                    first(&mut self.server_alive_count_max, count);
                }
            }
            _ => self.blockers.push(format!(
                "{origin}: option `{keyword} {value}` is not supported by the in-process transport"
            )),
        }
        Ok(())
    }
}

fn parse_port(value: &str) -> Result<u16, String> {
    match value.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("bad port `{value}`")),
    }
}

/// Splits `text` into words like a POSIX shell: whitespace separates words; `'...'` is literal;
/// inside `"..."` a backslash escapes `"`, `\`, `$` and `` ` ``; outside quotes a backslash
/// escapes any character. No expansion of variables or globs.
pub fn split_shell_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => current.push(c),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => current.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                current.push('\\');
                                current.push(c);
                            }
                            None => return Err("unterminated double quote".into()),
                        },
                        Some(c) => current.push(c),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(c) => {
                    in_word = true;
                    current.push(c);
                }
                None => return Err("trailing backslash".into()),
            },
            c => {
                in_word = true;
                current.push(c);
            }
        }
    }
    if in_word {
        words.push(current);
    }
    Ok(words)
}

/// ssh flags that take an argument (from OpenSSH's option string).
const FLAGS_WITH_ARGUMENT: &str = "BbcDEeFIiJLlmOopPQRSWw";
/// ssh flags without argument.
const FLAGS_WITHOUT_ARGUMENT: &str = "1246AaCfGgKkMNnqsTtVvXxYy";

/// A parsed ssh command line.
#[derive(Clone, Debug)]
pub struct SshCommand {
    text: String,
    words: Vec<String>,
    destination_host: String,
    destination_user: Option<String>,
    config_file: Option<PathBuf>,
    settings: Settings,
}

impl SshCommand {
    /// Parses an ssh command string. Fails only when no destination host can be found or the
    /// quoting or an option value is malformed; options the in-process transport cannot honour
    /// are recorded as blockers instead.
    pub fn parse(text: &str) -> Result<SshCommand, TransportError> {
        let invalid = |reason: String| TransportError::InvalidSshCommand {
            command: text.to_string(),
            reason,
        };
        let words = split_shell_words(text).map_err(invalid)?;
        let Some(program) = words.first() else {
            return Err(invalid("empty command".into()));
        };
        let mut settings = Settings::default();
        let mut config_file = None;
        let mut destination: Option<String> = None;
        let mut remote_words = 0;
        let program_name = Path::new(program)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if program_name != "ssh" {
            // Not ssh: its options are unknown, so only guess the host (last word) for messages.
            settings
                .blockers
                .push(format!("the program `{program}` is not ssh"));
            let Some(last) = words.get(1..).and_then(|rest| rest.last()) else {
                return Err(invalid("no destination host".into()));
            };
            let (destination_user, destination_host) = split_destination(last).map_err(invalid)?;
            return Ok(SshCommand {
                text: text.to_string(),
                words,
                destination_host,
                destination_user,
                config_file,
                settings,
            });
        }
        let mut index = 1;
        let mut options_done = false;
        while index < words.len() {
            let word = &words[index];
            index += 1;
            if !options_done && word == "--" {
                options_done = true;
                continue;
            }
            if options_done || !word.starts_with('-') || word.len() == 1 {
                if destination.is_none() {
                    destination = Some(word.clone());
                } else {
                    remote_words += 1;
                    options_done = true;
                }
                continue;
            }
            let cluster: Vec<char> = word[1..].chars().collect();
            let mut position = 0;
            while position < cluster.len() {
                let flag = cluster[position];
                position += 1;
                if FLAGS_WITH_ARGUMENT.contains(flag) {
                    let argument = if position < cluster.len() {
                        let attached: String = cluster[position..].iter().collect();
                        position = cluster.len();
                        attached
                    } else if index < words.len() {
                        index += 1;
                        words[index - 1].clone()
                    } else {
                        return Err(invalid(format!("option -{flag} needs an argument")));
                    };
                    apply_flag_with_argument(&mut settings, &mut config_file, flag, &argument)
                        .map_err(invalid)?;
                } else if FLAGS_WITHOUT_ARGUMENT.contains(flag) {
                    apply_flag(&mut settings, flag);
                } else {
                    return Err(invalid(format!("unknown option -{flag}")));
                }
            }
        }
        let Some(destination) = destination else {
            return Err(invalid("no destination host".into()));
        };
        if remote_words > 0 {
            settings
                .blockers
                .push("the command string already contains a remote command".into());
        }
        let (destination_user, destination_host) =
            split_destination(&destination).map_err(invalid)?;
        Ok(SshCommand {
            text: text.to_string(),
            words,
            destination_host,
            destination_user,
            config_file,
            settings,
        })
    }

    /// The command string as given.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The words of the command (program first), as the ssh subprocess runs them.
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// The program (first word).
    pub fn program(&self) -> &str {
        &self.words[0]
    }

    /// The destination host as written (possibly an alias of the config file).
    pub fn destination_host(&self) -> &str {
        &self.destination_host
    }

    /// A best-effort peer for messages before the config file is applied.
    pub fn peer(&self) -> Peer {
        let user = self
            .settings
            .user
            .as_deref()
            .or(self.destination_user.as_deref());
        Peer::ssh(
            user,
            &self.destination_host,
            self.settings.port.unwrap_or(22),
        )
    }

    /// Applies `-F FILE` if given, else `~/.ssh/config`, and resolves the target.
    pub fn resolve_with_default_config(&self) -> Result<SshTarget, TransportError> {
        let path = match &self.config_file {
            Some(path) if path.as_os_str() == "none" => return Ok(self.resolve(None)),
            Some(path) => path.clone(),
            None => home_directory().join(".ssh/config"),
        };
        Ok(self.resolve(Some(&SshConfig::load(&path)?)))
    }

    /// Applies `config` (if any) after the command-line settings and resolves the target.
    pub fn resolve(&self, config: Option<&SshConfig>) -> SshTarget {
        let mut settings = self.settings.clone();
        if settings.user.is_none() {
            settings.user = self.destination_user.clone();
        }
        if let Some(config) = config {
            let (lines, not_evaluated) = config.lines_for_host(&self.destination_host);
            settings.blockers.extend(not_evaluated);
            for line in lines {
                let origin = format!("{}:{}", config.path().display(), line.line);
                if let Err(message) = settings.apply(&line.keyword, &line.value, &origin) {
                    settings.blockers.push(message);
                }
            }
        }
        SshTarget::from_settings(&self.destination_host, settings)
    }
}

fn apply_flag_with_argument(
    settings: &mut Settings,
    config_file: &mut Option<PathBuf>,
    flag: char,
    argument: &str,
) -> Result<(), String> {
    let origin = format!("-{flag}");
    match flag {
        'p' => {
            let port = parse_port(argument)?;
            if settings.port.is_none() {
                settings.port = Some(port);
            }
        }
        'l' => {
            if settings.user.is_none() {
                settings.user = Some(argument.to_string());
            }
        }
        'i' => settings.identity_files.push(argument.to_string()),
        'F' => *config_file = Some(PathBuf::from(argument)),
        'o' => {
            let (keyword, value) = split_option(argument)
                .ok_or_else(|| format!("-o `{argument}` is not `Option=value`"))?;
            settings.apply(&keyword, &value, &format!("-o {argument}"))?;
        }
        'c' => {
            if settings.ciphers.is_none() {
                settings.ciphers = Some(argument.to_string());
            }
        }
        'E' | 'e' | 'm' => {}
        'J' => settings
            .blockers
            .push(format!("-J {argument} (ProxyJump) needs the ssh client")),
        _ => settings.blockers.push(format!(
            "option {origin} {argument} is not supported by the in-process transport"
        )),
    }
    Ok(())
}

fn apply_flag(settings: &mut Settings, flag: char) {
    match flag {
        'C' => {
            if settings.compression.is_none() {
                settings.compression = Some(true);
            }
        }
        'q' | 'T' | 'v' | 'x' | 'a' | 'n' | 'k' | 'y' | '4' | '6' => {}
        other => settings.blockers.push(format!(
            "option -{other} is not supported by the in-process transport"
        )),
    }
}

fn split_option(argument: &str) -> Option<(String, String)> {
    let argument = argument.trim();
    let end = argument.find(|c: char| c == '=' || c.is_whitespace())?;
    let keyword = argument[..end].to_ascii_lowercase();
    let value = argument[end..]
        .trim_start_matches(|c: char| c == '=' || c.is_whitespace())
        .trim();
    (!keyword.is_empty() && !value.is_empty()).then(|| (keyword, value.to_string()))
}

fn split_destination(destination: &str) -> Result<(Option<String>, String), String> {
    let destination = destination.strip_prefix("ssh://").unwrap_or(destination);
    let (user, host) = match destination.rfind('@') {
        Some(at) => (Some(destination[..at].to_string()), &destination[at + 1..]),
        None => (None, destination),
    };
    if host.is_empty() || user.as_deref() == Some("") {
        return Err(format!("bad destination `{destination}`"));
    }
    Ok((user, host.to_string()))
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
    fn from_settings(alias: &str, settings: Settings) -> SshTarget {
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

#[cfg(test)]
#[path = "ssh_command_tests.rs"]
mod tests;
