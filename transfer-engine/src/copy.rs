//! Copying trees between this side and a session's server: [`pull`] fetches into a local
//! directory, [`push`] sends a local tree (the two directions of `barsync copy`).
//!
//! The plan follows rsync: a source with a trailing slash copies its contents, without one it
//! copies the directory itself; files whose size and mtime match are skipped (unless
//! `checksum`, which delta-transfers every file: unchanged ones cost one signature and a few
//! copy operations); mode and mtime are preserved; symlinks are copied as symlinks and never
//! followed; `delete` removes local entries the source no longer has. A file cut off in the
//! middle is kept as `.<name>.barsync-partial` and used as the basis of the next attempt, and
//! files already complete are skipped next time, so an interrupted copy resumes.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use crate::confine::RelativePath;
use crate::protocol::{
    Client, Entry, EntryKind, FetchOutcome, FetchRequest, ProtocolError, PushItem, PushOutcome,
};

/// Options of a copy.
#[derive(Clone, Copy, Debug, Default)]
pub struct CopyOptions {
    /// Copy directories recursively.
    pub recursive: bool,
    /// Remove local entries the source does not have.
    pub delete: bool,
    /// Only report what would be done.
    pub dry_run: bool,
    /// Compare content, not size and mtime.
    pub checksum: bool,
    /// Update existing files in place, writing only what changed (rsync's `--inplace`). Faster
    /// for large files that change a little, but a failed update leaves the file modified.
    pub in_place: bool,
}

/// What a copy did (or, in a dry run, would do).
#[derive(Clone, Debug, Default)]
pub struct CopyReport {
    /// Files in the source.
    pub files: u64,
    /// Files transferred.
    pub transferred: u64,
    /// Files skipped as already up to date.
    pub skipped: u64,
    /// Size of the transferred files.
    pub bytes: u64,
    /// Bytes received on the wire (listings and file data; for SFTP, file data only).
    pub received_bytes: u64,
    /// Bytes sent on the wire (requests and signatures; for SFTP, none counted).
    pub sent_bytes: u64,
    /// Bytes rebuilt from local data rather than received.
    pub reused_bytes: u64,
    /// Symlinks created or replaced.
    pub symlinks: u64,
    /// Local entries removed by `delete`.
    pub deleted: u64,
    /// How many files were verified each way (e.g. "barsync digest", "SFTP, remote sha256sum").
    pub verified_by: std::collections::BTreeMap<&'static str, u64>,
    /// Per-file failures, each naming its file.
    pub errors: Vec<String>,
    /// The actions, one line each (filled in a dry run).
    pub plan: Vec<String>,
}

/// Why a copy could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The server refused or failed to list the source.
    #[error("remote: {0}")]
    Remote(String),
    /// The source is a directory but the copy is not recursive.
    #[error("{0} is a directory (use -r to copy directories)")]
    NotRecursive(String),
    /// A local file system operation failed.
    #[error("{}: {source}", path.display())]
    Local {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn local_error(path: &Path) -> impl FnOnce(io::Error) -> CopyError + '_ {
    move |source| CopyError::Local {
        path: path.to_path_buf(),
        source,
    }
}

/// The name under which an interrupted transfer of `path` is kept.
pub fn partial_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.barsync-partial"))
}

/// Lists over SFTP; a failure is the far side's answer for that path, not a session error.
fn list_over_sftp(
    sftp: &mut crate::sftp::SftpSource,
    path: &str,
    recursive: bool,
) -> Result<Vec<Entry>, String> {
    sftp.list(path, recursive)
        .map_err(|e| format!("{path}: {e}"))
}

/// Where [`push`] writes to: a barsync session, or SFTP on a host without barsync.
pub trait PushTarget {
    /// Lists `path`; `Ok(Err(message))` when the far side refused or failed (or it is missing).
    fn list(
        &mut self,
        path: &str,
        recursive: bool,
    ) -> Result<Result<Vec<Entry>, String>, CopyError>;
    /// Applies each item, reporting each outcome as it completes.
    fn apply(
        &mut self,
        items: &[PushItem],
        progress: &mut dyn FnMut(&PushOutcome),
    ) -> Result<Vec<PushOutcome>, CopyError>;
    /// How pushed files are verified, for the report.
    fn verified_by(&self) -> &'static str;
    /// Bytes sent and received on the wire so far, when known.
    fn traffic(&self) -> Option<(u64, u64)> {
        None
    }
}

