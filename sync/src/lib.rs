//! Barman knowledge: configuration, catalog, sync-info and the passive node.
//!
//! barsync shares a `barman_home` with Barman 3.20.1, so everything here reads and writes
//! Barman's formats exactly ([`config`], [`backup_info`], [`xlogdb`], [`wal`], [`lock`],
//! [`catalog`]) and speaks its sync-info JSON ([`syncinfo`]), with Python's own formatting
//! rules reimplemented in [`python`].
//!
//! # Deliberate differences from Barman 3.20.1
//! - `sync-info SERVER LAST_WAL 0` is accepted: 0 is the offset of the first xlog db line, and
//!   Barman's rejection of it wedges a passive whose primary had a one-line xlog db.
//! - A full sync-info request keeps the `<TLI>.history` file of the oldest backup's timeline,
//!   which Barman drops because `'.' < '0'` (Barman issue #1102).
//! - A backup entry received from a primary is turned into backup.info with `backup_label`
//!   decoded once, as on the primary; Barman's passive stores it double-encoded.
//! - Keys of a primary's sync-info that barsync does not know are skipped (Barman's passive
//!   crashes on them); unknown configuration options are ignored without Barman's warning.
//! - Files are fsynced before they are renamed into place; `primary.info` is written with
//!   fsync too. Configuration errors name the file and line instead of a Python traceback.
//! - `backup_options` with several values is joined in parse order, where Barman uses Python's
//!   per-process set order (random between runs).
//! - Not modelled: server models applied by `.active-model.auto`, cloud storage for WALs or
//!   backups, GPG encryption detection when rebuilding the xlog db, and a `primary_conninfo`
//!   standby check that needs PostgreSQL.

pub mod backup_info;
pub mod catalog;
pub mod config;
pub mod fsutil;
pub mod lock;
pub mod passive;
pub mod python;
pub mod syncinfo;
pub mod wal;
pub mod xlogdb;
