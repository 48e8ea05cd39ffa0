//! The host's checksum tool (`b3sum`, else `sha256sum`, found once per session) and how its
//! answers are compared with the hash of a local file: what [`Verification`] a copy gets.

use std::fs::File;

use sha2::Digest;

use super::{FetchFailure, SftpSource};
use crate::fs::MappedFile;

/// How a file copied over SFTP was verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// `word` quoted for the host's shell (any byte but NUL survives).
pub(super) fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
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

    /// The checksum tool's output for `remotes`, by path (empty without a tool).
    pub(super) fn remote_sums(
        &self,
        remotes: &[&str],
    ) -> std::collections::HashMap<String, String> {
        let mut sums = std::collections::HashMap::new();
        let tool = match self.check {
            Verification::RemoteBlake3 => "b3sum",
            Verification::RemoteSha256 => "sha256sum",
            Verification::SizeAndMtime => return sums,
        };
        if remotes.is_empty() {
            return sums;
        }
        let mut command = format!("{tool} --");
        for remote in remotes {
            command.push(' ');
            command.push_str(&quote(remote));
        }
        let Ok(output) = self.run(&command) else {
            return sums;
        };
        for line in output.lines() {
            // `HASH  PATH`; a name with a backslash or newline is escaped and the line starts
            // with `\` (such a file finds no sum here and is checked on its own).
            if let Some((hash, path)) = line.split_once("  ") {
                sums.insert(path.to_owned(), hash.to_ascii_lowercase());
            }
        }
        sums
    }

    /// Compares the local copy with the host tool's hash of `remote`, asked for this one file.
    pub(super) fn verify(&self, remote: &str, local: &File) -> Result<(), FetchFailure> {
        let tool = match self.check {
            Verification::RemoteBlake3 => "b3sum",
            Verification::RemoteSha256 => "sha256sum",
            Verification::SizeAndMtime => return Ok(()),
        };
        let output = self
            .run(&format!("{tool} -- {}", quote(remote)))
            .map_err(|e| FetchFailure::Other(format!("{remote}: running {tool}: {e}")))?;
        let theirs = output
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        self.compare_with(remote, local, &theirs)
    }

    /// Compares the local copy's hash with `theirs`, the host tool's hash of `remote`.
    pub(super) fn compare_with(
        &self,
        remote: &str,
        local: &File,
        theirs: &str,
    ) -> Result<(), FetchFailure> {
        let tool = match self.check {
            Verification::RemoteBlake3 => "b3sum",
            Verification::RemoteSha256 => "sha256sum",
            Verification::SizeAndMtime => return Ok(()),
        };
        let map = MappedFile::from_file(local)
            .map_err(|e| FetchFailure::Other(format!("{remote}: the local copy: {e}")))?;
        let ours = match self.check {
            Verification::RemoteBlake3 => blake3::hash(&map).to_hex().to_string(),
            _ => sha2::Sha256::digest(&*map)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        };
        if ours == theirs {
            Ok(())
        } else {
            Err(FetchFailure::Mismatch(format!(
                "{remote}: {tool} on the host says {theirs}, the copy hashes to {ours}"
            )))
        }
    }
}
