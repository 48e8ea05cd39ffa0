//! Settings that Barman reads but ignores or misreads, as a typed list: options no section
//! knows (with the known option a typo resembles), values Barman's parsers reject, values the
//! server set-up replaces with a fallback, and values holding what looks like an inline
//! comment (ConfigParser keeps `; ...` and `# ...` after a value as part of it). Each warning
//! names the file, line, section, key and value; [`ConfigWarning::barman_line`] is the line
//! Barman itself prints for it, when it prints one.

use std::fmt;
use std::path::PathBuf;

use super::ini::Entry;
use super::keys::{BARSYNC_KEYS, SERVER_KEYS};

/// One setting Barman ignores or misreads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// The file and line the setting was read from (`None` for Barman's defaults).
    pub location: Option<(PathBuf, usize)>,
    pub section: String,
    pub key: String,
    pub value: String,
    pub problem: Problem,
}

/// What is wrong with a setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Not an option of that section: Barman warns and ignores it.
    UnknownKey {
        /// The known option the key is a likely typo of.
        did_you_mean: Option<&'static str>,
        /// The key is a `[barman]`-only option set in a server section.
        global_only: bool,
    },
    /// Barman's parser rejects the value and ignores it (Barman's reason).
    InvalidValue { reason: String },
    /// Barman's server set-up rejects the value and uses a fallback instead.
    Fallback { reason: String },
    /// The value ends with what looks like a comment, which Barman keeps in the value.
    InlineComment { comment: String },
}

impl ConfigWarning {
    pub(super) fn new(
        entry: Option<&Entry>,
        section: &str,
        key: &str,
        value: &str,
        problem: Problem,
    ) -> ConfigWarning {
        ConfigWarning {
            location: entry.map(|e| (e.file.clone(), e.line)),
            section: section.to_owned(),
            key: key.to_owned(),
            value: value.to_owned(),
            problem,
        }
    }

    /// The warning Barman prints on stderr for this (without `WARNING: `), if it prints one.
    pub fn barman_line(&self) -> Option<String> {
        let (key, section, value) = (&self.key, &self.section, &self.value);
        match &self.problem {
            Problem::UnknownKey { .. } => Some(format!(
                "Invalid configuration option \"{key}\" in [{section}] section."
            )),
            Problem::InvalidValue { reason } => Some(format!(
                "Ignoring invalid configuration value '{value}' for key {key} in {}: {reason}",
                source_name(section)
            )),
            Problem::Fallback { .. } | Problem::InlineComment { .. } => None,
        }
    }
}

/// How Barman names where a value came from.
fn source_name(section: &str) -> String {
    if section == "DEFAULTS" {
        section.to_owned()
    } else {
        format!("[{section}] section")
    }
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (key, section, value) = (&self.key, &self.section, &self.value);
        match &self.problem {
            Problem::UnknownKey {
                did_you_mean,
                global_only,
            } => {
                write!(
                    f,
                    "Invalid configuration option \"{key}\" in [{section}] section (value '{value}'), ignored"
                )?;
                if let Some(known) = did_you_mean {
                    write!(f, ": did you mean {known}?")?;
                } else if *global_only {
                    write!(f, ": {key} is only read from the [barman] section")?;
                }
            }
            Problem::InvalidValue { .. } => {
                let line = self.barman_line().unwrap_or_default();
                write!(f, "{line}")?;
            }
            Problem::Fallback { reason } => write!(
                f,
                "Invalid value '{value}' for key {key} in {}: {reason}",
                source_name(section)
            )?,
            Problem::InlineComment { comment } => write!(
                f,
                "The value of key {key} in {} is '{value}', with what looks like an inline comment ('{comment}'): Barman keeps it as part of the value; put the comment on a line of its own",
                source_name(section)
            )?,
        }
        if let Some((file, line)) = &self.location {
            write!(f, " ({} line {line})", file.display())?;
        }
        Ok(())
    }
}

