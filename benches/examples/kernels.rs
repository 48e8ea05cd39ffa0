//! Times each engine kernel alone on one core (median of 7): a profiling aid, not a benchmark
//! of record. `cargo run --release -p barsync-benches --example kernels [MiB]`
use std::time::Instant;

use barsync_benches::random_bytes;
use transfer_engine::digest::block_hash;
use transfer_engine::rolling::weak_checksum;

fn median_gbps(bytes: usize, mut run: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..7)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    bytes as f64 / times[3] / 1e9
}

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let data = random_bytes(mib << 20, 1);
    let key = [5u8; 32];
    for block in [8192usize, 16384, 32768, 131072] {
        let weak = median_gbps(data.len(), || {
            let mut acc = 0u32;
            for chunk in data.chunks(block) {
                acc ^= weak_checksum(chunk);
            }
            std::hint::black_box(acc);
        });
        let strong = median_gbps(data.len(), || {
            let mut acc = 0u8;
            for chunk in data.chunks(block) {
                acc ^= block_hash(&key, chunk)[0];
            }
            std::hint::black_box(acc);
        });
        println!(
            "block {block:>6}: weak {weak:5.2} GB/s   keyed blake3 per block {strong:5.2} GB/s"
        );
    }
    let other = random_bytes(data.len(), 2);
    let sig = transfer_engine::signature(&data, &Default::default());
    let no_match = median_gbps(data.len(), || {
        let mut ops = Counting;
        std::hint::black_box(transfer_engine::delta(&other, &sig, &mut ops).unwrap());
    });
    println!("delta of random data with no match: {no_match:5.2} GB/s");
    let stats = transfer_engine::delta(&other, &sig, &mut Counting)
        .unwrap()
        .stats;
    println!("  {stats:?}");
    let whole = median_gbps(data.len(), || {
        std::hint::black_box(blake3::hash(&data));
    });
    println!("blake3 of the whole buffer: {whole:5.2} GB/s");
}

struct Counting;
impl transfer_engine::DeltaSink for Counting {
    type Error = std::convert::Infallible;
    fn copy(&mut self, _: u64, _: u64) -> Result<(), Self::Error> {
        Ok(())
    }
    fn literal(&mut self, data: &[u8]) -> Result<(), Self::Error> {
        std::hint::black_box(data);
        Ok(())
    }
}
