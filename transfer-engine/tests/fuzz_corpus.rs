//! Replays the committed fuzz corpora (fuzz/corpus/) through the same checks as the fuzz targets,
//! so every test run re-checks every input the fuzzer found interesting. The checks of the newer
//! targets are the fuzz crate's own code (`fuzz/src/engine_checks.rs`), included here.

use std::fs;
use std::path::PathBuf;

use transfer_engine::{signature, DeltaReader, Patcher, Signature, SignatureOptions};

#[path = "../../fuzz/src/engine_checks.rs"]
mod engine_checks;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let inputs: Vec<Vec<u8>> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| fs::read(entry.unwrap().path()).unwrap())
        .collect();
    assert!(!inputs.is_empty(), "{} is empty", dir.display());
    inputs
}

/// Runs `check` on every input of `target`'s corpus, naming the input that fails.
fn replay(target: &str, check: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut count = 0;
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let input = fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&input));
        assert!(outcome.is_ok(), "{target}: {} fails", path.display());
        count += 1;
    }
    assert!(count > 0, "{} is empty", dir.display());
}

#[test]
fn signature_decode_corpus() {
    for input in corpus("signature_decode") {
        if let Ok(decoded) = Signature::decode(&input) {
            let mut again = Vec::new();
            decoded.encode(&mut again);
            assert_eq!(again, input);
        }
    }
}

#[test]
fn delta_apply_corpus() {
    let basis: Vec<u8> = (0..40_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let sig = signature(
        &basis,
        &SignatureOptions {
            key: Some([1; 32]),
            ..Default::default()
        },
    );
    for input in corpus("delta_apply") {
        let Ok(reader) = DeltaReader::new(&input[..]) else {
            continue;
        };
        let Ok(mut patcher) = Patcher::new(
            &basis,
            &sig,
            reader.digest_block_size(),
            Vec::new(),
            Some(1 << 20),
        ) else {
            continue;
        };
        if let Ok(end) = reader.drive(&mut patcher) {
            let _ = patcher.finish(end.len, &end.digest);
        }
    }
}

#[test]
fn frame_decode_corpus() {
    replay("frame_decode", engine_checks::frame_decode);
}

#[test]
fn sftp_reply_decode_corpus() {
    replay("sftp_reply_decode", engine_checks::sftp_reply_decode);
}

#[test]
fn ssh_command_parse_corpus() {
    replay("ssh_command_parse", engine_checks::ssh_command_parse);
}

#[test]
fn path_validate_corpus() {
    // The WAL name and backup ID half of this target is replayed by sync/tests/fuzz_corpus.rs.
    replay("path_validate", engine_checks::relative_paths);
}