impl<R: Read, W: Write + Send> PushTarget for Client<R, W> {
    fn list(
        &mut self,
        path: &str,
        recursive: bool,
    ) -> Result<Result<Vec<Entry>, String>, CopyError> {
        Ok(Client::list(self, path, recursive)?)
    }
    fn apply(
        &mut self,
        items: &[PushItem],
        progress: &mut dyn FnMut(&PushOutcome),
    ) -> Result<Vec<PushOutcome>, CopyError> {
        Ok(Client::push(self, items, progress)?)
    }
    fn verified_by(&self) -> &'static str {
        "barsync digest"
    }
    fn traffic(&self) -> Option<(u64, u64)> {
        Some(Client::traffic(self))
    }
}

impl PushTarget for crate::sftp::SftpSource {
    fn list(
        &mut self,
        path: &str,
        recursive: bool,
    ) -> Result<Result<Vec<Entry>, String>, CopyError> {
        Ok(list_over_sftp(self, path, recursive))
    }
    fn apply(
        &mut self,
        items: &[PushItem],
        progress: &mut dyn FnMut(&PushOutcome),
    ) -> Result<Vec<PushOutcome>, CopyError> {
        let mut outcomes = Vec::with_capacity(items.len());
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
                    self.push_file(local, remote_path).map(drop)
                }
                PushItem::Remove { remote_path } => self.remove(remote_path),
            };
            let outcome = PushOutcome {
                index,
                remote_path: item.remote_path().to_string(),
                result,
            };
            progress(&outcome);
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }
    fn verified_by(&self) -> &'static str {
        self.verification().label()
    }
}

/// Where [`pull`] reads from: a barsync session, or SFTP on a host without barsync.
pub trait PullSource {
    /// Lists `path`; `Ok(Err(message))` when the far side refused or failed.
    fn list(
        &mut self,
        path: &str,
        recursive: bool,
    ) -> Result<Result<Vec<Entry>, String>, CopyError>;
    /// Fetches each request, reporting each outcome as it completes.
    fn fetch(
        &mut self,
        requests: &[FetchRequest],
        progress: &mut dyn FnMut(&FetchOutcome),
    ) -> Result<Vec<FetchOutcome>, CopyError>;
    /// Bytes sent and received on the wire so far (listings included), when known.
    fn traffic(&self) -> Option<(u64, u64)> {
        None
    }
}

impl<R: Read, W: Write + Send> PullSource for Client<R, W> {
    fn list(
        &mut self,
        path: &str,
        recursive: bool,
    ) -> Result<Result<Vec<Entry>, String>, CopyError> {
        Ok(Client::list(self, path, recursive)?)
    }
    fn fetch(
        &mut self,
        requests: &[FetchRequest],
        progress: &mut dyn FnMut(&FetchOutcome),
    ) -> Result<Vec<FetchOutcome>, CopyError> {
        Ok(Client::fetch(self, requests, progress)?)
    }
    fn traffic(&self) -> Option<(u64, u64)> {
        Some(Client::traffic(self))
    }
}

impl PullSource for crate::sftp::SftpSource {
    fn list(
        &mut self,
        path: &str,
        recursive: bool,
    ) -> Result<Result<Vec<Entry>, String>, CopyError> {
        Ok(list_over_sftp(self, path, recursive))
    }
    fn fetch(
        &mut self,
        requests: &[FetchRequest],
        progress: &mut dyn FnMut(&FetchOutcome),
    ) -> Result<Vec<FetchOutcome>, CopyError> {
        let partials: Vec<PathBuf> = requests
            .iter()
            .map(|r| {
                r.partial
                    .clone()
                    .unwrap_or_else(|| partial_path(&r.destination))
            })
            .collect();
        let files: Vec<crate::sftp::SftpFile<'_>> = requests
            .iter()
            .zip(&partials)
            .map(|(r, partial)| crate::sftp::SftpFile {
                remote: r.remote_path.as_str(),
                destination: r.destination.as_path(),
                partial: partial.as_path(),
                max_len: r.max_len,
            })
            .collect();
        let mut outcomes = Vec::with_capacity(requests.len());
        self.fetch_many(&files, &mut |index, result| {
            let outcome = FetchOutcome {
                index,
                remote_path: requests[index].remote_path.clone(),
                result: result.map(|fetched| crate::protocol::FetchReport {
                    len: fetched.len,
                    digest: None,
                    verified_by: fetched.verification.label(),
                    received_bytes: fetched.received_bytes,
                    signature_bytes: 0,
                    reused_bytes: fetched.len - fetched.received_bytes,
                    basis_problem: None,
                    linked: false,
                }),
            };
            progress(&outcome);
            outcomes.push(outcome);
        });
        Ok(outcomes)
    }
}

