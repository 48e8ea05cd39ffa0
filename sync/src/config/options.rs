//! Typed values of server options and Barman's per-option parsers (`config.PARSERS`):
//! booleans, ints, SI sizes, time intervals, option sets, enumerations.

use crate::python::json::Json;
use crate::python::parse_int;

/// A parsed option value, as `ServerConfig` holds it after parsing.
#[derive(Debug, Clone, PartialEq)]
pub enum OptionValue {
    Null,
    Bool(bool),
    Int(i128),
    Text(String),
    /// A comma-separated list such as `snapshot_disks`.
    List(Vec<String>),
    /// A `CsvOption` set (`backup_options`, `recovery_options`), in insertion order.
    OptionSet(Vec<String>),
    /// A `datetime.timedelta` from a time interval option.
    Interval {
        days: i64,
        seconds: i64,
    },
    /// `tablespace_bandwidth_limit` rules after the server set-up.
    Limits(Vec<(String, i128)>),
    /// A retention policy object, by its `str()`.
    Policy(String),
}

impl OptionValue {
    /// The value as `json.dump(..., cls=BarmanEncoder)` writes it.
    pub fn to_json(&self) -> Json {
        match self {
            OptionValue::Null => Json::Null,
            OptionValue::Bool(value) => Json::Bool(*value),
            OptionValue::Int(value) => Json::Int(*value),
            OptionValue::Text(text) | OptionValue::Policy(text) => Json::Str(text.clone()),
            OptionValue::List(items) => Json::Array(items.iter().cloned().map(Json::Str).collect()),
            OptionValue::OptionSet(items) => Json::Str(items.join(",")),
            OptionValue::Interval { days, seconds } => {
                Json::Str(human_readable_interval(*days, *seconds))
            }
            OptionValue::Limits(rules) => Json::Object(
                rules
                    .iter()
                    .map(|(name, limit)| (name.clone(), Json::Int(*limit)))
                    .collect(),
            ),
        }
    }

    /// `str(value)`, as ConfigParser sees it when the value is used for interpolation.
    pub fn to_python_str(&self) -> Option<String> {
        match self {
            OptionValue::Null => None,
            OptionValue::Bool(true) => Some("True".to_owned()),
            OptionValue::Bool(false) => Some("False".to_owned()),
            OptionValue::Int(value) => Some(value.to_string()),
            OptionValue::Text(text) | OptionValue::Policy(text) => Some(text.clone()),
            other => match other.to_json() {
                Json::Str(text) => Some(text),
                json => Some(json.dump_indented()),
            },
        }
    }

    pub fn as_text(&self) -> Option<&str> {
        match self {
            OptionValue::Text(text) | OptionValue::Policy(text) => Some(text),
            _ => None,
        }
    }
}

/// `utils.human_readable_timedelta` for a non-negative interval.
fn human_readable_interval(days: i64, seconds: i64) -> String {
    let units = [
        (days, "day"),
        (seconds / 3600, "hour"),
        ((seconds / 60) % 60, "minute"),
        (seconds % 60, "second"),
    ];
    let parts: Vec<String> = units
        .iter()
        .filter(|(count, _)| *count > 0)
        .map(|(count, unit)| format!("{count} {unit}{}", if *count == 1 { "" } else { "s" }))
        .collect();
    if days == 0 && seconds < 1 {
        "less than one second".to_owned()
    } else {
        parts.join(", ")
    }
}

/// WAL compressions known to Barman 3.20.1 (`compression_registry`).
pub const COMPRESSIONS: [&str; 10] = [
    "gzip", "bzip2", "pygzip", "pybzip2", "pigz", "xz", "zstd", "lz4", "snappy", "custom",
];

