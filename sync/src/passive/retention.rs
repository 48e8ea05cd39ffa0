//! The passive's own `retention_policy`, as Barman reports it (`REDUNDANCY n`, `RECOVERY
//! WINDOW OF n DAYS|WEEKS|MONTHS`, with `minimum_redundancy` and `keep` annotations), used
//! twice: a backup of the primary that local retention would already call OBSOLETE is not
//! copied (Barman's check before sync-backup), and after cron the local OBSOLETE backups are
//! deleted by Barman itself (`barman delete`), whose deletion also releases the WALs only that
//! backup needed. barsync never deletes a DONE backup with its own code.
//!
//! Incremental chains (PostgreSQL 17) as in Barman 3.20.1's retention report: only backups
//! without a parent count towards the policy, and each one's status passes to every backup
//! below it; an orphan (its chain's root not on this node) is never OBSOLETE. Deleting an
//! OBSOLETE root with `barman delete` deletes its whole tree, so only roots are deleted here.
//! One difference, on the side of keeping: below a root with a `keep` annotation nothing is
//! OBSOLETE (Barman reports the children of a `standalone` root outside the policy OBSOLETE).

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{Events, PassiveError};
use crate::backup_info::{BackupInfo, BackupStatus};
use crate::config::{RetentionPolicy, ServerConfig, WindowUnit};

/// A backup as retention sees it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: String,
    pub done: bool,
    /// `end_time` in seconds since the epoch.
    pub end_time: Option<i64>,
    /// The parent of an incremental backup.
    pub parent: Option<String>,
    /// Has a `keep` annotation.
    pub kept: bool,
}

impl Candidate {
    pub fn from_info(info: &BackupInfo, meta_directory: &Path) -> Candidate {
        let id = info.backup_id().to_owned();
        Candidate {
            done: info.status().ok() == Some(BackupStatus::Done),
            end_time: info
                .time("end_time")
                .ok()
                .flatten()
                .map(|t| t.unix_seconds()),
            parent: info.parent_backup_id().map(str::to_owned),
            kept: meta_directory.join(format!("{id}-keep")).exists(),
            id,
        }
    }
}

/// The IDs that `policy` reports OBSOLETE among `backups` at time `now` (seconds).
pub fn obsolete(
    policy: RetentionPolicy,
    minimum_redundancy: u32,
    backups: &[Candidate],
    now: i64,
) -> Vec<String> {
    let mut newest_first: Vec<&Candidate> = backups.iter().filter(|b| b.parent.is_none()).collect();
    newest_first.sort_by(|a, b| b.id.cmp(&a.id));
    let mut obsolete = Vec::new();
    match policy {
        RetentionPolicy::Redundancy(n) => {
            let redundancy = n.max(minimum_redundancy) as usize;
            for (newer, backup) in newest_first.iter().filter(|b| b.done).enumerate() {
                if !backup.kept && newer >= redundancy {
                    obsolete.push(backup.id.clone());
                }
            }
        }
        RetentionPolicy::RecoveryWindow { count, unit } => {
            let point = point_of_recoverability(now, count, unit);
            let mut found = false;
            let mut valid = 0u32;
            for backup in newest_first.iter().filter(|b| b.done) {
                if found {
                    if valid < minimum_redundancy {
                        valid += 1;
                    } else if !backup.kept {
                        obsolete.push(backup.id.clone());
                    }
                } else {
                    valid += 1;
                    // The first backup older than the window is still needed to recover to
                    // its beginning; everything older is obsolete.
                    if backup.end_time.is_some_and(|end| end < point) {
                        found = true;
                    }
                }
            }
        }
    }
    // Every backup below an OBSOLETE root is OBSOLETE with it.
    let roots = obsolete.clone();
    for backup in backups {
        if backup.parent.is_some()
            && root_of(backups, backup).is_some_and(|root| roots.contains(&root.id))
        {
            obsolete.push(backup.id.clone());
        }
    }
    obsolete.sort();
    obsolete
}

