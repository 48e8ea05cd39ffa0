//! What a file copied over SFTP is verified with ([`Verification`]: the host's `b3sum`, else
//! `sha256sum`, else size and mtime), and the local side of the comparison: the hash of the
//! local copy, of the kind the host's tool prints. The tool itself runs on the host through
//! `sums.rs`.

use std::fs::File;
use std::io;
use std::path::Path;

use sha2::Digest;

use super::sums::RemoteSums;
use super::{FetchFailure, SftpSource};
use crate::file_error::{FileError, FileErrorKind};
use crate::fs::{MappedFile, RELEASE_EVERY};
use crate::names::shown_path;

/// How a file copied over SFTP was verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verification {
    /// The remote `b3sum` agreed with the local copy's blake3.
    RemoteBlake3,
    /// The host's SHA-256 (by `openssl dgst -sha256`, else `sha256sum`) agreed with the local
    /// copy's.
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

    /// The hash the host's tool would print for the content of `file` (lowercase hex), read
    /// through a map released as it goes; `Ok(None)` without a tool. An error when the file
    /// changed while it was read: the hash would not be of any one version of it.
    pub(super) fn hash_local(self, file: &File) -> io::Result<Option<String>> {
        let Some(mut hasher) = LocalHasher::new(self) else {
            return Ok(None);
        };
        let map = MappedFile::from_file(file)?;
        let mut at = 0;
        while at < map.len() {
            let end = (at + RELEASE_EVERY).min(map.len());
            hasher.update(&map[at..end]);
            map.release(at..end);
            at = end;
        }
        if map.changed() {
            return Err(io::Error::other("the file changed while it was hashed"));
        }
        Ok(Some(hasher.finish()))
    }
}

/// The hash of a local copy, of the kind the host's tool prints, computed as its bytes are
/// written (a download hashes what it writes, in order) or read back.
#[derive(Clone)]
pub(super) enum LocalHasher {
    Blake3(Box<blake3::Hasher>),
    Sha256(sha2::Sha256),
}

impl LocalHasher {
    /// The hasher for `check` (`None`: size and mtime only).
    pub(super) fn new(check: Verification) -> Option<LocalHasher> {
        match check {
            Verification::RemoteBlake3 => Some(LocalHasher::Blake3(Box::default())),
            Verification::RemoteSha256 => Some(LocalHasher::Sha256(sha2::Sha256::new())),
            Verification::SizeAndMtime => None,
        }
    }

    pub(super) fn update(&mut self, data: &[u8]) {
        match self {
            LocalHasher::Blake3(hasher) => {
                hasher.update(data);
            }
            LocalHasher::Sha256(hasher) => hasher.update(data),
        }
    }

    /// Lowercase hex, as the tools print it.
    pub(super) fn finish(self) -> String {
        match self {
            LocalHasher::Blake3(hasher) => hasher.finalize().to_hex().to_string(),
            LocalHasher::Sha256(hasher) => hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
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

impl SftpSource {
    /// The host tool's hashes of `remotes`, by path, in one batch. Empty without a tool; a
    /// file the tool could not read has no entry.
    pub(super) fn remote_sums(&mut self, remotes: &[&Path]) -> RemoteSums {
        self.submit_sums(remotes).wait()
    }

    /// Compares the local copy with the host tool's hash of `remote`, asked for this one file.
    pub(super) fn verify(&mut self, remote: &Path, local: &File) -> Result<(), FetchFailure> {
        if self.check == Verification::SizeAndMtime {
            return Ok(());
        }
        let sums = self.remote_sums(&[remote]);
        let Some(theirs) = sums.get(remote) else {
            return Err(FetchFailure::other(
                FileErrorKind::Remote,
                format!(
                    "{}: running {} on the host gave no hash",
                    shown_path(remote),
                    self.hasher
                ),
            ));
        };
        self.compare_with(remote, local, None, theirs)
    }

    /// Compares the local copy's hash (`ours`, when it was computed as the copy was written;
    /// else read back from `local`) with `theirs`, the host tool's hash of `remote`.
    pub(super) fn compare_with(
        &self,
        remote: &Path,
        local: &File,
        ours: Option<&str>,
        theirs: &str,
    ) -> Result<(), FetchFailure> {
        let remote = shown_path(remote);
        if self.check == Verification::SizeAndMtime {
            return Ok(());
        }
        let tool = self.hasher;
        let ours = match ours {
            Some(ours) => ours.to_owned(),
            None => self
                .check
                .hash_local(local)
                .map_err(|e| FetchFailure::local(&e, format!("{remote}: the local copy: {e}")))?
                .unwrap_or_default(),
        };
        if ours == theirs {
            Ok(())
        } else {
            Err(FetchFailure::Mismatch(FileError::new(
                FileErrorKind::Corrupt,
                format!("{remote}: {tool} on the host says {theirs}, the copy hashes to {ours}"),
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
