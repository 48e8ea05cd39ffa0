//! Pulling a tree from the far side into a local directory: list the source, refuse entries
//! that do not fit together, create the directories, plan which files need fetching and from
//! what basis, fetch, create the symlinks, and with `delete` remove local entries the source no
//! longer has.
//!
//! The listing comes from the far side and is not trusted: every directory and file is
//! reached from the destination root one component at a time without following symlinks
//! ([`Destination`], [`make_dirs_below`]), symlinks are created last and never traversed, and
//! `delete` walks by directory handles.
//!
//! [`pull`] lists and fetches on one session; [`pull_pooled`] lists on one and fetches through
//! the fetch layer's pool ([`crate::fetch`]): several sessions, very large files split into
//! parts they share, failed files fetched again.

use crate::names::shown_path;
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::{
    local_error, mtimes_match, partial_path, CopyError, CopyOptions, CopyReport, PullSource,
};
use crate::confine::{make_dirs_below, open_below, Destination, InTheWay, RelativePath};
use crate::fetch::{
    run_jobs_retrying, FetchEvents, FetchSession, Job, PoolSettings, SessionSource,
};
use crate::file_error::FileError;
use crate::fs::{names_in, remove_at};
use crate::protocol::{
    Entry, EntryKind, FetchOutcome, FetchReport, FetchRequest, FetchTarget, WriteMode,
};

/// What the planning of a pull lists from and fetches through.
trait Fetcher {
    /// The far side's listing of `path`.
    fn list(&mut self, path: &Path, recursive: bool) -> Result<Vec<Entry>, CopyError>;
    /// Fetches `requests` (files of the declared `sizes`), counting them in `report`.
    fn fetch(
        &mut self,
        requests: &[FetchRequest],
        sizes: &[u64],
        report: &mut CopyReport,
    ) -> Result<(), CopyError>;
}

/// One session lists and fetches.
struct OneSession<'a> {
    client: &'a mut dyn PullSource,
    progress: &'a mut dyn FnMut(&FetchOutcome),
}

impl Fetcher for OneSession<'_> {
    fn list(&mut self, path: &Path, recursive: bool) -> Result<Vec<Entry>, CopyError> {
        self.client
            .list(path, recursive)?
            .map_err(CopyError::Listing)
    }

    fn fetch(
        &mut self,
        requests: &[FetchRequest],
        _sizes: &[u64],
        report: &mut CopyReport,
    ) -> Result<(), CopyError> {
        for outcome in self.client.fetch(requests, self.progress)? {
            count_fetched(&requests[outcome.index], outcome.result, report);
        }
        Ok(())
    }
}

/// How [`pull_pooled`] fetches: the sessions, how many and how, and who hears of each file.
pub struct PullPool<'a, S: SessionSource> {
    /// Opens the sessions.
    pub sessions: &'a S,
    /// Sessions at most, split parts, retries.
    pub settings: PoolSettings,
    /// Hears each file (and part) as it arrives, and the pool's warnings.
    pub events: &'a dyn FetchEvents,
}

/// The first session lists; the pool fetches on as many as the settings allow.
struct Pooled<'a, S: SessionSource> {
    pool: &'a PullPool<'a, S>,
    /// The session that lists, until the pool takes it.
    first: Option<S::Session>,
}

impl<S: SessionSource> Fetcher for Pooled<'_, S> {
    fn list(&mut self, path: &Path, recursive: bool) -> Result<Vec<Entry>, CopyError> {
        let session = self
            .first
            .as_mut()
            .ok_or_else(|| CopyError::Remote("no session to list with".to_owned()))?;
        session
            .source()
            .list(path, recursive)?
            .map_err(CopyError::Listing)
    }

    fn fetch(
        &mut self,
        requests: &[FetchRequest],
        sizes: &[u64],
        report: &mut CopyReport,
    ) -> Result<(), CopyError> {
        let jobs: Vec<Job> = requests
            .iter()
            .zip(sizes)
            .map(|(request, &size)| Job {
                request: request.clone(),
                size,
            })
            .collect();
        let pool = run_jobs_retrying(
            self.pool.sessions,
            self.first.take(),
            &jobs,
            &self.pool.settings,
            self.pool.events,
        );
        for (request, result) in requests.iter().zip(pool.results) {
            count_fetched(request, result, report);
        }
        report.errors.extend(pool.session_errors);
        report.sessions += pool.totals.sessions;
        report.split_files += pool.totals.split_files;
        report.parts += pool.totals.parts;
        // The sessions' own counters (listing and protocol included) replace the files' sums.
        report.received_bytes = pool.totals.received_bytes;
        report.sent_bytes = pool.totals.sent_bytes;
        Ok(())
    }
}

