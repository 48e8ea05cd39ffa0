//! The speed targets barsync holds itself to, checked against one run's [`Report`]: each
//! [`Target`] names the case it reads, the bound, and whether this run met it ([`Verdict`]).
//! Ratios are taken within the same run (barsync against its anchor, or against a floor), so a
//! noisy machine moves both sides; a target whose case did not run is `not measured`, never a
//! pass. Latency targets (W11) bound barsync's own delays, in seconds; the anchor's are shown
//! beside them.

use serde::Serialize;

use super::report::{LatencyStats, Report};

/// Peak RSS every barsync row must stay under.
pub const MAX_RSS_MIB: f64 = 64.0;

/// One target and how this run fared.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Target {
    /// The case it reads (`W1`, `W1-floor-ssh`, `every row`).
    pub case: String,
    /// The bound, in words (`≥ 2x rsync`).
    pub bound: String,
    /// What this run measured, in the bound's unit (`None`: the case did not run).
    pub measured: Option<String>,
    /// Met, missed, or not measured.
    pub verdict: Verdict,
}

/// Whether a target was met in this run.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Met.
    Pass,
    /// Missed.
    Miss,
    /// The case did not run.
    NotMeasured,
}

impl Verdict {
    /// How the table shows it.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Miss => "MISS",
            Verdict::NotMeasured => "not measured",
        }
    }
}

/// How a target reads the report.
enum Measure {
    /// Anchor time / barsync time of a row: at least this.
    RatioAtLeast(f64),
    /// barsync time / floor time: at most this.
    FloorAtMost(f64),
    /// barsync's bytes on the wire / the anchor's: at most this.
    WireAtMost(f64),
    /// barsync's median delay of a latency case, seconds: at most this.
    LatencyMedianAtMost(f64),
    /// barsync's 99th percentile delay of a latency case, seconds: at most this.
    LatencyP99AtMost(f64),
}

/// The targets (issue "Speed: close to the floor of the machine"): case, bound, measure.
fn targets() -> Vec<(&'static str, &'static str, Measure)> {
    use Measure::*;
    vec![
        ("W1", "≥ 2x rsync", RatioAtLeast(2.0)),
        ("W1-floor-ssh", "≤ 1.25x one ssh stream", FloorAtMost(1.25)),
        ("W2", "≥ 3x rsync", RatioAtLeast(3.0)),
        ("W2-fsync", "≥ 4x rsync --fsync", RatioAtLeast(4.0)),
        ("W2", "wire ≤ rsync's", WireAtMost(1.0)),
        ("W3", "≥ 3x rsync", RatioAtLeast(3.0)),
        ("W5-initial", "≥ 2x rsync", RatioAtLeast(2.0)),
        ("W5-resync", "≥ 1.5x rsync", RatioAtLeast(1.5)),
        ("W7", "≥ 3x Barman", RatioAtLeast(3.0)),
        ("W9", "≥ 5x Barman", RatioAtLeast(5.0)),
        // Issue 17, the SFTP fallback (W10): no slower than OpenSSH's own client on W1's
        // file, at least rsync's speed on W5's files.
        ("W1-sftp", "≤ OpenSSH sftp get's time", RatioAtLeast(1.0)),
        ("W5-sftp", "≥ 1x rsync", RatioAtLeast(1.0)),
        // Issue 16, `barsync follow` (W11): each WAL segment on the passive within seconds.
        ("W11", "median ≤ 1 s", LatencyMedianAtMost(1.0)),
        ("W11", "p99 ≤ 3 s", LatencyP99AtMost(3.0)),
    ]
}

