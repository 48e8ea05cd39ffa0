//! W4 and W7: barsync against Barman's own passive commands on passive nodes of the Barman
//! primary (W4: the second backup with the first already there, `reuse_backup = link`; W7: a
//! cold passive, one `barsync cron` against `barman sync-info`/`sync-backup`/`sync-wals`).
//! Owns the two cases and the checks of what the passive ends up with.

use std::cell::RefCell;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use barsync_tests::passive_rig::{PassiveRig, RigOptions};

use super::{fixture, Context, Outcome, Side};
use crate::harness::proxy::ShapingProxy;
use crate::harness::runner::{self, barsync_wire_bytes, measure};
use crate::harness::{HarnessError, Result};

impl<'a> Context<'a> {
    pub(super) fn w4(&mut self) -> Result<Outcome> {
        if let Some(reason) = self.primary_unavailable() {
            return Ok(Outcome::Skipped(reason));
        }
        self.ensure_primary()?;
        let primary = self.primary.as_ref().expect("primary prepared");
        let config = primary.primary.config_path();
        let (first, second) = (primary.first.clone(), primary.second.clone());
        let barman = self.barman.clone().expect("barman found");
        let barsync = self.options.barsync.clone();
        let rig: RefCell<Option<PassiveRig>> = RefCell::new(None);
        let new_rig = || fresh_link_rig(&rig, &config);
        let barsync_side = Side {
            tool: "barsync sync-backup".into(),
            setup: Box::new(|| {
                let passive = new_rig()?;
                runner::run_quiet(&mut barsync_cmd(
                    &barsync,
                    "sync-info",
                    &passive,
                    &["--primary", "pg"],
                ))?;
                runner::run_quiet(&mut barsync_cmd(
                    &barsync,
                    "sync-backup",
                    &passive,
                    &["pg", &first],
                ))?;
                Ok(())
            }),
            run: Box::new(|| {
                let passive = rig.borrow().as_ref().expect("rig").config.clone();
                let mut command = barsync_cmd(&barsync, "sync-backup", &passive, &["pg", &second]);
                let what = runner::describe(&command);
                let run = measure(&mut command)?;
                check_backups(&rig, &[&first, &second])?;
                Ok((run, what))
            }),
            wire: barsync_wire_bytes,
        };
        let barman_side = Side {
            tool: "barman sync-backup".into(),
            setup: Box::new(|| {
                let passive = new_rig()?;
                runner::run_quiet(&mut barman_cmd(
                    &barman,
                    &passive,
                    &["sync-info", "--primary", "pg"],
                ))?;
                runner::run_quiet(&mut barman_cmd(
                    &barman,
                    &passive,
                    &["sync-backup", "pg", &first],
                ))?;
                Ok(())
            }),
            run: Box::new(|| {
                let passive = rig.borrow().as_ref().expect("rig").config.clone();
                let mut command = barman_cmd(&barman, &passive, &["sync-backup", "pg", &second]);
                let what = runner::describe(&command);
                let run = measure(&mut command)?;
                check_backups(&rig, &[&first, &second])?;
                Ok((run, what))
            }),
            wire: |_| None,
        };
        let row = self.compare(
            "W4",
            &format!(
                "second backup ({}), first on the passive, reuse_backup = link",
                self.backup_size(&second)
            ),
            barsync_side,
            barman_side,
        )?;
        rig.replace(None);
        Ok(Outcome::Rows(vec![row]))
    }

    pub(super) fn w7(&mut self) -> Result<Outcome> {
        self.cold_passive("W7", false)
    }

    /// W9: W7 with the passive reaching the primary through the shaping proxy (both sides:
    /// Barman's rsync and barsync use the same `primary_ssh_command`).
    pub(super) fn w9(&mut self) -> Result<Outcome> {
        self.cold_passive("W9", true)
    }

