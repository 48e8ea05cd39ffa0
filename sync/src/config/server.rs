//! One server's configuration, built as Barman builds `ServerConfig` (server section, then
//! `[barman]` for inheritable options, then defaults) and then adjusted as Barman's `Server`
//! set-up adjusts it (forced archiver, default backup strategy, disabled servers, retention
//! policy objects, integer bandwidth and redundancy). Typed accessors for what barsync uses.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::ini::Entry;
use super::keys::{DEFAULTS, GLOBAL_KEYS, SERVER_KEYS};
use super::options::{parse_option, OptionValue};
use super::warnings::{unknown_keys, ConfigWarning, Problem};
use super::{Config, ConfigError};
use crate::python::json::Json;

/// How a passive node reuses a previous backup when copying (`reuse_backup`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReuseBackup {
    Off,
    Copy,
    Link,
}

/// A parsed `retention_policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionPolicy {
    Redundancy(u32),
    RecoveryWindow { count: u32, unit: WindowUnit },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowUnit {
    Days,
    Weeks,
    Months,
}

/// The configuration of one Barman server section.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    name: String,
    values: Vec<(&'static str, OptionValue)>,
    barman_home: Option<String>,
    lock_directory: Option<String>,
    /// What Barman ignores or misreads in this server's options, in Barman's order: unknown
    /// options of its section, invalid values (of its section or inherited from `[barman]`),
    /// then the values the server set-up replaced with a fallback.
    pub warnings: Vec<ConfigWarning>,
    /// Every configuration warning about this server: [`ServerConfig::warnings`], and the
    /// inline comments and unknown options of its section and of `[barman]` (set by
    /// [`Config::servers`] and [`Config::server`]).
    pub config_warnings: Vec<ConfigWarning>,
    /// Warnings Barman prints while setting the server up (archiver, backup strategy).
    pub setup_warnings: Vec<String>,
    /// `follow_max_lag` (barsync's own option), or its default.
    follow_max_lag: std::time::Duration,
    /// Why the server is disabled, if it is.
    pub disabled_reasons: Vec<String>,
    /// Options set in the server's section or in `[barman]` (not left to their default).
    explicit: Vec<&'static str>,
    /// Where each explicit option was read: its section and entry.
    origins: Vec<(&'static str, String, Option<Entry>)>,
}

impl ServerConfig {
    pub(super) fn build(config: &Config, name: &str) -> Result<ServerConfig, ConfigError> {
        let mut server = ServerConfig {
            name: name.to_owned(),
            values: Vec::with_capacity(SERVER_KEYS.len()),
            barman_home: config.barman_home.clone(),
            lock_directory: config.barman_lock_directory.clone(),
            warnings: unknown_keys(name, config.store.options(name)),
            config_warnings: Vec::new(),
            setup_warnings: Vec::new(),
            disabled_reasons: Vec::new(),
            explicit: Vec::new(),
            origins: Vec::new(),
            follow_max_lag: super::keys::DEFAULT_FOLLOW_MAX_LAG,
        };
        // ConfigParser sees the ServerConfig attributes as interpolation variables.
        let mut vars: HashMap<String, String> = HashMap::new();
        vars.insert("name".to_owned(), name.to_owned());
        vars.insert("msg_list".to_owned(), "[]".to_owned());
        for (key, value) in [
            ("barman_home", &config.barman_home),
            ("barman_lock_directory", &config.barman_lock_directory),
        ] {
            if let Some(value) = value {
                vars.insert(key.to_owned(), value.clone());
            }
        }
        let python_str = |vars: &HashMap<String, String>, key: &str| {
            vars.get(key).cloned().unwrap_or_else(|| "None".to_owned())
        };
        for &key in SERVER_KEYS {
            let mut value: Option<OptionValue> = None;
            if key != "disabled" {
                let section_value = config.get_value(name, key, &vars)?;
                let entry = config.store.entry(name, key);
                value = server.invoke_parser(key, (name, entry), value, section_value);
                if value.is_some() {
                    server.origins.push((key, name.to_owned(), entry.cloned()));
                }
                if value.is_none() && GLOBAL_KEYS.contains(&key) {
                    let global_value = config.get_value("barman", key, &vars)?;
                    let entry = config.store.entry("barman", key);
                    value = server.invoke_parser(key, ("barman", entry), value, global_value);
                    if value.is_some() {
                        server
                            .origins
                            .push((key, "barman".to_owned(), entry.cloned()));
                    }
                }
            }
            if value.is_some() {
                server.explicit.push(key);
            }
            if value.is_none() {
                if let Some((_, template)) = DEFAULTS.iter().find(|(k, _)| *k == key) {
                    let default = percent_format(template, |k| python_str(&vars, k));
                    value = server.invoke_parser(key, ("DEFAULTS", None), value, Some(default));
                }
            }
            let value = match value {
                Some(OptionValue::Text(text)) if text.is_empty() || text == "None" => {
                    OptionValue::Null
                }
                Some(value) => value,
                None => OptionValue::Null,
            };
            match value.to_python_str() {
                Some(text) => vars.insert(key.to_owned(), text),
                None => vars.remove(key),
            };
            server.values.push((key, value));
        }
        for section in [name, "barman"] {
            let key = "follow_max_lag";
            if let Some(value) = config.get_value(section, key, &vars)? {
                match parse_lag(&value) {
                    Ok(lag) => server.follow_max_lag = lag,
                    Err(reason) => {
                        let entry = config.store.entry(section, key);
                        let problem = Problem::InvalidValue { reason };
                        server
                            .warnings
                            .push(ConfigWarning::new(entry, section, key, &value, problem));
                    }
                }
                break;
            }
        }
        Ok(server)
    }

    /// `follow_max_lag`: how far behind the primary's newest WAL this node may be before
    /// `check` fails (default 5 minutes).
    pub fn follow_max_lag(&self) -> std::time::Duration {
        self.follow_max_lag
    }

    /// `BaseConfig.invoke_parser`: a missing value keeps the old one, an invalid one is ignored
    /// with Barman's warning.
    /// `source` is the section the value was read from (`DEFAULTS` for Barman's defaults)
    /// and its entry in the files.
    fn invoke_parser(
        &mut self,
        key: &str,
        source: (&str, Option<&Entry>),
        old: Option<OptionValue>,
        new: Option<String>,
    ) -> Option<OptionValue> {
        let new = new?;
        match parse_option(key, &new) {
            Ok(value) => Some(value),
            Err(reason) => {
                let (section, entry) = source;
                let problem = Problem::InvalidValue { reason };
                self.warnings
                    .push(ConfigWarning::new(entry, section, key, &new, problem));
                old
            }
        }
    }

    /// A value the set-up rejects and replaces: a warning naming where it was read.
    fn fallback(&mut self, key: &str, value: &str, reason: String) {
        let (section, entry) = self
            .origins
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, section, entry)| (section.clone(), entry.clone()))
            .unwrap_or_else(|| ("DEFAULTS".to_owned(), None));
        let problem = Problem::Fallback { reason };
        self.warnings.push(ConfigWarning::new(
            entry.as_ref(),
            &section,
            key,
            value,
            problem,
        ));
    }

    /// The adjustments Barman's `Server.__init__` makes to the configuration it was given.
    pub(super) fn apply_server_setup(&mut self) {
        let active = self.bool("active");
        let passive = self.is_passive();
        if active && !passive {
            if self.text("conninfo").is_none() {
                self.disable(format!(
                    "PostgreSQL connection: Missing 'conninfo' parameter for server '{}'",
                    self.name
                ));
            }
            if (self.text("backup_method") == Some("postgres") || self.bool("streaming_archiver"))
                && self.text("streaming_conninfo").is_none()
            {
                self.disable(format!(
                    "Streaming connection: Missing 'streaming_conninfo' parameter for server '{}'",
                    self.name
                ));
            }
        }
        if active && !passive {
            self.apply_backup_executor_setup();
        }
        if active && !passive {
            if !self.bool("archiver") && !self.bool("streaming_archiver") {
                self.setup_warnings.push(format!(
                    "No archiver enabled for server '{}'. Please turn on 'archiver', 'streaming_archiver' or both",
                    self.name
                ));
                self.setup_warnings
                    .push("Forcing 'archiver = on'".to_owned());
                self.set("archiver", OptionValue::Bool(true));
            }
            if !self.bool("archiver")
                && self.bool("streaming_archiver")
                && self.text("slot_name").is_none()
            {
                self.disable("Streaming-only archiver requires 'streaming_conninfo' and 'slot_name' options to be properly configured".to_owned());
            }
        }
        self.apply_bandwidth_limits();
        let redundancy = match self.get("minimum_redundancy").to_python_str() {
            Some(text) => match crate::python::parse_int(&text) {
                Some(value) if value >= 0 => value,
                _ => {
                    let reason = "not a non-negative integer: 0 instead".to_owned();
                    self.fallback("minimum_redundancy", &text, reason);
                    0
                }
            },
            None => 0,
        };
        self.set("minimum_redundancy", OptionValue::Int(redundancy));
        self.apply_retention_policies();
    }

    fn apply_backup_executor_setup(&mut self) {
        let method = self.text("backup_method").unwrap_or("rsync").to_owned();
        let has_ssh_command = self
            .text("ssh_command")
            .is_some_and(|c| !c.trim().is_empty());
        match method.as_str() {
            "rsync" | "local-rsync" => {
                let local = method == "local-rsync";
                if !local && !has_ssh_command {
                    self.disable(format!(
                        "Missing or invalid ssh_command in barman configuration for server {}",
                        self.name
                    ));
                    return;
                }
                if local && has_ssh_command {
                    self.disable(format!("Local copy requires ssh_command in barman configuration to be empty for server {}", self.name));
                    return;
                }
                let mut options = self.option_set("backup_options");
                if !options
                    .iter()
                    .any(|o| o == "concurrent_backup" || o == "exclusive_backup")
                {
                    options.push("concurrent_backup".to_owned());
                    self.setup_warnings.push(format!(
                        "No backup strategy set for server '{}' (using default 'concurrent_backup').",
                        self.name
                    ));
                    self.set("backup_options", OptionValue::OptionSet(options));
                }
                if self.text("backup_compression").is_some() {
                    self.disable(
                        "backup_compression option is not supported by rsync backup_method"
                            .to_owned(),
                    );
                }
            }
            "postgres" => {
                let mut options = self.option_set("backup_options");
                if options.iter().any(|o| o == "exclusive_backup") {
                    options.retain(|o| o != "exclusive_backup");
                    self.setup_warnings.push("'exclusive_backup' is not a valid backup_option using postgres backup_method. Overriding with 'concurrent_backup'.".to_owned());
                }
                if !options.iter().any(|o| o == "concurrent_backup") {
                    options.push("concurrent_backup".to_owned());
                }
                self.set("backup_options", OptionValue::OptionSet(options));
            }
            _ => {}
        }
    }

    fn apply_bandwidth_limits(&mut self) {
        if let Some(text) = self.get("bandwidth_limit").to_python_str() {
            let limit = crate::python::parse_int(&text);
            if limit.is_none() && !text.is_empty() {
                let reason = "not an integer (KiB/s): no bandwidth limit".to_owned();
                self.fallback("bandwidth_limit", &text, reason);
            }
            self.set(
                "bandwidth_limit",
                limit.map_or(OptionValue::Null, OptionValue::Int),
            );
        }
        let global_limit = match self.get("bandwidth_limit") {
            OptionValue::Int(limit) => Some(*limit),
            _ => None,
        };
        if let Some(text) = self.text("tablespace_bandwidth_limit").map(str::to_owned) {
            let mut rules: Vec<(String, i128)> = Vec::new();
            for rule in text.split_whitespace() {
                let parsed = rule
                    .split_once(':')
                    .and_then(|(name, value)| Some((name, crate::python::parse_int(value)?)));
                let Some((name, value)) = parsed else {
                    let reason = format!("rule '{rule}' is not TABLESPACE:KIBPERSECOND, ignored");
                    self.fallback("tablespace_bandwidth_limit", &text, reason);
                    continue;
                };
                if Some(value) != global_limit {
                    match rules.iter_mut().find(|(n, _)| n == name) {
                        Some(slot) => slot.1 = value,
                        None => rules.push((name.to_owned(), value)),
                    }
                }
            }
            let value = if rules.is_empty() {
                OptionValue::Null
            } else {
                OptionValue::Limits(rules)
            };
            self.set("tablespace_bandwidth_limit", value);
        }
    }

    fn apply_retention_policies(&mut self) {
        if self.text("retention_policy_mode") != Some("auto") {
            self.set(
                "retention_policy_mode",
                OptionValue::Text("auto".to_owned()),
            );
        }
        let Some(policy_text) = self.text("retention_policy").map(str::to_owned) else {
            return;
        };
        if self.text("wal_retention_policy") != Some("main") {
            self.set("wal_retention_policy", OptionValue::Text("main".to_owned()));
        }
        if let Some(policy) = RetentionPolicy::parse(&policy_text) {
            self.set("retention_policy", OptionValue::Policy(policy.to_string()));
            self.set(
                "wal_retention_policy",
                OptionValue::Policy("MAIN".to_owned()),
            );
        } else {
            let reason =
                "not REDUNDANCY n or RECOVERY WINDOW OF n DAYS|WEEKS|MONTHS: no retention policy"
                    .to_owned();
            self.fallback("retention_policy", &policy_text, reason);
        }
    }

    pub(super) fn disable_for_conflicts(&mut self) {
        self.set("disabled", OptionValue::Bool(true));
    }

    fn disable(&mut self, reason: String) {
        self.disabled_reasons.push(reason);
        self.set("disabled", OptionValue::Bool(true));
    }

    fn set(&mut self, key: &str, value: OptionValue) {
        if let Some(slot) = self.values.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = value;
        }
    }

    fn option_set(&self, key: &str) -> Vec<String> {
        match self.get(key) {
            OptionValue::OptionSet(items) => items.clone(),
            _ => Vec::new(),
        }
    }

    /// `ServerConfig.to_json()`: every option in `KEYS` order, then `name`.
    pub fn to_json(&self) -> Json {
        let mut entries: Vec<(String, Json)> = self
            .values
            .iter()
            .map(|(key, value)| ((*key).to_owned(), value.to_json()))
            .collect();
        entries.push(("name".to_owned(), Json::Str(self.name.clone())));
        Json::Object(entries)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The parsed value of any server option (`Null` for unknown names).
    pub fn get(&self, key: &str) -> &OptionValue {
        self.values
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
            .unwrap_or(&OptionValue::Null)
    }

    /// A text option, `None` when unset.
    pub fn text(&self, key: &str) -> Option<&str> {
        self.get(key).as_text()
    }

    /// A boolean option (`false` when unset).
    pub fn bool(&self, key: &str) -> bool {
        matches!(self.get(key), OptionValue::Bool(true))
    }

    fn int(&self, key: &str) -> Option<i128> {
        match self.get(key) {
            OptionValue::Int(value) => Some(*value),
            _ => None,
        }
    }

    fn path(&self, key: &str) -> PathBuf {
        PathBuf::from(self.text(key).unwrap_or("None"))
    }

    pub fn barman_home(&self) -> Option<&Path> {
        self.barman_home.as_deref().map(Path::new)
    }

    /// `barman_lock_directory`, which defaults to `barman_home`.
    pub fn lock_directory(&self) -> PathBuf {
        PathBuf::from(self.lock_directory.as_deref().unwrap_or("None"))
    }

    pub fn backup_directory(&self) -> PathBuf {
        self.path("backup_directory")
    }

    pub fn basebackups_directory(&self) -> PathBuf {
        self.path("basebackups_directory")
    }

    /// `<backup_directory>/meta`, where backup.info files live since Barman 3.13.2.
    pub fn meta_directory(&self) -> PathBuf {
        self.backup_directory().join("meta")
    }

    pub fn wals_directory(&self) -> PathBuf {
        self.path("wals_directory")
    }

    pub fn xlogdb_directory(&self) -> PathBuf {
        self.path("xlogdb_directory")
    }

    /// `<xlogdb_directory>/<server>-xlog.db`.
    pub fn xlogdb_path(&self) -> PathBuf {
        self.xlogdb_directory()
            .join(format!("{}-xlog.db", self.name))
    }

    /// The xlog db name used before Barman 3.13: `<wals_directory>/xlog.db`.
    pub fn legacy_xlogdb_path(&self) -> PathBuf {
        self.wals_directory().join("xlog.db")
    }

    pub fn incoming_wals_directory(&self) -> PathBuf {
        self.path("incoming_wals_directory")
    }

    pub fn streaming_wals_directory(&self) -> PathBuf {
        self.path("streaming_wals_directory")
    }

    pub fn errors_directory(&self) -> PathBuf {
        self.path("errors_directory")
    }

    /// `<backup_directory>/primary.info`, the last sync-info of the primary (passive only).
    pub fn primary_info_path(&self) -> PathBuf {
        self.backup_directory().join("primary.info")
    }

    pub fn primary_ssh_command(&self) -> Option<&str> {
        self.text("primary_ssh_command")
    }

    /// A server is a passive node exactly when `primary_ssh_command` is set.
    pub fn is_passive(&self) -> bool {
        self.primary_ssh_command().is_some()
    }

    pub fn forward_config_path(&self) -> bool {
        self.bool("forward_config_path")
    }

    /// WAL compression, `None` when WALs are stored uncompressed.
    pub fn compression(&self) -> Option<&str> {
        self.text("compression")
    }

    /// Whether `key` was set in the configuration rather than left to Barman's default.
    pub fn is_explicit(&self, key: &str) -> bool {
        self.explicit.contains(&key)
    }

    pub fn parallel_jobs(&self) -> u32 {
        self.int("parallel_jobs")
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(1)
            .max(1)
    }

    /// `bandwidth_limit` in KiB/s, `None` (or 0) meaning unlimited.
    pub fn bandwidth_limit(&self) -> Option<u64> {
        self.int("bandwidth_limit")
            .and_then(|v| u64::try_from(v).ok())
            .filter(|v| *v > 0)
    }

    pub fn network_compression(&self) -> bool {
        self.bool("network_compression")
    }

    pub fn reuse_backup(&self) -> ReuseBackup {
        match self.text("reuse_backup") {
            Some("copy") => ReuseBackup::Copy,
            Some("link") => ReuseBackup::Link,
            _ => ReuseBackup::Off,
        }
    }

    pub fn basebackup_retry_times(&self) -> u32 {
        self.int("basebackup_retry_times")
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(0)
    }

    pub fn basebackup_retry_sleep(&self) -> u32 {
        self.int("basebackup_retry_sleep")
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(30)
    }

    pub fn retention_policy(&self) -> Option<RetentionPolicy> {
        match self.get("retention_policy") {
            OptionValue::Policy(text) => RetentionPolicy::parse(text),
            _ => None,
        }
    }

    pub fn minimum_redundancy(&self) -> u32 {
        self.int("minimum_redundancy")
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(0)
    }

    pub fn is_disabled(&self) -> bool {
        self.bool("disabled")
    }

    /// Barman's `active` (default true): an inactive server is left alone by cron.
    pub fn is_active(&self) -> bool {
        self.bool("active")
    }
}

