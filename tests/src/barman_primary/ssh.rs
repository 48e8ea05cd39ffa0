//! Reaching the primary over ssh as a passive node does: the sshd_config lines that put the
//! `barman` wrapper first in PATH, and starting a [`TestSshd`] with them.

use std::io;
use std::path::Path;
use std::process::{Command, Stdio};

use super::process::check_output;
use super::{BarmanPrimary, STANDARD_PATH};
use crate::sshd::TestSshd;

impl BarmanPrimary {
    /// sshd_config lines that make ssh sessions find [`BarmanPrimary::remote_path_dir`] first:
    /// `SetEnv PATH=<remote_path_dir>:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`.
    pub fn sshd_config_lines(&self) -> Vec<String> {
        self.sshd_config_lines_with_path(&[])
    }

    /// Like [`BarmanPrimary::sshd_config_lines`] with `extra_directories` in PATH between the
    /// wrapper directory and the standard directories (e.g. where a test's `barsync` binary
    /// is). The paths must not contain spaces.
    pub fn sshd_config_lines_with_path(&self, extra_directories: &[&Path]) -> Vec<String> {
        let mut path = self.remote_path_dir().display().to_string();
        for directory in extra_directories {
            path.push(':');
            path.push_str(&directory.display().to_string());
        }
        vec![format!("SetEnv PATH={path}:{STANDARD_PATH}")]
    }

    /// Starts a [`TestSshd`] with [`BarmanPrimary::sshd_config_lines`], and checks that `barman`
    /// in its sessions is this primary's wrapper: its `ssh_command()` is then a working
    /// `primary_ssh_command` for a passive node.
    pub fn start_sshd(&self) -> io::Result<TestSshd> {
        self.start_sshd_with_path(&[])
    }

    /// Like [`BarmanPrimary::start_sshd`] with `extra_directories` in the sessions' PATH (see
    /// [`BarmanPrimary::sshd_config_lines_with_path`]).
    pub fn start_sshd_with_path(&self, extra_directories: &[&Path]) -> io::Result<TestSshd> {
        let sshd = TestSshd::start_with_config_lines(
            &self.sshd_config_lines_with_path(extra_directories),
        )?;
        let output = Command::new("sh")
            .arg("-c")
            .arg(format!("{} 'command -v barman'", sshd.ssh_command()))
            .stdin(Stdio::null())
            .output()?;
        check_output(&output, "ssh ... command -v barman")?;
        let found = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        let expected = self.remote_path_dir().join("barman");
        if Path::new(&found) != expected {
            return Err(io::Error::other(format!(
                "over ssh, `barman` resolves to {found:?}, not {}: the login shell's rc files \
                 put another barman first in PATH",
                expected.display()
            )));
        }
        Ok(sshd)
    }
}
