//! [`TransferTotals`]: what one copy moved, summed over its sessions.

use std::collections::BTreeMap;

use crate::file_error::VerifiedBy;

/// Bytes and files moved by one copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransferTotals {
    /// Files in the copy.
    pub files: u64,
    /// Their total size.
    pub bytes: u64,
    /// Files hard-linked to an identical file of another backup (`reuse_backup = link`).
    pub linked: u64,
    /// Bytes rebuilt from local data instead of received.
    pub reused_bytes: u64,
    /// Bytes received from the far side (file data, listings, protocol).
    pub received_bytes: u64,
    /// Bytes sent to the far side (requests, signatures).
    pub sent_bytes: u64,
    /// Sessions used (opened for this copy, or left open by an earlier copy of the same run).
    pub sessions: u64,
    /// Files fetched in parts, shared by several sessions.
    pub split_files: u64,
    /// The number of parts of those files.
    pub parts: u64,
    /// How files were verified, with counts.
    pub verified_by: BTreeMap<VerifiedBy, u64>,
}

impl TransferTotals {
    /// Adds `other` to these totals.
    pub fn add(&mut self, other: &TransferTotals) {
        self.files += other.files;
        self.bytes += other.bytes;
        self.linked += other.linked;
        self.reused_bytes += other.reused_bytes;
        self.received_bytes += other.received_bytes;
        self.sent_bytes += other.sent_bytes;
        self.sessions += other.sessions;
        self.split_files += other.split_files;
        self.parts += other.parts;
        for (how, count) in &other.verified_by {
            *self.verified_by.entry(*how).or_default() += count;
        }
    }
}
