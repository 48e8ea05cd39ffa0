//! Reaching the primary's files: sessions opened through `primary_ssh_command`.
//!
//! A session is `barsync serve --root <basebackups_directory> --root <wals_directory>` run on
//! the primary (paths from its sync-info), so the primary serves nothing outside its own
//! catalog. When barsync cannot run there (exit status 127), the sessions switch to SFTP for
//! the rest of their life, through the same ssh command (`ssh -s … sftp`, and libssh2 only
//! where the exec session would use it): whole files, verified by the primary's checksum tool.
//! Sessions parked in a [`SessionCache`] are checked before they are reused.
//! [`PrimarySessions`] is the engine's [`SessionSource`] for the passive node's copies.
//!
//! Files written through either never get the setuid or setgid bit (`drop_setid`): a backup
//! never needs them, and a primary must not be able to plant such a file on the passive.
//! `barsync copy` keeps modes as `rsync -p` does.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use barsync_transport::{choose_transport, ExitWaiter, StreamWriter};
use transfer_engine::copy::PullSource;
use transfer_engine::fetch::throttle::{Throttle, ThrottledReader};
use transfer_engine::fetch::{FetchEvents, FetchSession, SessionSource};
use transfer_engine::protocol::client::ClientOptions;
use transfer_engine::protocol::{Client, WatchRequest, Watched};
use transfer_engine::sftp::SftpSource;

use super::{PassiveError, PassiveOptions};
use crate::config::ServerConfig;
use crate::syncinfo::PrimaryInfo;

type RemoteClient = Client<Box<dyn Read + Send>, StreamWriter>;

/// Sessions kept open between the copies of one cron run (the backups, then the WALs): the
/// engine's [`fetch::SessionCache`](transfer_engine::fetch::SessionCache), keyed by everything
/// a session was opened with, and whether barsync turned out to be missing on the primary.
/// [`SessionCache::close_all`] ends them cleanly.
#[derive(Clone, Default, Debug)]
pub struct SessionCache {
    idle: transfer_engine::fetch::SessionCache<Session>,
    /// barsync turned out not to run on the primary: later sessions of the run go to SFTP
    /// straight away, and the operator is told once.
    no_barsync: Arc<AtomicBool>,
}

impl SessionCache {
    /// Closes every idle session; the errors of those that did not end cleanly.
    pub fn close_all(&self) -> Vec<String> {
        self.idle
            .drain()
            .into_iter()
            .filter_map(|session| session.close().err())
            .collect()
    }
}

/// How to open sessions to one server's primary.
pub struct PrimarySessions {
    server: String,
    ssh_command: String,
    remote_barsync: String,
    transport: barsync_transport::TransportPreference,
    roots: Vec<String>,
    compression: Option<i32>,
    /// Let sessions measure the link and lower the level on a fast one
    /// ([`ClientOptions::adapt_compression`]).
    adapt_compression: bool,
    throttle: Option<Arc<Throttle>>,
    use_sftp: AtomicBool,
    cache: SessionCache,
}

/// An open session with the primary.
pub enum Session {
    Barsync {
        client: Box<RemoteClient>,
        exit: ExitWaiter,
        peer: String,
        /// Traffic already reported by [`Session::take_traffic`].
        accounted: (u64, u64),
    },
    Sftp {
        source: Box<SftpSource>,
        peer: String,
    },
}

impl PrimarySessions {
    /// The sessions for passive `server`, whose primary described itself in `primary`;
    /// idle ones are parked in `cache` (see [`PassiveServer`](super::server::PassiveServer)).
    pub(crate) fn new(
        server: &ServerConfig,
        primary: &PrimaryInfo,
        options: &PassiveOptions,
        cache: SessionCache,
    ) -> Result<PrimarySessions, PassiveError> {
        let ssh_command = server
            .primary_ssh_command()
            .filter(|c| !c.trim().is_empty())
            .ok_or_else(|| {
                PassiveError::Sync(format!(
                    "Invalid primary_ssh_command in barman configuration for server {}",
                    server.name()
                ))
            })?;
        Ok(PrimarySessions {
            server: server.name().to_owned(),
            // A primary that stops answering ends the session instead of hanging the run.
            ssh_command: crate::ssh_liveness::with_liveness_of(ssh_command, options.liveness),
            remote_barsync: options.remote_barsync.clone(),
            transport: options.transport,
            roots: vec![
                primary.config.basebackups_directory.clone(),
                primary.config.wals_directory.clone(),
            ],
            // Barman's network_compression is rsync -z; literals are zstd-compressed always:
            // level 6 when it is on; else 3, or 1 on a link a session measured fast
            // (loopback, a fast LAN), where level 1 costs less than it sends more.
            compression: Some(if server.network_compression() { 6 } else { 3 }),
            adapt_compression: !server.network_compression(),
            throttle: server
                .bandwidth_limit()
                .filter(|&limit| limit > 0)
                .map(Throttle::from_kib_per_second),
            use_sftp: AtomicBool::new(
                options.force_sftp || cache.no_barsync.load(Ordering::Relaxed),
            ),
            cache,
        })
    }

