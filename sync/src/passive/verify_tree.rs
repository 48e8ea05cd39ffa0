//! The last check before a backup is saved DONE: the published tree, walked through directory
//! handles without following any symlink, is what the primary listed.
//!
//! Every directory the primary listed must be a real directory (a symlink swapped in for one
//! during the copy would have sent files elsewhere), every file a regular file of the listed
//! size, and no temporary name of an unfinished transfer (`.NAME.barsync-…`) may remain. Each
//! directory is opened from its parent's handle with `O_NOFOLLOW`, as
//! [`transfer_engine::confine`] does, so what is checked is the tree itself, not where links
//! lead. Entries the primary did not list are otherwise left alone.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{openat, statat, AtFlags, Dir, FileType, Mode, OFlags, CWD};
use rustix::io::Errno;
use transfer_engine::confine::RelativePath;

/// One way the published tree differs from what the primary listed.
#[derive(Debug, thiserror::Error)]
pub enum TreeProblem {
    #[error("{} is missing", path.display())]
    Missing { path: PathBuf },
    #[error("{} is a symbolic link where the backup has a directory", path.display())]
    LinkForDirectory { path: PathBuf },
    #[error("{} is not a directory ({found})", path.display())]
    NotADirectory { path: PathBuf, found: &'static str },
    #[error("{} is not a regular file ({found})", path.display())]
    NotAFile { path: PathBuf, found: &'static str },
    #[error("{} has {found} bytes where the primary listed {expected}", path.display())]
    WrongSize {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("{} is the temporary file of an unfinished transfer", path.display())]
    Temporary { path: PathBuf },
    #[error("{}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Why a backup's tree is not ready to be DONE: every problem found, first first.
#[derive(Debug, thiserror::Error)]
#[error("{}{}", problems[0], more(problems.len()))]
pub struct TreeMismatch {
    pub problems: Vec<TreeProblem>,
}

fn more(count: usize) -> String {
    match count {
        0 | 1 => String::new(),
        2 => " (and 1 more problem)".to_owned(),
        n => format!(" (and {} more problems)", n - 1),
    }
}

/// What the primary listed, relative to the backup's directory.
#[derive(Debug, Default, Clone)]
pub struct ExpectedTree {
    /// Children of each directory, by their bytes (empty: the backup's directory itself).
    children: BTreeMap<Vec<u8>, BTreeMap<OsString, Expected>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expected {
    Directory,
    File { size: u64 },
}

impl ExpectedTree {
    /// Adds a directory (and its parents).
    pub fn directory(&mut self, path: &RelativePath) {
        self.insert(path.as_bytes(), Expected::Directory);
    }

    /// Adds a file of `size` bytes (and its parents).
    pub fn file(&mut self, path: &RelativePath, size: u64) {
        self.insert(path.as_bytes(), Expected::File { size });
    }

    fn insert(&mut self, path: &[u8], what: Expected) {
        self.children.entry(Vec::new()).or_default();
        if path.is_empty() {
            return;
        }
        let (parent, name) = match path.iter().rposition(|&b| b == b'/') {
            Some(at) => (&path[..at], &path[at + 1..]),
            None => (&b""[..], path),
        };
        let name = OsStr::from_bytes(name);
        if what == Expected::Directory {
            self.children.entry(path.to_vec()).or_default();
        }
        let siblings = self.children.entry(parent.to_vec()).or_default();
        if siblings.get(name) != Some(&Expected::Directory) {
            siblings.insert(name.to_owned(), what);
        }
        if !parent.is_empty() {
            self.insert(parent, Expected::Directory);
        }
    }
}

/// Whether `name` is a temporary name of the engine (`.NAME.barsync-XXXX`, a kept partial
/// transfer `.NAME.barsync-partial` included).
pub fn is_temporary_name(name: &OsStr) -> bool {
    let name = name.as_bytes();
    name.starts_with(b".") && name.windows(MARK.len()).any(|w| w == MARK)
}

const MARK: &[u8] = b".barsync-";

/// Walks `destination` (a backup's directory, itself never a symlink) and checks it holds
/// `expected`.
pub fn verify_tree(destination: &Path, expected: &ExpectedTree) -> Result<(), TreeMismatch> {
    let mut problems = Vec::new();
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match openat(CWD, destination, flags, Mode::empty()) {
        Ok(root) => walk(&root, destination, b"", expected, &mut problems),
        Err(errno) => problems.push(directory_problem(CWD, destination, destination, errno)),
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(TreeMismatch { problems })
    }
}

fn walk(
    dir: &OwnedFd,
    path: &Path,
    relative: &[u8],
    expected: &ExpectedTree,
    problems: &mut Vec<TreeProblem>,
) {
    let empty = BTreeMap::new();
    let children = expected.children.get(relative).unwrap_or(&empty);
    match Dir::read_from(dir) {
        Ok(listing) => {
            for entry in listing {
                let entry = match entry {
                    Ok(entry) => entry,
                    Err(errno) => {
                        problems.push(TreeProblem::Unreadable {
                            path: path.to_path_buf(),
                            source: errno.into(),
                        });
                        break;
                    }
                };
                let name = OsStr::from_bytes(entry.file_name().to_bytes());
                if is_temporary_name(name) && !children.contains_key(name) {
                    problems.push(TreeProblem::Temporary {
                        path: path.join(name),
                    });
                }
            }
        }
        Err(errno) => problems.push(TreeProblem::Unreadable {
            path: path.to_path_buf(),
            source: errno.into(),
        }),
    }
    for (name, what) in children {
        let child = path.join(name);
        let child_relative = if relative.is_empty() {
            name.as_bytes().to_vec()
        } else {
            [relative, b"/", name.as_bytes()].concat()
        };
        match what {
            Expected::File { size } => {
                if let Some(problem) = file_problem(dir, name, &child, *size) {
                    problems.push(problem);
                }
            }
            Expected::Directory => {
                let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                match openat(dir, name.as_os_str(), flags, Mode::empty()) {
                    Ok(handle) => walk(&handle, &child, &child_relative, expected, problems),
                    Err(errno) => {
                        problems.push(directory_problem(dir, name.as_os_str(), &child, errno))
                    }
                }
            }
        }
    }
}

/// What is wrong with a regular file expected at `name` in `dir`, if anything.
fn file_problem(dir: &OwnedFd, name: &OsStr, path: &Path, size: u64) -> Option<TreeProblem> {
    match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(errno) if errno == Errno::NOENT => Some(TreeProblem::Missing {
            path: path.to_path_buf(),
        }),
        Err(errno) => Some(TreeProblem::Unreadable {
            path: path.to_path_buf(),
            source: errno.into(),
        }),
        Ok(stat) => {
            let kind = FileType::from_raw_mode(stat.st_mode);
            if kind != FileType::RegularFile {
                return Some(TreeProblem::NotAFile {
                    path: path.to_path_buf(),
                    found: describe(kind),
                });
            }
            let found = u64::try_from(stat.st_size).unwrap_or(0);
            (found != size).then(|| TreeProblem::WrongSize {
                path: path.to_path_buf(),
                expected: size,
                found,
            })
        }
    }
}

/// Why a directory expected at `name` in `dir` could not be opened without following links.
fn directory_problem<Fd: AsFd, P: rustix::path::Arg + Copy>(
    dir: Fd,
    name: P,
    path: &Path,
    errno: Errno,
) -> TreeProblem {
    let path = path.to_path_buf();
    if errno == Errno::NOENT {
        return TreeProblem::Missing { path };
    }
    match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => match FileType::from_raw_mode(stat.st_mode) {
            FileType::Symlink => TreeProblem::LinkForDirectory { path },
            FileType::Directory => TreeProblem::Unreadable {
                path,
                source: errno.into(),
            },
            other => TreeProblem::NotADirectory {
                path,
                found: describe(other),
            },
        },
        Err(_) => TreeProblem::Unreadable {
            path,
            source: errno.into(),
        },
    }
}

fn describe(kind: FileType) -> &'static str {
    match kind {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symbolic link",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice | FileType::BlockDevice => "a device",
        _ => "an unknown kind of file",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn rel(path: &str) -> RelativePath {
        RelativePath::new(path).unwrap()
    }

    /// `data/` with `data/a` (3 bytes) and `data/sub/b` (0 bytes).
    fn tree(root: &Path) -> ExpectedTree {
        fs::create_dir_all(root.join("data/sub")).unwrap();
        fs::write(root.join("data/a"), b"abc").unwrap();
        fs::write(root.join("data/sub/b"), b"").unwrap();
        let mut expected = ExpectedTree::default();
        expected.directory(&rel("data"));
        expected.file(&rel("data/a"), 3);
        expected.file(&rel("data/sub/b"), 0);
        expected
    }

    fn problems(root: &Path, expected: &ExpectedTree) -> Vec<String> {
        match verify_tree(root, expected) {
            Ok(()) => Vec::new(),
            Err(mismatch) => mismatch.problems.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn a_complete_tree_passes_and_unlisted_entries_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ID");
        let expected = tree(&root);
        fs::write(root.join("backup.info"), b"x").unwrap();
        assert!(verify_tree(&root, &expected).is_ok());
    }

    #[test]
    fn missing_wrong_size_and_temporary_names_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ID");
        let expected = tree(&root);
        fs::remove_file(root.join("data/sub/b")).unwrap();
        fs::write(root.join("data/a"), b"abcd").unwrap();
        fs::write(root.join("data/.a.barsync-0123456789ab"), b"").unwrap();
        let found = problems(&root, &expected);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(
            found[0].ends_with(
                "data/.a.barsync-0123456789ab is the temporary file of an unfinished transfer"
            ),
            "{found:?}"
        );
        assert!(
            found[1].ends_with("data/a has 4 bytes where the primary listed 3"),
            "{found:?}"
        );
        assert!(found[2].ends_with("data/sub/b is missing"), "{found:?}");
        let message = verify_tree(&root, &expected).unwrap_err().to_string();
        assert!(message.ends_with("(and 2 more problems)"), "{message}");
    }

    #[test]
    fn links_are_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ID");
        let expected = tree(&root);
        // A directory swapped for a link to a copy of itself: everything is "there".
        let elsewhere = dir.path().join("elsewhere");
        fs::rename(root.join("data/sub"), &elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, root.join("data/sub")).unwrap();
        // A file replaced by a link to a file of the right size.
        fs::rename(root.join("data/a"), dir.path().join("a")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("a"), root.join("data/a")).unwrap();
        let found = problems(&root, &expected);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].ends_with("data/a is not a regular file (a symbolic link)"),
            "{found:?}"
        );
        assert!(
            found[1].ends_with("data/sub is a symbolic link where the backup has a directory"),
            "{found:?}"
        );
        // The backup's directory itself.
        let linked = dir.path().join("linked");
        std::os::unix::fs::symlink(&root, &linked).unwrap();
        fs::remove_file(root.join("data/a")).unwrap();
        let found = problems(&linked, &expected);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("is a symbolic link where the backup has a directory"));
    }
}
