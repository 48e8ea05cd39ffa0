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

/// The ssh command is the user's, as for `rsync -e`: a wrapper that logs its arguments and
/// runs ssh carries the SFTP session (`-s … sftp`) and the checksum tool's shell (`… sh`), as it
/// carries the attempt to start barsync. (Before, the SFTP fallback refused any program but
/// `ssh` itself: "the in-process SSH transport cannot honour this ssh command".)
#[test]
fn the_sftp_fallback_runs_the_users_ssh_command_with_the_sftp_subsystem() {
    use std::os::unix::fs::PermissionsExt;
    let sshd = TestSshd::start().expect("sshd");
    let work = tempfile::tempdir().unwrap();
    let log = work.path().join("wrapper.log");
    let wrapper = work.path().join("ssh-logged");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\nexec ssh \"$@\"\n",
            log.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    let command = sshd.ssh_command();
    let (rsh, host) = command.rsplit_once(' ').unwrap();
    let rsh = rsh.replacen("ssh ", &format!("{} ", wrapper.display()), 1);
    let remote = work.path().join("remote");
    fs::create_dir_all(remote.join("tree")).unwrap();
    let data = barsync_tests::noise::incompressible(2_000_000, 3);
    fs::write(remote.join("tree/file"), &data).unwrap();

    let pulled = work.path().join("pulled");
    let out = copy_without_barsync(
        &rsh,
        &format!("{host}:{}/tree/", remote.display()),
        &pulled.display().to_string(),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("verified by SFTP, remote"),
        "{}",
        text(&out)
    );
    assert_eq!(fs::read(pulled.join("file")).unwrap(), data);
    let out = copy_without_barsync(
        &rsh,
        &format!("{}/", pulled.display()),
        &format!("{host}:{}", work.path().join("pushed").display()),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(fs::read(work.path().join("pushed/file")).unwrap(), data);

    let logged = fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = logged.lines().collect();
    let sftp = lines
        .iter()
        .filter(|line| line.starts_with("-s ") && line.ends_with(&format!("{host} sftp")))
        .count();
    let shells = lines
        .iter()
        .filter(|line| line.ends_with(&format!("{host} sh")))
        .count();
    let serve = lines.iter().filter(|line| line.contains(" serve ")).count();
    // Each copy: one attempt at barsync, one SFTP session, one shell for the checksum tool.
    assert_eq!((serve, sftp, shells), (2, 2, 2), "{logged}");
    assert_eq!(lines.len(), 6, "{logged}");
    // sshd saw the subsystem requests.
    assert_eq!(
        sshd.log()
            .matches("Starting session: subsystem 'sftp'")
            .count(),
        2,
        "{}",
        sshd.log()
    );
}

/// An SFTP reply packet: length, type, body.
fn packet(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32 + 1).to_be_bytes().to_vec();
    out.push(kind);
    out.extend_from_slice(body);
    out
}

fn string(bytes: &[u8]) -> Vec<u8> {
    let mut out = (bytes.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// VERSION 3, no extensions.
fn version() -> Vec<u8> {
    packet(2, &3u32.to_be_bytes())
}

/// ATTRS of a directory, for request `id`.
fn directory_attrs(id: u32) -> Vec<u8> {
    let mut body = id.to_be_bytes().to_vec();
    body.extend_from_slice(&4u32.to_be_bytes()); // permissions only
    body.extend_from_slice(&0o040755u32.to_be_bytes());
    packet(105, &body)
}

/// A fake `ssh` for a hostile host: `barsync serve` is not found there (exit 127), the SFTP
/// subsystem answers `replies` whatever it is asked (then closes its output), and the shell
/// for the checksum tool is refused.
fn hostile_ssh(dir: &Path, replies: &[u8]) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("fake-bin");
    fs::create_dir_all(&bin).unwrap();
    fs::write(dir.join("replies"), replies).unwrap();
    let ssh = bin.join("ssh");
    fs::write(
        &ssh,
        format!(
            "#!/bin/sh\ncase \" $* \" in\n  \
             *' serve '*) echo 'sh: 1: barsync: not found' >&2; exit 127 ;;\n  \
             *' -s '*) cat '{}'; exec cat >/dev/null ;;\n  \
             *) echo refused >&2; exit 1 ;;\nesac\n",
            dir.join("replies").display()
        ),
    )
    .unwrap();
    fs::set_permissions(&ssh, fs::Permissions::from_mode(0o755)).unwrap();
    ssh
}

/// Pulls `hostile:/srv/tree/` into `dir/dest` through the fake ssh; the copy's output.
fn pull_from_hostile(dir: &Path, replies: &[u8]) -> Output {
    let ssh = hostile_ssh(dir, replies);
    copy_without_barsync(
        &ssh.display().to_string(),
        "root@hostile.example:/srv/tree/",
        &dir.join("dest").display().to_string(),
    )
}

/// Every file below `dir`, relative, sorted.
fn files_below(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(here) = pending.pop() {
        for entry in fs::read_dir(&here).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                pending.push(path.clone());
            }
            out.push(path.strip_prefix(dir).unwrap().display().to_string());
        }
    }
    out.sort();
    out
}

