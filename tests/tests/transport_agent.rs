//! Authentication order of the in-process transport: ssh-agent first, then key files. Runs a
//! real `ssh-agent` holding the harness's client key. Its own test binary (one test), because it
//! sets `SSH_AUTH_SOCK` and `HOME` for the whole process.

use std::process::Command;

use barsync_tests::sshd::TestSshd;
use barsync_transport::libssh2::Libssh2Transport;
use barsync_transport::{Transport, TransportError};

struct Agent {
    pid: String,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(&self.pid).status();
    }
}

#[test]
fn the_agent_is_tried_first_and_default_key_files_after_it() {
    let sshd = TestSshd::start().expect("start sshd");
    let home = sshd.directory().join("home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::env::set_var("HOME", &home);
    let socket = sshd.directory().join("agent.sock");
    let output = Command::new("ssh-agent")
        .arg("-a")
        .arg(&socket)
        .arg("-s")
        .output()
        .unwrap();
    let script = String::from_utf8_lossy(&output.stdout);
    let pid = script
        .split(';')
        .find_map(|part| part.trim().strip_prefix("SSH_AGENT_PID="))
        .expect("ssh-agent prints its pid")
        .to_string();
    let _agent = Agent { pid };
    std::env::set_var("SSH_AUTH_SOCK", &socket);
    let added = Command::new("ssh-add")
        .arg(sshd.client_key())
        .env("SSH_AUTH_SOCK", &socket)
        .output()
        .unwrap();
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );

    // No -i and no IdentitiesOnly: the key comes from the agent.
    let command = format!(
        "ssh -F none -p {} -o UserKnownHostsFile={} {}@127.0.0.1",
        sshd.port(),
        sshd.known_hosts().display(),
        sshd.user()
    );
    let transport = Libssh2Transport::from_command_string(&command).unwrap();
    assert!(transport.open("true").unwrap().finish().unwrap().success());

    // Without an agent and without key files, the error lists what was tried.
    std::env::remove_var("SSH_AUTH_SOCK");
    let error = match transport.open("true") {
        Ok(_) => panic!("authentication must fail without agent and keys"),
        Err(error) => error,
    };
    assert!(
        matches!(error, TransportError::Authentication { .. }),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains("SSH_AUTH_SOCK not set") && message.contains(".ssh/id_ed25519"),
        "{message}"
    );

    // A default key file ($HOME/.ssh/id_ed25519) is found without -i.
    std::fs::copy(sshd.client_key(), home.join(".ssh/id_ed25519")).unwrap();
    assert!(transport.open("true").unwrap().finish().unwrap().success());
}
