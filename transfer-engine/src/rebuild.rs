//! Rebuild: the receiver's patch into a file, with matched blocks copied by the kernel.
//!
//! [`FilePatcher`] is the [`DeltaSink`] a receiver uses when the basis is a file and the result
//! a new file of its own: consecutive copy operations are coalesced into one run, and each run
//! is copied from the basis file into the new file by [`RangeCopier`] (a reflink, else
//! `copy_file_range`), so matched bytes never pass through this process. Only literals are
//! written, in buffered `pwrite`s. Where the kernel declines (another file system, an old
//! kernel, [`RangeCopier::user_only`]) the run is written from the basis's map, as
//! [`Patcher`](crate::patch::Patcher) does.
//!
//! Verification is the same as [`Patcher`](crate::patch::Patcher)'s: the [`DigestWriter`] sees
//! every byte of the new file in order, and [`FilePatcher::finish`] compares length and digest
//! with the sender's. A run copied by the kernel is hashed by reading it back from the new file
//! (from the page cache the copy just filled), not from the basis: what is hashed is what will
//! be published, even if the basis changed between the signature and the copy. (Composing the
//! digest from the basis's block hashes would skip that read, but would trust the basis not to
//! have changed since its signature was made; nothing proves that, so it is not done.)

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use crate::delta::DeltaSink;
use crate::digest::{DigestWriter, FileDigest};
use crate::error::PatchError;
use crate::fs::{MappedFile, WritebackWriter};
use crate::kernel_copy::{CopyPath, RangeCopier};
use crate::patch::{block_range, check_basis, Release};
use crate::signature::Signature;

/// Literal bytes buffered before a `pwrite`.
const LITERAL_BUFFER: usize = 256 * 1024;
/// Bytes read back at a time to hash a run the kernel copied.
const READ_BACK: usize = 1 << 20;

/// Bytes of the new file by how they got there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RebuildStats {
    pub reflinked: u64,
    pub kernel_copied: u64,
    pub user_copied: u64,
    pub literal: u64,
}

impl RebuildStats {
    /// How most copied bytes got there (`None`: nothing was copied from the basis).
    pub fn copy_path(&self) -> Option<CopyPath> {
        [
            (self.reflinked, CopyPath::Reflink),
            (self.kernel_copied, CopyPath::KernelCopy),
            (self.user_copied, CopyPath::UserCopy),
        ]
        .into_iter()
        .filter(|(bytes, _)| *bytes > 0)
        .max_by_key(|(bytes, _)| *bytes)
        .map(|(_, path)| path)
    }
}

/// Rebuilds a new file from a basis file and delta operations (see the module documentation).
pub struct FilePatcher<'b> {
    basis: &'b [u8],
    /// The basis's file and the offset of `basis[0]` in it (a part's basis is a range).
    basis_file: &'b File,
    basis_offset: u64,
    out: &'b File,
    block_size: u64,
    blocks: u64,
    /// Bytes of the new file accepted so far (the pending run and literals included).
    position: u64,
    /// A run of basis bytes `(start in basis, len)` to copy to `position - len`.
    run: Option<(u64, u64)>,
    literals: Vec<u8>,
    copier: RangeCopier,
    verifier: DigestWriter,
    max_len: u64,
    release: Release<'b>,
    read_back: Vec<u8>,
    /// Bytes whose writeback was started ([`WritebackWriter::INTERVAL`]).
    written_back: u64,
    stats: RebuildStats,
}

