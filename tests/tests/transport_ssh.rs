//! The SSH transports (in-process libssh2 and the ssh subprocess) against a real sshd on
//! 127.0.0.1 started by [`barsync_tests::sshd::TestSshd`]: exact bytes through `cat`,
//! `sha256sum` and `head -c N /dev/urandom`, exit statuses and stderr, host key policy (changed,
//! unknown, accept-new, no), hashed known_hosts entries and fingerprints as OpenSSH reads them, a
//! wrong client key, and a connection cut in the middle of a transfer.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use barsync_tests::sshd::TestSshd;
use barsync_transport::command::SshCommandTransport;
use barsync_transport::libssh2::Libssh2Transport;
use barsync_transport::{Transport, TransportError};

fn both_transports(ssh_command: &str) -> Vec<Box<dyn Transport>> {
    vec![
        Box::new(Libssh2Transport::from_command_string(ssh_command).expect("libssh2 transport")),
        Box::new(
            SshCommandTransport::from_command_string(ssh_command)
                .expect("ssh subprocess transport"),
        ),
    ]
}

fn random_bytes(length: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// Writes `input` on one thread while reading all output on this one; returns output and exit.
fn run_with_input(
    transport: &dyn Transport,
    command: &str,
    input: Vec<u8>,
) -> (Vec<u8>, barsync_transport::RemoteExit) {
    let (mut reader, mut writer, exit) = transport
        .open(command)
        .unwrap_or_else(|e| panic!("{:?} open: {e}", transport.kind()))
        .split();
    let feeder = std::thread::spawn(move || {
        for piece in input.chunks(100_003) {
            writer.write_all(piece).expect("write to remote stdin");
        }
        writer.close_write().expect("close remote stdin");
    });
    let mut output = Vec::new();
    reader.read_to_end(&mut output).expect("read remote stdout");
    feeder.join().unwrap();
    (output, exit.wait().expect("remote exit"))
}

fn local_sha256(data: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data).unwrap());
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn cat_and_sha256sum_carry_exact_bytes_over_both_transports() {
    let sshd = TestSshd::start().expect("start sshd");
    for transport in both_transports(&sshd.ssh_command()) {
        let input = random_bytes(6 * 1024 * 1024 + 17, 1);
        let (output, exit) = run_with_input(transport.as_ref(), "cat", input.clone());
        assert!(
            output == input,
            "{:?}: cat returned {} bytes, different from the {} sent",
            transport.kind(),
            output.len(),
            input.len()
        );
        assert!(exit.success(), "{:?}: {exit:?}", transport.kind());

        let input = random_bytes(3 * 1024 * 1024, 2);
        let (output, exit) = run_with_input(transport.as_ref(), "sha256sum", input.clone());
        assert_eq!(
            String::from_utf8(output).unwrap(),
            local_sha256(&input),
            "{:?}",
            transport.kind()
        );
        assert!(exit.success());

        let (output, _) = run_with_input(transport.as_ref(), "wc -c", Vec::new());
        assert_eq!(
            String::from_utf8(output).unwrap().trim(),
            "0",
            "{:?}: empty input then EOF",
            transport.kind()
        );
    }
    // Several streams of one transport at the same time.
    let transport = Libssh2Transport::from_command_string(&sshd.ssh_command()).unwrap();
    std::thread::scope(|scope| {
        for seed in 0..3 {
            let transport = &transport;
            scope.spawn(move || {
                let input = random_bytes(2 * 1024 * 1024, 10 + seed);
                let (output, exit) = run_with_input(transport, "cat", input.clone());
                assert!(output == input && exit.success(), "parallel stream {seed}");
            });
        }
    });
}

