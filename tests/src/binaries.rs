//! Where the tests find the `barsync` binary built from this workspace.
//!
//! `scripts/test` builds every target before running tests, so the binary sits in the same
//! target directory as the test executable (`target/<profile>/barsync`). `BARSYNC_BIN` overrides.

use std::path::PathBuf;

/// Path of the workspace's `barsync` binary; panics with instructions when it is missing.
pub fn barsync() -> PathBuf {
    if let Some(path) = std::env::var_os("BARSYNC_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/barsync
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let candidate = profile_dir.join("barsync");
    assert!(
        candidate.exists(),
        "{} is missing: build it first (`cargo build -p barsync`, which scripts/test does)",
        candidate.display()
    );
    candidate
}
