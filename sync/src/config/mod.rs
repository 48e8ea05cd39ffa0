//! Barman's configuration as Barman reads it: the `-c` file or the default locations, the
//! `[barman]` globals, `configuration_files_directory` includes, one section per server (model
//! sections skipped), value quoting and `None`, the per-server [`ServerConfig`], `barman_user`
//! (and whether the process runs as it), and the [`ConfigWarning`]s: every setting Barman
//! ignores or misreads.

mod conflicts;
mod ini;
mod keys;
mod options;
mod server;
mod warnings;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use conflicts::{realpath, PathConflicts};
pub use ini::Entry;
pub use options::{parse_boolean, OptionValue};
pub use server::{RetentionPolicy, ReuseBackup, ServerConfig, WindowUnit};
pub use warnings::{ConfigWarning, Problem};

use crate::python::literal::repr_str;

/// Barman's `barman_user` when the configuration does not set one.
pub const DEFAULT_USER: &str = "barman";

/// Where Barman looks when no `-c` is given, in order.
pub const DEFAULT_CONFIG_FILES: [&str; 3] = [
    "~/.barman.conf",
    "/etc/barman.conf",
    "/etc/barman/barman.conf",
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("Configuration file '{}' does not exist", .0.display())]
    Missing(PathBuf),
    #[error("Could not find any configuration file at default locations.")]
    NoDefaultFile,
    #[error("cannot read configuration file {}: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {message}", file.display())]
    Syntax {
        file: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}: the configuration has no [barman] section", .0.display())]
    NoGlobalSection(PathBuf),
    #[error("the configuration file {0} contains a not empty [barman] section")]
    GlobalSectionInInclude(String),
    #[error("the reserved word 'all' is not allowed as server name.Please rename it.")]
    ReservedServerName,
    /// Barman's refusal (`ERROR: please run barman as %r user`) when another user than
    /// `barman_user` runs it.
    #[error("please run barman as {} user", repr_str(.0))]
    WrongUser(String),
    #[error("the configured user {} does not exists", repr_str(.0))]
    UnknownUser(String),
}

/// The whole Barman configuration.
#[derive(Debug, Clone)]
pub struct Config {
    store: ini::IniStore,
    config_file: PathBuf,
    pub barman_home: Option<String>,
    pub barman_lock_directory: Option<String>,
    pub lock_directory_cleanup: bool,
    /// The system user Barman runs as (`barman_user`, default `barman`).
    pub barman_user: String,
}

