//! W1 (one new file of `size_mib` incompressible bytes) and W2 (the same file with 1% of it
//! rewritten, copied over the original, plus its in-place variant as Barman runs rsync): the
//! cases (with `rsync --fsync` beside plain rsync, and their floors), the generation of their
//! data (W8's segment is the same two files), and the file writers behind it.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{link_or_copy, reset_dir, size_label, Context, Outcome, MIB};
use crate::harness::report::Row;
use crate::harness::{HarnessError, Result};

/// W2: rewritten regions and their length (per GiB of file).
const REGIONS_PER_GIB: u64 = 100;
const REGION_LEN: usize = 100 * 1024;

impl<'a> Context<'a> {
    /// W1 against `rsync -a` and `rsync -a --fsync`, with the one-stream ssh floor, bare and
    /// written durably.
    pub(super) fn w1(&mut self) -> Result<Outcome> {
        self.ensure_w1()?;
        let size = size_label(self.options.size_mib);
        let dst = self.work.join("dst");
        let target = dst.join("big");
        let reset = || reset_dir(&dst);
        let floor_target = self.work.join("floor-w1");
        let compared = self.compare_with(
            "W1",
            &format!("new {size} file (incompressible)"),
            self.copy_side(&self.ssh, &[], "w1/big", &target, Box::new(reset)),
            vec![
                (
                    "W1".to_owned(),
                    self.rsync_side(
                        &self.ssh,
                        "rsync -a",
                        &["-a"],
                        "w1/big",
                        &target,
                        Box::new(reset),
                    ),
                ),
                (
                    "W1-fsync".to_owned(),
                    self.rsync_side(
                        &self.ssh,
                        "rsync -a --fsync",
                        &["-a", "--fsync"],
                        "w1/big",
                        &target,
                        Box::new(reset),
                    ),
                ),
            ],
            vec![
                ("W1-floor-ssh".to_owned(), self.ssh_stream_floor("w1/big")),
                (
                    "W1-floor-ssh-durable".to_owned(),
                    self.ssh_stream_durable_floor("w1/big", &floor_target),
                ),
            ],
        )?;
        Ok(Outcome::RowsAndFloors(compared.rows, compared.floors))
    }

    /// W2 against `rsync -a` and `rsync -a --fsync`, with the local rebuild floors (`cp` +
    /// `sync -f`, `copy_file_range` + `fsync` of the basis); W2-inplace against rsync
    /// `--inplace` as Barman runs it.
    pub(super) fn w2(&mut self) -> Result<Outcome> {
        self.ensure_w2()?;
        let size = size_label(self.options.size_mib);
        let dst = self.work.join("dst");
        let target = dst.join("big");
        let rebuilt = dst.join("rebuilt");
        let basis = self.work.join("gen/big.v1");
        let reset = || {
            reset_dir(&dst)?;
            fs::copy(&basis, &target).map_err(HarnessError::io("copying the W2 basis"))?;
            set_old_mtime(&target)
        };
        let ssh = self.ssh.clone();
        let compared = self.compare_with(
            "W2",
            &format!("{size} file, 1% rewritten"),
            self.copy_side(&ssh, &[], "w2/big", &target, Box::new(reset)),
            vec![
                (
                    "W2".to_owned(),
                    self.rsync_side(
                        &ssh,
                        "rsync -a",
                        &["-a"],
                        "w2/big",
                        &target,
                        Box::new(reset),
                    ),
                ),
                (
                    "W2-fsync".to_owned(),
                    self.rsync_side(
                        &ssh,
                        "rsync -a --fsync",
                        &["-a", "--fsync"],
                        "w2/big",
                        &target,
                        Box::new(reset),
                    ),
                ),
            ],
            vec![
                ("W2-floor-cp".to_owned(), self.cp_floor(&basis, &rebuilt)),
                (
                    "W2-floor-copy_file_range".to_owned(),
                    self.copy_file_range_floor(&basis, &rebuilt),
                ),
            ],
        )?;
        let mut rows = compared.rows;
        rows.push(self.w2_case(
            &ssh,
            "W2-inplace",
            &format!("{size} file, 1% rewritten, in place"),
            &["--inplace"],
            "rsync -rLKpts --inplace",
            &["-rLKpts", "--inplace"],
        )?);
        Ok(Outcome::RowsAndFloors(rows, compared.floors))
    }

    pub(super) fn w2_case(
        &self,
        ssh: &str,
        id: &str,
        title: &str,
        barsync_flags: &[&str],
        rsync_tool: &str,
        rsync_flags: &[&str],
    ) -> Result<Row> {
        let dst = self.work.join("dst");
        let target = dst.join("big");
        let basis = self.work.join("gen/big.v1");
        let reset = || {
            reset_dir(&dst)?;
            fs::copy(&basis, &target).map_err(HarnessError::io("copying the W2 basis"))?;
            set_old_mtime(&target)
        };
        self.compare(
            id,
            title,
            self.copy_side(ssh, barsync_flags, "w2/big", &target, Box::new(reset)),
            self.rsync_side(
                ssh,
                rsync_tool,
                rsync_flags,
                "w2/big",
                &target,
                Box::new(reset),
            ),
        )
    }

