//! OpenSSH known_hosts files: looking up a server's host key, and recording a new one.
//!
//! Understands plain host patterns (`host`, `[host]:port`, comma lists, `*`/`?`, `!` negation),
//! hashed entries (`|1|salt|hmac-sha1`), and the `@revoked` marker (`@cert-authority` lines are
//! skipped: certificates are not supported). A host on port 22 is looked up as `host`, on any
//! other port as `[host]:port`, as OpenSSH does. Includes the small SHA-1/HMAC and base64 code
//! that hashed entries need.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

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
    format!("SHA256:{}", base64_encode(digest).trim_end_matches('='))
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
        return hmac_sha1(&salt, name.as_bytes()).as_slice() == hash.as_slice();
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
        format!(
            "|1|{}|{}",
            base64_encode(&salt),
            base64_encode(&hmac_sha1(&salt, name.as_bytes()))
        )
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

const BASE64_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let bytes = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let group = (u32::from(bytes[0]) << 16) | (u32::from(bytes[1]) << 8) | u32::from(bytes[2]);
        for position in 0..4 {
            if position <= chunk.len() {
                out.push(BASE64_ALPHABET[((group >> (18 - 6 * position)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 (padding optional); `None` on invalid input.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut group = 0u32;
    let mut bits = 0;
    for c in text.bytes().filter(|&c| c != b'=') {
        let value = BASE64_ALPHABET.iter().position(|&a| a == c)? as u32;
        group = (group << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((group >> bits) as u8);
            group &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// SHA-1 (FIPS 180-4); used only for the HMAC of hashed known_hosts names.
fn sha1(message: &[u8]) -> [u8; 20] {
    let mut state: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut padded = message.to_vec();
    padded.push(0x80);
    while padded.len() % 64 != 56 {
        padded.push(0);
    }
    padded.extend_from_slice(&((message.len() as u64) * 8).to_be_bytes());
    for block in padded.chunks(64) {
        let mut words = [0u32; 80];
        for (i, word) in block.chunks(4).enumerate() {
            words[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            words[i] = (words[i - 3] ^ words[i - 8] ^ words[i - 14] ^ words[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = state;
        for (i, word) in words.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let temp = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*word);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = temp;
        }
        for (slot, value) in state.iter_mut().zip([a, b, c, d, e]) {
            *slot = slot.wrapping_add(value);
        }
    }
    let mut digest = [0u8; 20];
    for (i, value) in state.iter().enumerate() {
        digest[i * 4..i * 4 + 4].copy_from_slice(&value.to_be_bytes());
    }
    digest
}

/// HMAC-SHA1 (RFC 2104).
fn hmac_sha1(key: &[u8], message: &[u8]) -> [u8; 20] {
    let mut block_key = [0u8; 64];
    if key.len() > 64 {
        block_key[..20].copy_from_slice(&sha1(key));
    } else {
        block_key[..key.len()].copy_from_slice(key);
    }
    let mut inner: Vec<u8> = block_key.iter().map(|b| b ^ 0x36).collect();
    inner.extend_from_slice(message);
    let mut outer: Vec<u8> = block_key.iter().map(|b| b ^ 0x5c).collect();
    outer.extend_from_slice(&sha1(&inner));
    sha1(&outer)
}

#[cfg(test)]
#[path = "known_hosts_tests.rs"]
mod tests;
