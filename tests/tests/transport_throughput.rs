//! Throughput of each transport: N bytes (1 GiB by default) read through an exec channel
//! running `cat FILE` on a local sshd, median of several runs, with wall time and the CPU seconds
//! of this process (and of its children, i.e. the ssh client) — the measurement behind
//! `transfer-engine/src/transport/PERFORMANCE.md`. Ignored by default (it takes minutes):
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-transport cargo test -p barsync-tests --test transport_throughput \
//!     -- --ignored --nocapture
//! ```
//! Environment: `BARSYNC_BENCH_MIB` (size, default 1024), `BARSYNC_BENCH_RUNS` (default 3),
//! `BARSYNC_BENCH_ONLY` (comma-separated variant names to run).

use std::io::Read;
use std::time::Instant;

use barsync_tests::sshd::TestSshd;
use transfer_engine::transport::command::SshCommandTransport;
use transfer_engine::transport::libssh2::{Libssh2Transport, Libssh2Tuning};
use transfer_engine::transport::local::LocalCommandTransport;
use transfer_engine::transport::{choose_transport, Transport, TransportPreference};

/// CPU seconds (user, system) of this process and of its waited-for children, from /proc.
fn cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let after_name = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<f64> = after_name
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    // After the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14), in ticks.
    let ticks = 100.0;
    (
        (fields[11] + fields[13]) / ticks,
        (fields[12] + fields[14]) / ticks,
    )
}

struct Measurement {
    seconds: f64,
    user: f64,
    system: f64,
}