#[test]
fn head_of_urandom_arrives_exactly_as_the_remote_wrote_it() {
    let sshd = TestSshd::start().expect("start sshd");
    for (index, transport) in both_transports(&sshd.ssh_command()).iter().enumerate() {
        let copy = sshd.directory().join(format!("urandom-{index}"));
        let command = format!("head -c 5000001 /dev/urandom | tee {}", copy.display());
        let mut stream = transport.open(&command).unwrap();
        let mut output = Vec::new();
        stream.read_to_end(&mut output).unwrap();
        let exit = stream.finish().unwrap();
        assert!(exit.success(), "{exit:?}");
        assert_eq!(output.len(), 5_000_001);
        assert!(
            output == std::fs::read(&copy).unwrap(),
            "{:?}: bytes differ from what the remote wrote",
            transport.kind()
        );
    }
}

#[test]
fn exit_status_and_stderr_reach_the_caller() {
    let sshd = TestSshd::start().expect("start sshd");
    for transport in both_transports(&sshd.ssh_command()) {
        let exit = transport
            .open("echo to-stdout; echo to-stderr >&2; exit 3")
            .unwrap()
            .finish()
            .unwrap();
        assert_eq!(exit.code, Some(3), "{:?}", transport.kind());
        assert_eq!(exit.stderr_text(), "to-stderr");

        let exit = transport
            .open("barsync-no-such-command --serve")
            .unwrap()
            .finish()
            .unwrap();
        assert_eq!(exit.code, Some(127), "{:?}: {exit:?}", transport.kind());
        assert!(
            exit.stderr_text().contains("barsync-no-such-command")
                && exit.stderr_text().contains("not found"),
            "{}",
            exit.stderr_text()
        );

        // A command killed by a signal: libssh2 reports the signal; OpenSSH's client exits 255
        // for it, which the subprocess transport cannot tell from its own failures.
        match transport.open("kill -TERM $$").unwrap().finish() {
            Ok(exit) => assert_eq!(
                exit.signal.as_deref(),
                Some("TERM"),
                "{:?}: {exit:?}",
                transport.kind()
            ),
            Err(error) => assert!(
                matches!(error, TransportError::SshSubprocess { .. }),
                "{:?}: {error}",
                transport.kind()
            ),
        }
    }
}

fn open_error(transport: &dyn Transport) -> TransportError {
    match transport.open("true").and_then(|stream| stream.finish()) {
        Ok(exit) => panic!(
            "{:?}: expected a failure, the command ran: {exit:?}",
            transport.kind()
        ),
        Err(error) => error,
    }
}

#[test]
fn a_changed_host_key_is_refused_with_host_port_and_fingerprint() {
    let mut sshd = TestSshd::start().expect("start sshd");
    sshd.rotate_host_key().expect("rotate host key");
    let command = sshd.ssh_command();
    for strict in ["yes", "accept-new", "no"] {
        let command = command.replace(
            "StrictHostKeyChecking=yes",
            &format!("StrictHostKeyChecking={strict}"),
        );
        let error = open_error(&Libssh2Transport::from_command_string(&command).unwrap());
        let message = error.to_string();
        assert!(
            matches!(error, TransportError::HostKeyChanged { .. }),
            "{strict}: {message}"
        );
        for needle in [
            "CHANGED",
            "127.0.0.1",
            &sshd.port().to_string(),
            "SHA256:",
            "known_hosts:1",
        ] {
            assert!(
                message.contains(needle),
                "{strict}: `{needle}` missing from: {message}"
            );
        }
    }
    let error = open_error(&SshCommandTransport::from_command_string(&command).unwrap());
    assert!(
        matches!(error, TransportError::SshSubprocess { .. }),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("REMOTE HOST IDENTIFICATION HAS CHANGED"),
        "{error}"
    );
}

