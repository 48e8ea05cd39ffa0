//! A file fetched in parts: several byte ranges of one remote file, requested separately
//! (possibly over several sessions at once), assembled into one temporary file and published
//! once every part is verified.
//!
//! Splitting lets many sessions share one very large file (a 1 GiB relation segment), so none
//! of them idles while one finishes it. Each part is an ordinary delta transfer of the range
//! `[offset, offset + len)`: the receiver signs the same range of its basis, the sender answers
//! with the delta of that range and the [`FileDigest`] of its bytes, and the receiver verifies
//! the part against that digest as it would a whole file. The sender also reports the file's
//! length, mtime and mode with every part; they must agree across parts (and the length with
//! what was listed), so parts read from different versions of a file are never assembled.
//!
//! ```text
//! SplitFile::new(destination, len, basis, …) ─► parts(part_len) ─► FetchRequest { part, … } × N
//!   each part: RangeRequest ─► delta of the range ─► written at its offset (pwrite), verified
//! finish(): every part verified ─► fill parts identical to the basis ─► fsync, rename, fsync dir
//! ```
//!
//! With `link_identical` (Barman's `reuse_backup = link`), a part that reproduces the same range
//! of the basis writes nothing; if every part does and the lengths agree, [`SplitFile::finish`]
//! hard-links the basis instead of writing a copy. Otherwise such parts are copied from the
//! basis at the end, after their bytes are checked again against the sender's digest.
//!
//! A split file that is dropped unfinished is kept as `partial` (when given), like any
//! interrupted transfer, so the next attempt uses what was received as its basis.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::confine::Destination;
use crate::digest::{file_digest_in_pieces, FileDigest, HashKey};
use crate::file_error::{FileError, FileErrorKind};
use crate::fs::{open_basis, MappedFile, TempFile, WritebackWriter, RELEASE_EVERY};

/// A remote file being fetched in parts into `destination`.
pub struct SplitFile {
    destination: Destination,
    len: u64,
    basis: Option<PathBuf>,
    partial: Option<PathBuf>,
    link_identical: bool,
    state: Mutex<State>,
}

/// One part of a [`SplitFile`]: the bytes `[offset, offset + len)`.
#[derive(Clone, Debug)]
pub struct FilePart {
    /// The file the part belongs to.
    pub file: Arc<SplitFile>,
    /// Where the part starts.
    pub offset: u64,
    /// Its length.
    pub len: u64,
}

/// What [`SplitFile::finish`] published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitReport {
    /// The file's length.
    pub len: u64,
    /// The destination is a hard link to the (identical) basis.
    pub linked: bool,
}

/// The sender's view of the whole file, as reported with each part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SenderFile {
    pub len: u64,
    pub mtime: (i64, u32),
    pub mode: u32,
}

/// A verified part.
#[derive(Clone, Copy, Debug)]
pub(crate) enum PartDone {
    /// Its bytes are in the temporary file.
    Written { len: u64 },
    /// Its bytes are the same range of the basis (nothing written yet); `digest` is the
    /// sender's digest of the range, under `key` with digest blocks of `digest_block` bytes.
    SameAsBasis {
        len: u64,
        key: HashKey,
        digest_block: usize,
        digest: FileDigest,
    },
}

impl PartDone {
    fn len(&self) -> u64 {
        match *self {
            PartDone::Written { len } | PartDone::SameAsBasis { len, .. } => len,
        }
    }
}

#[derive(Default)]
struct State {
    temp: Option<TempFile>,
    /// A second handle on the temporary file, shared by the writers of the parts.
    file: Option<Arc<File>>,
    sender: Option<SenderFile>,
    /// Verified parts by offset.
    parts: BTreeMap<u64, PartDone>,
    /// Why the parts cannot be assembled (they came from different versions of the file).
    conflict: Option<FileError>,
    finished: Option<SplitReport>,
}

impl fmt::Debug for SplitFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SplitFile")
            .field("destination", &self.destination)
            .field("len", &self.len)
            .field("basis", &self.basis)
            .finish_non_exhaustive()
    }
}

impl SplitFile {
    /// A file of `len` bytes (its listed size) to be fetched in parts into `destination`, with
    /// `basis` (if any) as the local file each part is delta-transferred against. The temporary
    /// file is created, and published, as [`TempFile::for_destination`] does.
    pub fn new(
        destination: Destination,
        len: u64,
        basis: Option<PathBuf>,
        partial: Option<PathBuf>,
        link_identical: bool,
    ) -> Arc<SplitFile> {
        Arc::new(SplitFile {
            destination,
            len,
            basis,
            partial,
            link_identical,
            state: Mutex::new(State::default()),
        })
    }

    /// Cuts the file into parts of `part_len` bytes (the last one shorter); an empty file is
    /// one empty part.
    pub fn parts(self: &Arc<Self>, part_len: u64) -> Vec<FilePart> {
        let part_len = part_len.max(1);
        let mut parts = Vec::new();
        let mut offset = 0;
        loop {
            let len = part_len.min(self.len - offset);
            parts.push(FilePart {
                file: Arc::clone(self),
                offset,
                len,
            });
            offset += len;
            if offset >= self.len {
                return parts;
            }
        }
    }

