//! Inputs that make naive delta algorithms quadratic: the counters must grow linearly.

mod common;

use common::{random_bytes, round_trip, sign};
use transfer_engine::delta::CollectOps;
use transfer_engine::rolling::weak_checksum;
use transfer_engine::{delta, Signature};

#[test]
fn all_zero_basis_and_new() {
    let len = 20 << 20;
    let zeros = vec![0u8; len];
    let (rebuilt, summary, ops) = round_trip(&zeros, &zeros, None);
    assert_eq!(rebuilt, zeros);
    let blocks = (len / summary.digest_block_size) as u64;
    assert_eq!(summary.stats.literal_bytes, 0);
    assert_eq!(summary.stats.match_hashes, blocks, "one hash per block");
    assert_eq!(summary.stats.rolled_bytes, 0);
    assert_eq!(ops.len(), 1);
}

#[test]
fn repeated_page_against_shifted_repeated_page() {
    let page = random_bytes(8192, 9);
    let basis: Vec<u8> = page.iter().copied().cycle().take(16 << 20).collect();
    // The new file is the same page pattern shifted by 100 bytes: every block matches somewhere,
    // but not at the predicted place.
    let new: Vec<u8> = page
        .iter()
        .copied()
        .cycle()
        .skip(100)
        .take(16 << 20)
        .collect();
    let (rebuilt, summary, _) = round_trip(&basis, &new, Some(8192));
    assert_eq!(rebuilt, new);
    let s = summary.stats;
    let len = new.len() as u64;
    assert!(s.match_hashes <= 2 * len / 8192 + 4, "{s:?}");
    assert!(s.rolled_bytes <= 2 * 8192, "{s:?}");
    assert!(s.literal_bytes <= 2 * 8192, "{s:?}");
}

#[test]
fn random_data_with_no_match_rolls_every_byte_once() {
    let basis = random_bytes(16 << 20, 10);
    let new = random_bytes(16 << 20, 11);
    let (rebuilt, summary, _) = round_trip(&basis, &new, None);
    assert_eq!(rebuilt, new);
    let s = summary.stats;
    let len = new.len() as u64;
    assert_eq!(s.literal_bytes, len);
    assert!(s.rolled_bytes < len, "{s:?}");
    // The filter lets a few percent of positions through to the index, and true weak collisions
    // (hashed for nothing) cost a small fraction of the bytes scanned.
    assert!(s.lookups < len / 20, "{s:?}");
    assert!(
        s.search_misses * summary.digest_block_size as u64 <= len / 16,
        "{s:?}"
    );
}

/// A signature whose every block has the weak checksum of a constant window but a hash that
/// never matches: every position of a constant file is a weak hit. Without the miss budget this
/// costs one block hash per byte (quadratic in block size times length).
#[test]
fn forged_weak_collisions_everywhere_stay_linear() {
    let block = 8192usize;
    let new = vec![0x41u8; 8 << 20];
    let weak = weak_checksum(&new[..block]);
    let honest = sign(&vec![0u8; 64 * block], Some(block));
    let mut wire = Vec::new();
    honest.encode(&mut wire);
    let header = wire.len() - honest.blocks() * (4 + honest.strong_len());
    for (index, record) in wire[header..]
        .chunks_mut(4 + honest.strong_len())
        .enumerate()
    {
        record[..4].copy_from_slice(&weak.to_le_bytes());
        record[4..].fill(index as u8 ^ 0xa5); // distinct, so the index keeps them all
    }
    let forged = Signature::decode(&wire).unwrap();
    let mut ops = CollectOps::default();
    let summary = delta(&new, &forged, &mut ops).unwrap();
    let s = summary.stats;
    let len = new.len() as u64;
    assert_eq!(s.literal_bytes, len);
    assert!(
        s.lookups >= len - block as u64 - 1,
        "every position was a weak hit: {s:?}"
    );
    assert!(
        s.search_misses * block as u64 <= s.rolled_bytes + 2 * block as u64,
        "misses within budget: {s:?}"
    );
    assert!(s.unverified_hits > len / 2, "{s:?}");
}
