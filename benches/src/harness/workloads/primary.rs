//! The PostgreSQL 15 + Barman primary shared by W3, W4 and W7: whether it can run here,
//! starting it, taking its two backups (with pgbench traffic between them), and the size of
//! a backup for the report.

use std::path::PathBuf;
use std::process::Command;

use barsync_sync::fixture::files_and_bytes;
use barsync_tests::barman_primary::BarmanPrimary;

use super::{fixture, Context, Primary, MIB};
use crate::harness::{HarnessError, Result};

/// The PostgreSQL 15 bin directory: `$BARSYNC_TEST_PG_BIN`, else `/usr/lib/postgresql/15/bin`.
pub fn pg_bin_dir() -> PathBuf {
    std::env::var_os("BARSYNC_TEST_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

impl<'a> Context<'a> {
    /// Why W4/W7 (and W3's real WAL) cannot run, if they cannot.
    pub(super) fn primary_unavailable(&self) -> Option<String> {
        if self.barman.is_none() {
            return Some(
                "Barman not found (--barman, $BARSYNC_TEST_BARMAN or .venv/bin/barman)".into(),
            );
        }
        if !pg_bin_dir().join("initdb").is_file() {
            return Some(format!("no PostgreSQL in {}", pg_bin_dir().display()));
        }
        let postgres_user = Command::new("id")
            .args(["-u", "postgres"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !postgres_user {
            return Some("no `postgres` OS user to run PostgreSQL".into());
        }
        None
    }

    pub(super) fn ensure_primary_started(&mut self) -> Result<()> {
        if self.primary.is_some() {
            return Ok(());
        }
        let scale = self.options.scale;
        (self.progress)(&format!(
            "   starting PostgreSQL 15 + Barman primary, pgbench -i -s {scale}"
        ));
        let primary = fixture(|| BarmanPrimary::start(scale))?
            .map_err(HarnessError::io("starting the Barman primary"))?;
        self.primary = Some(Primary {
            primary,
            first: String::new(),
            second: String::new(),
        });
        Ok(())
    }

    /// Two backups with pgbench traffic between them, and every WAL archived.
    pub(super) fn ensure_primary(&mut self) -> Result<()> {
        self.ensure_primary_started()?;
        let primary = self.primary.as_mut().expect("started");
        if !primary.second.is_empty() {
            return Ok(());
        }
        let transactions = 1000 * self.options.scale;
        (self.progress)("   first backup (barman backup)");
        primary.first = fixture(|| primary.primary.backup())?;
        (self.progress)(&format!(
            "   pgbench: 2 clients x {transactions} transactions"
        ));
        fixture(|| primary.primary.pgbench_run(transactions))?;
        (self.progress)("   second backup");
        primary.second = fixture(|| primary.primary.backup())?;
        fixture(|| primary.primary.pgbench_run(transactions / 10))?;
        fixture(|| primary.primary.archive_wals())?;
        Ok(())
    }

    pub(super) fn backup_size(&self, id: &str) -> String {
        let Some(primary) = &self.primary else {
            return "?".into();
        };
        let root = primary.primary.barman_home().join("pg/base").join(id);
        let (files, bytes) = files_and_bytes(&root).unwrap_or_default();
        format!("{:.0} MiB in {files} files", bytes as f64 / MIB as f64)
    }
}
