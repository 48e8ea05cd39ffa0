//! Barman's check for directories shared between or within servers (`_check_conflicting_paths`):
//! a server whose own directories collide is disabled; directories shared by two servers are
//! global errors that stop every command.

use std::path::{Component, Path, PathBuf};

use super::ServerConfig;

/// The directory options Barman compares, in the (sorted) order it compares them.
const LABELS: [&str; 6] = [
    "backup_directory",
    "basebackups_directory",
    "errors_directory",
    "incoming_wals_directory",
    "streaming_wals_directory",
    "wals_directory",
];

/// What the check found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PathConflicts {
    /// Per server: messages of collisions among its own directories (the server is disabled).
    pub within: Vec<(String, String)>,
    /// Collisions between two servers (`ERROR:` lines, the command stops).
    pub between: Vec<String>,
}

/// Runs the check over `servers` (any order; Barman walks them sorted by name).
pub fn find_conflicts(servers: &[ServerConfig]) -> PathConflicts {
    let mut sorted: Vec<&ServerConfig> = servers.iter().collect();
    sorted.sort_by(|a, b| a.name().cmp(b.name()));
    let mut seen: Vec<(PathBuf, &str, &str)> = Vec::new();
    let mut conflicts = PathConflicts::default();
    for server in sorted {
        for label in LABELS {
            let Some(path) = server.text(label) else {
                continue;
            };
            if path.contains("://") {
                continue;
            }
            let real = realpath(Path::new(path));
            let shown = if real == Path::new(path) {
                path.to_owned()
            } else {
                format!("{path} (symlink to: {})", real.display())
            };
            match seen.iter().find(|(p, _, _)| *p == real) {
                None => seen.push((real, label, server.name())),
                Some((_, first_label, first_server)) if *first_server == server.name() => {
                    conflicts.within.push((
                        server.name().to_owned(),
                        format!("Conflicting path: {label}={shown} conflicts with '{first_label}' for server '{first_server}'"),
                    ));
                }
                Some((_, first_label, first_server)) => conflicts.between.push(format!(
                    "Conflicting path: {label}={shown} for server '{}' conflicts with '{first_label}' for server '{first_server}'",
                    server.name()
                )),
            }
        }
    }
    conflicts
}

/// `os.path.realpath`: symlinks of the existing part resolved, the rest normalised.
pub fn realpath(path: &Path) -> PathBuf {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let mut resolved = PathBuf::from("/");
    for component in absolute.components() {
        match component {
            Component::RootDir | Component::Prefix(_) | Component::CurDir => {}
            Component::ParentDir => {
                resolved.pop();
            }
            Component::Normal(name) => {
                resolved.push(name);
                if let Ok(canonical) = std::fs::canonicalize(&resolved) {
                    resolved = canonical;
                }
            }
        }
    }
    resolved
}