#[test]
fn an_unknown_host_is_refused_when_strict_and_recorded_with_accept_new() {
    let sshd = TestSshd::start().expect("start sshd");
    let empty = sshd.directory().join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    let strict =
        Libssh2Transport::from_command_string(&sshd.ssh_command_with(&empty, "yes")).unwrap();
    let error = open_error(&strict);
    assert!(
        matches!(error, TransportError::HostKeyUnknown { .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("SHA256:")
            && error.to_string().contains(&sshd.port().to_string()),
        "{error}"
    );

    let lax = Libssh2Transport::from_command_string(&sshd.ssh_command_with(&empty, "no")).unwrap();
    assert!(lax.open("true").unwrap().finish().unwrap().success());
    assert_eq!(
        std::fs::read_to_string(&empty).unwrap(),
        "",
        "StrictHostKeyChecking=no records nothing"
    );

    let recorded = sshd.directory().join("new_dir/known_hosts");
    let accept_new =
        Libssh2Transport::from_command_string(&sshd.ssh_command_with(&recorded, "accept-new"))
            .unwrap();
    assert!(accept_new.open("true").unwrap().finish().unwrap().success());
    assert_eq!(
        std::fs::read_to_string(&recorded).unwrap(),
        sshd.known_hosts_line().unwrap()
    );
    // The recorded key now satisfies strict checking, for both transports.
    for transport in both_transports(&sshd.ssh_command_with(&recorded, "yes")) {
        assert!(
            transport.open("true").unwrap().finish().unwrap().success(),
            "{:?}",
            transport.kind()
        );
    }
}

/// Hashed known_hosts names (`HashKnownHosts yes`, HMAC-SHA1 of the name under a random salt)
/// that the in-process transport writes are found by OpenSSH's own tools, and the fingerprints it
/// shows are the ones `ssh-keygen -l` prints.
#[test]
fn hashed_entries_and_fingerprints_agree_with_openssh() {
    let sshd = TestSshd::start().expect("start sshd");
    let listed = Command::new("ssh-keygen")
        .arg("-l")
        .arg("-f")
        .arg(sshd.known_hosts())
        .output()
        .unwrap();
    assert!(listed.status.success());
    let listed = String::from_utf8(listed.stdout).unwrap();
    let fingerprint = listed.split_whitespace().nth(1).unwrap().to_string();
    assert!(fingerprint.starts_with("SHA256:"), "{listed}");

    let empty = sshd.directory().join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    let error = open_error(
        &Libssh2Transport::from_command_string(&sshd.ssh_command_with(&empty, "yes")).unwrap(),
    );
    assert!(
        error.to_string().contains(&fingerprint),
        "{fingerprint}: {error}"
    );

    let hashed = sshd.directory().join("hashed_known_hosts");
    let command = |strict: &str| {
        sshd.ssh_command_with(&hashed, strict)
            .replace("-o BatchMode=yes", "-o BatchMode=yes -o HashKnownHosts=yes")
    };
    let accept_new = Libssh2Transport::from_command_string(&command("accept-new")).unwrap();
    assert!(accept_new.open("true").unwrap().finish().unwrap().success());
    let recorded = std::fs::read_to_string(&hashed).unwrap();
    assert!(
        recorded.starts_with("|1|") && !recorded.contains("127.0.0.1"),
        "{recorded}"
    );
    let name = format!("[127.0.0.1]:{}", sshd.port());
    let found = Command::new("ssh-keygen")
        .arg("-F")
        .arg(&name)
        .arg("-f")
        .arg(&hashed)
        .output()
        .unwrap();
    let found = String::from_utf8_lossy(&found.stdout);
    assert!(
        found.contains("found: line 1"),
        "ssh-keygen -F {name}: {found}"
    );
    for transport in both_transports(&command("yes")) {
        assert!(
            transport.open("true").unwrap().finish().unwrap().success(),
            "{:?}",
            transport.kind()
        );
    }
}

#[test]
fn a_key_the_server_does_not_accept_fails_with_a_clear_message() {
    let sshd = TestSshd::start().expect("start sshd");
    let wrong_key = sshd.directory().join("wrong_key");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&wrong_key)
        .status()
        .unwrap();
    assert!(status.success());
    let command = sshd.ssh_command_with_key(&wrong_key, &sshd.known_hosts(), "yes");
    let error = open_error(&Libssh2Transport::from_command_string(&command).unwrap());
    assert!(
        matches!(error, TransportError::Authentication { .. }),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains("authentication failed")
            && message.contains(&wrong_key.display().to_string()),
        "{message}"
    );
    assert!(
        message.contains(&format!("{}@127.0.0.1:{}", sshd.user(), sshd.port())),
        "{message}"
    );

    let error = open_error(&SshCommandTransport::from_command_string(&command).unwrap());
    assert!(error.to_string().contains("Permission denied"), "{error}");
}

/// Reads until `limit` bytes or an error; the result arrives on a channel so a hang fails the test.
fn read_until_cut(transport: Box<dyn Transport>, sshd: &TestSshd) -> Result<u64, String> {
    let (sender, receiver) = mpsc::channel();
    let (started_sender, started_receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let result = (|| {
            let mut stream = transport.open("cat /dev/zero").map_err(|e| e.to_string())?;
            let mut buffer = vec![0u8; 1 << 16];
            let mut total = 0u64;
            let mut announced = false;
            loop {
                match stream.read(&mut buffer) {
                    Ok(0) => {
                        return stream
                            .finish()
                            .map(|exit| format!("EOF after {total} bytes, {exit:?}"))
                            .map_err(|e| e.to_string())
                            .and_then(Err)
                    }
                    Ok(count) => total += count as u64,
                    Err(error) => return Ok((total, error.to_string())),
                }
                if total > (8 << 20) && !announced {
                    announced = true;
                    let _ = started_sender.send(());
                }
            }
        })();
        let _ = sender.send(result);
    });
    started_receiver
        .recv_timeout(Duration::from_secs(20))
        .map_err(|_| "the transfer did not start".to_string())?;
    assert!(
        sshd.kill_sessions().unwrap() > 0,
        "no session process to kill"
    );
    let started = Instant::now();
    match receiver.recv_timeout(Duration::from_secs(20)) {
        Ok(Ok((total, message))) => {
            eprintln!(
                "cut after {total} bytes, reported in {:?}: {message}",
                started.elapsed()
            );
            Ok(total)
        }
        Ok(Err(message)) => Err(message),
        Err(_) => Err("the reader hung after the connection was cut".to_string()),
    }
}

