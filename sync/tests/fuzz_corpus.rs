//! Replays the committed fuzz corpora of the sync-crate targets (fuzz/corpus/) through the fuzz
//! crate's own checks (`fuzz/src/sync_checks.rs`, included here), so every test run re-checks
//! every input the fuzzer found interesting, on the stable toolchain.

use std::fs;
use std::path::PathBuf;

#[path = "../../fuzz/src/sync_checks.rs"]
mod sync_checks;

/// Runs `check` on every input of `target`'s corpus, naming the input that fails.
fn replay(target: &str, check: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut count = 0;
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let input = fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&input));
        assert!(outcome.is_ok(), "{target}: {} fails", path.display());
        count += 1;
    }
    assert!(count > 0, "{} is empty", dir.display());
}

#[test]
fn sync_info_parse_corpus() {
    replay("sync_info_parse", sync_checks::sync_info_parse);
}

#[test]
fn backup_info_parse_corpus() {
    replay("backup_info_parse", sync_checks::backup_info_parse);
}

#[test]
fn xlogdb_parse_corpus() {
    replay("xlogdb_parse", sync_checks::xlogdb_parse);
}

#[test]
fn config_parse_corpus() {
    replay("config_parse", sync_checks::config_parse);
}

#[test]
fn path_validate_corpus() {
    // The relative path half of this target is replayed by transfer-engine/tests/fuzz_corpus.rs.
    replay("path_validate", sync_checks::wal_and_backup_names);
}
