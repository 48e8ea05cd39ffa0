//! Helpers for the end-to-end tests.

pub mod binaries;
pub mod sshd;
