//! The Barman primary fixture ([`barsync_tests::barman_primary`]) works with real PostgreSQL 15
//! and Barman 3.20.1: two backups reach DONE, `barman recover` of the second one restores
//! exactly the tables seen after it, and `barman sync-info pg` answers over ssh through the
//! fixture's PATH wrapper, as a passive node would call it.

use std::process::{Command, Stdio};
use std::time::Instant;

use barsync_sync::python::json::{self, Json};
use barsync_sync::syncinfo::PrimaryInfo;
use barsync_tests::barman_primary::{scratch_dir, verify_restored_cluster, BarmanPrimary};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn barman_primary_backs_up_restores_and_answers_sync_info_over_ssh() {
    let started = Instant::now();
    let primary = BarmanPrimary::start(5).expect("start the Barman primary fixture");
    eprintln!("fixture started in {:?}", started.elapsed());

    let first = primary.backup();
    primary.pgbench_run(500);
    let second = primary.backup();
    assert!(first < second, "backup IDs {first} and {second}");
    primary.archive_wals();
    let expected = primary.table_fingerprint();
    eprintln!("two backups and WAL archived at {:?}", started.elapsed());
    let accounts = expected.table("pgbench_accounts").expect("accounts digest");
    assert_eq!(accounts.rows, 500_000, "{expected}");
    let history = expected.table("pgbench_history").expect("history digest");
    assert_eq!(
        history.rows, 1000,
        "pgbench -c 2 -t 500 → 1000 rows: {expected}"
    );

    // Real Barman sees two DONE backups.
    let listing = primary.run_barman(["-f", "json", "list-backups", "pg"]);
    assert!(
        listing.status.success(),
        "list-backups: {}",
        text(&listing.stderr)
    );
    let listing_json = json::parse(&text(&listing.stdout)).expect("list-backups JSON");
    let Some(Json::Array(backups)) = listing_json.get("pg") else {
        panic!(
            "list-backups JSON without a pg list: {}",
            text(&listing.stdout)
        );
    };
    let mut done: Vec<String> = backups
        .iter()
        .filter(
            |backup| matches!(backup.get("status"), Some(Json::Str(status)) if status == "DONE"),
        )
        .filter_map(|backup| match backup.get("backup_id") {
            Some(Json::Str(id)) => Some(id.clone()),
            _ => None,
        })
        .collect();
    done.sort();
    assert_eq!(
        done,
        vec![first.clone(), second.clone()],
        "{}",
        text(&listing.stdout)
    );

    // barman recover of the second backup gives back the same tables.
    let scratch = scratch_dir("barsync-fixture-restore-").expect("scratch directory");
    let destination = scratch.path().join("restore");
    let recover = primary.run_barman([
        "recover".as_ref(),
        "pg".as_ref(),
        second.as_ref(),
        destination.as_os_str(),
    ]);
    assert!(
        recover.status.success(),
        "barman recover: {}\n{}",
        text(&recover.stdout),
        text(&recover.stderr)
    );
    verify_restored_cluster(&destination, &expected).expect("restored cluster");
    eprintln!("recovered and verified at {:?}", started.elapsed());

    // A restore that is missing the last pgbench transactions is caught.
    let stale_destination = scratch.path().join("restore-first");
    let recover = primary.run_barman([
        "recover".as_ref(),
        "pg".as_ref(),
        first.as_ref(),
        stale_destination.as_os_str(),
        "--target-immediate".as_ref(),
    ]);
    assert!(
        recover.status.success(),
        "barman recover --target-immediate: {}\n{}",
        text(&recover.stdout),
        text(&recover.stderr)
    );
    let error = verify_restored_cluster(&stale_destination, &expected)
        .expect_err("the first backup does not hold the pgbench run");
    assert!(error.contains("pgbench_history"), "{error}");
    eprintln!("stale restore detected at {:?}", started.elapsed());

    // sync-info over ssh, as a passive asks for it.
    let sshd = primary.start_sshd().expect("sshd for the primary");
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!("{} \"barman sync-info pg\"", sshd.ssh_command()))
        .stdin(Stdio::null())
        .output()
        .expect("run ssh");
    assert!(
        output.status.success(),
        "ssh barman sync-info pg: {}\nsshd log:\n{}",
        text(&output.stderr),
        sshd.log()
    );
    let answer = text(&output.stdout);
    assert!(answer.starts_with('{'), "{answer}");
    let info = PrimaryInfo::parse("pg", &answer).expect("sync-info JSON");
    let mut ids: Vec<&str> = info.backup_ids().collect();
    ids.sort();
    assert_eq!(ids, vec![first.as_str(), second.as_str()]);
    assert_eq!(info.config.name.as_deref(), Some("pg"));
    assert_eq!(
        info.config.basebackups_directory,
        primary.barman_home().join("pg/base").display().to_string()
    );
    assert_eq!(info.config.compression, None);
    assert!(!info.wals.is_empty(), "{answer}");
    assert_eq!(info.last_name, info.wals.last().expect("a WAL").name);
    eprintln!(
        "sync-info over ssh: {} backups, {} WALs ({} .. {}), at {:?}",
        ids.len(),
        info.wals.len(),
        info.wals[0].name,
        info.last_name,
        started.elapsed()
    );
}
