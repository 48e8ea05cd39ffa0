//! Reading OpenSSH client configuration files (`~/.ssh/config` or `-F FILE`) and picking the lines
//! that apply to a host alias: top-level lines and `Host` blocks whose patterns match (with `*`,
//! `?` and `!` negation, case-insensitively). `Match` blocks and `Include` are not evaluated; they
//! are reported so the caller can fall back to the real ssh client.

use std::path::{Path, PathBuf};

use crate::TransportError;

/// One `Keyword value` line of a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigLine {
    /// The keyword, lower-cased.
    pub keyword: String,
    /// The value, with surrounding quotes removed.
    pub value: String,
    /// 1-based line number in the file.
    pub line: usize,
}

#[derive(Clone, Debug)]
enum BlockCondition {
    Always,
    Host(Vec<String>),
    Match,
}

#[derive(Clone, Debug)]
struct Block {
    condition: BlockCondition,
    lines: Vec<ConfigLine>,
}

/// A parsed ssh_config file.
#[derive(Clone, Debug)]
pub struct SshConfig {
    path: PathBuf,
    blocks: Vec<Block>,
}

impl SshConfig {
    /// Reads `path`; a missing file is an empty configuration.
    pub fn load(path: &Path) -> Result<SshConfig, TransportError> {
        match std::fs::read_to_string(path) {
            Ok(text) => SshConfig::parse(&text, path),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(SshConfig {
                path: path.to_path_buf(),
                blocks: Vec::new(),
            }),
            Err(error) => Err(TransportError::SshConfig {
                path: path.display().to_string(),
                reason: error.to_string(),
            }),
        }
    }

    /// Parses config `text`; `path` is used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<SshConfig, TransportError> {
        let mut blocks = vec![Block {
            condition: BlockCondition::Always,
            lines: Vec::new(),
        }];
        for (index, raw_line) in text.lines().enumerate() {
            let line_number = index + 1;
            let line = raw_line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, value) =
                split_keyword(line).ok_or_else(|| TransportError::SshConfig {
                    path: path.display().to_string(),
                    reason: format!("line {line_number}: expected `Keyword value`"),
                })?;
            match keyword.as_str() {
                "host" => blocks.push(Block {
                    condition: BlockCondition::Host(
                        value.split_whitespace().map(str::to_string).collect(),
                    ),
                    lines: Vec::new(),
                }),
                "match" => blocks.push(Block {
                    condition: BlockCondition::Match,
                    lines: vec![ConfigLine {
                        keyword,
                        value,
                        line: line_number,
                    }],
                }),
                _ => blocks
                    .last_mut()
                    .expect("there is always a block")
                    .lines
                    .push(ConfigLine {
                        keyword,
                        value,
                        line: line_number,
                    }),
            }
        }
        Ok(SshConfig {
            path: path.to_path_buf(),
            blocks,
        })
    }

    /// The file this configuration came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The lines that apply to `alias`, in file order, and the reasons why the result may be
    /// incomplete (unevaluated `Match` blocks, `Include`).
    pub fn lines_for_host(&self, alias: &str) -> (Vec<ConfigLine>, Vec<String>) {
        let mut applicable = Vec::new();
        let mut not_evaluated = Vec::new();
        for block in &self.blocks {
            match &block.condition {
                BlockCondition::Always => applicable.extend(block.lines.iter().cloned()),
                BlockCondition::Host(patterns) => {
                    if host_matches_patterns(alias, patterns) {
                        applicable.extend(block.lines.iter().cloned());
                    }
                }
                BlockCondition::Match => not_evaluated.push(format!(
                    "{}:{}: `Match` blocks are not evaluated by the in-process transport",
                    self.path.display(),
                    block.lines[0].line
                )),
            }
        }
        let includes = applicable.iter().filter(|line| line.keyword == "include");
        for line in includes {
            not_evaluated.push(format!(
                "{}:{}: `Include` is not evaluated by the in-process transport",
                self.path.display(),
                line.line
            ));
        }
        applicable.retain(|line| line.keyword != "include");
        (applicable, not_evaluated)
    }
}

/// Splits `Keyword value`, `Keyword=value` or `Keyword = value`; the keyword is lower-cased and
/// one pair of surrounding double quotes is removed from the value.
fn split_keyword(line: &str) -> Option<(String, String)> {
    let keyword_end = line.find(|c: char| c.is_whitespace() || c == '=')?;
    let keyword = line[..keyword_end].to_ascii_lowercase();
    let mut rest = line[keyword_end..].trim_start();
    if let Some(after_equals) = rest.strip_prefix('=') {
        rest = after_equals.trim_start();
    }
    let value = rest.trim_end();
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    if keyword.is_empty() || value.is_empty() {
        return None;
    }
    Some((keyword, value.to_string()))
}

/// True when `host` matches at least one positive pattern and no negated (`!`) pattern.
pub fn host_matches_patterns(host: &str, patterns: &[String]) -> bool {
    let host = host.to_ascii_lowercase();
    let mut matched = false;
    for pattern in patterns {
        let pattern = pattern.to_ascii_lowercase();
        if let Some(negated) = pattern.strip_prefix('!') {
            if wildcard_match(negated.as_bytes(), host.as_bytes()) {
                return false;
            }
        } else if wildcard_match(pattern.as_bytes(), host.as_bytes()) {
            matched = true;
        }
    }
    matched
}

/// Glob matching with `*` (any run) and `?` (any one byte).
pub fn wildcard_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            backtrack = Some((p, t));
            p += 1;
        } else if let Some((star, star_text)) = backtrack {
            p = star + 1;
            t = star_text + 1;
            backtrack = Some((star, star_text + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_and_negation() {
        assert!(wildcard_match(b"*.example.com", b"db1.example.com"));
        assert!(wildcard_match(b"db?", b"db1"));
        assert!(!wildcard_match(b"db?", b"db12"));
        assert!(wildcard_match(b"*", b""));
        assert!(wildcard_match(b"a*b*c", b"axxbyyc"));
        assert!(!wildcard_match(b"a*b*c", b"axxbyy"));
        let patterns = vec!["*.corp".to_string(), "!secret.corp".to_string()];
        assert!(host_matches_patterns("Web.CORP", &patterns));
        assert!(!host_matches_patterns("secret.corp", &patterns));
        assert!(!host_matches_patterns("other", &patterns));
    }

    #[test]
    fn host_blocks_apply_in_file_order_and_match_is_reported() {
        let text = "# comment\nUser top\nHost pg*\n  HostName=10.0.0.5\n  Port 2222\nHost *\n  Port 22\nMatch exec true\n  User m\n";
        let config = SshConfig::parse(text, Path::new("cfg")).unwrap();
        let (lines, not_evaluated) = config.lines_for_host("pg1");
        let keywords: Vec<_> = lines
            .iter()
            .map(|l| (l.keyword.as_str(), l.value.as_str()))
            .collect();
        assert_eq!(
            keywords,
            [
                ("user", "top"),
                ("hostname", "10.0.0.5"),
                ("port", "2222"),
                ("port", "22")
            ]
        );
        assert_eq!(not_evaluated.len(), 1);
        assert!(not_evaluated[0].contains("cfg:8"));
    }

    #[test]
    fn malformed_line_is_an_error_naming_the_line() {
        let error = SshConfig::parse("Host a\nPort\n", Path::new("x")).unwrap_err();
        assert!(error.to_string().contains("line 2"), "{error}");
    }
}
