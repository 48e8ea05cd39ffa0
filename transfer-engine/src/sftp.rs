//! The fallback for hosts without barsync: whole-file copies over SFTP (libssh2), both ways.
//!
//! When the far side cannot run `barsync serve` (command not found), the same SSH target is used
//! for an SFTP session: trees are listed with `lstat`/`readdir` (symlinks reported, never
//! followed), files are copied whole, and a file cut off earlier is resumed from the length of
//! its `.NAME.barsync-partial` (appending at that offset). Each file is then verified with the
//! best check the host offers, found once per session: the remote `b3sum`, else `sha256sum`
//! (compared with the same hash of the local copy), else size and mtime before and after the
//! copy. [`Verification`] says which was used. Only a verified file is published.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use sha2::Digest;
use ssh2::{FileStat, Session, Sftp};

use std::os::fd::OwnedFd;

use rustix::fs::{fsync, openat, renameat, unlinkat, AtFlags, Mode, OFlags};

use crate::confine::{Destination, RelativePath};
use crate::fs::MappedFile;
use crate::names::shown_path;
use crate::protocol::{Entry, EntryKind};

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

/// One file to fetch over SFTP.
#[derive(Clone, Copy, Debug)]
pub struct SftpFile<'a> {
    pub remote: &'a Path,
    /// Where the verified file is published.
    pub destination: &'a Destination,
    /// The name of the file beside the destination it is downloaded into first (and resumed
    /// from, by length); like the destination, reached through its directory's handle.
    pub partial: &'a OsStr,
    /// Refuse a file larger than this (the size the caller was told).
    pub max_len: Option<u64>,
}

/// What fetching one file over SFTP did.
#[derive(Clone, Copy, Debug)]
pub struct SftpFetch {
    pub len: u64,
    /// Bytes read over SFTP (less than `len` when a partial copy was resumed).
    pub received_bytes: u64,
    pub verification: Verification,
}

/// `word` as one word of a POSIX shell command, single-quoted, when it is UTF-8 without
/// control characters (`None` otherwise: see [`shell_assignment`]).
fn quote(word: &Path) -> Option<String> {
    let text = word.to_str()?;
    if text.chars().any(char::is_control) {
        return None;
    }
    Some(format!("'{}'", text.replace('\'', "'\\''")))
}

