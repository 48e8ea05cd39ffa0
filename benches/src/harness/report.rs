//! What a benchmark run reports and how it is printed: the machine (cores, CPU model, load),
//! the versions of the tools, one [`Row`] per measured case with both sides' [`SideStats`], the
//! machine's floors ([`Floor`]: what the hardware and OpenSSH alone take for the same bytes),
//! and the latency cases ([`LatencyRow`]: per-item delays, median and p99, of barsync and its
//! anchor), rendered as Markdown tables ([`Report::render_table`]) or JSON
//! ([`Report::to_json`]).

use std::path::Path;
use std::process::Command;

use serde::Serialize;

use super::{median, Options};

/// The machine the run measured.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
    /// 1-minute load average when the run started (other users of the machine add noise).
    pub load_before: f64,
}

impl Machine {
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|line| {
                let (key, value) = line.split_once(':')?;
                (key.trim() == "model name").then(|| value.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib: f64 = meminfo
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            memory_gib: (memory_kib / 1048576.0 * 10.0).round() / 10.0,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            load_before: Machine::loadavg(),
        }
    }

    /// The 1-minute load average.
    pub fn loadavg() -> f64 {
        std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|text| text.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0)
    }
}

/// Versions of the programs involved (`None`: not found).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Versions {
    pub barsync: Option<String>,
    pub rsync: Option<String>,
    pub openssh: Option<String>,
    pub barman: Option<String>,
    pub postgresql: Option<String>,
}

impl Versions {
    pub fn detect(options: &Options, barman: Option<&Path>) -> Versions {
        let first_line = |program: &Path, arg: &str| -> Option<String> {
            let output = Command::new(program).arg(arg).output().ok()?;
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            let line = text.lines().next()?.split_whitespace().collect::<Vec<_>>();
            (!line.is_empty()).then(|| line.join(" "))
        };
        Versions {
            barsync: first_line(&options.barsync, "--version"),
            rsync: first_line(Path::new("rsync"), "--version"),
            openssh: first_line(Path::new("ssh"), "-V"),
            barman: barman.and_then(|barman| first_line(barman, "--version")),
            postgresql: first_line(
                &super::workloads::pg_bin_dir().join("postgres"),
                "--version",
            ),
        }
    }
}

/// One side of a case, over all its runs.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SideStats {
    /// What ran, e.g. `barsync copy`, `rsync -a`, `barman sync-backup`.
    pub tool: String,
    /// The command line of the last run (one of several for W4/W7).
    pub command: String,
    pub seconds: Vec<f64>,
    pub median_seconds: f64,
    /// Median over runs; `None` where the tool does not report it.
    pub wire_bytes: Option<u64>,
    /// Largest over runs.
    pub peak_rss_kib: u64,
    /// Median over runs.
    pub cpu_seconds: f64,
    /// How barsync copied what it reused from the basis in the last run (`kernel copy: 1013.8
    /// MiB`, ...), when it said.
    pub reused_by: Option<String>,
}

impl SideStats {
    /// Summarises runs: `wire` holds what each run reported.
    pub fn from_runs(
        tool: &str,
        command: &str,
        runs: &[super::runner::Measurement],
        wire: &[Option<u64>],
    ) -> SideStats {
        let seconds: Vec<f64> = runs.iter().map(|run| run.seconds).collect();
        let cpu: Vec<f64> = runs.iter().map(|run| run.cpu_seconds).collect();
        let known: Vec<f64> = wire.iter().flatten().map(|&bytes| bytes as f64).collect();
        SideStats {
            tool: tool.to_owned(),
            command: command.to_owned(),
            median_seconds: median(&seconds),
            seconds,
            wire_bytes: (!known.is_empty() && known.len() == wire.len())
                .then(|| median(&known).round() as u64),
            peak_rss_kib: runs.iter().map(|run| run.max_rss_kib).max().unwrap_or(0),
            cpu_seconds: median(&cpu),
            reused_by: runs
                .last()
                .and_then(|run| super::runner::barsync_reused_by(&run.stdout)),
        }
    }
}

/// One measured case: barsync against its anchor.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Row {
    /// `W1`, `W2-inplace`, `W5-resync`, ...
    pub id: String,
    pub workload: String,
    pub barsync: SideStats,
    pub anchor: SideStats,
    /// Anchor median / barsync median: above 1, barsync is faster.
    pub ratio: f64,
}

