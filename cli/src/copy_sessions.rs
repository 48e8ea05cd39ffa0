//! The sessions of a `barsync copy` pull: `barsync serve --root ROOT` started on the remote
//! host over the same ssh command each time, as the engine's fetch pool asks for them
//! ([`SessionSource`]), all paying for their reads from one bandwidth limit (`--bwlimit`).

use std::io::Read;
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use barsync_transport::{
    choose_transport, ExitWaiter, RemoteExit, StreamWriter, TransportError, TransportPreference,
};
use transfer_engine::copy::PullSource;
use transfer_engine::fetch::throttle::{Throttle, ThrottledReader};
use transfer_engine::fetch::{FetchEvents, FetchSession, SessionSource};
use transfer_engine::protocol::client::ClientOptions;
use transfer_engine::protocol::Client;

type ThrottledClient = Client<Box<dyn Read + Send>, StreamWriter>;

/// How to open sessions with one remote host.
pub struct RemoteSessions {
    /// `<ssh command> <host>`.
    pub ssh_command: String,
    pub transport: TransportPreference,
    /// `barsync serve --root ROOT`, quoted for the remote shell.
    pub serve_command: String,
    /// The program that was to run (for [`NoBarsync`]).
    pub remote_barsync: String,
    pub client_options: ClientOptions,
    /// Shared by every session; `None`: no limit.
    pub throttle: Option<Arc<Throttle>>,
}

/// An open `barsync serve` session.
pub struct RemoteSession {
    client: Box<ThrottledClient>,
    exit: ExitWaiter,
    peer: String,
    /// Traffic already reported by [`FetchSession::take_traffic`].
    accounted: (u64, u64),
}

/// The remote side could not run barsync (exit status 127: command not found).
#[derive(Debug)]
pub struct NoBarsync {
    /// The host.
    pub peer: String,
    /// The program that could not run.
    pub program: String,
    /// What the remote shell said.
    pub stderr: String,
}

impl std::fmt::Display for NoBarsync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: `{}` cannot run there ({})",
            self.peer, self.program, self.stderr
        )
    }
}

impl std::error::Error for NoBarsync {}

/// Why a session with `peer` failed with `error`, from how its remote command ended: barsync
/// not found there (exit status 127: [`NoBarsync`], which the caller may answer with SFTP), else
/// the error with what the remote side said on stderr.
pub fn session_failed(
    peer: &str,
    program: &str,
    error: impl std::fmt::Display,
    status: Result<RemoteExit, TransportError>,
) -> anyhow::Error {
    if let Ok(status) = &status {
        if status.code == Some(127) {
            return NoBarsync {
                peer: peer.to_owned(),
                program: program.to_owned(),
                stderr: status.stderr_text().trim().to_owned(),
            }
            .into();
        }
    }
    let detail = match status {
        Ok(status) => status.stderr_text(),
        Err(exit_error) => exit_error.to_string(),
    };
    match detail.trim() {
        "" => anyhow!("{peer}: {error}"),
        detail => anyhow!("{peer}: {error}; the remote side said: {detail}"),
    }
}

impl SessionSource for RemoteSessions {
    type Session = RemoteSession;
    type Error = anyhow::Error;

    fn open(&self, _events: &dyn FetchEvents) -> Result<RemoteSession> {
        let transport = choose_transport(&self.ssh_command, self.transport)?;
        let stream = transport.open(&self.serve_command)?;
        let peer = stream.peer().to_string();
        let (reader, writer, exit) = stream.split();
        let reader: Box<dyn Read + Send> = match &self.throttle {
            Some(throttle) => Box::new(ThrottledReader::new(reader, throttle.clone())),
            None => Box::new(reader),
        };
        match Client::connect(reader, writer, self.client_options) {
            Ok(client) => Ok(RemoteSession {
                client: Box::new(client),
                exit,
                peer,
                accounted: (0, 0),
            }),
            Err(error) => Err(session_failed(
                &peer,
                &self.remote_barsync,
                error,
                exit.wait(),
            )),
        }
    }

    fn release(&self, session: RemoteSession) -> Result<()> {
        let RemoteSession {
            client, exit, peer, ..
        } = session;
        let finished = client.finish();
        let status = exit.wait();
        if let Err(error) = finished {
            bail!("{peer}: closing the session: {error}");
        }
        match status {
            Ok(status) if status.success() => Ok(()),
            Ok(status) => bail!(
                "{peer}: barsync serve exited with {:?}: {}",
                status.code,
                status.stderr_text().trim()
            ),
            Err(error) => bail!("{peer}: {error}"),
        }
    }
}

impl FetchSession for RemoteSession {
    fn source(&mut self) -> &mut dyn PullSource {
        self.client.as_mut()
    }

    fn supports_parts(&self) -> bool {
        self.client.supports_parts()
    }

    fn peer(&self) -> &str {
        &self.peer
    }

    fn take_traffic(&mut self) -> Option<(u64, u64)> {
        let (sent, received) = self.client.traffic();
        let delta = (sent - self.accounted.0, received - self.accounted.1);
        self.accounted = (sent, received);
        Some(delta)
    }
}