impl RetentionPolicy {
    /// Barman's `REDUNDANCY n` and `RECOVERY WINDOW OF n DAYS|WEEKS|MONTHS` (any case, singular
    /// or plural unit).
    pub fn parse(text: &str) -> Option<RetentionPolicy> {
        let lowered = text.to_lowercase();
        let words: Vec<&str> = lowered.split_whitespace().collect();
        let count = |word: &str| -> Option<u32> {
            word.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| word.parse().ok())
                .flatten()
        };
        match words.as_slice() {
            ["redundancy", n] => Some(RetentionPolicy::Redundancy(count(n)?)),
            ["recovery", "window", "of", n, unit] => {
                let unit = match unit.strip_suffix('s').unwrap_or(unit) {
                    "day" => WindowUnit::Days,
                    "week" => WindowUnit::Weeks,
                    "month" => WindowUnit::Months,
                    _ => return None,
                };
                Some(RetentionPolicy::RecoveryWindow {
                    count: count(n)?,
                    unit,
                })
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for RetentionPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RetentionPolicy::Redundancy(n) => write!(f, "REDUNDANCY {n}"),
            RetentionPolicy::RecoveryWindow { count, unit } => {
                let unit = match unit {
                    WindowUnit::Days => "DAYS",
                    WindowUnit::Weeks => "WEEKS",
                    WindowUnit::Months => "MONTHS",
                };
                write!(f, "RECOVERY WINDOW OF {count} {unit}")
            }
        }
    }
}

