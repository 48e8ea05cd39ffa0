//! Reaching the primary's files: sessions opened through `primary_ssh_command`.
//!
//! A session is `barsync serve --root <basebackups_directory> --root <wals_directory>` run on
//! the primary (paths from its sync-info), so the primary serves nothing outside its own
//! catalog. When barsync cannot run there (exit status 127), the link switches to SFTP over
//! the same ssh settings for the rest of its life: whole files, verified by the primary's
//! checksum tool.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use transfer_engine::copy::PullSource;
use transfer_engine::protocol::client::ClientOptions;
use transfer_engine::protocol::Client;
use transfer_engine::sftp::SftpSource;
use transfer_engine::transport::libssh2::Libssh2Transport;
use transfer_engine::transport::{choose_transport, ExitWaiter, StreamWriter};

use super::throttle::{Throttle, ThrottledReader};
use super::{Events, PassiveError, PassiveOptions};
use crate::config::ServerConfig;
use crate::syncinfo::PrimaryInfo;

type RemoteClient = Client<Box<dyn Read + Send>, StreamWriter>;

/// How to open sessions to one server's primary.
pub struct PrimaryLink {
    server: String,
    ssh_command: String,
    remote_barsync: String,
    transport: transfer_engine::transport::TransportPreference,
    roots: Vec<String>,
    compression: Option<i32>,
    throttle: Option<Arc<Throttle>>,
    use_sftp: AtomicBool,
}

/// An open session with the primary.
pub enum Session {
    Barsync {
        client: Box<RemoteClient>,
        exit: ExitWaiter,
        peer: String,
    },
    Sftp {
        source: Box<SftpSource>,
        peer: String,
    },
}

impl PrimaryLink {
    /// The link for passive `server`, whose primary described itself in `primary`.
    pub fn new(
        server: &ServerConfig,
        primary: &PrimaryInfo,
        options: &PassiveOptions,
    ) -> Result<PrimaryLink, PassiveError> {
        let ssh_command = server
            .primary_ssh_command()
            .filter(|c| !c.trim().is_empty())
            .ok_or_else(|| {
                PassiveError::Sync(format!(
                    "Invalid primary_ssh_command in barman configuration for server {}",
                    server.name()
                ))
            })?;
        Ok(PrimaryLink {
            server: server.name().to_owned(),
            ssh_command: ssh_command.to_owned(),
            remote_barsync: options.remote_barsync.clone(),
            transport: options.transport,
            roots: vec![
                primary.config.basebackups_directory.clone(),
                primary.config.wals_directory.clone(),
            ],
            // Barman's network_compression is rsync -z; literals are zstd-compressed always
            // (level 3 costs less CPU than it saves on this path), harder when asked.
            compression: Some(if server.network_compression() { 6 } else { 3 }),
            throttle: server
                .bandwidth_limit()
                .filter(|&limit| limit > 0)
                .map(Throttle::from_kib_per_second),
            use_sftp: AtomicBool::new(options.force_sftp),
        })
    }

    /// The primary's directory holding backup `id`.
    pub fn backup_path(&self, id: &str) -> String {
        format!("{}/{id}", self.roots[0].trim_end_matches('/'))
    }

    /// The primary's path of a file below its WAL directory.
    pub fn wal_path(&self, relative: &str) -> String {
        format!("{}/{relative}", self.roots[1].trim_end_matches('/'))
    }

    /// Opens a session (SFTP once barsync turned out to be missing on the primary).
    pub fn open(&self, events: &dyn Events) -> Result<Session, PassiveError> {
        if !self.use_sftp.load(Ordering::Relaxed) {
            match self.open_barsync() {
                Ok(session) => return Ok(session),
                Err(OpenError::NoBarsync(detail)) => {
                    if !self.use_sftp.swap(true, Ordering::Relaxed) {
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
        };
        match Client::connect(reader, writer, options) {
            Ok(client) => Ok(Session::Barsync {
                client: Box::new(client),
                exit,
                peer,
            }),
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

    fn open_sftp(&self) -> Result<Session, PassiveError> {
        let transport = Libssh2Transport::from_command_string(&self.ssh_command)
            .map_err(|e| self.failure(e.to_string()))?;
        let peer = transport.target().peer().to_string();
        let (session, _tcp) = transport
            .connect()
            .map_err(|e| self.failure(e.to_string()))?;
        let source = SftpSource::new(session)
            .map_err(|e| self.failure(format!("{peer}: starting SFTP: {e}")))?;
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

impl Session {
    /// The file source of this session.
    pub fn source(&mut self) -> &mut dyn PullSource {
        match self {
            Session::Barsync { client, .. } => client.as_mut(),
            Session::Sftp { source, .. } => source.as_mut(),
        }
    }

    /// Who is at the other end (for messages).
    pub fn peer(&self) -> &str {
        match self {
            Session::Barsync { peer, .. } | Session::Sftp { peer, .. } => peer,
        }
    }

    /// Bytes sent and received so far, when known.
    pub fn traffic(&self) -> Option<(u64, u64)> {
        match self {
            Session::Barsync { client, .. } => Some(client.traffic()),
            Session::Sftp { .. } => None,
        }
    }

    /// Ends the session cleanly and waits for the remote side to exit.
    pub fn close(self) -> Result<(), String> {
        match self {
            Session::Barsync { client, exit, peer } => {
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
            Session::Sftp { .. } => Ok(()),
        }
    }
}
