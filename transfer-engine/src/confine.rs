//! Confinement of paths that come from a peer: the one place that decides the path grammar.
//!
//! A peer names files as absolute paths below one of the roots the local side allows (`barsync
//! serve --root DIR`), or as relative paths inside a tree. [`RelativePath`] accepts only plain
//! components: no empty component, no `.` or `..`, no NUL or control characters, at most
//! [`MAX_PATH_LEN`] bytes. Files are then opened one component at a time from the root's
//! directory handle with `O_NOFOLLOW`, so a symlink anywhere below the root, planted or not,
//! can never lead outside it.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{openat, Mode, OFlags, CWD};

/// Longest path accepted from a peer, in bytes.
pub const MAX_PATH_LEN: usize = 4096;

/// Why a path from a peer was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    /// The path breaks the grammar.
    #[error("refused path {path:?}: {reason}")]
    Invalid { path: String, reason: &'static str },
    /// The path is not below any allowed root.
    #[error("refused path {path:?}: not below any root this side serves ({roots})")]
    OutsideRoots { path: String, roots: String },
}

/// A validated relative path made of plain components.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelativePath(String);

impl RelativePath {
    /// Validates `path` (the empty string is the tree's root itself).
    pub fn new(path: &str) -> Result<RelativePath, PathError> {
        let invalid = |reason| PathError::Invalid {
            path: path.to_string(),
            reason,
        };
        if path.len() > MAX_PATH_LEN {
            return Err(invalid("longer than 4096 bytes"));
        }
        if path.starts_with('/') {
            return Err(invalid("absolute"));
        }
        if path.chars().any(|c| c.is_control()) {
            return Err(invalid("contains a NUL or control character"));
        }
        if !path.is_empty() {
            for component in path.split('/') {
                match component {
                    "" => return Err(invalid("empty component")),
                    "." | ".." => return Err(invalid("`.` or `..` component")),
                    _ => {}
                }
            }
        }
        Ok(RelativePath(path.to_string()))
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The components, in order.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|c| !c.is_empty())
    }

    /// `self/name`, validating `name` as one component.
    pub fn join(&self, name: &str) -> Result<RelativePath, PathError> {
        if name.contains('/') {
            return Err(PathError::Invalid {
                path: name.to_string(),
                reason: "a name contains `/`",
            });
        }
        if self.0.is_empty() {
            RelativePath::new(name)
        } else {
            RelativePath::new(&format!("{}/{}", self.0, name))
        }
    }
}

/// The directories a side agrees to serve.
#[derive(Clone, Debug)]
pub struct Roots(Vec<Root>);

/// A root as given (peers may name it so) and as resolved (where it is opened).
#[derive(Clone, Debug)]
struct Root {
    given: PathBuf,
    resolved: PathBuf,
}

impl Roots {
    /// Roots from the command line (trusted): relative ones are made absolute against the current
    /// directory, and symlinks in the roots themselves are resolved once, here.
    pub fn new(roots: Vec<PathBuf>) -> io::Result<Roots> {
        let mut resolved = Vec::with_capacity(roots.len());
        for root in roots {
            let absolute = std::fs::canonicalize(&root)
                .map_err(|e| io::Error::new(e.kind(), format!("root {}: {e}", root.display())))?;
            let given = if root.is_absolute() {
                root
            } else {
                absolute.clone()
            };
            resolved.push(Root {
                given,
                resolved: absolute,
            });
        }
        if resolved.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no root given"));
        }
        Ok(Roots(resolved))
    }

    /// Splits a path from a peer into its root and the validated rest. An absolute path must lie
    /// below one of the roots (spelled as given or as resolved); a relative one names a path
    /// below the first root.
    pub fn resolve(&self, path: &str) -> Result<(&Path, RelativePath), PathError> {
        let outside = || PathError::OutsideRoots {
            path: path.to_string(),
            roots: self
                .0
                .iter()
                .map(|r| r.resolved.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        };
        if !path.starts_with('/') {
            return Ok((
                self.0[0].resolved.as_path(),
                RelativePath::new(path.trim_end_matches('/'))?,
            ));
        }
        for root in &self.0 {
            for spelling in [&root.resolved, &root.given] {
                let root_text = spelling.to_string_lossy();
                let root_text = root_text.trim_end_matches('/');
                if let Some(rest) = path.strip_prefix(root_text) {
                    if rest.is_empty() || rest.starts_with('/') {
                        let rest = rest.trim_start_matches('/').trim_end_matches('/');
                        return Ok((root.resolved.as_path(), RelativePath::new(rest)?));
                    }
                }
            }
        }
        Err(outside())
    }
}

/// Opens `relative` below `root` without following any symlink below the root.
pub fn open_below(root: &Path, relative: &RelativePath, directory: bool) -> io::Result<OwnedFd> {
    let mut dir: OwnedFd = openat(
        CWD,
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let components: Vec<&str> = relative.components().collect();
    for (index, component) in components.iter().enumerate() {
        let last = index + 1 == components.len();
        let mut flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        if !last || directory {
            flags |= OFlags::DIRECTORY;
        }
        dir = openat(&dir, *component, flags, Mode::empty()).map_err(|errno| {
            let error = io::Error::from(errno);
            if errno == rustix::io::Errno::LOOP || errno == rustix::io::Errno::NOTDIR {
                io::Error::new(
                    error.kind(),
                    format!("{error} (symlinks are not followed below a root)"),
                )
            } else {
                error
            }
        })?;
    }
    Ok(dir)
}

/// Opens a regular file below `root` (see [`open_below`]).
pub fn open_file_below(root: &Path, relative: &RelativePath) -> io::Result<File> {
    Ok(File::from(open_below(root, relative, false)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar() {
        for good in [
            "",
            "a",
            "a/b",
            "base/20240101T120000/data/PG_VERSION",
            "..a",
            "a..b",
        ] {
            assert!(RelativePath::new(good).is_ok(), "{good}");
        }
        for bad in [
            "/a",
            "a//b",
            "a/",
            "..",
            "a/../b",
            "./a",
            "a\0b",
            "a\nb",
            &"x".repeat(5000),
        ] {
            assert!(RelativePath::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn roots_resolve_by_component() {
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(base.join("barman")).unwrap();
        let root = base.join("barman").display().to_string();
        let roots = Roots::new(vec![base.join("barman")]).unwrap();
        assert_eq!(
            roots
                .resolve(&format!("{root}/pg/base"))
                .unwrap()
                .1
                .as_str(),
            "pg/base"
        );
        assert_eq!(roots.resolve(&format!("{root}/")).unwrap().1.as_str(), "");
        assert!(matches!(
            roots.resolve(&format!("{root}2/x")),
            Err(PathError::OutsideRoots { .. })
        ));
        assert!(roots.resolve(&format!("{root}/../etc/passwd")).is_err());
        assert_eq!(roots.resolve("pg/base").unwrap().1.as_str(), "pg/base");
        assert!(roots.resolve("../x").is_err());
        assert!(Roots::new(vec![base.join("missing")]).is_err());
    }

    #[test]
    fn symlinks_below_root_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/file"), b"inside").unwrap();
        std::fs::write(dir.path().join("secret"), b"outside").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("link")).unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("dirlink")).unwrap();
        assert!(open_file_below(&root, &RelativePath::new("sub/file").unwrap()).is_ok());
        assert!(open_file_below(&root, &RelativePath::new("link").unwrap()).is_err());
        assert!(open_file_below(&root, &RelativePath::new("dirlink/secret").unwrap()).is_err());
    }
}