impl Config {
    /// Loads `path` (as `barman -c`), or the first existing default location when `None`,
    /// then the `configuration_files_directory` includes.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut store = ini::IniStore::default();
        let config_file = match path {
            Some(path) => {
                if !path.exists() {
                    return Err(ConfigError::Missing(path.to_owned()));
                }
                path.to_owned()
            }
            None => DEFAULT_CONFIG_FILES
                .iter()
                .map(|candidate| expand_user(candidate))
                .find(|candidate| candidate.exists())
                .ok_or(ConfigError::NoDefaultFile)?,
        };
        store.read_file(&expand_user(&config_file.to_string_lossy()))?;
        if !store.has_section("barman") {
            return Err(ConfigError::NoGlobalSection(config_file));
        }
        let mut config = Config {
            store,
            config_file,
            barman_home: None,
            barman_lock_directory: None,
            lock_directory_cleanup: true,
            barman_user: DEFAULT_USER.to_owned(),
        };
        config.read_globals()?;
        config.load_includes()?;
        Ok(config)
    }

    fn read_globals(&mut self) -> Result<(), ConfigError> {
        let no_vars = HashMap::new();
        self.barman_home = self.get_value_with("barman", "barman_home", &no_vars, None)?;
        self.barman_lock_directory = self
            .get_value_with("barman", "barman_lock_directory", &no_vars, None)?
            .filter(|v| !v.is_empty())
            .or_else(|| self.barman_home.clone());
        let cleanup = self.get_value_with("barman", "lock_directory_cleanup", &no_vars, None)?;
        self.lock_directory_cleanup = parse_boolean(
            cleanup
                .as_deref()
                .filter(|v| !v.is_empty())
                .unwrap_or("true"),
        )
        .unwrap_or(true);
        self.barman_user = self
            .get_value_with("barman", "barman_user", &no_vars, None)?
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| DEFAULT_USER.to_owned());
        Ok(())
    }

    /// Barman's `drop_privileges` check, without the switch: `Ok` when the process runs as
    /// `barman_user`, else Barman's error. (Barman started as root switches to that user;
    /// barsync refuses instead, so that it never leaves root-owned files in Barman's tree.)
    pub fn check_user(&self) -> Result<(), ConfigError> {
        // SAFETY: getuid cannot fail and has no preconditions.
        let uid = unsafe { libc::getuid() };
        check_user_uid(&self.barman_user, uid)
    }

    /// `*.conf` files of `configuration_files_directory`, sorted; none may change `[barman]`.
    fn load_includes(&mut self) -> Result<(), ConfigError> {
        let Some(directory) = self.get_value_with(
            "barman",
            "configuration_files_directory",
            &HashMap::new(),
            None,
        )?
        else {
            return Ok(());
        };
        if directory.is_empty() {
            return Ok(());
        }
        let directory = expand_user(&directory);
        let Ok(entries) = std::fs::read_dir(&directory) else {
            return Ok(());
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                name.ends_with(".conf") && !name.starts_with('.')
            })
            .collect();
        files.sort();
        for file in files {
            if !file.is_file() {
                continue;
            }
            let globals_before: Vec<(String, String)> = self.global_items();
            self.store.read_file(&file)?;
            if self.global_items() != globals_before {
                let name = file
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                return Err(ConfigError::GlobalSectionInInclude(name));
            }
        }
        Ok(())
    }

    fn global_items(&self) -> Vec<(String, String)> {
        let mut items: Vec<(String, String)> = self
            .store
            .options("barman")
            .iter()
            .map(|(key, entry)| (key.clone(), entry.value.clone()))
            .collect();
        items.sort();
        items
    }

    /// `[barman]`'s `log_file` and `log_level`, as Barman reads them: no file when unset,
    /// empty or `None`; the level by name or number, `INFO` for anything else.
    pub fn log_file(&self) -> Option<LogFile> {
        let get = |key: &str| {
            self.store
                .options("barman")
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, entry)| entry.value.trim().trim_matches('"').to_owned())
        };
        let path = get("log_file").filter(|f| !f.is_empty() && f != "None")?;
        Some(LogFile {
            path: PathBuf::from(path),
            level: LogLevel::parse(get("log_level").as_deref()),
        })
    }

    /// The file given with `-c` or found at a default location.
    pub fn config_file(&self) -> &Path {
        &self.config_file
    }

    /// Server names in section order (`[barman]` and model sections excluded).
    pub fn server_names(&self) -> Vec<String> {
        self.store
            .section_names()
            .filter(|name| *name != "barman")
            .filter(|name| !self.is_model(name))
            .map(str::to_owned)
            .collect()
    }

    fn is_model(&self, section: &str) -> bool {
        self.store
            .entry(section, "model")
            .is_some_and(|entry| parse_boolean(&entry.value).unwrap_or(false))
    }

    /// The warnings Barman prints (without `WARNING: `) on every command, in its order: unknown
    /// options of `[barman]`, then for each server the unknown options of its section and its
    /// invalid values. Barman reads all servers and prints these whatever the command is about.
    pub fn all_option_warnings(&self) -> Result<Vec<String>, ConfigError> {
        let global = warnings::unknown_keys("barman", self.store.options("barman"));
        let servers = self.all_servers_unadjusted()?;
        let server_warnings = servers.iter().flat_map(|server| &server.warnings);
        Ok(global
            .iter()
            .chain(server_warnings)
            .filter_map(ConfigWarning::barman_line)
            .collect())
    }

    /// Everything Barman ignores or misreads in the configuration, each once, in file and
    /// line order: unknown options (with the option a typo resembles), invalid values, values
    /// the server set-up replaces, and values with what looks like an inline comment.
    pub fn warnings(&self) -> Result<Vec<ConfigWarning>, ConfigError> {
        Ok(self.collect_warnings(&self.servers()?))
    }

    fn collect_warnings(&self, servers: &[ServerConfig]) -> Vec<ConfigWarning> {
        let mut found = warnings::unknown_keys("barman", self.store.options("barman"));
        found.extend(servers.iter().flat_map(|s| s.warnings.iter().cloned()));
        for section in self.store.section_names() {
            for (key, entry) in self.store.options(section) {
                if let Some(comment) = warnings::inline_comment(&entry.value) {
                    let problem = Problem::InlineComment { comment };
                    let warning =
                        ConfigWarning::new(Some(entry), section, key, &entry.value, problem);
                    found.push(warning);
                }
            }
        }
        let mut unique: Vec<ConfigWarning> = Vec::new();
        for warning in found {
            let seen = unique.iter().any(|w| {
                w.location.is_some()
                    && w.location == warning.location
                    && w.key == warning.key
                    && w.problem == warning.problem
            });
            if !seen {
                unique.push(warning);
            }
        }
        // Files in the order they were read, then lines; defaults last.
        let files: Vec<PathBuf> = self.store.files().to_vec();
        unique.sort_by_key(|w| match &w.location {
            Some((file, line)) => (
                files.iter().position(|f| f == file).unwrap_or(usize::MAX),
                *line,
            ),
            None => (usize::MAX, usize::MAX),
        });
        unique
    }

    /// The configuration of server `name`, adjusted as Barman's `Server` set-up does.
    /// `None` when there is no such server section.
    pub fn server(&self, name: &str) -> Result<Option<ServerConfig>, ConfigError> {
        if name == "barman" || !self.server_names().iter().any(|n| n == name) {
            return Ok(None);
        }
        if name == "all" {
            return Err(ConfigError::ReservedServerName);
        }
        Ok(self
            .servers()?
            .into_iter()
            .find(|server| server.name() == name))
    }

    /// Every server, adjusted as Barman's `Server` set-up does, in section order.
    pub fn servers(&self) -> Result<Vec<ServerConfig>, ConfigError> {
        let mut servers = self.all_servers_unadjusted()?;
        let conflicts = conflicts::find_conflicts(&servers);
        for server in &mut servers {
            let reasons: Vec<String> = conflicts
                .within
                .iter()
                .filter(|(owner, _)| owner == server.name())
                .map(|(_, message)| message.clone())
                .collect();
            if !reasons.is_empty() {
                server.disabled_reasons.extend(reasons);
                server.disable_for_conflicts();
            }
            server.apply_server_setup();
        }
        let all = self.collect_warnings(&servers);
        for server in &mut servers {
            server.config_warnings = all
                .iter()
                .filter(|w| w.section == server.name() || w.section == "barman")
                .cloned()
                .collect();
        }
        Ok(servers)
    }

    /// Directories shared by two servers: Barman prints each as an error and stops.
    pub fn global_path_conflicts(&self) -> Result<Vec<String>, ConfigError> {
        Ok(conflicts::find_conflicts(&self.all_servers_unadjusted()?).between)
    }

    fn all_servers_unadjusted(&self) -> Result<Vec<ServerConfig>, ConfigError> {
        self.server_names()
            .iter()
            .filter(|name| name.as_str() != "all")
            .map(|name| ServerConfig::build(self, name))
            .collect()
    }

    /// `Config.get`: a value from `section` (with ConfigParser `vars`), `None` when absent;
    /// the literal `None` becomes `""` and one level of matching quotes is removed.
    pub(crate) fn get_value(
        &self,
        section: &str,
        key: &str,
        vars: &HashMap<String, String>,
    ) -> Result<Option<String>, ConfigError> {
        self.get_value_with(section, key, vars, Some(""))
    }

    fn get_value_with(
        &self,
        section: &str,
        key: &str,
        vars: &HashMap<String, String>,
        none_value: Option<&str>,
    ) -> Result<Option<String>, ConfigError> {
        let Some(value) = self.store.get(section, key, vars)? else {
            return Ok(None);
        };
        if value == "None" {
            return Ok(none_value.map(str::to_owned));
        }
        Ok(Some(strip_quotes(&value).to_owned()))
    }

    /// Every section with its options as stored after reading the files (keys lower-cased,
    /// values interpolated once, as ConfigParser holds them), unknown options included.
    pub fn sections(&self) -> Vec<(String, Vec<(String, String)>)> {
        self.store
            .section_names()
            .map(|section| {
                let options = self.store.options(section).iter();
                let options = options.map(|(key, entry)| (key.clone(), entry.value.clone()));
                (section.to_owned(), options.collect())
            })
            .collect()
    }

    /// Where an option's effective value was read (file and line), if it was set in a file.
    pub fn source(&self, section: &str, key: &str) -> Option<&Entry> {
        self.store
            .entry(section, key)
            .or_else(|| self.store.entry("barman", key))
    }
}

