//! `status`: one passive server at a glance, from what is on this node: its newest synced
//! backup, how far its WALs are behind the primary's (in segments and seconds, against the
//! primary's list saved by the last sync), the last `cron` run's result, and the disk it uses.
//!
//! It owns the small state file `cron` leaves for it, `<backup_directory>/barsync-cron.json`
//! (Barman ignores it), and the WAL lag both `status` and `check` report ([`wal_lag`]): the
//! primary's newest WAL as last known here (the saved `primary.info`, or what a running
//! `follow` last read in the primary's xlog db, whichever is newer) against this node's
//! newest. Reading status never contacts the primary and never writes.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::cron::ServerCron;
use super::PassiveError;
use crate::backup_info::BackupStatus;
use crate::catalog::load_backups;
use crate::config::ServerConfig;
use crate::syncinfo::load_primary_info;
use crate::wal::WalName;

/// WAL segment size when no backup says otherwise (PostgreSQL's default).
const DEFAULT_SEGMENT_SIZE: u64 = 16 << 20;

/// One passive server's state.
#[derive(Debug, Clone, Serialize)]
pub struct ServerStatus {
    pub server: String,
    /// The newest DONE backup here, and how long ago it ended.
    pub last_backup: Option<Aged>,
    /// Backups here by state.
    pub backups_done: u64,
    pub backups_syncing: u64,
    pub backups_failed: u64,
    /// How old the primary's list (`primary.info`) is.
    pub primary_info_age_seconds: Option<f64>,
    /// The primary's newest WAL known here: from that list, or from `follow` when newer.
    pub primary_newest_wal: Option<String>,
    /// How long ago the primary's newest WAL was learnt (the list's age, or when `follow`
    /// last read the primary's xlog db).
    pub primary_newest_seen_seconds: Option<f64>,
    /// The newest WAL here (in the xlog db), and how long ago it was archived.
    pub newest_wal: Option<Aged>,
    /// Segments between the primary's newest WAL and this node's (0: caught up).
    pub wal_lag_segments: Option<u64>,
    /// Seconds between the two WALs' archival times (0: caught up).
    pub wal_lag_seconds: Option<f64>,
    /// The last `cron` run for this server.
    pub last_cron: Option<LastCron>,
    /// The `follow` process of this server, if one ran here.
    pub follow: Option<FollowStatus>,
    /// Bytes of the backups and WALs on this node's disk (hard links to a file counted once).
    pub disk_bytes: u64,
}

/// What `barsync follow` of a server is doing (from its state file and its lock).
#[derive(Debug, Clone, Serialize)]
pub struct FollowStatus {
    /// Whether a follower holds the server's follow lock now.
    pub running: bool,
    pub pid: Option<u32>,
    /// Whether its session to the primary was open when it last wrote its state.
    pub connected: bool,
    /// `watch` (the primary waits on its xlog db) or `poll`.
    pub mode: Option<String>,
    /// Seconds since it last wrote its state (a running follower does at least every 30 s).
    pub updated_seconds: f64,
    /// The last WAL it shipped, and how long ago.
    pub shipped_newest: Option<String>,
    pub shipped_seconds: Option<f64>,
    /// Why its last session ended, if it did.
    pub last_error: Option<String>,
    /// With `--partial`: the newest partial WAL copied here, its bytes of WAL, and how long
    /// ago it was brought up to date.
    pub partial_newest: Option<String>,
    pub partial_bytes: Option<u64>,
    pub partial_seconds: Option<f64>,
}

fn follow_status(server: &ServerConfig, now: f64) -> Option<FollowStatus> {
    let state = super::follow::read_state(server)?;
    let pid = super::follow::follower_running(server);
    Some(FollowStatus {
        running: pid.is_some(),
        pid,
        connected: pid.is_some() && state.connected,
        mode: state.mode,
        updated_seconds: (now - state.updated).max(0.0),
        shipped_newest: state.shipped_newest,
        shipped_seconds: state.shipped_at.map(|at| (now - at).max(0.0)),
        last_error: state.last_error,
        partial_newest: state.partial_newest,
        partial_bytes: state.partial_bytes,
        partial_seconds: state.partial_at.map(|at| (now - at).max(0.0)),
    })
}

/// How far this node's WALs are behind the primary's, as known here.
#[derive(Debug, Clone, Default)]
pub struct WalLag {
    /// The primary's newest WAL known here, and where from (`primary.info` or `follow`).
    pub primary_newest: Option<String>,
    pub source: Option<&'static str>,
    /// How long ago that was learnt.
    pub primary_seen_seconds: Option<f64>,
    /// This node's newest WAL in its xlog db.
    pub newest_here: Option<crate::xlogdb::WalEntry>,
    /// Segments between the two (0: caught up); `None` when not comparable.
    pub segments: Option<u64>,
    /// Seconds between the two WALs' archival times (0: caught up).
    pub seconds: Option<f64>,
}

