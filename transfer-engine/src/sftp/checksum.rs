//! The host's checksum tool (`b3sum`, else `sha256sum`, found once per session) and how its
//! answers are compared with the hash of a local file: what [`Verification`] a copy gets.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use sha2::Digest;

use super::{FetchFailure, SftpSource};
use crate::fs::{MappedFile, RELEASE_EVERY};
use crate::names::shown_path;

/// How a file copied over SFTP was verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verification {
    /// The remote `b3sum` agreed with the local copy's blake3.
    RemoteBlake3,
    /// The remote `sha256sum` agreed with the local copy's SHA-256.
    RemoteSha256,
    /// No checksum tool on the host: size and mtime were unchanged across the copy.
    SizeAndMtime,
}

impl Verification {
    /// How a report names this verification.
    pub fn label(self) -> &'static str {
        match self {
            Verification::RemoteBlake3 => "SFTP, remote b3sum",
            Verification::RemoteSha256 => "SFTP, remote sha256sum",
            Verification::SizeAndMtime => "SFTP, size and mtime only",
        }
    }

    /// The host's tool behind this check (`None`: size and mtime only).
    pub(super) fn tool(self) -> Option<&'static str> {
        match self {
            Verification::RemoteBlake3 => Some("b3sum"),
            Verification::RemoteSha256 => Some("sha256sum"),
            Verification::SizeAndMtime => None,
        }
    }

    /// The hash the host's tool would print for the content of `file` (lowercase hex), read
    /// through a map released as it goes; `Ok(None)` without a tool. An error when the file
    /// changed while it was read: the hash would not be of any one version of it.
    pub(super) fn hash_local(self, file: &File) -> io::Result<Option<String>> {
        if self == Verification::SizeAndMtime {
            return Ok(None);
        }
        let map = MappedFile::from_file(file)?;
        let mut blake3 = blake3::Hasher::new();
        let mut sha256 = sha2::Sha256::new();
        let mut at = 0;
        while at < map.len() {
            let end = (at + RELEASE_EVERY).min(map.len());
            match self {
                Verification::RemoteBlake3 => {
                    blake3.update(&map[at..end]);
                }
                _ => sha256.update(&map[at..end]),
            }
            map.release(at..end);
            at = end;
        }
        if map.changed() {
            return Err(io::Error::other("the file changed while it was hashed"));
        }
        Ok(Some(match self {
            Verification::RemoteBlake3 => blake3.finalize().to_hex().to_string(),
            _ => sha256
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        }))
    }
}

impl std::fmt::Display for Verification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verification::RemoteBlake3 => "remote b3sum",
            Verification::RemoteSha256 => "remote sha256sum",
            Verification::SizeAndMtime => "size and mtime only (no checksum tool on the host)",
        })
    }
}

/// `word` single-quoted for the host's shell (any character survives), when it is UTF-8: an
/// SSH exec request is text. `None` otherwise: see [`shell_assignment`].
pub(super) fn quote(word: &Path) -> Option<String> {
    let text = word.to_str()?;
    Some(format!("'{}'", text.replace('\'', "'\\''")))
}

/// A shell command that sets the variable `f` to the bytes of `word`, whatever they are (not
/// UTF-8, a newline at the end): `printf` of octal escapes, then an `X` guard that command
/// substitution cannot strip. The command itself is plain ASCII.
pub(super) fn shell_assignment(word: &Path) -> String {
    let mut escaped = String::new();
    for &byte in word.as_os_str().as_bytes() {
        if byte.is_ascii_alphanumeric() || b"._/-+,:@".contains(&byte) {
            escaped.push(byte as char);
        } else {
            escaped.push_str(&format!("\\{byte:03o}"));
        }
    }
    format!("f=$(printf '{escaped}X'); f=${{f%X}};")
}

/// The host tool's hashes of remote files (lowercase hex), by path.
pub(super) type RemoteSums = HashMap<PathBuf, String>;

/// Files and bytes of command line in one run of the checksum tool: each run is a round trip
/// and a process on the host, so many files share one. The command is one argument of the
/// host's `sh -c`, which Linux limits to 128 KiB.
const SUM_BATCH_FILES: usize = 256;
const SUM_BATCH_COMMAND_BYTES: usize = 96 * 1024;

/// One line of `b3sum` or `sha256sum` output: `HASH  PATH`, or, for a name holding a
/// backslash, a newline or a carriage return, `\HASH  ESCAPED` (`\\`, `\n`, `\r`), as GNU
/// coreutils and b3sum print them: (path, lowercase hash). `None` for what is not such a line.
fn parse_sum_line(line: &str) -> Option<(String, String)> {
    let (escaped, line) = match line.strip_prefix('\\') {
        Some(rest) => (true, rest),
        None => (false, line),
    };
    let (hash, name) = line.split_once("  ")?;
    if hash.is_empty() || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let name = if escaped {
        let mut out = String::with_capacity(name.len());
        let mut chars = name.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next()? {
                '\\' => out.push('\\'),
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                _ => return None,
            }
        }
        out
    } else {
        name.to_owned()
    };
    Some((name, hash.to_ascii_lowercase()))
}

