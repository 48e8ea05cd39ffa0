//! Replays the committed fuzz corpora (fuzz/corpus/) through the same checks as the fuzz targets,
//! so every test run re-checks every input the fuzzer found interesting.

use std::fs;
use std::path::PathBuf;

use transfer_engine::{signature, DeltaReader, Patcher, Signature, SignatureOptions};

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
