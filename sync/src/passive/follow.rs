//! `follow SERVER`: ships each WAL to this node as soon as the primary's Barman has archived
//! it, instead of once per cron run.
//!
//! It owns the follower's loop and its state file, `<backup_directory>/barsync-follow.json`
//! (read by `status` and `check`; Barman ignores it). One follower per server, under barsync's
//! own `.<S>-barsync-follow.lock`.
//!
//! How: at start, `sync-info` once (the primary's directories, compression and backups, saved
//! as `primary.info`) and a WAL sync exactly as `cron`'s, which fills any gap; then one session
//! to the primary, on which the follower reads the primary's xlog db from the last position
//! synced (`sync-wals.info`). Barman writes a WAL into `wals/` before it appends its line, so
//! a new line means the file is there. With a barsync on the primary that knows `Watch`, the
//! primary waits on the file (inotify, else polling) and answers with the lines appended;
//! otherwise (an older barsync, SFTP) the follower looks at the file every poll interval and
//! fetches it by delta when it changed. New lines are shipped in name order, a few at a time,
//! through the same rules, copy and xlog db append as `sync-wals` ([`mod@super::sync_wals`]), under
//! Barman's WAL sync lock taken per batch, so `cron`, Barman and `follow` run side by side and
//! no WAL is ever listed twice. After each batch, `sync-wals.info` names its last line.
//!
//! A cut session is reopened with a growing pause (1 s doubling to `max_backoff`); the lines
//! appended meanwhile are read from the same position, so the gap is shipped first, in order.
//! A rewritten xlog db (Barman removes the lines of deleted WALs) is noticed because the line
//! at the last position is no longer the last WAL synced; it is then read from the start, and
//! only names after that WAL are shipped (Barman's sync-info rule). The stop flag is looked at
//! between batches and at least every `watch_timeout`: a batch in flight is finished first.
//!
//! With `partial`, the primary's streaming directory is served too, and its `*.partial` files
//! (the segment `receive-wal` is writing) are copied into [`partial_directory`] after each
//! answer, by range reads of their written part (never into `wals/`, never listed).

use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use transfer_engine::confine::Destination;
use transfer_engine::fetch::{FetchSession, SessionSource};
use transfer_engine::protocol::{FetchRequest, FetchTarget, WatchRequest, WriteMode};

use super::cron::sync_point;
use super::primary_sessions::{PrimarySessions, Session};
use super::sync_wals::{
    advance_sync_wals_info, copy_and_list, oldest_local_backup, read_sync_wals_info,
    remove_orphaned_temporary_files, segment_size, select_from, sync_wals_locked, PrimaryWals,
    WalSelection,
};
use super::{Events, PassiveError, PassiveServer};
use crate::config::ServerConfig;
use crate::lock::{self, LockKind};
use crate::syncinfo::{fetch_primary_info, PrimaryInfo};
use crate::xlogdb::WalEntry;

/// How a follower runs.
#[derive(Debug, Clone)]
pub struct FollowOptions {
    /// How long the primary waits for a change before answering anyway (the follower then
    /// looks at its stop flag and asks again).
    pub watch_timeout: Duration,
    /// How often the primary's xlog db is looked at when the primary cannot watch it.
    pub poll_interval: Duration,
    /// The longest pause between two attempts to reconnect.
    pub max_backoff: Duration,
    /// WALs shipped per batch (one lock, one xlog db append, one `sync-wals.info`).
    pub batch: usize,
    /// Also keep a copy of the primary's in-progress streaming WAL (`streaming/*.partial`) in
    /// [`partial_directory`], never in `wals/`.
    pub partial: bool,
}

impl Default for FollowOptions {
    fn default() -> Self {
        FollowOptions {
            watch_timeout: Duration::from_secs(2),
            poll_interval: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            batch: 8,
            partial: false,
        }
    }
}

/// What a follower did before it stopped.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FollowSummary {
    /// WALs shipped (copied and listed, or found already listed).
    pub shipped: u64,
    /// Sessions opened after the first.
    pub reconnects: u64,
}

