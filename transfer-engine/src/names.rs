//! The names barsync derives from a file's name: its temporary files
//! (`.NAME.barsync-XXXXXXXXXXXX`, [`temporary`]), its partial file (`.NAME.barsync-partial`,
//! [`partial`]) and how any name is shown in messages ([`shown`], [`shown_bytes`]).
//!
//! Names are bytes, as in the file system; they need not be UTF-8. A file name may have up to
//! 255 bytes (`NAME_MAX`), and the decorations add up to 22, so for a long name `NAME` is
//! shortened to a prefix of the name, `~`, and 16 hex digits of a hash of the whole name: still
//! unique per file, still recognizable by its start, its `.` and its `.barsync-` suffix, and
//! within the limit. Every place that recognizes these names looks for a leading `.` and
//! `.barsync-` / a `.barsync-partial` ending, or compares with [`partial`].

use std::borrow::Cow;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// Longest file name (bytes) the file systems barsync writes to accept.
pub const NAME_MAX: usize = 255;

/// The suffix of every partial file.
pub const PARTIAL_SUFFIX: &str = ".barsync-partial";

/// `.<name>.barsync-<tag>`, with `name` shortened as the module says when the whole would be
/// longer than [`NAME_MAX`] bytes.
fn decorated(name: &OsStr, tag: &str) -> OsString {
    let name = name.as_bytes();
    let fixed = 1 + ".barsync-".len() + tag.len();
    let mut out = Vec::with_capacity(NAME_MAX);
    out.push(b'.');
    if fixed + name.len() <= NAME_MAX {
        out.extend_from_slice(name);
    } else {
        let hash = blake3::hash(name);
        let hash: String = hash.as_bytes()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        // `~` and the 16 hex digits follow the prefix, cut at a character boundary when the
        // name is UTF-8 (so a shortened UTF-8 name stays UTF-8).
        let mut keep = NAME_MAX - fixed - 1 - hash.len();
        if let Ok(text) = std::str::from_utf8(name) {
            while !text.is_char_boundary(keep) {
                keep -= 1;
            }
        }
        out.extend_from_slice(&name[..keep]);
        out.push(b'~');
        out.extend_from_slice(hash.as_bytes());
    }
    out.extend_from_slice(b".barsync-");
    out.extend_from_slice(tag.as_bytes());
    OsString::from_vec(out)
}

/// The name of a temporary file for `name`, with the random `suffix` (12 hex digits).
pub fn temporary(name: impl AsRef<OsStr>, suffix: &str) -> OsString {
    decorated(name.as_ref(), suffix)
}

/// The name under which an interrupted transfer of `name` is kept.
pub fn partial(name: impl AsRef<OsStr>) -> OsString {
    decorated(name.as_ref(), "partial")
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

/// A name given as bytes, as messages show it: [`shown`] when it is UTF-8, else quoted with
/// the bytes that are not UTF-8 escaped (`"caf\xE9"`), so the message names it exactly.
pub fn shown_bytes(name: &[u8]) -> String {
    match std::str::from_utf8(name) {
        Ok(text) => shown(text).into_owned(),
        Err(_) => format!("{:?}", OsStr::from_bytes(name)),
    }
}

/// A path as messages show it ([`shown_bytes`] of its bytes).
pub fn shown_path(path: &std::path::Path) -> String {
    shown_bytes(path.as_os_str().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decorated_names_fit_and_keep_bytes() {
        let latin1 = OsStr::from_bytes(b"caf\xe9");
        assert_eq!(partial(latin1).as_bytes(), b".caf\xe9.barsync-partial");
        let long = OsString::from_vec(vec![0xe9; 255]);
        let shortened = temporary(&long, "0123456789ab");
        assert_eq!(shortened.len(), NAME_MAX);
        assert!(shortened.as_bytes().starts_with(&[b'.', 0xe9]));
        assert_eq!(shown_bytes(b"caf\xe9"), r#""caf\xE9""#);
        assert_eq!(shown_bytes(b"plain"), "plain");
        assert_eq!(shown_bytes(b"new\nline"), r#""new\nline""#);
    }
}
