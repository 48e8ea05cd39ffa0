//! The copy scheduler: many file jobs run on several sessions of a [`SessionSource`].
//!
//! Jobs are sorted largest first and cut into chunks: a large file (or a part of a split file)
//! is a chunk of its own, small files travel in groups (so each session pipelines many
//! requests). Workers take the next chunk from one queue as they finish the last, so none
//! idles while work remains. A session that breaks fails the rest of its chunk only (the files
//! it had already verified and published keep their success); the worker opens a new one for
//! its next chunk, and the files that failed are left for the retry round or the next run,
//! which resume from what was received. A full disk stops the copy: no new chunk is started
//! (its files are [`FileErrorKind::NotAttempted`]) and nothing is fetched again, so the
//! operator hears of the full disk once instead of every remaining file failing on it.
//! Very large files are first split into parts (`split.rs`), which are jobs like others.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::file_error::{FileError, FileErrorKind};
use crate::protocol::{FetchOutcome, FetchReport, FetchRequest};

use super::session::{FetchEvents, FetchSession, SessionSource};
use super::split::{split_jobs, worth_splitting};
use super::TransferTotals;

/// Files at least this large are a chunk of their own (so are parts of split files).
const LARGE_FILE: u64 = 16 << 20;
/// Limits of a chunk of small files.
const CHUNK_FILES: usize = 256;
const CHUNK_BYTES: u64 = 64 << 20;

/// One file to copy.
#[derive(Debug, Clone)]
pub struct Job {
    /// What to fetch, and where to.
    pub request: FetchRequest,
    /// The size the primary declared.
    pub size: u64,
}

/// What running the jobs did.
#[derive(Debug, Default)]
pub struct PoolReport {
    /// One result per job, in job order.
    pub results: Vec<Result<FetchReport, FileError>>,
    /// What the sessions moved.
    pub totals: TransferTotals,
    /// Sessions that could not be opened or closed cleanly.
    pub session_errors: Vec<String>,
}

impl PoolReport {
    /// The failures, each naming its file.
    pub fn failures(&self) -> impl Iterator<Item = &FileError> {
        self.results.iter().filter_map(|r| r.as_ref().err())
    }

    /// `Err` with the failure that matters most (a full disk, else the first) and how many
    /// more there were, `Ok` when every file made it.
    pub fn check(&self) -> Result<(), FilesFailed> {
        let failures: Vec<&FileError> = self.failures().collect();
        let first = failures
            .iter()
            .find(|e| e.is_out_of_space())
            .or(failures.first());
        match first {
            None => Ok(()),
            Some(first) => Err(FilesFailed {
                first: (*first).clone(),
                more: failures.len() - 1,
            }),
        }
    }
}

/// Files of a copy that did not arrive: the one that matters most, and how many others.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{first}{}", and_more(*more))]
pub struct FilesFailed {
    /// A full disk if that was one of the failures, else the first failure.
    pub first: FileError,
    /// How many other files failed.
    pub more: usize,
}

fn and_more(more: usize) -> String {
    match more {
        0 => String::new(),
        more => format!(" (and {more} more files)"),
    }
}

/// Why a chunk was never started: an earlier file found the disk full.
fn stopped_by_full_disk() -> FileError {
    FileError::new(
        FileErrorKind::NotAttempted,
        "not tried: the copy stopped when the disk filled up",
    )
}

/// Splits job indices (largest first) into chunks.
fn chunks(jobs: &[Job]) -> VecDeque<Vec<usize>> {
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by(|&a, &b| jobs[b].size.cmp(&jobs[a].size).then(a.cmp(&b)));
    let mut chunks = VecDeque::new();
    let mut current: Vec<usize> = Vec::new();
    let mut current_bytes = 0u64;
    for index in order {
        let size = jobs[index].size;
        if size >= LARGE_FILE || jobs[index].request.target.part().is_some() {
            chunks.push_back(vec![index]);
            continue;
        }
        if current.len() >= CHUNK_FILES || current_bytes + size > CHUNK_BYTES {
            chunks.push_back(std::mem::take(&mut current));
            current_bytes = 0;
        }
        current.push(index);
        current_bytes += size;
    }
    if !current.is_empty() {
        chunks.push_back(current);
    }
    chunks
}

