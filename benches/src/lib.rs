//! Workload generators shared by the criterion benches and the side-by-side harness, and the
//! harness itself ([`harness`]: `barsync bench`, issue 6).
//!
//! The harness depends on the `barsync-tests` crate (a path dependency) to reuse its real-sshd,
//! Barman-primary and passive-node fixtures rather than rewriting them.

pub mod harness;

/// Deterministic incompressible bytes (xorshift64), fast enough to make GiBs in seconds.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = vec![0u8; len];
    for chunk in out.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    out
}

/// A copy of `data` with `regions` regions of `region_len` bytes rewritten at scattered,
/// deterministic offsets (W2 of the benchmark issue: 100 regions of 100 KiB in 1 GiB).
pub fn scatter_changes(data: &[u8], regions: usize, region_len: usize, seed: u64) -> Vec<u8> {
    let mut out = data.to_vec();
    if data.len() <= region_len {
        return out;
    }
    let span = data.len() / regions.max(1);
    let offsets = random_bytes(regions * 8, seed ^ 0xfeed);
    for region in 0..regions {
        let jitter = u64::from_le_bytes(offsets[region * 8..region * 8 + 8].try_into().unwrap());
        let start = (region * span + (jitter as usize % span.max(1))).min(data.len() - region_len);
        out[start..start + region_len]
            .copy_from_slice(&random_bytes(region_len, seed + region as u64));
    }
    out
}
