//! Writing on the host over SFTP: uploads (through a partial file, verified by the host's
//! checksum tool, renamed into place), directories, symlinks and removals.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use ssh2::FileStat;

use super::{FetchFailure, SftpFetch, SftpSource};
use crate::names::shown_path;

impl SftpSource {
    /// Uploads `local` to `remote` through `.NAME.barsync-partial` beside it (resumed by offset
    /// when a shorter partial upload is there), verifies it with the host's checksum tool
    /// against the local file, sets mode and mtime, and renames it into place.
    pub fn push_file(&mut self, local: &Path, remote_path: &Path) -> Result<SftpFetch, String> {
        let remote = shown_path(remote_path);
        let name = remote_path.file_name().unwrap_or_default();
        let partial = remote_path.with_file_name(crate::names::partial(name));
        let other = |what: &str, e: &dyn std::fmt::Display| format!("{remote}: {what}: {e}");
        let mut source = File::open(local).map_err(|e| format!("{}: {e}", local.display()))?;
        let meta = source
            .metadata()
            .map_err(|e| format!("{}: {e}", local.display()))?;
        let len = meta.len();
        let mut offset = self
            .sftp
            .stat(&partial)
            .ok()
            .and_then(|s| s.size)
            .unwrap_or(0);
        if offset > len {
            offset = 0;
        }
        let flags = if offset > 0 {
            ssh2::OpenFlags::WRITE | ssh2::OpenFlags::APPEND
        } else {
            ssh2::OpenFlags::WRITE | ssh2::OpenFlags::CREATE | ssh2::OpenFlags::TRUNCATE
        };
        let mut target = self
            .sftp
            .open_mode(&partial, flags, 0o600, ssh2::OpenType::File)
            .map_err(|e| other("open", &e))?;
        source
            .seek(SeekFrom::Start(offset))
            .map_err(|e| other("seek", &e))?;
        let mut buffer = vec![0u8; 256 * 1024];
        let mut sent = 0u64;
        loop {
            let n = source
                .read(&mut buffer)
                .map_err(|e| format!("{}: {e}", local.display()))?;
            if n == 0 {
                break;
            }
            target
                .write_all(&buffer[..n])
                .map_err(|e| other("write", &e))?;
            sent += n as u64;
        }
        target.fsync().ok(); // not every SFTP server offers fsync@openssh.com
        drop(target);
        if let Err(message) = self.verify_upload(local, &partial, len) {
            let _ = self.sftp.unlink(&partial);
            return Err(message);
        }
        use std::os::unix::fs::MetadataExt;
        let stat = FileStat {
            size: None,
            uid: None,
            gid: None,
            perm: Some(meta.mode() & 0o7777),
            atime: Some(meta.atime() as u64),
            mtime: Some(meta.mtime() as u64),
        };
        self.sftp
            .setstat(&partial, stat)
            .map_err(|e| other("setting mode and mtime", &e))?;
        let rename =
            ssh2::RenameFlags::OVERWRITE | ssh2::RenameFlags::ATOMIC | ssh2::RenameFlags::NATIVE;
        if self
            .sftp
            .rename(&partial, remote_path, Some(rename))
            .is_err()
        {
            // SFTP v3 servers (OpenSSH's) refuse to rename over an existing file and libssh2
            // does not offer posix-rename@openssh.com: remove the old copy, then rename. For a
            // moment the file is absent, never wrong.
            let _ = self.sftp.unlink(remote_path);
            self.sftp
                .rename(&partial, remote_path, Some(rename))
                .map_err(|e| other("rename", &e))?;
        }
        Ok(SftpFetch {
            len,
            received_bytes: sent,
            verification: self.check,
            linked: false,
        })
    }

    fn verify_upload(&self, local: &Path, remote: &Path, len: u64) -> Result<(), String> {
        let size = self.sftp.stat(remote).ok().and_then(|s| s.size);
        if size != Some(len) {
            return Err(format!(
                "{}: uploaded {size:?} bytes, the file has {len}",
                shown_path(remote)
            ));
        }
        let local = File::open(local).map_err(|e| format!("{}: {e}", local.display()))?;
        match self.verify(remote, &local) {
            Ok(()) => Ok(()),
            Err(FetchFailure::Mismatch(message) | FetchFailure::Other(message)) => Err(message),
        }
    }

    /// Creates a directory (nothing if it exists).
    pub fn make_directory(&mut self, remote: &Path, mode: u32) -> Result<(), String> {
        match self.sftp.lstat(remote) {
            Ok(stat) if stat.is_dir() => Ok(()),
            _ => self
                .sftp
                .mkdir(remote, (mode & 0o7777) as i32)
                .map_err(|e| format!("{}: {e}", shown_path(remote))),
        }
    }

    /// Creates or replaces a symlink.
    pub fn make_symlink(&mut self, remote: &Path, target: &Path) -> Result<(), String> {
        let _ = self.remove(remote);
        self.sftp
            .symlink(target, remote)
            .map_err(|e| format!("{}: {e}", shown_path(remote)))
    }

    /// Removes a file, symlink or directory tree (symlinks are removed, never followed).
    pub fn remove(&mut self, path: &Path) -> Result<(), String> {
        let remote = shown_path(path);
        let stat = self
            .sftp
            .lstat(path)
            .map_err(|e| format!("{remote}: {e}"))?;
        if stat.is_dir() {
            for (child, _) in self
                .sftp
                .readdir(path)
                .map_err(|e| format!("{remote}: {e}"))?
            {
                self.remove(&child)?;
            }
            self.sftp.rmdir(path).map_err(|e| format!("{remote}: {e}"))
        } else {
            self.sftp.unlink(path).map_err(|e| format!("{remote}: {e}"))
        }
    }
}
