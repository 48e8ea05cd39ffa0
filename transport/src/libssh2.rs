//! In-process SSH with the ssh2 crate (libssh2): connect with a timeout, handshake with tuned
//! algorithm preferences, verify the host key against known_hosts as strictly as OpenSSH,
//! authenticate with ssh-agent then key files, and run the remote command on an exec channel
//! served by a pump thread (module `libssh2_pump`). Each opened stream has its own TCP
//! connection and SSH session, so streams run in parallel without sharing a session lock.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use ssh2::{HashType, MethodType, Session};

use crate::known_hosts::{self, HostKeyVerdict};
use crate::libssh2_pump::{start_pump, PumpSettings};
use crate::ssh_command::{SshCommand, SshTarget, StrictHostKeyChecking};
use crate::{HostKeyDetails, Peer, RemoteStream, Transport, TransportError, TransportKind};

/// Performance knobs of the libssh2 transport (defaults from the measurements in PERFORMANCE.md:
/// aes128-ctr with an encrypt-then-MAC HMAC costs libssh2 ~40% less CPU than aes128-gcm, which it
/// decrypts 16 bytes per OpenSSL call, and spares sshd the slow chacha20-poly1305; a 2 MiB window
/// beats larger ones, whose queued packets no longer fit in the CPU caches).
#[derive(Clone, Debug)]
pub struct Libssh2Tuning {
    /// Cipher preference list (client to server and server to client).
    pub ciphers: String,
    /// MAC preference list (used by non-AEAD ciphers).
    pub macs: String,
    /// Channel receive window in bytes.
    pub window_size: u32,
    /// Maximum packet size announced for the channel.
    pub packet_size: u32,
    /// Bytes asked from libssh2 per read.
    pub read_size: usize,
}

impl Default for Libssh2Tuning {
    fn default() -> Self {
        Libssh2Tuning {
            ciphers: "aes128-ctr,aes256-ctr,aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com".into(),
            macs: "hmac-sha2-256-etm@openssh.com,hmac-sha2-256,hmac-sha2-512-etm@openssh.com,hmac-sha2-512".into(),
            window_size: 2 * 1024 * 1024,
            packet_size: 32768,
            read_size: 256 * 1024,
        }
    }
}

/// Host key algorithms in OpenSSH's order of preference.
const HOST_KEY_ALGORITHMS: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "rsa-sha2-256",
    "ssh-rsa",
];

/// Used when the command has no ConnectTimeout (OpenSSH would wait for the kernel's timeout).
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Used when the command has no ServerAliveInterval.
const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// In-process SSH transport.
pub struct Libssh2Transport {
    target: SshTarget,
    peer: Peer,
    tuning: Libssh2Tuning,
}

impl Libssh2Transport {
    /// A transport for a resolved target; fails when the target needs the ssh client
    /// ([`SshTarget::in_process_blockers`]).
    pub fn new(target: SshTarget) -> Result<Libssh2Transport, TransportError> {
        target.check_in_process_support()?;
        let peer = target.peer();
        let mut tuning = Libssh2Tuning::default();
        if let Some(user_ciphers) = &target.ciphers {
            tuning.ciphers = apply_openssh_list_syntax(user_ciphers, &tuning.ciphers);
        }
        Ok(Libssh2Transport {
            target,
            peer,
            tuning,
        })
    }

    /// Parses `ssh_command`, applies `~/.ssh/config` (or `-F`), and builds the transport.
    pub fn from_command_string(ssh_command: &str) -> Result<Libssh2Transport, TransportError> {
        Libssh2Transport::new(SshCommand::parse(ssh_command)?.resolve_with_default_config()?)
    }

    /// Replaces the performance knobs.
    pub fn with_tuning(mut self, tuning: Libssh2Tuning) -> Libssh2Transport {
        self.tuning = tuning;
        self
    }

    /// The resolved target.
    pub fn target(&self) -> &SshTarget {
        &self.target
    }