/// Copies `source` (a path the far side resolves) to `destination`.
/// `contents`: the source had a trailing slash (copy what is inside it).
pub fn pull(
    client: &mut dyn PullSource,
    source: &str,
    contents: bool,
    destination: &Path,
    options: &CopyOptions,
    mut progress: impl FnMut(&FetchOutcome),
) -> Result<CopyReport, CopyError> {
    let progress: &mut dyn FnMut(&FetchOutcome) = &mut progress;
    let traffic_before = client.traffic();
    let mut report = pull_inner(client, source, contents, destination, options, progress)?;
    if let (Some((sent0, received0)), Some((sent1, received1))) = (traffic_before, client.traffic())
    {
        report.sent_bytes = sent1 - sent0;
        report.received_bytes = received1 - received0;
    }
    Ok(report)
}

fn pull_inner(
    client: &mut dyn PullSource,
    source: &str,
    contents: bool,
    destination: &Path,
    options: &CopyOptions,
    progress: &mut dyn FnMut(&FetchOutcome),
) -> Result<CopyReport, CopyError> {
    let listing = client
        .list(source, options.recursive)?
        .map_err(CopyError::Remote)?;
    let source_name = Path::new(source.trim_end_matches('/'))
        .file_name()
        .map(|n| n.to_owned());
    let single_file = listing.len() == 1
        && listing[0].path.as_str().is_empty()
        && listing[0].kind == EntryKind::File;
    let mut report = CopyReport::default();
    if single_file {
        let target = match (destination.is_dir(), &source_name) {
            (true, Some(name)) => destination.join(name),
            _ => destination.to_path_buf(),
        };
        let requests = plan_files(
            &listing,
            |_| target.clone(),
            |_| source.to_string(),
            options,
            &mut report,
        )?;
        fetch(client, &requests, options, &mut report, progress)?;
        return Ok(report);
    }
    if !options.recursive && listing.iter().any(|e| e.kind != EntryKind::File) {
        return Err(CopyError::NotRecursive(source.to_string()));
    }
    let root = match (contents, &source_name) {
        (false, Some(name)) => destination.join(name),
        _ => destination.to_path_buf(),
    };
    let remote = |entry: &Entry| {
        let base = source.trim_end_matches('/');
        if base.is_empty() {
            entry.path.as_str().to_string()
        } else {
            format!("{base}/{}", entry.path.as_str())
        }
    };
    let local = |entry: &Entry| root.join(entry.path.as_str());
    if !options.dry_run {
        make_directory(&root)?;
    }
    for entry in listing.iter().filter(|e| e.kind == EntryKind::Directory) {
        if options.dry_run {
            if !local(entry).is_dir() {
                report
                    .plan
                    .push(format!("mkdir {}", local(entry).display()));
            }
        } else {
            make_directory(&local(entry))?;
        }
    }
    for entry in listing.iter().filter(|e| e.kind == EntryKind::Symlink) {
        copy_symlink(
            &local(entry),
            entry.target.as_deref().unwrap_or(""),
            options,
            &mut report,
        )?;
    }
    let requests = plan_files(&listing, local, remote, options, &mut report)?;
    fetch(client, &requests, options, &mut report, progress)?;
    if options.delete {
        let keep: BTreeSet<PathBuf> = listing.iter().map(|e| root.join(e.path.as_str())).collect();
        delete_extraneous(&root, &keep, options, &mut report)?;
    }
    Ok(report)
}

