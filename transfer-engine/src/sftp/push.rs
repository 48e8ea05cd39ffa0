//! Writing on the host over SFTP: uploads (through a partial file written with many WRITEs in
//! flight, verified by the host's checksum tool, renamed into place), directories, symlinks
//! and removals. The uploads of a batch are verified by one run of the tool.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::client::SftpError;
use super::wire::{open_flags, status, Attrs, Reply, Request};
use super::{SftpFetch, SftpSource};
use crate::file_error::{FileError, FileErrorKind};
use crate::names::shown_path;
use crate::protocol::{PushItem, PushOutcome};

/// WRITEs in flight at once.
const MAX_WRITES: usize = 64;
/// Uploads verified by one run of the host's checksum tool.
const VERIFY_BATCH: usize = 256;

fn bytes(path: &Path) -> &[u8] {
    path.as_os_str().as_bytes()
}

/// A file uploaded into its partial copy on the host, not verified yet.
struct Uploaded {
    index: usize,
    local: PathBuf,
    remote: PathBuf,
    partial: PathBuf,
    meta: std::fs::Metadata,
    sent: u64,
}

/// The result of the push item at an index.
type ItemResult = (usize, Result<(), FileError>);

/// Why one item failed: that item only, or the whole session.
enum ItemError {
    Item(FileError),
    Session(SftpError),
}

impl ItemError {
    /// The host failed the call `what` about `remote` (shown), the session going on.
    fn host(remote: &str, what: &str, error: &SftpError) -> ItemError {
        ItemError::Item(FileError::new(
            error.file_kind(),
            format!("{remote}: {what}: {error}"),
        ))
    }
}

impl From<SftpError> for ItemError {
    fn from(error: SftpError) -> ItemError {
        ItemError::Session(error)
    }
}

impl SftpSource {
    /// Applies push items in order (files are verified and renamed into place in batches,
    /// after their upload), reporting each outcome as it completes. `Err` when the session
    /// broke; the items not reported then were not applied.
    pub fn apply_items(
        &mut self,
        items: &[PushItem],
        progress: &mut dyn FnMut(&PushOutcome),
    ) -> Result<Vec<PushOutcome>, SftpError> {
        let mut outcomes = Vec::with_capacity(items.len());
        let mut uploaded: Vec<Uploaded> = Vec::new();
        let mut report = |outcomes: &mut Vec<PushOutcome>, index: usize, result| {
            let outcome = PushOutcome {
                index,
                remote_path: items[index].remote_path().to_path_buf(),
                result,
            };
            progress(&outcome);
            outcomes.push(outcome);
        };
        for (index, item) in items.iter().enumerate() {
            let result = match item {
                PushItem::Directory { remote_path, mode } => {
                    self.make_directory(remote_path, *mode)
                }
                PushItem::Symlink {
                    remote_path,
                    target,
                } => self.make_symlink(remote_path, target),
                PushItem::File { local, remote_path } => {
                    match self.upload(index, local, remote_path) {
                        Ok(file) => {
                            uploaded.push(file);
                            if uploaded.len() >= VERIFY_BATCH {
                                for (index, result) in self.finish_uploads(&mut uploaded)? {
                                    report(&mut outcomes, index, result);
                                }
                            }
                            continue;
                        }
                        Err(error) => Err(error),
                    }
                }
                PushItem::Remove { remote_path } => self.remove(remote_path),
            };
            match result {
                Ok(()) => report(&mut outcomes, index, Ok(())),
                Err(ItemError::Item(message)) => report(&mut outcomes, index, Err(message)),
                Err(ItemError::Session(error)) => return Err(error),
            }
        }
        for (index, result) in self.finish_uploads(&mut uploaded)? {
            report(&mut outcomes, index, result);
        }
        Ok(outcomes)
    }

