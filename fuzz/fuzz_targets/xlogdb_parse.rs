//! Any text as an xlog db: every line barsync writes for an entry parses back to it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| barsync_fuzz::sync_checks::xlogdb_parse(data));