    /// What identifies a session of these in a [`SessionCache`].
    fn cache_key(&self) -> String {
        format!(
            "{}\0{}\0{:?}\0{}\0{}",
            self.ssh_command,
            self.roots.join("\0"),
            self.compression,
            self.adapt_compression,
            self.use_sftp.load(Ordering::Relaxed)
        )
    }
}

impl SessionSource for PrimarySessions {
    type Session = Session;
    type Error = PassiveError;

    /// A session from the cache, if it holds an idle session that still answers. Each parked session is checked first ([`Session::check`], one round
    /// trip): when the primary's side died (killed, restarted, the link cut) while a session
    /// was parked, often at the same time as the sibling whose failure sent the caller here,
    /// that session is dead too, and handing it out would fail its next copy at once. Dead
    /// ones are closed and the next is tried; `None` tells the caller to open a new one.
    fn reuse(&self) -> Option<Session> {
        let key = self.cache_key();
        while let Some(mut session) = self.cache.idle.take(&key) {
            if session.check(&self.roots[0]).is_ok() {
                return Some(session);
            }
            // Already known broken: closing only reaps what is left of it.
            let _ = session.close();
        }
        None
    }

    /// Ends a copy's use of a session: parked in the cache for the next copy.
    fn release(&self, session: Session) -> Result<(), PassiveError> {
        self.cache.idle.park(self.cache_key(), session);
        Ok(())
    }

    /// Opens a session (SFTP once barsync turned out to be missing on the primary).
    fn open(&self, events: &dyn FetchEvents) -> Result<Session, PassiveError> {
        if !self.use_sftp.load(Ordering::Relaxed) {
            match self.open_barsync() {
                Ok(session) => return Ok(session),
                Err(OpenError::NoBarsync(detail)) => {
                    let told = self.cache.no_barsync.swap(true, Ordering::Relaxed);
                    if !self.use_sftp.swap(true, Ordering::Relaxed) && !told {
                        events.warning(&format!(
                            "`{}` cannot run on the primary of server {} ({detail}); copying whole files over SFTP",
                            self.remote_barsync, self.server
                        ));
                    }
                }
                Err(OpenError::Failed(error)) => return Err(error),
            }
        }
        self.open_sftp()
    }
}

impl PrimarySessions {
    /// The primary's directory holding backup `id`.
    pub fn backup_path(&self, id: &str) -> String {
        format!("{}/{id}", self.roots[0].trim_end_matches('/'))
    }

    /// A session this link parked in its cache, taken back without the round trip of
    /// [`SessionSource::reuse`]'s check: for a caller that handed it to a copy a moment ago.
    pub fn take_parked(&self) -> Option<Session> {
        self.cache.idle.take(&self.cache_key())
    }

    /// These sessions serve `root` too (`barsync serve --root`), e.g. the primary's streaming
    /// directory for `follow --partial`.
    pub fn with_root(mut self, root: String) -> PrimarySessions {
        if !self.roots.contains(&root) {
            self.roots.push(root);
        }
        self
    }

    /// The primary's path of a file below its WAL directory.
    pub fn wal_path(&self, relative: &str) -> String {
        format!("{}/{relative}", self.roots[1].trim_end_matches('/'))
    }

    fn failure(&self, message: String) -> PassiveError {
        PassiveError::Sync(format!(
            "connection to the primary of server {} failed: {message}",
            self.server
        ))
    }

    fn open_barsync(&self) -> Result<Session, OpenError> {
        let transport = choose_transport(&self.ssh_command, self.transport)
            .map_err(|e| OpenError::Failed(self.failure(e.to_string())))?;
        let mut command = super::super::syncinfo::shell_quote(&self.remote_barsync);
        command.push_str(" serve");
        for root in &self.roots {
            command.push_str(" --root ");
            command.push_str(&super::super::syncinfo::shell_quote(root));
        }
        let stream = transport
            .open(&command)
            .map_err(|e| OpenError::Failed(self.failure(e.to_string())))?;
        let peer = stream.peer().to_string();
        let (reader, writer, exit) = stream.split();
        let reader: Box<dyn Read + Send> = match &self.throttle {
            Some(throttle) => Box::new(ThrottledReader::new(reader, throttle.clone())),
            None => Box::new(reader),
        };
        let options = ClientOptions {
            compression: self.compression,
            adapt_compression: self.adapt_compression,
        };
        match Client::connect(reader, writer, options) {
            Ok(mut client) => {
                client.drop_setid();
                Ok(Session::Barsync {
                    client: Box::new(client),
                    exit,
                    peer,
                    accounted: (0, 0),
                })
            }
            Err(error) => {
                let status = exit.wait();
                match status {
                    Ok(status) if status.code == Some(127) => {
                        Err(OpenError::NoBarsync(status.stderr_text().trim().to_owned()))
                    }
                    Ok(status) => {
                        let said = status.stderr_text();
                        let said = said.trim();
                        Err(OpenError::Failed(self.failure(if said.is_empty() {
                            format!("{peer}: {error}")
                        } else {
                            format!("{peer}: {error}; the primary said: {said}")
                        })))
                    }
                    Err(exit_error) => Err(OpenError::Failed(
                        self.failure(format!("{peer}: {error} ({exit_error})")),
                    )),
                }
            }
        }
    }