fn make_directory(path: &Path) -> Result<(), CopyError> {
    // A symlink where a directory belongs is replaced, never followed.
    if let Ok(meta) = fs::symlink_metadata(path) {
        if meta.file_type().is_symlink() || meta.is_file() {
            fs::remove_file(path).map_err(local_error(path))?;
        }
    }
    fs::create_dir_all(path).map_err(local_error(path))
}

fn copy_symlink(
    path: &Path,
    target: &str,
    options: &CopyOptions,
    report: &mut CopyReport,
) -> Result<(), CopyError> {
    if fs::read_link(path)
        .map(|t| t == Path::new(target))
        .unwrap_or(false)
    {
        return Ok(());
    }
    report.symlinks += 1;
    if options.dry_run {
        report
            .plan
            .push(format!("symlink {} -> {target}", path.display()));
        return Ok(());
    }
    if let Ok(meta) = fs::symlink_metadata(path) {
        if meta.is_dir() {
            fs::remove_dir_all(path).map_err(local_error(path))?;
        } else {
            fs::remove_file(path).map_err(local_error(path))?;
        }
    }
    symlink(target, path).map_err(local_error(path))
}

fn plan_files(
    listing: &[Entry],
    local: impl Fn(&Entry) -> PathBuf,
    remote: impl Fn(&Entry) -> String,
    options: &CopyOptions,
    report: &mut CopyReport,
) -> Result<Vec<FetchRequest>, CopyError> {
    let mut requests = Vec::new();
    for entry in listing.iter().filter(|e| e.kind == EntryKind::File) {
        report.files += 1;
        let path = local(entry);
        let existing = fs::symlink_metadata(&path).ok();
        let up_to_date = !options.checksum
            && existing.as_ref().is_some_and(|meta| {
                use std::os::unix::fs::MetadataExt;
                meta.is_file()
                    && meta.len() == entry.size
                    && mtimes_match((meta.mtime(), meta.mtime_nsec() as u32), entry.mtime)
            });
        if up_to_date {
            report.skipped += 1;
            continue;
        }
        if options.dry_run {
            report
                .plan
                .push(format!("fetch {} ({} bytes)", path.display(), entry.size));
            continue;
        }
        let partial = partial_path(&path);
        // A partial copy from an interrupted run is the better basis; else the current file.
        let basis_is_destination =
            !partial.exists() && existing.as_ref().is_some_and(|m| m.is_file());
        let basis = if basis_is_destination {
            Some(path.clone())
        } else {
            Some(partial.clone()).filter(|p| p.exists())
        };
        requests.push(FetchRequest {
            remote_path: remote(entry),
            destination: path,
            basis,
            max_len: Some(entry.size),
            partial: Some(partial),
            in_place: options.in_place && basis_is_destination,
            link_identical: false,
        });
    }
    Ok(requests)
}

fn fetch(
    client: &mut dyn PullSource,
    requests: &[FetchRequest],
    options: &CopyOptions,
    report: &mut CopyReport,
    progress: &mut dyn FnMut(&FetchOutcome),
) -> Result<(), CopyError> {
    if requests.is_empty() || options.dry_run {
        return Ok(());
    }
    for outcome in client.fetch(requests, progress)? {
        let request = &requests[outcome.index];
        match outcome.result {
            Ok(fetched) => {
                report.transferred += 1;
                report.bytes += fetched.len;
                report.received_bytes += fetched.received_bytes;
                report.sent_bytes += fetched.signature_bytes;
                report.reused_bytes += fetched.reused_bytes;
                *report.verified_by.entry(fetched.verified_by).or_insert(0) += 1;
                if let Some(partial) = &request.partial {
                    let _ = fs::remove_file(partial);
                }
            }
            Err(message) => report.errors.push(message),
        }
    }
    Ok(())
}

