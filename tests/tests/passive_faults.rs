//! Faults during a passive sync: bytes corrupted in flight (a wrapper around the ssh command
//! flips one byte of the primary's stream) and a full disk on the passive (its barman_home on a
//! 6 MiB tmpfs). Nothing corrupt or half-written is published, the temporary space is
//! released, and the next run (or the retry round of the same run) completes.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use barsync_tests::passive_rig::{describe, fixture_primary, PassiveRig, RigOptions};

/// Adds one file of `mib` MiB of incompressible data to the primary's newest backup.
fn add_random_file(primary: &Path, name: &str, mib: usize) -> Vec<u8> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut data = vec![0u8; mib << 20];
    for chunk in data.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    let path = primary.join(format!(
        "primary-home/pg/base/20240102T120000/data/base/1/{name}"
    ));
    fs::write(path, &data).unwrap();
    data
}

fn set_primary_ssh_command(rig: &PassiveRig, command: &str) {
    let text = fs::read_to_string(&rig.config).unwrap();
    let replaced: Vec<String> = text
        .lines()
        .map(|line| {
            if line.starts_with("primary_ssh_command") {
                format!("primary_ssh_command = {command}")
            } else {
                line.to_owned()
            }
        })
        .collect();
    fs::write(&rig.config, replaced.join("\n") + "\n").unwrap();
}

fn temporary_files(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(listing) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in listing.flatten() {
            if entry.file_type().unwrap().is_dir() {
                pending.push(entry.path());
            } else if entry.file_name().to_string_lossy().contains(".barsync-") {
                found.push(entry.path());
            }
        }
    }
    found
}

/// Routes the primary's sessions through a wrapper that flips the 1 MiB-th byte sent by the
/// first `barsync serve` session to send that much; returns the marker it leaves once it has.
fn flip_one_byte_once(rig: &PassiveRig) -> PathBuf {
    let marker = rig.directory.path().join("flipped-once");
    let flipper = rig.directory.path().join("flipssh");
    fs::write(
        &flipper,
        format!(
            "#!/bin/sh\n\
             case \"$*\" in\n\
             *serve*) if [ ! -e '{marker}' ]; then\n\
               \"$@\" | python3 -c 'import os, sys\n\
             i, o, seen = sys.stdin.buffer, sys.stdout.buffer, 0\n\
             while True:\n\
             \x20   chunk = bytearray(i.read1(65536))\n\
             \x20   if not chunk: break\n\
             \x20   at = (1 << 20) - seen\n\
             \x20   if 0 <= at < len(chunk) and not os.path.exists(\"{marker}\"):\n\
             \x20       chunk[at] ^= 0x40\n\
             \x20       os.mkdir(\"{marker}\")\n\
             \x20   seen += len(chunk)\n\
             \x20   o.write(chunk); o.flush()'\n\
               exit $?\n\
             fi ;;\n\
             esac\n\
             exec \"$@\"\n",
            marker = marker.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&flipper, fs::Permissions::from_mode(0o755)).unwrap();
    set_primary_ssh_command(
        rig,
        &format!("{} {}", flipper.display(), rig.sshd.ssh_command()),
    );
    marker
}

/// Runs cron with `args` through [`flip_one_byte_once`] and checks the corruption was caught,
/// fetched again in the same run, and that file `30000` of the newer backup is `data`;
/// returns cron's stdout and stderr.
fn corruption_is_caught(rig: &PassiveRig, args: &[&str], data: &[u8]) -> (String, String) {
    let marker = flip_one_byte_once(rig);
    let mut all = vec!["cron"];
    all.extend_from_slice(args);
    let cron = rig.barsync(&all);
    assert!(cron.status.success(), "{}", describe(&cron));
    assert!(marker.exists(), "the flipping session never ran");
    assert!(
        String::from_utf8_lossy(&cron.stderr).contains("fetching them again"),
        "the corruption went unnoticed: {}",
        describe(&cron)
    );
    let ours = fs::read(
        rig.server_directory()
            .join("base/20240102T120000/data/base/1/30000"),
    )
    .unwrap();
    assert!(ours == data, "a corrupt file was published");
    assert!(temporary_files(&rig.home).is_empty());
    (
        String::from_utf8_lossy(&cron.stdout).into_owned(),
        String::from_utf8_lossy(&cron.stderr).into_owned(),
    )
}

#[test]
fn a_byte_flipped_in_flight_is_caught_and_the_file_fetched_again() {
    let primary = fixture_primary();
    let data = add_random_file(primary.path(), "30000", 4);
    let rig = PassiveRig::new(&primary.path().join("primary.conf"), &RigOptions::default());
    corruption_is_caught(&rig, &["-j", "1"], &data);
}

#[test]
fn a_byte_flipped_in_a_part_of_a_split_file_is_caught_and_the_part_fetched_again() {
    let primary = fixture_primary();
    let data = add_random_file(primary.path(), "30000", 8);
    let rig = PassiveRig::new(&primary.path().join("primary.conf"), &RigOptions::default());
    let (stdout, stderr) = corruption_is_caught(&rig, &["-j", "2", "--part-size", "1M"], &data);
    assert!(stdout.contains("split into 8 parts"), "{stdout}");
    let warning = stderr
        .lines()
        .find(|l| l.contains("fetching them again"))
        .unwrap();
    assert!(
        warning.contains("/30000"),
        "the flipped byte should have hit a part of the split file: {warning}"
    );
}

/// A tmpfs of `mib` MiB mounted on `path` (root only), unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, mib: usize) -> Tmpfs {
        fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "cannot mount a tmpfs on {} (the disk-full test needs root)",
            path.display()
        );
        Tmpfs(path.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_fails_cleanly_and_releases_the_space() {
    let primary = fixture_primary();
    add_random_file(primary.path(), "30001", 8);
    let rig = PassiveRig::new(&primary.path().join("primary.conf"), &RigOptions::default());
    let _tmpfs = Tmpfs::mount(&rig.home, 6);
    let cron = rig.barsync(&["cron"]);
    assert_eq!(cron.status.code(), Some(1), "{}", describe(&cron));
    let stderr = String::from_utf8_lossy(&cron.stderr);
    assert!(
        stderr.contains("No space left on device"),
        "{}",
        describe(&cron)
    );
    let info = fs::read_to_string(
        rig.server_directory()
            .join("meta/20240102T120000-backup.info"),
    )
    .unwrap();
    assert!(info.contains("status=FAILED"), "{info}");
    assert!(
        temporary_files(&rig.home).is_empty(),
        "temporary or partial files hold the space: {:?}",
        temporary_files(&rig.home)
    );
    assert!(
        !rig.server_directory()
            .join("base/20240102T120000/data/base/1/30001")
            .exists(),
        "a half-written file was published"
    );
    // The first backup (small) is complete and DONE, the catalog readable by Barman.
    let list = rig.barman(&["list-backups", "pg"]);
    assert!(list.status.success(), "{}", describe(&list));
    assert!(String::from_utf8_lossy(&list.stdout).contains("20240101T120000"));
}