/// A shell command that sets the variable `f` to the bytes of `word`, whatever they are (not
/// UTF-8, a newline at the end): `printf` of octal escapes, then an `X` guard that command
/// substitution cannot strip. The command itself is plain ASCII, as an SSH exec request is
/// text.
fn shell_assignment(word: &Path) -> String {
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
        let found = source
            .run("command -v b3sum; command -v sha256sum")
            .unwrap_or_default();
        source.check = if found.lines().any(|l| l.ends_with("/b3sum")) {
            Verification::RemoteBlake3
        } else if found.lines().any(|l| l.ends_with("/sha256sum")) {
            Verification::RemoteSha256
        } else {
            Verification::SizeAndMtime
        };
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

    /// Copies `remote` to `destination` through `partial` (resumed if it exists), verifies it,
    /// sets mode and mtime and publishes it. On a verification failure the partial copy is
    /// discarded and the file fetched once more from the start.
    pub fn fetch(&mut self, file: &SftpFile<'_>) -> Result<SftpFetch, String> {
        let mut result = self.fetch_once(file);
        if let Err(FetchFailure::Mismatch(_)) = &result {
            remove_partial(file);
            result = self.fetch_once(file);
        }
        result.map_err(|failure| match failure {
            FetchFailure::Mismatch(message) | FetchFailure::Other(message) => message,
        })
    }

    fn fetch_once(&mut self, file: &SftpFile<'_>) -> Result<SftpFetch, FetchFailure> {
        let downloaded = self.download(file)?;
        self.verify(file.remote, &downloaded.file)?;
        self.publish(file, &downloaded).map_err(FetchFailure::Other)
    }

    fn publish(&self, file: &SftpFile<'_>, downloaded: &Downloaded) -> Result<SftpFetch, String> {
        publish_partial(file, downloaded, self.mode_mask)
            .map_err(|e| format!("{}: publishing: {e}", shown_path(file.remote)))?;
        Ok(SftpFetch {
            len: downloaded.len,
            received_bytes: downloaded.received,
            verification: self.check,
        })
    }

    /// Fetches many files: each is downloaded into its partial copy, then the host's checksum
    /// tool runs once per batch of files (not once per file: each command is a round trip and a
    /// process on the host), then each verified file is published. A file whose check fails is
    /// fetched once more on its own. `done(index, result)` is called for each, in order.
    pub fn fetch_many(
        &mut self,
        files: &[SftpFile<'_>],
        done: &mut dyn FnMut(usize, Result<SftpFetch, String>),
    ) {
        const BATCH_FILES: usize = 256;
        const BATCH_COMMAND_BYTES: usize = 96 * 1024;
        let mut start = 0;
        while start < files.len() {
            let mut end = start;
            let mut command_bytes = 0;
            while end < files.len()
                && end - start < BATCH_FILES
                && command_bytes < BATCH_COMMAND_BYTES
            {
                command_bytes += files[end].remote.as_os_str().len() + 3;
                end += 1;
            }
            let batch = &files[start..end];
            let downloads: Vec<Result<Downloaded, FetchFailure>> =
                batch.iter().map(|file| self.download(file)).collect();
            let remotes: Vec<&Path> = batch
                .iter()
                .zip(&downloads)
                .filter(|(_, d)| d.is_ok())
                .map(|(file, _)| file.remote)
                .collect();
            let sums = self.remote_sums(&remotes);
            for (offset, (file, download)) in batch.iter().zip(downloads).enumerate() {
                let result = match download {
                    Err(FetchFailure::Mismatch(_)) => self.fetch(file),
                    Err(FetchFailure::Other(message)) => Err(message),
                    Ok(downloaded) => match self.compare(file.remote, &downloaded.file, &sums) {
                        Ok(()) => self.publish(file, &downloaded),
                        Err(FetchFailure::Mismatch(_)) => {
                            drop(downloaded);
                            remove_partial(file);
                            self.fetch(file)
                        }
                        Err(FetchFailure::Other(message)) => Err(message),
                    },
                };
                done(start + offset, result);
            }
            start = end;
        }
    }

    /// The checksum tool's output for `remotes`, by path (empty without a tool).
    fn remote_sums(&self, remotes: &[&Path]) -> std::collections::HashMap<PathBuf, String> {
        let mut sums = std::collections::HashMap::new();
        let tool = match self.check {
            Verification::RemoteBlake3 => "b3sum",
            Verification::RemoteSha256 => "sha256sum",
            Verification::SizeAndMtime => return sums,
        };
        if remotes.is_empty() {
            return sums;
        }
        // Names that need `printf` to be spelled are checked one by one ([`Self::verify`]).
        let mut command = format!("{tool} --");
        let mut quoted = 0;
        for word in remotes.iter().filter_map(|remote| quote(remote)) {
            command.push(' ');
            command.push_str(&word);
            quoted += 1;
        }
        if quoted == 0 {
            return sums;
        }
        let Ok(output) = self.run(&command) else {
            return sums;
        };
        for line in output.lines() {
            // `HASH  PATH`; a name with a backslash or newline is escaped and the line starts
            // with `\` (such a file finds no sum here and is checked on its own).
            if let Some((hash, path)) = line.split_once("  ") {
                sums.insert(PathBuf::from(path), hash.to_ascii_lowercase());
            }
        }
        sums
    }

    /// Compares the local copy with the host's sum from `sums`, or asks the host for this one
    /// file when the batch has no sum for it.
    fn compare(
        &self,
        remote: &Path,
        local: &File,
        sums: &std::collections::HashMap<PathBuf, String>,
    ) -> Result<(), FetchFailure> {
        match sums.get(remote) {
            Some(theirs) => self.compare_with(remote, local, theirs),
            None => self.verify(remote, local),
        }
    }

    /// Downloads `remote` into `partial` (appending to what an earlier attempt kept), checking
    /// that the file did not change meanwhile. The partial copy is opened in the destination's
    /// directory, reached from its root without following symlinks, never through a symlink.
    fn download(&mut self, file: &SftpFile<'_>) -> Result<Downloaded, FetchFailure> {
        let remote = &*shown_path(file.remote);
        let other = |what: &str, e: &dyn std::fmt::Display| {
            FetchFailure::Other(format!("{remote}: {what}: {e}"))
        };
        let before = self.sftp.stat(file.remote).map_err(|e| other("stat", &e))?;
        let len = before.size.unwrap_or(0);
        let limit = file.max_len.unwrap_or(u64::MAX);
        if len > limit {
            return Err(FetchFailure::Other(format!(
                "{remote} has {len} bytes, more than the {limit} expected"
            )));
        }
        let (dir, mut local) = open_partial(file).map_err(|e| {
            other(
                &format!(
                    "opening the partial copy in {}",
                    file.destination.path().display()
                ),
                &e,
            )
        })?;
        let mut offset = local
            .metadata()
            .map_err(|e| other("partial copy", &e))?
            .len();
        if offset > len {
            local.set_len(0).map_err(|e| other("partial copy", &e))?;
            offset = 0;
        }
        let mut remote_file = self.sftp.open(file.remote).map_err(|e| other("open", &e))?;
        remote_file
            .seek(SeekFrom::Start(offset))
            .map_err(|e| other("seek", &e))?;
        let mut buffer = vec![0u8; 256 * 1024];
        let mut received = 0u64;
        loop {
            let n = remote_file
                .read(&mut buffer)
                .map_err(|e| other("read", &e))?;
            if n == 0 {
                break;
            }
            if offset + received + n as u64 > limit {
                drop(local);
                let _ = unlinkat(&dir, file.partial, AtFlags::empty());
                return Err(FetchFailure::Other(format!(
                    "{remote} grew beyond the {limit} bytes expected while it was copied"
                )));
            }
            local
                .write_all(&buffer[..n])
                .map_err(|e| other("writing the partial copy", &e))?;
            received += n as u64;
            if let Some(hook) = self.read_hook.as_mut() {
                hook(n);
            }
        }
        local.sync_all().map_err(|e| other("fsync", &e))?;
        let after = self.sftp.stat(file.remote).map_err(|e| other("stat", &e))?;
        let copied = local
            .metadata()
            .map_err(|e| other("partial copy", &e))?
            .len();
        if copied != after.size.unwrap_or(0)
            || after.mtime != before.mtime
            || after.size != before.size
        {
            return Err(FetchFailure::Mismatch(format!(
                "{remote} changed while it was copied"
            )));
        }
        Ok(Downloaded {
            dir,
            file: local,
            len: copied,
            received,
            mode: before.perm.unwrap_or(0o644),
            mtime: before.mtime.unwrap_or(0) as i64,
        })
    }

    fn verify(&self, remote: &Path, local: &File) -> Result<(), FetchFailure> {
        let tool = match self.check {
            Verification::RemoteBlake3 => "b3sum",
            Verification::RemoteSha256 => "sha256sum",
            Verification::SizeAndMtime => return Ok(()),
        };
        let command = match quote(remote) {
            Some(word) => format!("{tool} -- {word}"),
            None => format!("{} {tool} -- \"$f\"", shell_assignment(remote)),
        };
        let output = self.run(&command).map_err(|e| {
            FetchFailure::Other(format!("{}: running {tool}: {e}", shown_path(remote)))
        })?;
        // A name with a backslash or newline makes the tool start its line with `\`.
        let theirs = output
            .split_whitespace()
            .next()
            .unwrap_or("")
            .trim_start_matches('\\')
            .to_ascii_lowercase();
        self.compare_with(remote, local, &theirs)
    }

    /// Compares the local copy's hash with `theirs`, the host tool's hash of `remote`.
    fn compare_with(&self, remote: &Path, local: &File, theirs: &str) -> Result<(), FetchFailure> {
        let remote = shown_path(remote);
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

/// A file downloaded into its partial copy, not verified yet.
struct Downloaded {
    /// The destination's directory.
    dir: OwnedFd,
    /// The partial copy, open for reading and writing.
    file: File,
    len: u64,
    received: u64,
    mode: u32,
    mtime: i64,
}

enum FetchFailure {
    /// The copy is wrong (changed under us or corrupted): worth one fresh attempt.
    Mismatch(String),
    Other(String),
}

/// Opens (creating it, mode 0600) the partial copy of `file` for appending, in the
/// destination's directory reached by [`Destination::open_parent`]; never through a symlink.
fn open_partial(file: &SftpFile<'_>) -> io::Result<(OwnedFd, File)> {
    let dir = file.destination.open_parent()?;
    let flags = OFlags::RDWR | OFlags::APPEND | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = openat(&dir, file.partial, flags, Mode::from_raw_mode(0o600))?;
    let local = File::from(fd);
    if !local.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the partial copy is not a regular file",
        ));
    }
    Ok((dir, local))
}

/// Removes the partial copy of `file` (a failed verification), through the directory handle.
fn remove_partial(file: &SftpFile<'_>) {
    if let Ok(dir) = file.destination.open_parent() {
        let _ = unlinkat(&dir, file.partial, AtFlags::empty());
    }
}

/// Sets mode and mtime, fsyncs, renames the partial copy over the destination inside the
/// directory handle it was downloaded through, and fsyncs that directory.
fn publish_partial(file: &SftpFile<'_>, downloaded: &Downloaded, mode_mask: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let local = &downloaded.file;
    local.set_permissions(std::fs::Permissions::from_mode(downloaded.mode & mode_mask))?;
    local.set_modified(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(downloaded.mtime.max(0) as u64),
    )?;
    local.sync_all()?;
    let dir = &downloaded.dir;
    renameat(dir, file.partial, dir, file.destination.file_name())?;
    Ok(fsync(dir)?)
}

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