impl<'b> FilePatcher<'b> {
    /// A patcher for the basis `signature` was made from: `basis` is `map[basis_offset..]`
    /// (all of it, or a part), read from `map`'s file by the kernel and from `map` otherwise.
    /// `out` is the new file, empty, open for reading and writing.
    pub fn new(
        map: &'b MappedFile,
        basis: &'b [u8],
        signature: &Signature,
        digest_block_size: usize,
        out: &'b File,
        max_len: Option<u64>,
    ) -> Result<Self, PatchError> {
        check_basis(basis, signature)?;
        let basis_offset = if basis.is_empty() {
            0
        } else {
            let range = map.as_ptr_range();
            assert!(
                range.contains(&basis.as_ptr()),
                "the basis is (a range of) the map"
            );
            basis.as_ptr() as u64 - range.start as u64
        };
        Ok(FilePatcher {
            basis,
            basis_file: map.file(),
            basis_offset,
            out,
            block_size: signature.block_size() as u64,
            blocks: signature.blocks() as u64,
            position: 0,
            run: None,
            literals: Vec::new(),
            copier: RangeCopier::new(),
            verifier: DigestWriter::new(signature.key(), digest_block_size),
            max_len: max_len.unwrap_or(u64::MAX),
            release: Release {
                map: Some(map),
                copied: 0,
            },
            read_back: Vec::new(),
            written_back: 0,
            stats: RebuildStats::default(),
        })
    }

    /// Uses `copier` instead of the default one (e.g. [`RangeCopier::user_only`]).
    #[cfg(test)]
    pub fn with_copier(mut self, copier: RangeCopier) -> Self {
        self.copier = copier;
        self
    }

    fn accept(&mut self, len: u64) -> Result<u64, PatchError> {
        let at = self.position;
        match at.checked_add(len) {
            Some(end) if end <= self.max_len => {
                self.position = end;
                Ok(at)
            }
            _ => Err(PatchError::TooLong {
                limit: self.max_len,
            }),
        }
    }

    /// Copies the pending run, if any, and hashes it.
    fn flush_run(&mut self) -> Result<(), PatchError> {
        let Some((start, len)) = self.run.take() else {
            return Ok(());
        };
        debug_assert!(self.literals.is_empty(), "literals never wait behind a run");
        let to = self.position - len;
        let (done, path) = self
            .copier
            .copy(
                self.basis_file,
                self.basis_offset + start,
                self.out,
                to,
                len,
            )
            .map_err(PatchError::Write)?;
        match path {
            CopyPath::Reflink => self.stats.reflinked += done,
            _ => self.stats.kernel_copied += done,
        }
        self.hash_back(to, done)?;
        if done < len {
            self.user_copy(start + done, to + done, len - done)?;
        }
        self.start_writeback(to + len);
        Ok(())
    }

    /// Hashes `len` bytes of the new file at `at`, read back from it.
    fn hash_back(&mut self, mut at: u64, len: u64) -> Result<(), PatchError> {
        if len == 0 {
            return Ok(());
        }
        self.read_back.resize(READ_BACK, 0);
        let end = at + len;
        while at < end {
            let piece = &mut self.read_back[..(end - at).min(READ_BACK as u64) as usize];
            self.out
                .read_exact_at(piece, at)
                .map_err(PatchError::Write)?;
            self.verifier.update(piece);
            at += piece.len() as u64;
        }
        Ok(())
    }

    /// Writes `len` basis bytes from `start` to `to` from the map, hashing them.
    fn user_copy(&mut self, start: u64, to: u64, len: u64) -> Result<(), PatchError> {
        let basis = self.basis;
        let data = &basis[start as usize..(start + len) as usize];
        let mut at = to;
        for piece in data.chunks(crate::patch::Release::EVERY) {
            self.out
                .write_all_at(piece, at)
                .map_err(PatchError::Write)?;
            self.verifier.update(piece);
            self.release.copied(piece.len());
            at += piece.len() as u64;
        }
        self.stats.user_copied += len;
        Ok(())
    }

    fn flush_literals(&mut self) -> Result<(), PatchError> {
        if self.literals.is_empty() {
            return Ok(());
        }
        let at = self.position - self.literals.len() as u64;
        self.out
            .write_all_at(&self.literals, at)
            .map_err(PatchError::Write)?;
        self.literals.clear();
        self.start_writeback(self.position);
        Ok(())
    }

