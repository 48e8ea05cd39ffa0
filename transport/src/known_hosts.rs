//! OpenSSH known_hosts files: looking up a server's host key, and recording a new one.
//!
//! Understands plain host patterns (`host`, `[host]:port`, comma lists, `*`/`?`, `!` negation),
//! hashed entries (`|1|salt|hmac-sha1`), and the `@revoked` marker (`@cert-authority` lines are
//! skipped: certificates are not supported). A host on port 22 is looked up as `host`, on any
//! other port as `[host]:port`, as OpenSSH does. Hashed names are HMAC-SHA1 (the `hmac` and
//! `sha1` crates) of the name keyed by a random salt; keys and salts are base64 (the `base64`
//! crate).

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use base64::alphabet;
use base64::engine::general_purpose::{
    GeneralPurpose, GeneralPurposeConfig, STANDARD, STANDARD_NO_PAD,
};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::ssh_config::host_matches_patterns;

/// What known_hosts says about a server key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostKeyVerdict {
    /// A line records exactly this key for the host.
    Known,
    /// No line records a key of this type for the host; `other_types` are the types that are
    /// recorded.
    Unknown { other_types: Vec<String> },
    /// A line records a different key of the same type for the host.
    Changed { file: PathBuf, line: usize },
    /// The key is marked `@revoked`.
    Revoked { file: PathBuf },
}

/// The name under which a host is recorded: `host` for port 22, `[host]:port` otherwise.
pub fn lookup_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// The key type named at the start of an SSH public key blob (e.g. `ssh-ed25519`).
pub fn key_type_of_blob(blob: &[u8]) -> String {
    if blob.len() >= 4 {
        let length = u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]) as usize;
        if let Some(name) = blob.get(4..4 + length) {
            return String::from_utf8_lossy(name).into_owned();
        }
    }
    "unknown".to_string()
}

/// OpenSSH's fingerprint form: `SHA256:` and the unpadded base64 of the digest.
pub fn fingerprint_sha256(digest: &[u8]) -> String {
    format!("SHA256:{}", STANDARD_NO_PAD.encode(digest))
}

struct Entry {
    line: usize,
    revoked: bool,
    key_type: String,
    blob: Vec<u8>,
}

fn entries_for_name(path: &Path, name: &str) -> io::Result<Vec<Entry>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let mut entries = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let mut first = fields.next().unwrap_or_default();
        let mut revoked = false;
        if first.starts_with('@') {
            match first {
                "@revoked" => revoked = true,
                _ => continue,
            }
            first = fields.next().unwrap_or_default();
        }
        let (Some(key_type), Some(key_base64)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some(blob) = base64_decode(key_base64) else {
            continue;
        };
        if hosts_field_matches(first, name) {
            entries.push(Entry {
                line: index + 1,
                revoked,
                key_type: key_type.to_string(),
                blob,
            });
        }
    }
    Ok(entries)
}

fn hosts_field_matches(field: &str, name: &str) -> bool {
    if let Some(hashed) = field.strip_prefix("|1|") {
        let Some((salt, hash)) = hashed.split_once('|') else {
            return false;
        };
        let (Some(salt), Some(hash)) = (base64_decode(salt), base64_decode(hash)) else {
            return false;
        };
        return hmac_sha1(&salt, name.as_bytes()).is_ok_and(|mac| mac.verify_slice(&hash).is_ok());
    }
    let patterns: Vec<String> = field.split(',').map(str::to_string).collect();
    host_matches_patterns(name, &patterns)
}

/// Checks `blob` (the server's public key) for `name` against `files`, in order.
pub fn check_host_key(files: &[PathBuf], name: &str, blob: &[u8]) -> io::Result<HostKeyVerdict> {
    let key_type = key_type_of_blob(blob);
    let mut changed = None;
    let mut other_types = Vec::new();
    let mut known = false;
    for file in files {
        for entry in entries_for_name(file, name)? {
            if entry.blob == blob {
                if entry.revoked {
                    return Ok(HostKeyVerdict::Revoked { file: file.clone() });
                }
                known = true;
            } else if entry.revoked {
                continue;
            } else if entry.key_type == key_type {
                changed.get_or_insert(HostKeyVerdict::Changed {
                    file: file.clone(),
                    line: entry.line,
                });
            } else if !other_types.contains(&entry.key_type) {
                other_types.push(entry.key_type);
            }
        }
    }
    Ok(if known {
        HostKeyVerdict::Known
    } else {
        changed.unwrap_or(HostKeyVerdict::Unknown { other_types })
    })
}

/// The key types recorded for `name` (to prefer them during key exchange, as OpenSSH does).
pub fn recorded_key_types(files: &[PathBuf], name: &str) -> Vec<String> {
    let mut types = Vec::new();
    for file in files {
        for entry in entries_for_name(file, name).unwrap_or_default() {
            if !entry.revoked && !types.contains(&entry.key_type) {
                types.push(entry.key_type);
            }
        }
    }
    types
}

/// Appends `name keytype base64` to `file` (hashed when asked), creating the file and its
/// directory if needed.
pub fn append_host_key(file: &Path, name: &str, blob: &[u8], hashed: bool) -> io::Result<()> {
    if let Some(directory) = file.parent() {
        std::fs::create_dir_all(directory)?;
    }
    let host_field = if hashed {
        let mut salt = [0u8; 20];
        getrandom::fill(&mut salt).map_err(|e| io::Error::other(format!("random salt: {e}")))?;
        let hash = hmac_sha1(&salt, name.as_bytes())
            .map_err(|e| io::Error::other(format!("HMAC-SHA1 key: {e}")))?
            .finalize()
            .into_bytes();
        format!("|1|{}|{}", base64_encode(&salt), base64_encode(&hash))
    } else {
        name.to_string()
    };
    let mut output = OpenOptions::new().create(true).append(true).open(file)?;
    let needs_newline = std::fs::read(file)
        .map(|t| !t.is_empty() && !t.ends_with(b"\n"))
        .unwrap_or(false);
    let line = format!(
        "{}{host_field} {} {}\n",
        if needs_newline { "\n" } else { "" },
        key_type_of_blob(blob),
        base64_encode(blob)
    );
    output.write_all(line.as_bytes())?;
    output.sync_all()
}

/// Standard base64 with padding, as known_hosts writes keys, salts and hashes.
fn base64_encode(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// Standard base64 as known_hosts holds it: padding optional, and (as OpenSSH accepts) unused
/// bits of the last character need not be zero.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Decodes a base64 field of known_hosts; `None` on invalid input.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    LENIENT_BASE64.decode(text).ok()
}

type HmacSha1 = Hmac<Sha1>;

/// HMAC-SHA1 (RFC 2104) of `message` keyed by `key`, ready to finalize or verify. HMAC takes keys
/// of any length, so the error is never expected in practice.
fn hmac_sha1(key: &[u8], message: &[u8]) -> Result<HmacSha1, hmac::digest::InvalidLength> {
    let mut mac = HmacSha1::new_from_slice(key)?;
    mac.update(message);
    Ok(mac)
}

#[cfg(test)]
#[path = "known_hosts_tests.rs"]
mod tests;