    pub(super) fn ensure_w1(&mut self) -> Result<()> {
        let v1 = self.ensure_v1()?;
        let source = self.source_path("w1");
        if !source.join("big").exists() {
            fs::create_dir_all(&source).map_err(HarnessError::io("w1"))?;
            link_or_copy(&v1, &source.join("big"))?;
            self.publish("w1")?;
        }
        Ok(())
    }

    pub(super) fn ensure_w2(&mut self) -> Result<()> {
        if self.have_w2 {
            return Ok(());
        }
        self.ensure_w1()?;
        let (_, v2) = self.ensure_v2()?;
        let source = self.source_path("w2");
        fs::create_dir_all(&source).map_err(HarnessError::io("w2"))?;
        link_or_copy(&v2, &source.join("big"))?;
        self.publish("w2")?;
        self.have_w2 = true;
        Ok(())
    }

    /// `gen/big.v1`: W1's file of `size_mib` incompressible bytes (generated when missing).
    fn ensure_v1(&mut self) -> Result<PathBuf> {
        let v1 = self.work.join("gen/big.v1");
        if !v1.exists() {
            (self.progress)(&format!(
                "   generating {} of incompressible data",
                size_label(self.options.size_mib)
            ));
            write_random_file(&v1, self.options.size_mib * MIB, 1)
                .map_err(HarnessError::io("generating the W1 file"))?;
        }
        Ok(v1)
    }

    /// `gen/big.v2`: a copy of `gen/big.v1` with 1% rewritten (W2, W8), generated once per
    /// run. Returns both (v1, v2).
    pub(super) fn ensure_v2(&mut self) -> Result<(PathBuf, PathBuf)> {
        let v1 = self.ensure_v1()?;
        let v2 = self.work.join("gen/big.v2");
        if self.have_v2 {
            return Ok((v1, v2));
        }
        let len = self.options.size_mib * MIB;
        let regions = (REGIONS_PER_GIB * self.options.size_mib)
            .div_ceil(1024)
            .max(1);
        (self.progress)(&format!(
            "   rewriting {regions} regions of 100 KiB in a copy of the W1 file"
        ));
        fs::copy(&v1, &v2).map_err(HarnessError::io("copying W1"))?;
        rewrite_regions(&v2, len, regions, REGION_LEN, 2)
            .map_err(HarnessError::io("rewriting W2 regions"))?;
        self.have_v2 = true;
        Ok((v1, v2))
    }
}

/// Sets the mtime of `path` to 2020-01-01, so that both tools see the basis as out of date.
fn set_old_mtime(path: &Path) -> Result<()> {
    let file = fs::File::options()
        .write(true)
        .open(path)
        .map_err(HarnessError::io(path.display().to_string()))?;
    let old = std::time::UNIX_EPOCH + Duration::from_secs(1_577_836_800);
    file.set_modified(old)
        .map_err(HarnessError::io(path.display().to_string()))
}

/// Writes `len` incompressible bytes, 8 MiB at a time (no whole-file buffer).
pub fn write_random_file(path: &Path, len: u64, seed: u64) -> io::Result<()> {
    let mut file = io::BufWriter::new(fs::File::create(path)?);
    let chunk = 8 * MIB;
    let mut written = 0;
    let mut index = 0;
    while written < len {
        let n = chunk.min(len - written);
        file.write_all(&crate::random_bytes(
            n as usize,
            seed.wrapping_mul(1_000_003) + index,
        ))?;
        written += n;
        index += 1;
    }
    file.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// Rewrites `regions` regions of `region_len` bytes in place, one at a scattered offset in
/// each of `regions` equal spans of the file (W2).
pub fn rewrite_regions(
    path: &Path,
    len: u64,
    regions: u64,
    region_len: usize,
    seed: u64,
) -> io::Result<()> {
    let file = fs::File::options().write(true).open(path)?;
    let span = len / regions.max(1);
    let jitter = crate::random_bytes(regions as usize * 8, seed ^ 0xfeed);
    for region in 0..regions {
        let offset = region as usize * 8;
        let random = u64::from_le_bytes(jitter[offset..offset + 8].try_into().expect("8 bytes"));
        let room = span.saturating_sub(region_len as u64).max(1);
        let start = (region * span + random % room).min(len.saturating_sub(region_len as u64));
        file.write_all_at(&crate::random_bytes(region_len, seed + region), start)?;
    }
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_rewritten_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_random_file(&path, 4 * MIB + 5, 3).unwrap();
        let before = fs::read(&path).unwrap();
        rewrite_regions(&path, before.len() as u64, 4, 1000, 9).unwrap();
        let after = fs::read(&path).unwrap();
        assert_eq!(before.len(), after.len());
        let changed = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        assert!(changed > 3900 && changed <= 4000, "{changed}");
    }
}
