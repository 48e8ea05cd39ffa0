//! Very large files split into parts, so that several sessions share them.
//!
//! A backup's largest files (1 GiB relation segments) would otherwise each occupy one session
//! to the end while the others idle. A file of at least twice the part size becomes a
//! [`SplitFile`] and one job per part; the parts run on any session like other jobs (and are
//! fetched again like them when they fail). Once every part of a file is in, the file is
//! finished (assembled, or linked to its basis, and published), and its parts' results become
//! the file's one result, so callers see one result per file as before.

use std::ops::Range;
use std::sync::Arc;

use crate::file_error::{FileError, FileErrorKind, VerifiedBy};
use crate::protocol::{FetchReport, FetchRequest, FetchTarget, WriteMode};
use crate::split_file::SplitFile;

use super::pool::Job;
use super::session::FetchEvents;
use super::TransferTotals;

/// Parts of one file at most: a larger file gets larger parts, so what planning holds never
/// follows a declared size (64 GiB in parts of the default 64 MiB).
pub(super) const MAX_PARTS: u64 = 1024;

/// The jobs as sessions run them, and how they map back to the caller's jobs.
pub(super) struct SplitJobs {
    pub jobs: Vec<Job>,
    files: Vec<FileJobs>,
}

enum FileJobs {
    /// The caller's job, whole, at this index of `jobs`.
    Whole(usize),
    /// A split file and the indices of its parts in `jobs`.
    Parts {
        file: Arc<SplitFile>,
        range: Range<usize>,
    },
}

/// Whether `job` is large enough to split into parts of `part_size` bytes.
pub(super) fn worth_splitting(job: &Job, part_size: u64) -> bool {
    part_size > 0
        && job.size >= part_size.saturating_mul(2)
        && matches!(
            job.request.target.write_mode(),
            Some(WriteMode::NewFile | WriteMode::LinkIdentical)
        )
}

/// Splits the jobs worth splitting into parts of `part_size` bytes.
pub(super) fn split_jobs(jobs: &[Job], part_size: u64) -> SplitJobs {
    let mut expanded = Vec::with_capacity(jobs.len());
    let mut files = Vec::with_capacity(jobs.len());
    for job in jobs {
        if !worth_splitting(job, part_size) {
            files.push(FileJobs::Whole(expanded.len()));
            expanded.push(job.clone());
            continue;
        }
        let request = &job.request;
        let file = SplitFile::new(
            request.destination.clone(),
            job.size,
            request.basis.clone(),
            request.partial.clone(),
            request.target.write_mode() == Some(WriteMode::LinkIdentical),
        );
        let start = expanded.len();
        for part in file.parts(part_size.max(job.size.div_ceil(MAX_PARTS))) {
            expanded.push(Job {
                size: part.len,
                request: FetchRequest {
                    max_len: Some(part.len),
                    target: FetchTarget::Part(part),
                    ..request.clone()
                },
            });
        }
        files.push(FileJobs::Parts {
            file,
            range: start..expanded.len(),
        });
    }
    SplitJobs {
        jobs: expanded,
        files,
    }
}

impl SplitJobs {
    /// One result per caller's job from one result per part: a split file whose parts all
    /// arrived is finished here (and reported to `events`); its totals are added to `totals`.
    pub fn gather(
        self,
        mut results: Vec<Result<FetchReport, FileError>>,
        totals: &mut TransferTotals,
        events: &dyn FetchEvents,
    ) -> Vec<Result<FetchReport, FileError>> {
        let mut gathered = Vec::with_capacity(self.files.len());
        for file in self.files {
            match file {
                FileJobs::Whole(index) => gathered.push(std::mem::replace(
                    &mut results[index],
                    Err(FileError::new(FileErrorKind::NotAttempted, "")),
                )),
                FileJobs::Parts { file, range } => {
                    let parts = &results[range.clone()];
                    let result = finish_split(&file, parts, totals);
                    events.file_done(&self.jobs[range.start].request.remote_path, &result);
                    gathered.push(result);
                }
            }
        }
        gathered
    }
}

