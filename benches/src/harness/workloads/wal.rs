//! W3: WAL segments of 16 MiB, archived by the Barman primary while PostgreSQL 15 runs
//! pgbench, topped up with synthetic segments when PostgreSQL/Barman are missing or too slow.
//! Owns the case, the collection of real segments and the synthetic segment writer.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{fixture, link_or_copy, reset_dir, Context, Outcome, MIB};
use crate::harness::report::Row;
use crate::harness::{HarnessError, Result};

const WAL_SEGMENT: u64 = 16 * MIB;
/// How long W3 may run pgbench to get its segments before topping up with synthetic ones.
const WAL_GENERATION_LIMIT: Duration = Duration::from_secs(900);

impl<'a> Context<'a> {
    pub(super) fn w3(&mut self) -> Result<Outcome> {
        self.ensure_w3()?;
        let ssh = self.ssh.clone();
        Ok(Outcome::Rows(vec![self.w3_case(&ssh, "W3")?]))
    }

    pub(super) fn w3_case(&self, ssh: &str, id: &str) -> Result<Row> {
        let dst = self.work.join("dst");
        let target = dst.join("wals");
        let reset = || reset_dir(&dst);
        self.compare(
            id,
            &format!("{} WAL segments of 16 MiB", self.options.wal_segments),
            self.copy_side(ssh, &["-r"], "w3/", &target, Box::new(reset)),
            self.rsync_side(ssh, "rsync -a", &["-a"], "w3/", &target, Box::new(reset)),
        )
    }

    pub(super) fn ensure_w3(&mut self) -> Result<()> {
        if self.have_w3 {
            return Ok(());
        }
        let source = self.source_path("w3");
        let _ = fs::remove_dir_all(&source);
        fs::create_dir_all(&source).map_err(HarnessError::io("w3"))?;
        let wanted = self.options.wal_segments;
        let mut real = 0;
        if self.primary_unavailable().is_none() {
            self.ensure_primary_started()?;
            real = self.collect_wal_segments(&source, wanted)?;
        }
        if real < wanted {
            (self.progress)(&format!(
                "   {} synthetic WAL segments (stand-in)",
                wanted - real
            ));
            for index in real..wanted {
                let name = format!("00000001000000FF{:08X}", index);
                write_synthetic_wal(&source.join(name), index as u64)
                    .map_err(HarnessError::io("synthetic WAL"))?;
            }
            self.notes.push(format!(
                "W3: {} of {wanted} WAL segments are a synthetic stand-in ({}): 8 KiB records of \
                 1 KiB random bytes and 7 KiB of pgbench-like tuples (zstd -3 ratio about 4x, \
                 like pgbench WAL)",
                wanted - real,
                self.primary_unavailable()
                    .unwrap_or_else(|| "pgbench did not produce enough WAL in time".into())
            ));
        } else {
            self.notes.push(format!(
                "W3: {wanted} WAL segments archived by the Barman primary while PostgreSQL 15 ran pgbench -i and pgbench (scale {})",
                self.options.scale
            ));
        }
        self.publish("w3")?;
        self.have_w3 = true;
        Ok(())
    }

    /// Runs pgbench until the primary has archived `wanted` full segments (or the time limit
    /// passes), then hard-links the first `wanted` into `destination`. Returns how many.
    fn collect_wal_segments(&mut self, destination: &Path, wanted: usize) -> Result<usize> {
        let primary = &self.primary.as_ref().expect("started").primary;
        let wals = primary.barman_home().join("pg/wals");
        let start = Instant::now();
        (self.progress)(&format!(
            "   running pgbench until {wanted} WAL segments are archived"
        ));
        let mut segments;
        loop {
            fixture(|| primary.archive_wals())?;
            segments = full_segments(&wals);
            (self.progress)(&format!(
                "   {} segments after {:.0} s",
                segments.len(),
                start.elapsed().as_secs_f64()
            ));
            if segments.len() >= wanted || start.elapsed() > WAL_GENERATION_LIMIT {
                break;
            }
            // A checkpoint first: the next updates write full-page images, as after each
            // checkpoint on a real server.
            fixture(|| primary.query("CHECKPOINT"))?;
            fixture(|| primary.pgbench_run(5000))?;
        }
        let taken = segments.len().min(wanted);
        for segment in &segments[..taken] {
            let name = segment.file_name().expect("segment name");
            link_or_copy(segment, &destination.join(name))?;
        }
        Ok(taken)
    }
}

/// Full 16 MiB WAL segments below `wals` (one level of timeline/log directories), by name.
fn full_segments(wals: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for directory in fs::read_dir(wals).into_iter().flatten().flatten() {
        for file in fs::read_dir(directory.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = file.file_name().to_string_lossy().into_owned();
            let is_segment = name.len() == 24 && name.chars().all(|c| c.is_ascii_hexdigit());
            if is_segment && file.metadata().is_ok_and(|m| m.len() == WAL_SEGMENT) {
                found.push(file.path());
            }
        }
    }
    found.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    found
}

/// A synthetic 16 MiB WAL segment: 8 KiB records of 1 KiB random bytes then 7 KiB of
/// pgbench-like tuples (counters and blank filler), so that it compresses about like pgbench
/// WAL does.
pub fn write_synthetic_wal(path: &Path, seed: u64) -> io::Result<()> {
    let mut data = Vec::with_capacity(WAL_SEGMENT as usize);
    let random = crate::random_bytes(WAL_SEGMENT as usize / 8, seed + 77);
    let mut counter = seed * 1_000_000;
    for page in 0..(WAL_SEGMENT as usize / 8192) {
        data.extend_from_slice(&random[page * 1024..page * 1024 + 1024]);
        let mut tuples = Vec::with_capacity(7168);
        while tuples.len() < 7168 {
            counter += 1;
            tuples.extend_from_slice(
                format!(
                    "{:>10}|{:>4}|{:>8}|{:84}",
                    counter,
                    counter % 50,
                    counter % 9973,
                    ""
                )
                .as_bytes(),
            );
        }
        data.extend_from_slice(&tuples[..7168]);
    }
    fs::write(path, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_synthetic_segment_is_16_mib() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        write_synthetic_wal(&path, 1).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), WAL_SEGMENT);
    }
}