fn delete_extraneous(
    root: &Path,
    keep: &BTreeSet<PathBuf>,
    options: &CopyOptions,
    report: &mut CopyReport,
) -> Result<(), CopyError> {
    let entries = fs::read_dir(root).map_err(local_error(root))?;
    for entry in entries {
        let entry = entry.map_err(local_error(root))?;
        let path = entry.path();
        let file_type = entry.file_type().map_err(local_error(&path))?;
        if keep.contains(&path) {
            if file_type.is_dir() {
                delete_extraneous(&path, keep, options, report)?;
            }
            continue;
        }
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().ends_with(".barsync-partial"))
        {
            continue; // kept for resuming; removed once its file is complete
        }
        report.deleted += 1;
        if options.dry_run {
            report.plan.push(format!("delete {}", path.display()));
        } else if file_type.is_dir() {
            fs::remove_dir_all(&path).map_err(local_error(&path))?;
        } else {
            fs::remove_file(&path).map_err(local_error(&path))?;
        }
    }
    Ok(())
}

/// Whether two modification times are the same file version: equal seconds, and equal
/// nanoseconds unless one side keeps only seconds (SFTP, some file systems), as rsync compares.
fn mtimes_match(a: (i64, u32), b: (i64, u32)) -> bool {
    a.0 == b.0 && (a.1 == b.1 || a.1 == 0 || b.1 == 0)
}

fn join_remote(base: &str, relative: &str) -> String {
    match (base.trim_end_matches('/'), relative) {
        (base, "") => base.to_string(),
        ("", relative) => relative.to_string(),
        (base, relative) => format!("{base}/{relative}"),
    }
}

fn same_file(local: &Entry, remote: Option<&Entry>, options: &CopyOptions) -> bool {
    !options.checksum
        && remote.is_some_and(|r| {
            r.kind == EntryKind::File && r.size == local.size && mtimes_match(r.mtime, local.mtime)
        })
}