/// The result of a split file: its first failed part, or the file finished.
fn finish_split(
    file: &SplitFile,
    parts: &[Result<FetchReport, FileError>],
    totals: &mut TransferTotals,
) -> Result<FetchReport, FileError> {
    let mut report = FetchReport {
        len: 0,
        digest: None,
        verified_by: VerifiedBy::BarsyncDigestByParts,
        received_bytes: 0,
        signature_bytes: 0,
        reused_bytes: 0,
        copied_by: None,
        basis_problem: None,
        linked: false,
    };
    for part in parts {
        let part = part.as_ref().map_err(Clone::clone)?;
        report.len += part.len;
        report.received_bytes += part.received_bytes;
        report.signature_bytes += part.signature_bytes;
        report.reused_bytes += part.reused_bytes;
        if report.basis_problem.is_none() {
            report.basis_problem.clone_from(&part.basis_problem);
        }
    }
    let finished = file.finish()?;
    report.linked = finished.linked;
    totals.split_files += 1;
    totals.parts += parts.len() as u64;
    totals.files += 1;
    *totals
        .verified_by
        .entry(VerifiedBy::BarsyncDigestByParts)
        .or_default() += 1;
    if finished.linked {
        totals.linked += 1;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(size: u64) -> Job {
        Job {
            request: FetchRequest {
                remote_path: format!("/p/{size}").into(),
                destination: crate::confine::Destination::trusted(std::path::Path::new(&format!(
                    "/d/{size}"
                )))
                .unwrap(),
                basis: None,
                max_len: Some(size),
                partial: None,
                target: FetchTarget::NEW_FILE,
            },
            size,
        }
    }

    struct Quiet;

    impl FetchEvents for Quiet {
        fn warning(&self, _message: &str) {}
    }

    #[test]
    fn only_files_of_two_parts_or_more_are_split() {
        let jobs = vec![job(100), job(199), job(200), job(1000)];
        let split = split_jobs(&jobs, 100);
        let sizes: Vec<(u64, Option<u64>)> = split
            .jobs
            .iter()
            .map(|j| (j.size, j.request.target.part().map(|p| p.offset)))
            .collect();
        let mut expected = vec![(100, None), (199, None), (100, Some(0)), (100, Some(100))];
        expected.extend((0..10).map(|i| (100, Some(i * 100))));
        assert_eq!(sizes, expected);
        assert!(split.jobs[2..]
            .iter()
            .all(|j| j.request.max_len == Some(100)));
        assert_eq!(split_jobs(&jobs, 0).jobs.len(), 4, "0 turns splitting off");
    }

    #[test]
    fn a_file_is_never_more_than_max_parts() {
        // Issue 13: the number of parts followed the declared size, whatever it was.
        let split = split_jobs(&[job(10_000_000)], 100);
        assert_eq!(split.jobs.len(), MAX_PARTS as usize);
        assert_eq!(split.jobs.iter().map(|j| j.size).sum::<u64>(), 10_000_000);
    }

    #[test]
    fn a_failed_part_fails_its_file_and_only_its_file() {
        let jobs = vec![job(10), job(300)];
        let split = split_jobs(&jobs, 100);
        let ok = |len| {
            Ok(FetchReport {
                len,
                digest: None,
                verified_by: VerifiedBy::BarsyncDigest,
                received_bytes: 1,
                signature_bytes: 1,
                reused_bytes: 0,
                copied_by: None,
                basis_problem: None,
                linked: false,
            })
        };
        let cut = FileError::new(FileErrorKind::SessionLost, "/p/300: cut");
        let results = vec![ok(10), ok(100), Err(cut), ok(100)];
        let mut totals = TransferTotals::default();
        let gathered = split.gather(results, &mut totals, &Quiet);
        assert_eq!(gathered[0].as_ref().unwrap().len, 10);
        assert_eq!(gathered[1].as_ref().unwrap_err().detail, "/p/300: cut");
        assert_eq!(totals.split_files, 0);
    }
}