    /// Connects, verifies the host key and authenticates; returns the blocking session and its
    /// socket. (Also the starting point of SFTP.) Blocking calls on the session still time out
    /// after the connect timeout; `session.set_timeout(0)` lifts that.
    pub fn connect(&self) -> Result<(Session, TcpStream), TransportError> {
        let timeout = self
            .target
            .connect_timeout
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let socket = self.connect_tcp(timeout)?;
        let mut session = Session::new().map_err(|e| self.handshake_error(e))?;
        let session_socket = socket
            .try_clone()
            .map_err(|source| self.io("duplicating the socket", source))?;
        session.set_tcp_stream(session_socket);
        session.set_timeout(timeout.as_millis().min(u32::MAX as u128) as u32);
        session.set_compress(self.target.compression);
        self.set_preferences(&session)?;
        session.handshake().map_err(|error| match error.code() {
            ssh2::ErrorCode::Session(-9) => TransportError::Timeout {
                peer: self.peer.clone(),
                stage: "SSH handshake",
                seconds: timeout.as_secs(),
            },
            _ => self.handshake_error(error),
        })?;
        self.verify_host_key(&session)?;
        self.authenticate(&session)?;
        Ok((session, socket))
    }

    fn io(&self, action: &'static str, source: std::io::Error) -> TransportError {
        TransportError::Io {
            peer: self.peer.clone(),
            action,
            source,
        }
    }

    fn handshake_error(&self, error: ssh2::Error) -> TransportError {
        TransportError::Handshake {
            peer: self.peer.clone(),
            message: error.message().to_string(),
        }
    }

    fn connect_tcp(&self, timeout: Duration) -> Result<TcpStream, TransportError> {
        let addresses: Vec<SocketAddr> = (self.target.host_name.as_str(), self.target.port)
            .to_socket_addrs()
            .map_err(|source| TransportError::Resolve {
                peer: self.peer.clone(),
                source,
            })?
            .collect();
        let mut last_error = None;
        for address in addresses {
            match TcpStream::connect_timeout(&address, timeout) {
                Ok(socket) => {
                    let _ = socket.set_nodelay(true);
                    return Ok(socket);
                }
                Err(error) => last_error = Some(error),
            }
        }
        Err(match last_error {
            Some(error) if error.kind() == std::io::ErrorKind::TimedOut => {
                TransportError::Timeout {
                    peer: self.peer.clone(),
                    stage: "TCP connect",
                    seconds: timeout.as_secs(),
                }
            }
            Some(source) => TransportError::Connect {
                peer: self.peer.clone(),
                source,
            },
            None => TransportError::Resolve {
                peer: self.peer.clone(),
                source: std::io::Error::other("no address found"),
            },
        })
    }

    fn known_hosts_name(&self) -> String {
        match &self.target.host_key_alias {
            Some(alias) => alias.clone(),
            None => known_hosts::lookup_name(&self.target.host_name, self.target.port),
        }
    }

    fn known_hosts_files(&self) -> Vec<PathBuf> {
        let mut files = self.target.user_known_hosts_files.clone();
        files.extend(self.target.global_known_hosts_files.iter().cloned());
        files
    }

    fn set_preferences(&self, session: &Session) -> Result<(), TransportError> {
        self.check_cipher_choice(session)?;
        let supported = session
            .supported_algs(MethodType::HostKey)
            .unwrap_or_default();
        let recorded =
            known_hosts::recorded_key_types(&self.known_hosts_files(), &self.known_hosts_name());
        let algorithm_family = |algorithm: &str| {
            if algorithm.starts_with("rsa-sha2") {
                "ssh-rsa".to_string()
            } else {
                algorithm.to_string()
            }
        };
        let mut host_keys: Vec<&str> = HOST_KEY_ALGORITHMS
            .iter()
            .copied()
            .filter(|a| recorded.contains(&algorithm_family(a)))
            .collect();
        let others: Vec<&str> = HOST_KEY_ALGORITHMS
            .iter()
            .copied()
            .filter(|a| !host_keys.contains(a))
            .collect();
        host_keys.extend(others);
        host_keys.retain(|a| supported.is_empty() || supported.contains(a));
        let preferences = [
            (MethodType::HostKey, host_keys.join(",")),
            (
                MethodType::CryptCs,
                self.supported_only(session, MethodType::CryptCs, &self.tuning.ciphers),
            ),
            (
                MethodType::CryptSc,
                self.supported_only(session, MethodType::CryptSc, &self.tuning.ciphers),
            ),
            (
                MethodType::MacCs,
                self.supported_only(session, MethodType::MacCs, &self.tuning.macs),
            ),
            (
                MethodType::MacSc,
                self.supported_only(session, MethodType::MacSc, &self.tuning.macs),
            ),
        ];
        for (method, list) in preferences {
            if !list.is_empty() {
                session
                    .method_pref(method, &list)
                    .map_err(|e| self.handshake_error(e))?;
            }
        }
        Ok(())
    }