/// Runs `jobs` on up to `workers` sessions of `link`; `first` is a session already open (used
/// by the first worker).
pub fn run_jobs<S: SessionSource>(
    link: &S,
    first: Option<S::Session>,
    jobs: &[Job],
    workers: usize,
    events: &dyn FetchEvents,
) -> PoolReport {
    let queue = Mutex::new(chunks(jobs));
    let workers = workers.max(1).min(queue.lock().unwrap().len().max(1));
    let results: Mutex<Vec<Option<Result<FetchReport, FileError>>>> =
        Mutex::new((0..jobs.len()).map(|_| None).collect());
    let disk_full = AtomicBool::new(false);
    let totals = Mutex::new(TransferTotals::default());
    let session_errors = Mutex::new(Vec::new());
    let mut first = first;
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let session = first.take();
            let opened_before = u64::from(session.is_some());
            let (queue, results, totals, session_errors, disk_full) =
                (&queue, &results, &totals, &session_errors, &disk_full);
            scope.spawn(move || {
                let mut worker = Worker {
                    link,
                    jobs,
                    events,
                    session,
                    totals: TransferTotals {
                        sessions: opened_before,
                        ..TransferTotals::default()
                    },
                    errors: Vec::new(),
                };
                loop {
                    if disk_full.load(Ordering::Relaxed) {
                        break;
                    }
                    let Some(chunk) = queue.lock().unwrap().pop_front() else {
                        break;
                    };
                    let outcomes = worker.run_chunk(&chunk);
                    if outcomes
                        .iter()
                        .any(|r| r.as_ref().is_err_and(FileError::is_out_of_space))
                    {
                        disk_full.store(true, Ordering::Relaxed);
                    }
                    let mut results = results.lock().unwrap();
                    for (index, result) in chunk.iter().zip(outcomes) {
                        results[*index] = Some(result);
                    }
                }
                worker.close_session();
                totals.lock().unwrap().add(&worker.totals);
                session_errors.lock().unwrap().extend(worker.errors);
            });
        }
    });
    if let Some(unused) = first {
        let _ = link.release(unused);
    }
    let results = results
        .into_inner()
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(stopped_by_full_disk())))
        .collect();
    PoolReport {
        results,
        totals: totals.into_inner().unwrap(),
        session_errors: session_errors.into_inner().unwrap(),
    }
}

/// How often failed files are fetched again within one run, and after what pause.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Rounds of fetching the failed files again.
    pub times: u32,
    /// The pause before each round.
    pub sleep: std::time::Duration,
}

/// How a copy uses its sessions.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    /// Sessions at most.
    pub workers: usize,
    /// Fetching failed files again.
    pub retry: Retry,
    /// Files of at least twice this size are split into parts of this size and shared by the
    /// sessions (`split.rs`); 0 never splits.
    pub part_size: u64,
}

/// Runs `jobs` on up to `settings.workers` sessions ([`run_jobs`]), splitting very large files
/// into parts when there is more than one session and the far side serves ranges,
/// then fetches the failed files (or parts) again, on new sessions, up to `retry.times` rounds:
/// a file corrupted in flight or a session cut costs a second fetch, not a failed backup.
pub fn run_jobs_retrying<S: SessionSource>(
    link: &S,
    first: Option<S::Session>,
    jobs: &[Job],
    settings: &PoolSettings,
    events: &dyn FetchEvents,
) -> PoolReport {
    let mut first = first;
    let part_size = if settings.workers > 1
        && jobs
            .iter()
            .any(|job| worth_splitting(job, settings.part_size))
    {
        if first.is_none() {
            first = link.reuse().or_else(|| link.open(events).ok());
        }
        match &first {
            Some(session) if session.supports_parts() => settings.part_size,
            _ => 0,
        }
    } else {
        0
    };
    let split = split_jobs(jobs, part_size);
    let mut report = run_jobs_again(link, first, &split.jobs, settings, events);
    report.results = split.gather(report.results, &mut report.totals, events);
    report
}

