//! Any text as barman.conf (plus, after a NUL, an included file): loading it and building every
//! server never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| barsync_fuzz::sync_checks::config_parse(data));
