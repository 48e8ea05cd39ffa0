//! Any bytes given to the delta decoder and patcher give an error or a file whose digest and
//! length were verified: never a panic, never unbounded memory.
#![no_main]
use libfuzzer_sys::fuzz_target;
use transfer_engine::{signature, DeltaReader, Patcher, SignatureOptions};

fuzz_target!(|data: &[u8]| {
    let basis: Vec<u8> = (0..40_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let sig = signature(&basis, &SignatureOptions { key: Some([1; 32]), ..Default::default() });
    let Ok(reader) = DeltaReader::new(data) else { return };
    let Ok(mut patcher) = Patcher::new(&basis, &sig, reader.digest_block_size(), Vec::new(), Some(1 << 20)) else {
        return;
    };
    if let Ok(end) = reader.drive(&mut patcher) {
        let _ = patcher.finish(end.len, &end.digest);
    }
});
