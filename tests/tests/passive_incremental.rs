//! PostgreSQL 17 block-level incremental chains on a passive synced by `barsync cron` from the
//! sample primary of `barsync_sync::fixture::sample` (backup.info files edited into a chain),
//! behind a real sshd: the passive's parents list their children as on the primary (Barman 3.20.1's
//! `sync_parent_backup_info`, plus barsync's refresh on every run), real Barman on the passive
//! lists, shows and deletes the chain, and a child whose parent left the primary is skipped.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use barsync_sync::lock::{self, LockKind};
use barsync_tests::passive_rig::{
    barman_program, describe, fixture_primary, PassiveRig, RigOptions,
};

const B1: &str = "20240101T120000";
const B2: &str = "20240102T120000";
const B3: &str = "20240103T120000";

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn primary_meta(primary: &Path, id: &str) -> PathBuf {
    primary.join(format!("primary-home/pg/meta/{id}-backup.info"))
}

fn passive_meta(rig: &PassiveRig, id: &str) -> PathBuf {
    rig.server_directory()
        .join(format!("meta/{id}-backup.info"))
}

/// Replaces the `key=` line of a backup.info file.
fn set_field(path: &Path, key: &str, value: &str) {
    let text = fs::read_to_string(path).unwrap();
    let prefix = format!("{key}=");
    assert!(
        text.lines().any(|l| l.starts_with(&prefix)),
        "{key} in {}",
        path.display()
    );
    let edited: String = text
        .lines()
        .map(|line| {
            if line.starts_with(&prefix) {
                format!("{prefix}{value}\n")
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    fs::write(path, edited).unwrap();
}

fn field(path: &Path, key: &str) -> String {
    let prefix = format!("{key}=");
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
        .unwrap_or_else(|| panic!("no {key} in {}", path.display()))
}

/// Turns the fixture's backup `id` into a PostgreSQL 17 backup taken by pg_basebackup
/// (`backup_method = postgres`, WAL summarization on), a child of `parent` when given.
fn make_postgres_backup(primary: &Path, id: &str, parent: Option<&str>) {
    let meta = primary_meta(primary, id);
    set_field(&meta, "mode", "postgres");
    set_field(&meta, "version", "170002");
    set_field(&meta, "summarize_wal", "on");
    set_field(&meta, "parent_backup_id", parent.unwrap_or("None"));
}

/// Adds backup B3 on the primary, a copy of B2 one day later, as a second child of B1.
fn add_second_child(primary: &Path) {
    let base = primary.join("primary-home/pg/base");
    let status = Command::new("cp")
        .arg("-a")
        .arg(base.join(B2))
        .arg(base.join(B3))
        .status()
        .unwrap();
    assert!(status.success());
    let text = fs::read_to_string(primary_meta(primary, B2))
        .unwrap()
        .replace(B2, B3)
        .replace("2024-01-02 12:0", "2024-01-03 12:0");
    fs::write(primary_meta(primary, B3), text).unwrap();
    set_field(&primary_meta(primary, B3), "parent_backup_id", B1);
    set_field(
        &primary_meta(primary, B1),
        "children_backup_ids",
        &format!("{B2},{B3}"),
    );
}

#[test]
fn cron_keeps_the_incremental_chain_and_barman_walks_it() {
    let primary = fixture_primary();
    let primary_conf = primary.path().join("primary.conf");
    make_postgres_backup(primary.path(), B1, None);
    make_postgres_backup(primary.path(), B2, Some(B1));
    set_field(&primary_meta(primary.path(), B1), "children_backup_ids", B2);
    let rig = PassiveRig::new(&primary_conf, &RigOptions::default());

    // First run: the parent is copied first, then its child, which lists itself in the parent.
    let cron = rig.barsync(&["cron"]);
    assert!(cron.status.success(), "{}", describe(&cron));
    let text = stdout(&cron);
    for id in [B1, B2] {
        assert!(
            text.contains(&format!("Backup {id} of server pg synced")),
            "{text}"
        );
    }
    assert!(
        text.contains(&format!(
            "Synchronised children_backup_ids of backup {B1} of server pg: {B2}"
        )),
        "{text}"
    );
    assert_eq!(field(&passive_meta(&rig, B1), "children_backup_ids"), B2);
    assert_eq!(field(&passive_meta(&rig, B1), "parent_backup_id"), "None");
    assert_eq!(field(&passive_meta(&rig, B2), "parent_backup_id"), B1);
    assert_eq!(
        field(&passive_meta(&rig, B2), "children_backup_ids"),
        "None"
    );

    // Real Barman on the passive: the same listing as the primary's, types included (a passive
    // backup with a parent is incremental, one without is full).
    let passive_list = rig.barman(&["list-backups", "pg"]);
    assert!(passive_list.status.success(), "{}", describe(&passive_list));
    let primary_list = Command::new(barman_program())
        .args(["-c", primary_conf.to_str().unwrap(), "list-backups", "pg"])
        .output()
        .unwrap();
    assert!(primary_list.status.success(), "{}", describe(&primary_list));
    assert_eq!(stdout(&passive_list), stdout(&primary_list));
    assert!(
        stdout(&passive_list).contains(&format!("pg {B2} - I - ")),
        "{}",
        describe(&passive_list)
    );
    let show = rig.barman(&["show-backup", "pg", B2]);
    assert!(show.status.success(), "{}", describe(&show));
    // (Barman prints the backup type and the children only for `mode=postgres`.)
    for line in [
        format!("Root Backup          : {B1}"),
        format!("Parent Backup        : {B1}"),
        "Backup chain size    : 2".to_owned(),
    ] {
        assert!(stdout(&show).contains(&line), "{line}: {}", describe(&show));
    }
    let show = rig.barman(&["show-backup", "pg", B1]);
    assert!(show.status.success(), "{}", describe(&show));
    assert!(
        stdout(&show).contains("Status                 : DONE")
            && !stdout(&show).contains("Parent Backup"),
        "{}",
        describe(&show)
    );

    // A second child on the primary, whose copy someone else holds: the parent does not list
    // a child this node does not have (Barman's delete would fail on it).
    add_second_child(primary.path());
    let held = lock::acquire(&rig.home, "pg", &LockKind::SyncBackup(B3), false).unwrap();
    let busy = rig.barsync(&["cron"]);
    assert!(busy.status.success(), "{}", describe(&busy));
    assert!(
        stdout(&busy).contains(&format!(
            "A synchronisation process for backup {B3} on server pg is already in progress"
        )),
        "{}",
        describe(&busy)
    );
    assert!(!passive_meta(&rig, B3).exists());
    assert_eq!(field(&passive_meta(&rig, B1), "children_backup_ids"), B2);
    drop(held);

    // Once copied, the already-synced parent lists both, in the primary's order.
    let cron = rig.barsync(&["cron"]);
    assert!(cron.status.success(), "{}", describe(&cron));
    let both = format!("{B2},{B3}");
    assert!(
        stdout(&cron).contains(&format!("Backup {B3} of server pg synced")),
        "{}",
        describe(&cron)
    );
    assert!(
        stdout(&cron).contains(&format!(
            "Synchronised children_backup_ids of backup {B1} of server pg: {both}"
        )),
        "{}",
        describe(&cron)
    );
    assert_eq!(field(&passive_meta(&rig, B1), "children_backup_ids"), both);
    assert_eq!(
        field(&passive_meta(&rig, B1), "children_backup_ids"),
        field(&primary_meta(primary.path(), B1), "children_backup_ids")
    );

    // A parent left stale (as Barman before 3.20.1 leaves it, issue #1115) is put right by the
    // next run, with nothing to copy; a run with nothing to change writes nothing.
    set_field(&passive_meta(&rig, B1), "children_backup_ids", "None");
    let cron = rig.barsync(&["cron"]);
    assert!(cron.status.success(), "{}", describe(&cron));
    assert!(!stdout(&cron).contains("synced:"), "{}", describe(&cron));
    assert!(
        stdout(&cron).contains(&format!(
            "Synchronised children_backup_ids of backup {B1} of server pg: {both}"
        )),
        "{}",
        describe(&cron)
    );
    assert_eq!(field(&passive_meta(&rig, B1), "children_backup_ids"), both);
    let inode = fs::metadata(passive_meta(&rig, B1)).unwrap().ino();
    let quiet = rig.barsync(&["cron"]);
    assert!(quiet.status.success(), "{}", describe(&quiet));
    assert!(
        !stdout(&quiet).contains("Synchronised children_backup_ids"),
        "{}",
        describe(&quiet)
    );
    assert_eq!(fs::metadata(passive_meta(&rig, B1)).unwrap().ino(), inode);

    // Real Barman on the passive walks the tree: deleting the root deletes its children.
    let delete = rig.barman(&["delete", "pg", B1]);
    assert!(delete.status.success(), "{}", describe(&delete));
    for id in [B3, B2, B1] {
        assert!(
            stdout(&delete).contains(&format!("Deleted backup {id}")),
            "{}",
            describe(&delete)
        );
        assert!(!passive_meta(&rig, id).exists(), "{id}");
    }
    let list = rig.barman(&["list-backups", "pg"]);
    assert!(list.status.success(), "{}", describe(&list));
    assert!(!stdout(&list).contains(" - I - "), "{}", describe(&list));
}

#[test]
fn an_incremental_whose_parent_left_the_primary_is_skipped() {
    let primary = fixture_primary();
    let gone = "20231231T120000";
    make_postgres_backup(primary.path(), B1, None);
    make_postgres_backup(primary.path(), B2, Some(gone));
    let rig = PassiveRig::new(&primary.path().join("primary.conf"), &RigOptions::default());
    let message = format!(
        "Parent backup {gone} of incremental backup {B2} is absent on pg server; \
         skipping sync of this incremental"
    );

    let cron = rig.barsync(&["cron"]);
    assert!(cron.status.success(), "{}", describe(&cron));
    assert!(stdout(&cron).contains(&message), "{}", describe(&cron));
    assert!(
        stdout(&cron).contains(&format!("Backup {B1} of server pg synced")),
        "{}",
        describe(&cron)
    );
    assert!(
        !String::from_utf8_lossy(&cron.stderr).contains("ERROR"),
        "{}",
        describe(&cron)
    );
    // Nothing of the child on the passive: no backup.info (so no FAILED), no directory.
    assert!(!passive_meta(&rig, B2).exists());
    assert!(!rig.server_directory().join("base").join(B2).exists());
    assert_eq!(field(&passive_meta(&rig, B1), "status"), "DONE");

    // sync-backup by hand decides the same, from the primary.info cron saved.
    let by_hand = rig.barsync(&["sync-backup", "pg", B2]);
    assert!(by_hand.status.success(), "{}", describe(&by_hand));
    assert!(
        stdout(&by_hand).contains(&message),
        "{}",
        describe(&by_hand)
    );
    assert!(!passive_meta(&rig, B2).exists());

    let list = rig.barman(&["list-backups", "pg"]);
    assert!(list.status.success(), "{}", describe(&list));
    assert!(
        stdout(&list).contains(&format!("pg {B1} - F - ")),
        "{}",
        describe(&list)
    );
    assert!(!stdout(&list).contains(B2), "{}", describe(&list));
}

/// Adds backup B3 on the primary: a copy of B2 one day later, as a full backup (no parent).
fn add_full_backup(primary: &Path) {
    add_second_child(primary);
    set_field(&primary_meta(primary, B3), "parent_backup_id", "None");
    set_field(&primary_meta(primary, B1), "children_backup_ids", B2);
}

#[test]
fn retention_counts_chains_by_their_root_and_deletes_an_obsolete_chain_whole() {
    let primary = fixture_primary();
    make_postgres_backup(primary.path(), B1, None);
    make_postgres_backup(primary.path(), B2, Some(B1));
    set_field(&primary_meta(primary.path(), B1), "children_backup_ids", B2);
    add_full_backup(primary.path());
    let rig = PassiveRig::new(
        &primary.path().join("primary.conf"),
        &RigOptions {
            server_lines: vec!["retention_policy = REDUNDANCY 1".into()],
            ..RigOptions::default()
        },
    );

    // B1 and its child B2 are copied (B1 is the only full backup then), then B3; with B3 here
    // the chain of B1 is OBSOLETE, and `barman delete` of its root removes it whole.
    let cron = rig.barsync(&["cron"]);
    assert!(cron.status.success(), "{}", describe(&cron));
    let text = stdout(&cron);
    assert!(
        text.contains(&format!(
            "Enforcing retention policy: removing backup {B1} for server pg"
        )),
        "{}",
        describe(&cron)
    );
    assert!(
        !text.contains(&format!("removing backup {B2}")),
        "the child goes with its root: {}",
        describe(&cron)
    );
    for gone in [B1, B2] {
        assert!(
            !passive_meta(&rig, gone).exists(),
            "{gone}: {}",
            describe(&cron)
        );
        assert!(!rig.server_directory().join("base").join(gone).exists());
    }
    assert_eq!(field(&passive_meta(&rig, B3), "status"), "DONE");
    let list = rig.barman(&["list-backups", "pg"]);
    assert!(list.status.success(), "{}", describe(&list));
    assert!(stdout(&list).contains(B3), "{}", describe(&list));
    assert!(
        !stdout(&list).contains(B1) && !stdout(&list).contains(B2),
        "{}",
        describe(&list)
    );

    // The next run copies neither again: the root is OBSOLETE here, so is the child.
    let again = rig.barsync(&["cron"]);
    assert!(again.status.success(), "{}", describe(&again));
    let text = stdout(&again);
    for id in [B1, B2] {
        assert!(
            text.contains(&format!(
                "Remote backup pg/{id} is obsolete for local retention policies."
            )),
            "{id}: {}",
            describe(&again)
        );
        assert!(!passive_meta(&rig, id).exists());
    }
}
