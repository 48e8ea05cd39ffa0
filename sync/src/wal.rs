//! Names in a Barman WAL archive and catalog, by Barman's grammar (`xlog._xlog_re`,
//! `utils.is_backup_id`): WAL segments, backup labels (`.backup`), `.partial` segments,
//! timeline `.history` files, the hash directory each lives in, and backup IDs.

use std::fmt;
use std::path::PathBuf;

/// A file name Barman archives in `wals/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalName {
    /// `TTTTTTTTLLLLLLLLSSSSSSSS`
    Segment {
        timeline: u32,
        log: u32,
        segment: u32,
    },
    /// `<segment>.OOOOOOOO.backup`
    BackupLabel {
        timeline: u32,
        log: u32,
        segment: u32,
        offset: u32,
    },
    /// `<segment>.partial`
    Partial {
        timeline: u32,
        log: u32,
        segment: u32,
    },
    /// `TTTTTTTT.history`
    History { timeline: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("'{0}' is not a WAL file name (segment, .backup, .partial or .history)")]
    NotWal(String),
    #[error("'{0}' is not a backup ID (YYYYMMDDTHHMMSS)")]
    NotBackupId(String),
}

/// PostgreSQL's smallest and largest WAL segment sizes (`initdb --wal-segsize`, and
/// `--with-wal-segsize` before version 11: a power of two from 1 MiB to 1 GiB).
pub const MIN_SEGMENT_SIZE: u64 = 1 << 20;
pub const MAX_SEGMENT_SIZE: u64 = 1 << 30;

/// Whether `size` is a WAL segment size PostgreSQL accepts.
pub fn is_segment_size(size: i128) -> bool {
    (MIN_SEGMENT_SIZE as i128..=MAX_SEGMENT_SIZE as i128).contains(&size)
        && (size as u64).is_power_of_two()
}

/// The largest file Barman archives for a WAL of segments of `segment_size` bytes: the
/// segment, plus what a compression or encryption format can add to incompressible data
/// (1/32 of it, and 64 KiB of headers). History and backup label files are far smaller.
pub fn archived_size_limit(segment_size: u64) -> u64 {
    segment_size + segment_size / 32 + (64 << 10)
}

fn hex8(text: &str) -> Option<u32> {
    (text.len() == 8 && text.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u32::from_str_radix(text, 16).ok())
        .flatten()
}

impl WalName {
    /// Parses a bare file name (no directory); upper- and lower-case hex are accepted.
    pub fn parse(name: &str) -> Result<WalName, NameError> {
        let not_wal = || NameError::NotWal(name.to_owned());
        if let Some(timeline) = name.strip_suffix(".history") {
            return hex8(timeline)
                .map(|timeline| WalName::History { timeline })
                .ok_or_else(not_wal);
        }
        let segment_text = name
            .get(..24)
            .filter(|text| text.is_ascii())
            .ok_or_else(not_wal)?;
        let timeline = hex8(&segment_text[..8]).ok_or_else(not_wal)?;
        let log = hex8(&segment_text[8..16]).ok_or_else(not_wal)?;
        let segment = hex8(&segment_text[16..24]).ok_or_else(not_wal)?;
        match &name[24..] {
            "" => Ok(WalName::Segment {
                timeline,
                log,
                segment,
            }),
            ".partial" => Ok(WalName::Partial {
                timeline,
                log,
                segment,
            }),
            suffix => {
                let offset = suffix
                    .strip_prefix('.')
                    .and_then(|rest| rest.strip_suffix(".backup"))
                    .and_then(hex8)
                    .ok_or_else(not_wal)?;
                Ok(WalName::BackupLabel {
                    timeline,
                    log,
                    segment,
                    offset,
                })
            }
        }
    }

    pub fn timeline(&self) -> u32 {
        match *self {
            WalName::Segment { timeline, .. }
            | WalName::BackupLabel { timeline, .. }
            | WalName::Partial { timeline, .. }
            | WalName::History { timeline } => timeline,
        }
    }

    /// `xlog.is_wal_file`: a plain segment (not history, label or partial).
    pub fn is_segment(&self) -> bool {
        matches!(self, WalName::Segment { .. })
    }

    /// `xlog.hash_dir`: `%08X%08X` of timeline and log (upper case), empty for history files.
    pub fn hash_dir(&self) -> String {
        match *self {
            WalName::History { .. } => String::new(),
            WalName::Segment { timeline, log, .. }
            | WalName::BackupLabel { timeline, log, .. }
            | WalName::Partial { timeline, log, .. } => format!("{timeline:08X}{log:08X}"),
        }
    }

    /// Path of `name` relative to `wals_directory` (`WalFileInfo.relpath`).
    pub fn relative_path(&self, name: &str) -> PathBuf {
        let hash_dir = self.hash_dir();
        if hash_dir.is_empty() {
            PathBuf::from(name)
        } else {
            PathBuf::from(hash_dir).join(name)
        }
    }
}

/// A backup ID, `YYYYMMDDTHHMMSS` as `utils.is_backup_id` accepts it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackupId(String);

impl BackupId {
    pub fn parse(text: &str) -> Result<BackupId, NameError> {
        let bytes = text.as_bytes();
        let valid = bytes.len() == 15
            && bytes[8] == b'T'
            && bytes[..8].iter().chain(&bytes[9..]).all(u8::is_ascii_digit);
        if valid {
            Ok(BackupId(text.to_owned()))
        } else {
            Err(NameError::NotBackupId(text.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar_and_hash_dirs() {
        let label = WalName::parse("00000002000000050000000A.00000020.backup").unwrap();
        assert_eq!(label.hash_dir(), "0000000200000005");
        assert!(!label.is_segment());
        assert_eq!(WalName::parse("00000001.history").unwrap().hash_dir(), "");
        let lower = WalName::parse("0000000a0000000b0000000c").unwrap();
        assert!(lower.is_segment());
        assert_eq!(lower.hash_dir(), "0000000A0000000B");
        assert_eq!(
            lower.relative_path("0000000a0000000b0000000c"),
            PathBuf::from("0000000A0000000B/0000000a0000000b0000000c")
        );
        assert!(matches!(
            WalName::parse("000000010000000000000002.partial").unwrap(),
            WalName::Partial { segment: 2, .. }
        ));
        for bad in [
            "",
            "xlog.db",
            "0000000100000000000000",
            "000000010000000000000002.backup",
            "0000000G.history",
            "000000010000000000000002.0000002.backup",
            "000000010000000000000002x",
        ] {
            assert!(WalName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn non_ascii_names_are_refused_not_a_panic() {
        // Found by the path_validate fuzz target: byte 8 (or 16) inside a multi-byte character
        // of a 24-byte prefix made the hex slicing panic.
        for bad in [
            "0000000\u{3f1}000000000000002",
            "000000010000000\u{e9}0000002",
            "0000000\u{3f1}1200a000000002.partial",
        ] {
            assert!(WalName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn backup_ids() {
        assert!(BackupId::parse("20240101T120000").is_ok());
        for bad in [
            "20240101T12000",
            "20240101t120000",
            "2024010aT120000",
            "20240101T120000x",
            "latest",
        ] {
            assert!(BackupId::parse(bad).is_err(), "{bad}");
        }
    }
}
