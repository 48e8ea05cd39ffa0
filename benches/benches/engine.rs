//! Engine throughput against fast_rsync 0.2 on the same data, in the same criterion groups.
//!
//! Run: `cargo bench -p barsync-benches --bench engine` (256 MiB inputs; BARSYNC_BENCH_MIB
//! changes the size). barsync uses its block-size rule (16 KiB at 256 MiB); fast_rsync uses
//! 4 KiB blocks and 8-byte MD4 hashes, the settings of the figures quoted in the engine issue.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use barsync_benches::{random_bytes, scatter_changes};
use transfer_engine::delta::DeltaSink;
use transfer_engine::{delta, signature, Patcher, SignatureOptions};

fn size() -> usize {
    std::env::var("BARSYNC_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
        << 20
}

fn fast_rsync_options() -> fast_rsync::SignatureOptions {
    fast_rsync::SignatureOptions {
        block_size: 4096,
        crypto_hash_size: 8,
    }
}

/// Counts delta output without storing it, so the benches measure the scan, not allocation.
#[derive(Default)]
struct CountingSink {
    copies: u64,
    literal_bytes: u64,
}

impl DeltaSink for CountingSink {
    type Error = std::convert::Infallible;
    fn copy(&mut self, _first: u64, count: u64) -> Result<(), Self::Error> {
        self.copies += count;
        Ok(())
    }
    fn literal(&mut self, data: &[u8]) -> Result<(), Self::Error> {
        self.literal_bytes += data.len() as u64;
        Ok(())
    }
}

fn bench_signature(c: &mut Criterion) {
    let data = random_bytes(size(), 1);
    let mut group = c.benchmark_group("signature");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.sample_size(10);
    group.bench_function("barsync/1-core", |b| {
        b.iter(|| signature(&data, &SignatureOptions::default()))
    });
    group.bench_function("barsync/all-cores", |b| {
        b.iter(|| {
            signature(
                &data,
                &SignatureOptions {
                    parallel: true,
                    ..Default::default()
                },
            )
        })
    });
    group.bench_function("fast_rsync/1-core", |b| {
        b.iter(|| fast_rsync::Signature::calculate(&data, fast_rsync_options()))
    });
    group.bench_function("blake3-alone/1-core", |b| b.iter(|| blake3::hash(&data)));
    group.finish();
}

fn bench_delta(c: &mut Criterion) {
    let basis = random_bytes(size(), 2);
    let region = 100 * 1024;
    let workloads = [
        ("unchanged", basis.clone()),
        (
            "1pct-scattered",
            scatter_changes(&basis, basis.len() / 100 / region, region, 3),
        ),
        ("random-no-match", random_bytes(basis.len(), 4)),
    ];
    let ours = signature(&basis, &SignatureOptions::default());
    let theirs = fast_rsync::Signature::calculate(&basis, fast_rsync_options());
    let theirs = theirs.index();
    let mut group = c.benchmark_group("delta");
    group.sample_size(10);
    for (name, new) in &workloads {
        group.throughput(Throughput::Bytes(new.len() as u64));
        group.bench_with_input(BenchmarkId::new("barsync", name), new, |b, new| {
            b.iter(|| {
                let mut sink = CountingSink::default();
                delta(new, &ours, &mut sink).unwrap();
                sink
            })
        });
        group.bench_with_input(BenchmarkId::new("fast_rsync", name), new, |b, new| {
            let mut out = Vec::with_capacity(new.len() + 1024);
            b.iter(|| {
                out.clear();
                fast_rsync::diff(&theirs, new, &mut out).unwrap();
            })
        });
    }
    group.finish();
}

fn bench_patch(c: &mut Criterion) {
    let basis = random_bytes(size(), 5);
    let new = scatter_changes(&basis, basis.len() / 100 / (100 * 1024), 100 * 1024, 6);
    let ours = signature(&basis, &SignatureOptions::default());
    let mut ops = transfer_engine::delta::CollectOps::default();
    let summary = delta(&new, &ours, &mut ops).unwrap();
    let theirs = fast_rsync::Signature::calculate(&basis, fast_rsync_options());
    let mut their_delta = Vec::new();
    fast_rsync::diff(&theirs.index(), &new, &mut their_delta).unwrap();

    let mut group = c.benchmark_group("patch");
    group.throughput(Throughput::Bytes(new.len() as u64));
    group.sample_size(10);
    let mut out = Vec::with_capacity(new.len());
    group.bench_function("barsync/verified", |b| {
        b.iter(|| {
            out.clear();
            let mut patcher =
                Patcher::new(&basis, &ours, summary.digest_block_size, &mut out, None).unwrap();
            for op in &ops.0 {
                match op {
                    transfer_engine::delta::Op::Copy { first, count } => {
                        patcher.copy(*first, *count).unwrap()
                    }
                    transfer_engine::delta::Op::Literal(data) => patcher.literal(data).unwrap(),
                }
            }
            patcher.finish(summary.new_len, &summary.digest).unwrap();
        })
    });
    group.bench_function("fast_rsync/unverified", |b| {
        b.iter(|| {
            out.clear();
            fast_rsync::apply(&basis, &their_delta, &mut out).unwrap();
        })
    });
    group.finish();
}

criterion_group!(benches, bench_signature, bench_delta, bench_patch);
criterion_main!(benches);