/// Counts one fetched file (or its failure) in `report`.
fn count_fetched(
    request: &FetchRequest,
    result: Result<FetchReport, FileError>,
    report: &mut CopyReport,
) {
    match result {
        Ok(fetched) => {
            report.transferred += 1;
            report.bytes += fetched.len;
            report.received_bytes += fetched.received_bytes;
            report.sent_bytes += fetched.signature_bytes;
            report.reused_bytes += fetched.reused_bytes;
            if let Some(path) = fetched.copied_by {
                *report.reused_by.entry(path.label()).or_insert(0) += fetched.reused_bytes;
            }
            *report
                .verified_by
                .entry(fetched.verified_by.label())
                .or_insert(0) += 1;
            let _ = request.remove_partial();
        }
        Err(failure) => report.errors.push(failure.to_string()),
    }
}

/// Copies `source` (a path the far side resolves) to `destination`.
/// `contents`: the source had a trailing slash (copy what is inside it).
pub fn pull(
    client: &mut dyn PullSource,
    source: &Path,
    contents: bool,
    destination: &Path,
    options: &CopyOptions,
    mut progress: impl FnMut(&FetchOutcome),
) -> Result<CopyReport, CopyError> {
    let traffic_before = client.traffic();
    let mut one = OneSession {
        client: &mut *client,
        progress: &mut progress,
    };
    let mut report = pull_inner(&mut one, source, contents, destination, options)?;
    report.sessions = 1;
    if let (Some((sent0, received0)), Some((sent1, received1))) = (traffic_before, client.traffic())
    {
        report.sent_bytes = sent1 - sent0;
        report.received_bytes = received1 - received0;
    }
    Ok(report)
}

/// [`pull`], listing on `first` and fetching through the fetch layer's pool: up to
/// `settings.workers` sessions of `pool.sessions` (`first` among them), files of at least
/// twice `settings.part_size` split into parts they share, failed files fetched again
/// `settings.retry.times` rounds.
pub fn pull_pooled<S: SessionSource>(
    pool: &PullPool<'_, S>,
    first: S::Session,
    source: &Path,
    contents: bool,
    destination: &Path,
    options: &CopyOptions,
) -> Result<CopyReport, CopyError> {
    let sessions = pool.sessions;
    let mut pooled = Pooled {
        pool,
        first: Some(first),
    };
    let report = pull_inner(&mut pooled, source, contents, destination, options);
    // Nothing to fetch (or a failure first): the listing session never went to the pool.
    let mut report = match pooled.first.take() {
        Some(mut unused) => {
            let traffic = unused.take_traffic();
            let released = sessions.release(unused);
            let mut report = report?;
            report.sessions = 1;
            if let Some((sent, received)) = traffic {
                report.sent_bytes = sent;
                report.received_bytes = received;
            }
            if let Err(error) = released {
                report.errors.push(error.to_string());
            }
            report
        }
        None => report?,
    };
    report.sessions = report.sessions.max(1);
    Ok(report)
}

