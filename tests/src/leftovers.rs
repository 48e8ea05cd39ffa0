//! What barsync may leave beside the files it writes, seen from a test: the names of its
//! temporary and partial files (`.NAME.barsync-…`) in one directory.

use std::ffi::OsString;
use std::path::Path;

/// The names in `dir` (not below it) that hold `.barsync-`.
pub fn barsync_names_in(dir: &Path) -> Vec<OsString> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .filter(|name| name.to_string_lossy().contains(".barsync-"))
        .collect()
}
