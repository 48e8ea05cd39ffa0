//! Property tests: whatever the edit, the rebuilt file equals the new file, and deltas stay small.

mod common;

use common::{random_bytes, round_trip};
use proptest::prelude::*;

/// An edit applied to a basis to make the new file.
#[derive(Clone, Debug)]
enum Edit {
    Insert { at: usize, len: usize, seed: u64 },
    Delete { at: usize, len: usize },
    Overwrite { at: usize, len: usize, seed: u64 },
    Move { from: usize, len: usize, to: usize },
    Truncate { at: usize },
    Append { len: usize, seed: u64 },
}

fn apply(data: &mut Vec<u8>, edit: &Edit) {
    let clamp = |at: usize, len: usize| -> usize {
        if len == 0 {
            0
        } else {
            at % (len + 1)
        }
    };
    match *edit {
        Edit::Insert { at, len, seed } => {
            let at = clamp(at, data.len());
            let bytes = random_bytes(len, seed);
            data.splice(at..at, bytes);
        }
        Edit::Delete { at, len } => {
            let at = clamp(at, data.len());
            let end = (at + len).min(data.len());
            data.drain(at..end);
        }
        Edit::Overwrite { at, len, seed } => {
            let at = clamp(at, data.len());
            let end = (at + len).min(data.len());
            data[at..end].copy_from_slice(&random_bytes(end - at, seed));
        }
        Edit::Move { from, len, to } => {
            let from = clamp(from, data.len());
            let end = (from + len).min(data.len());
            let piece: Vec<u8> = data.drain(from..end).collect();
            let to = clamp(to, data.len());
            data.splice(to..to, piece);
        }
        Edit::Truncate { at } => {
            let at = clamp(at, data.len());
            data.truncate(at);
        }
        Edit::Append { len, seed } => data.extend(random_bytes(len, seed)),
    }
}

fn edit_strategy() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 0..20_000usize, any::<u64>()).prop_map(|(at, len, seed)| Edit::Insert {
            at,
            len,
            seed
        }),
        (any::<usize>(), 0..20_000usize).prop_map(|(at, len)| Edit::Delete { at, len }),
        (any::<usize>(), 0..20_000usize, any::<u64>())
            .prop_map(|(at, len, seed)| Edit::Overwrite { at, len, seed }),
        (any::<usize>(), 0..40_000usize, any::<usize>()).prop_map(|(from, len, to)| Edit::Move {
            from,
            len,
            to
        }),
        any::<usize>().prop_map(|at| Edit::Truncate { at }),
        (0..20_000usize, any::<u64>()).prop_map(|(len, seed)| Edit::Append { len, seed }),
    ]
}

fn basis_len_strategy() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0usize),
        Just(1usize),
        Just(8192usize),
        Just(3 * 8192usize),
        Just(16 * 8192usize),
        0..300_000usize,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn rebuilt_file_equals_new_file(
        basis_len in basis_len_strategy(),
        seed in any::<u64>(),
        edits in prop::collection::vec(edit_strategy(), 0..6),
        block_size in prop_oneof![Just(None), Just(Some(8192usize)), Just(Some(16384usize))],
    ) {
        let basis = random_bytes(basis_len, seed);
        let mut new = basis.clone();
        for edit in &edits {
            apply(&mut new, edit);
        }
        let (rebuilt, summary, _) = round_trip(&basis, &new, block_size);
        prop_assert_eq!(rebuilt.len(), new.len());
        prop_assert!(rebuilt == new, "rebuilt file differs from the new file");
        let stats = summary.stats;
        prop_assert_eq!(stats.copied_bytes + stats.literal_bytes, new.len() as u64);
    }

    #[test]
    fn one_block_change_costs_about_one_block(
        blocks in 2..64usize,
        changed in any::<usize>(),
        offset in 0..8192usize,
        seed in any::<u64>(),
    ) {
        let block = 8192;
        let basis = random_bytes(blocks * block, seed);
        let mut new = basis.clone();
        let at = (changed % blocks) * block + offset;
        new[at] ^= 0x55;
        let (rebuilt, summary, ops) = round_trip(&basis, &new, Some(block));
        prop_assert!(rebuilt == new);
        prop_assert_eq!(summary.stats.literal_bytes, block as u64);
        prop_assert!(ops.len() <= 3, "{} operations", ops.len());
    }
}

#[test]
fn edge_sizes_round_trip() {
    for (basis_len, new_len) in [
        (0, 0),
        (0, 1),
        (1, 0),
        (1, 1),
        (8192, 8192),
        (8192, 8193),
        (8193, 8192),
        (16384, 0),
    ] {
        let basis = random_bytes(basis_len, 1);
        let mut new = random_bytes(new_len.min(basis_len), 1);
        new.extend(random_bytes(new_len.saturating_sub(basis_len), 2));
        let (rebuilt, _, _) = round_trip(&basis, &new, None);
        assert_eq!(rebuilt, new, "basis {basis_len} new {new_len}");
    }
}

#[test]
fn unchanged_file_is_one_copy() {
    let basis = random_bytes(1_000_003, 5);
    let (rebuilt, summary, ops) = round_trip(&basis, &basis, None);
    assert_eq!(rebuilt, basis);
    assert_eq!(summary.stats.literal_bytes, 0);
    assert_eq!(ops.len(), 1, "{ops:?}");
    assert_eq!(
        summary.stats.digest_only_bytes, 0,
        "digest reused the match hashes"
    );
}

#[test]
fn insertion_at_front_shifts_matches() {
    let basis = random_bytes(500_000, 6);
    let mut new = b"inserted at the front".to_vec();
    new.extend_from_slice(&basis);
    let (rebuilt, summary, _) = round_trip(&basis, &new, Some(8192));
    assert_eq!(rebuilt, new);
    // Only the inserted bytes and the final partial block travel as literals.
    assert!(
        summary.stats.literal_bytes <= 21 + 8192,
        "{:?}",
        summary.stats
    );
}

#[test]
fn hundred_mib_pair_round_trips_with_small_delta() {
    let basis = random_bytes(100 << 20, 7);
    let mut new = basis.clone();
    for region in 0..10 {
        let at = region * (10 << 20) + 12_345;
        new[at..at + 1000].copy_from_slice(&random_bytes(1000, region as u64));
    }
    new.splice(50 << 20..50 << 20, random_bytes(777, 8));
    let (rebuilt, summary, _) = round_trip(&basis, &new, None);
    assert!(rebuilt == new);
    // 11 damaged places, each costing at most two blocks of literal (plus the insertion).
    let block = summary.digest_block_size as u64;
    assert!(
        summary.stats.literal_bytes <= 11 * 2 * block + 777,
        "{:?}",
        summary.stats
    );
}
