//! Any bytes given to `Signature::decode` give an error or a signature that re-encodes to them.
#![no_main]
use libfuzzer_sys::fuzz_target;
use transfer_engine::Signature;

fuzz_target!(|data: &[u8]| {
    if let Ok(signature) = Signature::decode(data) {
        let mut again = Vec::new();
        signature.encode(&mut again);
        assert_eq!(again, data);
    }
});
