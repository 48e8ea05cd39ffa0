//! Throughput of each transport: N bytes (1 GiB by default) read through an exec channel
//! running `cat FILE` on a local sshd, median of several runs, with wall time and the CPU seconds
//! of this process (and of its children, i.e. the ssh client) — the measurement behind
//! `transport/src/PERFORMANCE.md`. Ignored by default (it takes minutes):
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
use barsync_transport::command::SshCommandTransport;
use barsync_transport::libssh2::{Libssh2Transport, Libssh2Tuning};
use barsync_transport::local::LocalCommandTransport;
use barsync_transport::{choose_transport, Transport, TransportPreference};

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
    let ctr = "aes128-ctr";
    let mib_bytes = 1024 * 1024;
    let libssh2 = |ciphers: &str, window_size: u32, read_size: usize| -> Box<dyn Transport> {
        let tuning = Libssh2Tuning {
            ciphers: ciphers.into(),
            window_size,
            read_size,
            ..Libssh2Tuning::default()
        };
        Box::new(
            Libssh2Transport::from_command_string(&ssh)
                .unwrap()
                .with_tuning(tuning),
        )
    };
    let default_libssh2 =
        || -> Box<dyn Transport> { Box::new(Libssh2Transport::from_command_string(&ssh).unwrap()) };
    let libssh2_macs = |macs: &str| -> Box<dyn Transport> {
        let tuning = Libssh2Tuning {
            macs: macs.into(),
            ..Libssh2Tuning::default()
        };
        Box::new(
            Libssh2Transport::from_command_string(&ssh)
                .unwrap()
                .with_tuning(tuning),
        )
    };
    let subprocess = |options: &str| -> Box<dyn Transport> {
        let command = ssh.replacen("ssh ", &format!("ssh {options} "), 1);
        Box::new(SshCommandTransport::from_command_string(&command).unwrap())
    };
    let gcm_option = "-c aes128-gcm@openssh.com";
    let variants: Vec<(&str, Box<dyn Transport>, usize)> = vec![
        ("local-pipe", Box::new(LocalCommandTransport::new()), 1),
        (
            "auto",
            choose_transport(&ssh, TransportPreference::Auto).unwrap(),
            1,
        ),
        ("ssh-default-chacha20", subprocess(""), 1),
        ("ssh-aes128-gcm", subprocess(gcm_option), 1),
        (
            "ssh-aes128-ctr-etm",
            subprocess("-c aes128-ctr -m hmac-sha2-256-etm@openssh.com"),
            1,
        ),
        ("ssh-aes128-gcm-x2", subprocess(gcm_option), 2),
        ("libssh2-default", default_libssh2(), 1),
        (
            "libssh2-aes128-gcm",
            libssh2(gcm, 2 * mib_bytes, 256 * 1024),
            1,
        ),
        (
            "libssh2-chacha20",
            libssh2("chacha20-poly1305@openssh.com", 2 * mib_bytes, 256 * 1024),
            1,
        ),
        (
            "libssh2-ctr-read32k",
            libssh2(ctr, 2 * mib_bytes, 32 * 1024),
            1,
        ),
        (
            "libssh2-ctr-window256k",
            libssh2(ctr, 256 * 1024, 256 * 1024),
            1,
        ),
        (
            "libssh2-ctr-window16m",
            libssh2(ctr, 16 * mib_bytes, 256 * 1024),
            1,
        ),
        (
            "libssh2-ctr-window1m",
            libssh2(ctr, mib_bytes, 256 * 1024),
            1,
        ),
        (
            "libssh2-ctr-window4m",
            libssh2(ctr, 4 * mib_bytes, 256 * 1024),
            1,
        ),
        (
            "libssh2-ctr-window1m-read128k",
            libssh2(ctr, mib_bytes, 128 * 1024),
            1,
        ),
        (
            "libssh2-ctr-hmac-sha2-256",
            libssh2_macs("hmac-sha2-256"),
            1,
        ),
        (
            "libssh2-ctr-hmac-sha1-etm",
            libssh2_macs("hmac-sha1-etm@openssh.com"),
            1,
        ),
        ("libssh2-default-x2", default_libssh2(), 2),
        ("libssh2-default-x4", default_libssh2(), 4),
    ];
    let variants: Vec<_> = variants
        .into_iter()
        .filter(|(name, _, _)| match &only {
            Some(only) => only.iter().any(|o| o == name),
            None => true,
        })
        .collect();
    let commands_for = |streams: usize| -> Vec<String> {
        if streams == 1 {
            return vec![format!("cat {}", file.display())];
        }
        let share_mib = mib / streams as u64;
        (0..streams as u64)
            .map(|i| {
                let skip = i * share_mib;
                format!(
                    "dd if={} bs=1M skip={skip} count={share_mib} status=none",
                    file.display()
                )
            })
            .collect()
    };
    // Runs are interleaved (variant after variant, then again) so that a burst of load from
    // elsewhere on the machine does not land on one variant only.
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut results: Vec<Vec<Measurement>> = variants.iter().map(|_| Vec::new()).collect();
    for _ in 0..runs {
        for ((_, transport, streams), measurements) in variants.iter().zip(&mut results) {
            let expected = (mib / *streams as u64) * *streams as u64 * (1 << 20);
            measurements.push(measure(
                transport.as_ref(),
                &commands_for(*streams),
                expected,
            ));
        }
    }
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("\n{mib} MiB through `cat`, median of {runs} interleaved runs");
    println!(
        "(CPU = this process + its ssh child; load average before: {} after: {})\n",
        load_before.trim(),
        load_after.trim()
    );
    println!("| variant | streams | seconds | MB/s | user CPU s | sys CPU s |");
    println!("|---|---|---|---|---|---|");
    for ((name, _, streams), measurements) in variants.iter().zip(results) {
        let seconds = median(measurements.iter().map(|m| m.seconds).collect());
        let user = median(measurements.iter().map(|m| m.user).collect());
        let system = median(measurements.iter().map(|m| m.system).collect());
        println!(
            "| {name} | {streams} | {seconds:.2} | {:.0} | {user:.2} | {system:.2} |",
            bytes as f64 / seconds / 1e6
        );
    }
}
