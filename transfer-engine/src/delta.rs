//! Delta: scans the new file against the basis signature and emits copy and literal operations.
//!
//! The scan is shaped for backup data, which mostly changes in place:
//! 1. **Prediction.** After a match of basis block `j`, the next bytes most likely equal block
//!    `j + 1` (at the start: block 0). That block alone is checked first, weak checksum then
//!    block hash. Unchanged and in-place-modified files are matched almost entirely this way, one
//!    block at a time, without touching the index.
//! 2. **Rolling search.** Where the prediction fails, the window rolls byte by byte and every
//!    position is looked up in the block index (`index.rs`) until some block matches (then back to 1).
//!
//! Hostile or repetitive inputs stay linear:
//! - a lookup examines at most `MAX_ENTRIES_PER_LOOKUP` entries and hashes the
//!   window at most once (block hashes do not depend on the block's position);
//! - block hashes computed by the rolling search that match nothing are paid from a budget that
//!   grows by one byte for each byte rolled; when it runs dry, weak hits are not verified until it
//!   refills. So the bytes hashed for misses never exceed the bytes scanned plus two blocks.
//!   Normal data never comes near the budget (a weak hit that fails is rare), so it costs nothing.
//!
//! While scanning, the sender also builds the [`FileDigest`] of the new file: block hashes it
//! computes at aligned offsets are reused; aligned blocks it never hashed (literal or shifted
//! regions) are hashed as the scan passes them.
//!
//! Operations go to a [`DeltaSink`] as they are found: copies are coalesced into runs, literals are
//! slices of the new file of at most [`MAX_LITERAL_RUN`] bytes, so memory stays bounded whatever
//! the file size.

use crate::block_size::block_size_for;
use crate::digest::{block_hash, DigestBuilder, FileDigest, HashKey};
use crate::index::BlockIndex;
use crate::rolling::{weak_checksum, Rolling};
use crate::signature::Signature;

/// Longest literal slice handed to a sink at once.
pub const MAX_LITERAL_RUN: usize = 256 * 1024;

/// Receives the operations of a delta, in order.
pub trait DeltaSink {
    /// Error the sink can fail with; it stops the delta.
    type Error;
    /// Copy basis blocks `first .. first + count` (the last basis block may be short).
    fn copy(&mut self, first: u64, count: u64) -> Result<(), Self::Error>;
    /// Append these bytes of the new file.
    fn literal(&mut self, data: &[u8]) -> Result<(), Self::Error>;
}

/// What the scan did, counted: the linear-time guarantees are tested on these numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeltaStats {
    /// Basis blocks copied.
    pub copied_blocks: u64,
    /// Bytes produced by copies.
    pub copied_bytes: u64,
    /// Bytes sent as literals.
    pub literal_bytes: u64,
    /// Copy operations emitted (after coalescing runs).
    pub copy_ops: u64,
    /// Literal operations emitted.
    pub literal_ops: u64,
    /// Positions the window rolled over.
    pub rolled_bytes: u64,
    /// Index lookups (positions whose weak checksum passed the filter).
    pub lookups: u64,
    /// Block hashes computed to verify matches (prediction and search).
    pub match_hashes: u64,
    /// Of those, the ones the rolling search paid for and that matched nothing.
    pub search_misses: u64,
    /// Weak hits left unverified because the miss budget was spent.
    pub unverified_hits: u64,
    /// Bytes hashed only for the file digest (regions no match hash covered).
    pub digest_only_bytes: u64,
}

/// The result of a delta: what the receiver needs to verify, and the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeltaSummary {
    /// Length of the new file.
    pub new_len: u64,
    /// Block size of the digest (the signature's, or the rule's when the basis is empty).
    pub digest_block_size: usize,
    /// Digest of the new file under the signature's key.
    pub digest: FileDigest,
    /// Counters.
    pub stats: DeltaStats,
}

/// The block size the digest of a new file uses against `signature`.
pub fn digest_block_size(signature: &Signature, new_len: u64) -> usize {
    if signature.blocks() > 0 {
        signature.block_size()
    } else {
        block_size_for(new_len)
    }
}

