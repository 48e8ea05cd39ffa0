//! W8: a backup whose largest file is one big relation segment, changed 1%, synced to a
//! passive that has the older backup: the case `--part-size` (split files) is for. Owns the
//! sample Barman primary of `barsync_sync::fixture::sample` (no PostgreSQL) with that segment
//! (`data/base/1/16384`: W1's file in the older backup, W2's 1% rewrite of it in the newer),
//! the two rows, `barsync sync-backup -j 2` with the default part size and with
//! `--part-size 0`, each against `barman sync-backup`, and their checks (both backups DONE,
//! the segment byte-equal to the primary's, split or not as the row says).

use std::cell::RefCell;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use barsync_tests::passive_rig::{fixture_primary, PassiveRig};

use super::passive::{barman_cmd, barsync_cmd, check_backups, fresh_link_rig};
use super::{fixture, link_or_copy, size_label, Context, Outcome, Side, MIB};
use crate::harness::report::Row;
use crate::harness::runner::{self, barsync_wire_bytes, measure};
use crate::harness::{HarnessError, Result};

/// The two backups of the fixture primary.
const OLDER: &str = "20240101T120000";
const NEWER: &str = "20240102T120000";
/// The segment, relative to a backup's `data` directory.
const SEGMENT: &str = "base/1/16384";
/// barsync's default `--part-size`: files of twice this size are split.
const DEFAULT_PART_MIB: u64 = 64;

impl<'a> Context<'a> {
    pub(super) fn w8(&mut self) -> Result<Outcome> {
        let Some(barman) = self.barman.clone() else {
            return Ok(Outcome::Skipped(
                "Barman not found (--barman, $BARSYNC_TEST_BARMAN or .venv/bin/barman)".into(),
            ));
        };
        if self.options.size_mib < 2 * DEFAULT_PART_MIB {
            return Ok(Outcome::Skipped(format!(
                "--size-mib {} is below {} MiB, the smallest file the default part size splits",
                self.options.size_mib,
                2 * DEFAULT_PART_MIB
            )));
        }
        let (v1, v2) = self.ensure_v2()?;
        (self.progress)("   sample Barman primary (no PostgreSQL), segment in both backups");
        let primary = fixture(fixture_primary)?;
        let primary_server = primary.path().join("primary-home/pg");
        let segment = |id: &str| backup_data(&primary_server, id).join(SEGMENT);
        link_or_copy(&v1, &segment(OLDER))?;
        link_or_copy(&v2, &segment(NEWER))?;
        let config = primary.path().join("primary.conf");
        let size = size_label(self.options.size_mib);
        let mut rows = Vec::new();
        for (id, flags) in [
            ("W8", &["-j", "2"][..]),
            ("W8-nosplit", &["-j", "2", "--part-size", "0"][..]),
        ] {
            let how = if flags.contains(&"--part-size") {
                "-j 2 --part-size 0".to_owned()
            } else {
                format!("-j 2, default --part-size {DEFAULT_PART_MIB}M")
            };
            let title = format!(
                "{size} segment 1% rewritten in the 2nd backup, 1st on the passive; sync-backup {how}"
            );
            rows.push(self.w8_case(id, &title, &config, flags, &barman, &segment(NEWER))?);
        }
        Ok(Outcome::Rows(rows))
    }

