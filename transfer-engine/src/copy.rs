//! Copying a tree from a session's server to a local directory (the pull side of `barsync copy`).
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

use crate::protocol::{Client, Entry, EntryKind, FetchOutcome, FetchRequest, ProtocolError};

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
    /// Bytes received from the server for them.
    pub received_bytes: u64,
    /// Bytes of signatures sent.
    pub sent_bytes: u64,
    /// Bytes rebuilt from local data rather than received.
    pub reused_bytes: u64,
    /// Symlinks created or replaced.
    pub symlinks: u64,
    /// Local entries removed by `delete`.
    pub deleted: u64,
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

/// Copies `source` (a path the server resolves) to `destination`.
/// `contents`: the source had a trailing slash (copy what is inside it).
pub fn pull<R: Read, W: Write + Send>(
    client: &mut Client<R, W>,
    source: &str,
    contents: bool,
    destination: &Path,
    options: &CopyOptions,
    progress: impl FnMut(&FetchOutcome),
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
                    && (meta.mtime(), meta.mtime_nsec() as u32) == entry.mtime
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
        let basis = if partial.exists() {
            Some(partial.clone())
        } else {
            existing.filter(|m| m.is_file()).map(|_| path.clone())
        };
        requests.push(FetchRequest {
            remote_path: remote(entry),
            destination: path,
            basis,
            max_len: Some(entry.size),
            partial: Some(partial),
        });
    }
    Ok(requests)
}

fn fetch<R: Read, W: Write + Send>(
    client: &mut Client<R, W>,
    requests: &[FetchRequest],
    options: &CopyOptions,
    report: &mut CopyReport,
    progress: impl FnMut(&FetchOutcome),
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
