//! `barsync bench` by build: a default build (what `cargo install` and releases ship) carries no
//! benchmark harness, lists no `bench` in `--help` and answers `barsync bench` with a usage
//! error saying how to build it; a `--features bench` build has the harness.

use std::process::Command;

use barsync_tests::binaries::barsync;

#[test]
fn bench_is_there_only_in_a_build_with_the_bench_feature() {
    let help = Command::new(barsync()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let bench = Command::new(barsync())
        .args(["bench", "--help"])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&bench.stdout),
        String::from_utf8_lossy(&bench.stderr),
    );
    if stdout.contains("--workloads") {
        // Built with `--features bench`.
        assert_eq!(bench.status.code(), Some(0), "{stderr}");
        assert!(help.contains("\n  bench "), "{help}");
    } else {
        assert_eq!(bench.status.code(), Some(2), "{stdout}{stderr}");
        assert!(stderr.contains("--features bench"), "{stderr}");
        assert!(!help.contains("bench"), "{help}");
    }
}