    /// One row: `barsync sync-backup FLAGS pg NEWER` against `barman sync-backup pg NEWER`, each
    /// on a fresh passive (`reuse_backup = link`) that has synced the older backup with the
    /// same tool.
    fn w8_case(
        &self,
        id: &str,
        title: &str,
        primary_config: &Path,
        flags: &[&str],
        barman: &Path,
        primary_segment: &Path,
    ) -> Result<Row> {
        let barsync = self.options.barsync.clone();
        // The rows differ only by `--part-size 0`.
        let splits = !flags.contains(&"--part-size");
        let rig: RefCell<Option<PassiveRig>> = RefCell::new(None);
        let new_rig = || fresh_link_rig(&rig, primary_config);
        let check = |who: &str| {
            check_backups(&rig, &[&OLDER.to_owned(), &NEWER.to_owned()])?;
            let synced = backup_data(
                &rig.borrow().as_ref().expect("rig").server_directory(),
                NEWER,
            )
            .join(SEGMENT);
            if !same_bytes(&synced, primary_segment)? {
                return Err(HarnessError::Check(format!(
                    "{who}: {} differs from the primary's {}",
                    synced.display(),
                    primary_segment.display()
                )));
            }
            Ok(())
        };
        let mut args = flags.to_vec();
        args.extend(["pg", NEWER]);
        let mut setup_args = flags.to_vec();
        setup_args.extend(["pg", OLDER]);
        let barsync_side = Side {
            tool: format!("barsync sync-backup {}", flags.join(" ")),
            setup: Box::new(|| {
                let passive = new_rig()?;
                let sync_info = ["--primary", "pg"];
                runner::run_quiet(&mut barsync_cmd(
                    &barsync,
                    "sync-info",
                    &passive,
                    &sync_info,
                ))?;
                runner::run_quiet(&mut barsync_cmd(
                    &barsync,
                    "sync-backup",
                    &passive,
                    &setup_args,
                ))?;
                Ok(())
            }),
            run: Box::new(|| {
                let passive = rig.borrow().as_ref().expect("rig").config.clone();
                let mut command = barsync_cmd(&barsync, "sync-backup", &passive, &args);
                let what = runner::describe(&command);
                let run = measure(&mut command)?;
                check("barsync")?;
                if run.stdout.contains(" split into ") != splits {
                    return Err(HarnessError::Check(format!(
                        "`{what}` {} the segment:\n{}",
                        if splits { "did not split" } else { "split" },
                        runner::tail(&run.stdout, 5)
                    )));
                }
                Ok((run, what))
            }),
            wire: barsync_wire_bytes,
        };
        let barman_side = Side {
            tool: "barman sync-backup".into(),
            setup: Box::new(|| {
                let passive = new_rig()?;
                runner::run_quiet(&mut barman_cmd(
                    barman,
                    &passive,
                    &["sync-info", "--primary", "pg"],
                ))?;
                runner::run_quiet(&mut barman_cmd(
                    barman,
                    &passive,
                    &["sync-backup", "pg", OLDER],
                ))?;
                Ok(())
            }),
            run: Box::new(|| {
                let passive = rig.borrow().as_ref().expect("rig").config.clone();
                let mut command = barman_cmd(barman, &passive, &["sync-backup", "pg", NEWER]);
                let what = runner::describe(&command);
                let run = measure(&mut command)?;
                check("Barman")?;
                Ok((run, what))
            }),
            wire: |_| None,
        };
        let row = self.compare(id, title, barsync_side, barman_side)?;
        rig.replace(None);
        Ok(row)
    }
}

/// The `data` directory of backup `id` in the server directory `server` (`<home>/pg`).
fn backup_data(server: &Path, id: &str) -> PathBuf {
    server.join(format!("base/{id}/data"))
}

/// Whether two files hold the same bytes (read 8 MiB at a time).
fn same_bytes(a: &Path, b: &Path) -> Result<bool> {
    let open = |path: &Path| File::open(path).map_err(HarnessError::io(path.display().to_string()));
    let (mut a_file, mut b_file) = (open(a)?, open(b)?);
    let len = |file: &File, path: &Path| {
        file.metadata()
            .map(|m| m.len())
            .map_err(HarnessError::io(path.display().to_string()))
    };
    if len(&a_file, a)? != len(&b_file, b)? {
        return Ok(false);
    }
    let chunk = 8 * MIB as usize;
    let (mut a_buf, mut b_buf) = (vec![0u8; chunk], vec![0u8; chunk]);
    loop {
        let n = read_full(&mut a_file, &mut a_buf)
            .map_err(HarnessError::io(a.display().to_string()))?;
        let m = read_full(&mut b_file, &mut b_buf)
            .map_err(HarnessError::io(b.display().to_string()))?;
        if n != m || a_buf[..n] != b_buf[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the file ends; the bytes read.
fn read_full(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}
