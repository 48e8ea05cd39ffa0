//! The sender's lookup table from weak checksum to basis blocks.
//!
//! Two levels, both sized from the number of blocks:
//! - a bit filter (32 to 64 bits per block, at most 256 KiB) answers "no block has a weak checksum like this"
//!   for almost every position of unmatched data with one load from a table small enough for
//!   the first-level cache;
//! - buckets in compressed form (`bucket_start` offsets into `entries`, sorted by bucket) list
//!   the blocks whose weak checksum falls in a bucket.
//!
//! Blocks that repeat exactly (same weak checksum and block hash: runs of zero pages, say) are
//! indexed once, so repetitive data keeps chains short. Only full-size blocks are indexed; a short
//! last block is matched only at the very end of the new file (see [`mod@crate::delta`]).

use crate::signature::Signature;

/// Most bucket entries the delta examines at one position: keeps hostile inputs linear.
pub const MAX_ENTRIES_PER_LOOKUP: usize = 32;

#[derive(Clone, Copy)]
struct Entry {
    weak: u32,
    block: u32,
}

/// The bit filter of a [`BlockIndex`].
#[derive(Clone, Copy)]
pub struct Filter<'a> {
    bits: &'a [u64],
    shift: u32,
}

impl Filter<'_> {
    /// Whether some indexed block may have this weak checksum (false positives possible).
    #[inline(always)]
    pub fn may_contain(self, weak: u32) -> bool {
        let bit = (mix(weak) >> self.shift) as usize;
        debug_assert!(bit / 64 < self.bits.len());
        // SAFETY: `shift` is 32 minus the filter's bit width, so `bit < 64 * bits.len()`
        // (checked when the filter is built in `BlockIndex::new`).
        let word = unsafe { *self.bits.get_unchecked(bit / 64) };
        (word >> (bit % 64)) & 1 != 0
    }
}

/// Weak-checksum index over the full blocks of a signature.
pub struct BlockIndex {
    filter: Vec<u64>,
    filter_shift: u32,
    bucket_shift: u32,
    bucket_start: Vec<u32>,
    entries: Vec<Entry>,
}

#[inline(always)]
fn mix(weak: u32) -> u32 {
    weak.wrapping_mul(0x9E37_79B1)
}

impl BlockIndex {
    /// Indexes the full-size blocks of `signature`.
    pub fn new(signature: &Signature) -> BlockIndex {
        let full_blocks = (signature.basis_len() / signature.block_size() as u64) as usize;
        let bucket_bits = (usize::BITS - full_blocks.max(1).leading_zeros()).clamp(4, 31);
        let filter_bits = (bucket_bits + 5).min(21);
        let mut entries: Vec<(u32, Entry)> = (0..full_blocks)
            .map(|block| {
                let weak = signature.weak(block);
                (
                    mix(weak) >> (32 - bucket_bits),
                    Entry {
                        weak,
                        block: block as u32,
                    },
                )
            })
            .collect();
        // Sort by bucket, then weak, then block hash so exact duplicates become neighbours.
        entries.sort_by(|(ba, a), (bb, b)| {
            (ba, a.weak, signature.strong(a.block as usize), a.block).cmp(&(
                bb,
                b.weak,
                signature.strong(b.block as usize),
                b.block,
            ))
        });
        entries.dedup_by(|(_, later), (_, first)| {
            later.weak == first.weak
                && signature.strong(later.block as usize) == signature.strong(first.block as usize)
        });
        let buckets = 1usize << bucket_bits;
        let mut bucket_start = vec![0u32; buckets + 1];
        for (bucket, _) in &entries {
            bucket_start[*bucket as usize + 1] += 1;
        }
        for bucket in 0..buckets {
            bucket_start[bucket + 1] += bucket_start[bucket];
        }
        let mut filter = vec![0u64; (1usize << filter_bits).div_ceil(64)];
        let filter_shift = 32 - filter_bits;
        assert!(
            (u32::MAX >> filter_shift) as usize / 64 < filter.len(),
            "filter covers every probe"
        );
        for (_, entry) in &entries {
            let bit = (mix(entry.weak) >> filter_shift) as usize;
            filter[bit / 64] |= 1 << (bit % 64);
        }
        BlockIndex {
            filter,
            filter_shift,
            bucket_shift: 32 - bucket_bits,
            bucket_start,
            entries: entries.into_iter().map(|(_, entry)| entry).collect(),
        }
    }

    /// The first-level filter alone, as a small copyable value for tight loops.
    #[inline(always)]
    pub fn filter(&self) -> Filter<'_> {
        Filter {
            bits: &self.filter,
            shift: self.filter_shift,
        }
    }

    /// Blocks with exactly this weak checksum, at most [`MAX_ENTRIES_PER_LOOKUP`] entries examined.
    #[inline]
    pub fn candidates(&self, weak: u32) -> impl Iterator<Item = usize> + '_ {
        let bucket = (mix(weak) >> self.bucket_shift) as usize;
        let start = self.bucket_start[bucket] as usize;
        let end = (self.bucket_start[bucket + 1] as usize).min(start + MAX_ENTRIES_PER_LOOKUP);
        self.entries[start..end]
            .iter()
            .filter(move |entry| entry.weak == weak)
            .map(|entry| entry.block as usize)
    }
}
