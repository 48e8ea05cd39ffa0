//! The far side of a copy: [`PullSource`] (what [`pull`](super::pull()) reads from) and
//! [`PushTarget`] (what [`push`](super::push()) writes to), implemented for a barsync session
//! ([`Client`]) and for SFTP on a host without barsync ([`SftpSource`](crate::sftp::SftpSource)).

use std::io::{Read, Write};
use std::path::Path;

use super::{partial_path, CopyError};
use crate::file_error::{FileError, FileErrorKind, VerifiedBy};
use crate::protocol::{
    Client, Entry, FetchOutcome, FetchRequest, PushItem, PushOutcome, WriteMode,
};

/// Lists over SFTP; a failure is the far side's answer for that path, not a session error.
fn list_over_sftp(
    sftp: &mut crate::sftp::SftpSource,
    path: &Path,
    recursive: bool,
) -> Result<Vec<Entry>, FileError> {
    sftp.list(path, recursive).map_err(|e| {
        FileError::new(
            e.file_kind(),
            format!("{}: {e}", crate::names::shown_path(path)),
        )
    })
}

/// Where [`push`](super::push()) writes to: a barsync session, or SFTP on a host without barsync.
pub trait PushTarget {
    /// Lists `path`; `Ok(Err(failure))` when the far side refused or failed (or it is missing).
    fn list(
        &mut self,
        path: &Path,
        recursive: bool,
    ) -> Result<Result<Vec<Entry>, FileError>, CopyError>;
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
        path: &Path,
        recursive: bool,
    ) -> Result<Result<Vec<Entry>, FileError>, CopyError> {
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
        path: &Path,
        recursive: bool,
    ) -> Result<Result<Vec<Entry>, FileError>, CopyError> {
        Ok(list_over_sftp(self, path, recursive))
    }
    fn apply(
        &mut self,
        items: &[PushItem],
        progress: &mut dyn FnMut(&PushOutcome),
    ) -> Result<Vec<PushOutcome>, CopyError> {
        self.apply_items(items, progress)
            .map_err(|error| CopyError::Remote(error.to_string()))
    }
    fn verified_by(&self) -> &'static str {
        self.verification().label()
    }
}

/// Where [`pull`](super::pull()) reads from: a barsync session, or SFTP on a host without barsync.
pub trait PullSource {
    /// Lists `path`; `Ok(Err(failure))` when the far side refused or failed.
    fn list(
        &mut self,
        path: &Path,
        recursive: bool,
    ) -> Result<Result<Vec<Entry>, FileError>, CopyError>;
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
        path: &Path,
        recursive: bool,
    ) -> Result<Result<Vec<Entry>, FileError>, CopyError> {
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
        path: &Path,
        recursive: bool,
    ) -> Result<Result<Vec<Entry>, FileError>, CopyError> {
        Ok(list_over_sftp(self, path, recursive))
    }
    fn fetch(
        &mut self,
        requests: &[FetchRequest],
        progress: &mut dyn FnMut(&FetchOutcome),
    ) -> Result<Vec<FetchOutcome>, CopyError> {
        // SFTP fetches whole files: a part of a split file needs `barsync serve`.
        let mut outcomes = Vec::with_capacity(requests.len());
        let mut whole = Vec::with_capacity(requests.len());
        for (index, request) in requests.iter().enumerate() {
            if request.target.part().is_none() {
                whole.push(index);
                continue;
            }
            let outcome = FetchOutcome {
                index,
                remote_path: request.remote_path.clone(),
                result: Err(FileError::new(
                    FileErrorKind::Refused,
                    format!(
                        "{}: SFTP copies whole files; a byte range needs barsync serve on the other side",
                        crate::names::shown_path(&request.remote_path)
                    ),
                )
                .for_file(&request.remote_path)),
            };
            progress(&outcome);
            outcomes.push(outcome);
        }
        let partials: Vec<std::ffi::OsString> = whole
            .iter()
            .map(|&i| {
                let r = &requests[i];
                let partial = r
                    .partial
                    .clone()
                    .unwrap_or_else(|| partial_path(&r.destination.path()));
                partial.file_name().unwrap_or_default().to_owned()
            })
            .collect();
        let files: Vec<crate::sftp::SftpFile<'_>> = whole
            .iter()
            .zip(&partials)
            .map(|(&i, partial)| crate::sftp::SftpFile {
                remote: &requests[i].remote_path,
                destination: &requests[i].destination,
                partial,
                max_len: requests[i].max_len,
                link_basis: requests[i]
                    .basis
                    .as_deref()
                    .filter(|_| requests[i].target.write_mode() == Some(WriteMode::LinkIdentical)),
            })
            .collect();
        self.fetch_many(&files, &mut |position, result| {
            let index = whole[position];
            let outcome = FetchOutcome {
                index,
                remote_path: requests[index].remote_path.clone(),
                result: result
                    .map_err(|error| error.for_file(&requests[index].remote_path))
                    .map(|fetched| crate::protocol::FetchReport {
                        len: fetched.len,
                        digest: None,
                        verified_by: VerifiedBy::Sftp(fetched.verification),
                        received_bytes: fetched.received_bytes,
                        signature_bytes: 0,
                        reused_bytes: fetched.len - fetched.received_bytes,
                        copied_by: None,
                        basis_problem: None,
                        linked: fetched.linked,
                    }),
            };
            progress(&outcome);
            outcomes.push(outcome);
        });
        // A broken session is the caller's to replace (the files reported stay reported).
        match self.session_error() {
            Some(error) => Err(CopyError::Remote(error.to_string())),
            None => Ok(outcomes),
        }
    }
}
