//! Any text as a backup.info file: what barsync writes back reads back the same, and the typed
//! accessors never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| barsync_fuzz::sync_checks::backup_info_parse(data));