/// The root of `backup`'s chain among `backups` (itself without a parent), `None` when a
/// parent on the way is not among them.
fn root_of<'a>(backups: &'a [Candidate], backup: &'a Candidate) -> Option<&'a Candidate> {
    let mut current = backup;
    // A chain is never longer than the list (this also stops on a corrupt cycle).
    for _ in 0..=backups.len() {
        let Some(parent) = &current.parent else {
            return Some(current);
        };
        current = backups.iter().find(|b| &b.id == parent)?;
    }
    None
}

/// `now - window`, as Barman computes it (a month is 31 days there).
fn point_of_recoverability(now: i64, count: u32, unit: WindowUnit) -> i64 {
    const DAY: i64 = 86_400;
    let days = match unit {
        WindowUnit::Days => 1,
        WindowUnit::Weeks => 7,
        WindowUnit::Months => 31,
    };
    now - i64::from(count) * days * DAY
}

pub(crate) fn now_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Whether `retention_policy_mode` lets barsync (and Barman's cron) apply the policy.
fn automatic(server: &ServerConfig) -> bool {
    server.text("retention_policy_mode").unwrap_or("auto") == "auto"
}

/// Whether the primary's backup `remote`, once copied, would already be OBSOLETE here.
/// `remote_ancestors` are the primary's backups above an incremental `remote` that this node
/// does not have (counted as if copied too): a child whose root would be OBSOLETE is.
pub fn remote_is_obsolete(
    server: &ServerConfig,
    local: &[Candidate],
    remote: Candidate,
    remote_ancestors: &[Candidate],
) -> bool {
    let Some(policy) = server.retention_policy().filter(|_| automatic(server)) else {
        return false;
    };
    let id = remote.id.clone();
    let mut all: Vec<Candidate> = local.iter().filter(|c| c.id != id).cloned().collect();
    for candidate in remote_ancestors.iter().cloned().chain([remote]) {
        if !all.iter().any(|c| c.id == candidate.id) {
            all.push(Candidate {
                done: true,
                ..candidate
            });
        }
    }
    obsolete(policy, server.minimum_redundancy(), &all, now_seconds()).contains(&id)
}

/// The local backups that [`apply`] would delete now (the OBSOLETE roots; their trees go
/// with them), for a dry run.
pub fn would_delete(server: &ServerConfig, local: &[Candidate]) -> Vec<String> {
    let Some(policy) = server.retention_policy().filter(|_| automatic(server)) else {
        return Vec::new();
    };
    let obsolete = obsolete(policy, server.minimum_redundancy(), local, now_seconds());
    obsolete_roots(&obsolete, local)
}

/// Deleting a root deletes its tree (Barman's delete): only the roots are deleted.
fn obsolete_roots(obsolete: &[String], local: &[Candidate]) -> Vec<String> {
    obsolete
        .iter()
        .filter(|id| {
            local
                .iter()
                .find(|c| &c.id == *id)
                .is_none_or(|c| c.parent.is_none())
        })
        .cloned()
        .collect()
}

/// Deletes the local backups the policy reports OBSOLETE with `barman delete` (Barman's own
/// deletion, WAL release included); returns the IDs deleted. Without Barman, nothing is
/// deleted and a warning says which backups are obsolete.
pub fn apply(
    server: &ServerConfig,
    config_file: &Path,
    barman: &Path,
    local: &[Candidate],
    events: &dyn Events,
) -> Result<Vec<String>, PassiveError> {
    let Some(policy) = server.retention_policy().filter(|_| automatic(server)) else {
        return Ok(Vec::new());
    };
    let name = server.name();
    let mut deleted = Vec::new();
    let obsolete = obsolete(policy, server.minimum_redundancy(), local, now_seconds());
    for id in obsolete_roots(&obsolete, local) {
        events.info(&format!(
            "Enforcing retention policy: removing backup {id} for server {name}"
        ));
        let output = Command::new(barman)
            .arg("-c")
            .arg(config_file)
            .args(["-q", "delete", name, &id])
            .output();
        match output {
            Ok(output) if output.status.success() => {
                let below = local.iter().filter(|c| {
                    c.parent.is_some()
                        && obsolete.contains(&c.id)
                        && root_of(local, c).is_some_and(|root| root.id == id)
                });
                deleted.extend(below.map(|c| c.id.clone()));
                deleted.push(id);
            }
            Ok(output) => {
                return Err(PassiveError::Sync(format!(
                    "retention policy: `barman delete {name} {id}` failed: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                )))
            }
            Err(error) => {
                events.warning(&format!(
                    "backup {id} of server {name} is OBSOLETE by {policy}, but Barman ({}) cannot run to delete it: {error}",
                    barman.display()
                ));
                break;
            }
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(id: &str, end_time: i64) -> Candidate {
        Candidate {
            id: id.into(),
            done: true,
            end_time: Some(end_time),
            parent: None,
            kept: false,
        }
    }

    #[test]
    fn redundancy_keeps_the_newest_done_backups() {
        let mut backups = vec![
            done("20240101T000000", 0),
            done("20240102T000000", 0),
            done("20240103T000000", 0),
        ];
        assert_eq!(
            obsolete(RetentionPolicy::Redundancy(2), 0, &backups, 0),
            vec!["20240101T000000"]
        );
        assert_eq!(
            obsolete(RetentionPolicy::Redundancy(1), 3, &backups, 0),
            Vec::<String>::new()
        );
        backups[0].kept = true;
        assert!(
            obsolete(RetentionPolicy::Redundancy(1), 0, &backups, 0) == vec!["20240102T000000"]
        );
        backups[1].done = false;
        assert!(obsolete(RetentionPolicy::Redundancy(1), 0, &backups, 0).is_empty());
    }

    #[test]
    fn recovery_window_keeps_the_first_backup_before_the_window() {
        let day = 86_400;
        let now = 100 * day;
        let backups = vec![
            done("20240101T000000", 80 * day),
            done("20240102T000000", 90 * day),
            done("20240103T000000", 95 * day),
            done("20240104T000000", 99 * day),
        ];
        let window = RetentionPolicy::RecoveryWindow {
            count: 7,
            unit: WindowUnit::Days,
        };
        assert_eq!(obsolete(window, 0, &backups, now), vec!["20240101T000000"]);
        assert!(obsolete(window, 4, &backups, now).is_empty());
    }

    #[test]
    fn a_chain_counts_once_through_its_root_and_goes_with_it() {
        let child = |id: &str, parent: &str| Candidate {
            parent: Some(parent.into()),
            ..done(id, 0)
        };
        let backups = vec![
            done("20240101T000000", 0),
            child("20240102T000000", "20240101T000000"),
            child("20240103T000000", "20240102T000000"),
            done("20240104T000000", 0),
            child("20240105T000000", "20240104T000000"),
            child("20240106T000000", "20240199T000000"),
        ];
        // Two roots; children do not count towards the redundancy.
        assert!(obsolete(RetentionPolicy::Redundancy(2), 0, &backups, 0).is_empty());
        assert_eq!(
            obsolete(RetentionPolicy::Redundancy(1), 0, &backups, 0),
            vec!["20240101T000000", "20240102T000000", "20240103T000000"],
            "the old root and its whole tree; the orphan stays"
        );
        let mut kept = backups.clone();
        kept[0].kept = true;
        assert!(obsolete(RetentionPolicy::Redundancy(1), 0, &kept, 0).is_empty());
    }

    #[test]
    fn a_month_is_31_days_as_in_barman() {
        assert_eq!(
            point_of_recoverability(100 * 86_400, 2, WindowUnit::Months),
            38 * 86_400
        );
    }
}
