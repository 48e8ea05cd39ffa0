//! Barman knowledge: configuration, catalog, sync-info and the passive node.

pub mod backup_info;
pub mod catalog;
pub mod config;
pub mod fsutil;
pub mod lock;
pub mod python;
pub mod syncinfo;
pub mod wal;
pub mod xlogdb;