/// [`run_jobs`], then the failed jobs again up to `settings.retry.times` rounds.
fn run_jobs_again<S: SessionSource>(
    link: &S,
    first: Option<S::Session>,
    jobs: &[Job],
    settings: &PoolSettings,
    events: &dyn FetchEvents,
) -> PoolReport {
    let mut report = run_jobs(link, first, jobs, settings.workers, events);
    for _ in 0..settings.retry.times {
        if report.failures().any(FileError::is_out_of_space) {
            break; // fetching again would only fill the disk again
        }
        let failed: Vec<usize> = (0..jobs.len())
            .filter(|&i| {
                report.results[i]
                    .as_ref()
                    .is_err_and(|e| e.kind.worth_retrying())
            })
            .collect();
        let Some(&first_failure) = failed.first() else {
            break;
        };
        events.warning(&format!(
            "{} files failed (first: {}); fetching them again",
            failed.len(),
            report.results[first_failure]
                .as_ref()
                .err()
                .map(|e| e.detail.as_str())
                .unwrap_or_default()
        ));
        std::thread::sleep(settings.retry.sleep);
        let again: Vec<Job> = failed.iter().map(|&i| jobs[i].clone()).collect();
        let second = run_jobs(link, None, &again, settings.workers, events);
        for (&index, result) in failed.iter().zip(second.results) {
            report.results[index] = result;
        }
        let mut totals = second.totals;
        // Files and bytes are counted by the callers from their plan; traffic adds up.
        totals.files = 0;
        totals.bytes = 0;
        report.totals.add(&totals);
        report.session_errors.extend(second.session_errors);
    }
    report
}

struct Worker<'a, S: SessionSource> {
    link: &'a S,
    jobs: &'a [Job],
    events: &'a dyn FetchEvents,
    session: Option<S::Session>,
    totals: TransferTotals,
    errors: Vec<String>,
}