impl Row {
    pub fn new(id: &str, workload: &str, barsync: SideStats, anchor: SideStats) -> Row {
        let ratio = if barsync.median_seconds > 0.0 {
            anchor.median_seconds / barsync.median_seconds
        } else {
            0.0
        };
        Row {
            id: id.to_owned(),
            workload: workload.to_owned(),
            barsync,
            anchor,
            ratio,
        }
    }
}

/// A floor: what the machine alone takes for the bytes of a case (one ssh stream, a local
/// copy), measured in the same rounds as that case, and barsync's time as a multiple of it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Floor {
    /// `W1-floor-ssh`, ...
    pub id: String,
    pub floor: SideStats,
    /// The row barsync's time is taken from.
    pub case: String,
    pub barsync_median_seconds: f64,
    /// barsync median / floor median: 1 is the floor itself, above 1 how far barsync is from
    /// it.
    pub times_floor: f64,
}

impl Floor {
    pub fn new(id: &str, floor: SideStats, case: &Row) -> Floor {
        let times_floor = if floor.median_seconds > 0.0 {
            case.barsync.median_seconds / floor.median_seconds
        } else {
            0.0
        };
        Floor {
            id: id.to_owned(),
            case: case.id.clone(),
            barsync_median_seconds: case.barsync.median_seconds,
            floor,
            times_floor,
        }
    }
}

/// One side of a latency case: the delay of each item (a WAL segment, for W11) from the
/// moment it was there to be shipped to the moment it was on the far side.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LatencyStats {
    /// What shipped the items, e.g. `barsync follow`, `barman cron every 60 s`.
    pub tool: String,
    /// How the delays were taken: the clock's start and end, how the tool was driven.
    pub method: String,
    /// Each item's delay, seconds, in the items' order.
    pub seconds: Vec<f64>,
    /// Nearest-rank median and 99th percentile, and the largest.
    pub median_seconds: f64,
    pub p99_seconds: f64,
    pub max_seconds: f64,
}

impl LatencyStats {
    pub fn new(tool: &str, method: &str, seconds: Vec<f64>) -> LatencyStats {
        let mut sorted = seconds.clone();
        sorted.sort_by(f64::total_cmp);
        LatencyStats {
            tool: tool.to_owned(),
            method: method.to_owned(),
            median_seconds: percentile(&sorted, 50.0),
            p99_seconds: percentile(&sorted, 99.0),
            max_seconds: sorted.last().copied().unwrap_or(0.0),
            seconds,
        }
    }
}

/// The `p`th percentile of `sorted` by nearest rank (the `follow` tests' measure); 0 when
/// empty.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    barsync_tests::follow_load::percentile(sorted, p)
}

/// One latency case: barsync's delays against its anchor's, over the same items.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LatencyRow {
    /// `W11`.
    pub id: String,
    pub workload: String,
    pub barsync: LatencyStats,
    pub anchor: LatencyStats,
}

/// The result of a run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub machine: Machine,
    pub versions: Versions,
    pub runs: usize,
    pub size_mib: u64,
    pub scale: u32,
    /// Where the "remote" side was (loopback sshd or the given host).
    pub target: String,
    pub notes: Vec<String>,
    pub rows: Vec<Row>,
    /// The floors measured beside the rows (W1: one ssh stream; W2: a local rebuild).
    pub floors: Vec<Floor>,
    /// The latency cases (W11).
    pub latencies: Vec<LatencyRow>,
    /// Workloads not run, with the reason.
    pub skipped: Vec<(String, String)>,
    /// 1-minute load average when the run ended.
    pub load_after: f64,
}

