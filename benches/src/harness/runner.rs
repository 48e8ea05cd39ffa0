//! Running one measured command: wall time from spawn to reaping, user + system CPU seconds of
//! the process and every descendant it waited for from `wait4` (rsync's forked receiver, the ssh
//! client of barsync and rsync, Barman's rsync), and the peak RSS: the largest `VmHWM` in
//! `/proc/<pid>/status` among the process and its descendants, sampled every
//! [`SAMPLE_INTERVAL`]. (`wait4`'s `ru_maxrss` is not used: a child inherits the high-water mark
//! of the harness's own memory when it execs, which would put a floor under every figure.)
//! Output goes to
//! anonymous temporary files (no pipe to drain while waiting) and is parsed for bytes on the
//! wire: barsync's summary lines, rsync's `--stats`.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{HarnessError, Result};

/// How often the resident set of a running command is sampled.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(5);

/// What one run of a command cost.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measurement {
    pub seconds: f64,
    /// User + system CPU of the process tree (reaped descendants included).
    pub cpu_seconds: f64,
    /// Peak resident set (VmHWM) of the largest single process of the tree, KiB.
    pub max_rss_kib: u64,
    pub stdout: String,
    pub stderr: String,
}

impl Measurement {
    /// Adds a later step of the same side (W4/W7 run several commands): times and CPU add up,
    /// the peak is the larger one, outputs are concatenated.
    pub fn then(mut self, next: Measurement) -> Measurement {
        self.seconds += next.seconds;
        self.cpu_seconds += next.cpu_seconds;
        self.max_rss_kib = self.max_rss_kib.max(next.max_rss_kib);
        self.stdout.push_str(&next.stdout);
        self.stderr.push_str(&next.stderr);
        self
    }
}

/// The command line of `command`, for messages.
pub fn describe(command: &Command) -> String {
    let mut parts = vec![command.get_program().to_string_lossy().into_owned()];
    parts.extend(command.get_args().map(|a: &OsStr| {
        let text = a.to_string_lossy();
        if text.contains(' ') {
            format!("'{text}'")
        } else {
            text.into_owned()
        }
    }));
    parts.join(" ")
}

/// Runs `command` to completion (stdin from /dev/null) and measures it; a non-zero exit is
/// [`HarnessError::CommandFailed`] with the end of its output.
pub fn measure(command: &mut Command) -> Result<Measurement> {
    let what = describe(command);
    let mut stdout = tempfile::tempfile().map_err(HarnessError::io("temporary file"))?;
    let mut stderr = tempfile::tempfile().map_err(HarnessError::io("temporary file"))?;
    command
        .stdin(Stdio::null())
        .stdout(stdout.try_clone().map_err(HarnessError::io("dup"))?)
        .stderr(stderr.try_clone().map_err(HarnessError::io("dup"))?);
    let start = Instant::now();
    let child = command
        .spawn()
        .map_err(HarnessError::io(format!("cannot run {what}")))?;
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let mut peak_kib = 0;
    loop {
        // SAFETY: pid is our child, not reaped yet (the Child handle is never waited on);
        // status and usage are valid for writes.
        let reaped = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if reaped == pid {
            break;
        }
        if reaped == 0 {
            peak_kib = peak_kib.max(tree_peak_kib(pid));
            std::thread::sleep(SAMPLE_INTERVAL);
            continue;
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(HarnessError::io(format!("wait4 for {what}"))(error));
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    drop(child);
    let stdout = read_all(&mut stdout)?;
    let stderr = read_all(&mut stderr)?;
    let exited_ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    if !exited_ok {
        let status = if libc::WIFEXITED(status) {
            format!("exit status {}", libc::WEXITSTATUS(status))
        } else {
            format!("signal {}", libc::WTERMSIG(status))
        };
        return Err(HarnessError::CommandFailed {
            command: what,
            status,
            output: tail(&format!("{stdout}{stderr}"), 30),
        });
    }
    let cpu = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Measurement {
        seconds,
        cpu_seconds: cpu(usage.ru_utime) + cpu(usage.ru_stime),
        // A command too short to be sampled: wait4's figure (an upper bound).
        max_rss_kib: if peak_kib > 0 {
            peak_kib
        } else {
            usage.ru_maxrss as u64
        },
        stdout,
        stderr,
    })
}

/// The largest VmHWM (KiB) among `pid` and its descendants, now.
fn tree_peak_kib(pid: libc::pid_t) -> u64 {
    let mut peak = 0;
    let mut stack = vec![pid];
    while let Some(pid) = stack.pop() {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let hwm = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        peak = peak.max(hwm);
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            stack.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<libc::pid_t>().ok()),
            );
        }
    }
    peak
}

