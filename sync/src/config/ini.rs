//! Python `ConfigParser(strict=False)` file reading as Barman's `ConfigMapping` uses it: sections,
//! `key = value` / `key: value`, lower-cased keys, full-line `#`/`;` comments, indented
//! continuation lines, `[DEFAULT]`, and `%(name)s` interpolation (once when a file is merged,
//! once more when a value is read).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::ConfigError;

/// One option as read: its value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: String,
    pub file: PathBuf,
    pub line: usize,
}

/// All sections merged from every file read so far, in first-seen order.
#[derive(Debug, Clone, Default)]
pub struct IniStore {
    sections: Vec<(String, Vec<(String, Entry)>)>,
    /// The files read, in order.
    files: Vec<PathBuf>,
}

/// Sections of one file before merging: `[DEFAULT]` kept apart.
struct ParsedFile {
    defaults: Vec<(String, Entry)>,
    sections: Vec<(String, Vec<(String, Entry)>)>,
}

impl ParsedFile {
    /// The options of a section index, `None` meaning `[DEFAULT]`.
    fn options_mut(&mut self, section: Option<usize>) -> &mut Vec<(String, Entry)> {
        match section {
            None => &mut self.defaults,
            Some(index) => &mut self.sections[index].1,
        }
    }
}

const MAX_INTERPOLATION_DEPTH: usize = 10;

impl IniStore {
    /// Reads `path` and merges it, as `ConfigMapping.read_config` does: each section's options
    /// (plus the file's `[DEFAULT]` ones) are interpolated within that file, then stored.
    pub fn read_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_owned(),
            source,
        })?;
        let parsed = parse_file(&text, path)?;
        self.files.push(path.to_owned());
        for (section, options) in &parsed.sections {
            let mut names: Vec<&String> = options.iter().map(|(k, _)| k).collect();
            for (key, _) in &parsed.defaults {
                if !names.contains(&key) {
                    names.push(key);
                }
            }
            let lookup = |key: &str| -> Option<&Entry> {
                lookup_last(options, key).or_else(|| lookup_last(&parsed.defaults, key))
            };
            let mut merged = Vec::new();
            for name in names {
                let entry = lookup(name).expect("name comes from the maps");
                let raw_lookup = |key: &str| lookup(key).map(|e| e.value.clone());
                let value = interpolate(&entry.value, &raw_lookup, 1)
                    .map_err(|reason| interpolation_error(entry, section, name, reason))?;
                check_interpolation_syntax(&value)
                    .map_err(|reason| interpolation_error(entry, section, name, reason))?;
                merged.push((
                    name.clone(),
                    Entry {
                        value,
                        ..entry.clone()
                    },
                ));
            }
            let target = match self.sections.iter_mut().find(|(name, _)| name == section) {
                Some((_, existing)) => existing,
                None => {
                    self.sections.push((section.clone(), Vec::new()));
                    &mut self.sections.last_mut().expect("just pushed").1
                }
            };
            for (key, entry) in merged {
                match target.iter_mut().find(|(existing, _)| *existing == key) {
                    Some(slot) => slot.1 = entry,
                    None => target.push((key, entry)),
                }
            }
        }
        Ok(())
    }

    /// The files read so far, in order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    pub fn has_section(&self, section: &str) -> bool {
        self.sections.iter().any(|(name, _)| name == section)
    }

    pub fn section_names(&self) -> impl Iterator<Item = &str> {
        self.sections.iter().map(|(name, _)| name.as_str())
    }

    /// The stored (merge-time interpolated) entry of `key` in `section`.
    pub fn entry(&self, section: &str, key: &str) -> Option<&Entry> {
        let (_, options) = self.sections.iter().find(|(name, _)| name == section)?;
        lookup_last(options, &key.to_lowercase())
    }

    /// The options of a section, in order.
    pub fn options(&self, section: &str) -> &[(String, Entry)] {
        self.sections
            .iter()
            .find(|(name, _)| name == section)
            .map(|(_, options)| options.as_slice())
            .unwrap_or(&[])
    }

    /// `ConfigParser.get(section, key, vars=vars)`: `vars` win over the section's own values,
    /// and the value is interpolated once more against both.
    pub fn get(
        &self,
        section: &str,
        key: &str,
        vars: &HashMap<String, String>,
    ) -> Result<Option<String>, ConfigError> {
        if !self.has_section(section) {
            return Ok(None);
        }
        let key = key.to_lowercase();
        let lookup = |name: &str| -> Option<String> {
            vars.get(name)
                .cloned()
                .or_else(|| self.entry(section, name).map(|e| e.value.clone()))
        };
        let Some(raw) = lookup(&key) else {
            return Ok(None);
        };
        match interpolate(&raw, &lookup, 1) {
            Ok(value) => Ok(Some(value)),
            Err(reason) => {
                let entry = self.entry(section, &key).cloned().unwrap_or(Entry {
                    value: raw,
                    file: PathBuf::from("<vars>"),
                    line: 0,
                });
                Err(interpolation_error(&entry, section, &key, reason))
            }
        }
    }
}

