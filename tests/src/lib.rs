//! Helpers for the end-to-end tests.

pub mod barman_primary;
pub mod binaries;
pub mod follow_load;
pub mod leftovers;
pub mod noise;
pub mod passive_rig;
pub mod proxy;
pub mod sshd;
