//! The weak rolling checksum: cheap to compute for a whole block and to slide by one byte.
//!
//! It is rsync's two-sum checksum. For a window `x[0..n]`:
//! `a = Σ x[i]` and `b = Σ (n - i) · x[i]` (equivalently the sum of the window's prefix sums),
//! both modulo 2³², and the 32-bit value is `(a mod 2¹⁶) | (b << 16)`.
//! Sliding the window by one byte (drop `out`, take `in`) is `a += in - out; b += a - n·out`.
//!
//! Whole-block sums ([`Rolling::of`]) come from a kernel picked at run time: AVX2 where the CPU
//! has it (`x86_avx2`), else the portable one (`portable`). Both compute, over chunks of 32
//! bytes, the chunk sums and their running total, and recombine
//! `b = 32 · Σ(sums before each chunk) + Σ (32 - t) · x[t]`; the tests hold them to the definition.

mod portable;
#[cfg(target_arch = "x86_64")]
mod x86_avx2;

/// A rolling checksum over a window of fixed length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rolling {
    a: u32,
    b: u32,
    window: u32,
}

impl Rolling {
    /// The checksum of `window` (its length becomes the window length for [`Rolling::roll`]).
    pub fn of(window: &[u8]) -> Rolling {
        let (a, b) = block_sums(window);
        Rolling {
            a,
            b,
            window: window.len() as u32,
        }
    }

    /// The 32-bit weak checksum value.
    #[inline(always)]
    pub fn value(&self) -> u32 {
        (self.a & 0xffff) | (self.b << 16)
    }

    /// Slides the window one byte forward: `out` leaves at the front, `incoming` enters at the back.
    #[inline(always)]
    pub fn roll(&mut self, out: u8, incoming: u8) {
        self.a = self
            .a
            .wrapping_sub(out as u32)
            .wrapping_add(incoming as u32);
        self.b = self
            .b
            .wrapping_sub(self.window.wrapping_mul(out as u32))
            .wrapping_add(self.a);
    }
}

/// The weak checksum of one block.
pub fn weak_checksum(block: &[u8]) -> u32 {
    Rolling::of(block).value()
}

/// `(a, b)` of a whole block, on the best kernel for this CPU.
#[inline]
fn block_sums(block: &[u8]) -> (u32, u32) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { x86_avx2::block_sums(block) };
    }
    portable::block_sums(block)
}

/// Extends `(a, b)` of some prefix by `tail`, one byte at a time (shared by the kernels).
#[inline]
fn extend_sums(mut a: u32, mut b: u32, tail: &[u8]) -> (u32, u32) {
    for &byte in tail {
        a = a.wrapping_add(byte as u32);
        b = b.wrapping_add(a);
    }
    (a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(window: &[u8]) -> u32 {
        let n = window.len() as u32;
        let (mut a, mut b) = (0u32, 0u32);
        for (i, &x) in window.iter().enumerate() {
            a = a.wrapping_add(x as u32);
            b = b.wrapping_add((n - i as u32).wrapping_mul(x as u32));
        }
        (a & 0xffff) | (b << 16)
    }

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    #[test]
    fn block_kernel_matches_definition() {
        for len in [0, 1, 31, 32, 33, 63, 64, 100, 8192, 8193, 131072] {
            let data = pseudo_random(len, len as u64 + 7);
            assert_eq!(weak_checksum(&data), naive(&data), "len {len}");
        }
        let ones = vec![0xffu8; 131072];
        assert_eq!(
            weak_checksum(&ones),
            naive(&ones),
            "overflowing sums wrap the same way"
        );
    }

    #[test]
    fn kernels_agree() {
        for len in [0, 1, 31, 32, 33, 64, 1000, 8192, 65536, 131072] {
            let data = pseudo_random(len, len as u64 + 3);
            let portable = portable::block_sums(&data);
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") {
                assert_eq!(
                    // SAFETY: AVX2 was detected just above.
                    unsafe { x86_avx2::block_sums(&data) },
                    portable,
                    "len {len}"
                );
            }
            let ones = vec![0xffu8; len];
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") {
                assert_eq!(
                    // SAFETY: AVX2 was detected just above.
                    unsafe { x86_avx2::block_sums(&ones) },
                    portable::block_sums(&ones)
                );
            }
        }
    }

    #[test]
    fn rolling_equals_recomputing() {
        let data = pseudo_random(4096, 42);
        let window = 1000;
        let mut rolling = Rolling::of(&data[..window]);
        for start in 1..data.len() - window {
            rolling.roll(data[start - 1], data[start + window - 1]);
            assert_eq!(
                rolling.value(),
                naive(&data[start..start + window]),
                "at {start}"
            );
        }
    }
}
