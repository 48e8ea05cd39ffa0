//! Unit tests of known_hosts lookup, hashing and base64.

use super::*;

const KEY_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIEkBSJfbinvFUuezL+paiYpEUEw3GNWTIc9dEaB1REmk";
/// Made by `ssh-keygen -H` from `[127.0.0.1]:2222 ssh-ed25519 KEY_A`.
const HASHED_LINE: &str = "|1|cTw4vNxPZ7w2OhQI/SxAm635mes=|b2EdMji9yBQKL0TME1Jx9k4gCNo= ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEkBSJfbinvFUuezL+paiYpEUEw3GNWTIc9dEaB1REmk";

fn key_b() -> Vec<u8> {
    let mut blob = base64_decode(KEY_A).unwrap();
    let last = blob.len() - 1;
    blob[last] ^= 1;
    blob
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn sha1_hmac_and_base64_match_reference_vectors() {
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let sha1 = |bytes: &[u8]| <Sha1 as sha1::Digest>::digest(bytes);
    assert_eq!(
        hex(&sha1(b"abc")),
        "a9993e364706816aba3e25717850c26c9cd0d89d"
    );
    assert_eq!(
        hex(&sha1(&[b'a'; 1000])),
        "291e9a6c66994949b57ba5e650361e98fc36b1ba"
    );
    let hmac =
        |key: &[u8], message: &[u8]| hmac_sha1(key, message).unwrap().finalize().into_bytes();
    assert_eq!(
        hex(&hmac(b"Jefe", b"what do ya want for nothing?")),
        "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
    );
    // Keys longer than SHA-1's 64-byte block are hashed first (RFC 2202, test case 6).
    assert_eq!(
        hex(&hmac(
            &[0xaa; 80],
            b"Test Using Larger Than Block-Size Key - Hash Key First"
        )),
        "aa4ae5e15272d00e95705637ce8a3b55ed402112"
    );
    for length in 0..10 {
        let data: Vec<u8> = (0..length).map(|i| (i * 37) as u8).collect();
        assert_eq!(base64_decode(&base64_encode(&data)).unwrap(), data);
    }
    assert_eq!(base64_encode(b"foob"), "Zm9vYg==");
    assert!(base64_decode("a!b").is_none());
    // known_hosts fields decode with or without padding.
    assert_eq!(base64_decode("Zm9vYg==").unwrap(), b"foob");
    assert_eq!(base64_decode("Zm9vYg").unwrap(), b"foob");
    assert_eq!(fingerprint_sha256(&[0xff; 32]).len(), "SHA256:".len() + 43);
}

#[test]
fn lookup_name_uses_brackets_for_other_ports() {
    assert_eq!(lookup_name("h", 22), "h");
    assert_eq!(lookup_name("h", 2222), "[h]:2222");
}

#[test]
fn hashed_entry_from_ssh_keygen_is_found_for_its_name_only() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "kh", &format!("# comment\n{HASHED_LINE}\n"));
    let blob = base64_decode(KEY_A).unwrap();
    let files = [file];
    assert_eq!(
        check_host_key(&files, "[127.0.0.1]:2222", &blob).unwrap(),
        HostKeyVerdict::Known
    );
    assert_eq!(
        check_host_key(&files, "127.0.0.1", &blob).unwrap(),
        HostKeyVerdict::Unknown {
            other_types: vec![]
        }
    );
    assert_eq!(
        check_host_key(&files, "[127.0.0.1]:2222", &key_b()).unwrap(),
        HostKeyVerdict::Changed {
            file: files[0].clone(),
            line: 2
        }
    );
}

#[test]
fn patterns_negation_revocation_and_other_types() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "db*,!dbx ssh-ed25519 {KEY_A}\nweb ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAAQC7\n@revoked bad ssh-ed25519 {KEY_A}\n@cert-authority * ssh-ed25519 {KEY_A}\n"
    );
    let files = [write(dir.path(), "kh", &text), dir.path().join("missing")];
    let blob = base64_decode(KEY_A).unwrap();
    assert_eq!(
        check_host_key(&files, "db1", &blob).unwrap(),
        HostKeyVerdict::Known
    );
    assert_eq!(
        check_host_key(&files, "dbx", &blob).unwrap(),
        HostKeyVerdict::Unknown {
            other_types: vec![]
        }
    );
    assert_eq!(
        check_host_key(&files, "web", &blob).unwrap(),
        HostKeyVerdict::Unknown {
            other_types: vec!["ssh-rsa".into()]
        }
    );
    assert_eq!(
        check_host_key(&files, "bad", &blob).unwrap(),
        HostKeyVerdict::Revoked {
            file: files[0].clone()
        }
    );
    assert_eq!(recorded_key_types(&files, "web"), ["ssh-rsa"]);
}

#[test]
fn appended_entries_plain_and_hashed_are_found_again() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sub/known_hosts");
    let blob = base64_decode(KEY_A).unwrap();
    append_host_key(&file, "[h]:2200", &blob, false).unwrap();
    append_host_key(&file, "other", &blob, true).unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.starts_with(&format!("[h]:2200 ssh-ed25519 {KEY_A}\n|1|")),
        "{text}"
    );
    let files = [file];
    assert_eq!(
        check_host_key(&files, "[h]:2200", &blob).unwrap(),
        HostKeyVerdict::Known
    );
    assert_eq!(
        check_host_key(&files, "other", &blob).unwrap(),
        HostKeyVerdict::Known
    );
    assert_eq!(
        check_host_key(&files, "h", &blob).unwrap(),
        HostKeyVerdict::Unknown {
            other_types: vec![]
        }
    );
}

#[test]
fn fingerprint_and_key_type() {
    let blob = base64_decode(KEY_A).unwrap();
    assert_eq!(key_type_of_blob(&blob), "ssh-ed25519");
    assert_eq!(
        fingerprint_sha256(&[0u8; 32]),
        "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    );
}
