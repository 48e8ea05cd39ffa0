//! One passive server as the passive commands act on it: its configuration, the settings it
//! runs with, where its events go, and the sessions to its primary kept open across its copies.
//!
//! [`PassiveOptions`] is what the operator asked for (flags and paths, plain data);
//! a [`PassiveServer`] is the runtime value built from it for one server and one run. Every
//! copy of that run (the backups, then the WALs; every batch of a follower's connection) reuses
//! the same [`SessionCache`], and the sessions end when the value is dropped (or
//! [`PassiveServer::close_sessions`] is called, which says which did not end cleanly).

use transfer_engine::fetch::PoolSettings;

use super::primary_sessions::{PrimarySessions, SessionCache};
use super::{pool_settings, require_passive, Events, PassiveError, PassiveOptions};
use crate::config::ServerConfig;
use crate::syncinfo::PrimaryInfo;

/// One passive server for one run: configuration, settings, events and open sessions.
pub struct PassiveServer<'a> {
    config: &'a ServerConfig,
    options: &'a PassiveOptions,
    events: &'a dyn Events,
    sessions: SessionCache,
}

impl<'a> PassiveServer<'a> {
    /// Passive `config`, run with `options`, telling `events`; an error when the server is
    /// not passive (Barman's refusal).
    pub fn new(
        config: &'a ServerConfig,
        options: &'a PassiveOptions,
        events: &'a dyn Events,
    ) -> Result<PassiveServer<'a>, PassiveError> {
        require_passive(config)?;
        Ok(PassiveServer {
            config,
            options,
            events,
            sessions: SessionCache::default(),
        })
    }

    /// The server's configuration.
    pub fn config(&self) -> &'a ServerConfig {
        self.config
    }

    /// The server's name.
    pub fn name(&self) -> &'a str {
        self.config.name()
    }

    /// The settings of this run.
    pub fn options(&self) -> &'a PassiveOptions {
        self.options
    }

    /// Where this run's events go.
    pub fn events(&self) -> &'a dyn Events {
        self.events
    }

    /// The sessions to the primary that described itself in `primary`, sharing this run's
    /// idle sessions.
    pub(crate) fn primary_sessions(
        &self,
        primary: &PrimaryInfo,
    ) -> Result<PrimarySessions, PassiveError> {
        PrimarySessions::new(self.config, primary, self.options, self.sessions.clone())
    }

    /// How this server's copies use their sessions (`parallel_jobs`, retries, parts).
    pub(crate) fn pool_settings(&self) -> PoolSettings {
        pool_settings(self.config, self.options)
    }

    /// Ends the idle sessions; the errors of those that did not end cleanly.
    pub fn close_sessions(&self) -> Vec<String> {
        self.sessions.close_all()
    }
}

impl Drop for PassiveServer<'_> {
    /// Idle sessions end with the run (a caller that wants their errors closes them first).
    fn drop(&mut self) {
        self.sessions.close_all();
    }
}
