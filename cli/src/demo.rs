//! `barsync demo`: the engine on an embedded default, needing nothing installed.
//!
//! It builds a sample PostgreSQL-like data directory (relation segments of 8 KiB pages) as the
//! primary's copy, syncs it to an empty passive copy, then applies pgbench-like traffic to the
//! primary (pages rewritten in place, a table grown, a new relation) and syncs again against
//! the passive's previous files. Every file goes through signature, encoded delta and verified
//! patch; the demo then compares both trees byte for byte and prints what crossed the "wire".

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use transfer_engine::local::{transfer_file, TransferReport};

const PAGE: usize = 8192;

#[derive(clap::Args)]
pub struct Args {
    /// Size of the sample cluster in MiB.
    #[arg(long, default_value_t = 256)]
    size_mib: usize,
    /// Work in this directory (kept) instead of a temporary one (removed).
    #[arg(long)]
    dir: Option<PathBuf>,
}

struct Totals {
    files: usize,
    synced: u64,
    wire: u64,
    literal: u64,
}

pub fn run(args: &Args) -> Result<std::process::ExitCode> {
    let temp;
    let root = match &args.dir {
        Some(dir) => dir.clone(),
        None => {
            temp = std::env::temp_dir().join(format!("barsync-demo-{}", std::process::id()));
            temp
        }
    };
    let primary = root.join("primary/base/data");
    let passive = root.join("passive/base/data");
    fs::create_dir_all(&primary)
        .and_then(|_| fs::create_dir_all(&passive))
        .with_context(|| format!("creating {}", root.display()))?;
    let result = demo(args.size_mib, &primary, &passive);
    if args.dir.is_none() {
        let _ = fs::remove_dir_all(&root);
    }
    result
}

fn demo(size_mib: usize, primary: &Path, passive: &Path) -> Result<std::process::ExitCode> {
    println!("barsync demo: a {size_mib} MiB sample cluster, primary -> passive through the delta engine");
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    let relations = write_cluster(primary, size_mib, &mut rng)?;

    let first = sync_tree(primary, passive, "initial sync (no basis)")?;
    pgbench_traffic(primary, &relations, &mut rng)?;
    let second = sync_tree(primary, passive, "after pgbench-like traffic")?;
    verify_equal(primary, passive)?;
    println!(
        "verified: all {} files identical on both sides; the second sync sent {:.2}% of the data it synced",
        second.files,
        100.0 * second.wire as f64 / second.synced.max(1) as f64
    );
    let _ = first;
    Ok(std::process::ExitCode::SUCCESS)
}

fn write_cluster(primary: &Path, size_mib: usize, rng: &mut XorShift) -> Result<Vec<PathBuf>> {
    let segment = (16usize << 20).min((size_mib << 20) / 4).max(PAGE);
    let mut relations = Vec::new();
    let mut remaining = size_mib << 20;
    let mut oid = 16384;
    while remaining > 0 {
        let len = segment.min(remaining);
        let path = primary.join(format!("base/5/{oid}"));
        fs::create_dir_all(path.parent().expect("has parent"))?;
        fs::write(&path, rng.pages(len)).with_context(|| format!("writing {}", path.display()))?;
        relations.push(path);
        remaining -= len;
        oid += 1;
    }
    fs::write(primary.join("PG_VERSION"), "15\n")?;
    Ok(relations)
}

fn pgbench_traffic(primary: &Path, relations: &[PathBuf], rng: &mut XorShift) -> Result<()> {
    for (index, path) in relations.iter().enumerate() {
        let mut data = fs::read(path)?;
        let pages = data.len() / PAGE;
        // Every other relation: 1% of its pages rewritten in place.
        if index % 2 == 0 && pages > 0 {
            for _ in 0..(pages / 100).max(1) {
                let page = rng.next() as usize % pages;
                data[page * PAGE..(page + 1) * PAGE].copy_from_slice(&rng.pages(PAGE));
            }
        }
        // The last relation grows by 64 pages.
        if index + 1 == relations.len() {
            data.extend(rng.pages(64 * PAGE));
        }
        fs::write(path, data)?;
    }
    fs::write(primary.join("base/5/99999"), rng.pages(32 * PAGE))?;
    Ok(())
}

fn sync_tree(primary: &Path, passive: &Path, label: &str) -> Result<Totals> {
    let start = Instant::now();
    let mut totals = Totals {
        files: 0,
        synced: 0,
        wire: 0,
        literal: 0,
    };
    for source in files_below(primary)? {
        let relative = source.strip_prefix(primary).expect("below primary");
        let destination = passive.join(relative);
        fs::create_dir_all(destination.parent().expect("has parent"))?;
        let basis = destination.exists().then_some(destination.as_path());
        let report: TransferReport = transfer_file(&source, basis, &destination)?;
        totals.files += 1;
        totals.synced += report.len;
        totals.wire += report.signature_bytes + report.delta_bytes;
        totals.literal += report.stats.literal_bytes;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "  {label:<28} {:>4} files  {:>9.1} MiB synced  {:>9.2} MiB on the wire  {:>6.2} s  {:>7.1} MiB/s",
        totals.files,
        totals.synced as f64 / 1048576.0,
        totals.wire as f64 / 1048576.0,
        secs,
        totals.synced as f64 / 1048576.0 / secs
    );
    Ok(totals)
}

fn verify_equal(primary: &Path, passive: &Path) -> Result<()> {
    for source in files_below(primary)? {
        let copy = passive.join(source.strip_prefix(primary).expect("below primary"));
        if fs::read(&source)?
            != fs::read(&copy).with_context(|| format!("reading {}", copy.display()))?
        {
            bail!("{} differs from {}", copy.display(), source.display());
        }
    }
    Ok(())
}

fn files_below(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                pending.push(entry.path());
            } else {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Deterministic page contents: random tuples in the first half, free space (zeros) after.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pages(&mut self, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        for page in out.chunks_mut(PAGE) {
            let used = page.len() / 2;
            for word in page[..used].chunks_mut(8) {
                let value = self.next().to_le_bytes();
                word.copy_from_slice(&value[..word.len()]);
            }
        }
        out
    }
}
