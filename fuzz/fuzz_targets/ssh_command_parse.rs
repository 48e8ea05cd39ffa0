//! Any text as an ssh command (plus, after a NUL, ssh_config text): words re-quote to the same
//! words, and a parsed command resolves without panicking.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| barsync_fuzz::engine_checks::ssh_command_parse(data));
