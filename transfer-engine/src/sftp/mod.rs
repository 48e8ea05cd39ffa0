//! The fallback for hosts without barsync: whole-file copies over SFTP, both ways, through the
//! user's own ssh.
//!
//! When the far side cannot run `barsync serve` (command not found), the same transport is
//! used for an SFTP session: the `sftp` subsystem of the user's ssh command (`ssh -s … host
//! sftp`, so ssh_config's Host aliases, Match, Include and ProxyJump work as for the exec
//! session), or of libssh2 only when no ssh program exists (`--transport auto` chooses as for
//! the exec session: [`barsync_transport::choose_transport`]). barsync speaks SFTP version 3
//! itself over that byte stream. Trees are listed with `lstat`/`readdir` (symlinks reported,
//! never followed), files are copied whole with many requests in flight, and a file cut off
//! earlier is resumed from the length of its `.NAME.barsync-partial`. Each file is then
//! verified with the best check the host offers, found once per session: the remote `b3sum`,
//! else `sha256sum` (compared with the same hash of the local copy), else size and mtime
//! before and after the copy. [`Verification`] says which was used. Only a verified file is
//! published. The checksum tool runs through the same transport, in one `sh` per session
//! (`ssh … host sh`) that hashes each batch of files while it is downloaded.
//!
//! This module owns the session and listing; `wire.rs` the packets (encoding, strict
//! decoding), `client.rs` the SFTP session and its calls, `download.rs` the pipelined
//! downloads, `sums.rs` the host's checksum tool, `checksum.rs` the verification and the local
//! side of the comparison, `fetch.rs` downloading, verifying and publishing files, `push.rs`
//! uploading and the other writes on the host.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use barsync_transport::{ExitWaiter, Transport};

use crate::confine::RelativePath;
use crate::file_error::{FileError, FileErrorKind};
use crate::names::shown_path;
use crate::protocol::{Entry, EntryKind};

mod checksum;
pub mod client;
mod download;
mod fetch;
mod push;
mod sums;
pub mod wire;

pub use checksum::Verification;
pub use client::{SftpClient, SftpError};
pub use fetch::{SftpFetch, SftpFile};
pub use sums::{RemoteShell, ShellProcess, TransportShell};

use wire::{Attrs, Reply, Request};

/// How long closing a session waits for the far side to end before leaving it.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// An SFTP session plus the host's checksum tool.
pub struct SftpSource {
    client: SftpClient,
    /// Runs the checksum tool on the host (`None`: no way to run commands there).
    sums: Option<sums::Sums>,
    /// The end of the transport's stream (ssh's exit status), waited for on close.
    exit: Option<ExitWaiter>,
    check: Verification,
    /// The host's program behind `check`, as messages name it.
    hasher: &'static str,
    /// Called with the size of every read of file data (a caller's rate limit).
    read_hook: Option<Box<dyn FnMut(usize) + Send>>,
    /// The permission bits published files may get from the remote mode.
    mode_mask: u32,
}

impl SftpSource {
    /// Opens the `sftp` subsystem through `transport` and finds the host's checksum tool
    /// through the same transport (both at once). When the session does not start, the error
    /// says what ssh said.
    pub fn open(transport: Arc<dyn Transport>) -> Result<SftpSource, SftpError> {
        let peer = transport.peer().to_string();
        // The host's shell starts (and its probe for the tool goes out) while SFTP starts.
        let sums = sums::Sums::start(Arc::new(TransportShell(transport.clone())));
        let stream = transport
            .open_subsystem("sftp")
            .map_err(|e| SftpError::Session {
                peer: peer.clone(),
                reason: format!("starting the sftp subsystem: {e}"),
            })?;
        let (reader, writer, exit) = stream.split();
        let client = match SftpClient::start(Box::new(reader), Box::new(writer), peer.clone()) {
            Ok(client) => client,
            Err(error) => {
                // Whatever ssh said (a refused subsystem, a failed login) tells more.
                let said = match wait_bounded(exit) {
                    Some(Ok(exit)) => exit.stderr_text(),
                    Some(Err(error)) => error.to_string(),
                    None => String::new(),
                };
                return Err(match error {
                    SftpError::Session { peer, reason } if !said.is_empty() => SftpError::Session {
                        peer,
                        reason: format!("{reason}; ssh said: {said}"),
                    },
                    other => other,
                });
            }
        };
        Ok(SftpSource::assemble(client, Some(sums), Some(exit)))
    }

