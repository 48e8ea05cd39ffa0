//! The fetch layer: moving many files from a remote source over several sessions.
//!
//! It owns what any pull of many files needs and nothing of what the files mean to the caller:
//! - [`session`]: the two traits it runs on, [`SessionSource`] (opens sessions) and
//!   [`FetchEvents`] (hears what becomes of each file);
//! - [`pool`]: the jobs run on several sessions, largest first, failed ones fetched again;
//! - `split.rs`: very large files cut into parts that the sessions share;
//! - [`session_cache`]: sessions kept open between the copies of one run;
//! - [`throttle`]: one bandwidth budget shared by every session of a copy;
//! - [`totals`]: what a copy moved.
//!
//! The caller (Barman's passive node, `barsync copy`) decides which files to fetch and where
//! to put them; this layer decides how they travel.

pub mod pool;
pub mod session;
pub mod session_cache;
mod split;
pub mod throttle;
pub mod totals;

pub use pool::{run_jobs, run_jobs_retrying, FilesFailed, Job, PoolReport, PoolSettings, Retry};
pub use session::{FetchEvents, FetchSession, SessionSource};
pub use session_cache::SessionCache;
pub use totals::TransferTotals;