    /// Uploads `local` into `.NAME.barsync-partial` beside `remote_path` (resumed from its
    /// length when a shorter partial upload is there).
    fn upload(
        &mut self,
        index: usize,
        local: &Path,
        remote_path: &Path,
    ) -> Result<Uploaded, ItemError> {
        let remote = shown_path(remote_path);
        let name = remote_path.file_name().unwrap_or_default();
        let partial = remote_path.with_file_name(crate::names::partial(name));
        let item = |what: &str, e: &SftpError| ItemError::host(&remote, what, e);
        let local_failed = |e: std::io::Error| {
            ItemError::Item(FileError::local_io(
                &e,
                format!("{remote}: {}: {e}", local.display()),
            ))
        };
        let source = File::open(local).map_err(local_failed)?;
        let meta = source.metadata().map_err(local_failed)?;
        let len = meta.len();
        let mut offset = match self.client.stat(bytes(&partial)) {
            Ok(attrs) => attrs.size.unwrap_or(0),
            Err(error) if error.is_session() => return Err(error.into()),
            Err(_) => 0,
        };
        if offset > len {
            offset = 0;
        }
        let flags = if offset > 0 {
            open_flags::WRITE
        } else {
            open_flags::WRITE | open_flags::CREATE | open_flags::TRUNCATE
        };
        let attrs = Attrs {
            permissions: Some(0o600),
            ..Attrs::default()
        };
        let handle = match self.client.open(bytes(&partial), flags, &attrs) {
            Ok(handle) => handle,
            Err(error) if error.is_session() => return Err(error.into()),
            Err(error) => return Err(item("open", &error)),
        };
        let written = self.write_pipelined(&handle, &source, offset, len);
        // Not every SFTP server offers fsync@openssh.com; verification reads what is there.
        let synced = match &written {
            Ok(()) => self.client.fsync(&handle).map(drop),
            Err(_) => Ok(()),
        };
        let closed = self.client.close(&handle);
        match written {
            Ok(()) => {}
            Err(ItemError::Item(message)) => return Err(ItemError::Item(message)),
            Err(session) => return Err(session),
        }
        for result in [synced, closed] {
            match result {
                Err(error) if error.is_session() => return Err(error.into()),
                Err(error) => return Err(item("write", &error)),
                Ok(()) => {}
            }
        }
        Ok(Uploaded {
            index,
            local: local.to_path_buf(),
            remote: remote_path.to_path_buf(),
            partial,
            meta,
            sent: len - offset,
        })
    }

    /// Writes `source[offset..len]` at the same offsets of the open `handle`, up to
    /// [`MAX_WRITES`] WRITEs in flight.
    fn write_pipelined(
        &mut self,
        handle: &[u8],
        source: &File,
        offset: u64,
        len: u64,
    ) -> Result<(), ItemError> {
        let chunk = self.client.limits().write as usize;
        let mut buffer = vec![0u8; chunk.min(len.saturating_sub(offset) as usize).max(1)];
        let mut in_flight: HashSet<u32> = HashSet::new();
        let mut at = offset;
        let mut failed: Option<FileError> = None;
        loop {
            while failed.is_none() && at < len && in_flight.len() < MAX_WRITES {
                let n = (len - at).min(buffer.len() as u64) as usize;
                if let Err(e) = source.read_exact_at(&mut buffer[..n], at) {
                    failed = Some(FileError::local_io(
                        &e,
                        format!("reading the local file: {e}"),
                    ));
                    break;
                }
                let id = self.client.send(&Request::Write {
                    handle,
                    offset: at,
                    data: &buffer[..n],
                })?;
                in_flight.insert(id);
                at += n as u64;
            }
            if in_flight.is_empty() {
                break;
            }
            self.client.read_packet()?;
            let reply = self.client.reply()?;
            match reply {
                Reply::Status { id, code, message } if in_flight.remove(&id) => {
                    if code != status::OK && failed.is_none() {
                        let error = SftpError::Status {
                            code,
                            message: crate::names::shown_bytes(message),
                        };
                        failed = Some(FileError::new(error.file_kind(), format!("write: {error}")));
                    }
                }
                other => {
                    let what = format!("{} to a WRITE", other.kind_name());
                    return Err(self.client.unexpected(what).into());
                }
            }
        }
        match failed {
            Some(message) => Err(ItemError::Item(message)),
            None => Ok(()),
        }
    }

    /// Verifies the files of `uploaded` (their size, then one run of the host's tool for all),
    /// sets each one's mode and mtime and renames it into place; one result per file.
    fn finish_uploads(
        &mut self,
        uploaded: &mut Vec<Uploaded>,
    ) -> Result<Vec<ItemResult>, SftpError> {
        let files = std::mem::take(uploaded);
        let partials: Vec<&Path> = files.iter().map(|f| f.partial.as_path()).collect();
        let sums = self.remote_sums(&partials);
        let mut results = Vec::with_capacity(files.len());
        for file in &files {
            let result = self.finish_upload(file, &sums);
            if let Err(ItemError::Session(error)) = result {
                return Err(error);
            }
            results.push((
                file.index,
                result.map(drop).map_err(|error| match error {
                    ItemError::Item(failure) => failure,
                    ItemError::Session(error) => {
                        FileError::new(FileErrorKind::SessionLost, error.to_string())
                    }
                }),
            ));
        }
        Ok(results)
    }

