//! Pulling a tree from the far side into a local directory: list the source, plan
//! (directories, symlinks, which files need fetching and from what basis), fetch, and with
//! `delete` remove local entries the source no longer has.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use super::{
    local_error, mtimes_match, partial_path, CopyError, CopyOptions, CopyReport, PullSource,
};
use crate::protocol::{Entry, EntryKind, FetchOutcome, FetchRequest};

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
            part: None,
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