    /// Where the file is published.
    pub fn destination(&self) -> &Destination {
        &self.destination
    }

    /// The length the file was listed with.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file was listed empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The local file the parts are delta-transferred against, if any.
    pub fn basis(&self) -> Option<&Path> {
        self.basis.as_deref()
    }

    /// Whether the basis is hard-linked when every part matches it.
    pub fn link_identical(&self) -> bool {
        self.link_identical
    }

    /// A writer of the temporary file from `offset` on (the file is created at the first call).
    pub(crate) fn writer_at(&self, offset: u64) -> io::Result<WritebackWriter<Arc<File>>> {
        let mut state = self.state.lock().expect("split file state");
        let file = self.temporary_file(&mut state)?;
        Ok(WritebackWriter::at(file, offset))
    }

    /// The shared handle on the temporary file, created (beside the destination) if need be.
    fn temporary_file(&self, state: &mut State) -> io::Result<Arc<File>> {
        if let Some(file) = &state.file {
            return Ok(Arc::clone(file));
        }
        let mut temp = TempFile::for_destination(&self.destination)?;
        if let Some(partial) = &self.partial {
            temp.keep_unpublished_as(partial);
        }
        let file = Arc::new(temp.file().try_clone()?);
        state.temp = Some(temp);
        state.file = Some(Arc::clone(&file));
        Ok(file)
    }

    /// Records a verified part of `expected_len` bytes at `offset`, as reported by a sender that
    /// saw the file as `sender`. `Err` names what disagrees.
    pub(crate) fn record(
        &self,
        offset: u64,
        expected_len: u64,
        sender: SenderFile,
        done: PartDone,
    ) -> Result<(), FileError> {
        let label = self.destination.path();
        let label = label.display();
        if sender.len != self.len {
            return Err(FileError::new(
                FileErrorKind::SourceChanged,
                format!(
                    "{label}: the sender's file has {} bytes, not the {} it was listed with (it changed)",
                    sender.len, self.len
                ),
            ));
        }
        if done.len() != expected_len {
            return Err(FileError::new(
                FileErrorKind::Corrupt,
                format!(
                    "{label}: the part at offset {offset} has {} bytes, not {expected_len}",
                    done.len()
                ),
            ));
        }
        let mut state = self.state.lock().expect("split file state");
        match state.sender {
            None => state.sender = Some(sender),
            Some(first) if first == sender => {}
            Some(first) => {
                let conflict = FileError::new(
                    FileErrorKind::SourceChanged,
                    format!(
                        "{label}: the sender's file changed while its parts were fetched \
                         (mtime {}.{:09} mode {:o}, then mtime {}.{:09} mode {:o})",
                        first.mtime.0,
                        first.mtime.1,
                        first.mode,
                        sender.mtime.0,
                        sender.mtime.1,
                        sender.mode
                    ),
                );
                state.conflict = Some(conflict.clone());
                return Err(conflict);
            }
        }
        state.parts.insert(offset, done);
        Ok(())
    }

    /// Drops what was received instead of keeping it as the partial file (the disk is full).
    pub(crate) fn discard_partial(&self) {
        if let Some(temp) = self.state.lock().expect("split file state").temp.as_mut() {
            temp.discard_partial();
        }
    }

    /// Publishes the file once every part is verified: a hard link to the basis when every
    /// part was identical to it and linking was asked for, else the assembled file (parts
    /// identical to the basis copied in, mode and mtime set, fsync, rename, fsync of the
    /// directory). `Err` when a part is missing or the file cannot be published; the parts
    /// received so far stay, and are kept as the partial file when this is dropped.
    pub fn finish(&self) -> Result<SplitReport, FileError> {
        let label = self.destination.path();
        let label = label.display();
        let mut state = self.state.lock().expect("split file state");
        if let Some(report) = state.finished {
            return Ok(report);
        }
        if let Some(conflict) = &state.conflict {
            return Err(conflict.clone());
        }
        let mut covered = 0u64;
        for (&offset, done) in &state.parts {
            if offset != covered {
                break;
            }
            covered += done.len();
        }
        let sender = match state.sender {
            Some(sender) if covered == self.len => sender,
            _ => {
                return Err(FileError::new(
                    FileErrorKind::NotAttempted,
                    format!("{label}: parts missing from byte {covered} of {}", self.len),
                ))
            }
        };
        let all_same = state
            .parts
            .values()
            .all(|done| matches!(done, PartDone::SameAsBasis { .. }));
        let report = match (&self.basis, self.link_identical && all_same) {
            (Some(basis), true) if self.basis_len(basis) == Some(self.len) => {
                self.link_basis(basis, &mut state)?
            }
            _ => self.publish_assembled(sender, &mut state)?,
        };
        state.finished = Some(report);
        Ok(report)
    }