    fn finish_upload(
        &mut self,
        file: &Uploaded,
        sums: &super::sums::RemoteSums,
    ) -> Result<SftpFetch, ItemError> {
        let remote = shown_path(&file.remote);
        let item = |what: &str, e: &SftpError| ItemError::host(&remote, what, e);
        let len = file.meta.len();
        let size = match self.client.stat(bytes(&file.partial)) {
            Ok(attrs) => attrs.size,
            Err(error) if error.is_session() => return Err(error.into()),
            Err(_) => None,
        };
        let verified = if size != Some(len) {
            Err(FileError::new(
                FileErrorKind::Corrupt,
                format!(
                    "{}: uploaded {size:?} bytes, the file has {len}",
                    shown_path(&file.partial)
                ),
            ))
        } else {
            match File::open(&file.local) {
                Err(e) => Err(FileError::local_io(
                    &e,
                    format!("{}: {e}", file.local.display()),
                )),
                Ok(local) => match sums.get(&file.partial) {
                    Some(theirs) => self.compare_with(&file.partial, &local, None, theirs),
                    None => self.verify(&file.partial, &local),
                }
                .map_err(|failure| failure.into_error()),
            }
        };
        if let Err(failure) = verified {
            match self.client.remove(bytes(&file.partial)) {
                Err(error) if error.is_session() => return Err(error.into()),
                _ => return Err(ItemError::Item(failure)),
            }
        }
        let attrs = Attrs {
            permissions: Some(file.meta.mode() & 0o7777),
            times: Some((file.meta.atime() as u32, file.meta.mtime() as u32)),
            ..Attrs::default()
        };
        match self.client.setstat(bytes(&file.partial), &attrs) {
            Err(error) if error.is_session() => return Err(error.into()),
            Err(error) => return Err(item("setting mode and mtime", &error)),
            Ok(()) => {}
        }
        if let Err(error) = self
            .client
            .rename(bytes(&file.partial), bytes(&file.remote))
        {
            if error.is_session() || self.client.extensions().posix_rename {
                return Err(match error.is_session() {
                    true => error.into(),
                    false => item("rename", &error),
                });
            }
            // A plain SFTP v3 RENAME refuses to replace a file: remove the old copy, then
            // rename. For a moment the file is absent, never wrong.
            match self.client.remove(bytes(&file.remote)) {
                Err(error) if error.is_session() => return Err(error.into()),
                _ => {}
            }
            match self
                .client
                .rename(bytes(&file.partial), bytes(&file.remote))
            {
                Err(error) if error.is_session() => return Err(error.into()),
                Err(error) => return Err(item("rename", &error)),
                Ok(()) => {}
            }
        }
        Ok(SftpFetch {
            len,
            received_bytes: file.sent,
            verification: self.check,
            linked: false,
        })
    }

    /// Creates a directory (nothing if it exists).
    fn make_directory(&mut self, remote: &Path, mode: u32) -> Result<(), ItemError> {
        match self.client.lstat(bytes(remote)) {
            Ok(stat) if stat.is_dir() => return Ok(()),
            Err(error) if error.is_session() => return Err(error.into()),
            _ => {}
        }
        let attrs = Attrs {
            permissions: Some(mode & 0o7777),
            ..Attrs::default()
        };
        self.client
            .mkdir(bytes(remote), &attrs)
            .map_err(|error| item_error(remote, error))
    }

    /// Creates or replaces a symlink.
    fn make_symlink(&mut self, remote: &Path, target: &Path) -> Result<(), ItemError> {
        if let Err(ItemError::Session(error)) = self.remove(remote) {
            return Err(error.into());
        }
        self.client
            .symlink(bytes(target), bytes(remote))
            .map_err(|error| item_error(remote, error))
    }

    /// Removes a file, symlink or directory tree (symlinks are removed, never followed).
    fn remove(&mut self, path: &Path) -> Result<(), ItemError> {
        let stat = self
            .client
            .lstat(bytes(path))
            .map_err(|error| item_error(path, error))?;
        if stat.is_dir() {
            let names = self
                .read_directory(bytes(path))
                .map_err(|error| item_error(path, error))?;
            for name in names {
                self.remove(&path.join(std::ffi::OsStr::from_bytes(&name)))?;
            }
            self.client
                .rmdir(bytes(path))
                .map_err(|error| item_error(path, error))
        } else {
            self.client
                .remove(bytes(path))
                .map_err(|error| item_error(path, error))
        }
    }
}

/// A failed call about `path`: that item's failure, or the session's.
fn item_error(path: &Path, error: SftpError) -> ItemError {
    if error.is_session() {
        ItemError::Session(error)
    } else {
        ItemError::Item(FileError::new(
            error.file_kind(),
            format!("{}: {error}", shown_path(path)),
        ))
    }
}
