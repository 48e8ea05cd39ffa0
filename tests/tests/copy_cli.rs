//! `barsync copy` run as a user runs it, from a real sshd, with each SSH transport.

use std::fs;
use std::process::Command;

use barsync_tests::noise::incompressible;
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
fn a_pull_with_three_jobs_splits_a_large_file_across_three_sessions() {
    let sshd = TestSshd::start().expect("sshd");
    let remote = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    let tree = remote.path().join("tree");
    fs::create_dir_all(tree.join("sub")).unwrap();
    // 3 MiB in parts of 1 MiB: three parts, each a job of its own; the small files make a
    // fourth job, so three sessions all have work.
    let large = incompressible(3 << 20, 7);
    fs::write(tree.join("large"), &large).unwrap();
    for i in 0..20u64 {
        fs::write(
            tree.join(format!("sub/small{i}")),
            incompressible(1000, i + 1),
        )
        .unwrap();
    }
    let dest = local.path().join("copy");
    let (rsh, host) = rsh_and_host(&sshd);
    let run = Command::new(binaries::barsync())
        .args([
            "copy",
            "-r",
            "-j",
            "3",
            "--part-size",
            "1M",
            "--json",
            "-e",
            &rsh,
        ])
        .arg("--remote-barsync")
        .arg(binaries::barsync())
        .arg(format!("{host}:{}/", tree.display()))
        .arg(&dest)
        .output()
        .expect("barsync runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON document");
    assert_eq!(summary["sessions"], 3, "{stdout}");
    assert_eq!(summary["split_files"], 1, "{stdout}");
    assert_eq!(summary["parts"], 3, "{stdout}");
    assert_eq!(summary["files_transferred"], 21, "{stdout}");
    assert_eq!(fs::read(dest.join("large")).unwrap(), large);
    for i in 0..20u64 {
        assert_eq!(
            fs::read(dest.join(format!("sub/small{i}"))).unwrap(),
            incompressible(1000, i + 1)
        );
    }
    let leftovers: Vec<_> = fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|name| name != "large" && name != "sub")
        .collect();
    assert!(leftovers.is_empty(), "parts left behind: {leftovers:?}");
}

