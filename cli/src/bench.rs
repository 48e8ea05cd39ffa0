//! `barsync bench`: barsync against rsync and Barman's own passive sync, side by side (issue
//! 6). Turns flags into a [`barsync_benches::harness::run`] call and prints its table (or JSON);
//! the workloads, measuring and rendering live in the harness.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use barsync_benches::harness::{self, LinkShape, Options, RemoteHost, Workload};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Workloads to run, comma-separated (W1..W11)
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "W1,W2,W3,W4,W5,W6,W7,W8,W9,W10,W11"
    )]
    workloads: Vec<String>,
    /// Size of the W1/W2 file and of the W8 segment, MiB
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Runs of each side per case (medians are reported)
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// pgbench scale of the Barman primary of W4 and W7 (the reference: 50)
    #[arg(long, default_value_t = 10)]
    scale: u32,
    /// WAL segments of W3
    #[arg(long, default_value_t = 64)]
    wal_segments: usize,
    /// Files of W5
    #[arg(long, default_value_t = 10_000)]
    small_files: usize,
    /// WAL segments measured by W11 (follow latency; ~3 s each, plus up to a minute for
    /// Barman's next cron tick)
    #[arg(long, default_value_t = 100)]
    follow_segments: usize,
    /// W6/W9/W11 round trip, ms
    #[arg(long, default_value_t = 40)]
    rtt_ms: u64,
    /// W6/W9/W11 rate, Mbit/s
    #[arg(long, default_value_t = 100)]
    rate_mbit: u64,
    /// Benchmark against this host: the whole ssh command with its destination, e.g.
    /// "ssh -p 2222 user@host" (default: a private sshd on 127.0.0.1)
    #[arg(long, requires = "remote_dir")]
    ssh: Option<String>,
    /// Scratch directory on the remote host (with --ssh)
    #[arg(long)]
    remote_dir: Option<String>,
    /// barsync program on the remote host (default: barsync; on loopback, this binary)
    #[arg(long)]
    remote_barsync: Option<String>,
    /// The barsync binary to measure (default: this one)
    #[arg(long)]
    barsync: Option<PathBuf>,
    /// Barman for W4/W7/W8 (default: $BARSYNC_TEST_BARMAN, then the workspace's .venv)
    #[arg(long)]
    barman: Option<PathBuf>,
    /// Local scratch directory (default: a new one under /tmp, removed afterwards)
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Print the report as JSON
    #[arg(long)]
    json: bool,
    /// Also write the report as JSON to this file
    #[arg(long)]
    json_file: Option<PathBuf>,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let barsync = match &args.barsync {
        Some(path) => path.clone(),
        None => std::env::current_exe().context("the path of this barsync binary")?,
    };
    let mut options = Options::new(barsync);
    options.workloads = args
        .workloads
        .iter()
        .map(|w| w.parse::<Workload>())
        .collect::<Result<_, _>>()?;
    options.size_mib = args.size_mib;
    options.runs = args.runs;
    options.scale = args.scale;
    options.wal_segments = args.wal_segments;
    options.small_files = args.small_files;
    options.follow_segments = args.follow_segments;
    options.link = LinkShape {
        one_way_delay: Duration::from_micros(args.rtt_ms * 500),
        rate_bytes_per_second: args.rate_mbit * 1_000_000 / 8,
    };
    options.remote = args.ssh.as_ref().map(|ssh| RemoteHost {
        ssh: ssh.clone(),
        dir: args.remote_dir.clone().unwrap_or_default(),
    });
    options.remote_barsync = args.remote_barsync.clone();
    options.barman = args.barman.clone();
    options.work_dir = args.work_dir.clone();
    let report = harness::run(&options, &|line| eprintln!("{line}"))?;
    if let Some(path) = &args.json_file {
        std::fs::write(path, report.to_json())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.render_table());
    }
    Ok(ExitCode::SUCCESS)
}
