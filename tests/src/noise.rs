//! Deterministic bytes that do not compress (xorshift64), for files that must cost their
//! full size on the wire or be told apart from their neighbours.

/// `len` bytes of xorshift64 output, starting from `seed` (0 counts as 1).
pub fn incompressible(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.max(1);
    let mut data = vec![0u8; len];
    for chunk in data.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    data
}
