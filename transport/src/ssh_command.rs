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

use crate::ssh_config::SshConfig;
pub use crate::ssh_target::{home_directory, local_user_name, SshTarget, StrictHostKeyChecking};
use crate::{Peer, TransportError};

/// Settings gathered from the command line and the config file; the first value obtained wins.
#[derive(Clone, Debug, Default)]
pub(super) struct Settings {
    pub(super) host_name: Option<String>,
    pub(super) port: Option<u16>,
    pub(super) user: Option<String>,
    pub(super) identity_files: Vec<String>,
    pub(super) user_known_hosts_files: Option<Vec<String>>,
    pub(super) global_known_hosts_files: Option<Vec<String>>,
    pub(super) strict_host_key_checking: Option<StrictHostKeyChecking>,
    pub(super) connect_timeout: Option<Duration>,
    pub(super) server_alive_interval: Option<Duration>,
    pub(super) server_alive_count_max: Option<u32>,
    pub(super) compression: Option<bool>,
    pub(super) identities_only: Option<bool>,
    pub(super) hash_known_hosts: Option<bool>,
    pub(super) host_key_alias: Option<String>,
    pub(super) ciphers: Option<String>,
    pub(super) blockers: Vec<String>,
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

#[cfg(test)]
#[path = "ssh_command_tests.rs"]
mod tests;
