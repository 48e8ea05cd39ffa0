//! The user's ssh command run as a subprocess, exactly as `rsync -e` does: the words of the
//! command string followed by the remote command as one more argument
//! (`ssh -p 2222 user@host 'barsync serve --root /x'`). stdin/stdout are the stream; stderr is
//! collected for error messages. An exit status of 255 is ssh's own failure (connection,
//! authentication, host key) and is reported as [`TransportError::SshSubprocess`].

use std::path::Path;
use std::process::Command;

use crate::process::{spawn_child_stream, Status255};
use crate::ssh_command::SshCommand;
use crate::{Peer, RemoteStream, Transport, TransportError, TransportKind};

/// OpenSSH's default cipher set, reordered so that the ones OpenSSH moves fastest on CPUs with
/// AES instructions come first (PERFORMANCE.md: aes128-gcm needs less than half the CPU of the
/// default first choice, chacha20-poly1305). Same set as the default, so a server that accepts
/// plain `ssh` accepts this too; the client must know these names (OpenSSH 6.5 or later).
pub const FAST_OPENSSH_CIPHERS: &str = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,aes128-ctr,\
     aes192-ctr,aes256-ctr,chacha20-poly1305@openssh.com";

/// Runs remote commands through the user's ssh program.
pub struct SshCommandTransport {
    command: SshCommand,
    peer: Peer,
    cipher_preference: Option<String>,
}

impl SshCommandTransport {
    /// A transport running `command` (already parsed) for each stream. Its peer, shown in
    /// errors, is resolved through ssh_config when that can be read (ssh itself still reads it).
    pub fn new(command: SshCommand) -> Result<SshCommandTransport, TransportError> {
        let peer = match command.resolve_with_default_config() {
            Ok(target) => target.peer(),
            Err(_) => command.peer(),
        };
        Ok(SshCommandTransport {
            command,
            peer,
            cipher_preference: None,
        })
    }

    /// Passes `-c CIPHERS` to ssh (before the user's own options). Use it only when the user
    /// chose no ciphers: a `-c` given earlier on the command line wins over a later one.
    pub fn with_cipher_preference(mut self, ciphers: &str) -> SshCommandTransport {
        self.cipher_preference = Some(ciphers.to_string());
        self
    }

    /// Parses `ssh_command` and builds the transport.
    pub fn from_command_string(ssh_command: &str) -> Result<SshCommandTransport, TransportError> {
        SshCommandTransport::new(SshCommand::parse(ssh_command)?)
    }

    /// The argument vector used for `remote_command` (program first).
    pub fn argv(&self, remote_command: &str) -> Vec<String> {
        let mut argv = self.command.words().to_vec();
        if let Some(ciphers) = &self.cipher_preference {
            argv.splice(1..1, ["-c".to_string(), ciphers.clone()]);
        }
        argv.push(remote_command.to_string());
        argv
    }

    /// The argument vector that starts subsystem `name`, as OpenSSH's `sftp` runs ssh:
    /// `-s` first (a flag, so it cannot take another option's place, and it stays an option
    /// even when the command ends its options with `--`), the subsystem's name last, in place of
    /// a remote command: `ssh -s -p 2222 user@host sftp`.
    pub fn subsystem_argv(&self, name: &str) -> Vec<String> {
        let mut argv = self.argv(name);
        argv.insert(1, "-s".to_string());
        argv
    }

    fn spawn(&self, argv: Vec<String>) -> Result<RemoteStream, TransportError> {
        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]);
        spawn_child_stream(self.peer.clone(), command, Status255::SshFailure)
    }
}

impl Transport for SshCommandTransport {
    fn peer(&self) -> &Peer {
        &self.peer
    }

    fn kind(&self) -> TransportKind {
        TransportKind::SshCommand
    }

    fn open(&self, remote_command: &str) -> Result<RemoteStream, TransportError> {
        self.spawn(self.argv(remote_command))
    }

    fn open_subsystem(&self, name: &str) -> Result<RemoteStream, TransportError> {
        self.spawn(self.subsystem_argv(name))
    }
}

/// True when `program` names an executable file, directly or through `PATH`.
pub fn program_exists(program: &str) -> bool {
    let is_executable = |path: &Path| {
        use std::os::unix::fs::PermissionsExt;
        path.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.contains('/') {
        return is_executable(Path::new(program));
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| is_executable(&dir.join(program))))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_appends_the_remote_command_as_one_word() {
        let transport =
            SshCommandTransport::from_command_string("ssh -p 2222 -o 'User bob' host").unwrap();
        assert_eq!(
            transport.argv("barsync serve --root '/x y'"),
            [
                "ssh",
                "-p",
                "2222",
                "-o",
                "User bob",
                "host",
                "barsync serve --root '/x y'"
            ]
        );
        assert_eq!(transport.peer().to_string(), "bob@host:2222");
        assert_eq!(
            transport.subsystem_argv("sftp"),
            ["ssh", "-s", "-p", "2222", "-o", "User bob", "host", "sftp"]
        );
        let transport = transport.with_cipher_preference("aes128-gcm@openssh.com");
        assert_eq!(
            transport.argv("x")[..3],
            ["ssh", "-c", "aes128-gcm@openssh.com"]
        );
        assert_eq!(
            transport.subsystem_argv("sftp")[..4],
            ["ssh", "-s", "-c", "aes128-gcm@openssh.com"]
        );
        let transport = SshCommandTransport::from_command_string("ssh -- host").unwrap();
        assert_eq!(
            transport.subsystem_argv("sftp"),
            ["ssh", "-s", "--", "host", "sftp"]
        );
    }

    #[test]
    fn program_lookup() {
        assert!(program_exists("sh"));
        assert!(program_exists("/bin/sh"));
        assert!(!program_exists("/nonexistent/ssh"));
        assert!(!program_exists("no-such-program-barsync"));
    }
}
