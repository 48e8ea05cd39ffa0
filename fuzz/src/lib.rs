//! The checks the fuzz targets run, shared with the stable tests that replay the committed
//! corpora: `transfer-engine/tests/fuzz_corpus.rs` includes [`engine_checks`] and
//! `sync/tests/fuzz_corpus.rs` includes [`sync_checks`] (with `#[path]`), so a corpus file is
//! replayed through exactly the code and the properties the fuzzer ran.
//!
//! Each check takes the raw fuzz input, ignores what the code under test refuses, and panics
//! (an assertion) when a property fails.

pub mod engine_checks;
pub mod sync_checks;
