//! The floors of issue 17: what the machine alone takes for the bytes of a case, measured in
//! the same rounds as the case (sides of [`Context::compare_with`]), so that barsync's time can
//! be read as a multiple of what cannot be avoided:
//!
//! - one ssh stream ([`Context::ssh_stream_floor`]): `ssh -c aes128-gcm@openssh.com HOST cat
//!   FILE > /dev/null` through the same sshd: OpenSSH's own cipher and pipe, nothing else;
//! - the same stream written to a file and made durable
//!   ([`Context::ssh_stream_durable_floor`]): `… > TO && sync -f TO`, what a copy that
//!   fsyncs pays at least;
//! - one ssh handshake ([`Context::ssh_handshake_floor`]): `ssh HOST true`, W5's floor;
//! - a local rebuild with `cp` ([`Context::cp_floor`]): `cp FROM TO && sync -f TO`, reading the
//!   basis, writing the new file and making it durable (coreutils' `cp` picks its own copy
//!   method: `copy_file_range` where it can);
//! - a local rebuild with `copy_file_range` ([`Context::copy_file_range_floor`]): the kernel's
//!   own copy of the file, then `fsync`, measured inside the harness (no process to start).

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use super::{Context, Side};
use crate::harness::runner::{measure, Measurement};
use crate::harness::{HarnessError, Result};

/// The cipher of the ssh floor (what barsync copy picks when the ssh command names none).
pub const FLOOR_CIPHER: &str = "aes128-gcm@openssh.com";

impl<'a> Context<'a> {
    /// `ssh -c aes128-gcm@openssh.com [options] HOST cat REMOTE/relative > /dev/null`.
    pub(super) fn ssh_stream_floor<'s>(&'s self, relative: &'s str) -> Side<'s> {
        Side {
            tool: format!("ssh -c {FLOOR_CIPHER} cat > /dev/null"),
            setup: Box::new(|| Ok(())),
            run: Box::new(move || {
                let script = format!("{} > /dev/null", self.ssh_cat(relative));
                measure_script(script)
            }),
            wire: |_| None,
        }
    }

    /// The same stream written to `to` and made durable: `ssh … cat … > TO && sync -f TO`
    /// (TO removed before each run). What a copy that fsyncs, as barsync does, cannot beat.
    pub(super) fn ssh_stream_durable_floor<'s>(
        &'s self,
        relative: &'s str,
        to: &'s Path,
    ) -> Side<'s> {
        Side {
            tool: format!("ssh -c {FLOOR_CIPHER} cat > file + sync -f"),
            setup: Box::new(move || remove(to)),
            run: Box::new(move || {
                let to = shell_word(&to.display().to_string());
                let script = format!("{} > {to} && sync -f {to}", self.ssh_cat(relative));
                measure_script(script)
            }),
            wire: |_| None,
        }
    }

    /// `ssh -c aes128-gcm@openssh.com [options] HOST cat REMOTE/relative`, as shell words.
    fn ssh_cat(&self, relative: &str) -> String {
        let remote = format!("cat '{}/{relative}'", self.remote_dir);
        self.ssh_to_host(Some(FLOOR_CIPHER), &remote)
    }

    /// `ssh [-c cipher] [options] HOST remote_command`, as shell words.
    fn ssh_to_host(&self, cipher: Option<&str>, remote_command: &str) -> String {
        let mut words: Vec<String> = self.ssh.split_whitespace().map(str::to_owned).collect();
        if let Some(cipher) = cipher {
            words.insert(1, "-c".into());
            words.insert(2, cipher.into());
        }
        words.push(self.host.clone());
        words.push(remote_command.to_owned());
        shell_words(&words)
    }

    /// `ssh [options] HOST true`: one connection and its handshake, what any copy over ssh
    /// pays before its first byte (W5's floor: its files are few bytes each).
    pub(super) fn ssh_handshake_floor(&self) -> Side<'_> {
        Side {
            tool: "ssh true (the handshake)".to_owned(),
            setup: Box::new(|| Ok(())),
            run: Box::new(move || measure_script(self.ssh_to_host(None, "true"))),
            wire: |_| None,
        }
    }

    /// `cp FROM TO && sync -f TO` (TO removed before each run).
    pub(super) fn cp_floor<'s>(&'s self, from: &'s Path, to: &'s Path) -> Side<'s> {
        Side {
            tool: "cp + sync -f (local rebuild)".to_owned(),
            setup: Box::new(move || remove(to)),
            run: Box::new(move || {
                let script = format!(
                    "cp {from} {to} && sync -f {to}",
                    from = shell_word(&from.display().to_string()),
                    to = shell_word(&to.display().to_string())
                );
                measure_script(script)
            }),
            wire: |_| None,
        }
    }

    /// `copy_file_range` of FROM into a new TO, then `fsync` (in the harness's own thread).
    pub(super) fn copy_file_range_floor<'s>(&'s self, from: &'s Path, to: &'s Path) -> Side<'s> {
        Side {
            tool: "copy_file_range + fsync (local rebuild)".to_owned(),
            setup: Box::new(move || remove(to)),
            run: Box::new(move || {
                let run = kernel_copy(from, to).map_err(HarnessError::io(format!(
                    "copy_file_range {} to {}",
                    from.display(),
                    to.display()
                )))?;
                Ok((
                    run,
                    format!(
                        "copy_file_range({}, {}) + fsync",
                        from.display(),
                        to.display()
                    ),
                ))
            }),
            wire: |_| None,
        }
    }
}