/// A hostile SFTP server (truncated packet, huge length, a listed name with `/..`, DATA longer
/// than asked) gets a clear error naming the peer; the copy fails, nothing is written outside
/// the destination, and nothing hangs.
#[test]
fn a_hostile_sftp_server_gets_a_clear_error_and_nothing_is_written_outside() {
    let handle = |id: u32| {
        let mut body = id.to_be_bytes().to_vec();
        body.extend_from_slice(&string(b"h"));
        packet(102, &body)
    };
    let names = |id: u32, name: &[u8]| {
        let mut body = id.to_be_bytes().to_vec();
        body.extend_from_slice(&1u32.to_be_bytes());
        body.extend_from_slice(&string(name));
        body.extend_from_slice(&string(b""));
        body.extend_from_slice(&5u32.to_be_bytes()); // size and permissions
        body.extend_from_slice(&4u64.to_be_bytes());
        body.extend_from_slice(&0o100644u32.to_be_bytes());
        packet(104, &body)
    };
    // The listing of /srv/tree/: LSTAT (1), OPENDIR (2), READDIR (3).
    let listing = |name: &[u8]| [version(), directory_attrs(1), handle(2), names(3, name)].concat();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated",
            [version(), directory_attrs(1), handle(2)[..9].to_vec()].concat(),
            "closed inside a packet",
        ),
        (
            "huge length",
            [version(), vec![0xff, 0xff, 0xff, 0xf0, 105, 0, 0, 0, 1]].concat(),
            "a packet of 4294967280 bytes",
        ),
        (
            "name with /..",
            listing(b"../escape"),
            "invalid file name ../escape",
        ),
        (
            "name /",
            listing(b"/etc/passwd"),
            "invalid file name /etc/passwd",
        ),
    ];
    for (label, replies, reason) in cases {
        let work = tempfile::tempdir().unwrap();
        let started = std::time::Instant::now();
        let out = pull_from_hostile(work.path(), &replies);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{label}: {}", text(&out));
        assert!(
            stderr.contains("root@hostile.example:22") && stderr.contains(reason),
            "{label}: {}",
            text(&out)
        );
        assert!(
            started.elapsed().as_secs() < 30,
            "{label}: took {:?}",
            started.elapsed()
        );
        let left: Vec<String> = files_below(work.path())
            .into_iter()
            .filter(|path| !path.starts_with("fake-bin") && path != "replies")
            .collect();
        assert!(
            left.iter().all(|path| path == "dest"),
            "{label}: written: {left:?}"
        );
    }

    // A file whose DATA is longer than its READ asked. The listing: LSTAT (1), OPENDIR (2),
    // READDIR (3) → `file`, READDIR (4) → EOF, CLOSE (5), LSTAT of the file (6); then OPEN (7),
    // FSTAT (8) → 4 bytes, and READ (9) of the 4 bytes expected → 64 bytes.
    let status = |id: u32, code: u32| {
        let mut body = id.to_be_bytes().to_vec();
        body.extend_from_slice(&code.to_be_bytes());
        packet(101, &body)
    };
    let file_attrs = |id: u32| {
        let mut body = id.to_be_bytes().to_vec();
        body.extend_from_slice(&5u32.to_be_bytes());
        body.extend_from_slice(&4u64.to_be_bytes());
        body.extend_from_slice(&0o100644u32.to_be_bytes());
        packet(105, &body)
    };
    let too_much = {
        let mut body = 9u32.to_be_bytes().to_vec();
        body.extend_from_slice(&string(&[b'x'; 64]));
        packet(103, &body)
    };
    let replies = [
        version(),
        directory_attrs(1),
        handle(2),
        names(3, b"file"),
        status(4, 1),
        status(5, 0),
        file_attrs(6),
        handle(7),
        file_attrs(8),
        too_much,
    ]
    .concat();
    let work = tempfile::tempdir().unwrap();
    let out = pull_from_hostile(work.path(), &replies);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr.contains("root@hostile.example:22")
            && stderr.contains("64 bytes of DATA for a READ of 4 bytes"),
        "{}",
        text(&out)
    );
    let left: Vec<String> = files_below(work.path())
        .into_iter()
        .filter(|path| !path.starts_with("fake-bin") && path != "replies")
        .collect();
    assert!(
        left.iter()
            .all(|path| path == "dest" || path.starts_with("dest/.file.barsync")),
        "written: {left:?}"
    );
}