/// The WAL lag of `server` from what this node knows: the primary's newest WAL from the saved
/// `primary.info` and from the `follow` state file (the newer name wins), this node's from its
/// xlog db. `segment_size` counts the segments between them.
pub fn wal_lag(server: &ServerConfig, segment_size: u64) -> Result<WalLag, PassiveError> {
    let now = now();
    let local_wals = crate::xlogdb::read_entries(server)?;
    let newest_here = local_wals
        .iter()
        .max_by(|a, b| a.name.cmp(&b.name))
        .cloned();
    let primary = load_primary_info(server).ok();
    let from_info = primary.as_ref().and_then(|p| {
        WalName::parse(&p.last_name).ok()?;
        let time = p
            .wals
            .iter()
            .find(|w| w.name == p.last_name)
            .map(|w| w.time);
        let age = crate::fsutil::age_seconds(&server.primary_info_path());
        Some((p.last_name.clone(), time, age, "primary.info"))
    });
    let from_follow = super::follow::read_state(server).and_then(|state| {
        let name = state.primary_newest?;
        Some((
            name,
            state.primary_newest_time,
            state.primary_seen.map(|at| (now - at).max(0.0)),
            "follow",
        ))
    });
    let known = match (from_info, from_follow) {
        (Some(info), Some(follow)) => Some(if follow.0 >= info.0 { follow } else { info }),
        (info, follow) => info.or(follow),
    };
    let Some((theirs, their_time, seen, source)) = known else {
        return Ok(WalLag {
            newest_here,
            ..WalLag::default()
        });
    };
    let (segments, seconds) = match &newest_here {
        Some(ours) => {
            let segments = segments_between(&ours.name, &theirs, segment_size);
            let seconds = match (segments, their_time) {
                (Some(0), _) => Some(0.0),
                _ if ours.name >= theirs => Some(0.0),
                (_, Some(time)) => Some((time - ours.time).max(0.0)),
                _ => None,
            };
            (segments, seconds)
        }
        None => (None, None),
    };
    Ok(WalLag {
        primary_newest: Some(theirs),
        source: Some(source),
        primary_seen_seconds: seen,
        newest_here,
        segments,
        seconds,
    })
}

/// A backup or WAL and its age.
#[derive(Debug, Clone, Serialize)]
pub struct Aged {
    pub name: String,
    pub age_seconds: Option<f64>,
}

/// What the last `cron` run did for a server (the state file `cron` writes).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LastCron {
    /// When it finished, seconds since the epoch.
    pub finished: f64,
    pub duration_seconds: f64,
    pub ok: bool,
    pub backups_synced: u64,
    pub wals_listed: u64,
    pub errors: Vec<String>,
}