/// Parses `value` for option `key` as Barman's parser for that key does. Options without a
/// parser are kept as text. `Err` carries Barman's reason; Barman then ignores the value.
pub fn parse_option(key: &str, value: &str) -> Result<OptionValue, String> {
    use OptionValue::{Bool, Int, Null, Text};
    let lowered = value.to_lowercase();
    let one_of = |allowed: &[&str], message: &str| -> Result<OptionValue, String> {
        if allowed.contains(&lowered.as_str()) {
            Ok(Text(lowered.clone()))
        } else {
            Err(message.to_owned())
        }
    };
    match key {
        "active" | "archiver" | "autogenerate_manifest" | "aws_check_object_lock" | "disabled"
        | "forward_config_path" | "immediate_checkpoint" | "network_compression"
        | "streaming_archiver" | "worm_mode" => parse_boolean(value).map(Bool),
        "archiver_batch_size" | "aws_read_timeout" | "aws_await_snapshots_timeout"
        | "aws_snapshot_lock_duration" | "aws_snapshot_lock_cool_off_period"
        | "backup_compression_level" | "backup_compression_workers" | "basebackup_retry_sleep"
        | "basebackup_retry_times" | "check_timeout" | "cloud_delete_batch_size"
        | "cloud_wal_archive_parallel" | "cloud_wal_restore_parallel" | "keepalive_interval"
        | "max_incoming_wals_queue" | "parallel_jobs" | "parallel_jobs_start_batch_period"
        | "parallel_jobs_start_batch_size" | "primary_checkpoint_timeout"
        | "streaming_archiver_batch_size" | "warehousepg_dbid" => parse_int(value)
            .map(Int)
            .ok_or_else(|| format!("invalid literal for int() with base 10: '{value}'")),
        "aws_encryption" => {
            if ["AES256", "aws:kms"].contains(&value) {
                Ok(Text(value.to_owned()))
            } else {
                Err(format!("Invalid value '{value}' (must be one in: ['AES256', 'aws:kms'])"))
            }
        }
        "backup_compression" => one_of(
            &["gzip", "lz4", "zstd", "none"],
            &format!("Invalid value '{value}'(must be one in: ['gzip', 'lz4', 'zstd', 'none'])"),
        ),
        "backup_compression_format" => {
            one_of(&["plain", "tar"], "Invalid value (must be either `plain` or `tar`)")
        }
        "backup_compression_location" => {
            one_of(&["client", "server"], "Invalid value (must be either `client` or `server`)")
        }
        "backup_method" => one_of(
            &["rsync", "postgres", "local-rsync", "snapshot", "local-to-cloud"],
            "Invalid value (must be one in: 'rsync', 'postgres', 'local-rsync', 'snapshot', 'local-to-cloud')",
        ),
        "backup_options" => parse_option_set(
            key,
            value,
            &["exclusive_backup", "concurrent_backup", "external_configuration"],
        ),
        "recovery_options" => parse_option_set(key, value, &["get-wal", "delta-restore"]),
        "cloud_staging_directory" | "local_staging_path" | "recovery_staging_path"
        | "staging_path" => {
            if value.starts_with('/') {
                Ok(Text(value.to_owned()))
            } else {
                Err(format!("Invalid value : '{value}' (must be an absolute path)"))
            }
        }
        "cloud_staging_max_size" | "cloud_upload_max_archive_size"
        | "cloud_upload_min_chunk_size" | "last_backup_minimum_size" => parse_si_suffix(value),
        "compression" => {
            if value.is_empty() || COMPRESSIONS.contains(&lowered.as_str()) {
                Ok(Text(lowered))
            } else {
                Err(format!(
                    "Invalid value: '{lowered}' (must be one in: {})",
                    COMPRESSIONS.join(", ")
                ))
            }
        }
        "compression_level" => {
            if value.is_empty() {
                Ok(Text(String::new()))
            } else if !lowered.trim_start_matches('-').is_empty()
                && lowered.trim_start_matches('-').bytes().all(|b| b.is_ascii_digit())
            {
                parse_int(&lowered).map(Int).ok_or_else(|| "invalid integer".to_owned())
            } else if ["low", "medium", "high"].contains(&lowered.as_str()) {
                Ok(Text(lowered))
            } else {
                Err(format!(
                    "Invalid value: '{lowered}' (must be one in [low, medium, high] or an acceptable integer)"
                ))
            }
        }
        "encryption" => match lowered.as_str() {
            "none" => Ok(Null),
            "gpg" => Ok(Text(lowered)),
            _ => Err(format!(
                "Invalid encryption value '{lowered}'. Allowed values are: none, gpg."
            )),
        },
        "last_backup_maximum_age" | "last_wal_maximum_age" => parse_time_interval(value),
        "combine_mode" => one_of(
            &["copy", "link", "clone", "copy-file-range"],
            &format!("Invalid value: {lowered} (options are: copy, link, clone, copy-file-range)"),
        ),
        "create_slot" => one_of(&["manual", "auto"], "Invalid value (use 'manual' or 'auto')"),
        "reuse_backup" => {
            one_of(&["copy", "link", "off"], "Invalid value (use 'copy', 'link' or 'off')")
        }
        "snapshot_disks" => {
            let disks: Vec<String> = value.split(',').map(str::to_owned).collect();
            if disks.iter().any(String::is_empty) {
                Err(format!("{disks:?}"))
            } else {
                Ok(OptionValue::List(disks))
            }
        }
        "staging_location" => {
            if ["local", "remote"].contains(&value) {
                Ok(Text(value.to_owned()))
            } else {
                Err(format!("Invalid value: {value} (options are: local, remote)"))
            }
        }
        "slot_name" => {
            let valid = !lowered.is_empty()
                && lowered.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if valid {
                Ok(Text(lowered))
            } else {
                Err("Replication slot names may only contain lower case letters, numbers, and the underscore character.".to_owned())
            }
        }
        _ => Ok(Text(value.to_owned())),
    }
}

/// `config.parse_boolean`.
pub fn parse_boolean(value: &str) -> Result<bool, String> {
    match value.to_lowercase().as_str() {
        "true" | "t" | "yes" | "1" | "on" => Ok(true),
        "false" | "f" | "no" | "0" | "off" => Ok(false),
        _ => Err(
            "Invalid boolean representation (must be one in: true|t|yes|1|on | false|f|no|0|off)"
                .to_owned(),
        ),
    }
}