/// Where no ssh program exists, libssh2 carries the SFTP session (its `sftp` subsystem) and the
/// checksum tool's shell, as it carries the exec session (`--transport auto`).
#[test]
fn without_an_ssh_program_libssh2_carries_the_sftp_fallback() {
    let sshd = TestSshd::start().expect("sshd");
    let work = tempfile::tempdir().unwrap();
    let command = sshd.ssh_command();
    let (rsh, host) = command.rsplit_once(' ').unwrap();
    // The same options, for a program that does not exist: only libssh2 can honour them.
    let rsh = rsh.replacen("ssh ", "/nonexistent/bin/ssh ", 1);
    let remote = work.path().join("remote");
    fs::create_dir_all(remote.join("tree")).unwrap();
    let data = barsync_tests::noise::incompressible(1_500_000, 4);
    fs::write(remote.join("tree/file"), &data).unwrap();
    let pulled = work.path().join("pulled");
    let out = copy_without_barsync(
        &rsh,
        &format!("{host}:{}/tree/", remote.display()),
        &pulled.display().to_string(),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("verified by SFTP, remote"),
        "{}",
        text(&out)
    );
    assert_eq!(fs::read(pulled.join("file")).unwrap(), data);
    let log = sshd.log();
    assert!(log.contains("Starting session: subsystem 'sftp'"), "{log}");
}

/// The connection cut in the middle of an SFTP download (every sshd session killed): the copy
/// fails cleanly (exit 1, nothing published), the received part is kept, and the next run
/// resumes from it.
#[test]
fn an_sftp_download_cut_mid_transfer_fails_cleanly_and_the_next_run_resumes() {
    let sshd = TestSshd::start().expect("sshd");
    let work = tempfile::tempdir().unwrap();
    let data = barsync_tests::noise::incompressible(300_000_000, 0x5EED);
    fs::write(work.path().join("big"), &data).unwrap();
    let command = sshd.ssh_command();
    let (rsh, host) = command.rsplit_once(' ').unwrap();
    let local = work.path().join("local");
    fs::create_dir_all(&local).unwrap();
    let copy = || {
        let mut command = Command::new(binaries::barsync());
        command.args([
            "copy",
            "-e",
            rsh,
            "--remote-barsync",
            "/nonexistent/barsync",
            &format!("{host}:{}/big", work.path().display()),
            &local.join("big").display().to_string(),
        ]);
        command
    };
    let partial = local.join(".big.barsync-partial");
    let kept = || fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    let mut child = copy()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while kept() < 30_000_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "the download did not start"
        );
        if child.try_wait().unwrap().is_some() {
            panic!("the copy finished before it could be cut; make the file larger");
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    sshd.kill_sessions().unwrap();
    let cut = child.wait_with_output().unwrap();
    assert_eq!(cut.status.code(), Some(1), "{}", text(&cut));
    assert!(
        !local.join("big").exists(),
        "nothing incomplete is published"
    );
    let kept = kept();
    assert!(
        kept >= 30_000_000,
        "the received part is kept ({kept} bytes)"
    );

    let resumed = copy().output().unwrap();
    assert!(resumed.status.success(), "{}", text(&resumed));
    assert!(
        fs::read(local.join("big")).unwrap() == data,
        "resumed copy is exact"
    );
    let stdout = String::from_utf8_lossy(&resumed.stdout);
    let received_mib: f64 = stdout
        .split(" MiB received")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(
        received_mib * 1048576.0 < (data.len() as u64 - kept + 1_000_000) as f64,
        "{stdout} (kept {kept})"
    );
}
