//! Any bytes from a server: frames decode field by field and re-encode to the same bytes, and a
//! whole client session (list, fetch, push, finish) against them ends in an error or in
//! outcomes for every request; never a panic, never a stray temporary file.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| barsync_fuzz::engine_checks::frame_decode(data));