/// How to compute a delta.
#[derive(Clone, Copy, Debug, Default)]
pub struct DeltaOptions {
    /// The receiver will rebuild the file in place, over its basis ([`crate::patch::InPlacePatcher`]):
    /// only basis blocks at or after the current output position may be copied (as rsync's
    /// `--inplace`), so that writing sequentially never overwrites data still to be read.
    pub in_place: bool,
}

/// Computes the delta of `new` against `signature`, sending operations to `sink`.
pub fn delta<S: DeltaSink>(
    new: &[u8],
    signature: &Signature,
    sink: &mut S,
) -> Result<DeltaSummary, S::Error> {
    delta_with(new, signature, sink, &DeltaOptions::default())
}

/// [`delta`] with options.
pub fn delta_with<S: DeltaSink>(
    new: &[u8],
    signature: &Signature,
    sink: &mut S,
    options: &DeltaOptions,
) -> Result<DeltaSummary, S::Error> {
    let mut scanner = Scanner::new(new, signature, sink);
    scanner.in_place = options.in_place;
    scanner.run()
}

/// Rolls the window from `pos` until its weak checksum passes the index's filter, or to `stop`.
/// Returns the position reached and whether the filter passed there. This is the innermost
/// loop of the search: state stays in registers, one filter probe per byte. Kept out of line so
/// that the scanner's many variables do not crowd its registers.
#[inline(never)]
fn roll_to_candidate(
    data: &[u8],
    pos: usize,
    stop: usize,
    block: usize,
    rolling: &mut Rolling,
    index: &BlockIndex,
) -> (usize, bool) {
    let filter = index.filter();
    let mut window = *rolling;
    let outgoing = &data[pos..stop];
    let incoming = &data[pos + block..stop + block];
    for (offset, (&out, &incoming)) in outgoing.iter().zip(incoming).enumerate() {
        if filter.may_contain(window.value()) {
            *rolling = window;
            return (pos + offset, true);
        }
        window.roll(out, incoming);
    }
    *rolling = window;
    (stop, filter.may_contain(window.value()))
}

/// Builds the digest from block hashes offered in file order, hashing what was not offered.
struct DigestCursor<'a> {
    data: &'a [u8],
    key: HashKey,
    block_size: usize,
    next: usize,
    builder: DigestBuilder,
    hashed_here: u64,
}

impl<'a> DigestCursor<'a> {
    fn new(data: &'a [u8], key: &HashKey, block_size: usize) -> Self {
        DigestCursor {
            data,
            key: *key,
            block_size,
            next: 0,
            builder: DigestBuilder::new(key, block_size),
            hashed_here: 0,
        }
    }

    /// Hashes and pushes every block that ends at or before `upto` and was not pushed yet.
    fn catch_up(&mut self, upto: usize) {
        while self.next + self.block_size <= upto {
            let block = &self.data[self.next..self.next + self.block_size];
            self.builder.push(&block_hash(&self.key, block));
            self.hashed_here += block.len() as u64;
            self.next += self.block_size;
        }
    }

    /// Offers the hash of `data[offset..offset + len]`, used if that is the next digest block.
    fn offer(&mut self, offset: usize, len: usize, hash: &[u8; 32]) {
        self.catch_up(offset);
        let whole_block = len == self.block_size || offset + len == self.data.len();
        if offset == self.next && whole_block && len <= self.block_size {
            self.builder.push(hash);
            self.next += len;
        }
    }

    fn finish(mut self) -> (FileDigest, u64) {
        self.catch_up(self.data.len());
        if self.next < self.data.len() {
            let tail = &self.data[self.next..];
            self.builder.push(&block_hash(&self.key, tail));
            self.hashed_here += tail.len() as u64;
        }
        (
            self.builder.finish(self.data.len() as u64),
            self.hashed_here,
        )
    }
}

