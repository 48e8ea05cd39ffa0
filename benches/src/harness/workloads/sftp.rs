//! W10: the SFTP fallback (no barsync on the far side: `--remote-barsync` names a program that
//! does not exist), on W1's file and W5's files, against OpenSSH's own `sftp` client (batch
//! mode, through the same ssh command: `sftp -S` runs a wrapper around it) and `rsync -a`.
//! barsync's time includes its attempt to start barsync there (one ssh connection) and the
//! verification by the host's checksum tool, which OpenSSH's `sftp` does not do.

use std::fs;
use std::path::Path;
use std::process::Command;

use super::floors::shell_words;
use super::{reset_dir, size_label, Context, Outcome, Side};
use crate::harness::runner::{self, barsync_wire_bytes, measure};
use crate::harness::{HarnessError, Result};

/// What barsync is told to run on the far side: nothing runs there.
const NO_BARSYNC: &str = "/nonexistent/barsync";

impl<'a> Context<'a> {
    pub(super) fn w10(&mut self) -> Result<Outcome> {
        self.ensure_w1()?;
        self.ensure_w5()?;
        let wrapper = self.ssh_wrapper()?;
        let dst = self.work.join("dst");
        let big = dst.join("big");
        let small = dst.join("small");
        let empty = || reset_dir(&dst);
        let size = size_label(self.options.size_mib);
        let w1 = self.compare_with(
            "W1-sftp",
            &format!("new {size} file (incompressible), SFTP fallback"),
            self.sftp_copy_side(&[], "w1/big", &big, Box::new(empty)),
            vec![
                (
                    "W1-sftp".to_owned(),
                    self.openssh_sftp_side(&wrapper, "get", "w1/big", &big, Box::new(empty)),
                ),
                (
                    "W1-sftp-rsync".to_owned(),
                    self.rsync_side(
                        &self.ssh,
                        "rsync -a",
                        &["-a"],
                        "w1/big",
                        &big,
                        Box::new(empty),
                    ),
                ),
            ],
            vec![],
        )?;
        let count = self.options.small_files;
        let w5 = self.compare_with(
            "W5-sftp",
            &format!("{count} x 2 KiB, initial copy, SFTP fallback"),
            self.sftp_copy_side(&["-r"], "w5/", &small, Box::new(empty)),
            vec![
                (
                    "W5-sftp".to_owned(),
                    self.rsync_side(
                        &self.ssh,
                        "rsync -a",
                        &["-a"],
                        "w5/",
                        &small,
                        Box::new(empty),
                    ),
                ),
                (
                    "W5-sftp-openssh".to_owned(),
                    self.openssh_sftp_side(&wrapper, "get -r", "w5", &small, Box::new(empty)),
                ),
            ],
            vec![],
        )?;
        let mut rows = w1.rows;
        rows.extend(w5.rows);
        Ok(Outcome::Rows(rows))
    }

    /// `barsync copy --remote-barsync /nonexistent/barsync [flags] HOST:REMOTE/source target`.
    fn sftp_copy_side<'s>(
        &'s self,
        flags: &'s [&'s str],
        source: &'s str,
        target: &'s Path,
        setup: Box<dyn FnMut() -> Result<()> + 's>,
    ) -> Side<'s> {
        let mut tool = "barsync copy (SFTP)".to_owned();
        for flag in flags {
            tool.push(' ');
            tool.push_str(flag);
        }
        Side {
            tool,
            setup,
            run: Box::new(move || {
                let mut command = Command::new(&self.options.barsync);
                command
                    .arg("copy")
                    .args(["--remote-barsync", NO_BARSYNC, "-e", &self.ssh])
                    .args(flags)
                    .arg(self.remote_spec(source))
                    .arg(target);
                let what = runner::describe(&command);
                Ok((measure(&mut command)?, what))
            }),
            wire: barsync_wire_bytes,
        }
    }

    /// `sftp -q -S WRAPPER -b BATCH HOST` with the batch `GET REMOTE/source target`.
    fn openssh_sftp_side<'s>(
        &'s self,
        wrapper: &'s Path,
        get: &'s str,
        source: &'s str,
        target: &'s Path,
        setup: Box<dyn FnMut() -> Result<()> + 's>,
    ) -> Side<'s> {
        Side {
            tool: format!("OpenSSH sftp {get}"),
            setup,
            run: Box::new(move || {
                let batch = self.work.join("gen/sftp-batch");
                fs::write(
                    &batch,
                    format!(
                        "{get} \"{}/{source}\" \"{}\"\n",
                        self.remote_dir,
                        target.display()
                    ),
                )
                .map_err(HarnessError::io("the sftp batch file"))?;
                let mut command = Command::new("sftp");
                command
                    .arg("-q")
                    .arg("-S")
                    .arg(wrapper)
                    .arg("-b")
                    .arg(&batch)
                    .arg(&self.host);
                let what = runner::describe(&command);
                Ok((measure(&mut command)?, what))
            }),
            wire: |_| None,
        }
    }

    /// A script that runs the ssh command with the arguments `sftp` gives it (`sftp -S`).
    fn ssh_wrapper(&self) -> Result<std::path::PathBuf> {
        let words: Vec<String> = self.ssh.split_whitespace().map(str::to_owned).collect();
        let path = self.work.join("gen/ssh-for-sftp");
        fs::write(
            &path,
            format!("#!/bin/sh\nexec {} \"$@\"\n", shell_words(&words)),
        )
        .map_err(HarnessError::io("the ssh wrapper for sftp"))?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
            .map_err(HarnessError::io("the ssh wrapper for sftp"))?;
        Ok(path)
    }
}