    /// A cold passive synced from scratch (W7; through the shaped link, W9).
    fn cold_passive(&mut self, id: &str, shaped: bool) -> Result<Outcome> {
        if let Some(reason) = self.primary_unavailable() {
            return Ok(Outcome::Skipped(reason));
        }
        let shape = self.options.link;
        self.ensure_primary()?;
        let primary = self.primary.as_ref().expect("primary prepared");
        let config = primary.primary.config_path();
        let (first, second) = (primary.first.clone(), primary.second.clone());
        let primary_xlog = xlog_db(&primary.primary.barman_home().join("pg"));
        let wal_count = primary_xlog.lines().count();
        let barman = self.barman.clone().expect("barman found");
        let barsync = self.options.barsync.clone();
        let rig: RefCell<Option<PassiveRig>> = RefCell::new(None);
        let proxy: RefCell<Option<ShapingProxy>> = RefCell::new(None);
        let new_rig = || {
            proxy.replace(None);
            rig.replace(None);
            let fresh = fixture(|| PassiveRig::new(&config, &RigOptions::default()))?;
            if shaped {
                proxy.replace(Some(shape_rig(&fresh, shape)?));
            }
            rig.replace(Some(fresh));
            Ok::<(), HarnessError>(())
        };
        let findings: RefCell<Vec<String>> = RefCell::new(Vec::new());
        let check = |rig: &RefCell<Option<PassiveRig>>, who: &str| {
            check_backups(rig, &[&first, &second])?;
            let home = rig.borrow().as_ref().expect("rig").server_directory();
            let synced = xlog_db(&home);
            let names = |text: &str| {
                let mut names: Vec<String> = text
                    .lines()
                    .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
                    .collect();
                names.sort();
                names
            };
            let mut unique = names(&synced);
            unique.dedup();
            let extra = synced.lines().count().saturating_sub(unique.len());
            if extra > 0 {
                findings.borrow_mut().push(format!(
                    "{id}: {who} left {extra} duplicate lines in the passive's xlog db ({} lines for {} WALs)",
                    synced.lines().count(),
                    unique.len()
                ));
            }
            if unique != names(&primary_xlog) {
                return Err(HarnessError::Check(format!(
                    "the passive's xlog db differs from the primary's:\n--- passive\n{synced}--- primary\n{primary_xlog}"
                )));
            }
            Ok(())
        };
        let barsync_side = Side {
            tool: "barsync cron".into(),
            setup: Box::new(new_rig),
            run: Box::new(|| {
                let passive = rig.borrow().as_ref().expect("rig").config.clone();
                let mut command = barsync_cmd(&barsync, "cron", &passive, &[]);
                let what = runner::describe(&command);
                let run = measure(&mut command)?;
                check(&rig, "barsync cron")?;
                Ok((run, what))
            }),
            wire: barsync_wire_bytes,
        };
        let barman_side = Side {
            tool: "barman sync-info/-backup/-wals".into(),
            setup: Box::new(new_rig),
            run: Box::new(|| {
                let passive = rig.borrow().as_ref().expect("rig").config.clone();
                let mut run = measure(&mut barman_cmd(
                    &barman,
                    &passive,
                    &["sync-info", "--primary", "pg"],
                ))?;
                for id in [&first, &second] {
                    run = run.then(measure(&mut barman_cmd(
                        &barman,
                        &passive,
                        &["sync-backup", "pg", id],
                    ))?);
                }
                let mut last = barman_cmd(&barman, &passive, &["sync-wals", "pg"]);
                let what = format!(
                    "barman sync-info --primary pg; sync-backup pg {first}; sync-backup pg {second}; {}",
                    runner::describe(&last)
                );
                run = run.then(measure(&mut last)?);
                check(&rig, "Barman")?;
                Ok((run, what))
            }),
            wire: |_| None,
        };
        let link = if shaped {
            format!(
                ", {} ms RTT, {:.0} Mbit/s",
                shape.one_way_delay.as_millis() * 2,
                shape.rate_bytes_per_second as f64 * 8.0 / 1e6
            )
        } else {
            String::new()
        };
        let row = self.compare(
            id,
            &format!(
                "cold passive: 2 backups ({} + {}), {wal_count} WAL entries{link}",
                self.backup_size(&first),
                self.backup_size(&second)
            ),
            barsync_side,
            barman_side,
        )?;
        rig.replace(None);
        proxy.replace(None);
        let mut findings = findings.into_inner();
        findings.dedup();
        self.notes.extend(findings);
        Ok(Outcome::Rows(vec![row]))
    }
}

/// Puts the shaping proxy between `rig`'s passive and its primary's sshd: the passive's
/// `primary_ssh_command` goes to the proxy's port, with the sshd's host key known there. The
/// proxy runs until dropped.
pub(super) fn shape_rig(
    rig: &PassiveRig,
    shape: crate::harness::LinkShape,
) -> Result<ShapingProxy> {
    let port = rig.sshd.port();
    let upstream = format!("127.0.0.1:{port}")
        .parse()
        .map_err(|_| HarnessError::Invalid("sshd address".into()))?;
    let proxy = ShapingProxy::start(upstream, shape)
        .map_err(HarnessError::io("starting the shaping proxy"))?;
    let command = rig
        .sshd
        .ssh_command_via(proxy.port())
        .map_err(HarnessError::io("known_hosts"))?;
    rig.set_primary_ssh_command(&command);
    Ok(proxy)
}

/// Replaces the passive in `rig` with a fresh one of the primary at `primary_config`, with
/// `reuse_backup = link` (W4, W8); returns its configuration file.
pub(super) fn fresh_link_rig(
    rig: &RefCell<Option<PassiveRig>>,
    primary_config: &Path,
) -> Result<PathBuf> {
    rig.replace(None);
    let fresh = fixture(|| {
        PassiveRig::new(
            primary_config,
            &RigOptions {
                server_lines: vec!["reuse_backup = link".into()],
                ..RigOptions::default()
            },
        )
    })?;
    let config = fresh.config.clone();
    rig.replace(Some(fresh));
    Ok(config)
}

pub(super) fn barsync_cmd(
    barsync: &Path,
    subcommand: &str,
    config: &Path,
    args: &[&str],
) -> Command {
    let mut command = Command::new(barsync);
    command.arg(subcommand).arg("-c").arg(config).args(args);
    command
}

pub(super) fn barman_cmd(barman: &Path, config: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(barman);
    command.arg("-c").arg(config).args(args);
    command
}

/// Both backups are DONE in the passive's catalog.
pub(super) fn check_backups(rig: &RefCell<Option<PassiveRig>>, ids: &[&String]) -> Result<()> {
    let rig = rig.borrow();
    let rig = rig.as_ref().expect("rig");
    for id in ids {
        let info = rig
            .server_directory()
            .join(format!("meta/{id}-backup.info"));
        let legacy = rig
            .server_directory()
            .join(format!("base/{id}/backup.info"));
        let text = fs::read_to_string(&info)
            .or_else(|_| fs::read_to_string(&legacy))
            .unwrap_or_default();
        if !text.lines().any(|line| line == "status=DONE") {
            return Err(HarnessError::Check(format!(
                "backup {id} is not DONE on the passive {}",
                rig.server_directory().display()
            )));
        }
    }
    Ok(())
}

/// The xlog db of a server directory (`wals/pg-xlog.db`, server `pg`), empty when missing.
fn xlog_db(server_directory: &Path) -> String {
    fs::read_to_string(server_directory.join("wals/pg-xlog.db")).unwrap_or_default()
}
