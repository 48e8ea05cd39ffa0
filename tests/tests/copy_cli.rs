//! `barsync copy` run as a user runs it, from a real sshd, with each SSH transport.

use std::fs;
use std::process::Command;

use barsync_tests::{binaries, sshd::TestSshd};

/// Splits the harness's ssh command into (`-e` value, `user@host`).
fn rsh_and_host(sshd: &TestSshd) -> (String, String) {
    let command = sshd.ssh_command();
    let (rsh, host) = command
        .rsplit_once(' ')
        .expect("command ends with user@host");
    (rsh.to_string(), host.to_string())
}

fn barsync_copy(
    sshd: &TestSshd,
    transport: &str,
    source: &str,
    destination: &std::path::Path,
) -> std::process::Output {
    let (rsh, host) = rsh_and_host(sshd);
    Command::new(binaries::barsync())
        .args([
            "copy",
            "-r",
            "--transport",
            transport,
            "-e",
            &rsh,
            "--remote-barsync",
        ])
        .arg(binaries::barsync())
        .arg(format!("{host}:{source}"))
        .arg(destination)
        .output()
        .expect("barsync runs")
}

fn copy_and_update(transport: &str) {
    let sshd = TestSshd::start().expect("sshd");
    let remote = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    fs::create_dir_all(remote.path().join("tree/sub")).unwrap();
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
        .collect();
    fs::write(remote.path().join("tree/sub/file"), &data).unwrap();
    let source = format!("{}/tree/", remote.path().display());
    let dest = local.path().join("copy");

    let first = barsync_copy(&sshd, transport, &source, &dest);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(fs::read(dest.join("sub/file")).unwrap(), data);

    let mut changed = data.clone();
    changed[1_500_000] ^= 0xff;
    fs::write(remote.path().join("tree/sub/file"), &changed).unwrap();
    let second = barsync_copy(&sshd, transport, &source, &dest);
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(stdout.contains("1 transferred"), "{stdout}");
    assert_eq!(fs::read(dest.join("sub/file")).unwrap(), changed);
}

#[test]
fn copy_over_libssh2() {
    copy_and_update("in-process");
}

#[test]
fn copy_over_ssh_subprocess() {
    copy_and_update("subprocess");
}

#[test]
fn a_changed_host_key_is_refused() {
    let mut sshd = TestSshd::start().expect("sshd");
    let remote = tempfile::tempdir().unwrap();
    fs::write(remote.path().join("f"), b"data").unwrap();
    sshd.rotate_host_key().unwrap();
    let local = tempfile::tempdir().unwrap();
    for transport in ["in-process", "subprocess"] {
        let out = barsync_copy(
            &sshd,
            transport,
            &format!("{}/f", remote.path().display()),
            &local.path().join("f"),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{transport}: {stderr}");
        assert!(
            stderr.to_uppercase().contains("HOST KEY") || stderr.contains("host key"),
            "{transport}: {stderr}"
        );
        assert!(!local.path().join("f").exists());
    }
}

#[test]
fn push_to_a_remote_destination() {
    let sshd = TestSshd::start().expect("sshd");
    let remote = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    fs::create_dir_all(local.path().join("tree/sub")).unwrap();
    fs::write(local.path().join("tree/sub/file"), vec![7u8; 1_000_000]).unwrap();
    let (rsh, host) = rsh_and_host(&sshd);
    let run = || {
        Command::new(binaries::barsync())
            .args(["copy", "-r", "-e", &rsh, "--remote-barsync"])
            .arg(binaries::barsync())
            .arg(local.path().join("tree"))
            .arg(format!("{host}:{}/dest", remote.path().display()))
            .output()
            .expect("barsync runs")
    };
    let out = run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fs::read(remote.path().join("dest/tree/sub/file")).unwrap(),
        vec![7u8; 1_000_000]
    );
    let again = run();
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("0 transferred, 1 up to date"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
}

#[test]
fn a_remote_without_barsync_falls_back_to_sftp_and_resumes() {
    let sshd = TestSshd::start().expect("sshd");
    let remote = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    fs::create_dir_all(remote.path().join("tree/sub")).unwrap();
    let data: Vec<u8> = (0..2_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 9) as u8)
        .collect();
    fs::write(remote.path().join("tree/sub/big"), &data).unwrap();
    fs::write(remote.path().join("tree/small"), b"small file").unwrap();
    // A partial copy from an earlier, interrupted run.
    fs::create_dir_all(local.path().join("copy/sub")).unwrap();
    fs::write(
        local.path().join("copy/sub/.big.barsync-partial"),
        &data[..1_500_000],
    )
    .unwrap();
    let (rsh, host) = rsh_and_host(&sshd);
    let out = Command::new(binaries::barsync())
        .args([
            "copy",
            "-r",
            "-e",
            &rsh,
            "--remote-barsync",
            "/nonexistent/barsync",
        ])
        .arg(format!("{host}:{}/tree/", remote.path().display()))
        .arg(local.path().join("copy"))
        .output()
        .expect("barsync runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("falling back to SFTP"), "{stderr}");
    assert!(
        stdout.contains("verified by SFTP, remote sha256sum: 2 files"),
        "{stdout}"
    );
    assert_eq!(fs::read(local.path().join("copy/sub/big")).unwrap(), data);
    assert_eq!(
        fs::read(local.path().join("copy/small")).unwrap(),
        b"small file"
    );
    assert!(!local.path().join("copy/sub/.big.barsync-partial").exists());
    // Only the missing half (and the small file) crossed.
    assert!(stdout.contains("0.48 MiB received"), "{stdout}");
}
