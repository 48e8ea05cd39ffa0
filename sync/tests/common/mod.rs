//! Shared helpers of the tests against real Barman: locating Barman 3.20.1, the sample primary
//! with a passive node next to it, running Barman, and generating Barman catalogs of any size.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use barsync_sync::fixture;
use barsync_sync::python::json::{self, Json};
use barsync_sync::syncinfo::{run_sync_info, CommandOutcome, SyncInfoArgs};

/// The real Barman: `$BARSYNC_TEST_BARMAN`, else `../.venv/bin/barman` next to the workspace.
/// Missing Barman fails the test: these tests must never pass by skipping.
pub fn barman() -> PathBuf {
    let path = std::env::var_os("BARSYNC_TEST_BARMAN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/barman"));
    assert!(
        path.is_file(),
        "real Barman 3.20.1 not found at {} (set BARSYNC_TEST_BARMAN or run scripts/test)",
        path.display()
    );
    path
}

/// The Python of Barman's venv, for snippets that use Barman's modules.
pub fn barman_python() -> PathBuf {
    let python = barman().parent().unwrap().join("python");
    assert!(python.exists(), "no python next to {}", barman().display());
    python
}

/// The repository's test fixtures (`tests/fixtures`): Barman 3.20.1's sample sync-info output.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// Builds the sample primary ([`fixture::sample`]: `primary.conf`, `primary-home/pg`) in `base`
/// and a passive node of it: `passive.conf` (`passive-home/`) whose `primary_ssh_command` is
/// `bin/fakessh primary-barman`, a local stand-in for ssh that logs its arguments to `ssh.log`
/// and runs the command with `primary-bin/barman` (the real Barman with `primary.conf`) first
/// in PATH.
pub fn make_fixture(base: &Path) {
    fixture::sample::write(base).expect("write the sample primary");
    for directory in ["bin", "primary-bin", "passive-home"] {
        std::fs::create_dir_all(base.join(directory)).unwrap();
    }
    let ssh_log = base.join("ssh.log");
    std::fs::write(&ssh_log, "").unwrap();
    fixture::write_executable(
        &base.join("bin/fakessh"),
        &fixture::ssh_stand_in(
            &format!(
                "{}:/usr/bin:/bin",
                fixture::shell_quote(&base.join("primary-bin").display().to_string())
            ),
            Some(&ssh_log),
        ),
    )
    .unwrap();
    fixture::write_executable(
        &base.join("primary-bin/barman"),
        &fixture::barman_wrapper(&barman(), &base.join("primary.conf")),
    )
    .unwrap();
    let log_file = format!("log_file = {}", base.join("passive.log").display());
    let ssh = format!(
        "primary_ssh_command = {} primary-barman",
        base.join("bin/fakessh").display()
    );
    std::fs::write(
        base.join("passive.conf"),
        fixture::barman_conf(
            &base.join("passive-home"),
            &fixture::current_user(),
            &[&log_file, "log_level = DEBUG", "compression ="],
            "pg",
            &["description = \"passive copy of pg\"", &ssh],
        ),
    )
    .unwrap();
}

/// Runs `barman -c CONFIG ARGS...`.
pub fn run_barman(config: &Path, args: &[&str]) -> Output {
    Command::new(barman())
        .arg("-c")
        .arg(config)
        .args(args)
        .env("PYTHONHASHSEED", "0")
        .output()
        .expect("run barman")
}

/// Runs barsync's sync-info with the same arguments.
pub fn run_barsync(
    config: &Path,
    server: &str,
    last_wal: Option<&str>,
    last_position: Option<&str>,
) -> CommandOutcome {
    run_sync_info(&SyncInfoArgs {
        config: Some(config),
        server,
        last_wal,
        last_position,
        ..SyncInfoArgs::default()
    })
}

/// Asserts barsync prints what Barman prints for `sync-info SERVER [extra...]`.
pub fn assert_same_sync_info(config: &Path, server: &str, extra: &[&str]) -> String {
    let mut args = vec!["sync-info", server];
    args.extend_from_slice(extra);
    let barman = run_barman(config, &args);
    let ours = run_barsync(
        config,
        server,
        extra.first().copied(),
        extra.get(1).copied(),
    );
    let barman_stdout = String::from_utf8_lossy(&barman.stdout).into_owned();
    let ours_stdout = String::from_utf8_lossy(&ours.stdout).into_owned();
    if barman_stdout != ours_stdout {
        let diff_at = barman_stdout
            .bytes()
            .zip(ours_stdout.bytes())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        let from = diff_at.saturating_sub(300);
        panic!(
            "sync-info {extra:?} differs at byte {diff_at}\n--- barman:\n{}\n--- barsync:\n{}\n--- barman stderr: {}",
            &barman_stdout[from..(diff_at + 300).min(barman_stdout.len())],
            &ours_stdout[from.min(ours_stdout.len())..(diff_at + 300).min(ours_stdout.len())],
            String::from_utf8_lossy(&barman.stderr)
        );
    }
    assert_eq!(
        barman.status.code(),
        Some(i32::from(ours.exit_code)),
        "exit codes differ for {extra:?}; barman stderr: {}; barsync stderr: {:?}",
        String::from_utf8_lossy(&barman.stderr),
        ours.stderr
    );
    let barman_errors: Vec<&str> = std::str::from_utf8(&barman.stderr)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("ERROR"))
        .collect();
    let our_errors: Vec<&str> = ours
        .stderr
        .iter()
        .map(String::as_str)
        .filter(|l| l.starts_with("ERROR"))
        .collect();
    assert_eq!(
        barman_errors, our_errors,
        "error messages differ for {extra:?}"
    );
    ours_stdout
}