#[test]
fn a_connection_cut_mid_transfer_is_an_error_not_a_hang() {
    let sshd = TestSshd::start().expect("start sshd");
    let libssh2 = Box::new(Libssh2Transport::from_command_string(&sshd.ssh_command()).unwrap());
    read_until_cut(libssh2, &sshd).expect("libssh2 transport: a read error after the cut");
    // The ssh client sees EOF and exits 255; the stream then reports an SshSubprocess error.
    let subprocess =
        Box::new(SshCommandTransport::from_command_string(&sshd.ssh_command()).unwrap());
    match read_until_cut(subprocess, &sshd) {
        Ok(_) => {}
        Err(message) => assert!(
            message.contains("exit status 255") || message.contains("ssh failed"),
            "subprocess: {message}"
        ),
    }
}

#[test]
fn the_harness_known_hosts_matches_what_ssh_keyscan_sees() {
    let sshd = TestSshd::start().expect("start sshd");
    let output = Command::new("ssh-keyscan")
        .args(["-t", "ed25519", "-p", &sshd.port().to_string(), "127.0.0.1"])
        .output()
        .unwrap();
    let scanned = String::from_utf8_lossy(&output.stdout);
    assert_eq!(scanned.trim(), sshd.known_hosts_line().unwrap().trim());
    assert!(Path::new(&sshd.client_key()).exists());
}