impl Report {
    /// The report and its targets ([`super::targets::check`]) as one JSON document.
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct WithTargets<'a> {
            #[serde(flatten)]
            report: &'a Report,
            targets: Vec<super::targets::Target>,
        }
        serde_json::to_string_pretty(&WithTargets {
            report: self,
            targets: super::targets::check(self),
        })
        .expect("a report always serialises")
    }

    /// The report as text: machine and versions, a Markdown table, then notes.
    pub fn render_table(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        out.push_str(&format!(
            "machine: {} cores, {}, {} GiB RAM, Linux {}; load average {:.2} at start, {:.2} at end\n",
            m.cores, m.cpu_model, m.memory_gib, m.kernel, m.load_before, self.load_after
        ));
        let v = &self.versions;
        let known = |value: &Option<String>| value.clone().unwrap_or_else(|| "not found".into());
        out.push_str(&format!(
            "versions: {}; {}; {}; barman {}; {}\n",
            known(&v.barsync),
            known(&v.rsync),
            known(&v.openssh),
            known(&v.barman),
            known(&v.postgresql)
        ));
        out.push_str(&format!(
            "target: {}; {} runs per side; W1/W2 file and W8 segment {} MiB; pgbench scale {}\n\n",
            self.target, self.runs, self.size_mib, self.scale
        ));
        let header = [
            "case",
            "anchor",
            "barsync",
            "anchor time",
            "ratio",
            "barsync wire",
            "anchor wire",
            "barsync RSS",
            "anchor RSS",
            "barsync CPU",
            "anchor CPU",
        ];
        let lines: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|row| {
                vec![
                    format!("{} {}", row.id, row.workload),
                    row.anchor.tool.clone(),
                    format!("{:.2} s", row.barsync.median_seconds),
                    format!("{:.2} s", row.anchor.median_seconds),
                    format!("{:.2}x", row.ratio),
                    bytes(row.barsync.wire_bytes),
                    bytes(row.anchor.wire_bytes),
                    format!("{:.1} MiB", row.barsync.peak_rss_kib as f64 / 1024.0),
                    format!("{:.1} MiB", row.anchor.peak_rss_kib as f64 / 1024.0),
                    format!("{:.2} s", row.barsync.cpu_seconds),
                    format!("{:.2} s", row.anchor.cpu_seconds),
                ]
            })
            .collect();
        if !self.rows.is_empty() {
            out.push_str(&markdown(&header, lines));
        }
        if !self.floors.is_empty() {
            let header = [
                "floor",
                "what",
                "floor time",
                "barsync case",
                "barsync time",
                "barsync / floor",
                "floor CPU",
            ];
            let lines = self
                .floors
                .iter()
                .map(|floor| {
                    vec![
                        floor.id.clone(),
                        floor.floor.tool.clone(),
                        format!("{:.2} s", floor.floor.median_seconds),
                        floor.case.clone(),
                        format!("{:.2} s", floor.barsync_median_seconds),
                        format!("{:.2}x", floor.times_floor),
                        format!("{:.2} s", floor.floor.cpu_seconds),
                    ]
                })
                .collect();
            out.push('\n');
            out.push_str(&markdown(&header, lines));
        }
        if !self.latencies.is_empty() {
            let header = ["latency", "tool", "items", "median", "p99", "max"];
            let mut lines = Vec::new();
            for row in &self.latencies {
                for (id, side) in [
                    (row.id.clone(), &row.barsync),
                    (format!("{}-anchor", row.id), &row.anchor),
                ] {
                    lines.push(vec![
                        format!("{id} {}", row.workload),
                        side.tool.clone(),
                        side.seconds.len().to_string(),
                        format!("{:.3} s", side.median_seconds),
                        format!("{:.3} s", side.p99_seconds),
                        format!("{:.3} s", side.max_seconds),
                    ]);
                }
            }
            out.push('\n');
            out.push_str(&markdown(&header, lines));
            for row in &self.latencies {
                for side in [&row.barsync, &row.anchor] {
                    out.push_str(&format!("{} {}: {}\n", row.id, side.tool, side.method));
                }
            }
        }
        out.push('\n');
        let header = ["target", "bound", "measured", "verdict"];
        let lines = super::targets::check(self)
            .into_iter()
            .map(|target| {
                vec![
                    target.case,
                    target.bound,
                    target.measured.unwrap_or_else(|| "-".into()),
                    target.verdict.label().to_owned(),
                ]
            })
            .collect();
        out.push_str(&markdown(&header, lines));
        let mut reuse = Vec::new();
        for row in &self.rows {
            if let Some(how) = &row.barsync.reused_by {
                if !reuse.iter().any(|(_, seen)| seen == &how) {
                    reuse.push((row.id.as_str(), how));
                }
            }
        }
        if !reuse.is_empty() {
            out.push('\n');
        }
        for (id, how) in reuse {
            out.push_str(&format!("{id}: barsync reused from the basis by {how}\n"));
        }
        for (id, reason) in &self.skipped {
            out.push_str(&format!("\nskipped {id}: {reason}"));
        }
        if !self.skipped.is_empty() {
            out.push('\n');
        }
        out.push('\n');
        for note in &self.notes {
            out.push_str(&format!("- {note}\n"));
        }
        out
    }
}