/// The comment in `value`, if it has a `;` or `#` between whitespace (or whitespace and the
/// end of a line), where an INI reader with inline comments would start one.
pub(super) fn inline_comment(value: &str) -> Option<String> {
    for line in value.lines() {
        let chars: Vec<(usize, char)> = line.char_indices().collect();
        for (i, &(offset, ch)) in chars.iter().enumerate() {
            if ch != ';' && ch != '#' {
                continue;
            }
            let after_space = i > 0 && chars[i - 1].1.is_whitespace();
            let before_space = chars
                .get(i + 1)
                .is_none_or(|(_, next)| next.is_whitespace());
            if after_space && before_space {
                return Some(line[offset..].trim_end().to_owned());
            }
        }
    }
    None
}

/// The option of `known` that `key` is most likely a typo of: at most one edit (insertion,
/// deletion, substitution or swap of neighbours) for short keys, two for longer ones.
pub(super) fn did_you_mean(key: &str, known: &[&'static str]) -> Option<&'static str> {
    let limit = if key.chars().count() <= 5 { 1 } else { 2 };
    known
        .iter()
        .map(|candidate| (edit_distance(key, candidate), *candidate))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Optimal string alignment distance (Levenshtein with swaps of neighbours).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        d[i * width] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(width) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1)
                .min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = best;
        }
    }
    d[a.len() * width + b.len()]
}

/// The options Barman accepts in `[barman]` besides the server options.
pub(super) const GLOBAL_ONLY_KEYS: &[&str] = &[
    "barman_home",
    "barman_lock_directory",
    "barman_user",
    "lock_directory_cleanup",
    "config_changes_queue",
    "log_file",
    "log_level",
    "configuration_files_directory",
];

/// Barman's `_validate_with_keys` for one section: its options that Barman does not know.
pub(super) fn unknown_keys(section: &str, options: &[(String, Entry)]) -> Vec<ConfigWarning> {
    let global = section == "barman";
    let known: Vec<&'static str> = if global {
        GLOBAL_ONLY_KEYS
            .iter()
            .chain(SERVER_KEYS)
            .chain(BARSYNC_KEYS)
            .copied()
            .collect()
    } else {
        SERVER_KEYS.iter().chain(BARSYNC_KEYS).copied().collect()
    };
    options
        .iter()
        .filter(|(key, _)| !known.contains(&key.as_str()))
        .map(|(key, entry)| {
            let problem = Problem::UnknownKey {
                did_you_mean: did_you_mean(key, &known),
                global_only: !global && GLOBAL_ONLY_KEYS.contains(&key.as_str()),
            };
            ConfigWarning::new(Some(entry), section, key, &entry.value, problem)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_the_option_they_resemble() {
        let known = SERVER_KEYS;
        assert_eq!(
            did_you_mean("primary_ssh_comand", known),
            Some("primary_ssh_command")
        );
        assert_eq!(did_you_mean("parallel_job", known), Some("parallel_jobs"));
        assert_eq!(did_you_mean("reuse_bakcup", known), Some("reuse_backup"));
        assert_eq!(did_you_mean("custom_option_barman_ignores", known), None);
        assert_eq!(did_you_mean("foo", known), None);
    }

    #[test]
    fn inline_comments_are_spotted_but_not_hashes_in_words() {
        assert_eq!(
            inline_comment("link ; hard links").as_deref(),
            Some("; hard links")
        );
        assert_eq!(inline_comment("4 # jobs").as_deref(), Some("# jobs"));
        assert_eq!(inline_comment("4 ;").as_deref(), Some(";"));
        assert_eq!(inline_comment("first\nsecond # x").as_deref(), Some("# x"));
        assert_eq!(inline_comment("pg #1"), None);
        assert_eq!(inline_comment("ssh -o a=b;c host"), None);
        assert_eq!(inline_comment("a#b ;c"), None);
    }
}
