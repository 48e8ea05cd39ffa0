//! The names barsync derives from a file's name: its temporary files
//! (`.NAME.barsync-XXXXXXXXXXXX`, [`temporary`]), its partial file (`.NAME.barsync-partial`,
//! [`partial`]) and how any name is shown in messages ([`shown`]).
//!
//! A file name may have up to 255 bytes (`NAME_MAX`), and the decorations add up to 22, so for
//! a long name `NAME` is shortened to a prefix of the name, `~`, and 16 hex digits of a hash of
//! the whole name: still unique per file, still recognizable by its start, its `.` and its
//! `.barsync-` suffix, and within the limit. Every place that recognizes these names looks for
//! a leading `.` and `.barsync-` / a `.barsync-partial` ending, or compares with [`partial`].

use std::borrow::Cow;

/// Longest file name (bytes) the file systems barsync writes to accept.
pub const NAME_MAX: usize = 255;

/// The suffix of every partial file.
pub const PARTIAL_SUFFIX: &str = ".barsync-partial";

/// `.<name>.barsync-<tag>`, with `name` shortened as the module says when the whole would be
/// longer than [`NAME_MAX`] bytes.
fn decorated(name: &str, tag: &str) -> String {
    let fixed = 1 + ".barsync-".len() + tag.len();
    if fixed + name.len() <= NAME_MAX {
        return format!(".{name}.barsync-{tag}");
    }
    let hash = blake3::hash(name.as_bytes());
    let hash: String = hash.as_bytes()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    // `~` and the 16 hex digits follow the prefix.
    let mut keep = NAME_MAX - fixed - 1 - hash.len();
    while !name.is_char_boundary(keep) {
        keep -= 1;
    }
    format!(".{}~{hash}.barsync-{tag}", &name[..keep])
}

/// The name of a temporary file for `name`, with the random `suffix` (12 hex digits).
pub fn temporary(name: &str, suffix: &str) -> String {
    decorated(name, suffix)
}

/// The name under which an interrupted transfer of `name` is kept.
pub fn partial(name: &str) -> String {
    decorated(name, "partial")
}

/// `name` as messages show it: as is when it has no control character, else quoted and escaped
/// (`{:?}`), so that a newline or an escape sequence in a name cannot forge or garble a line of
/// a log.
pub fn shown(name: &str) -> Cow<'_, str> {
    if name.chars().any(char::is_control) {
        Cow::Owned(format!("{name:?}"))
    } else {
        Cow::Borrowed(name)
    }
}

/// A path as messages show it ([`shown`] of its text).
pub fn shown_path(path: &std::path::Path) -> String {
    shown(&path.to_string_lossy()).into_owned()
}
