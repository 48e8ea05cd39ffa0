//! The fetch layer: moving many files from a remote source over several sessions.
//!
//! It owns what any pull of a tree needs and nothing of what the files mean to the caller:
//! - [`throttle`]: one bandwidth budget shared by every session of a copy.
//!
//! The caller (Barman's passive node, `barsync copy`) decides which files to fetch and where
//! to put them; this layer decides how they travel.

pub mod throttle;