/// The shape of a generated catalog.
#[derive(Debug, Clone)]
pub struct CatalogSpec {
    pub server: String,
    pub backups: usize,
    pub wals_per_backup: usize,
    /// Timeline switches: each adds a `.history` file and continues on the next timeline.
    pub timelines: u32,
    pub compression: Option<&'static str>,
    pub tablespaces: usize,
    /// Write some backup.info files in the legacy `base/<ID>/backup.info` place.
    pub legacy_backup_info: bool,
    /// Add duplicate lines to the xlog db, as Barman's first sync-wals does.
    pub duplicate_lines: bool,
    /// Mark the newest backup WAITING_FOR_WALS and add a FAILED one.
    pub mixed_statuses: bool,
}

impl Default for CatalogSpec {
    fn default() -> Self {
        CatalogSpec {
            server: "pg".to_owned(),
            backups: 3,
            wals_per_backup: 4,
            timelines: 1,
            compression: None,
            tablespaces: 1,
            legacy_backup_info: false,
            duplicate_lines: false,
            mixed_statuses: false,
        }
    }
}

/// A generated catalog: its config file and the WAL names it holds, in xlog db order.
pub struct GeneratedCatalog {
    pub config: PathBuf,
    pub home: PathBuf,
    pub wal_names: Vec<String>,
    pub backup_ids: Vec<String>,
}

fn wal_name(timeline: u32, segment: u64) -> String {
    format!("{timeline:08X}{:08X}{:08X}", segment >> 8, segment & 0xff)
}