fn pull_inner(
    fetcher: &mut dyn Fetcher,
    source: &Path,
    contents: bool,
    destination: &Path,
    options: &CopyOptions,
) -> Result<CopyReport, CopyError> {
    let listing = fetcher.list(source, options.recursive)?;
    // `Path::file_name` ignores trailing slashes.
    let source_name = source.file_name().map(|n| n.to_owned());
    let single_file =
        listing.len() == 1 && listing[0].path.is_empty() && listing[0].kind == EntryKind::File;
    let mut report = CopyReport::default();
    if single_file {
        let target = match (destination.is_dir(), &source_name) {
            (true, Some(name)) => destination.join(name),
            _ => destination.to_path_buf(),
        };
        let target = Destination::trusted(&target).map_err(|e| CopyError::Local {
            path: target.clone(),
            source: io::Error::new(io::ErrorKind::InvalidInput, e),
        })?;
        let (requests, sizes) = plan_files(
            &listing,
            |_| target.clone(),
            |_| source.to_path_buf(),
            options,
            &mut report,
        )?;
        fetch(fetcher, &requests, &sizes, options, &mut report)?;
        return Ok(report);
    }
    if !options.recursive && listing.iter().any(|e| e.kind != EntryKind::File) {
        return Err(CopyError::NotRecursive(shown_path(source)));
    }
    let listing = consistent_entries(listing, &mut report);
    let root = match (contents, &source_name) {
        (false, Some(name)) => destination.join(name),
        _ => destination.to_path_buf(),
    };
    // `Path::join` of an empty relative path would add a trailing slash.
    let remote = |entry: &Entry| {
        if entry.path.is_empty() {
            source.to_path_buf()
        } else {
            source.join(entry.path.as_path())
        }
    };
    let local = |entry: &Entry| {
        Destination::new(root.clone(), entry.path.clone()).expect("the root itself is not listed")
    };
    if !options.dry_run {
        make_directory(&root)?;
    }
    // Directories, then files, then symlinks: each file and directory is reached from the
    // root without following any symlink, and a symlink from the listing is only created once
    // nothing more is written below the root.
    for entry in listing.iter().filter(|e| e.kind == EntryKind::Directory) {
        if options.dry_run {
            if !local(entry).path().is_dir() {
                report
                    .plan
                    .push(format!("mkdir {}", shown_path(&local(entry).path())));
            }
        } else {
            make_dirs_below(&root, &entry.path, InTheWay::Replace)
                .map_err(local_error(&local(entry).path()))?;
        }
    }
    let (requests, sizes) = plan_files(&listing, local, remote, options, &mut report)?;
    fetch(fetcher, &requests, &sizes, options, &mut report)?;
    for entry in listing.iter().filter(|e| e.kind == EntryKind::Symlink) {
        let at = local(entry);
        let target = entry.target.as_deref().unwrap_or_default();
        if let Err(error) = copy_symlink(&at, target, options, &mut report) {
            report.errors.push(error.to_string());
        }
    }
    if options.delete {
        let keep: BTreeSet<&[u8]> = listing.iter().map(|e| e.path.as_bytes()).collect();
        let dir = open_below(&root, &RelativePath::new("").expect("empty is valid"), true)
            .map_err(local_error(&root))?;
        let top = RelativePath::new("").expect("empty is valid");
        delete_extraneous(&root, &dir, &top, &keep, options, &mut report)?;
    }
    Ok(report)
}

/// The entries of a recursive listing that fit together: each entry's parent is the root or
/// a directory of the listing, and no path is listed twice. The others (what a hostile or
/// confused far side could send: `a` a symlink and then `a/x`) are refused, each named in
/// the report, and so is everything below them.
fn consistent_entries(listing: Vec<Entry>, report: &mut CopyReport) -> Vec<Entry> {
    use std::collections::BTreeMap;
    let parent_of = |path: &[u8]| -> Vec<u8> {
        path[..path.iter().rposition(|&b| b == b'/').unwrap_or(0)].to_vec()
    };
    let mut count: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    for entry in &listing {
        *count.entry(entry.path.as_bytes().to_vec()).or_default() += 1;
    }
    let twice: BTreeSet<Vec<u8>> = count
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(path, _)| path)
        .collect();
    let directories: BTreeSet<Vec<u8>> = listing
        .iter()
        .filter(|e| e.kind == EntryKind::Directory && !twice.contains(e.path.as_bytes()))
        .map(|e| e.path.as_bytes().to_vec())
        .collect();
    let mut kept = Vec::with_capacity(listing.len());
    let mut refused = BTreeSet::new();
    for entry in listing {
        let path = entry.path.as_bytes();
        let parent = parent_of(path);
        // An ancestor refused makes its parent refused too: parents are checked all the way up.
        let parents_ok = {
            let mut at = parent.clone();
            loop {
                if at.is_empty() {
                    break true;
                }
                if !directories.contains(&at) {
                    break false;
                }
                at = parent_of(&at);
            }
        };
        let reason = if twice.contains(path) {
            Some("it is listed twice".to_string())
        } else if !parents_ok {
            Some(format!(
                "{} is not a directory of the listing",
                crate::names::shown_bytes(&parent)
            ))
        } else {
            None
        };
        match reason {
            Some(reason) if refused.insert(path.to_vec()) => report.errors.push(format!(
                "refused {} from the far side's listing: {reason}",
                entry.path.shown()
            )),
            Some(_) => {}
            None => kept.push(entry),
        }
    }
    kept
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

