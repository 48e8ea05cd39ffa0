//! Barman knowledge: configuration, catalog, sync-info and the passive node.
//!
//! barsync shares a `barman_home` with Barman 3.20.1, so everything here reads and writes
//! Barman's formats exactly ([`config`], [`backup_info`], [`xlogdb`], [`wal`], [`lock`],
//! [`catalog`]) and speaks its sync-info JSON ([`syncinfo`]), with Python's own formatting
//! rules reimplemented in [`python`]. [`passive`] is the passive node itself: sync-backup,
//! sync-wals and cron through the `transfer_engine` delta engine. [`fixture`] writes a fake
//! primary (a catalog without PostgreSQL) for the demo, the tests and the bench.
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
//! - A primary's failing sync-info is reported with its error output joined on one line (Barman
//!   keeps ssh's newlines: a multi-line ERROR and a blank line in the log).
//! - Files are fsynced before they are renamed into place; `primary.info` is written with
//!   fsync too. Configuration errors name the file and line instead of a Python traceback.
//! - `backup_options` with several values is joined in parse order, where Barman uses Python's
//!   per-process set order (random between runs).
//! - The passive node ([`passive`]): cron copies every missing backup in one run (Barman one
//!   per run) and waits for it; sync-backup resolves the shortcuts `latest`, `oldest`,
//!   `last-failed`; a successful retry clears the backup's old `error`; xlog db lines are
//!   appended only for WALs not listed yet (Barman duplicates them on a fresh passive and after
//!   `sync-wals.info` is deleted), and a malformed `sync-wals.info` means "from the start" with
//!   a warning instead of a failure; a `last_position` of 0 is sent as a full request; every
//!   backup ID and WAL name from a primary is checked against Barman's grammar; every file is
//!   verified against the sender's digest before it is published, and a backup is DONE only
//!   after its directories are fsynced; local retention deletes through `barman delete`.
//! - Incremental chains ([`passive::incremental`]): a parent's `children_backup_ids` lists the
//!   children this node has (in the primary's order) plus local ones the primary dropped, where
//!   Barman copies the primary's list even with children the passive lacks (its `delete` then
//!   fails), and every cron run refreshes it, where Barman does only when a child is synced.
//!   Retention counts a chain through its root, as Barman does, but keeps every child of a
//!   root with a `keep` annotation (Barman reports the children of a `standalone` root
//!   outside the policy OBSOLETE), and does not copy a child whose root is OBSOLETE here
//!   (Barman does, and then never deletes it).
//! - Not modelled: server models applied by `.active-model.auto`, cloud storage for WALs or
//!   backups, GPG encryption detection when rebuilding the xlog db, and a `primary_conninfo`
//!   standby check that needs PostgreSQL.

pub mod backup_info;
pub mod backup_list;
pub mod catalog;
pub mod check;
pub mod config;
pub mod fixture;
pub mod fsutil;
pub mod human;
pub mod lock;
pub mod passive;
pub mod python;
pub mod ssh_liveness;
pub mod syncinfo;
pub mod wal;
pub mod xlogdb;