struct Scanner<'a, S: DeltaSink> {
    new: &'a [u8],
    signature: &'a Signature,
    sink: &'a mut S,
    literal_start: usize,
    pending_copy: Option<(u64, u64)>,
    digest: DigestCursor<'a>,
    digest_block_size: usize,
    stats: DeltaStats,
    search_miss_bytes: u64,
    in_place: bool,
}

impl<'a, S: DeltaSink> Scanner<'a, S> {
    fn new(new: &'a [u8], signature: &'a Signature, sink: &'a mut S) -> Self {
        let digest_block_size = digest_block_size(signature, new.len() as u64);
        Scanner {
            new,
            signature,
            sink,
            literal_start: 0,
            pending_copy: None,
            digest: DigestCursor::new(new, signature.key(), digest_block_size),
            digest_block_size,
            stats: DeltaStats::default(),
            search_miss_bytes: 0,
            in_place: false,
        }
    }

    /// The first basis block an in-place receiver can still read when writing at `pos`.
    fn first_usable_block(&self, pos: usize) -> usize {
        if self.in_place {
            pos.div_ceil(self.signature.block_size())
        } else {
            0
        }
    }

    fn run(mut self) -> Result<DeltaSummary, S::Error> {
        let len = self.new.len();
        let block = self.signature.block_size();
        let blocks = self.signature.blocks();
        let mut index: Option<BlockIndex> = None;
        let mut pos = 0usize;
        let mut predicted = 0usize;
        'scan: while pos < len && blocks > 0 {
            if predicted < blocks && self.try_block(pos, predicted) {
                self.copy(pos, predicted)?;
                pos += self.signature.block_len(predicted);
                predicted += 1;
                continue;
            }
            if len - pos < block {
                break;
            }
            let index = index.get_or_insert_with(|| BlockIndex::new(self.signature));
            let mut rolling = Rolling::of(&self.new[pos..pos + block]);
            loop {
                let stop = (len - block).min(self.literal_start + MAX_LITERAL_RUN);
                let (candidate, hit) =
                    roll_to_candidate(self.new, pos, stop, block, &mut rolling, index);
                self.stats.rolled_bytes += (candidate - pos) as u64;
                pos = candidate;
                if hit {
                    if let Some(found) = self.search(index, pos, rolling.value()) {
                        self.copy(pos, found)?;
                        pos += block;
                        predicted = found + 1;
                        continue 'scan;
                    }
                }
                if pos + block >= len {
                    break 'scan;
                }
                if pos - self.literal_start >= MAX_LITERAL_RUN {
                    self.flush_literal(pos)?;
                }
                rolling.roll(self.new[pos], self.new[pos + block]);
                pos += 1;
                self.stats.rolled_bytes += 1;
            }
        }
        // A short last basis block can only match the very end of the new file.
        if blocks > 0 && self.literal_start < len {
            let last = blocks - 1;
            let last_len = self.signature.block_len(last);
            if last_len < block && len >= last_len {
                let start = len - last_len;
                if start >= self.literal_start && self.try_block(start, last) {
                    self.copy(start, last)?;
                }
            }
        }
        self.flush_literal(len)?;
        self.flush_copy()?;
        let (digest, digest_only_bytes) = self.digest.finish();
        self.stats.digest_only_bytes = digest_only_bytes;
        Ok(DeltaSummary {
            new_len: len as u64,
            digest_block_size: self.digest_block_size,
            digest,
            stats: self.stats,
        })
    }

    /// Whether basis block `block` sits at `pos` of the new file (weak checksum, then hash).
    fn try_block(&mut self, pos: usize, block: usize) -> bool {
        if block < self.first_usable_block(pos) {
            return false;
        }
        let block_len = self.signature.block_len(block);
        let full_or_final =
            block_len == self.signature.block_size() || pos + block_len == self.new.len();
        if pos + block_len > self.new.len() || !full_or_final {
            return false;
        }
        let window = &self.new[pos..pos + block_len];
        if weak_checksum(window) != self.signature.weak(block) {
            return false;
        }
        let hash = self.hash_window(pos, block_len);
        hash[..self.signature.strong_len()] == *self.signature.strong(block)
    }

    /// Looks `pos` up in the index; verifies candidates with one window hash, within budget.
    fn search(&mut self, index: &BlockIndex, pos: usize, weak: u32) -> Option<usize> {
        self.stats.lookups += 1;
        let block_size = self.signature.block_size();
        let mut hash: Option<[u8; 32]> = None;
        let first_usable = self.first_usable_block(pos);
        for candidate in index
            .candidates(weak)
            .filter(|&block| block >= first_usable)
        {
            let hash = match hash {
                Some(hash) => hash,
                None => {
                    let budget = self.stats.rolled_bytes + 2 * block_size as u64;
                    if self.search_miss_bytes + block_size as u64 > budget {
                        self.stats.unverified_hits += 1;
                        return None;
                    }
                    *hash.insert(self.hash_window(pos, block_size))
                }
            };
            if hash[..self.signature.strong_len()] == *self.signature.strong(candidate) {
                return Some(candidate);
            }
        }
        if hash.is_some() {
            self.stats.search_misses += 1;
            self.search_miss_bytes += block_size as u64;
        }
        None
    }

    /// The block hash of `new[pos..pos + len]`, offered to the digest.
    fn hash_window(&mut self, pos: usize, len: usize) -> [u8; 32] {
        let hash = block_hash(self.signature.key(), &self.new[pos..pos + len]);
        self.stats.match_hashes += 1;
        self.digest.offer(pos, len, &hash);
        hash
    }

    /// Emits the literal bytes before `pos`, then queues basis block `block` as the next copy.
    fn copy(&mut self, pos: usize, block: usize) -> Result<(), S::Error> {
        self.flush_literal(pos)?;
        let block_len = self.signature.block_len(block);
        self.stats.copied_blocks += 1;
        self.stats.copied_bytes += block_len as u64;
        self.literal_start = pos + block_len;
        let block = block as u64;
        match &mut self.pending_copy {
            Some((first, count)) if *first + *count == block => *count += 1,
            _ => {
                self.flush_copy()?;
                self.pending_copy = Some((block, 1));
            }
        }
        Ok(())
    }

    fn flush_copy(&mut self) -> Result<(), S::Error> {
        if let Some((first, count)) = self.pending_copy.take() {
            self.stats.copy_ops += 1;
            self.sink.copy(first, count)?;
        }
        Ok(())
    }

    /// Emits `new[literal_start..upto]` as literal runs of at most [`MAX_LITERAL_RUN`] bytes.
    fn flush_literal(&mut self, upto: usize) -> Result<(), S::Error> {
        if upto <= self.literal_start {
            return Ok(());
        }
        self.flush_copy()?;
        while self.literal_start < upto {
            let end = upto.min(self.literal_start + MAX_LITERAL_RUN);
            self.sink.literal(&self.new[self.literal_start..end])?;
            self.stats.literal_ops += 1;
            self.stats.literal_bytes += (end - self.literal_start) as u64;
            self.literal_start = end;
        }
        self.digest.catch_up(upto);
        Ok(())
    }
}

/// One delta operation, owned (for tests and small in-memory uses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Copy basis blocks `first .. first + count`.
    Copy {
        /// The first block.
        first: u64,
        /// How many blocks.
        count: u64,
    },
    /// Append these bytes.
    Literal(Vec<u8>),
}

/// A sink that collects operations in memory.
#[derive(Default, Debug)]
pub struct CollectOps(pub Vec<Op>);

impl DeltaSink for CollectOps {
    type Error = std::convert::Infallible;
    fn copy(&mut self, first: u64, count: u64) -> Result<(), Self::Error> {
        self.0.push(Op::Copy { first, count });
        Ok(())
    }
    fn literal(&mut self, data: &[u8]) -> Result<(), Self::Error> {
        self.0.push(Op::Literal(data.to_vec()));
        Ok(())
    }
}