/// Lists a local tree like the server lists its own (paths relative to `root`, symlinks not
/// followed).
pub fn local_entries(root: &Path) -> Result<Vec<Entry>, CopyError> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut pending = vec![RelativePath::new("").expect("empty is valid")];
    while let Some(dir) = pending.pop() {
        let dir_path = root.join(dir.as_str());
        for item in fs::read_dir(&dir_path).map_err(local_error(&dir_path))? {
            let item = item.map_err(local_error(&dir_path))?;
            let path = item.path();
            let meta = fs::symlink_metadata(&path).map_err(local_error(&path))?;
            let name = item.file_name().to_string_lossy().into_owned();
            let relative = dir.join(&name).map_err(|e| CopyError::Local {
                path: path.clone(),
                source: io::Error::other(e),
            })?;
            let kind = if meta.file_type().is_symlink() {
                EntryKind::Symlink
            } else if meta.is_dir() {
                EntryKind::Directory
            } else if meta.is_file() {
                EntryKind::File
            } else {
                continue;
            };
            let target = match kind {
                EntryKind::Symlink => Some(
                    fs::read_link(&path)
                        .map_err(local_error(&path))?
                        .to_string_lossy()
                        .into_owned(),
                ),
                _ => None,
            };
            if kind == EntryKind::Directory {
                pending.push(relative.clone());
            }
            out.push(Entry {
                path: relative,
                kind,
                size: if kind == EntryKind::File {
                    meta.len()
                } else {
                    0
                },
                mtime: (meta.mtime(), meta.mtime_nsec() as u32),
                mode: meta.mode() & 0o7777,
                target,
            });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Copies the local `source` to `destination` on the server.
/// `contents`: the source had a trailing slash (copy what is inside it).
pub fn push(
    client: &mut dyn PushTarget,
    source: &Path,
    contents: bool,
    destination: &str,
    options: &CopyOptions,
    mut progress: impl FnMut(&PushOutcome),
) -> Result<CopyReport, CopyError> {
    use std::collections::BTreeMap;
    use std::os::unix::fs::MetadataExt;
    let mut report = CopyReport::default();
    let meta = fs::symlink_metadata(source).map_err(local_error(source))?;
    let name = source
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let traffic_before = client.traffic();
    let mut items = Vec::new();
    if meta.is_file() {
        let listed = client.list(destination, false)?;
        let target = match &listed {
            Ok(entries) if !(entries.len() == 1 && entries[0].path.as_str().is_empty()) => {
                join_remote(destination, &name)
            }
            _ => destination.to_string(),
        };
        let remote = match client.list(&target, false)? {
            Ok(entries) if entries.len() == 1 && entries[0].path.as_str().is_empty() => {
                Some(entries[0].clone())
            }
            _ => None,
        };
        let local = Entry {
            path: RelativePath::new("").expect("empty is valid"),
            kind: EntryKind::File,
            size: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec() as u32),
            mode: meta.mode() & 0o7777,
            target: None,
        };
        report.files = 1;
        if same_file(&local, remote.as_ref(), options) {
            report.skipped = 1;
        } else {
            items.push(PushItem::File {
                local: source.to_path_buf(),
                remote_path: target,
            });
        }
    } else {
        if !options.recursive {
            return Err(CopyError::NotRecursive(source.display().to_string()));
        }
        let remote_root = if contents {
            destination.to_string()
        } else {
            join_remote(destination, &name)
        };
        if !contents && !destination.is_empty() && client.list(destination, false)?.is_err() {
            // As rsync: a missing destination directory is created (its parent must exist).
            items.push(PushItem::Directory {
                remote_path: destination.to_string(),
                mode: 0o755,
            });
        }
        let remote: BTreeMap<String, Entry> = match client.list(&remote_root, true)? {
            Ok(entries) => entries
                .into_iter()
                .map(|e| (e.path.as_str().to_string(), e))
                .collect(),
            Err(_) => {
                items.push(PushItem::Directory {
                    remote_path: remote_root.clone(),
                    mode: meta.mode() & 0o7777,
                });
                BTreeMap::new()
            }
        };
        let local = local_entries(source)?;
        let local_paths: BTreeSet<&str> = local.iter().map(|e| e.path.as_str()).collect();
        for entry in &local {
            let remote_path = join_remote(&remote_root, entry.path.as_str());
            let there = remote.get(entry.path.as_str());
            match entry.kind {
                EntryKind::Directory if there.map(|r| r.kind) != Some(EntryKind::Directory) => {
                    items.push(PushItem::Directory {
                        remote_path,
                        mode: entry.mode,
                    });
                }
                EntryKind::Symlink
                    if there.and_then(|r| r.target.as_deref()) != entry.target.as_deref() =>
                {
                    report.symlinks += 1;
                    items.push(PushItem::Symlink {
                        remote_path,
                        target: entry.target.clone().unwrap_or_default(),
                    });
                }
                EntryKind::File => {
                    report.files += 1;
                    if same_file(entry, there, options) {
                        report.skipped += 1;
                    } else {
                        items.push(PushItem::File {
                            local: source.join(entry.path.as_str()),
                            remote_path,
                        });
                    }
                }
                _ => {}
            }
        }
        if options.delete {
            let mut removed: Vec<&str> = Vec::new();
            for path in remote.keys() {
                let inside_removed = removed.iter().any(|r| path.starts_with(&format!("{r}/")));
                if !local_paths.contains(path.as_str()) && !inside_removed {
                    removed.push(path);
                    report.deleted += 1;
                    items.push(PushItem::Remove {
                        remote_path: join_remote(&remote_root, path),
                    });
                }
            }
        }
    }
    if options.dry_run {
        for item in &items {
            report.plan.push(match item {
                PushItem::Directory { remote_path, .. } => format!("mkdir {remote_path}"),
                PushItem::Symlink {
                    remote_path,
                    target,
                } => format!("symlink {remote_path} -> {target}"),
                PushItem::File { local, remote_path } => {
                    format!("send {} -> {remote_path}", local.display())
                }
                PushItem::Remove { remote_path } => format!("delete {remote_path}"),
            });
        }
        return Ok(report);
    }
    let verified_by = client.verified_by();
    for outcome in client.apply(&items, &mut progress)? {
        match (&items[outcome.index], outcome.result) {
            (PushItem::File { local, .. }, Ok(())) => {
                report.transferred += 1;
                report.bytes += fs::metadata(local).map(|m| m.len()).unwrap_or(0);
                *report.verified_by.entry(verified_by).or_insert(0) += 1;
            }
            (_, Ok(())) => {}
            (_, Err(message)) => report
                .errors
                .push(format!("{}: {message}", outcome.remote_path)),
        }
    }
    if let (Some((sent0, received0)), Some((sent1, received1))) = (traffic_before, client.traffic())
    {
        report.sent_bytes = sent1 - sent0;
        report.received_bytes = received1 - received0;
    }
    Ok(report)
}
