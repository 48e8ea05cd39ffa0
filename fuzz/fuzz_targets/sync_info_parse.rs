//! Any text as a primary's sync-info answer: JSON round-trips, and what a passive would store
//! from it reads back the same.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| barsync_fuzz::sync_checks::sync_info_parse(data));
