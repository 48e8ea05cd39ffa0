//! The SFTP fallback of `barsync copy` (no barsync on the far side) goes through the user's own
//! ssh (`ssh … -s … sftp`, with the checksum tool run by the same ssh command), so whatever only
//! OpenSSH understands works as for the exec session; and a hostile SFTP server gets a clear
//! error, never a write outside the destination.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use barsync_tests::{binaries, sshd::TestSshd};

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `barsync copy -r -e RSH --remote-barsync /nonexistent/barsync FROM TO`: the far side has no
/// barsync, so the copy falls back to SFTP.
fn copy_without_barsync(rsh: &str, from: &str, to: &str) -> Output {
    Command::new(binaries::barsync())
        .args([
            "copy",
            "-r",
            "-e",
            rsh,
            "--remote-barsync",
            "/nonexistent/barsync",
            from,
            to,
        ])
        .output()
        .expect("barsync runs")
}

/// An ssh_config reaching the test sshd as `primary-alias`, only through `ProxyJump jump` (the
/// same sshd): what only OpenSSH's client can do (libssh2 knows neither the alias's jump nor
/// ProxyJump at all).
fn proxy_jump_config(sshd: &TestSshd, dir: &Path) -> std::path::PathBuf {
    let common = format!(
        "  HostName 127.0.0.1\n  Port {}\n  User {}\n  IdentityFile {}\n  IdentitiesOnly yes\n  \
         UserKnownHostsFile {}\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  \
         BatchMode yes\n",
        sshd.port(),
        sshd.user(),
        sshd.client_key().display(),
        sshd.known_hosts().display()
    );
    let config = dir.join("ssh_config");
    fs::write(
        &config,
        format!("Host jump\n{common}\nHost primary-alias\n{common}  ProxyJump jump\n"),
    )
    .unwrap();
    config
}

/// A Host alias of `-F config` reached through ProxyJump: the exec session always handled it
/// (the ssh subprocess); the SFTP fallback did not (libssh2 refused the command). Pull and push.
#[test]
fn the_sftp_fallback_honours_proxyjump_and_host_aliases_of_the_users_ssh_config() {
    let sshd = TestSshd::start().expect("sshd");
    let work = tempfile::tempdir().unwrap();
    let config = proxy_jump_config(&sshd, work.path());
    let rsh = format!("ssh -F {}", config.display());
    let remote = work.path().join("remote");
    fs::create_dir_all(remote.join("tree/sub")).unwrap();
    let data = barsync_tests::noise::incompressible(3_000_000, 7);
    fs::write(remote.join("tree/sub/big"), &data).unwrap();
    fs::write(remote.join("tree/small"), b"small").unwrap();

    let pulled = work.path().join("pulled");
    let out = copy_without_barsync(
        &rsh,
        &format!("primary-alias:{}/tree/", remote.display()),
        &pulled.display().to_string(),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("falling back to SFTP"),
        "{}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("verified by SFTP, remote"),
        "{}",
        text(&out)
    );
    assert_eq!(fs::read(pulled.join("sub/big")).unwrap(), data);
    assert_eq!(fs::read(pulled.join("small")).unwrap(), b"small");

    let out = copy_without_barsync(
        &rsh,
        &format!("{}/", pulled.display()),
        &format!("primary-alias:{}", work.path().join("pushed").display()),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(fs::read(work.path().join("pushed/sub/big")).unwrap(), data);
    // Every session came through the jump host: one more login (the jump's, which starts no
    // session) per session, and SFTP was the subsystem of those sessions.
    let log = sshd.log();
    let logins = log.matches("Accepted publickey").count();
    let sessions = log.matches("Starting session:").count();
    assert!(
        sessions > 0 && logins == 2 * sessions,
        "{logins} logins for {sessions} sessions:\n{log}"
    );
    assert!(log.contains("Starting session: subsystem 'sftp'"), "{log}");
}