/// A Markdown table: the first two columns left-aligned, the others right-aligned, every column
/// as wide as its widest cell.
fn markdown(header: &[&str], lines: Vec<Vec<String>>) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|column| {
            lines
                .iter()
                .map(|line| line[column].chars().count())
                .chain([header[column].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let render = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(column, cell)| {
                let pad = widths[column] - cell.chars().count();
                if column < 2 {
                    format!("{cell}{}", " ".repeat(pad))
                } else {
                    format!("{}{cell}", " ".repeat(pad))
                }
            })
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = render(header.iter().map(|h| h.to_string()).collect());
    out.push_str(&format!(
        "|{}|\n",
        widths
            .iter()
            .enumerate()
            .map(|(column, width)| if column < 2 {
                format!(":{}", "-".repeat(width + 1))
            } else {
                format!("{}:", "-".repeat(width + 1))
            })
            .collect::<Vec<_>>()
            .join("|")
    ));
    for line in lines {
        out.push_str(&render(line));
    }
    out
}

/// `1,234,567` or `n/a`.
fn bytes(value: Option<u64>) -> String {
    let Some(value) = value else {
        return "n/a".to_owned();
    };
    let digits = value.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::runner::Measurement;
    use super::*;

    fn run(seconds: f64, rss: u64) -> Measurement {
        Measurement {
            seconds,
            cpu_seconds: seconds / 2.0,
            max_rss_kib: rss,
            ..Measurement::default()
        }
    }

    pub(crate) fn sample() -> Report {
        let barsync = SideStats::from_runs(
            "barsync copy",
            "barsync copy -e ssh h:/a /b",
            &[
                run(1.0, 2048),
                run(3.0, 4096),
                Measurement {
                    stdout: "reused by kernel copy: 1.5 MiB\n".into(),
                    ..run(2.0, 1024)
                },
            ],
            &[Some(1_000), Some(1_200), Some(1_100)],
        );
        let anchor = SideStats::from_runs(
            "rsync -a",
            "rsync -a h:/a /b",
            &[run(6.0, 10240), run(4.0, 10240), run(5.0, 10240)],
            &[
                Some(1_073_794_252),
                Some(1_073_794_252),
                Some(1_073_794_252),
            ],
        );
        let barman =
            SideStats::from_runs("barman sync-backup", "barman ...", &[run(8.0, 1)], &[None]);
        let single = SideStats::from_runs(
            "barsync sync-backup",
            "barsync ...",
            &[run(2.0, 1)],
            &[Some(5)],
        );
        let rows = vec![
            Row::new("W1", "new 1 GiB file", barsync, anchor),
            Row::new("W4", "second backup", single, barman),
        ];
        let ssh = SideStats::from_runs(
            "ssh cat",
            "ssh h cat /a",
            &[run(1.0, 1), run(0.5, 1), run(0.8, 1)],
            &[None, None, None],
        );
        Report {
            machine: Machine {
                cores: 2,
                cpu_model: "Test CPU".into(),
                memory_gib: 23.4,
                kernel: "6.1.0".into(),
                load_before: 1.5,
            },
            versions: Versions {
                barsync: Some("barsync 0.1.0".into()),
                rsync: Some("rsync version 3.5.0 protocol version 32".into()),
                ..Versions::default()
            },
            runs: 3,
            size_mib: 1024,
            scale: 10,
            target: "loopback sshd".into(),
            notes: vec!["a note".into()],
            floors: vec![Floor::new("W1-floor-ssh", ssh, &rows[0])],
            latencies: vec![LatencyRow {
                id: "W11".into(),
                workload: "WAL segment landed -> in the passive's xlog db".into(),
                barsync: LatencyStats::new("barsync follow", "from wals/", vec![0.5, 0.4, 2.5]),
                anchor: LatencyStats::new(
                    "barman cron every 60 s",
                    "cron ticks",
                    vec![30.0, 10.0, 50.0, 61.0],
                ),
            }],
            rows,
            skipped: vec![("W6".into(), "no reason".into())],
            load_after: 2.0,
        }
    }

    #[test]
    fn sides_summarise_their_runs() {
        let report = sample();
        let row = &report.rows[0];
        assert_eq!(row.barsync.median_seconds, 2.0);
        assert_eq!(row.anchor.median_seconds, 5.0);
        assert_eq!(row.ratio, 2.5);
        assert_eq!(row.barsync.peak_rss_kib, 4096);
        assert_eq!(row.barsync.cpu_seconds, 1.0);
        assert_eq!(row.barsync.wire_bytes, Some(1_100));
        assert_eq!(report.rows[1].anchor.wire_bytes, None);
    }

    #[test]
    fn the_table_has_one_aligned_line_per_case() {
        let text = sample().render_table();
        assert!(text.starts_with("machine: 2 cores, Test CPU, 23.4 GiB RAM, Linux 6.1.0; load average 1.50 at start, 2.00 at end\n"), "{text}");
        assert!(text.contains("barman not found"), "{text}");
        let table: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with('|'))
            .take(4)
            .collect();
        assert!(table[3].starts_with("| W4"), "{text}");
        let width = table[0].chars().count();
        assert!(table.iter().all(|l| l.chars().count() == width), "{text}");
        assert!(
            table[2].contains("W1 new 1 GiB file") && table[2].contains("2.50x"),
            "{text}"
        );
        assert!(
            table[2].contains("1,073,794,252") && table[2].contains("4.0 MiB"),
            "{text}"
        );
        assert!(
            table[3].contains("barman sync-backup") && table[3].contains("n/a"),
            "{text}"
        );
        assert!(text.contains("skipped W6: no reason"), "{text}");
        assert!(
            text.contains("W1: barsync reused from the basis by kernel copy: 1.5 MiB\n"),
            "{text}"
        );
        let floors: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with('|'))
            .skip(4)
            .take(3)
            .collect();
        assert_eq!(floors.len(), 3, "{text}");
        assert!(floors[0].starts_with("| floor "), "{text}");
        // barsync's 2.0 s against the floor's median of 0.8 s.
        assert!(
            floors[2].contains("W1-floor-ssh") && floors[2].contains("2.50x"),
            "{text}"
        );
        // Then the latencies: barsync's side, then the anchor's, each with its method.
        let latencies: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with('|'))
            .skip(7)
            .take(4)
            .collect();
        assert!(latencies[0].starts_with("| latency "), "{text}");
        assert!(
            latencies[2].starts_with("| W11 WAL segment")
                && latencies[2].contains("barsync follow")
                && latencies[2].contains("|  0.500 s |  2.500 s |  2.500 s |"),
            "{text}"
        );
        assert!(
            latencies[3].starts_with("| W11-anchor WAL segment")
                && latencies[3].contains("|     4 | 30.000 s | 61.000 s | 61.000 s |"),
            "{text}"
        );
        assert!(
            text.contains("W11 barman cron every 60 s: cron ticks\n"),
            "{text}"
        );
        // Then the targets: W1 at 2.50x rsync passes its bound of 2x; W3 did not run.
        let targets: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with('|'))
            .skip(11)
            .collect();
        assert!(targets[0].starts_with("| target "), "{text}");
        assert!(
            targets
                .iter()
                .any(|l| l.contains("| W1 ") && l.contains("≥ 2x rsync") && l.contains("PASS")),
            "{text}"
        );
        assert!(
            targets
                .iter()
                .any(|l| l.contains("| W3 ") && l.contains("not measured")),
            "{text}"
        );
        assert!(text.contains("- a note"), "{text}");
    }

    #[test]
    fn a_run_of_latency_cases_only_prints_no_empty_rows_table() {
        let mut report = sample();
        report.rows.clear();
        report.floors.clear();
        let text = report.render_table();
        assert!(!text.contains("| case "), "{text}");
        assert!(text.contains("| latency "), "{text}");
    }

    #[test]
    fn json_carries_every_field() {
        let report = sample();
        let value: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(value["machine"]["cores"], 2);
        assert_eq!(value["rows"][0]["id"], "W1");
        assert_eq!(value["rows"][0]["ratio"], 2.5);
        assert_eq!(value["targets"][0]["case"], "W1");
        assert_eq!(value["targets"][0]["verdict"], "pass");
        assert_eq!(value["rows"][0]["anchor"]["wire_bytes"], 1_073_794_252u64);
        assert_eq!(
            value["rows"][1]["anchor"]["wire_bytes"],
            serde_json::Value::Null
        );
        assert_eq!(
            value["rows"][0]["barsync"]["seconds"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
        assert_eq!(value["skipped"][0][0], "W6");
        assert_eq!(value["floors"][0]["case"], "W1");
        assert_eq!(value["floors"][0]["times_floor"], 2.5);
        assert_eq!(value["latencies"][0]["id"], "W11");
        assert_eq!(value["latencies"][0]["barsync"]["p99_seconds"], 2.5);
        assert_eq!(value["latencies"][0]["anchor"]["median_seconds"], 30.0);
        assert_eq!(
            value["versions"]["rsync"],
            "rsync version 3.5.0 protocol version 32"
        );
    }
}
