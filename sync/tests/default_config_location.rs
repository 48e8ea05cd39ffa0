//! Without `-c`, barsync finds the configuration where Barman does (`~/.barman.conf` first).
//! This test changes `HOME`, so it lives alone in its own test binary.

mod common;

use std::process::Command;

use barsync_sync::syncinfo::{run_sync_info, SyncInfoArgs};
use common::*;

#[test]
fn home_barman_conf_is_used_without_dash_c() {
    let dir = tempfile::tempdir().unwrap();
    make_fixture(dir.path());
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::copy(dir.path().join("primary.conf"), home.join(".barman.conf")).unwrap();
    std::env::set_var("HOME", &home);
    let barman = Command::new(barman())
        .args(["sync-info", "pg"])
        .env("HOME", &home)
        .output()
        .unwrap();
    assert_eq!(
        barman.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&barman.stderr)
    );
    let ours = run_sync_info(&SyncInfoArgs {
        server: "pg",
        ..SyncInfoArgs::default()
    });
    assert_eq!(ours.exit_code, 0, "{:?}", ours.stderr);
    assert_eq!(
        String::from_utf8(ours.stdout).unwrap(),
        String::from_utf8(barman.stdout).unwrap()
    );
}
