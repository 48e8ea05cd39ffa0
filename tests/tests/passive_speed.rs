//! How long the passive takes to copy backups of about 66 MiB from the fixture primary over
//! `barsync serve` and over the SFTP fallback, on the same data: a measurement, not a check,
//! so it is ignored by default. Run it on an optimized binary, e.g.
//!
//! ```text
//! cargo build --release -p barsync
//! BARSYNC_BIN=target/release/barsync cargo test -p barsync-tests --test passive_speed \
//!     -- --ignored --nocapture
//! ```
//!
//! `BARSYNC_SPEED_RUNS` sets the runs per path (default 3); the median is printed.
//! `BARSYNC_SPEED_PATHS=sftp` (or `barsync`) measures one path only; `BARSYNC_SPEED_BINS=A:B`
//! compares binaries, run by run in turn (e.g. before and after a change).

use std::collections::BTreeMap;
use std::fs;
use std::time::Instant;

use barsync_tests::binaries::barsync;
use barsync_tests::noise::incompressible;
use barsync_tests::passive_rig::{describe, fixture_primary, PassiveRig, RigOptions};

/// Adds about 66 MiB to each of the primary's two backups, shaped like a small database: one
/// 40 MiB relation, 800 files of 32 KiB (catalogs, small tables), one 2 MiB file. The second
/// backup differs from the first in its 2 MiB file and 40 of the small ones (what a day of
/// light writes changes); the rest is identical, as between two backups of a quiet database.
fn grow(primary: &std::path::Path) -> u64 {
    let mut added = 0;
    for (backup, id) in ["20240101T120000", "20240102T120000"].iter().enumerate() {
        let directory = primary.join(format!("primary-home/pg/base/{id}/data/base/1"));
        // The second backup's first 40 small files have other content.
        let changed = |index: u64| {
            if backup == 1 && index < 40 {
                1 << 20
            } else {
                0
            }
        };
        let mut write = |name: String, len: usize, seed: u64| {
            fs::write(directory.join(name), incompressible(len, seed)).unwrap();
            added += len as u64;
        };
        write("30000".into(), 40 << 20, 1);
        write("30001".into(), 2 << 20, 2 + backup as u64);
        for index in 0..800u64 {
            write(
                format!("{}", 31000 + index),
                32 << 10,
                100 + index + changed(index),
            );
        }
    }
    added / 2
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

/// Runs `args` once on a new passive, with the `barsync` binary `bin` (here and on the
/// primary); prints the seconds and the summary lines, returns the seconds.
fn measure(primary: &std::path::Path, bin: &str, sftp: bool, args: &[&str]) -> f64 {
    // One test, one thread: nothing else reads the environment meanwhile.
    std::env::set_var("BARSYNC_BIN", bin);
    let rig = PassiveRig::new(
        &primary.join("primary.conf"),
        &RigOptions {
            server_lines: vec!["reuse_backup = link".into()],
            ..RigOptions::default()
        },
    );
    let info = rig.barsync(&["sync-info", "--primary", "pg"]);
    assert!(info.status.success(), "{}", describe(&info));
    let mut args = args.to_vec();
    if sftp {
        args.push("--sftp");
    }
    let start = Instant::now();
    let run = rig.barsync(&args);
    let seconds = start.elapsed().as_secs_f64();
    assert!(run.status.success(), "{}", describe(&run));
    let summary = String::from_utf8_lossy(&run.stdout)
        .lines()
        .filter(|l| l.contains(" synced"))
        .map(|l| format!("\n    {l}"))
        .collect::<String>();
    println!(
        "{bin} {} {}: {seconds:.2} s{summary}",
        if sftp { "sftp" } else { "barsync" },
        args[0],
    );
    seconds
}

#[test]
#[ignore = "a measurement: run with --ignored --nocapture on a release binary"]
fn sftp_and_barsync_paths_on_the_same_66_mib() {
    let runs: usize = std::env::var("BARSYNC_SPEED_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    let bins: Vec<String> = match std::env::var("BARSYNC_SPEED_BINS") {
        Ok(list) => list.split(':').map(str::to_owned).collect(),
        Err(_) => vec![barsync().display().to_string()],
    };
    let paths = std::env::var("BARSYNC_SPEED_PATHS").unwrap_or_default();
    let paths: Vec<bool> = [false, true]
        .into_iter()
        .filter(|sftp| paths.is_empty() || paths.contains(if *sftp { "sftp" } else { "barsync" }))
        .collect();
    let primary = fixture_primary();
    let added = grow(primary.path());
    println!("{:.1} MiB added to each backup", added as f64 / 1048576.0);
    // One backup copied whole (nothing to reuse), then cron: both backups (the second mostly
    // identical to the first, reuse_backup = link) and the WALs. Binaries and paths take
    // turns run by run, so a machine busy for a while weighs on all of them alike.
    let cases: [&[&str]; 2] = [&["sync-backup", "pg", "20240102T120000"], &["cron"]];
    let mut seconds: BTreeMap<(usize, &str, &String, bool), Vec<f64>> = BTreeMap::new();
    for (case, args) in cases.iter().enumerate() {
        for _ in 0..runs {
            for bin in &bins {
                for &sftp in &paths {
                    let taken = measure(primary.path(), bin, sftp, args);
                    seconds
                        .entry((case, args[0], bin, sftp))
                        .or_default()
                        .push(taken);
                }
            }
        }
    }
    for ((_, what, bin, sftp), values) in seconds {
        println!(
            "median of {runs}, {what}, {}, {bin}: {:.2} s",
            if sftp { "sftp" } else { "barsync" },
            median(values)
        );
    }
}
