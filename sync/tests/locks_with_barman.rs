//! barsync and real Barman exclude each other through the same lock files: names from
//! Barman's own lock classes, Barman holding a lock makes barsync see it busy (and wait for
//! blocking locks), and barsync holding one makes Barman fail to take it.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use barsync_sync::config::Config;
use barsync_sync::lock::{self, LockError, LockKind};
use barsync_sync::syncinfo::{sync_info_text, SyncPoint};
use common::*;

const LOCK_CLASSES: &str = r#"
import sys
import barman.output
from barman.lockfile import (ServerBackupIdLock, ServerBackupSyncLock, ServerCronLock,
                             ServerWalSyncLock, ServerXLOGDBLock)
def lock_for(kind, directory, server, backup_id):
    return {
        "xlogdb": lambda: ServerXLOGDBLock(directory, server),
        "cron": lambda: ServerCronLock(directory, server),
        "sync-backup": lambda: ServerBackupSyncLock(directory, server, backup_id),
        "sync-wal": lambda: ServerWalSyncLock(directory, server),
        "backup": lambda: ServerBackupIdLock(directory, server, backup_id),
    }[kind]()
"#;

/// Starts Python holding Barman's `kind` lock until its stdin closes.
fn barman_holds(kind: &str, directory: &Path) -> Child {
    let script = format!(
        "{LOCK_CLASSES}\nlock = lock_for(sys.argv[1], sys.argv[2], 'pg', '20240101T120000')\nlock.acquire()\nprint('locked', flush=True)\nsys.stdin.read()\nlock.release()\n"
    );
    let mut child = Command::new(barman_python())
        .arg("-c")
        .arg(script)
        .arg(kind)
        .arg(directory)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked");
    child
}

fn release(mut child: Child) {
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
}

/// Asks Barman (non-blocking) whether it can take `kind`; returns its answer.
fn barman_can_lock(kind: &str, directory: &Path) -> bool {
    let script = format!(
        "{LOCK_CLASSES}\nlock = lock_for(sys.argv[1], sys.argv[2], 'pg', '20240101T120000')\nprint(lock.filename)\nprint(lock.acquire(raise_if_fail=False, wait=False))\n"
    );
    let output = Command::new(barman_python())
        .arg("-c")
        .arg(script)
        .arg(kind)
        .arg(directory)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let mut lines = text.lines();
    let filename = lines.next().unwrap();
    assert!(filename.starts_with(&directory.display().to_string()));
    lines.next().unwrap() == "True"
}

fn kinds() -> Vec<(&'static str, LockKind<'static>)> {
    vec![
        ("xlogdb", LockKind::XlogDb),
        ("cron", LockKind::Cron),
        ("sync-backup", LockKind::SyncBackup("20240101T120000")),
        ("sync-wal", LockKind::SyncWal),
        ("backup", LockKind::Backup("20240101T120000")),
    ]
}

#[test]
fn lock_names_are_barmans() {
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "{LOCK_CLASSES}\nfor kind in sys.argv[2:]:\n    print(lock_for(kind, sys.argv[1], 'pg', '20240101T120000').filename)\n"
    );
    let names: Vec<&str> = kinds().iter().map(|(name, _)| *name).collect();
    let output = Command::new(barman_python())
        .arg("-c")
        .arg(script)
        .arg(dir.path())
        .args(&names)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let barman_paths: Vec<String> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let ours: Vec<String> = kinds()
        .iter()
        .map(|(_, kind)| dir.path().join(kind.file_name("pg")).display().to_string())
        .collect();
    assert_eq!(ours, barman_paths);
}

#[test]
fn barman_holding_a_lock_makes_barsync_see_it_busy() {
    let dir = tempfile::tempdir().unwrap();
    for (name, kind) in kinds() {
        let holder = barman_holds(name, dir.path());
        assert!(
            matches!(
                lock::acquire(dir.path(), "pg", &kind, false),
                Err(LockError::Busy(_))
            ),
            "barsync took {name} while Barman held it"
        );
        release(holder);
        let guard =
            lock::acquire(dir.path(), "pg", &kind, false).expect("free after Barman released it");
        assert_eq!(
            std::fs::read_to_string(guard.path()).unwrap(),
            format!("{}\n", std::process::id())
        );
    }
}

#[test]
fn barsync_holding_a_lock_makes_barman_fail() {
    let dir = tempfile::tempdir().unwrap();
    for (name, kind) in kinds() {
        let guard = lock::acquire(dir.path(), "pg", &kind, false).unwrap();
        assert!(
            !barman_can_lock(name, dir.path()),
            "Barman took {name} while barsync held it"
        );
        drop(guard);
        assert!(
            barman_can_lock(name, dir.path()),
            "Barman cannot take {name} after barsync released it"
        );
    }
}

#[test]
fn sync_info_waits_for_barmans_xlogdb_lock() {
    let dir = tempfile::tempdir().unwrap();
    make_fixture(dir.path());
    let config = Config::load(Some(&dir.path().join("primary.conf"))).unwrap();
    let server = config.server("pg").unwrap().unwrap();
    let holder = barman_holds("xlogdb", &server.lock_directory());
    let started = Instant::now();
    let worker = std::thread::spawn(move || {
        let text = sync_info_text(&server, &SyncPoint::default());
        (text, Instant::now())
    });
    std::thread::sleep(Duration::from_millis(400));
    assert!(
        !worker.is_finished(),
        "sync-info must block on Barman's xlogdb lock"
    );
    let released_at = Instant::now();
    release(holder);
    let (text, finished_at) = worker.join().unwrap();
    assert!(text.unwrap().starts_with("{\n    \"last_position\": 503,"));
    assert!(finished_at >= released_at && finished_at - started >= Duration::from_millis(400));
    // And Barman's own sync-info waits for barsync in the same way.
    let guard = lock::acquire(
        &dir.path().join("primary-home"),
        "pg",
        &LockKind::XlogDb,
        false,
    )
    .unwrap();
    let mut barman = Command::new(barman())
        .arg("-c")
        .arg(dir.path().join("primary.conf"))
        .args(["sync-info", "pg"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(3000));
    assert!(
        barman.try_wait().unwrap().is_none(),
        "Barman must wait for barsync's xlogdb lock"
    );
    drop(guard);
    let output = barman.wait_with_output().unwrap();
    assert!(output.status.success());
    let _ = std::io::stdout().flush();
}