    /// Every part matched the basis (each was checked against the sender's digest when it
    /// was received): the basis itself becomes the destination.
    fn link_basis(&self, basis: &Path, state: &mut State) -> Result<SplitReport, FileError> {
        let label = self.destination.path();
        let label = label.display();
        // Bytes a part written before a retry may have left are not needed.
        if let Some(mut temp) = state.temp.take() {
            temp.discard_partial();
        }
        state.file = None;
        if basis != self.destination.path() {
            TempFile::link_beside(basis, &self.destination)
                .and_then(TempFile::publish)
                .map_err(|e| {
                    FileError::local_io(
                        &e,
                        format!("{label}: linking {} in its place: {e}", basis.display()),
                    )
                })?;
        }
        Ok(SplitReport {
            len: self.len,
            linked: true,
        })
    }

    /// Copies the parts identical to the basis into the temporary file, then publishes it.
    fn publish_assembled(
        &self,
        sender: SenderFile,
        state: &mut State,
    ) -> Result<SplitReport, FileError> {
        let label = self.destination.path();
        let label = label.display();
        let file = self.temporary_file(state).map_err(|e| {
            FileError::local_io(&e, format!("{label}: creating a temporary file: {e}"))
        })?;
        let mut basis_map = None;
        for (&offset, done) in &state.parts {
            if matches!(done, PartDone::Written { .. }) || done.len() == 0 {
                continue;
            }
            if basis_map.is_none() {
                let basis = self.basis.as_deref().ok_or_else(|| {
                    FileError::new(
                        FileErrorKind::Local,
                        format!("{label}: a part matched the basis, but there is none"),
                    )
                })?;
                basis_map = Some(
                    open_basis(&self.destination, basis)
                        .and_then(|file| MappedFile::from_file(&file))
                        .map_err(|e| {
                            FileError::local_io(
                                &e,
                                format!("{label}: reading the basis {}: {e}", basis.display()),
                            )
                        })?,
                );
            }
            let map = basis_map.as_ref().expect("mapped above");
            copy_same_as_basis(map, offset, done, &file).map_err(|failure| match failure {
                Err(e) => FileError::local_io(
                    &e,
                    format!("{label}: writing the part at offset {offset}: {e}"),
                ),
                Ok(changed) => FileError::new(FileErrorKind::Local, format!("{label}: {changed}")),
            })?;
        }
        drop(file);
        state.file = None;
        let mut temp = state.temp.take().expect("a file means a temporary file");
        temp.file()
            .set_len(self.len)
            .and_then(|()| temp.set_attributes(sender.mode, sender.mtime))
            .map_err(|e| {
                FileError::local_io(&e, format!("{label}: setting length, mode and mtime: {e}"))
            })?;
        temp.publish()
            .map_err(|e| FileError::local_io(&e, format!("{label}: publishing: {e}")))?;
        Ok(SplitReport {
            len: self.len,
            linked: false,
        })
    }
}

impl SplitFile {
    fn basis_len(&self, basis: &Path) -> Option<u64> {
        open_basis(&self.destination, basis)
            .and_then(|file| file.metadata())
            .ok()
            .map(|m| m.len())
    }
}

/// For a part recorded as identical to the basis: copies its bytes from `basis` into `file` at
/// the same offset, checking them again against the sender's digest (the basis could have
/// changed since). Piece by piece: each piece is hashed, written and its pages released, so
/// the resident set stays bounded whatever the part's size. Written parts copy nothing.
/// `Err(Ok(words))`: the basis no longer matches; `Err(Err(e))`: writing failed. The caller
/// publishes nothing then, so bytes written before the check failed do no harm.
fn copy_same_as_basis(
    basis: &MappedFile,
    offset: u64,
    done: &PartDone,
    file: &File,
) -> Result<(), Result<String, io::Error>> {
    use std::os::unix::fs::FileExt;
    let PartDone::SameAsBasis {
        len,
        key,
        digest_block,
        digest,
    } = *done
    else {
        return Ok(());
    };
    let range = usize::try_from(offset)
        .ok()
        .zip(usize::try_from(offset + len).ok())
        .filter(|&(_, end)| end <= basis.len())
        .map(|(start, end)| start..end)
        .ok_or_else(|| {
            Ok(format!(
                "the basis is shorter than the part at offset {offset}"
            ))
        })?;
    let start = range.start;
    let bytes = &basis[range];
    let mut written = Ok(());
    let copied = file_digest_in_pieces(&key, digest_block, bytes, RELEASE_EVERY, &mut |piece| {
        if written.is_ok() {
            written = file.write_all_at(&bytes[piece.clone()], offset + piece.start as u64);
        }
        basis.release(piece.start + start..piece.end + start);
    });
    written.map_err(Err)?;
    if copied != digest {
        return Err(Ok(format!(
            "the basis changed: its bytes at offset {offset} no longer match the sender's"
        )));
    }
    Ok(())
}