/// Reads everything `streams` parallel streams produce (each `cat`s its share of the file).
fn measure(transport: &dyn Transport, commands: &[String], expected: u64) -> Measurement {
    let (user_before, system_before) = cpu_seconds();
    let started = Instant::now();
    let total: u64 = std::thread::scope(|scope| {
        let readers: Vec<_> = commands
            .iter()
            .map(|command| {
                scope.spawn(move || {
                    let mut stream = transport.open(command).expect("open");
                    let mut buffer = vec![0u8; 256 * 1024];
                    let mut count = 0u64;
                    loop {
                        match stream.read(&mut buffer).expect("read") {
                            0 => break,
                            n => count += n as u64,
                        }
                    }
                    let exit = stream.finish().expect("finish");
                    assert!(exit.success(), "{exit:?}");
                    count
                })
            })
            .collect();
        readers.into_iter().map(|r| r.join().unwrap()).sum()
    });
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(total, expected, "bytes received");
    let (user_after, system_after) = cpu_seconds();
    Measurement {
        seconds,
        user: user_after - user_before,
        system: system_after - system_before,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

fn tuning(ciphers: &str, window_size: u32, read_size: usize) -> Libssh2Tuning {
    Libssh2Tuning {
        ciphers: ciphers.into(),
        window_size,
        read_size,
        ..Libssh2Tuning::default()
    }
}

#[test]
#[ignore = "takes minutes; run explicitly to measure"]
fn throughput_of_each_transport_through_cat() {
    let mib: u64 = std::env::var("BARSYNC_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let runs: usize = std::env::var("BARSYNC_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let only: Option<Vec<String>> = std::env::var("BARSYNC_BENCH_ONLY")
        .ok()
        .map(|v| v.split(',').map(str::to_string).collect());
    let sshd = TestSshd::start().expect("start sshd");
    let bytes = mib << 20;
    let file = sshd.directory().join("payload");
    let status = std::process::Command::new("head")
        .arg("-c")
        .arg(bytes.to_string())
        .arg("/dev/urandom")
        .stdout(std::fs::File::create(&file).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    let ssh = sshd.ssh_command();
    let gcm = "aes128-gcm@openssh.com";
    let libssh2 = |tuning: Libssh2Tuning| -> Box<dyn Transport> {
        Box::new(
            Libssh2Transport::from_command_string(&ssh)
                .unwrap()
                .with_tuning(tuning),
        )
    };
    let mw = 1024 * 1024;
    let variants: Vec<(&str, Box<dyn Transport>, usize)> = vec![
        ("local-pipe", Box::new(LocalCommandTransport::new()), 1),
        (
            "ssh-default",
            Box::new(SshCommandTransport::from_command_string(&ssh).unwrap()),
            1,
        ),
        (
            "ssh-aes128-gcm",
            Box::new(
                SshCommandTransport::from_command_string(&ssh.replacen(
                    "ssh ",
                    "ssh -c aes128-gcm@openssh.com ",
                    1,
                ))
                .unwrap(),
            ),
            1,
        ),
        (
            "ssh-aes128-ctr",
            Box::new(
                SshCommandTransport::from_command_string(&ssh.replacen(
                    "ssh ",
                    "ssh -c aes128-ctr -m hmac-sha2-256-etm@openssh.com ",
                    1,
                ))
                .unwrap(),
            ),
            1,
        ),
        (
            "ssh-aes128-gcm-x2",
            Box::new(
                SshCommandTransport::from_command_string(&ssh.replacen(
                    "ssh ",
                    "ssh -c aes128-gcm@openssh.com ",
                    1,
                ))
                .unwrap(),
            ),
            2,
        ),
        ("libssh2-default", libssh2(Libssh2Tuning::default()), 1),
        (
            "libssh2-aes128-gcm",
            libssh2(tuning(gcm, 2 * mw, 256 * 1024)),
            1,
        ),
        (
            "libssh2-aes256-gcm",
            libssh2(tuning("aes256-gcm@openssh.com", 2 * mw, 256 * 1024)),
            1,
        ),
        (
            "libssh2-chacha20",
            libssh2(tuning("chacha20-poly1305@openssh.com", 2 * mw, 256 * 1024)),
            1,
        ),
        (
            "libssh2-aes128-ctr",
            libssh2(tuning("aes128-ctr", 2 * mw, 256 * 1024)),
            1,
        ),
        (
            "libssh2-gcm-read32k",
            libssh2(tuning(gcm, 2 * mw, 32 * 1024)),
            1,
        ),
        (
            "libssh2-gcm-window256k",
            libssh2(tuning(gcm, 256 * 1024, 256 * 1024)),
            1,
        ),
        (
            "libssh2-gcm-window16m",
            libssh2(tuning(gcm, 16 * mw, 256 * 1024)),
            1,
        ),
        (
            "libssh2-gcm-x2",
            libssh2(tuning(gcm, 2 * mw, 256 * 1024)),
            2,
        ),
        (
            "libssh2-gcm-x4",
            libssh2(tuning(gcm, 2 * mw, 256 * 1024)),
            4,
        ),
        (
            "auto",
            choose_transport(&ssh, TransportPreference::Auto).unwrap(),
            1,
        ),
    ];
    println!("\n{mib} MiB through `cat`, median of {runs} runs (CPU = this process + ssh child)\n");
    println!("| variant | streams | seconds | MB/s | user CPU s | sys CPU s |");
    println!("|---|---|---|---|---|---|");
    for (name, transport, streams) in variants {
        if only
            .as_ref()
            .is_some_and(|only| !only.iter().any(|o| o == name))
        {
            continue;
        }
        let share = bytes / streams as u64;
        let commands: Vec<String> = (0..streams as u64)
            .map(|i| {
                let skip_blocks = i * share / (1 << 20);
                format!(
                    "dd if={} bs=1M skip={skip_blocks} count={} status=none",
                    file.display(),
                    share >> 20
                )
            })
            .collect();
        let commands = if streams == 1 {
            vec![format!("cat {}", file.display())]
        } else {
            commands
        };
        let results: Vec<Measurement> = (0..runs)
            .map(|_| measure(transport.as_ref(), &commands, share * streams as u64))
            .collect();
        let seconds = median(results.iter().map(|m| m.seconds).collect());
        let user = median(results.iter().map(|m| m.user).collect());
        let system = median(results.iter().map(|m| m.system).collect());
        println!(
            "| {name} | {streams} | {seconds:.2} | {:.0} | {user:.2} | {system:.2} |",
            bytes as f64 / seconds / 1e6
        );
    }
}