impl<S: SessionSource> Worker<'_, S> {
    /// Copies one chunk; one result per job of the chunk.
    fn run_chunk(&mut self, chunk: &[usize]) -> Vec<Result<FetchReport, FileError>> {
        if self.session.is_none() {
            // A session left open by an earlier copy of the same run counts as used here.
            self.session = self.link.reuse();
            self.totals.sessions += u64::from(self.session.is_some());
        }
        if self.session.is_none() {
            match self.link.open(self.events) {
                Ok(session) => {
                    self.totals.sessions += 1;
                    self.session = Some(session);
                }
                Err(error) => {
                    let failure = FileError::new(FileErrorKind::SessionLost, error.to_string());
                    return chunk
                        .iter()
                        .map(|&i| Err(failure.clone().for_file(&self.jobs[i].request.remote_path)))
                        .collect();
                }
            }
        }
        let requests: Vec<FetchRequest> = chunk
            .iter()
            .map(|&i| self.jobs[i].request.clone())
            .collect();
        let session = self.session.as_mut().expect("opened above");
        let events = self.events;
        // What each request ended as, as reported: when the session breaks later in the
        // chunk, the files already verified and published keep their success (fetching them
        // again would be waste, and a link published twice is not a no-op to rely on).
        let mut reported: Vec<Option<Result<FetchReport, FileError>>> =
            chunk.iter().map(|_| None).collect();
        // A part is not a file: its file is reported once finished.
        let mut progress = |outcome: &FetchOutcome| {
            match (requests[outcome.index].target.part(), &outcome.result) {
                (None, result) => events.file_done(&outcome.remote_path, result),
                (Some(_), Ok(report)) => events.part_done(&outcome.remote_path, report.len),
                (Some(_), Err(_)) => {}
            }
            if let Some(slot) = reported.get_mut(outcome.index) {
                *slot = Some(outcome.result.clone());
            }
        };
        let fetched = session.source().fetch(&requests, &mut progress);
        match fetched {
            Ok(outcomes) => {
                let mut results: Vec<Result<FetchReport, FileError>> = requests
                    .iter()
                    .map(|request| {
                        Err(FileError::new(FileErrorKind::SessionLost, "no answer")
                            .for_file(&request.remote_path))
                    })
                    .collect();
                for outcome in outcomes {
                    if let Ok(report) = &outcome.result {
                        self.count(report, requests[outcome.index].target.part().is_some());
                    }
                    results[outcome.index] = outcome.result;
                }
                results
            }
            Err(error) => {
                // The session broke: files already verified were published (the next run
                // skips them); the rest of this chunk failed. The next chunk reconnects.
                let peer = session.peer().to_owned();
                if let Some(mut broken) = self.session.take() {
                    self.add_traffic(&mut broken);
                }
                let lost = FileError::new(FileErrorKind::SessionLost, format!("{peer}: {error}"));
                let results: Vec<Result<FetchReport, FileError>> = reported
                    .into_iter()
                    .zip(&requests)
                    .map(|(done, request)| {
                        done.unwrap_or_else(|| Err(lost.clone().for_file(&request.remote_path)))
                    })
                    .collect();
                for (index, result) in results.iter().enumerate() {
                    if let Ok(report) = result {
                        self.count(report, requests[index].target.part().is_some());
                    }
                }
                results
            }
        }
    }

    /// Adds a fetched file (or, with `part`, a part: its file is counted when finished).
    fn count(&mut self, report: &FetchReport, part: bool) {
        self.totals.bytes += report.len;
        self.totals.reused_bytes += report.reused_bytes;
        if part {
            return;
        }
        self.totals.files += 1;
        if report.linked {
            self.totals.linked += 1;
        }
        *self
            .totals
            .verified_by
            .entry(report.verified_by)
            .or_default() += 1;
        if report.signature_bytes == 0 && report.digest.is_none() {
            // SFTP: no traffic counter; what was received is the file data.
            self.totals.received_bytes += report.received_bytes;
        }
    }

    fn add_traffic(&mut self, session: &mut S::Session) {
        if let Some((sent, received)) = session.take_traffic() {
            self.totals.sent_bytes += sent;
            self.totals.received_bytes += received;
        }
    }

    fn close_session(&mut self) {
        if let Some(mut session) = self.session.take() {
            self.add_traffic(&mut session);
            if let Err(error) = self.link.release(session) {
                self.errors.push(error.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(size: u64) -> Job {
        Job {
            request: FetchRequest {
                remote_path: std::path::PathBuf::new(),
                destination: crate::confine::Destination::trusted(std::path::Path::new("/d/x"))
                    .unwrap(),
                basis: None,
                max_len: None,
                partial: None,
                target: crate::protocol::FetchTarget::NEW_FILE,
            },
            size,
        }
    }

    #[test]
    fn large_files_first_and_alone_small_ones_grouped() {
        let jobs: Vec<Job> = [1 << 30, 10, 20 << 20, 30, 8192]
            .into_iter()
            .map(job)
            .collect();
        let planned: Vec<Vec<usize>> = chunks(&jobs).into_iter().collect();
        assert_eq!(planned, vec![vec![0], vec![2], vec![4, 3, 1]]);
        let parts = super::super::split::split_jobs(&[job(10), job(3 << 20)], 1 << 20);
        let planned: Vec<Vec<usize>> = chunks(&parts.jobs).into_iter().collect();
        assert_eq!(
            planned,
            vec![vec![1], vec![2], vec![3], vec![0]],
            "each part of a split file is a chunk, so each can go to another session"
        );
        let many: Vec<Job> = (0..600).map(|_| job(1)).collect();
        let sizes: Vec<usize> = chunks(&many).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![256, 256, 88]);
    }
}
