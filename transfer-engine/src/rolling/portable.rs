//! The portable block-sum kernel: 32 lanes of plain integer arithmetic, for any CPU.

use super::extend_sums;

const LANES: usize = 32;

/// `(a, b)` of `block` (see the parent module for the definition).
pub(super) fn block_sums(block: &[u8]) -> (u32, u32) {
    let mut lane_sums = [0u32; LANES];
    let mut lane_prefix_sums = [0u32; LANES];
    let chunks = block.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for lane in 0..LANES {
            lane_prefix_sums[lane] = lane_prefix_sums[lane].wrapping_add(lane_sums[lane]);
            lane_sums[lane] = lane_sums[lane].wrapping_add(chunk[lane] as u32);
        }
    }
    let mut a = 0u32;
    let mut before_chunks = 0u32;
    let mut within_chunks = 0u32;
    for lane in 0..LANES {
        a = a.wrapping_add(lane_sums[lane]);
        before_chunks = before_chunks.wrapping_add(lane_prefix_sums[lane]);
        within_chunks =
            within_chunks.wrapping_add(lane_sums[lane].wrapping_mul((LANES - lane) as u32));
    }
    let b = before_chunks
        .wrapping_mul(LANES as u32)
        .wrapping_add(within_chunks);
    extend_sums(a, b, tail)
}
