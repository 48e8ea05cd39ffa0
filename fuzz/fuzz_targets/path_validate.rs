//! Any text as paths from a peer, WAL names and backup IDs: what is accepted cannot name
//! anything outside the directory it is joined to.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    barsync_fuzz::engine_checks::relative_paths(data);
    barsync_fuzz::sync_checks::wal_and_backup_names(data);
});
