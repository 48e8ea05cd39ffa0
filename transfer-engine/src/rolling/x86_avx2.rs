//! The AVX2 block-sum kernel.
//!
//! Per 32-byte chunk: `vpsadbw` against zero gives the chunk sum (in four 64-bit lanes),
//! `vpmaddubsw` with weights 32..1 then `vpmaddwd` with ones gives `Σ (32 - t) · x[t]` (in eight
//! 32-bit lanes), and the running total of chunk sums is added to an accumulator before each
//! chunk, which yields `Σ(sums before each chunk)`. Everything wraps modulo 2³² like the definition.

use std::arch::x86_64::*;

use super::extend_sums;

/// `(a, b)` of `block`.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn block_sums(block: &[u8]) -> (u32, u32) {
    let weights = _mm256_setr_epi8(
        32, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10,
        9, 8, 7, 6, 5, 4, 3, 2, 1,
    );
    let ones = _mm256_set1_epi16(1);
    let zero = _mm256_setzero_si256();
    let mut sums = zero; // running total of chunk sums, 4 × u64
    let mut sums_before = zero; // Σ over chunks of the running total before it, 4 × u64
    let mut weighted = zero; // Σ (32 - t)·x[t] over chunks, 8 × u32
    let chunks = block.chunks_exact(32);
    let tail = chunks.remainder();
    for chunk in chunks {
        // SAFETY: chunk has exactly 32 bytes; unaligned load.
        let bytes = unsafe { _mm256_loadu_si256(chunk.as_ptr() as *const __m256i) };
        sums_before = _mm256_add_epi64(sums_before, sums);
        sums = _mm256_add_epi64(sums, _mm256_sad_epu8(bytes, zero));
        let pairs = _mm256_maddubs_epi16(bytes, weights);
        weighted = _mm256_add_epi32(weighted, _mm256_madd_epi16(pairs, ones));
    }
    let a = sum_u64_lanes(sums) as u32;
    let before = sum_u64_lanes(sums_before) as u32;
    let within = sum_u32_lanes(weighted);
    let b = before.wrapping_mul(32).wrapping_add(within);
    extend_sums(a, b, tail)
}

#[target_feature(enable = "avx2")]
fn sum_u64_lanes(v: __m256i) -> u64 {
    let mut lanes = [0u64; 4];
    // SAFETY: lanes is 32 bytes; unaligned store.
    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, v) };
    lanes.iter().fold(0u64, |acc, &x| acc.wrapping_add(x))
}

#[target_feature(enable = "avx2")]
fn sum_u32_lanes(v: __m256i) -> u32 {
    let mut lanes = [0u32; 8];
    // SAFETY: lanes is 32 bytes; unaligned store.
    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, v) };
    lanes.iter().fold(0u32, |acc, &x| acc.wrapping_add(x))
}
