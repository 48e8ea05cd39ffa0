//! Confinement of paths that come from a peer: the one place that decides the path grammar.
//!
//! A peer names files as absolute paths below one of the roots the local side allows (`barsync
//! serve --root DIR`), or as relative paths inside a tree. [`RelativePath`] accepts only plain
//! components: no empty component, no `.` or `..`, no NUL, at most [`MAX_PATH_LEN`] bytes. Any
//! other character is legal in a name, as in the file system (a tab, a newline: rsync copies
//! them too); messages show such names escaped ([`crate::names::shown`]). Files are then opened one component at a time from the root's
//! directory handle with `O_NOFOLLOW`, so a symlink anywhere below the root, planted or not,
//! can never lead outside it.
//!
//! Writes follow the same rule: a [`Destination`] is a trusted root (chosen by this side) and a
//! validated path below it; its parent directory is reached from the root one component at a
//! time with `O_NOFOLLOW | O_DIRECTORY` ([`Destination::open_parent`]), and the file is then
//! created, renamed or linked by name inside that handle. A directory swapped for a symlink at
//! any moment makes that one file fail; nothing is ever written through the link.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{mkdirat, openat, statat, unlinkat, AtFlags, FileType, Mode, OFlags, CWD};
use rustix::io::Errno;

/// Longest path accepted from a peer, in bytes.
pub const MAX_PATH_LEN: usize = 4096;

/// Why a path from a peer was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    /// The path breaks the grammar.
    #[error("refused path {path:?}: {reason}")]
    Invalid {
        /// The path, as given.
        path: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// The path is not below any allowed root.
    #[error("refused path {path:?}: not below any root this side serves ({roots})")]
    OutsideRoots {
        /// The path, as given.
        path: String,
        /// The roots this side serves.
        roots: String,
    },
}

/// A validated relative path made of plain components. Names are bytes, as in the file
/// system: a name need not be UTF-8 ([`RelativePath::shown`] escapes it for messages).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelativePath(Vec<u8>);

impl std::fmt::Debug for RelativePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_path())
    }
}

impl RelativePath {
    /// Validates `path` (the empty string is the tree's root itself).
    pub fn new(path: &str) -> Result<RelativePath, PathError> {
        RelativePath::from_bytes(path.as_bytes())
    }

    /// Validates `path`, given as the file system's bytes.
    pub fn from_bytes(path: &[u8]) -> Result<RelativePath, PathError> {
        let invalid = |reason| PathError::Invalid {
            path: crate::names::shown_bytes(path),
            reason,
        };
        if path.len() > MAX_PATH_LEN {
            return Err(invalid("longer than 4096 bytes"));
        }
        if path.starts_with(b"/") {
            return Err(invalid("absolute"));
        }
        if path.contains(&0) {
            return Err(invalid("contains a NUL byte"));
        }
        if !path.is_empty() {
            for component in path.split(|&b| b == b'/') {
                match component {
                    b"" => return Err(invalid("empty component")),
                    b"." | b".." => return Err(invalid("`.` or `..` component")),
                    _ => {}
                }
            }
        }
        Ok(RelativePath(path.to_vec()))
    }

    /// Validates a path given as a [`Path`] (relative, plain components).
    pub fn from_path(path: &Path) -> Result<RelativePath, PathError> {
        RelativePath::from_bytes(path.as_os_str().as_bytes())
    }

    /// The path's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The path as a [`Path`] (lossless).
    pub fn as_path(&self) -> &Path {
        Path::new(OsStr::from_bytes(&self.0))
    }

    /// Whether this is the tree's root itself (the empty path).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The path as messages show it: as is when it is UTF-8 without control characters, else
    /// quoted and escaped ([`crate::names::shown_bytes`]).
    pub fn shown(&self) -> String {
        crate::names::shown_bytes(&self.0)
    }

    /// The components, in order.
    pub fn components(&self) -> impl Iterator<Item = &OsStr> {
        self.0
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .map(OsStr::from_bytes)
    }

    /// `self/name`, validating `name` as one component.
    pub fn join(&self, name: impl AsRef<OsStr>) -> Result<RelativePath, PathError> {
        let name = name.as_ref().as_bytes();
        if name.contains(&b'/') {
            return Err(PathError::Invalid {
                path: crate::names::shown_bytes(name),
                reason: "a name contains `/`",
            });
        }
        if self.0.is_empty() {
            RelativePath::from_bytes(name)
        } else {
            let mut joined = Vec::with_capacity(self.0.len() + 1 + name.len());
            joined.extend_from_slice(&self.0);
            joined.push(b'/');
            joined.extend_from_slice(name);
            RelativePath::from_bytes(&joined)
        }
    }