#[test]
fn bwlimit_is_one_budget_shared_by_the_sessions_of_a_pull() {
    let sshd = TestSshd::start().expect("sshd");
    let remote = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    let tree = remote.path().join("tree");
    fs::create_dir_all(&tree).unwrap();
    // 1 MiB in four parts on two sessions at 512 KiB/s: about 2 s together (1 s if each
    // session had the budget to itself).
    let data = incompressible(1 << 20, 3);
    fs::write(tree.join("file"), &data).unwrap();
    let dest = local.path().join("copy");
    let (rsh, host) = rsh_and_host(&sshd);
    let start = std::time::Instant::now();
    let run = Command::new(binaries::barsync())
        .args([
            "copy",
            "-r",
            "-j",
            "2",
            "--part-size",
            "256K",
            "--bwlimit",
            "512",
        ])
        .args(["--compress-level", "0", "-e", &rsh, "--remote-barsync"])
        .arg(binaries::barsync())
        .arg(format!("{host}:{}/", tree.display()))
        .arg(&dest)
        .output()
        .expect("barsync runs");
    let elapsed = start.elapsed().as_secs_f64();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(fs::read(dest.join("file")).unwrap(), data);
    assert!(elapsed >= 1.6, "1 MiB at 512 KiB/s took {elapsed:.2} s");
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

/// Size of the largest `.NAME.barsync-*` temporary file in `dir`.
fn largest_temp(dir: &std::path::Path) -> u64 {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().contains(".barsync-"))
                .filter_map(|e| e.metadata().ok().map(|m| m.len()))
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

#[test]
fn a_connection_cut_mid_transfer_fails_cleanly_and_the_next_run_resumes() {
    let sshd = TestSshd::start().expect("sshd");
    let remote = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    // Incompressible, so the transfer takes long enough to be cut in the middle.
    let data = incompressible(400_000_000, 0x9E37_79B9_7F4A_7C15);
    fs::write(remote.path().join("big"), &data).unwrap();
    let (rsh, host) = rsh_and_host(&sshd);
    let command = || {
        let mut command = Command::new(binaries::barsync());
        command
            .args([
                "copy",
                "--transport",
                "subprocess",
                "--compress-level",
                "0",
                "-e",
                &rsh,
                "--remote-barsync",
            ])
            .arg(binaries::barsync())
            .arg(format!("{host}:{}/big", remote.path().display()))
            .arg(local.path().join("big"));
        command
    };
    let mut child = command()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while largest_temp(local.path()) < 50_000_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "transfer did not start"
        );
        if child.try_wait().unwrap().is_some() {
            panic!("the copy finished before it could be cut; make the file larger");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    sshd.kill_sessions().unwrap();
    let cut = child.wait_with_output().unwrap();
    assert_eq!(
        cut.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&cut.stderr)
    );
    assert!(
        !local.path().join("big").exists(),
        "nothing incomplete is published"
    );
    let kept = fs::metadata(local.path().join(".big.barsync-partial"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(
        kept >= 50_000_000,
        "the received part is kept ({kept} bytes)"
    );

    let resumed = command().output().unwrap();
    let stdout = String::from_utf8_lossy(&resumed.stdout);
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert!(
        fs::read(local.path().join("big")).unwrap() == data,
        "resumed copy is exact"
    );
    let received_mib: f64 = stdout
        .split(" MiB received")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(
        received_mib * 1048576.0 < (data.len() as u64 - kept + 5_000_000) as f64,
        "{stdout} (kept {kept})"
    );
}

#[test]
fn tree_changes_appends_truncations_renames_and_deletions_are_mirrored() {
    let sshd = TestSshd::start().expect("sshd");
    let remote = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    let tree = remote.path().join("tree");
    fs::create_dir_all(tree.join("a/b")).unwrap();
    let random = |len: usize, seed: u64| -> Vec<u8> {
        let mut state = seed | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    };
    for i in 0..20u64 {
        fs::write(
            tree.join(format!("a/b/f{i}")),
            random(10_000 + i as usize * 7_000, i),
        )
        .unwrap();
    }
    let (rsh, host) = rsh_and_host(&sshd);
    let sync = || {
        let out = Command::new(binaries::barsync())
            .args(["copy", "-r", "--delete", "-e", &rsh, "--remote-barsync"])
            .arg(binaries::barsync())
            .arg(format!("{host}:{}/", tree.display()))
            .arg(local.path().join("mirror"))
            .output()
            .expect("barsync runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let same = || {
        for entry in fs::read_dir(tree.join("a/b")).unwrap() {
            let path = entry.unwrap().path();
            let copy = local
                .path()
                .join("mirror/a/b")
                .join(path.file_name().unwrap());
            assert_eq!(
                fs::read(&path).unwrap(),
                fs::read(&copy).unwrap(),
                "{}",
                copy.display()
            );
        }
        let count = |dir: std::path::PathBuf| fs::read_dir(dir).unwrap().count();
        assert_eq!(
            count(tree.join("a/b")),
            count(local.path().join("mirror/a/b"))
        );
    };
    sync();
    same();
    let touch_later = |path: &std::path::Path| {
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(10);
        fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(later)
            .unwrap();
    };
    let mut changed = fs::read(tree.join("a/b/f1")).unwrap();
    changed[500] ^= 0xff;
    fs::write(tree.join("a/b/f1"), &changed).unwrap();
    touch_later(&tree.join("a/b/f1"));
    let mut appended = fs::read(tree.join("a/b/f2")).unwrap();
    appended.extend(random(30_000, 99));
    fs::write(tree.join("a/b/f2"), &appended).unwrap();
    let truncated = fs::read(tree.join("a/b/f3")).unwrap();
    fs::write(tree.join("a/b/f3"), &truncated[..truncated.len() / 3]).unwrap();
    fs::rename(tree.join("a/b/f4"), tree.join("a/b/renamed")).unwrap();
    fs::remove_file(tree.join("a/b/f5")).unwrap();
    sync();
    same();
    assert!(
        !local.path().join("mirror/a/b/f4").exists()
            && !local.path().join("mirror/a/b/f5").exists()
    );
}

#[test]
fn pushing_to_a_remote_without_barsync_falls_back_to_sftp() {
    let sshd = TestSshd::start().expect("sshd");
    let remote = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    fs::create_dir_all(local.path().join("tree/sub")).unwrap();
    let data: Vec<u8> = (0..1_500_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    fs::write(local.path().join("tree/sub/big"), &data).unwrap();
    std::os::unix::fs::symlink("sub/big", local.path().join("tree/link")).unwrap();
    let (rsh, host) = rsh_and_host(&sshd);
    let run = || {
        Command::new(binaries::barsync())
            .args([
                "copy",
                "-r",
                "-e",
                &rsh,
                "--remote-barsync",
                "/nonexistent/barsync",
            ])
            .arg(local.path().join("tree"))
            .arg(format!("{host}:{}/", remote.path().display()))
            .output()
            .expect("barsync runs")
    };
    let out = run();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("falling back to SFTP"), "{stderr}");
    assert!(
        stdout.contains("verified by SFTP, remote sha256sum: 1 files"),
        "{stdout}"
    );
    assert_eq!(fs::read(remote.path().join("tree/sub/big")).unwrap(), data);
    assert_eq!(
        fs::read_link(remote.path().join("tree/link")).unwrap(),
        std::path::Path::new("sub/big")
    );
    let again = run();
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("0 transferred, 1 up to date"),
        "{} {}",
        String::from_utf8_lossy(&again.stdout),
        String::from_utf8_lossy(&again.stderr)
    );
    // An update replaces the existing remote file (SFTP v3 cannot rename over it directly).
    let mut changed = data.clone();
    changed[700_000] ^= 1;
    fs::write(local.path().join("tree/sub/big"), &changed).unwrap();
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(10);
    fs::File::options()
        .write(true)
        .open(local.path().join("tree/sub/big"))
        .unwrap()
        .set_modified(later)
        .unwrap();
    let update = run();
    assert!(
        update.status.success(),
        "{}",
        String::from_utf8_lossy(&update.stderr)
    );
    assert_eq!(
        fs::read(remote.path().join("tree/sub/big")).unwrap(),
        changed
    );
}

#[test]
fn a_read_only_serve_forced_in_authorized_keys_refuses_pushes_and_still_serves() {
    // As a primary would pin a passive's key: `command="barsync serve --read-only --root …"`.
    let sshd = TestSshd::start().expect("sshd");
    let remote = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    fs::create_dir_all(remote.path().join("served")).unwrap();
    fs::write(remote.path().join("served/keep"), b"primary's file").unwrap();
    let keys = sshd.directory().join("authorized_keys");
    let key = fs::read_to_string(&keys).unwrap();
    fs::write(
        &keys,
        format!(
            "command=\"{} serve --read-only --root {}\",no-pty,no-port-forwarding {key}",
            binaries::barsync().display(),
            remote.path().display()
        ),
    )
    .unwrap();
    fs::create_dir_all(local.path().join("tree")).unwrap();
    fs::write(local.path().join("tree/planted"), b"from the passive").unwrap();
    let (rsh, host) = rsh_and_host(&sshd);
    let copy = |args: &[&str], source: String, destination: String| {
        Command::new(binaries::barsync())
            .args(["copy", "-r", "-e", &rsh])
            .args(args)
            .arg(source)
            .arg(destination)
            .output()
            .expect("barsync runs")
    };
    for args in [&[][..], &["--delete"][..]] {
        let push = copy(
            args,
            format!("{}/tree/", local.path().display()),
            format!("{host}:{}/served", remote.path().display()),
        );
        let said = String::from_utf8_lossy(&push.stderr);
        assert!(!push.status.success(), "{args:?}: the push succeeded");
        assert!(
            said.contains("read-only") && said.contains("refused"),
            "{args:?}: {said}"
        );
        assert!(!remote.path().join("served/planted").exists(), "{args:?}");
        assert_eq!(
            fs::read(remote.path().join("served/keep")).unwrap(),
            b"primary's file",
            "{args:?}"
        );
    }
    let pull = copy(
        &[],
        format!("{host}:{}/served/", remote.path().display()),
        local.path().join("pulled").display().to_string(),
    );
    assert!(
        pull.status.success(),
        "{}",
        String::from_utf8_lossy(&pull.stderr)
    );
    // Under the forced root the trailing slash of the source is not honoured (the file lands
    // in pulled/served/): reads work, which is what this test is about.
    let pulled = ["pulled/keep", "pulled/served/keep"]
        .iter()
        .find_map(|p| fs::read(local.path().join(p)).ok());
    assert_eq!(pulled.as_deref(), Some(&b"primary's file"[..]));
}

/// Starts `copy`, truncates `source` to 1 MB once 30 MB of it have arrived in `dest_dir`, and
/// checks the outcome: a clean failure naming the file, not a crash, and no temporary file left
/// behind except the resumable partial.
fn source_truncated_mid_copy(
    mut copy: Command,
    source: &std::path::Path,
    dest_dir: &std::path::Path,
) {
    let mut child = copy
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while largest_temp(dest_dir) < 30_000_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "transfer did not start"
        );
        if child.try_wait().unwrap().is_some() {
            panic!("the copy finished before the source could be truncated; make it larger");
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    fs::File::options()
        .write(true)
        .open(source)
        .unwrap()
        .set_len(1_000_000)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), None, "killed by a signal: {stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("big changed while being read"), "{stderr}");
    assert!(
        !dest_dir.join("big").exists(),
        "nothing incomplete is published"
    );
    let left: Vec<String> = fs::read_dir(dest_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != ".big.barsync-partial" && name != "small")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn a_local_source_truncated_mid_copy_fails_cleanly() {
    let source_dir = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    let source = source_dir.path().join("big");
    fs::write(&source, incompressible(400_000_000, 0x9E37_79B9_7F4A_7C15)).unwrap();
    let mut copy = Command::new(binaries::barsync());
    copy.args(["copy", "--compress-level", "0"])
        .arg(&source)
        .arg(local.path().join("big"));
    source_truncated_mid_copy(copy, &source, local.path());
}

#[test]
fn a_remote_source_truncated_mid_copy_fails_cleanly_and_the_session_goes_on() {
    let sshd = TestSshd::start().expect("sshd");
    let remote = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    fs::create_dir(remote.path().join("tree")).unwrap();
    let source = remote.path().join("tree/big");
    fs::write(&source, incompressible(400_000_000, 0x9E37_79B9_7F4A_7C15)).unwrap();
    // A second file, sent after the truncated one in the same session.
    fs::write(remote.path().join("tree/small"), b"after the big one").unwrap();
    let (rsh, host) = rsh_and_host(&sshd);
    let mut copy = Command::new(binaries::barsync());
    copy.args([
        "copy",
        "-r",
        "--transport",
        "subprocess",
        "--compress-level",
        "0",
        "-e",
        &rsh,
        "--remote-barsync",
    ])
    .arg(binaries::barsync())
    .arg(format!("{host}:{}/", remote.path().join("tree").display()))
    .arg(local.path());
    source_truncated_mid_copy(copy, &source, local.path());
    assert_eq!(
        fs::read(local.path().join("small")).unwrap(),
        b"after the big one"
    );
}

/// Every byte but NUL and `/` is legal in a file name, and a name may have up to 255 bytes:
/// such names are copied (rsync does), and the temporary and partial names barsync makes from
/// them stay within the 255-byte limit.
#[test]
fn names_with_control_characters_and_of_255_bytes_are_copied() {
    let sshd = TestSshd::start().expect("sshd");
    let remote = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    let tree = remote.path().join("tree");
    fs::create_dir_all(tree.join("dir\twith tab")).unwrap();
    let long_a = "a".repeat(255);
    let long_b = format!("{}b", "a".repeat(239));
    let names = [
        "tab\there".to_string(),
        "new\nline".to_string(),
        "escape\u{1b}[31mred".to_string(),
        "dir\twith tab/inner\rcr".to_string(),
        long_a.clone(),
        long_b.clone(),
        format!("dir\twith tab/{}", "c".repeat(234)),
    ];
    for (i, name) in names.iter().enumerate() {
        fs::write(tree.join(name), format!("content {i}").repeat(1000)).unwrap();
    }
    let (rsh, host) = rsh_and_host(&sshd);
    let run = || {
        Command::new(binaries::barsync())
            .args(["copy", "-r", "--delete", "-e", &rsh, "--remote-barsync"])
            .arg(binaries::barsync())
            .arg(format!("{host}:{}/", tree.display()))
            .arg(local.path().join("mirror"))
            .output()
            .expect("barsync runs")
    };
    let out = run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (i, name) in names.iter().enumerate() {
        assert_eq!(
            fs::read_to_string(local.path().join("mirror").join(name)).unwrap(),
            format!("content {i}").repeat(1000),
            "{name:?}"
        );
    }
    // An update of a long-named file goes through a temporary file beside it, and a second
    // run finds everything up to date.
    fs::write(tree.join(&long_a), "changed").unwrap();
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(10);
    fs::File::options()
        .write(true)
        .open(tree.join(&long_a))
        .unwrap()
        .set_modified(later)
        .unwrap();
    let update = run();
    assert!(
        update.status.success(),
        "{}",
        String::from_utf8_lossy(&update.stderr)
    );
    assert_eq!(
        fs::read_to_string(local.path().join("mirror").join(&long_a)).unwrap(),
        "changed"
    );
    let leftovers = barsync_tests::leftovers::barsync_names_in(&local.path().join("mirror"));
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_local_source_truncated_while_pushed_fails_cleanly() {
    let sshd = TestSshd::start().expect("sshd");
    let remote = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    let source = local.path().join("big");
    fs::write(&source, incompressible(400_000_000, 0x9E37_79B9_7F4A_7C15)).unwrap();
    let (rsh, host) = rsh_and_host(&sshd);
    let mut copy = Command::new(binaries::barsync());
    copy.args([
        "copy",
        "--compress-level",
        "0",
        "-e",
        &rsh,
        "--remote-barsync",
    ])
    .arg(binaries::barsync())
    .arg(&source)
    .arg(format!("{host}:{}/big", remote.path().display()));
    source_truncated_mid_copy(copy, &source, remote.path());
}

/// File names are bytes: names that are not UTF-8 (Latin-1 names from an old system, say), and
/// symlinks pointing at them, are copied as they are, pulled and pushed, over `barsync serve`
/// and over the SFTP fallback.
#[test]
fn names_that_are_not_utf8_are_copied_both_ways_over_serve_and_sftp() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let name = |bytes: &[u8]| OsStr::from_bytes(bytes).to_owned();
    let file = name(b"caf\xe9-latin1");
    let dir = name(b"dir-\xff");
    let inner = name(b"inner-\xfe\xfd");
    let link = name(b"link-\xfc");
    let sshd = TestSshd::start().expect("sshd");
    let (rsh, host) = rsh_and_host(&sshd);
    for (label, remote_barsync) in [
        ("serve", binaries::barsync().display().to_string()),
        ("sftp", "/nonexistent/barsync".to_string()),
    ] {
        let remote = tempfile::tempdir().unwrap();
        let local = tempfile::tempdir().unwrap();
        let source = remote.path().join("tree");
        fs::create_dir_all(source.join(&dir)).unwrap();
        fs::write(source.join(&file), b"latin-1 name".repeat(1000)).unwrap();
        fs::write(source.join(&dir).join(&inner), b"inner".repeat(1000)).unwrap();
        std::os::unix::fs::symlink(&file, source.join(&link)).unwrap();
        let check = |tree: &std::path::Path| {
            assert_eq!(
                fs::read(tree.join(&file)).unwrap(),
                b"latin-1 name".repeat(1000),
                "{label}: {}",
                tree.display()
            );
            assert_eq!(
                fs::read(tree.join(&dir).join(&inner)).unwrap(),
                b"inner".repeat(1000),
                "{label}"
            );
            assert_eq!(fs::read_link(tree.join(&link)).unwrap(), file, "{label}");
        };
        let copy = |from: String, to: String| {
            let out = Command::new(binaries::barsync())
                .args([
                    "copy",
                    "-r",
                    "-e",
                    &rsh,
                    "--remote-barsync",
                    &remote_barsync,
                ])
                .arg(&from)
                .arg(&to)
                .output()
                .expect("barsync runs");
            assert!(
                out.status.success(),
                "{label}: {from} -> {to}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        // Pull, twice (the second run finds everything up to date).
        for _ in 0..2 {
            copy(
                format!("{host}:{}/", source.display()),
                local.path().join("pulled").display().to_string(),
            );
            check(&local.path().join("pulled"));
        }
        // Push what was pulled to a new remote directory.
        copy(
            format!("{}/", local.path().join("pulled").display()),
            format!("{host}:{}", remote.path().join("pushed").display()),
        );
        check(&remote.path().join("pushed"));
    }
}
