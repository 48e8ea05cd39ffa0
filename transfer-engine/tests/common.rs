//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

use transfer_engine::delta::{CollectOps, Op};
use transfer_engine::{delta, signature, DeltaSummary, Patcher, Signature, SignatureOptions};

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Signature with a fixed key and an explicit or rule block size.
pub fn sign(basis: &[u8], block_size: Option<usize>) -> Signature {
    signature(
        basis,
        &SignatureOptions {
            block_size,
            key: Some([3u8; 32]),
            parallel: false,
        },
    )
}

/// Delta of `new` against `basis`, applied in memory; returns the rebuilt file and the summary.
pub fn round_trip(
    basis: &[u8],
    new: &[u8],
    block_size: Option<usize>,
) -> (Vec<u8>, DeltaSummary, Vec<Op>) {
    let sig = sign(basis, block_size);
    let mut ops = CollectOps::default();
    let summary = delta(new, &sig, &mut ops).unwrap();
    let mut patcher =
        Patcher::new(basis, &sig, summary.digest_block_size, Vec::new(), None).unwrap();
    for op in &ops.0 {
        match op {
            Op::Copy { first, count } => {
                transfer_engine::DeltaSink::copy(&mut patcher, *first, *count).unwrap()
            }
            Op::Literal(data) => transfer_engine::DeltaSink::literal(&mut patcher, data).unwrap(),
        }
    }
    let rebuilt = patcher.finish(summary.new_len, &summary.digest).unwrap();
    (rebuilt, summary, ops.0)
}