    /// SFTP through the transport the exec session would use (the user's ssh with `-s …
    /// sftp`, libssh2 only when there is no ssh program), its checksum tool too.
    fn open_sftp(&self) -> Result<Session, PassiveError> {
        let transport = choose_transport(&self.ssh_command, self.transport)
            .map_err(|e| self.failure(e.to_string()))?;
        let peer = transport.peer().to_string();
        let mut source = SftpSource::open(Arc::from(transport))
            .map_err(|e| self.failure(format!("starting SFTP: {e}")))?;
        source.drop_setid();
        if let Some(throttle) = &self.throttle {
            let throttle = throttle.clone();
            source.set_read_hook(Box::new(move |bytes| throttle.consume(bytes)));
        }
        Ok(Session::Sftp {
            source: Box::new(source),
            peer,
        })
    }
}

enum OpenError {
    NoBarsync(String),
    Failed(PassiveError),
}

impl FetchSession for Session {
    fn source(&mut self) -> &mut dyn PullSource {
        match self {
            Session::Barsync { client, .. } => client.as_mut(),
            Session::Sftp { source, .. } => source.as_mut(),
        }
    }

    /// barsync serves byte ranges of files; SFTP copies whole files.
    fn supports_parts(&self) -> bool {
        match self {
            Session::Barsync { client, .. } => client.supports_parts(),
            Session::Sftp { .. } => false,
        }
    }

    fn peer(&self) -> &str {
        match self {
            Session::Barsync { peer, .. } | Session::Sftp { peer, .. } => peer,
        }
    }

    /// Counted by the barsync client; SFTP keeps no traffic counter.
    fn take_traffic(&mut self) -> Option<(u64, u64)> {
        match self {
            Session::Barsync {
                client, accounted, ..
            } => {
                let (sent, received) = client.traffic();
                let delta = (sent - accounted.0, received - accounted.1);
                *accounted = (sent, received);
                Some(delta)
            }
            Session::Sftp { .. } => None,
        }
    }
}

impl Session {
    /// Whether the far side still answers: one round trip, a listing of `path` (not
    /// recursive). An answer, even a refusal, shows the session works; `Err` tells why not.
    pub fn check(&mut self, path: &str) -> Result<(), String> {
        match self.source().list(std::path::Path::new(path), false) {
            Ok(_) => Ok(()),
            Err(error) => Err(format!("{}: {error}", self.peer())),
        }
    }

    /// Whether [`Session::watch`] works on this session.
    pub fn can_watch(&self) -> bool {
        matches!(self, Session::Barsync { client, .. } if client.supports_watch())
    }

    /// Waits on the primary until `path` changes, as `request` says ([`Client::watch`]);
    /// `None` when this session cannot (SFTP, or a barsync too old to know `Watch`).
    pub fn watch(
        &mut self,
        path: &str,
        request: &WatchRequest,
    ) -> Option<Result<Result<Watched, transfer_engine::FileError>, String>> {
        match self {
            Session::Barsync { client, peer, .. } if client.supports_watch() => Some(
                client
                    .watch(std::path::Path::new(path), request)
                    .map_err(|e| format!("{peer}: {e}")),
            ),
            _ => None,
        }
    }

    /// Whether the primary's `barsync serve` runs `--read-only` (refusing every write); `None`
    /// over SFTP, which has no such notion.
    pub fn serves_read_only(&self) -> Option<bool> {
        match self {
            Session::Barsync { client, .. } => Some(client.peer_read_only()),
            Session::Sftp { .. } => None,
        }
    }

    /// Ends the session cleanly and waits for the remote side to exit.
    pub fn close(self) -> Result<(), String> {
        match self {
            Session::Barsync {
                client, exit, peer, ..
            } => {
                let finished = client.finish();
                let status = exit.wait();
                finished.map_err(|e| format!("{peer}: closing the session: {e}"))?;
                match status {
                    Ok(status) if status.success() => Ok(()),
                    Ok(status) => Err(format!(
                        "{peer}: barsync serve exited with {:?}: {}",
                        status.code,
                        status.stderr_text().trim()
                    )),
                    Err(e) => Err(format!("{peer}: {e}")),
                }
            }
            Session::Sftp { source, .. } => source.close(),
        }
    }
}