/// Every target, checked against `report`.
pub fn check(report: &Report) -> Vec<Target> {
    let mut checked: Vec<Target> = targets()
        .into_iter()
        .map(|(case, bound, measure)| {
            let value = match measure {
                Measure::RatioAtLeast(_) | Measure::WireAtMost(_) => report
                    .rows
                    .iter()
                    .find(|row| row.id == case)
                    .and_then(|row| match measure {
                        Measure::WireAtMost(_) => {
                            let ours = row.barsync.wire_bytes? as f64;
                            let theirs = row.anchor.wire_bytes? as f64;
                            (theirs > 0.0).then_some(ours / theirs)
                        }
                        _ => (row.ratio > 0.0).then_some(row.ratio),
                    }),
                Measure::FloorAtMost(_) => report
                    .floors
                    .iter()
                    .find(|floor| floor.id == case)
                    .and_then(|floor| (floor.times_floor > 0.0).then_some(floor.times_floor)),
                Measure::LatencyMedianAtMost(_) | Measure::LatencyP99AtMost(_) => report
                    .latencies
                    .iter()
                    .find(|row| row.id == case && !row.barsync.seconds.is_empty())
                    .map(|row| match measure {
                        Measure::LatencyMedianAtMost(_) => row.barsync.median_seconds,
                        _ => row.barsync.p99_seconds,
                    }),
            };
            let anchor = |pick: fn(&LatencyStats) -> f64| {
                report
                    .latencies
                    .iter()
                    .find(|row| row.id == case && !row.anchor.seconds.is_empty())
                    .map(|row| format!(" ({}: {:.2} s)", row.anchor.tool, pick(&row.anchor)))
                    .unwrap_or_default()
            };
            let (measured, verdict) = match (value, measure) {
                (None, _) => (None, Verdict::NotMeasured),
                (Some(value), Measure::RatioAtLeast(bound)) => {
                    (Some(format!("{value:.2}x")), pass_if(value >= bound))
                }
                (Some(value), Measure::FloorAtMost(bound)) => {
                    (Some(format!("{value:.2}x")), pass_if(value <= bound))
                }
                (Some(value), Measure::WireAtMost(bound)) => (
                    Some(format!("{:.0}% of rsync's", value * 100.0)),
                    pass_if(value <= bound),
                ),
                (Some(value), Measure::LatencyMedianAtMost(bound)) => (
                    Some(format!(
                        "{value:.2} s{}",
                        anchor(|side| side.median_seconds)
                    )),
                    pass_if(value <= bound),
                ),
                (Some(value), Measure::LatencyP99AtMost(bound)) => (
                    Some(format!("{value:.2} s{}", anchor(|side| side.p99_seconds))),
                    pass_if(value <= bound),
                ),
            };
            Target {
                case: case.to_owned(),
                bound: bound.to_owned(),
                measured,
                verdict,
            }
        })
        .collect();
    let largest = report
        .rows
        .iter()
        .max_by_key(|row| row.barsync.peak_rss_kib)
        .map(|row| (row.id.clone(), row.barsync.peak_rss_kib as f64 / 1024.0));
    checked.push(Target {
        case: "every row".to_owned(),
        bound: format!("barsync peak RSS ≤ {MAX_RSS_MIB:.0} MiB"),
        measured: largest
            .as_ref()
            .map(|(id, mib)| format!("{mib:.1} MiB (largest: {id})")),
        verdict: match largest {
            None => Verdict::NotMeasured,
            Some((_, mib)) => pass_if(mib <= MAX_RSS_MIB),
        },
    });
    checked
}

fn pass_if(met: bool) -> Verdict {
    if met {
        Verdict::Pass
    } else {
        Verdict::Miss
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::report::{Row, SideStats};

    fn side(seconds: f64, wire: Option<u64>, rss_kib: u64) -> SideStats {
        SideStats {
            tool: "t".into(),
            command: "c".into(),
            seconds: vec![seconds],
            median_seconds: seconds,
            wire_bytes: wire,
            peak_rss_kib: rss_kib,
            cpu_seconds: 0.0,
            reused_by: None,
        }
    }

    #[test]
    fn ratios_pass_and_miss_by_their_bound_and_absent_cases_are_not_measured() {
        let mut report = crate::harness::report::tests::sample();
        report.rows = vec![
            Row::new("W1", "new", side(1.0, None, 1024), side(2.5, None, 0)),
            Row::new(
                "W2",
                "1%",
                side(1.0, Some(10), 100 * 1024),
                side(2.0, Some(20), 0),
            ),
        ];
        report.floors.clear();
        let checked = check(&report);
        let verdict = |case: &str, bound: &str| {
            checked
                .iter()
                .find(|t| t.case == case && t.bound.contains(bound))
                .map(|t| t.verdict)
                .unwrap()
        };
        assert_eq!(verdict("W1", "rsync"), Verdict::Pass);
        assert_eq!(verdict("W2", "≥ 3x"), Verdict::Miss);
        assert_eq!(verdict("W2", "wire"), Verdict::Pass);
        assert_eq!(verdict("W3", "rsync"), Verdict::NotMeasured);
        assert_eq!(verdict("W1-floor-ssh", "ssh"), Verdict::NotMeasured);
        assert_eq!(verdict("every row", "RSS"), Verdict::Miss, "{checked:?}");
        // The sample's W11: median 0.5 s, p99 2.5 s; Barman's beside it.
        assert_eq!(verdict("W11", "median"), Verdict::Pass);
        assert_eq!(verdict("W11", "p99"), Verdict::Pass);
        let p99 = checked
            .iter()
            .find(|t| t.case == "W11" && t.bound.contains("p99"))
            .unwrap();
        assert_eq!(
            p99.measured.as_deref(),
            Some("2.50 s (barman cron every 60 s: 61.00 s)")
        );
        report.latencies[0].barsync = LatencyStats::new("barsync follow", "", vec![1.2, 3.5]);
        let checked = check(&report);
        let verdict = |bound: &str| {
            checked
                .iter()
                .find(|t| t.case == "W11" && t.bound.contains(bound))
                .map(|t| t.verdict)
                .unwrap()
        };
        assert_eq!(verdict("median"), Verdict::Miss);
        assert_eq!(verdict("p99"), Verdict::Miss);
        report.latencies.clear();
        assert_eq!(
            check(&report)
                .iter()
                .find(|t| t.case == "W11")
                .map(|t| t.verdict),
            Some(Verdict::NotMeasured)
        );
    }
}