    fn check_cipher_choice(&self, session: &Session) -> Result<(), TransportError> {
        let usable = self.supported_only(session, MethodType::CryptCs, &self.tuning.ciphers);
        if self.target.ciphers.is_some() && usable.is_empty() {
            return Err(TransportError::Handshake {
                peer: self.peer.clone(),
                message: format!(
                    "none of the ciphers `{}` is supported by libssh2",
                    self.tuning.ciphers
                ),
            });
        }
        Ok(())
    }

    fn supported_only(&self, session: &Session, method: MethodType, wanted: &str) -> String {
        let supported = session.supported_algs(method).unwrap_or_default();
        wanted
            .split(',')
            .filter(|name| supported.contains(name))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn verify_host_key(&self, session: &Session) -> Result<(), TransportError> {
        let (blob, _) = session
            .host_key()
            .ok_or_else(|| TransportError::Handshake {
                peer: self.peer.clone(),
                message: "the server sent no host key".into(),
            })?;
        let fingerprint = known_hosts::fingerprint_sha256(
            session.host_key_hash(HashType::Sha256).unwrap_or_default(),
        );
        let key_type = known_hosts::key_type_of_blob(blob);
        let name = self.known_hosts_name();
        let files = self.known_hosts_files();
        let files_text = files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let verdict = known_hosts::check_host_key(&files, &name, blob).map_err(|source| {
            TransportError::KnownHostsFile {
                peer: self.peer.clone(),
                path: files_text.clone(),
                source,
            }
        })?;
        let details = |known_hosts: String, line: usize| {
            Box::new(HostKeyDetails {
                host: self.target.host_name.clone(),
                port: self.target.port,
                key_type: key_type.clone(),
                fingerprint: fingerprint.clone(),
                known_hosts,
                line,
            })
        };
        let peer = self.peer.clone();
        match verdict {
            HostKeyVerdict::Known => Ok(()),
            HostKeyVerdict::Changed { file, line } => Err(TransportError::HostKeyChanged {
                peer,
                key: details(file.display().to_string(), line),
            }),
            HostKeyVerdict::Revoked { file } => Err(TransportError::HostKeyRevoked {
                peer,
                key: details(file.display().to_string(), 0),
            }),
            HostKeyVerdict::Unknown { .. } => match self.target.strict_host_key_checking {
                StrictHostKeyChecking::No => Ok(()),
                StrictHostKeyChecking::AcceptNew => {
                    let Some(file) = self.target.user_known_hosts_files.first() else {
                        return Ok(());
                    };
                    known_hosts::append_host_key(file, &name, blob, self.target.hash_known_hosts)
                        .map_err(|source| TransportError::KnownHostsFile {
                            peer,
                            path: file.display().to_string(),
                            source,
                        })
                }
                StrictHostKeyChecking::Yes => Err(TransportError::HostKeyUnknown {
                    peer,
                    key: details(files_text, 0),
                }),
            },
        }
    }

    fn authenticate(&self, session: &Session) -> Result<(), TransportError> {
        let user = &self.target.user;
        let mut tried = Vec::new();
        if self.target.use_agent {
            if std::env::var_os("SSH_AUTH_SOCK").is_some() {
                match session.userauth_agent(user) {
                    Ok(()) if session.authenticated() => return Ok(()),
                    Ok(()) => tried.push("ssh-agent (no key accepted)".to_string()),
                    Err(error) => tried.push(format!("ssh-agent ({})", error.message())),
                }
            } else {
                tried.push("ssh-agent (SSH_AUTH_SOCK not set)".to_string());
            }
        }
        for key in &self.target.identity_files {
            if !key.exists() {
                continue;
            }
            match session.userauth_pubkey_file(user, None, key, None) {
                Ok(()) if session.authenticated() => return Ok(()),
                Ok(()) => tried.push(format!("key {} (not accepted)", key.display())),
                Err(error) => tried.push(format!("key {} ({})", key.display(), error.message())),
            }
        }
        if tried.iter().all(|t| t.starts_with("ssh-agent")) {
            let keys = self
                .target
                .identity_files
                .iter()
                .map(|k| k.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            tried.push(format!("no key file found among {keys}"));
        }
        Err(TransportError::Authentication {
            peer: self.peer.clone(),
            tried: tried.join("; "),
        })
    }
}

impl Transport for Libssh2Transport {
    fn peer(&self) -> &Peer {
        &self.peer
    }

    fn kind(&self) -> TransportKind {
        TransportKind::Libssh2
    }

    fn open(&self, remote_command: &str) -> Result<RemoteStream, TransportError> {
        self.open_channel(remote_command, |channel| channel.exec(remote_command))
    }

    fn open_subsystem(&self, name: &str) -> Result<RemoteStream, TransportError> {
        self.open_channel(&format!("subsystem {name}"), |channel| {
            channel.subsystem(name)
        })
    }
}

impl Libssh2Transport {
    /// Connects, opens a session channel, makes `request` on it (exec or subsystem; `what`
    /// names it in errors) and hands the channel to its pump thread.
    fn open_channel(
        &self,
        what: &str,
        request: impl FnOnce(&mut ssh2::Channel) -> Result<(), ssh2::Error>,
    ) -> Result<RemoteStream, TransportError> {
        let (session, socket) = self.connect()?;
        let exec_error = |message: String| TransportError::Exec {
            peer: self.peer.clone(),
            command: what.to_string(),
            message,
        };
        let mut channel = session
            .channel_open(
                "session",
                self.tuning.window_size,
                self.tuning.packet_size,
                None,
            )
            .map_err(|e| exec_error(format!("opening a channel: {}", e.message())))?;
        request(&mut channel).map_err(|e| exec_error(e.message().to_string()))?;
        let interval = self
            .target
            .server_alive_interval
            .unwrap_or(DEFAULT_KEEPALIVE_INTERVAL)
            // libssh2 sends keepalives at most every 2 s; the silence limit must follow suit.
            .max(Duration::from_secs(2));
        session.set_keepalive(true, interval.as_secs().max(2) as u32);
        let settings = PumpSettings {
            read_size: self.tuning.read_size,
            keepalive: Some((interval, self.target.server_alive_count_max)),
        };
        session.set_timeout(0);
        start_pump(self.peer.clone(), session, socket, channel, settings)
    }
}

/// Applies an OpenSSH algorithm list to `default`: `+list` appends, `-list` removes, `^list`
/// puts first, a plain list replaces. (Wildcards in `-list` are not supported.)
pub fn apply_openssh_list_syntax(user: &str, default: &str) -> String {
    let names = |list: &str| {
        list.split(',')
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let default = names(default);
    let (combined, removed): (Vec<String>, Vec<String>) = match user.chars().next() {
        Some('+') => (
            default.iter().cloned().chain(names(&user[1..])).collect(),
            Vec::new(),
        ),
        Some('-') => (default.clone(), names(&user[1..])),
        Some('^') => (
            names(&user[1..])
                .into_iter()
                .chain(default.iter().cloned())
                .collect(),
            Vec::new(),
        ),
        _ => (names(user), Vec::new()),
    };
    let mut result: Vec<String> = Vec::new();
    for name in combined {
        if !removed.contains(&name) && !result.contains(&name) {
            result.push(name);
        }
    }
    result.join(",")
}

#[cfg(test)]
mod tests {
    use super::apply_openssh_list_syntax;

    #[test]
    fn openssh_list_syntax() {
        assert_eq!(apply_openssh_list_syntax("x,y", "a,b"), "x,y");
        assert_eq!(apply_openssh_list_syntax("+x", "a,b"), "a,b,x");
        assert_eq!(apply_openssh_list_syntax("-a", "a,b"), "b");
        assert_eq!(apply_openssh_list_syntax("^b,x", "a,b"), "b,x,a");
    }
}