fn parse_option_set(key: &str, value: &str, allowed: &[&str]) -> Result<OptionValue, String> {
    let mut items: Vec<String> = Vec::new();
    if value.is_empty() {
        return Ok(OptionValue::OptionSet(items));
    }
    let mut raw: Vec<&str> = value.split(',').collect();
    raw.sort_unstable();
    for item in raw {
        let item = item.trim().to_lowercase();
        if !allowed.contains(&item.as_str()) {
            return Err(format!(
                "Invalid configuration value '{item}' for key {key}: Unknown option"
            ));
        }
        let conflict = match item.as_str() {
            "exclusive_backup" => Some("concurrent_backup"),
            "concurrent_backup" => Some("exclusive_backup"),
            _ => None,
        };
        if let Some(conflict) = conflict.filter(|c| items.iter().any(|i| i == c)) {
            return Err(format!(
                "Invalid configuration value '{item}' for key {key}: cannot contain both '{item}' and '{conflict}'."
            ));
        }
        if !items.contains(&item) {
            items.push(item);
        }
    }
    Ok(OptionValue::OptionSet(items))
}

/// `config.parse_si_suffix`: `N [k|Ki|M|Mi|G|Gi|T|Ti]`.
fn parse_si_suffix(value: &str) -> Result<OptionValue, String> {
    if value.is_empty() {
        return Ok(OptionValue::Null);
    }
    let invalid = || format!("Invalid value for a number {value}");
    let trimmed = value.trim_end();
    let digits_end = trimmed.bytes().take_while(u8::is_ascii_digit).count();
    if digits_end == 0 {
        return Err(invalid());
    }
    let number: i128 = trimmed[..digits_end].parse().map_err(|_| invalid())?;
    let multiplier: i128 = match trimmed[digits_end..].trim_start() {
        "" => 1,
        "k" => 1000,
        "Ki" => 1024,
        "M" => 1_000_000,
        "Mi" => 1 << 20,
        "G" => 1_000_000_000,
        "Gi" => 1 << 30,
        "T" => 1_000_000_000_000,
        "Ti" => 1 << 40,
        _ => return Err(invalid()),
    };
    Ok(OptionValue::Int(number * multiplier))
}

/// `config.parse_time_interval`: `N (day|week|month|hour)[s]`.
fn parse_time_interval(value: &str) -> Result<OptionValue, String> {
    if value.is_empty() {
        return Ok(OptionValue::Null);
    }
    let invalid = || format!("Invalid value for a time interval {value}");
    let words: Vec<&str> = value.split_whitespace().collect();
    let [count, unit] = words.as_slice() else {
        return Err(invalid());
    };
    let count: i64 = count
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| count.parse().ok())
        .flatten()
        .ok_or_else(invalid)?;
    let unit = unit.to_lowercase();
    let unit = unit.strip_suffix('s').unwrap_or(&unit);
    match unit {
        "day" => Ok(OptionValue::Interval {
            days: count,
            seconds: 0,
        }),
        "week" => Ok(OptionValue::Interval {
            days: count * 7,
            seconds: 0,
        }),
        "month" => Ok(OptionValue::Interval {
            days: count * 31,
            seconds: 0,
        }),
        "hour" => Ok(OptionValue::Interval {
            days: count / 24,
            seconds: (count % 24) * 3600,
        }),
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers_follow_barman() {
        assert_eq!(parse_option("archiver", "ON"), Ok(OptionValue::Bool(true)));
        assert!(parse_option("archiver", "maybe").is_err());
        assert_eq!(
            parse_option("parallel_jobs", " 4 "),
            Ok(OptionValue::Int(4))
        );
        assert_eq!(
            parse_option("reuse_backup", "LINK"),
            Ok(OptionValue::Text("link".into()))
        );
        assert_eq!(
            parse_option("cloud_staging_max_size", "5 Mi"),
            Ok(OptionValue::Int(5 << 20))
        );
        assert_eq!(parse_option("encryption", "none"), Ok(OptionValue::Null));
        assert_eq!(
            parse_option("compression_level", "5"),
            Ok(OptionValue::Int(5))
        );
        let interval = parse_option("last_wal_maximum_age", "25 hours").unwrap();
        assert_eq!(interval.to_json(), Json::Str("1 day, 1 hour".into()));
        let interval = parse_option("last_backup_maximum_age", "2 weeks").unwrap();
        assert_eq!(interval.to_json(), Json::Str("14 days".into()));
        let set = parse_option("backup_options", "concurrent_backup, concurrent_backup").unwrap();
        assert_eq!(set.to_json(), Json::Str("concurrent_backup".into()));
        assert!(parse_option("backup_options", "exclusive_backup,concurrent_backup").is_err());
        assert_eq!(
            parse_option("description", "Any Text"),
            Ok(OptionValue::Text("Any Text".into()))
        );
    }
}
