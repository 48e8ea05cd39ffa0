//! The in-process SSH transport never hangs: a server that accepts TCP but never speaks hits the
//! ConnectTimeout, a server that goes silent mid-session is detected by keepalives
//! (ServerAliveInterval × ServerAliveCountMax), and dropping the reader ends the remote command.
//! Each check runs on a helper thread with a deadline, so a hang fails instead of blocking.

use std::io::Read;
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use barsync_tests::sshd::TestSshd;
use barsync_transport::command::SshCommandTransport;
use barsync_transport::libssh2::Libssh2Transport;
use barsync_transport::{Transport, TransportError};

/// Runs `work` on a thread; fails the test if it takes longer than `deadline`.
fn within<T: Send + 'static>(deadline: Duration, work: impl FnOnce() -> T + Send + 'static) -> T {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(work());
    });
    receiver
        .recv_timeout(deadline)
        .unwrap_or_else(|_| panic!("did not finish within {deadline:?}: hung"))
}

#[test]
fn a_server_that_never_speaks_hits_the_connect_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let command = format!(
        "ssh -F none -p {port} -o ConnectTimeout=1 -o StrictHostKeyChecking=no root@127.0.0.1"
    );
    let transport = Libssh2Transport::from_command_string(&command).unwrap();
    let started = Instant::now();
    let error = within(Duration::from_secs(10), move || {
        transport.open("true").err()
    });
    let error = error.expect("connecting to a mute server must fail");
    assert!(matches!(error, TransportError::Timeout { .. }), "{error}");
    assert!(
        error.to_string().contains(&format!("127.0.0.1:{port}")),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    drop(listener);
}

#[test]
fn a_server_gone_silent_is_detected_by_keepalives() {
    let sshd = TestSshd::start().expect("start sshd");
    let command = sshd.ssh_command().replacen(
        "ssh ",
        "ssh -o ServerAliveInterval=1 -o ServerAliveCountMax=2 ",
        1,
    );
    let transport = Libssh2Transport::from_command_string(&command).unwrap();
    let mut stream = transport.open("cat").unwrap();
    // Idle but alive: keepalive answers keep the session up beyond interval × count.
    // (libssh2 sends keepalives every 2 s at the least, so the limit is 2 s × 2.)
    std::thread::sleep(Duration::from_secs(5));
    assert!(sshd.pause_sessions().unwrap() > 0);
    let started = Instant::now();
    let result = within(Duration::from_secs(20), move || {
        let mut buffer = [0u8; 16];
        stream.read(&mut buffer).map_err(|e| e.to_string())
    });
    sshd.resume_sessions().unwrap();
    let message = result.expect_err("a silent server must end the read with an error");
    assert!(message.contains("no answer from the server"), "{message}");
    eprintln!("silence detected after {:?}: {message}", started.elapsed());
}

#[test]
fn dropping_the_reader_ends_the_remote_command() {
    let sshd = TestSshd::start().expect("start sshd");
    let transports: Vec<Box<dyn Transport>> = vec![
        Box::new(Libssh2Transport::from_command_string(&sshd.ssh_command()).unwrap()),
        Box::new(SshCommandTransport::from_command_string(&sshd.ssh_command()).unwrap()),
    ];
    for transport in transports {
        let kind = transport.kind();
        let (mut reader, writer, exit) = transport.open("cat /dev/zero").unwrap().split();
        let mut buffer = vec![0u8; 1 << 20];
        reader.read_exact(&mut buffer).unwrap();
        drop(reader);
        drop(writer);
        // The libssh2 channel is closed (status unknown); ssh dies of the broken pipe (255).
        let outcome = within(Duration::from_secs(15), move || {
            exit.wait().map_err(|e| e.to_string())
        });
        match outcome {
            Ok(exit) => assert!(!exit.success(), "{kind:?}: {exit:?}"),
            Err(message) => assert!(message.contains("ssh failed"), "{kind:?}: {message}"),
        }
    }
}
