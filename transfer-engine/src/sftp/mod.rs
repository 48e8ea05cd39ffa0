//! The fallback for hosts without barsync: whole-file copies over SFTP (libssh2), both ways.
//!
//! When the far side cannot run `barsync serve` (command not found), the same SSH target is used
//! for an SFTP session: trees are listed with `lstat`/`readdir` (symlinks reported, never
//! followed), files are copied whole, and a file cut off earlier is resumed from the length of
//! its `.NAME.barsync-partial` (appending at that offset). Each file is then verified with the
//! best check the host offers, found once per session: the remote `b3sum`, else `sha256sum`
//! (compared with the same hash of the local copy), else size and mtime before and after the
//! copy. [`Verification`] says which was used. Only a verified file is published.
//!
//! This module owns the session and listing; `checksum.rs` the host's checksum tool and the
//! comparison with local hashes, `fetch.rs` downloading and publishing files, `push.rs`
//! uploading and the other writes on the host.

use std::ffi::OsString;
use std::io::{self, Read};
use std::path::Path;

use ssh2::{FileStat, Session, Sftp};

use crate::confine::RelativePath;
use crate::protocol::{Entry, EntryKind};

mod checksum;
mod fetch;
mod push;

pub use checksum::Verification;
pub use fetch::{SftpFetch, SftpFile};

/// An SFTP session plus the host's checksum tool.
pub struct SftpSource {
    session: Session,
    sftp: Sftp,
    check: Verification,
    /// Called with the size of every read of file data (a caller's rate limit).
    read_hook: Option<Box<dyn FnMut(usize) + Send>>,
    /// The permission bits published files may get from the remote mode.
    mode_mask: u32,
}

impl SftpSource {
    /// Opens SFTP on an authenticated session and finds the host's checksum tool.
    pub fn new(session: Session) -> io::Result<SftpSource> {
        session.set_blocking(true);
        let sftp = session.sftp().map_err(io::Error::other)?;
        let mut source = SftpSource {
            session,
            sftp,
            check: Verification::SizeAndMtime,
            read_hook: None,
            mode_mask: 0o7777,
        };
        source.check = source.find_checksum_tool();
        Ok(source)
    }

    /// Calls `hook` with the size of every read of file data, before the next read (a rate
    /// limit shared with other sessions, for instance).
    pub fn set_read_hook(&mut self, hook: Box<dyn FnMut(usize) + Send>) {
        self.read_hook = Some(hook);
    }

    /// Files published from now on never get the setuid or setgid bit, whatever the remote
    /// mode (as [`Client::drop_setid`](crate::protocol::Client::drop_setid)).
    pub fn drop_setid(&mut self) {
        self.mode_mask = crate::fs::SETID_DROPPED;
    }

    /// The check this host allows.
    pub fn verification(&self) -> Verification {
        self.check
    }

    fn run(&self, command: &str) -> io::Result<String> {
        let mut channel = self.session.channel_session().map_err(io::Error::other)?;
        channel.exec(command).map_err(io::Error::other)?;
        let mut out = Vec::new();
        channel.read_to_end(&mut out)?;
        channel.wait_close().map_err(io::Error::other)?;
        // Hashes are ASCII; file names in the output need not be UTF-8.
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    fn entry(path: RelativePath, stat: &FileStat, target: Option<OsString>) -> Option<Entry> {
        let kind = match stat.perm.unwrap_or(0) & 0o170000 {
            0o100000 => EntryKind::File,
            0o040000 => EntryKind::Directory,
            0o120000 => EntryKind::Symlink,
            _ => return None,
        };
        Some(Entry {
            path,
            kind,
            size: if kind == EntryKind::File {
                stat.size.unwrap_or(0)
            } else {
                0
            },
            mtime: (stat.mtime.unwrap_or(0) as i64, 0),
            mode: stat.perm.unwrap_or(0) & 0o7777,
            target,
        })
    }

    /// Lists `path` as the barsync server would (a file lists as one entry with the empty path).
    pub fn list(&mut self, path: &Path, recursive: bool) -> io::Result<Vec<Entry>> {
        let root = path;
        let stat = self.sftp.lstat(root).map_err(io::Error::other)?;
        let here = RelativePath::new("").expect("empty is valid");
        if stat.is_file() {
            return Ok(Self::entry(here, &stat, None).into_iter().collect());
        }
        let mut out = Vec::new();
        let mut pending = vec![here];
        while let Some(dir) = pending.pop() {
            for (child, _followed) in self
                .sftp
                .readdir(root.join(dir.as_path()))
                .map_err(io::Error::other)?
            {
                let name = child.file_name().unwrap_or_default();
                let Ok(relative) = dir.join(name) else {
                    continue;
                };
                // readdir follows symlinks; look at the entry itself.
                let own = self.sftp.lstat(&child).map_err(io::Error::other)?;
                let target = if own.file_type().is_symlink() {
                    Some(
                        self.sftp
                            .readlink(&child)
                            .map_err(io::Error::other)?
                            .into_os_string(),
                    )
                } else {
                    None
                };
                if let Some(entry) = Self::entry(relative.clone(), &own, target) {
                    if recursive && entry.kind == EntryKind::Directory {
                        pending.push(relative);
                    }
                    out.push(entry);
                }
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }
}

/// Why fetching or checking a file failed.
enum FetchFailure {
    /// The copy is wrong (changed under us or corrupted): worth one fresh attempt.
    Mismatch(String),
    Other(String),
}
