//! W5: many files of 2 KiB, copied once into an empty directory (against rsync, and rsync
//! `--fsync`, as durable as barsync) and then resynced with nothing changed, each beside the
//! floor of one ssh handshake. Owns the two cases and the generation of the files.

use std::fs;
use std::process::Command;

use super::{reset_dir, Context, Outcome};
use crate::harness::runner;
use crate::harness::{HarnessError, Result};

/// Size of a W5 file.
const SMALL_FILE: usize = 2048;

impl<'a> Context<'a> {
    pub(super) fn w5(&mut self) -> Result<Outcome> {
        self.ensure_w5()?;
        let count = self.options.small_files;
        let dst = self.work.join("dst");
        let target = dst.join("small");
        let pristine = self.work.join("gen/w5");
        let empty = || reset_dir(&dst);
        let initial = self.compare_with(
            "W5-initial",
            &format!("{count} x 2 KiB, initial copy"),
            self.copy_side(&self.ssh, &["-r"], "w5/", &target, Box::new(empty)),
            vec![
                (
                    "W5-initial".to_owned(),
                    self.rsync_side(
                        &self.ssh,
                        "rsync -a",
                        &["-a"],
                        "w5/",
                        &target,
                        Box::new(empty),
                    ),
                ),
                (
                    "W5-initial-fsync".to_owned(),
                    self.rsync_side(
                        &self.ssh,
                        "rsync -a --fsync",
                        &["-a", "--fsync"],
                        "w5/",
                        &target,
                        Box::new(empty),
                    ),
                ),
            ],
            vec![(
                "W5-initial-floor-handshake".to_owned(),
                self.ssh_handshake_floor(),
            )],
        )?;
        let synced = || {
            reset_dir(&dst)?;
            runner::run_quiet(Command::new("cp").arg("-a").arg(&pristine).arg(&target)).map(|_| ())
        };
        let resync = self.compare_with(
            "W5-resync",
            &format!("{count} x 2 KiB, resync, none changed"),
            self.copy_side(&self.ssh, &["-r"], "w5/", &target, Box::new(synced)),
            vec![(
                "W5-resync".to_owned(),
                self.rsync_side(
                    &self.ssh,
                    "rsync -a",
                    &["-a"],
                    "w5/",
                    &target,
                    Box::new(synced),
                ),
            )],
            vec![(
                "W5-resync-floor-handshake".to_owned(),
                self.ssh_handshake_floor(),
            )],
        )?;
        let (mut rows, mut floors) = (initial.rows, initial.floors);
        rows.extend(resync.rows);
        floors.extend(resync.floors);
        Ok(Outcome::RowsAndFloors(rows, floors))
    }

    pub(super) fn ensure_w5(&mut self) -> Result<()> {
        let pristine = self.work.join("gen/w5");
        if pristine.exists() {
            return Ok(());
        }
        let count = self.options.small_files;
        (self.progress)(&format!("   generating {count} files of 2 KiB"));
        let source = self.source_path("w5");
        fs::create_dir_all(&source).map_err(HarnessError::io("w5"))?;
        let data = crate::random_bytes(count * SMALL_FILE, 5);
        for (index, chunk) in data.chunks(SMALL_FILE).enumerate() {
            fs::write(source.join(format!("f{index:05}")), chunk)
                .map_err(HarnessError::io("w5 file"))?;
        }
        self.publish("w5")?;
        // The resync's destination: a copy with the same mtimes.
        runner::run_quiet(Command::new("cp").arg("-a").arg(&source).arg(&pristine))?;
        Ok(())
    }
}
