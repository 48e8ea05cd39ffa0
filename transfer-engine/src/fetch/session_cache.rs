//! [`SessionCache`]: sessions kept open between the copies of one run, so that each costs one
//! handshake per worker rather than one per copy.

use std::sync::{Arc, Mutex, PoisonError};

/// Idle sessions, each filed under a key naming everything it was opened with (a session is
/// only handed out again for the same key). Clones share the same sessions.
pub struct SessionCache<S> {
    idle: Arc<Mutex<Vec<(String, S)>>>,
}

impl<S> Clone for SessionCache<S> {
    fn clone(&self) -> Self {
        SessionCache {
            idle: self.idle.clone(),
        }
    }
}

impl<S> Default for SessionCache<S> {
    fn default() -> Self {
        SessionCache {
            idle: Arc::new(Mutex::new(Vec::new())),
        }
    }
}

impl<S> std::fmt::Debug for SessionCache<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionCache({} idle)", self.idle_count())
    }
}

impl<S> SessionCache<S> {
    /// An idle session filed under `key`, taken out of the cache.
    pub fn take(&self, key: &str) -> Option<S> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let position = idle.iter().position(|(k, _)| k == key)?;
        Some(idle.swap_remove(position).1)
    }

    /// Files `session` under `key` for a later copy.
    pub fn park(&self, key: String, session: S) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((key, session));
    }

    /// Every idle session, taken out of the cache (to be closed).
    pub fn drain(&self) -> Vec<S> {
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(PoisonError::into_inner));
        idle.into_iter().map(|(_, session)| session).collect()
    }

    /// The number of idle sessions.
    pub fn idle_count(&self) -> usize {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_handed_out_once_and_only_for_its_key() {
        let cache = SessionCache::default();
        cache.park("a".into(), 1);
        cache.park("b".into(), 2);
        let shared = cache.clone();
        assert_eq!(shared.take("c"), None);
        assert_eq!(shared.take("a"), Some(1));
        assert_eq!(cache.take("a"), None);
        assert_eq!(cache.drain(), vec![2]);
        assert_eq!(cache.idle_count(), 0);
    }
}