fn state_path(server: &ServerConfig) -> PathBuf {
    server.backup_directory().join("barsync-cron.json")
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Records what a `cron` run did for its server (atomically; a failure to write is returned,
/// and only costs `status` its last-run line).
pub fn record_cron(
    server: &ServerConfig,
    run: &ServerCron,
    duration_seconds: f64,
) -> Result<(), PassiveError> {
    let mut errors: Vec<String> = run.error.iter().cloned().collect();
    errors.extend(
        run.backups
            .iter()
            .filter_map(|(_, r)| r.as_ref().err().map(|e| e.message.clone())),
    );
    errors.extend(
        run.parents
            .iter()
            .filter_map(|(_, r)| r.as_ref().err().cloned()),
    );
    if let Some(Err(error)) = &run.wals {
        errors.push(error.message.clone());
    }
    let record = LastCron {
        finished: now(),
        duration_seconds,
        ok: !run.failed(),
        backups_synced: run
            .backups
            .iter()
            .filter(|(_, r)| matches!(r, Ok(super::BackupOutcome::Synced { .. })))
            .count() as u64,
        wals_listed: match &run.wals {
            Some(Ok(outcome)) => outcome.listed,
            _ => 0,
        },
        errors,
    };
    let path = state_path(server);
    let directory = server.backup_directory();
    std::fs::create_dir_all(&directory).map_err(PassiveError::io(&directory))?;
    let text = serde_json::to_vec_pretty(&record).expect("plain values serialize");
    crate::fsutil::atomic_write(&path, &text).map_err(PassiveError::io(&path))
}

/// The WAL segment size of this node's newest DONE backup, else PostgreSQL's default.
pub fn local_segment_size(server: &ServerConfig) -> u64 {
    let backups = load_backups(server).unwrap_or_default();
    backups
        .iter()
        .filter(|e| e.info.status().ok() == Some(BackupStatus::Done))
        .max_by(|a, b| a.info.backup_id().cmp(b.info.backup_id()))
        .and_then(|e| e.info.int("xlog_segment_size").ok().flatten())
        .and_then(|size| u64::try_from(size).ok())
        .filter(|size| size.is_power_of_two() && *size >= 1 << 20)
        .unwrap_or(DEFAULT_SEGMENT_SIZE)
}

/// The state of `server` on this node.
pub fn server_status(server: &ServerConfig) -> Result<ServerStatus, PassiveError> {
    let now = now();
    let backups = load_backups(server)?;
    let count = |status: BackupStatus| {
        backups
            .iter()
            .filter(|e| e.info.status().ok() == Some(status))
            .count() as u64
    };
    let newest_done = backups
        .iter()
        .filter(|e| e.info.status().ok() == Some(BackupStatus::Done))
        .max_by(|a, b| a.info.backup_id().cmp(b.info.backup_id()));
    let segment_size = newest_done
        .and_then(|e| e.info.int("xlog_segment_size").ok().flatten())
        .and_then(|size| u64::try_from(size).ok())
        .filter(|size| size.is_power_of_two() && *size >= 1 << 20)
        .unwrap_or(DEFAULT_SEGMENT_SIZE);
    let last_backup = newest_done.map(|entry| Aged {
        name: entry.info.backup_id().to_owned(),
        age_seconds: entry
            .info
            .time("end_time")
            .ok()
            .flatten()
            .map(|t| now - t.unix_seconds() as f64),
    });
    let lag = wal_lag(server, segment_size)?;
    let last_cron = std::fs::read(state_path(server))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    Ok(ServerStatus {
        server: server.name().to_owned(),
        last_backup,
        backups_done: count(BackupStatus::Done),
        backups_syncing: count(BackupStatus::Syncing),
        backups_failed: count(BackupStatus::Failed),
        primary_info_age_seconds: crate::fsutil::age_seconds(&server.primary_info_path()),
        primary_newest_wal: lag.primary_newest.clone(),
        primary_newest_seen_seconds: lag.primary_seen_seconds,
        newest_wal: lag.newest_here.as_ref().map(|wal| Aged {
            name: wal.name.clone(),
            age_seconds: Some(now - wal.time),
        }),
        wal_lag_segments: lag.segments,
        wal_lag_seconds: lag.seconds,
        follow: follow_status(server, now),
        last_cron,
        disk_bytes: disk_bytes(&[server.basebackups_directory(), server.wals_directory()]),
    })
}

/// Segments from WAL `ours` up to WAL `theirs` (0 when `ours` is as new or newer); `None`
/// when either is not a segment name or they are on different timelines.
pub fn segments_between(ours: &str, theirs: &str, segment_size: u64) -> Option<u64> {
    let position = |name: &str| match WalName::parse(name).ok()? {
        WalName::Segment {
            timeline,
            log,
            segment,
        }
        | WalName::Partial {
            timeline,
            log,
            segment,
        }
        | WalName::BackupLabel {
            timeline,
            log,
            segment,
            ..
        } => Some((
            timeline,
            u64::from(log) * (0x1_0000_0000 / segment_size) + u64::from(segment),
        )),
        WalName::History { .. } => None,
    };
    let (our_timeline, ours) = position(ours)?;
    let (their_timeline, theirs) = position(theirs)?;
    (our_timeline == their_timeline).then(|| theirs.saturating_sub(ours))
}

/// Bytes of the regular files below `roots`, each inode once (backups share files by hard
/// links under `reuse_backup = link`).
fn disk_bytes(roots: &[PathBuf]) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let mut pending: Vec<PathBuf> = roots.to_vec();
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                pending.push(entry.path());
            } else if meta.is_file() && seen.insert((meta.dev(), meta.ino())) {
                total += meta.len();
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::segments_between;

    #[test]
    fn segments_count_across_log_files() {
        let mib16 = 16 << 20;
        assert_eq!(
            segments_between(
                "000000010000000000000003",
                "000000010000000000000007",
                mib16
            ),
            Some(4)
        );
        assert_eq!(
            segments_between(
                "0000000100000000000000FF",
                "000000010000000100000001",
                mib16
            ),
            Some(2)
        );
        assert_eq!(
            segments_between(
                "000000010000000000000009",
                "000000010000000000000007",
                mib16
            ),
            Some(0)
        );
        assert_eq!(
            segments_between(
                "000000010000000000000003",
                "000000020000000000000007",
                mib16
            ),
            None
        );
        // 1 GiB segments: 4 per log file.
        assert_eq!(
            segments_between(
                "000000010000000000000003",
                "000000010000000100000000",
                1 << 30
            ),
            Some(1)
        );
    }
}