/// `Config._QUOTE_RE = ^(["'])(.*)\1$`: one pair of matching quotes around a one-line value.
fn strip_quotes(value: &str) -> &str {
    let bytes = value.as_bytes();
    if bytes.len() >= 2
        && (bytes[0] == b'"' || bytes[0] == b'\'')
        && bytes[bytes.len() - 1] == bytes[0]
        && !value.contains('\n')
    {
        &value[1..value.len() - 1]
    } else {
        value
    }
}

/// `Ok` when `user` exists and has uid `uid`.
fn check_user_uid(user: &str, uid: libc::uid_t) -> Result<(), ConfigError> {
    match user_uid(user) {
        None => Err(ConfigError::UnknownUser(user.to_owned())),
        Some(found) if found == uid => Ok(()),
        Some(_) => Err(ConfigError::WrongUser(user.to_owned())),
    }
}

/// `pwd.getpwnam(user).pw_uid`, `None` when there is no such user.
fn user_uid(user: &str) -> Option<libc::uid_t> {
    let name = std::ffi::CString::new(user).ok()?;
    let mut buffer = vec![0 as libc::c_char; 16 * 1024];
    loop {
        // SAFETY: every pointer is to a live local of the right type; getpwnam_r writes only
        // into `entry` and `buffer` (of the length given), and `result` points into them.
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: as above.
        let rc = unsafe {
            libc::getpwnam_r(
                name.as_ptr(),
                &mut entry,
                buffer.as_mut_ptr(),
                buffer.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buffer.len() < 1 << 20 {
            buffer.resize(buffer.len() * 2, 0);
            continue;
        }
        return (rc == 0 && !result.is_null()).then_some(entry.pw_uid);
    }
}

/// `os.path.expanduser` for a leading `~/` (or a lone `~`).
fn expand_user(path: &str) -> PathBuf {
    let home = std::env::var_os("HOME");
    match (path.strip_prefix('~'), home) {
        (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
            let mut expanded = PathBuf::from(home);
            expanded.push(rest.trim_start_matches('/'));
            expanded
        }
        _ => PathBuf::from(path),
    }
}

/// Where Barman's log goes (`[barman] log_file`), and from which level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFile {
    pub path: PathBuf,
    pub level: LogLevel,
}

/// Barman's `log_level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    Warning,
    Error,
}

impl LogLevel {
    /// `DEBUG`, `INFO`, `WARNING`, `ERROR`, `CRITICAL` (any case) or 10 to 50; anything else
    /// (unset included) is `INFO`, as Barman falls back.
    pub fn parse(text: Option<&str>) -> LogLevel {
        match text.map(|t| t.trim().to_ascii_uppercase()).as_deref() {
            Some("DEBUG") | Some("10") => LogLevel::Debug,
            Some("WARNING") | Some("WARN") | Some("30") => LogLevel::Warning,
            Some("ERROR") | Some("CRITICAL") | Some("40") | Some("50") => LogLevel::Error,
            _ => LogLevel::Info,
        }
    }
}

#[cfg(test)]
mod tests;