impl SftpSource {
    /// The best checksum tool on the host: `b3sum`, else `sha256sum`, else none.
    pub(super) fn find_checksum_tool(&self) -> Verification {
        let found = self
            .run("command -v b3sum; command -v sha256sum")
            .unwrap_or_default();
        if found.lines().any(|l| l.ends_with("/b3sum")) {
            Verification::RemoteBlake3
        } else if found.lines().any(|l| l.ends_with("/sha256sum")) {
            Verification::RemoteSha256
        } else {
            Verification::SizeAndMtime
        }
    }

    /// The host tool's hashes of `remotes`, by path: one run of the tool per batch of files,
    /// not one per file. Empty without a tool; a file the tool could not read (or a run that
    /// failed) has no entry, and its caller asks again for that file alone or copies it.
    pub(super) fn remote_sums(&self, remotes: &[&Path]) -> RemoteSums {
        let mut sums = RemoteSums::new();
        let Some(tool) = self.check.tool() else {
            return sums;
        };
        // A name that is not UTF-8 cannot be in the command's text: such a file is asked
        // for alone ([`Self::verify`]), spelled by `printf`.
        let quoted: Vec<String> = remotes.iter().filter_map(|remote| quote(remote)).collect();
        let mut start = 0;
        while start < quoted.len() {
            let mut command = format!("{tool} --");
            let mut end = start;
            while end < quoted.len() && end - start < SUM_BATCH_FILES {
                let word = &quoted[end];
                if end > start && command.len() + 1 + word.len() > SUM_BATCH_COMMAND_BYTES {
                    break;
                }
                command.push(' ');
                command.push_str(word);
                end += 1;
            }
            if let Ok(output) = self.run(&command) {
                sums.extend(
                    output
                        .lines()
                        .filter_map(parse_sum_line)
                        .map(|(path, hash)| (PathBuf::from(path), hash)),
                );
            }
            start = end;
        }
        sums
    }

    /// Compares the local copy with the host tool's hash of `remote`, asked for this one file.
    pub(super) fn verify(&self, remote: &Path, local: &File) -> Result<(), FetchFailure> {
        let Some(tool) = self.check.tool() else {
            return Ok(());
        };
        let command = match quote(remote) {
            Some(word) => format!("{tool} -- {word}"),
            None => format!("{} {tool} -- \"$f\"", shell_assignment(remote)),
        };
        let output = self.run(&command).map_err(|e| {
            FetchFailure::Other(format!("{}: running {tool}: {e}", shown_path(remote)))
        })?;
        let theirs = output
            .lines()
            .find_map(parse_sum_line)
            .map(|(_, hash)| hash)
            .unwrap_or_default();
        self.compare_with(remote, local, &theirs)
    }

    /// Compares the local copy's hash with `theirs`, the host tool's hash of `remote`.
    pub(super) fn compare_with(
        &self,
        remote: &Path,
        local: &File,
        theirs: &str,
    ) -> Result<(), FetchFailure> {
        let remote = shown_path(remote);
        let Some(tool) = self.check.tool() else {
            return Ok(());
        };
        let ours = self
            .check
            .hash_local(local)
            .map_err(|e| FetchFailure::Other(format!("{remote}: the local copy: {e}")))?
            .unwrap_or_default();
        if ours == theirs {
            Ok(())
        } else {
            Err(FetchFailure::Mismatch(format!(
                "{remote}: {tool} on the host says {theirs}, the copy hashes to {ours}"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_lines_plain_and_escaped() {
        let hash = "ab".repeat(32);
        assert_eq!(
            parse_sum_line(&format!("{}  /b/a  b", hash.to_uppercase())),
            Some(("/b/a  b".to_owned(), hash.clone()))
        );
        assert_eq!(
            parse_sum_line(&format!("\\{hash}  /b/new\\nline\\\\back\\rcr")),
            Some(("/b/new\nline\\back\rcr".to_owned(), hash.clone()))
        );
        assert_eq!(parse_sum_line(&format!("\\{hash}  /b/odd\\t")), None);
        assert_eq!(parse_sum_line("sha256sum: /b/x: No such file"), None);
        assert_eq!(parse_sum_line(""), None);
    }

    #[test]
    fn local_hashes_are_what_the_tools_print() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        let file = File::open(&path).unwrap();
        assert_eq!(
            Verification::RemoteSha256
                .hash_local(&file)
                .unwrap()
                .unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            Verification::RemoteBlake3
                .hash_local(&file)
                .unwrap()
                .unwrap(),
            blake3::hash(b"abc").to_hex().to_string()
        );
        assert_eq!(Verification::SizeAndMtime.hash_local(&file).unwrap(), None);
    }
}
