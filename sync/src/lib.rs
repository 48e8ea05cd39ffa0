//! Barman knowledge: configuration, catalog, sync-info and the passive node.

pub mod config;
pub mod python;