    /// SFTP over any byte stream (`reader` from the server, `writer` to it); `shell` runs the
    /// host's checksum tool (`None`: files are checked by size and mtime).
    pub fn over_stream(
        reader: Box<dyn Read + Send>,
        writer: Box<dyn Write + Send>,
        peer: String,
        shell: Option<Arc<dyn RemoteShell>>,
    ) -> Result<SftpSource, SftpError> {
        let sums = shell.map(sums::Sums::start);
        let client = SftpClient::start(reader, writer, peer)?;
        Ok(SftpSource::assemble(client, sums, None))
    }

    fn assemble(
        client: SftpClient,
        mut sums: Option<sums::Sums>,
        exit: Option<ExitWaiter>,
    ) -> SftpSource {
        let tool = sums.as_mut().and_then(sums::Sums::find_tool);
        SftpSource {
            client,
            sums,
            exit,
            check: tool.map_or(Verification::SizeAndMtime, |tool| tool.verification),
            hasher: tool.map_or("", |tool| tool.name),
            read_hook: None,
            mode_mask: 0o7777,
        }
    }

    /// Sends the hashing of `remotes` to the host's tool (nothing without a tool).
    fn submit_sums(&mut self, remotes: &[&Path]) -> sums::Pending {
        match &mut self.sums {
            Some(sums) => sums.submit(remotes),
            None => sums::Pending::none(),
        }
    }

    /// The server, as errors name it.
    pub fn peer(&self) -> &str {
        self.client.peer()
    }