fn lookup_last<'a>(options: &'a [(String, Entry)], key: &str) -> Option<&'a Entry> {
    options
        .iter()
        .rev()
        .find(|(name, _)| name == key)
        .map(|(_, entry)| entry)
}

fn interpolation_error(entry: &Entry, section: &str, key: &str, reason: String) -> ConfigError {
    ConfigError::Syntax {
        file: entry.file.clone(),
        line: entry.line,
        message: format!("option '{key}' in section '{section}': {reason}"),
    }
}

/// `BasicInterpolation`: `%%` is a percent sign, `%(name)s` the value of `name` (itself
/// interpolated, up to 10 levels), any other `%` an error.
fn interpolate(
    value: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    depth: usize,
) -> Result<String, String> {
    if depth > MAX_INTERPOLATION_DEPTH {
        return Err("interpolation too deeply recursive".to_owned());
    }
    let mut out = String::new();
    let mut rest = value;
    while let Some(percent) = rest.find('%') {
        out.push_str(&rest[..percent]);
        rest = &rest[percent..];
        if let Some(after) = rest.strip_prefix("%%") {
            out.push('%');
            rest = after;
        } else if let Some(after) = rest.strip_prefix("%(") {
            let close = after
                .find(')')
                .filter(|&i| i > 0 && after[i..].starts_with(")s"));
            let Some(close) = close else {
                return Err(format!("bad interpolation variable reference {rest:?}"));
            };
            let name = after[..close].to_lowercase();
            let referenced = lookup(&name)
                .ok_or_else(|| format!("interpolation key '{name}' is not a valid option name"))?;
            if referenced.contains('%') {
                out.push_str(&interpolate(&referenced, lookup, depth + 1)?);
            } else {
                out.push_str(&referenced);
            }
            rest = &after[close + 2..];
        } else {
            return Err(format!(
                "'%' must be followed by '%' or '(', found: {rest:?}"
            ));
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// `BasicInterpolation.before_set`: after removing `%%` and `%(name)s`, no `%` may remain.
fn check_interpolation_syntax(value: &str) -> Result<(), String> {
    let without_escapes = value.replace("%%", "");
    let mut rest = without_escapes.as_str();
    while let Some(percent) = rest.find('%') {
        let after = &rest[percent..];
        let reference_end = after
            .strip_prefix("%(")
            .and_then(|inner| {
                inner
                    .find(')')
                    .filter(|&i| i > 0 && inner[i..].starts_with(")s"))
            })
            .map(|close| close + 4);
        match reference_end {
            Some(end) => rest = &after[end..],
            None => return Err(format!("invalid interpolation syntax in {value:?}")),
        }
    }
    Ok(())
}

fn parse_file(text: &str, path: &Path) -> Result<ParsedFile, ConfigError> {
    let mut parsed = ParsedFile {
        defaults: Vec::new(),
        sections: Vec::new(),
    };
    // Index of the current section: None before any header, Some(None) for [DEFAULT].
    let mut current: Option<Option<usize>> = None;
    let mut current_option: Option<String> = None;
    let mut option_indent = usize::MAX;
    let syntax = |line: usize, message: &str| ConfigError::Syntax {
        file: path.to_owned(),
        line,
        message: message.to_owned(),
    };
    for (index, line) in text.lines().enumerate() {
        let line_number = index + 1;
        let stripped = line.trim();
        let is_comment = stripped.starts_with('#') || stripped.starts_with(';');
        let content = if is_comment { "" } else { stripped };
        if content.is_empty() {
            // Empty lines inside a value are kept (empty_lines_in_values=True); comments are not.
            if !is_comment {
                if let (Some(section), Some(option)) = (current, &current_option) {
                    let options = parsed.options_mut(section);
                    if let Some((_, entry)) = options.iter_mut().rev().find(|(k, _)| k == option) {
                        entry.value.push('\n');
                    }
                }
            }
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        if let (Some(section), Some(option)) = (current, &current_option) {
            if indent > option_indent {
                let options = parsed.options_mut(section);
                if let Some((_, entry)) = options.iter_mut().rev().find(|(k, _)| k == option) {
                    entry.value.push('\n');
                    entry.value.push_str(content);
                }
                continue;
            }
        }
        option_indent = indent;
        if let Some(header) = section_header(content) {
            current_option = None;
            if header == "DEFAULT" {
                current = Some(None);
            } else {
                let position = parsed.sections.iter().position(|(name, _)| name == header);
                let position = position.unwrap_or_else(|| {
                    parsed.sections.push((header.to_owned(), Vec::new()));
                    parsed.sections.len() - 1
                });
                current = Some(Some(position));
            }
            continue;
        }
        let Some(section) = current else {
            return Err(syntax(line_number, "file contains no section headers"));
        };
        let Some(delimiter) = content.find(['=', ':']) else {
            return Err(syntax(
                line_number,
                &format!("not an option, a section or a comment: {content:?}"),
            ));
        };
        let name = content[..delimiter].trim_end();
        if name.is_empty() {
            return Err(syntax(
                line_number,
                &format!("option without a name: {content:?}"),
            ));
        }
        let key = name.to_lowercase();
        let value = content[delimiter + 1..].trim().to_owned();
        let entry = Entry {
            value,
            file: path.to_owned(),
            line: line_number,
        };
        let options = parsed.options_mut(section);
        match options.iter_mut().find(|(existing, _)| *existing == key) {
            Some(slot) => slot.1 = entry,
            None => options.push((key.clone(), entry)),
        }
        current_option = Some(key);
    }
    for options in
        std::iter::once(&mut parsed.defaults).chain(parsed.sections.iter_mut().map(|(_, o)| o))
    {
        for (_, entry) in options.iter_mut() {
            let trimmed_len = entry.value.trim_end().len();
            entry.value.truncate(trimmed_len);
        }
    }
    Ok(parsed)
}

/// `SECTCRE = r"\[(?P<header>.+)\]"`, matched at the start of the stripped line.
fn section_header(content: &str) -> Option<&str> {
    let inner = content.strip_prefix('[')?;
    let close = inner.rfind(']')?;
    (close > 0).then(|| &inner[..close])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn store_from(text: &str) -> Result<IniStore, ConfigError> {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        let mut store = IniStore::default();
        store.read_file(file.path())?;
        Ok(store)
    }

    fn get(store: &IniStore, section: &str, key: &str) -> Option<String> {
        store.get(section, key, &HashMap::new()).unwrap()
    }

    #[test]
    fn reads_like_configparser() {
        let store = store_from(
            "# comment\n[barman]\nBarman_Home = /srv/barman\n; other comment\nx: 1 \n\n[pg]\ndescription = first\n  second\n\n   third\n# not part\nother=%(x)s/%%%%\n[DEFAULT]\nx = d\n",
        )
        .unwrap();
        assert_eq!(
            get(&store, "barman", "barman_home").as_deref(),
            Some("/srv/barman")
        );
        assert_eq!(get(&store, "barman", "X").as_deref(), Some("1"));
        assert_eq!(
            get(&store, "pg", "description").as_deref(),
            Some("first\nsecond\n\nthird")
        );
        assert_eq!(
            get(&store, "pg", "other").as_deref(),
            Some("d/%"),
            "defaults of the file apply"
        );
    }

    #[test]
    fn errors_name_file_and_line() {
        let err = store_from("[pg]\nok = 1\nbroken line\n").unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { line: 3, .. }), "{err}");
        let err = store_from("key = 1\n").unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { line: 1, .. }), "{err}");
        let err = store_from("[pg]\n\na = %(missing)s\n").unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { line: 3, .. }), "{err}");
        let err = store_from("[pg]\na = 50%\n").unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { line: 2, .. }), "{err}");
    }

    #[test]
    fn vars_win_and_interpolate() {
        let store = store_from("[pg]\na = %%(name)s\nname = section\n").unwrap();
        let vars = HashMap::from([("name".to_owned(), "server".to_owned())]);
        assert_eq!(
            store.get("pg", "a", &vars).unwrap().as_deref(),
            Some("server")
        );
        assert_eq!(
            store.get("pg", "name", &vars).unwrap().as_deref(),
            Some("server")
        );
    }
}