/// Creates (or replaces) the symlink `at`, in its directory reached from the root without
/// following symlinks; the new link is never followed either.
fn copy_symlink(
    at: &Destination,
    target: &OsStr,
    options: &CopyOptions,
    report: &mut CopyReport,
) -> Result<(), CopyError> {
    let path = at.path();
    let dir = match at.open_parent() {
        Ok(dir) => Some(dir),
        Err(_) if options.dry_run => None,
        Err(e) => return Err(local_error(&path)(e)),
    };
    let name = at.file_name();
    if let Some(dir) = &dir {
        if rustix::fs::readlinkat(dir, name, Vec::new())
            .map(|t| t.as_bytes() == target.as_bytes())
            .unwrap_or(false)
        {
            return Ok(());
        }
    }
    report.symlinks += 1;
    if options.dry_run {
        report.plan.push(format!(
            "symlink {} -> {}",
            shown_path(&path),
            shown_path(Path::new(target))
        ));
        return Ok(());
    }
    let dir = dir.expect("opened unless a dry run");
    match remove_at(&dir, name) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(local_error(&path)(e)),
    }
    rustix::fs::symlinkat(target, &dir, name).map_err(|e| local_error(&path)(e.into()))
}

/// The files to fetch, with the sizes the far side declared.
fn plan_files(
    listing: &[Entry],
    local: impl Fn(&Entry) -> Destination,
    remote: impl Fn(&Entry) -> PathBuf,
    options: &CopyOptions,
    report: &mut CopyReport,
) -> Result<(Vec<FetchRequest>, Vec<u64>), CopyError> {
    let mut requests = Vec::new();
    let mut sizes = Vec::new();
    for entry in listing.iter().filter(|e| e.kind == EntryKind::File) {
        report.files += 1;
        let destination = local(entry);
        let path = destination.path();
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
            report.plan.push(format!(
                "fetch {} ({} bytes)",
                shown_path(&path),
                entry.size
            ));
            continue;
        }
        let partial = partial_path(&path);
        // A partial copy from an interrupted run is the better basis; else the current file.
        let partial_exists = fs::symlink_metadata(&partial).is_ok_and(|m| m.is_file());
        let basis_is_destination =
            !partial_exists && existing.as_ref().is_some_and(|m| m.is_file());
        let basis = if basis_is_destination {
            Some(path.clone())
        } else {
            Some(partial.clone()).filter(|_| partial_exists)
        };
        requests.push(FetchRequest {
            remote_path: remote(entry),
            destination,
            basis,
            max_len: Some(entry.size),
            partial: Some(partial),
            target: FetchTarget::WholeFile(if options.in_place && basis_is_destination {
                WriteMode::InPlace
            } else {
                WriteMode::NewFile
            }),
        });
        sizes.push(entry.size);
    }
    Ok((requests, sizes))
}

fn fetch(
    fetcher: &mut dyn Fetcher,
    requests: &[FetchRequest],
    sizes: &[u64],
    options: &CopyOptions,
    report: &mut CopyReport,
) -> Result<(), CopyError> {
    if requests.is_empty() || options.dry_run {
        return Ok(());
    }
    fetcher.fetch(requests, sizes, report)
}

/// Removes what `keep` (paths below the root) does not name, walking the open directory `dir`
/// (`relative` below `root`, for messages) by handles: no symlink is followed.
fn delete_extraneous(
    root: &Path,
    dir: &OwnedFd,
    relative: &RelativePath,
    keep: &BTreeSet<&[u8]>,
    options: &CopyOptions,
    report: &mut CopyReport,
) -> Result<(), CopyError> {
    let here = root.join(relative.as_path());
    for name in names_in(dir).map_err(local_error(&here))? {
        let path = relative
            .join(&name)
            .map_err(|e| local_error(&here.join(&name))(io::Error::other(e)))?;
        let stat = rustix::fs::statat(dir, &name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| local_error(&here.join(&name))(e.into()))?;
        let is_dir =
            rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::Directory;
        if keep.contains(path.as_bytes()) {
            if is_dir {
                let flags = rustix::fs::OFlags::RDONLY
                    | rustix::fs::OFlags::DIRECTORY
                    | rustix::fs::OFlags::NOFOLLOW
                    | rustix::fs::OFlags::CLOEXEC;
                let child = rustix::fs::openat(dir, &name, flags, rustix::fs::Mode::empty())
                    .map_err(|e| local_error(&here.join(&name))(e.into()))?;
                delete_extraneous(root, &child, &path, keep, options, report)?;
            }
            continue;
        }
        if name
            .as_bytes()
            .ends_with(crate::names::PARTIAL_SUFFIX.as_bytes())
        {
            continue; // kept for resuming; removed once its file is complete
        }
        report.deleted += 1;
        if options.dry_run {
            report
                .plan
                .push(format!("delete {}", shown_path(&root.join(path.as_path()))));
        } else {
            remove_at(dir, &name).map_err(local_error(&root.join(path.as_path())))?;
        }
    }
    Ok(())
}
