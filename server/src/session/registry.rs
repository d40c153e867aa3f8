//! The live sessions of this process: which are alive (the CONNECT
//! takeover pre-check asks), and how to reach the sessions of an account
//! (to push events, or to log them out).
//!
//! A session is registered when its login succeeded and removed when it
//! ends, before the server disconnects the user it held, so that nobody
//! sees a dead session as live once its death is acted on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use peerdex_protocol::frame::{Event, EVENT_DISCONNECTED, EVENT_LOGGED_OUT};
use tokio::sync::mpsc;

use crate::actor::SessionId;

/// What the server tells a live session from outside its own loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Push this event; the session goes on.
    Event(Event),
    /// Push this event, then close the session.
    LogOut(Event),
}

/// How many notices may wait for one session; a session that lets more
/// pile up is not reading, and misses them.
pub const NOTICE_QUEUE: usize = 16;

/// One live session.
#[derive(Debug)]
struct Entry {
    user: Arc<str>,
    notices: mpsc::Sender<Notice>,
}

#[derive(Debug, Default)]
struct Inner {
    sessions: HashMap<SessionId, Entry>,
    by_user: HashMap<Arc<str>, Vec<SessionId>>,
    next_id: SessionId,
}

/// Every live session.
#[derive(Debug, Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

impl Registry {
    /// A fresh session id (never reused within this process; never 0).
    pub fn next_id(&self) -> SessionId {
        let mut inner = self.lock();
        inner.next_id += 1;
        inner.next_id
    }

    /// Records session `id` of `user` as live; its notices arrive on the
    /// returned receiver.
    pub fn register(&self, id: SessionId, user: Arc<str>) -> mpsc::Receiver<Notice> {
        let (notices, receiver) = mpsc::channel(NOTICE_QUEUE);
        let mut inner = self.lock();
        inner.by_user.entry(user.clone()).or_default().push(id);
        inner.sessions.insert(id, Entry { user, notices });
        receiver
    }

    /// Forgets session `id`: from now on it is not live.
    pub fn remove(&self, id: SessionId) {
        let mut inner = self.lock();
        let Some(entry) = inner.sessions.remove(&id) else {
            return;
        };
        if let Some(ids) = inner.by_user.get_mut(&entry.user) {
            ids.retain(|other| *other != id);
            if ids.is_empty() {
                inner.by_user.remove(&entry.user);
            }
        }
    }

    /// True while session `id` runs.
    pub fn is_live(&self, id: SessionId) -> bool {
        self.lock().sessions.contains_key(&id)
    }

    /// Tells session `id` that its user was disconnected for `reason`.
    pub fn disconnected(&self, id: SessionId, reason: &str) {
        self.notify(id, Notice::Event(event(EVENT_DISCONNECTED, reason)));
    }

    /// Logs out every session of `user` but `except`, for `reason`.
    pub fn log_out_others(&self, user: &str, except: SessionId, reason: &str) {
        let ids: Vec<SessionId> = {
            let inner = self.lock();
            inner
                .by_user
                .get(user)
                .map(|ids| ids.iter().copied().filter(|id| *id != except).collect())
                .unwrap_or_default()
        };
        for id in ids {
            self.notify(id, Notice::LogOut(event(EVENT_LOGGED_OUT, reason)));
        }
    }

    fn notify(&self, id: SessionId, notice: Notice) {
        let sender = self.lock().sessions.get(&id).map(|e| e.notices.clone());
        if let Some(sender) = sender {
            if sender.try_send(notice).is_err() {
                tracing::debug!(session = id, "session not taking notices, one dropped");
            }
        }
    }

    /// Number of live sessions.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().sessions.len()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn event(name: &str, reason: &str) -> Event {
    Event {
        name: name.to_string(),
        fields: vec![reason.to_string()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerdex_protocol::frame::{REASON_CONNECTED_ELSEWHERE, REASON_PASSWORD_CHANGED};

    #[test]
    fn sessions_are_live_until_removed() {
        let registry = Registry::default();
        let a = registry.next_id();
        let b = registry.next_id();
        assert_ne!(a, b);
        assert_ne!(a, 0);
        let _rx = registry.register(a, Arc::from("al"));
        assert!(registry.is_live(a));
        assert!(!registry.is_live(b));
        registry.remove(a);
        assert!(!registry.is_live(a));
        assert_eq!(registry.len(), 0);
        assert!(registry.lock().by_user.is_empty());
    }

    #[test]
    fn log_out_reaches_the_accounts_other_sessions_only() {
        let registry = Registry::default();
        let mut one = registry.register(1, Arc::from("al"));
        let mut two = registry.register(2, Arc::from("al"));
        let mut bob = registry.register(3, Arc::from("bob"));
        registry.log_out_others("al", 1, REASON_PASSWORD_CHANGED);
        assert!(one.try_recv().is_err());
        assert_eq!(
            two.try_recv().unwrap(),
            Notice::LogOut(event(EVENT_LOGGED_OUT, REASON_PASSWORD_CHANGED))
        );
        assert!(bob.try_recv().is_err());
        registry.disconnected(3, REASON_CONNECTED_ELSEWHERE);
        assert_eq!(
            bob.try_recv().unwrap(),
            Notice::Event(event(EVENT_DISCONNECTED, REASON_CONNECTED_ELSEWHERE))
        );
    }
}