/// The follower's state file, for `status` and `check`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FollowState {
    /// The follower's process.
    pub pid: u32,
    /// When this was written, seconds since the epoch (at least every
    /// [`FollowState::HEARTBEAT`] while the follower runs).
    pub updated: f64,
    /// Whether a session to the primary is open.
    pub connected: bool,
    /// How the primary's xlog db is followed: `watch` (the primary waits on it), `poll`.
    pub mode: Option<String>,
    /// The newest WAL name in the primary's xlog db as last read, and its archival time.
    pub primary_newest: Option<String>,
    pub primary_newest_time: Option<f64>,
    /// When the primary's xlog db was last read.
    pub primary_seen: Option<f64>,
    /// The archival time of the oldest WAL the primary lists that is not shipped yet; `None`
    /// when every WAL read is shipped.
    pub pending_since: Option<f64>,
    /// The last WAL shipped, and when.
    pub shipped_newest: Option<String>,
    pub shipped_at: Option<f64>,
    /// WALs shipped by this process.
    pub shipped: u64,
    /// Why the last session ended or the last batch failed.
    pub last_error: Option<String>,
    /// With `--partial`: the newest `.partial` copied, how many of its bytes are the
    /// primary's data, and when it was last brought up to date.
    pub partial_newest: Option<String>,
    pub partial_bytes: Option<u64>,
    pub partial_at: Option<f64>,
}

impl FollowState {
    /// How often a running follower rewrites its state file when nothing happens.
    pub const HEARTBEAT: Duration = Duration::from_secs(30);
}

/// `<backup_directory>/barsync-follow.json`.
pub fn state_path(server: &ServerConfig) -> PathBuf {
    server.backup_directory().join("barsync-follow.json")
}

/// Where `follow --partial` keeps its copies of the primary's `*.partial` files:
/// `<backup_directory>/barsync-partial/` (Barman never looks there, and they never reach
/// `wals/`).
pub fn partial_directory(server: &ServerConfig) -> PathBuf {
    server.backup_directory().join("barsync-partial")
}

/// The state file a follower of `server` left, if any (running or not: see
/// [`follower_running`]).
pub fn read_state(server: &ServerConfig) -> Option<FollowState> {
    let bytes = std::fs::read(state_path(server)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The process that follows `server` now, if one does (it holds the follow lock).
pub fn follower_running(server: &ServerConfig) -> Option<u32> {
    let path = server
        .lock_directory()
        .join(LockKind::Follow.file_name(server.name()));
    lock::holder(&path).map(|holder| holder.pid)
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Why one connected spell of the follower ended.
enum Interrupted {
    /// The session broke, or a batch failed: reconnect after a pause.
    Failed(PassiveError),
    /// Nothing can be shipped yet (no local backup, no WAL sync so far): try again later.
    NotReady(String),
}

impl From<PassiveError> for Interrupted {
    fn from(error: PassiveError) -> Self {
        Interrupted::Failed(error)
    }
}

/// Follows `passive` until `stop` is set; `Err` only when it cannot start at all (another
/// follower holds the lock).
pub fn follow(
    passive: &PassiveServer<'_>,
    options: &FollowOptions,
    stop: &AtomicBool,
) -> Result<FollowSummary, PassiveError> {
    let (server, events) = (passive.config(), passive.events());
    let name = server.name();
    let _follow_lock = lock::acquire(&server.lock_directory(), name, &LockKind::Follow, false)
        .map_err(|error| match error {
            lock::LockError::Busy(_) => PassiveError::Busy(format!(
                "Another barsync follow is already running for server {name}{}",
                follower_running(server)
                    .map(|pid| format!(" (process {pid})"))
                    .unwrap_or_default()
            )),
            other => other.into(),
        })?;
    let mut follower = Follower {
        passive,
        server,
        options,
        stop,
        events,
        primary: None,
        cursor: None,
        state: FollowState {
            pid: std::process::id(),
            ..FollowState::default()
        },
        last_write: None,
        summary: FollowSummary::default(),
        opened: 0,
    };
    let mut backoff = Duration::from_secs(1);
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        let shipped_before = follower.summary.shipped;
        let outcome = follower.connected_spell();
        follower.state.connected = false;
        let pause = match outcome {
            Ok(()) => break,
            Err(Interrupted::Failed(error)) => {
                let message = error.to_string();
                events.warning(&format!(
                    "follow: server {name}: {message}; reconnecting in {} s",
                    backoff.as_secs()
                ));
                follower.state.last_error = Some(message);
                backoff
            }
            Err(Interrupted::NotReady(message)) => {
                events.warning(&format!(
                    "follow: server {name}: {message}; trying again in {} s",
                    backoff.as_secs()
                ));
                follower.state.last_error = Some(message);
                backoff
            }
        };
        follower.write_state(true);
        let worked = follower.summary.shipped > shipped_before
            || started.elapsed() > Duration::from_secs(10);
        backoff = if worked {
            Duration::from_secs(1)
        } else {
            (backoff * 2).min(options.max_backoff.max(Duration::from_secs(1)))
        };
        sleep_unless_stopped(pause, stop);
    }
    follower.state.connected = false;
    follower.write_state(true);
    events.info(&format!(
        "follow: server {name}: stopped ({} WALs shipped)",
        follower.summary.shipped
    ));
    Ok(follower.summary)
}

/// Sleeps `duration`, waking early when `stop` is set.
fn sleep_unless_stopped(duration: Duration, stop: &AtomicBool) {
    let end = Instant::now() + duration;
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now >= end {
            return;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(100)));
    }
}