    /// `self/below`: a path below this one.
    pub fn join_path(&self, below: &RelativePath) -> Result<RelativePath, PathError> {
        match (self.0.is_empty(), below.0.is_empty()) {
            (_, true) => Ok(self.clone()),
            (true, false) => Ok(below.clone()),
            (false, false) => {
                let mut joined = self.0.clone();
                joined.push(b'/');
                joined.extend_from_slice(&below.0);
                RelativePath::from_bytes(&joined)
            }
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
    pub fn resolve(&self, path: &Path) -> Result<(&Path, RelativePath), PathError> {
        let bytes = path.as_os_str().as_bytes();
        let outside = || PathError::OutsideRoots {
            path: crate::names::shown_bytes(bytes),
            roots: self
                .0
                .iter()
                .map(|r| r.resolved.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        };
        if !bytes.starts_with(b"/") {
            return Ok((
                self.0[0].resolved.as_path(),
                RelativePath::from_bytes(trim_end(bytes))?,
            ));
        }
        for root in &self.0 {
            for spelling in [&root.resolved, &root.given] {
                let root_bytes = trim_end(spelling.as_os_str().as_bytes());
                if let Some(rest) = bytes.strip_prefix(root_bytes) {
                    if rest.is_empty() || rest.starts_with(b"/") {
                        let start = rest.iter().position(|&b| b != b'/').unwrap_or(rest.len());
                        let rest = trim_end(&rest[start..]);
                        return Ok((root.resolved.as_path(), RelativePath::from_bytes(rest)?));
                    }
                }
            }
        }
        Err(outside())
    }
}

/// `bytes` without its trailing slashes.
fn trim_end(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().rposition(|&b| b != b'/').map_or(0, |i| i + 1);
    &bytes[..end]
}

/// Opens `relative` below `root` without following any symlink below the root.
pub fn open_below(root: &Path, relative: &RelativePath, directory: bool) -> io::Result<OwnedFd> {
    let mut dir: OwnedFd = openat(
        CWD,
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let components: Vec<&OsStr> = relative.components().collect();
    for (index, component) in components.iter().enumerate() {
        let last = index + 1 == components.len();
        let mut flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        if !last || directory {
            flags |= OFlags::DIRECTORY;
        }
        dir = openat(&dir, *component, flags, Mode::empty()).map_err(not_followed)?;
    }
    Ok(dir)
}

/// A component below a root was a symlink (or a file) where a directory was needed.
#[derive(Debug, thiserror::Error)]
#[error("{0} (symlinks are not followed below a root)")]
struct NotFollowed(io::Error);

/// The error of a component that is a symlink or not a directory, saying so.
fn not_followed(errno: Errno) -> io::Error {
    let error = io::Error::from(errno);
    if errno == Errno::LOOP || errno == Errno::NOTDIR {
        io::Error::new(error.kind(), NotFollowed(error))
    } else {
        error
    }
}

/// Whether `error` says a symlink or file stood where a directory belongs below a root.
pub fn is_not_followed(error: &io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.is::<NotFollowed>())
        || matches!(error.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR))
}

/// What [`make_dirs_below`] does with a symlink or file where a directory belongs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InTheWay {
    /// Remove it (`unlinkat`, never followed) and create the directory.
    Replace,
    /// Fail (the error says symlinks are not followed).
    Refuse,
}

/// Opens the directory `relative` below `root`, creating what is missing (`mkdirat`, mode
/// 0777 less the umask), one component at a time without following symlinks; `in_the_way`
/// says what happens to a symlink or file where a directory belongs.
pub fn make_dirs_below(
    root: &Path,
    relative: &RelativePath,
    in_the_way: InTheWay,
) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut dir: OwnedFd = openat(CWD, root, flags.difference(OFlags::NOFOLLOW), Mode::empty())?;
    for component in relative.components() {
        dir = match openat(&dir, component, flags, Mode::empty()) {
            Ok(child) => child,
            Err(errno) => {
                match errno {
                    Errno::NOENT => {}
                    Errno::LOOP | Errno::NOTDIR => {
                        let stat = statat(&dir, component, AtFlags::SYMLINK_NOFOLLOW)?;
                        if in_the_way == InTheWay::Refuse
                            || FileType::from_raw_mode(stat.st_mode) == FileType::Directory
                        {
                            return Err(not_followed(errno));
                        }
                        unlinkat(&dir, component, AtFlags::empty())?;
                    }
                    other => return Err(other.into()),
                }
                match mkdirat(&dir, component, Mode::from_raw_mode(0o777)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(other) => return Err(other.into()),
                }
                openat(&dir, component, flags, Mode::empty()).map_err(not_followed)?
            }
        };
    }
    Ok(dir)
}

/// Where a received file is written: a trusted root (opened as this side gave it) and a
/// validated, non-empty path below it, never followed through a symlink.
///
/// [`Destination::trusted`] makes one of a path this side chose whole (its parent is the root):
/// for callers whose destination comes from no peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    root: PathBuf,
    relative: RelativePath,
}

impl Destination {
    /// `relative` below the trusted `root`; the empty path (the root itself) is refused.
    pub fn new(root: impl Into<PathBuf>, relative: RelativePath) -> Result<Destination, PathError> {
        if relative.is_empty() {
            return Err(PathError::Invalid {
                path: String::new(),
                reason: "names the root itself, not a file below it",
            });
        }
        Ok(Destination {
            root: root.into(),
            relative,
        })
    }