/// Runs `script` with `sh -c`, measured; the script is kept for the report.
fn measure_script(script: String) -> Result<(Measurement, String)> {
    let mut command = Command::new("sh");
    command.args(["-c", &script]);
    Ok((measure(&mut command)?, script))
}

fn remove(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(HarnessError::io(path.display().to_string())(error)),
    }
}

/// Copies `from` to a new `to` with `copy_file_range` and fsyncs it: wall time and this
/// thread's CPU (no child process: the peak RSS is not measured, 0).
fn kernel_copy(from: &Path, to: &Path) -> std::io::Result<Measurement> {
    let cpu_before = thread_cpu_seconds();
    let start = Instant::now();
    let source = File::open(from)?;
    let target = File::create(to)?;
    let mut left = source.metadata()?.len();
    while left > 0 {
        let chunk = left.min(1 << 30) as usize;
        // SAFETY: both descriptors are open; null offsets use (and advance) the file offsets.
        let copied = unsafe {
            libc::copy_file_range(
                source.as_raw_fd(),
                std::ptr::null_mut(),
                target.as_raw_fd(),
                std::ptr::null_mut(),
                chunk,
                0,
            )
        };
        match copied {
            n if n > 0 => left -= n as u64,
            0 => break,
            _ => return Err(std::io::Error::last_os_error()),
        }
    }
    target.sync_all()?;
    Ok(Measurement {
        seconds: start.elapsed().as_secs_f64(),
        cpu_seconds: thread_cpu_seconds() - cpu_before,
        ..Measurement::default()
    })
}

fn thread_cpu_seconds() -> f64 {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct, and getrusage only
    // writes it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a live local of the type getrusage writes.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// `word` quoted for `sh` when it needs to be.
pub(super) fn shell_word(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-=@:,+".contains(c))
    {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

pub(super) fn shell_words(words: &[String]) -> String {
    words
        .iter()
        .map(|word| shell_word(word))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_for_sh() {
        assert_eq!(shell_word("/tmp/a-b_c.d"), "/tmp/a-b_c.d");
        assert_eq!(shell_word("cat '/x y'"), r#"'cat '\''/x y'\'''"#);
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn the_kernel_copy_floor_copies_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("from");
        let to = dir.path().join("to");
        let data: Vec<u8> = (0..3_000_003u32).map(|i| (i * 7 % 251) as u8).collect();
        fs::write(&from, &data).unwrap();
        let run = kernel_copy(&from, &to).unwrap();
        assert_eq!(fs::read(&to).unwrap(), data);
        assert!(run.seconds > 0.0);
    }
}