    /// Starts the writeback of what was written up to `end` every
    /// [`WritebackWriter::INTERVAL`] bytes, so the final fsync has little left to do.
    fn start_writeback(&mut self, end: u64) {
        if end >= self.written_back + WritebackWriter::<File>::INTERVAL {
            // SAFETY: a plain syscall on an open descriptor; failure only loses the hint.
            unsafe {
                libc::sync_file_range(
                    self.out.as_raw_fd(),
                    self.written_back as libc::off64_t,
                    (end - self.written_back) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
            self.written_back = end;
        }
    }

    /// Writes what is pending and checks the result against the sender's length and digest.
    /// The new file is not fsynced here (publishing it does that).
    pub fn finish(
        mut self,
        expected_len: u64,
        expected: &FileDigest,
    ) -> Result<RebuildStats, PatchError> {
        self.flush_run()?;
        self.flush_literals()?;
        if self.position != expected_len {
            return Err(PatchError::LengthMismatch {
                expected: expected_len,
                actual: self.position,
            });
        }
        let stats = self.stats;
        let actual = self.verifier.finish();
        if actual != *expected {
            return Err(PatchError::DigestMismatch {
                expected: *expected,
                actual,
            });
        }
        Ok(stats)
    }
}

impl DeltaSink for FilePatcher<'_> {
    type Error = PatchError;

    fn copy(&mut self, first: u64, count: u64) -> Result<(), PatchError> {
        let (start, stop) = block_range(first, count, self.block_size, self.blocks, self.basis)?;
        let len = stop - start;
        if !self.literals.is_empty() {
            self.flush_literals()?;
        }
        match self.run {
            Some((run_start, run_len)) if run_start + run_len == start => {
                self.accept(len)?;
                self.run = Some((run_start, run_len + len));
            }
            _ => {
                self.flush_run()?;
                self.accept(len)?;
                self.run = Some((start, len));
            }
        }
        Ok(())
    }

    fn literal(&mut self, data: &[u8]) -> Result<(), PatchError> {
        self.flush_run()?;
        self.accept(data.len() as u64)?;
        self.verifier.update(data);
        self.stats.literal += data.len() as u64;
        self.literals.extend_from_slice(data);
        if self.literals.len() >= LITERAL_BUFFER {
            self.flush_literals()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delta::delta;
    use crate::signature::{signature, SignatureOptions};

    /// Operations recorded from a delta, to be replayed into a patcher.
    #[derive(Default)]
    struct Ops(Vec<Result<(u64, u64), Vec<u8>>>);

    impl DeltaSink for Ops {
        type Error = std::convert::Infallible;
        fn copy(&mut self, first: u64, count: u64) -> Result<(), Self::Error> {
            self.0.push(Ok((first, count)));
            Ok(())
        }
        fn literal(&mut self, data: &[u8]) -> Result<(), Self::Error> {
            self.0.push(Err(data.to_vec()));
            Ok(())
        }
    }

    struct Case {
        dir: tempfile::TempDir,
        new: Vec<u8>,
        signature: Signature,
        ops: Ops,
        summary: crate::delta::DeltaSummary,
    }

    /// A basis of 1 MiB + 100 bytes on disk, and a new file with a few regions rewritten, one
    /// byte inserted (so later blocks land unaligned) and a new tail.
    fn case() -> Case {
        let dir = tempfile::tempdir().unwrap();
        let basis: Vec<u8> = (0..(1 << 20) + 100u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(dir.path().join("basis"), &basis).unwrap();
        let mut new = basis.clone();
        new[100_000..101_000].fill(7);
        new[600_000..600_010].fill(9);
        new.insert(700_000, 1);
        new.extend_from_slice(b"a new tail");
        let options = SignatureOptions {
            block_size: Some(8192),
            key: Some([3; 32]),
            parallel: false,
        };
        let signature = signature(&basis, &options);
        let mut ops = Ops::default();
        let summary = delta(&new, &signature, &mut ops).unwrap();
        Case {
            dir,
            new,
            signature,
            ops,
            summary,
        }
    }

    fn out_file(case: &Case) -> File {
        File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(case.dir.path().join("out"))
            .unwrap()
    }

    /// Replays the case into a fresh patcher using `copier`; returns the result of `finish`.
    fn rebuild(case: &Case, copier: RangeCopier) -> Result<RebuildStats, PatchError> {
        let map = MappedFile::open(&case.dir.path().join("basis")).unwrap();
        let out = out_file(case);
        let mut patcher = FilePatcher::new(
            &map,
            &map,
            &case.signature,
            case.summary.digest_block_size,
            &out,
            None,
        )?
        .with_copier(copier);
        for op in &case.ops.0 {
            match op {
                Ok((first, count)) => patcher.copy(*first, *count)?,
                Err(data) => patcher.literal(data)?,
            }
        }
        patcher.finish(case.summary.new_len, &case.summary.digest)
    }

    #[test]
    fn matched_runs_are_copied_by_the_kernel_and_the_file_verifies() {
        let case = case();
        let stats = rebuild(&case, RangeCopier::new()).unwrap();
        assert_eq!(
            std::fs::read(case.dir.path().join("out")).unwrap(),
            case.new
        );
        assert_eq!(stats.user_copied, 0, "{stats:?}");
        assert!(stats.kernel_copied + stats.reflinked > 900_000, "{stats:?}");
        assert_eq!(
            stats.kernel_copied + stats.reflinked + stats.literal,
            case.new.len() as u64
        );
        assert_ne!(stats.copy_path(), Some(CopyPath::UserCopy));
    }

    #[test]
    fn a_forced_user_copy_gives_the_same_file() {
        let case = case();
        let stats = rebuild(&case, RangeCopier::user_only()).unwrap();
        assert_eq!(
            std::fs::read(case.dir.path().join("out")).unwrap(),
            case.new
        );
        assert_eq!(stats.kernel_copied + stats.reflinked, 0, "{stats:?}");
        assert!(stats.user_copied > 900_000, "{stats:?}");
        assert_eq!(stats.copy_path(), Some(CopyPath::UserCopy));
    }

    #[test]
    fn a_basis_changed_after_its_signature_fails_verification() {
        // The kernel copies the basis as it is now; the read-back hash sees the change.
        for copier in [RangeCopier::new(), RangeCopier::user_only()] {
            let case = case();
            let path = case.dir.path().join("basis");
            let file = File::options().write(true).open(&path).unwrap();
            file.write_all_at(b"changed", 300_000).unwrap();
            drop(file);
            match rebuild(&case, copier) {
                Err(PatchError::DigestMismatch { .. }) => {}
                other => panic!("{copier:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_wrong_digest_or_length_fails() {
        let mut case = case();
        case.summary.digest.0[0] ^= 1;
        assert!(matches!(
            rebuild(&case, RangeCopier::new()),
            Err(PatchError::DigestMismatch { .. })
        ));
        let _ = std::fs::remove_file(case.dir.path().join("out"));
        case.summary.new_len += 1;
        assert!(matches!(
            rebuild(&case, RangeCopier::new()),
            Err(PatchError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn a_part_of_the_basis_is_copied_from_its_offset() {
        // The basis is bytes 8192.. of the file (a part of a split file).
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 253) as u8).collect();
        std::fs::write(dir.path().join("basis"), &data).unwrap();
        let map = MappedFile::open(&dir.path().join("basis")).unwrap();
        let part = &map[8192..];
        let options = SignatureOptions {
            block_size: Some(8192),
            key: Some([5; 32]),
            parallel: false,
        };
        let signature = signature(part, &options);
        let mut ops = Ops::default();
        let summary = delta(part, &signature, &mut ops).unwrap();
        let out = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.path().join("out"))
            .unwrap();
        let mut patcher = FilePatcher::new(
            &map,
            part,
            &signature,
            summary.digest_block_size,
            &out,
            None,
        )
        .unwrap();
        for op in &ops.0 {
            match op {
                Ok((first, count)) => patcher.copy(*first, *count).unwrap(),
                Err(data) => patcher.literal(data).unwrap(),
            }
        }
        patcher.finish(summary.new_len, &summary.digest).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("out")).unwrap(),
            &data[8192..]
        );
    }

    #[test]
    fn too_many_bytes_are_refused() {
        let case = case();
        let map = MappedFile::open(&case.dir.path().join("basis")).unwrap();
        let out = out_file(&case);
        let mut patcher = FilePatcher::new(
            &map,
            &map,
            &case.signature,
            case.summary.digest_block_size,
            &out,
            Some(10_000),
        )
        .unwrap();
        assert!(matches!(
            patcher.copy(0, 2),
            Err(PatchError::TooLong { limit: 10_000 })
        ));
    }
}