#[test]
fn auto_prefers_the_ssh_subprocess_and_in_process_refuses_what_it_cannot_honour() {
    use barsync_transport::{choose_transport, TransportKind, TransportPreference};
    let sshd = TestSshd::start().expect("start sshd");
    let command = sshd.ssh_command();
    let auto = choose_transport(&command, TransportPreference::Auto).unwrap();
    assert_eq!(auto.kind(), TransportKind::SshCommand);
    let input = random_bytes(1 << 20, 7);
    let (output, exit) = run_with_input(auto.as_ref(), "cat", input.clone());
    assert!(output == input && exit.success());

    // Auto puts aes128-gcm first unless the user chose ciphers (ssh -v shows the negotiation).
    for (options, cipher) in [
        ("-v", "aes128-gcm@openssh.com"),
        ("-v -c aes256-ctr", "aes256-ctr"),
    ] {
        let verbose = command.replacen("ssh ", &format!("ssh {options} "), 1);
        let transport = choose_transport(&verbose, TransportPreference::Auto).unwrap();
        let exit = transport.open("true").unwrap().finish().unwrap();
        let negotiated = format!("server->client cipher: {cipher}");
        assert!(
            exit.stderr_text().contains(&negotiated),
            "{options}: {}",
            exit.stderr_text()
        );
    }

    let in_process = choose_transport(&command, TransportPreference::InProcess).unwrap();
    assert_eq!(in_process.kind(), TransportKind::Libssh2);
    let missing_ssh = command.replacen("ssh ", "/nonexistent/ssh ", 1);
    let fallback = choose_transport(&missing_ssh, TransportPreference::Auto).unwrap();
    assert_eq!(
        fallback.kind(),
        TransportKind::Libssh2,
        "no ssh program: in-process"
    );
    let (output, _) = run_with_input(fallback.as_ref(), "cat", input.clone());
    assert!(output == input);

    let jump = command.replacen("ssh ", "ssh -J nowhere ", 1);
    assert_eq!(
        choose_transport(&jump, TransportPreference::Auto)
            .unwrap()
            .kind(),
        TransportKind::SshCommand
    );
    let error = choose_transport(&jump, TransportPreference::InProcess)
        .err()
        .expect("ProxyJump refused in-process");
    assert!(error.to_string().contains("ProxyJump"), "{error}");

    // A cipher chosen by the user is honoured by libssh2, or refused when it has none of them.
    let ctr =
        Libssh2Transport::from_command_string(&command.replacen("ssh ", "ssh -c aes256-ctr ", 1))
            .unwrap();
    assert!(ctr.open("true").unwrap().finish().unwrap().success());
    let exotic = Libssh2Transport::from_command_string(&command.replacen(
        "ssh ",
        "ssh -c no-such-cipher ",
        1,
    ))
    .unwrap();
    let error = open_error(&exotic);
    assert!(error.to_string().contains("none of the ciphers"), "{error}");
}

#[test]
fn an_ssh_config_host_alias_supplies_host_port_user_key_and_known_hosts() {
    let sshd = TestSshd::start().expect("start sshd");
    let config = sshd.directory().join("ssh_config");
    std::fs::write(
        &config,
        format!(
            "Host other\n  Port 1\nHost primary-*\n  HostName 127.0.0.1\n  Port {}\n  User {}\n  IdentityFile {}\n  \
             UserKnownHostsFile {}\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  ConnectTimeout 5\n  \
             ServerAliveInterval 10\n  IdentitiesOnly yes\n  BatchMode yes\nHost *\n  Port 2\n",
            sshd.port(),
            sshd.user(),
            sshd.client_key().display(),
            sshd.known_hosts().display()
        ),
    )
    .unwrap();
    let command = format!("ssh -F {} -q -T primary-db", config.display());
    let in_process = Libssh2Transport::from_command_string(&command).unwrap();
    assert_eq!(
        in_process.peer().to_string(),
        format!("{}@127.0.0.1:{}", sshd.user(), sshd.port())
    );
    for transport in [
        Box::new(in_process) as Box<dyn Transport>,
        Box::new(SshCommandTransport::from_command_string(&command).unwrap()),
    ] {
        let (output, exit) = run_with_input(transport.as_ref(), "echo via-alias", Vec::new());
        assert_eq!(
            String::from_utf8_lossy(&output).trim(),
            "via-alias",
            "{:?}",
            transport.kind()
        );
        assert!(exit.success());
    }
}