/// Writes a Barman catalog that real Barman accepts (with [`fixture::FakePrimary`]): config,
/// backups in `meta/` (and optionally `base/`), WAL files in hash directories, history files,
/// the xlog db.
pub fn generate_catalog(base: &Path, spec: &CatalogSpec) -> GeneratedCatalog {
    let home = base.join("home");
    let mut primary = fixture::FakePrimary::create(&home, &spec.server).unwrap();
    let config = base.join("barman.conf");
    let log_file = format!("log_file = {}/barman.log", base.display());
    let compression_line = spec.compression.map(|c| format!("compression = {c}"));
    let mut global = vec![log_file.as_str()];
    global.extend(compression_line.as_deref());
    primary
        .write_config(
            &config,
            &global,
            "\"generated catalog\"",
            "ssh postgres@127.0.0.1 -p 1",
            &["retention_policy = REDUNDANCY 50"],
        )
        .unwrap();

    let mut backup_ids = Vec::new();
    let mut segment: u64 = 1;
    let mut timeline: u32 = 1;
    let mut time: f64 = 1_704_067_200.0;
    let switch_every = (spec.backups / spec.timelines as usize).max(1);
    let mut write_wal = |name: &str, contents: &[u8], time: f64| {
        let compression = contents
            .starts_with(b"\x1f\x8b\x08")
            .then(|| spec.compression.unwrap_or("gzip"));
        primary
            .archive_wal(name, contents, time, compression)
            .unwrap();
    };
    let wal_body = |seed: u64| -> Vec<u8> {
        let mut body = if spec.compression.is_some() {
            b"\x1f\x8b\x08\x00".to_vec()
        } else {
            Vec::new()
        };
        body.extend(std::iter::repeat_n(b'W', 64 + (seed % 7) as usize));
        body
    };
    // A few WALs older than the first backup (sync-info drops them on full requests).
    for _ in 0..2 {
        write_wal(&wal_name(timeline, segment), &wal_body(segment), time);
        segment += 1;
        time += 60.25;
    }
    let mut backups = Vec::new();
    for index in 0..spec.backups {
        if index > 0 && index % switch_every == 0 && timeline < spec.timelines {
            timeline += 1;
            write_wal(
                &format!("{timeline:08X}.history"),
                format!(
                    "{}\t0/{segment:X}000000\tno recovery target specified\n",
                    timeline - 1
                )
                .as_bytes(),
                time,
            );
            time += 1.5;
        }
        let day = 1 + index % 28;
        let month = 1 + (index / 28) % 12;
        let backup_id = format!(
            "2024{month:02}{day:02}T{:02}{:02}00",
            index % 24,
            index % 60
        );
        let begin = wal_name(timeline, segment);
        write_wal(&begin, &wal_body(segment), time);
        write_wal(
            &format!("{begin}.00000028.backup"),
            b"START WAL LOCATION: 0/28\n",
            time + 0.1,
        );
        segment += 1;
        backups.push((index, backup_id, begin, segment, month, day, timeline));
        for _ in 0..spec.wals_per_backup {
            write_wal(&wal_name(timeline, segment), &wal_body(segment), time);
            segment += 1;
            time += 0.37;
        }
        time += 3600.0;
    }
    for (index, backup_id, begin, segment, month, day, timeline) in backups {
        let status = if spec.mixed_statuses && index == spec.backups - 1 {
            "WAITING_FOR_WALS"
        } else {
            "DONE"
        };
        let tablespaces = if spec.tablespaces == 0 {
            "None".to_owned()
        } else {
            let items: Vec<String> = (0..spec.tablespaces)
                .map(|t| format!("('tbs{t}', {}, '/srv/pg/tbs{t}')", 16387 + t))
                .collect();
            format!("[{}]", items.join(", "))
        };
        let (hour, minute) = (index % 24, index % 60);
        let mut info = fixture::BackupSpec {
            id: &backup_id,
            server: &spec.server,
            label: &format!(
                "START WAL LOCATION: 0/{segment:X}000028 (file {begin})\nLABEL: Barman backup {} {backup_id}\n",
                spec.server
            ),
            begin_time: &format!(
                "2024-{month:02}-{day:02} {hour:02}:{minute:02}:00.{:06}+00:00",
                index * 1111
            ),
            end_time: &format!("2024-{month:02}-{day:02} {hour:02}:{minute:02}:30+01:00"),
            begin_wal: &begin,
            end_wal: &begin,
            begin_xlog: &format!("0/{segment:X}000028"),
            end_xlog: &format!("0/{segment:X}000138"),
            size: format!("1000{index}").parse().unwrap(),
            xlog_segment_size: 16 << 20,
        }
        .to_backup_info();
        info.set_raw(
            "copy_stats",
            &format!(
                "{{'copy_time': 1.25, 'analysis_time': 0.5, 'number_of_workers': 1, 'total_time': {}.0}}",
                index + 2
            ),
        );
        info.set_raw("deduplicated_size", &format!("900{index}"));
        info.set_raw("status", status);
        info.set_raw("tablespaces", &tablespaces);
        info.set_raw("timeline", &timeline.to_string());
        let directory = primary.backup_directory(&backup_id);
        std::fs::create_dir_all(directory.join("data")).unwrap();
        std::fs::write(directory.join("data/PG_VERSION"), "16\n").unwrap();
        if spec.legacy_backup_info && index % 2 == 1 {
            std::fs::write(directory.join("backup.info"), info.to_file_text()).unwrap();
        } else {
            primary.write_backup_info(&info).unwrap();
        }
        backup_ids.push(backup_id);
    }
    if spec.mixed_statuses {
        let failed = "20231231T000000";
        std::fs::write(
            primary
                .server_directory()
                .join("meta")
                .join(format!("{failed}-backup.info")),
            format!("begin_wal=000000010000000000000001\nerror='failure syncing'\nserver_name={}\nstatus=FAILED\n", spec.server),
        )
        .unwrap();
    }
    if spec.duplicate_lines {
        let duplicated: String = primary.wals().iter().take(5).map(|w| w.to_line()).collect();
        let mut xlogdb = std::fs::OpenOptions::new()
            .append(true)
            .open(primary.xlog_db())
            .unwrap();
        std::io::Write::write_all(&mut xlogdb, duplicated.as_bytes()).unwrap();
    }
    GeneratedCatalog {
        config,
        home,
        wal_names: primary.wals().iter().map(|w| w.name.clone()).collect(),
        backup_ids,
    }
}

/// The WAL names of a sync-info document, in order.
pub fn wal_names_of(document: &str) -> Vec<String> {
    let parsed = json::parse(document).unwrap();
    match parsed.get("wals") {
        Some(Json::Array(items)) => items
            .iter()
            .map(|item| match item.get("name") {
                Some(Json::Str(name)) => name.clone(),
                other => panic!("bad wal entry {other:?}"),
            })
            .collect(),
        other => panic!("no wals: {other:?}"),
    }
}

/// The `last_position` of a sync-info document.
pub fn last_position_of(document: &str) -> String {
    match json::parse(document).unwrap().get("last_position") {
        Some(Json::Int(position)) => position.to_string(),
        other => panic!("no last_position: {other:?}"),
    }
}