/// This node's copy of one of the primary's `*.partial` files.
#[derive(Debug, Clone)]
struct PartialCopy {
    /// The primary's file (inode) the copy is of.
    id: u64,
    /// Bytes of the copy that hold the primary's data (the rest is padding).
    written: u64,
}

/// Where the follower is in the primary's xlog db.
#[derive(Debug, Clone)]
struct Cursor {
    /// The last line read and dealt with: its WAL name and offset (Barman's `last_name` and
    /// `last_position`).
    name: String,
    position: u64,
    /// The file's length and identity when last read (what the primary compares with).
    len: u64,
    id: u64,
}

/// The primary's xlog db from some offset, as read once.
struct Snapshot {
    offset: u64,
    bytes: Vec<u8>,
    len: u64,
    id: u64,
}

struct Follower<'a> {
    passive: &'a PassiveServer<'a>,
    server: &'a ServerConfig,
    options: &'a FollowOptions,
    stop: &'a AtomicBool,
    events: &'a dyn Events,
    /// The primary's sync-info answer from the start (directories, compression, backups).
    primary: Option<PrimaryInfo>,
    cursor: Option<Cursor>,
    state: FollowState,
    last_write: Option<Instant>,
    summary: FollowSummary,
    opened: u64,
}

impl Follower<'_> {
    fn name(&self) -> &str {
        self.server.name()
    }

    /// Writes the state file now (`force`) or when the heartbeat is due. A failure to write
    /// only costs `status` its follow line: warned, not fatal.
    fn write_state(&mut self, force: bool) {
        let due = self
            .last_write
            .is_none_or(|at| at.elapsed() >= FollowState::HEARTBEAT);
        if !force && !due {
            return;
        }
        self.state.updated = now();
        let path = state_path(self.server);
        let text = serde_json::to_vec_pretty(&self.state).expect("plain values serialize");
        if let Err(error) = crate::fsutil::atomic_write(&path, &text) {
            self.events
                .warning(&format!("cannot write {}: {error}", path.display()));
        }
        self.last_write = Some(Instant::now());
    }

    /// The first start: sync-info once, then a WAL sync as `cron`'s (filling the gap), then
    /// the position to follow from, `sync-wals.info`.
    fn start(&mut self) -> Result<(), Interrupted> {
        let server = self.server;
        let events = self.events;
        let passive = self.passive.options();
        let point = sync_point(server, events);
        let mut warn = |message: String| events.warning(&message);
        let primary = fetch_primary_info(
            server,
            &passive.config_file,
            passive.remote_program,
            &point,
            &passive.sync_info_limits,
            &mut warn,
        )
        .map_err(|e| {
            PassiveError::Sync(format!("Failed to retrieve the primary node status: {e}"))
        })?
        .info;
        let outcome = {
            let _wal_lock = lock::acquire(
                &server.lock_directory(),
                server.name(),
                &LockKind::SyncWal,
                true,
            )
            .map_err(PassiveError::from)?;
            sync_wals_locked(self.passive, &primary)?
        };
        self.summary.shipped += outcome.listed;
        let Some((name, position)) = read_sync_wals_info(server, events) else {
            return Err(Interrupted::NotReady(outcome.skipped.unwrap_or_else(
                || "no WAL synchronised yet (run `barsync cron` first)".to_owned(),
            )));
        };
        self.events.info(&format!(
            "follow: server {}: following the primary's xlog db after {name} (position {position})",
            server.name()
        ));
        self.cursor = Some(Cursor {
            name,
            position,
            len: 0,
            id: 0,
        });
        self.primary = Some(primary);
        Ok(())
    }

    /// One session: (the start, the first time), then read and ship until stopped or broken.
    fn connected_spell(&mut self) -> Result<(), Interrupted> {
        if self.primary.is_none() || self.cursor.is_none() {
            self.start()?;
        }
        let primary = self.primary.clone().expect("started");
        let mut sessions = self.passive.primary_sessions(&primary)?;
        let streaming = primary
            .config
            .streaming_wals_directory
            .clone()
            .filter(|_| self.options.partial);
        if let Some(directory) = &streaming {
            sessions = sessions.with_root(directory.clone());
        } else if self.options.partial {
            self.events.warning(&format!(
                "follow: server {}: the primary's sync-info names no streaming_wals_directory: no partial WAL is copied",
                self.name()
            ));
        }
        let session = sessions.open(self.events)?;
        if self.opened > 0 {
            self.summary.reconnects += 1;
        }
        self.opened += 1;
        // Anything a killed run left in the WAL directories, under the WAL sync lock.
        {
            let _wal_lock = lock::acquire(
                &self.server.lock_directory(),
                self.name(),
                &LockKind::SyncWal,
                true,
            )
            .map_err(PassiveError::from)?;
            remove_orphaned_temporary_files(&self.server.wals_directory(), self.events);
        }
        let mut session = Some(session);
        let result = self.follow_session(&sessions, &primary, &mut session, streaming.as_deref());
        if let Some(session) = session {
            let _ = session.close();
        }
        self.passive.close_sessions();
        result
    }

    fn follow_session(
        &mut self,
        sessions: &PrimarySessions,
        primary: &PrimaryInfo,
        session: &mut Option<Session>,
        streaming: Option<&str>,
    ) -> Result<(), Interrupted> {
        let xlogdb = primary_xlogdb_path(self.server, primary);
        let watching = session.as_ref().is_some_and(Session::can_watch);
        let streaming = match streaming {
            Some(_) if !watching => {
                self.events.warning(&format!(
                    "follow: server {}: --partial needs barsync on the primary (range reads of a file being written); no partial WAL is copied",
                    self.name()
                ));
                None
            }
            other => other,
        };
        let mut copies: std::collections::BTreeMap<String, PartialCopy> = Default::default();
        let partial_limit = crate::wal::archived_size_limit(segment_size(primary));
        let mode = if watching { "watch" } else { "poll" };
        let peer = session
            .as_ref()
            .map(|s| s.peer().to_owned())
            .unwrap_or_default();
        self.events.info(&format!(
            "follow: server {}: connected to {peer} ({})",
            self.name(),
            if watching {
                "the primary watches its xlog db"
            } else {
                "looking at the primary's xlog db every poll interval"
            }
        ));
        self.state.connected = true;
        self.state.mode = Some(mode.to_owned());
        self.state.last_error = None;
        self.write_state(true);
        let mut poll_seen: Option<(u64, i64)> = None;
        let cache_path = self
            .server
            .backup_directory()
            .join("barsync-primary-xlog.db");
        while !self.stop.load(Ordering::SeqCst) {
            let cursor = self.cursor.clone().expect("started");
            if let Some(directory) = streaming {
                self.ship_partials(session, directory, &mut copies, partial_limit)?;
            }
            let snapshot = if watching {
                self.watch_once(session, &xlogdb, &cursor, cursor.position)?
            } else {
                self.poll_once(
                    session,
                    &xlogdb,
                    &cache_path,
                    &mut poll_seen,
                    cursor.position,
                )?
            };
            let Some(snapshot) = snapshot else {
                self.write_state(false);
                continue;
            };
            let snapshot = if starts_with_line(&snapshot.bytes, &cursor.name) {
                snapshot
            } else {
                self.events.info(&format!(
                    "follow: server {}: the primary's xlog db no longer has {} at position {}; reading it from the start",
                    self.name(),
                    cursor.name,
                    cursor.position
                ));
                let again = if watching {
                    self.read_whole(session, &xlogdb, 0)?
                } else {
                    self.poll_once(session, &xlogdb, &cache_path, &mut None, 0)?
                };
                match again {
                    Some(snapshot) => snapshot,
                    None => continue,
                }
            };
            self.ship_snapshot(sessions, primary, session, snapshot)?;
        }
        Ok(())
    }

    /// One `Watch`: `None` when the primary answered at the timeout with nothing new.
    fn watch_once(
        &mut self,
        session: &mut Option<Session>,
        xlogdb: &str,
        cursor: &Cursor,
        offset: u64,
    ) -> Result<Option<Snapshot>, Interrupted> {
        let request = WatchRequest {
            since_len: cursor.len,
            since_id: cursor.id,
            offset,
            max_bytes: transfer_engine::protocol::watch::MAX_BYTES,
            timeout: if self.options.partial {
                // The partial WAL is brought up to date after each answer.
                self.options.watch_timeout.min(Duration::from_secs(1))
            } else {
                self.options.watch_timeout
            },
        };
        let watched = self.watch_call(session, xlogdb, &request)?;
        if !watched.changed {
            return Ok(None);
        }
        self.state.primary_seen = Some(now());
        self.read_rest(session, xlogdb, offset, watched).map(Some)
    }

    /// The file from `offset`, however long (in answers of at most the frame's size).
    fn read_whole(
        &mut self,
        session: &mut Option<Session>,
        xlogdb: &str,
        offset: u64,
    ) -> Result<Option<Snapshot>, Interrupted> {
        let watched = self.watch_call(
            session,
            xlogdb,
            &WatchRequest {
                since_len: u64::MAX,
                since_id: 0,
                offset,
                max_bytes: transfer_engine::protocol::watch::MAX_BYTES,
                timeout: Duration::ZERO,
            },
        )?;
        self.read_rest(session, xlogdb, offset, watched).map(Some)
    }

    /// The file from `offset` as the first answer `watched` began it, completed up to the
    /// length it was read at.
    fn read_rest(
        &mut self,
        session: &mut Option<Session>,
        xlogdb: &str,
        offset: u64,
        watched: transfer_engine::protocol::Watched,
    ) -> Result<Snapshot, Interrupted> {
        let mut snapshot = Snapshot {
            offset,
            len: watched.len,
            id: watched.id,
            bytes: watched.bytes,
        };
        while snapshot.offset + (snapshot.bytes.len() as u64) < snapshot.len {
            let at = snapshot.offset + snapshot.bytes.len() as u64;
            let more = self.watch_call(
                session,
                xlogdb,
                &WatchRequest {
                    since_len: u64::MAX,
                    since_id: 0,
                    offset: at,
                    max_bytes: transfer_engine::protocol::watch::MAX_BYTES,
                    timeout: Duration::ZERO,
                },
            )?;
            if more.bytes.is_empty() || more.id != snapshot.id {
                break; // shrunk or replaced meanwhile: the next round sees it
            }
            snapshot.bytes.extend_from_slice(&more.bytes);
        }
        Ok(snapshot)
    }

    fn watch_call(
        &mut self,
        session: &mut Option<Session>,
        xlogdb: &str,
        request: &WatchRequest,
    ) -> Result<transfer_engine::protocol::Watched, Interrupted> {
        let session = session
            .as_mut()
            .ok_or_else(|| PassiveError::Sync("no session".into()))?;
        match session.watch(xlogdb, request) {
            Some(Ok(Ok(watched))) => Ok(watched),
            Some(Ok(Err(refused))) => {
                Err(PassiveError::Sync(format!("reading the primary's xlog db: {refused}")).into())
            }
            Some(Err(broken)) => Err(PassiveError::Sync(format!(
                "connection to the primary failed: {broken}"
            ))
            .into()),
            None => Err(PassiveError::Sync("the session cannot watch".into()).into()),
        }
    }

    /// The fallback: lists the primary's xlog db; when its size or mtime moved (or `seen` is
    /// `None`), fetches it by delta into a local copy and returns its bytes from `offset`.
    /// Waits the poll interval first when nothing changed.
    fn poll_once(
        &mut self,
        session: &mut Option<Session>,
        xlogdb: &str,
        cache_path: &std::path::Path,
        seen: &mut Option<(u64, i64)>,
        offset: u64,
    ) -> Result<Option<Snapshot>, Interrupted> {
        let current = {
            let session = session
                .as_mut()
                .ok_or_else(|| PassiveError::Sync("no session".into()))?;
            let peer = session.peer().to_owned();
            let listed = session
                .source()
                .list(std::path::Path::new(xlogdb), false)
                .map_err(|e| PassiveError::Sync(format!("{peer}: {e}")))?
                .map_err(|refused| {
                    PassiveError::Sync(format!("reading the primary's xlog db: {refused}"))
                })?;
            let entry = listed.first().ok_or_else(|| {
                PassiveError::Sync(format!("the primary's xlog db {xlogdb} is not a file"))
            })?;
            (entry.size, entry.mtime.0)
        };
        if *seen == Some(current) {
            sleep_unless_stopped(self.options.poll_interval, self.stop);
            return Ok(None);
        }
        let destination =
            Destination::trusted(cache_path).map_err(|e| PassiveError::Sync(e.to_string()))?;
        let request = FetchRequest {
            remote_path: xlogdb.into(),
            destination,
            basis: cache_path.exists().then(|| cache_path.to_path_buf()),
            max_len: None,
            partial: None,
            target: FetchTarget::WholeFile(WriteMode::NewFile),
        };
        let outcomes = {
            let open = session
                .as_mut()
                .ok_or_else(|| PassiveError::Sync("no session".into()))?;
            open.source()
                .fetch(std::slice::from_ref(&request), &mut |_| {})
                .map_err(|e| PassiveError::Sync(format!("fetching the primary's xlog db: {e}")))?
        };
        if let Some(Err(error)) = outcomes.first().map(|o| &o.result) {
            return Err(
                PassiveError::Sync(format!("fetching the primary's xlog db: {error}")).into(),
            );
        }
        *seen = Some(current);
        self.state.primary_seen = Some(now());
        let mut bytes = Vec::new();
        std::fs::File::open(cache_path)
            .and_then(|mut file| file.read_to_end(&mut bytes))
            .map_err(PassiveError::io(cache_path))?;
        let len = bytes.len() as u64;
        let start = (offset as usize).min(bytes.len());
        Ok(Some(Snapshot {
            offset,
            bytes: bytes.split_off(start),
            len,
            id: 0,
        }))
    }

    /// Parses the complete lines of `snapshot` after the cursor's line and ships the new WALs
    /// in batches, moving the cursor (and `sync-wals.info`) after each.
    fn ship_snapshot(
        &mut self,
        sessions: &PrimarySessions,
        primary: &PrimaryInfo,
        session: &mut Option<Session>,
        snapshot: Snapshot,
    ) -> Result<(), Interrupted> {
        let cursor = self.cursor.clone().expect("started");
        let filter = cursor.name.clone();
        let mut lines: Vec<(WalEntry, u64)> = Vec::new();
        let mut at = 0usize;
        while let Some(end) = snapshot.bytes[at..].iter().position(|&b| b == b'\n') {
            let text = &snapshot.bytes[at..at + end + 1];
            let offset = snapshot.offset + at as u64;
            at += end + 1;
            if offset == cursor.position && starts_with_line(text, &cursor.name) {
                continue; // the line already dealt with
            }
            let text = String::from_utf8_lossy(text);
            let entry = WalEntry::parse_line(&text).ok_or_else(|| {
                PassiveError::Sync(format!(
                    "cannot parse the line at position {offset} of the primary's xlog db: {:?}",
                    text.trim_end()
                ))
            })?;
            lines.push((entry, offset));
        }
        if let Some((newest, _)) = lines.iter().max_by(|a, b| a.0.name.cmp(&b.0.name)) {
            if self
                .state
                .primary_newest
                .as_ref()
                .is_none_or(|known| newest.name > *known)
            {
                self.state.primary_newest = Some(newest.name.clone());
                self.state.primary_newest_time = Some(newest.time);
            }
        }
        self.state.pending_since = lines
            .iter()
            .find(|(entry, _)| entry.name > filter)
            .map(|(entry, _)| entry.time);
        let complete_len = snapshot.offset + at as u64;
        let mut start = 0;
        while start < lines.len() {
            if self.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            // A batch: up to `batch` lines to ship (the lines in between go with them).
            let mut end = start;
            let mut count = 0;
            while end < lines.len() && count < self.options.batch.max(1) {
                if lines[end].0.name > filter {
                    count += 1;
                }
                end += 1;
            }
            let batch = &lines[start..end];
            let (last_entry, last_offset) = batch.last().expect("not empty");
            let entries: Vec<WalEntry> = batch
                .iter()
                .filter(|(entry, _)| entry.name > filter)
                .map(|(entry, _)| entry.clone())
                .collect();
            if !entries.is_empty() {
                self.ship_batch(sessions, primary, session, &filter, &entries)?;
            }
            advance_sync_wals_info(self.server, &last_entry.name, *last_offset, self.events)?;
            let done_len = if end == lines.len() { snapshot.len } else { 0 };
            self.cursor = Some(Cursor {
                name: last_entry.name.clone(),
                position: *last_offset,
                len: done_len,
                id: snapshot.id,
            });
            self.state.pending_since = lines[end..]
                .iter()
                .find(|(entry, _)| entry.name > filter)
                .map(|(entry, _)| entry.time);
            self.write_state(true);
            start = end;
        }
        if lines.is_empty() {
            // Nothing complete after the cursor: remember the length, to wait for a change.
            if let Some(cursor) = self.cursor.as_mut() {
                cursor.len = snapshot.len;
                cursor.id = snapshot.id;
            }
        } else if complete_len < snapshot.len {
            // A line being written: its end makes the file change again.
            if let Some(cursor) = self.cursor.as_mut() {
                cursor.len = snapshot.len;
            }
        }
        Ok(())
    }

    /// Brings this node's copies of the primary's `*.partial` files in `directory` up to date
    /// (see [`PartialCopy`]), then removes the copies of partial segments the primary no
    /// longer has once this node's xlog db lists the whole segment.
    fn ship_partials(
        &mut self,
        session: &mut Option<Session>,
        directory: &str,
        copies: &mut std::collections::BTreeMap<String, PartialCopy>,
        limit: u64,
    ) -> Result<(), Interrupted> {
        let listed = {
            let open = session
                .as_mut()
                .ok_or_else(|| PassiveError::Sync("no session".into()))?;
            let peer = open.peer().to_owned();
            open.source()
                .list(std::path::Path::new(directory), false)
                .map_err(|e| PassiveError::Sync(format!("{peer}: {e}")))?
        };
        // No streaming directory (yet): nothing to copy.
        let Ok(entries) = listed else {
            return Ok(());
        };
        let local = partial_directory(self.server);
        super::create_real_directory(&local).map_err(PassiveError::Sync)?;
        let mut on_primary = Vec::new();
        for entry in entries {
            let name = entry.path.as_path().to_string_lossy().into_owned();
            let is_partial = matches!(
                crate::wal::WalName::parse(&name),
                Ok(crate::wal::WalName::Partial { .. })
            );
            if entry.kind != transfer_engine::protocol::EntryKind::File
                || !is_partial
                || entry.size > limit
            {
                continue;
            }
            on_primary.push(name.clone());
            let remote = format!("{}/{name}", directory.trim_end_matches('/'));
            let copy = copies
                .remove(&name)
                .unwrap_or(PartialCopy { id: 0, written: 0 });
            let copy = self.refresh_partial(session, &remote, &local.join(&name), copy)?;
            if self
                .state
                .partial_newest
                .as_ref()
                .is_none_or(|newest| name >= *newest)
            {
                let moved = self.state.partial_newest.as_ref() != Some(&name)
                    || self.state.partial_bytes != Some(copy.written);
                self.state.partial_newest = Some(name.clone());
                self.state.partial_bytes = Some(copy.written);
                self.state.partial_at = Some(now());
                // `status` tells how fresh the copy is: written when it moved.
                self.write_state(moved);
            }
            copies.insert(name, copy);
        }
        copies.retain(|name, _| on_primary.contains(name));
        let listed_here: std::collections::HashSet<String> =
            crate::xlogdb::read_entries(self.server)
                .map(|entries| entries.into_iter().map(|e| e.name).collect())
                .unwrap_or_default();
        if let Ok(files) = std::fs::read_dir(&local) {
            for file in files.flatten() {
                let name = file.file_name().to_string_lossy().into_owned();
                let done = name
                    .strip_suffix(".partial")
                    .is_some_and(|segment| listed_here.contains(segment));
                if done && !on_primary.contains(&name) {
                    let _ = std::fs::remove_file(file.path());
                }
            }
        }
        Ok(())
    }

    /// Reads the primary's partial file `remote` from where `copy` has it (the start of its
    /// last page: the primary's writer may have completed it) until its written part ends (a
    /// page of zeros: `pg_receivewal` pads the file to the segment size first), writes that
    /// into `path` and fsyncs it. A new file, or one the primary replaced (another inode), is
    /// read from the start into a temporary file renamed into place.
    fn refresh_partial(
        &mut self,
        session: &mut Option<Session>,
        remote: &str,
        path: &std::path::Path,
        mut copy: PartialCopy,
    ) -> Result<PartialCopy, Interrupted> {
        use std::os::unix::fs::FileExt;
        const PAGE: u64 = 8192;
        let mut at = copy.written / PAGE * PAGE;
        let mut file: Option<std::fs::File> = None;
        let mut temporary: Option<PathBuf> = None;
        loop {
            let read = self.watch_call(
                session,
                remote,
                &WatchRequest {
                    since_len: u64::MAX,
                    since_id: 0,
                    offset: at,
                    max_bytes: transfer_engine::protocol::watch::MAX_BYTES,
                    timeout: Duration::ZERO,
                },
            )?;
            if file.is_none() {
                let fresh = read.id != copy.id || !path.exists();
                if fresh && at > 0 {
                    // Replaced on the primary, or gone here: from the start.
                    copy = PartialCopy {
                        id: read.id,
                        written: 0,
                    };
                    at = 0;
                    continue;
                }
                let opened = if fresh {
                    let name = path.file_name().expect("a file name").to_string_lossy();
                    let temp = path.with_file_name(format!(".{name}.barsync-new"));
                    let created = std::fs::File::create(&temp).map_err(PassiveError::io(&temp))?;
                    created.set_len(read.len).map_err(PassiveError::io(&temp))?;
                    temporary = Some(temp);
                    created
                } else {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(path)
                        .map_err(PassiveError::io(path))?
                };
                file = Some(opened);
                copy.id = read.id;
            }
            let out = file.as_ref().expect("opened above");
            let target = temporary.as_deref().unwrap_or(path);
            out.write_at(&read.bytes, at)
                .map_err(PassiveError::io(target))?;
            if let Some(last) = read.bytes.iter().rposition(|&b| b != 0) {
                copy.written = copy.written.max(at + last as u64 + 1);
            }
            let unwritten_page = read
                .bytes
                .chunks(PAGE as usize)
                .any(|page| page.len() == PAGE as usize && page.iter().all(|&b| b == 0));
            at += read.bytes.len() as u64;
            if read.bytes.is_empty() || unwritten_page || at >= read.len {
                break;
            }
        }
        let out = file.expect("opened in the loop");
        let target = temporary.clone().unwrap_or_else(|| path.to_path_buf());
        out.sync_all().map_err(PassiveError::io(&target))?;
        if let Some(temp) = temporary {
            std::fs::rename(&temp, path).map_err(PassiveError::io(path))?;
            let parent = path.parent().expect("in a directory");
            crate::fsutil::fsync_directory(parent).map_err(PassiveError::io(parent))?;
        }
        Ok(copy)
    }

    /// Ships `entries` under the WAL sync lock: Barman's rules, the copy and the xlog db
    /// append of `sync-wals`.
    fn ship_batch(
        &mut self,
        sessions: &PrimarySessions,
        primary: &PrimaryInfo,
        session: &mut Option<Session>,
        filter: &str,
        entries: &[WalEntry],
    ) -> Result<(), Interrupted> {
        let server = self.server;
        let started = Instant::now();
        let _wal_lock = lock::acquire(
            &server.lock_directory(),
            server.name(),
            &LockKind::SyncWal,
            true,
        )
        .map_err(PassiveError::from)?;
        // A `cron` or `sync-wals` may have synced some of them meanwhile (listed before its
        // state was written): those are not copied again.
        let state = read_sync_wals_info(server, self.events).map(|(name, _)| name);
        let last = match state {
            Some(state) if state.as_str() > filter => state,
            _ => filter.to_owned(),
        };
        let oldest = oldest_local_backup(server)?;
        let wals = PrimaryWals {
            compression: primary.config.compression.as_deref(),
            segment_size: segment_size(primary),
            wals: entries,
            require_segment: false,
        };
        let to_copy = match select_from(server, &wals, oldest.as_ref(), Some(&last))? {
            WalSelection::Copy(to_copy) => to_copy,
            WalSelection::Skip { message, warning } => {
                if warning {
                    return Err(Interrupted::NotReady(message));
                }
                return Ok(());
            }
        };
        if to_copy.is_empty() {
            return Ok(());
        }
        let shipped = copy_and_list(self.passive, sessions, session.take(), &to_copy);
        // The session went back to the cache of `sessions` (or broke): take it back for the watch.
        *session = sessions.take_parked();
        self.passive.close_sessions(); // sessions a long gap opened besides
        let shipped = shipped?;
        if session.is_none() {
            *session = Some(sessions.open(self.events)?);
        }
        let seconds = started.elapsed().as_secs_f64();
        for (wal, _) in &to_copy {
            self.events.info(&format!(
                "follow: server {}: WAL {} synced ({} bytes, {seconds:.2} s)",
                server.name(),
                wal.name,
                wal.size
            ));
        }
        self.summary.shipped += shipped.files;
        self.state.shipped += shipped.files;
        if let Some((newest, _)) = to_copy.last() {
            self.state.shipped_newest = Some(newest.name.clone());
            self.state.shipped_at = Some(now());
        }
        Ok(())
    }
}

/// Whether `bytes` starts with the xlog db line of WAL `name` (the name, then whitespace).
fn starts_with_line(bytes: &[u8], name: &str) -> bool {
    bytes.starts_with(name.as_bytes())
        && bytes
            .get(name.len())
            .is_some_and(|b| b.is_ascii_whitespace())
}

/// The primary's xlog db: `<SERVER>-xlog.db` in its WAL directory (Barman's default
/// `xlogdb_directory`; the sessions of a passive reach only its backup and WAL directories).
fn primary_xlogdb_path(server: &ServerConfig, primary: &PrimaryInfo) -> String {
    let name = primary.config.name.as_deref().unwrap_or(server.name());
    format!(
        "{}/{name}-xlog.db",
        primary.config.wals_directory.trim_end_matches('/')
    )
}
