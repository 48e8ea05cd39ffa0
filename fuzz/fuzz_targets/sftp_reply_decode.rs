//! Any bytes from an SFTP server: packets are framed and decoded within their limits, and a
//! whole SFTP session (list, three fetches, a push of four items) against them ends in errors
//! or in one result per file; never a panic, never a file outside the expected ones.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| barsync_fuzz::engine_checks::sftp_reply_decode(data));