/// Runs a setup command (not measured); failure is an error.
pub fn run_quiet(command: &mut Command) -> Result<String> {
    Ok(measure(command)?.stdout)
}

fn read_all(file: &mut File) -> Result<String> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_string(&mut text))
        .map_err(HarnessError::io("reading command output"))?;
    Ok(text)
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Bytes on the wire from barsync's summaries (`copy`, `sync-backup`, `sync-wals`, `cron`):
/// the sum of every `X MiB received` and `Y MiB sent`. `None` when no summary is there.
pub fn barsync_wire_bytes(output: &str) -> Option<u64> {
    let mut total = 0.0;
    let mut found = false;
    for line in output.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        for window in words.windows(3) {
            let direction = window[2].trim_end_matches([',', ';']);
            if window[1] == "MiB" && (direction == "received" || direction == "sent") {
                if let Ok(mib) = window[0].parse::<f64>() {
                    total += mib;
                    found = true;
                }
            }
        }
    }
    found.then(|| (total * 1048576.0).round() as u64)
}

/// How barsync copied the bytes it reused from the local basis, from `barsync copy`'s
/// `reused by <how>: <MiB> MiB` lines (e.g. `kernel copy: 1013.8 MiB`); `None` when it did not
/// say.
pub fn barsync_reused_by(output: &str) -> Option<String> {
    let ways: Vec<&str> = output
        .lines()
        .filter_map(|line| line.trim().strip_prefix("reused by "))
        .collect();
    (!ways.is_empty()).then(|| ways.join(", "))
}

/// Bytes on the wire from rsync's `--stats`: `Total bytes sent` + `Total bytes received`.
pub fn rsync_wire_bytes(output: &str) -> Option<u64> {
    let number = |prefix: &str| {
        output.lines().find_map(|line| {
            let rest = line.trim().strip_prefix(prefix)?;
            rest.trim().replace(',', "").parse::<u64>().ok()
        })
    };
    Some(number("Total bytes sent:")? + number("Total bytes received:")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_bytes_from_barsync_summaries() {
        let copy = "1 files: 1 transferred, 0 up to date; 1024.0 MiB synced, 0.50 MiB received, \
                    0.25 MiB sent, 0.0 MiB reused; 3.10 s";
        assert_eq!(barsync_wire_bytes(copy), Some(786432));
        let cron = "Backup 1 of server pg synced: 10 files, 5.0 MiB; 1.0 MiB received, 1.0 MiB sent, 0.0 MiB reused; 2 sessions; verified: 10 by blake3; 1.0 s\n\
                    WALs of server pg synced (3 new in the xlog db): 3 files, 48.0 MiB; 2.0 MiB received, 0.0 MiB sent, 0.0 MiB reused; 1 sessions; verified: 3 by blake3; 0.5 s";
        assert_eq!(barsync_wire_bytes(cron), Some(4 * 1048576));
        assert_eq!(barsync_wire_bytes("nothing to do"), None);
    }

    #[test]
    fn reuse_paths_from_barsync_output() {
        let out = "verified by barsync digest: 1 files\nreused by kernel copy: 1013.8 MiB\n1 files: 1 transferred";
        assert_eq!(
            barsync_reused_by(out).as_deref(),
            Some("kernel copy: 1013.8 MiB")
        );
        assert_eq!(barsync_reused_by("1 files: 1 transferred"), None);
    }

    #[test]
    fn wire_bytes_from_rsync_stats() {
        let stats = "Number of files: 1 (reg: 1)\nTotal bytes sent: 1,234\nTotal bytes received: 1,073,794,252\n\n\
                     sent 1,234 bytes  received 1,073,794,252 bytes  1.0 bytes/sec";
        assert_eq!(rsync_wire_bytes(stats), Some(1_073_795_486));
        assert_eq!(rsync_wire_bytes("sent 1 bytes"), None);
    }

    #[test]
    fn measures_a_child_and_reports_failure() {
        let run = measure(Command::new("sh").args(["-c", "echo out; echo err >&2"])).unwrap();
        assert_eq!(run.stdout, "out\n");
        assert_eq!(run.stderr, "err\n");
        assert!(run.max_rss_kib > 0);
        // A child allocating 64 MiB is seen while it runs (python3 is on every test machine
        // here; skip the check where it is not).
        if let Ok(big) = measure(Command::new("python3").args([
            "-c",
            "import time; b = bytearray(64 << 20); time.sleep(0.2)",
        ])) {
            assert!(big.max_rss_kib > 64 * 1024, "{}", big.max_rss_kib);
        }
        let failed = measure(Command::new("sh").args(["-c", "echo boom; exit 3"])).unwrap_err();
        let text = failed.to_string();
        assert!(
            text.contains("exit status 3") && text.contains("boom"),
            "{text}"
        );
    }
}