    /// A path chosen by this side, trusted whole: the root is its parent directory.
    pub fn trusted(path: &Path) -> Result<Destination, PathError> {
        let invalid = |reason| PathError::Invalid {
            path: path.display().to_string(),
            reason,
        };
        let name = path
            .file_name()
            .ok_or_else(|| invalid("has no file name"))?;
        let root = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Destination::new(root, RelativePath::from_bytes(name.as_bytes())?)
    }

    /// The trusted root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path below the root.
    pub fn relative(&self) -> &RelativePath {
        &self.relative
    }

    /// The whole path (for messages and for reading; never written through).
    pub fn path(&self) -> PathBuf {
        self.root.join(self.relative.as_path())
    }

    /// The last component: the name of the file in its parent directory.
    pub fn file_name(&self) -> &OsStr {
        self.relative.components().last().expect("not empty")
    }

    /// The path of the parent directory below the root.
    pub fn parent(&self) -> RelativePath {
        let bytes = self.relative.as_bytes();
        RelativePath(bytes[..bytes.iter().rposition(|&b| b == b'/').unwrap_or(0)].to_vec())
    }

    /// Opens the parent directory from the root without following any symlink below it.
    pub fn open_parent(&self) -> io::Result<OwnedFd> {
        open_below(&self.root, &self.parent(), true)
    }

    /// Whether `path` is a file of the same directory (read through [`Destination::open_parent`]
    /// then, by name), and its name.
    pub fn sibling_name<'p>(&self, path: &'p Path) -> Option<&'p OsStr> {
        let parent = self.path();
        let parent = parent.parent()?;
        (path.parent()? == parent)
            .then(|| path.file_name())
            .flatten()
            .filter(|name| RelativePath::from_bytes(name.as_bytes()).is_ok())
    }
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
            "a\nb",
            "tab\there/new\nline\r\u{1b}[31m",
            " leading space",
        ] {
            assert!(RelativePath::new(good).is_ok(), "{good:?}");
        }
        for bad in [
            "/a",
            "a//b",
            "a/",
            "..",
            "a/../b",
            "./a",
            "a\0b",
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
        let resolve = |path: &str| roots.resolve(Path::new(path)).map(|(_, rest)| rest);
        assert_eq!(
            resolve(&format!("{root}/pg/base")).unwrap().as_bytes(),
            b"pg/base"
        );
        assert!(resolve(&format!("{root}/")).unwrap().is_empty());
        assert!(matches!(
            resolve(&format!("{root}2/x")),
            Err(PathError::OutsideRoots { .. })
        ));
        assert!(resolve(&format!("{root}/../etc/passwd")).is_err());
        assert_eq!(resolve("pg/base").unwrap().as_bytes(), b"pg/base");
        assert!(resolve("../x").is_err());
        // Names are bytes: a path that is not UTF-8 resolves as it is.
        let latin1 = Path::new(OsStr::from_bytes(b"pg/caf\xe9"));
        let (_, rest) = roots.resolve(latin1).unwrap();
        assert_eq!(rest.as_bytes(), b"pg/caf\xe9");
        assert_eq!(rest.shown(), r#""pg/caf\xE9""#);
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

    #[test]
    fn destinations_are_reached_without_following_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        let made = make_dirs_below(
            dir.path(),
            &RelativePath::new("root/a/b").unwrap(),
            InTheWay::Replace,
        );
        assert!(made.is_ok());
        let file = Destination::new(&root, RelativePath::new("a/b/f").unwrap()).unwrap();
        assert_eq!(file.path(), root.join("a/b/f"));
        assert_eq!(file.file_name(), "f");
        assert_eq!(file.parent().as_bytes(), b"a/b");
        assert!(file.open_parent().is_ok());
        assert_eq!(
            file.sibling_name(&root.join("a/b/.f.barsync-partial")),
            Some(OsStr::new(".f.barsync-partial"))
        );
        assert_eq!(file.sibling_name(&root.join("a/f")), None);
        assert!(Destination::new(&root, RelativePath::new("").unwrap()).is_err());
        let top = Destination::trusted(&root.join("top")).unwrap();
        assert_eq!(
            (top.root(), top.relative().as_bytes()),
            (root.as_path(), &b"top"[..])
        );

        // `a` swapped for a symlink: the parent cannot be opened, nothing is followed.
        std::fs::rename(root.join("a"), dir.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("a")).unwrap();
        std::fs::create_dir(outside.join("b")).unwrap();
        let error = file.open_parent().unwrap_err();
        assert!(error.to_string().contains("not followed"), "{error}");
        // Creating directories refuses it, or replaces it.
        let refused = make_dirs_below(&root, &RelativePath::new("a/b").unwrap(), InTheWay::Refuse);
        assert!(refused.is_err());
        assert!(root.join("a").symlink_metadata().unwrap().is_symlink());
        make_dirs_below(&root, &RelativePath::new("a/b").unwrap(), InTheWay::Replace).unwrap();
        assert!(root.join("a").symlink_metadata().unwrap().is_dir());
        assert!(
            outside.join("b").is_dir(),
            "the link's target is left alone"
        );
        assert!(file.open_parent().is_ok());
    }
}