    /// The error that broke the session, if one did (every later call fails with it).
    pub fn session_error(&self) -> Option<SftpError> {
        self.client.session_error()
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

    /// Ends the session: closes the stream (the server ends on EOF) and waits a little for
    /// the transport (ssh) to exit.
    pub fn close(self) -> Result<(), String> {
        let SftpSource { client, exit, .. } = self;
        let peer = client.peer().to_owned();
        drop(client);
        match exit.and_then(wait_bounded) {
            Some(Err(error)) => Err(format!("{peer}: closing SFTP: {error}")),
            _ => Ok(()),
        }
    }

    fn entry(path: RelativePath, stat: &Attrs, target: Option<OsString>) -> Option<Entry> {
        let kind = if stat.is_file() {
            EntryKind::File
        } else if stat.is_dir() {
            EntryKind::Directory
        } else if stat.is_symlink() {
            EntryKind::Symlink
        } else {
            return None;
        };
        Some(Entry {
            path,
            kind,
            size: if kind == EntryKind::File {
                stat.size.unwrap_or(0)
            } else {
                0
            },
            mtime: (i64::from(stat.mtime().unwrap_or(0)), 0),
            mode: stat.permissions.unwrap_or(0) & 0o7777,
            target,
        })
    }

    /// Lists `path` as the barsync server would (a file lists as one entry with the empty
    /// path). Each entry is looked at with `lstat` (whatever `readdir` says), many at once;
    /// symlinks are read, never followed. A name the server lists that is not one path
    /// component ends the session.
    pub fn list(&mut self, path: &Path, recursive: bool) -> Result<Vec<Entry>, SftpError> {
        let root = path.as_os_str().as_bytes();
        let stat = self.client.lstat(root)?;
        let here = RelativePath::new("").expect("empty is valid");
        if stat.is_file() {
            return Ok(Self::entry(here, &stat, None).into_iter().collect());
        }
        let mut out = Vec::new();
        let mut pending = vec![here];
        while let Some(dir) = pending.pop() {
            let dir_path = join_bytes(root, dir.as_bytes());
            let names = self.read_directory(&dir_path)?;
            let mut children: Vec<(RelativePath, Vec<u8>)> = Vec::with_capacity(names.len());
            for name in names {
                let relative = dir
                    .join(std::ffi::OsStr::from_bytes(&name))
                    .map_err(|e| self.client.fail(format!("a listed name: {e}")))?;
                let full = join_bytes(&dir_path, &name);
                children.push((relative, full));
            }
            let mut stats: Vec<Option<Result<Attrs, SftpError>>> =
                (0..children.len()).map(|_| None).collect();
            self.client.pipeline(
                children.len(),
                &mut |i| Request::Lstat {
                    path: &children[i].1,
                },
                &mut |i, reply| {
                    stats[i] = Some(match reply {
                        Reply::Attrs { attrs, .. } => Ok(attrs),
                        Reply::Status { code, message, .. } => client::status_error(code, message),
                        other => return Err(format!("{} to LSTAT", other.kind_name())),
                    });
                    Ok(())
                },
            )?;
            let links: Vec<usize> = (0..children.len())
                .filter(|&i| matches!(&stats[i], Some(Ok(attrs)) if attrs.is_symlink()))
                .collect();
            let mut targets: Vec<Option<Result<Vec<u8>, SftpError>>> =
                (0..children.len()).map(|_| None).collect();
            self.client.pipeline(
                links.len(),
                &mut |i| Request::Readlink {
                    path: &children[links[i]].1,
                },
                &mut |i, reply| {
                    targets[links[i]] = Some(match reply {
                        Reply::Name { entries, .. } if entries.len() == 1 => {
                            Ok(entries[0].name.to_vec())
                        }
                        Reply::Status { code, message, .. } => client::status_error(code, message),
                        other => return Err(format!("{} to READLINK", other.kind_name())),
                    });
                    Ok(())
                },
            )?;
            for (i, (relative, _)) in children.into_iter().enumerate() {
                let stat = match stats[i].take() {
                    Some(Ok(stat)) => stat,
                    // Gone since it was listed: as the server lists, skip it.
                    Some(Err(SftpError::Status {
                        code: wire::status::NO_SUCH_FILE,
                        ..
                    })) => continue,
                    Some(Err(error)) => return Err(error),
                    None => continue,
                };
                let target = match targets[i].take() {
                    Some(Ok(target)) => Some(OsString::from_vec(target)),
                    Some(Err(error)) => return Err(error),
                    None => None,
                };
                if let Some(entry) = Self::entry(relative.clone(), &stat, target) {
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

    /// The names in a directory (not `.` and `..`), each checked to be one path component.
    fn read_directory(&mut self, path: &[u8]) -> Result<Vec<Vec<u8>>, SftpError> {
        let handle = self.client.opendir(path)?;
        let mut names = Vec::new();
        let listed = loop {
            match self.client.readdir(&handle) {
                Ok(Some(chunk)) => names.extend(
                    chunk
                        .into_iter()
                        .map(|(name, _)| name)
                        .filter(|name| name != b"." && name != b".."),
                ),
                Ok(None) => break Ok(()),
                Err(error) => break Err(error),
            }
        };
        let closed = self.client.close(&handle);
        listed?;
        if let Err(error) = closed {
            if error.is_session() {
                return Err(error);
            }
        }
        Ok(names)
    }
}

/// `dir/name` as bytes (`name` alone when `dir` is empty).
fn join_bytes(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if name.is_empty() {
        return dir.to_vec();
    }
    if dir.is_empty() {
        return name.to_vec();
    }
    let mut path = dir.to_vec();
    if !path.ends_with(b"/") {
        path.push(b'/');
    }
    path.extend_from_slice(name);
    path
}

/// Waits for the far side's end, at most [`CLOSE_WAIT`]; `None` when it did not end by then
/// (the waiting thread is left to reap it).
fn wait_bounded(
    exit: ExitWaiter,
) -> Option<Result<barsync_transport::RemoteExit, barsync_transport::TransportError>> {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("barsync-sftp-exit".into())
        .spawn(move || {
            let _ = sender.send(exit.wait());
        })
        .ok()?;
    receiver.recv_timeout(CLOSE_WAIT).ok()
}

/// Why fetching or checking a file failed.
#[derive(Debug)]
enum FetchFailure {
    /// The copy is wrong (changed under us or corrupted): worth one fresh attempt.
    Mismatch(FileError),
    /// The file is refused (larger than it may be): its partial copy is discarded.
    Refused(FileError),
    /// Any other failure.
    Other(FileError),
}

impl FetchFailure {
    /// A failure of `kind`, in words.
    fn other(kind: FileErrorKind, detail: impl Into<String>) -> FetchFailure {
        FetchFailure::Other(FileError::new(kind, detail))
    }

    /// A failed file system call on this side (a full disk is
    /// [`FileErrorKind::OutOfSpace`]).
    fn local(error: &io::Error, detail: impl Into<String>) -> FetchFailure {
        FetchFailure::Other(FileError::local_io(error, detail))
    }

    /// A failed call to the server about `remote`, doing `what`.
    fn sftp(remote: &Path, what: &str, error: &SftpError) -> FetchFailure {
        FetchFailure::other(
            error.file_kind(),
            format!("{}: {what}: {error}", shown_path(remote)),
        )
    }

    /// The failure as the caller gets it.
    fn into_error(self) -> FileError {
        match self {
            FetchFailure::Mismatch(error)
            | FetchFailure::Refused(error)
            | FetchFailure::Other(error) => error,
        }
    }
}

impl From<SftpError> for io::Error {
    fn from(error: SftpError) -> io::Error {
        io::Error::other(error)
    }
}
