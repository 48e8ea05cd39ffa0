//! In-place rebuilds (rsync's --inplace): whatever the edit, the file rebuilt over its own basis
//! equals the new file, and unchanged data is not rewritten.

mod common;

use std::fs;

use common::{random_bytes, sign};
use proptest::prelude::*;
use transfer_engine::delta::{CollectOps, Op};
use transfer_engine::{delta_with, DeltaOptions, DeltaSink, InPlacePatcher, MappedFile};

/// Rebuilds `new` over a file holding `basis`; returns the result and the bytes written.
fn rebuild_in_place(basis: &[u8], new: &[u8], block_size: Option<usize>) -> (Vec<u8>, u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("file");
    fs::write(&path, basis).unwrap();
    let signature = sign(basis, block_size);
    let mut ops = CollectOps::default();
    let summary = delta_with(new, &signature, &mut ops, &DeltaOptions { in_place: true }).unwrap();
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let map = MappedFile::from_file(&file).unwrap();
    let mut patcher =
        InPlacePatcher::new(&file, &map, &signature, summary.digest_block_size, None).unwrap();
    for op in &ops.0 {
        match op {
            Op::Copy { first, count } => patcher.copy(*first, *count).unwrap(),
            Op::Literal(data) => patcher.literal(data).unwrap(),
        }
    }
    let written = patcher.finish(summary.new_len, &summary.digest).unwrap();
    drop(map);
    (fs::read(&path).unwrap(), written)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(120))]

    #[test]
    fn in_place_rebuild_equals_new_file(
        basis_len in 0..200_000usize,
        seed in any::<u64>(),
        cuts in prop::collection::vec((any::<usize>(), 0..30_000usize, 0..4u8), 0..5),
    ) {
        let basis = random_bytes(basis_len, seed);
        let mut new = basis.clone();
        for (at, len, kind) in cuts {
            let at = if new.is_empty() { 0 } else { at % (new.len() + 1) };
            match kind {
                0 => { new.splice(at..at, random_bytes(len, seed ^ len as u64)); }
                1 => { let end = (at + len).min(new.len()); new.drain(at..end); }
                2 => { let end = (at + len).min(new.len()); let piece: Vec<u8> = new.drain(at..end).collect(); new.extend(piece); }
                _ => { let end = (at + len).min(new.len()); new[at..end].copy_from_slice(&random_bytes(end - at, seed + 1)); }
            }
        }
        let (rebuilt, _) = rebuild_in_place(&basis, &new, Some(8192));
        prop_assert!(rebuilt == new);
    }
}

#[test]
fn an_in_place_change_writes_only_the_changed_block() {
    let basis = random_bytes(4 << 20, 3);
    let mut new = basis.clone();
    new[1_000_000] ^= 1;
    let (rebuilt, written) = rebuild_in_place(&basis, &new, Some(8192));
    assert_eq!(rebuilt, new);
    assert_eq!(written, 8192);
}

#[test]
fn an_insertion_makes_the_rest_literal_but_stays_correct() {
    let basis = random_bytes(1 << 20, 4);
    let mut new = b"prefix".to_vec();
    new.extend_from_slice(&basis);
    let (rebuilt, _) = rebuild_in_place(&basis, &new, Some(8192));
    assert_eq!(rebuilt, new);
}
