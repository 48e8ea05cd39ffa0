//! One delta of `new` against the signature of `basis`, for `perf stat` / `perf record`:
//! `cargo run --release -p barsync-benches --example delta_only -- {random|unchanged|scattered} [MiB]`
use barsync_benches::{random_bytes, scatter_changes};

struct Discard;
impl transfer_engine::DeltaSink for Discard {
    type Error = std::convert::Infallible;
    fn copy(&mut self, _: u64, _: u64) -> Result<(), Self::Error> {
        Ok(())
    }
    fn literal(&mut self, data: &[u8]) -> Result<(), Self::Error> {
        std::hint::black_box(data);
        Ok(())
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let kind = args.next().unwrap_or_else(|| "random".into());
    let mib: usize = args.next().and_then(|v| v.parse().ok()).unwrap_or(256);
    let basis = random_bytes(mib << 20, 1);
    let new = match kind.as_str() {
        "unchanged" => basis.clone(),
        "scattered" => scatter_changes(&basis, (mib << 20) / 100 / 102400, 102400, 3),
        _ => random_bytes(mib << 20, 2),
    };
    let sig = transfer_engine::signature(&basis, &Default::default());
    let start = std::time::Instant::now();
    let summary = transfer_engine::delta(&new, &sig, &mut Discard).unwrap();
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "{kind}: {:.2} GB/s ({:.3} s) {:?}",
        new.len() as f64 / secs / 1e9,
        secs,
        summary.stats
    );
}