/// Python's `template % mapping` for `%(name)s` references (the form Barman's defaults use).
fn percent_format(template: &str, lookup: impl Fn(&str) -> String) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("%(") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find(")s") {
            Some(end) => {
                out.push_str(&lookup(&after[..end]));
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// A `follow_max_lag` value: a number of seconds, or `N second[s]|minute[s]|hour[s]|day[s]`
/// (`30`, `90 seconds`, `5 minutes`, `1 hour`).
pub fn parse_lag(text: &str) -> Result<std::time::Duration, String> {
    let invalid =
        || format!("Invalid value for a lag {text} (seconds, or N seconds|minutes|hours|days)");
    let mut words = text.split_whitespace();
    let number: u64 = words
        .next()
        .ok_or_else(invalid)?
        .parse()
        .map_err(|_| invalid())?;
    let unit = match words.next() {
        None => 1,
        Some(unit) => match unit.trim_end_matches('s') {
            "second" => 1,
            "minute" => 60,
            "hour" => 3600,
            "day" => 86400,
            _ => return Err(invalid()),
        },
    };
    if words.next().is_some() || number == 0 {
        return Err(invalid());
    }
    number
        .checked_mul(unit)
        .map(std::time::Duration::from_secs)
        .ok_or_else(invalid)
}
