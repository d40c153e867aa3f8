//! Keeping the held session: opening it, and restoring it when it is lost.
//!
//! [`Opener`] opens sessions for the [`Route`](super::route::Route) and
//! installs the held one, with a watcher task: when the held session ends
//! without our asking (the server went away; not a logout), the loss is
//! noted once for stderr and the session is opened again in the
//! background, after 250 ms, then with a backoff doubling up to
//! [`MAX_BACKOFF`]. A command typed meanwhile tries at once
//! ([`Opener::restore`]). A restored session sends the user's CONNECT
//! again, with the same listener address, when the shell had the user
//! connected (the server disconnects session-held users when their
//! session ends), then notes `session restored`. Notes wait in a queue
//! that the shell prints before its next command. A background restore
//! never asks for a password: a refused login is left to the next command.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::Duration;

use peerdex_protocol::frame::Login;
use peerdex_protocol::{ConnectAddr, Operation, Outcome, Request, Secret};
use tokio::sync::{mpsc, Mutex};

use crate::directory_client::REPLY_TIMEOUT;
use crate::directory_ext_client::PROBE_BUDGET;
use crate::directory_session::{EndSignal, OpenError, SessionEvent, SessionLink, Timing};
use crate::passwords::Passwords;
use crate::server_profiles::{Extensions, ServerProfile, Sessions};
use crate::time_source::TimeSource;

/// What a login sends as `CLIENT_VERSION`.
const CLIENT_VERSION: &str = concat!("peerdex/", env!("PEERDEX_VERSION"));
/// First wait before a background restore.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait between two background restores.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The held session and its events.
pub(super) struct Held {
    pub(super) link: Arc<SessionLink>,
    pub(super) events: mpsc::Receiver<SessionEvent>,
    /// Which installation this is: a watcher acts only on its own.
    generation: u64,
    /// Its loss was noted.
    announced: bool,
}

/// Where a session opens, and what keeps the held one.
#[derive(Clone)]
pub(super) struct Opener {
    pub(super) host: String,
    pub(super) port: u16,
    /// `host:port` for messages.
    pub(super) addr: String,
    pub(super) profile: ServerProfile,
    pub(super) passwords: Arc<Passwords>,
    pub(super) timing: Timing,
    pub(super) time: TimeSource,
    pub(super) held: Arc<Mutex<Option<Held>>>,
    /// The user connected through the shell and its listener address.
    pub(super) presence: Arc<StdMutex<Option<(String, SocketAddr)>>>,
    /// Lines for stderr, printed before the next command.
    pub(super) notices: Arc<StdMutex<Vec<String>>>,
    /// The shell is gone: watchers stop.
    pub(super) stopped: Arc<AtomicBool>,
    generations: Arc<std::sync::atomic::AtomicU64>,
}

impl Opener {
    pub(super) fn new(
        host: String,
        port: u16,
        addr: String,
        profile: ServerProfile,
        passwords: Arc<Passwords>,
        time: TimeSource,
    ) -> Self {
        Self {
            host,
            port,
            addr,
            profile,
            passwords,
            timing: Timing::default(),
            time,
            held: Arc::new(Mutex::new(None)),
            presence: Arc::new(StdMutex::new(None)),
            notices: Arc::new(StdMutex::new(Vec::new())),
            stopped: Arc::new(AtomicBool::new(false)),
            generations: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        }
    }

    /// Opens a session for `user` with `password`.
    pub(super) async fn try_open(
        &self,
        user: &str,
        password: Secret,
    ) -> Result<(SessionLink, mpsc::Receiver<SessionEvent>), OpenError> {
        // A server known to open sessions may take its time (a login
        // delayed after failures); one of unknown kind has the probe's.
        let first_byte = match self.profile.get().sessions {
            Sessions::Yes => REPLY_TIMEOUT,
            _ => PROBE_BUDGET,
        };
        let login = Login {
            user: user.to_string(),
            password,
            client_version: CLIENT_VERSION.to_string(),
        };
        let opened =
            SessionLink::open(&self.host, self.port, login, first_byte, self.timing).await?;
        self.profile.set_sessions(Sessions::Yes);
        if self.profile.get().extensions != Extensions::Peerdex {
            // Only a peerdex directory opens sessions: no probe needed.
            self.profile.set_extensions(Extensions::Peerdex);
        }
        Ok(opened)
    }

    /// Makes `link` the held session and watches it.
    pub(super) fn install(
        &self,
        held: &mut Option<Held>,
        link: SessionLink,
        events: mpsc::Receiver<SessionEvent>,
    ) -> Arc<SessionLink> {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let link = Arc::new(link);
        let end = link.end_signal();
        *held = Some(Held {
            link: Arc::clone(&link),
            events,
            generation,
            announced: false,
        });
        let opener = self.clone();
        tokio::spawn(async move { opener.watch(end, generation).await });
        link
    }

    pub(super) fn set_presence(&self, presence: Option<(String, SocketAddr)>) {
        *self.presence.lock().unwrap_or_else(PoisonError::into_inner) = presence;
    }

    pub(super) fn take_notices(&self) -> Vec<String> {
        std::mem::take(&mut *self.notices.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn note(&self, line: String) {
        self.notices
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line);
    }

    /// The watcher of one held session.
    async fn watch(self, end: EndSignal, generation: u64) {
        end.ended().await;
        if !end.lost() {
            return;
        }
        let mut backoff = FIRST_BACKOFF;
        loop {
            if self.stopped.load(Ordering::Relaxed) {
                return;
            }
            {
                let mut held = self.held.lock().await;
                match held.as_mut() {
                    Some(h) if h.generation == generation => self.announce(h),
                    _ => return,
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            if self.stopped.load(Ordering::Relaxed) || !self.restore_of(Some(generation)).await {
                return;
            }
        }
    }

    fn announce(&self, held: &mut Held) {
        if !held.announced {
            held.announced = true;
            self.note(format!(
                "peerdex: session with {} lost; reconnecting",
                self.addr
            ));
        }
    }

    /// Restores the held session now if it was lost (a command is about to
    /// run).
    pub(super) async fn restore(&self) {
        self.restore_of(None).await;
    }

    /// Restores the held session if it is lost (and, with `generation`,
    /// still that installation). Returns whether to try again later.
    async fn restore_of(&self, generation: Option<u64>) -> bool {
        let mut held = self.held.lock().await;
        let Some(current) = held.as_mut() else {
            return false;
        };
        if generation.is_some_and(|g| g != current.generation)
            || current.link.is_alive()
            || !current.link.end_signal().lost()
        {
            return false;
        }
        self.announce(current);
        let user = current.link.user().to_string();
        let password = match self.passwords.login(&user) {
            Ok(password) => password,
            Err(err) => {
                tracing::debug!("cannot restore the session of {user}: {err}");
                return false;
            }
        };
        let (link, events) = match self.try_open(&user, password).await {
            Ok(opened) => opened,
            Err(OpenError::Unreachable { reason, .. }) => {
                tracing::debug!("cannot restore the session of {user} yet: {reason}");
                return true;
            }
            Err(OpenError::NotSession { .. }) => {
                // Replaced by a server without sessions: classic from now on.
                self.profile.set_sessions(Sessions::No);
                *held = None;
                return false;
            }
            Err(err) => {
                // Left to the next command (which may ask for a password).
                tracing::debug!("cannot restore the session of {user}: {err}");
                return false;
            }
        };
        let presence = self
            .presence
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .filter(|(connected, _)| *connected == user);
        if let Some((_, listen)) = presence {
            let ip = if listen.ip().is_unspecified() {
                link.local_addr().ip()
            } else {
                listen.ip()
            };
            let connect = Request {
                datetime: None,
                user: Ok(user.clone()),
                operation: Operation::Connect(ConnectAddr {
                    ip: Ok(Some(ip)),
                    port: Ok(listen.port()),
                }),
            };
            let datetime = self.time.now().await;
            match link.call(&connect, &datetime).await {
                Ok(reply) if reply.outcome() == Outcome::Ok => {}
                Ok(reply) => self.note(format!(
                    "peerdex: CONNECT of {user} again answered {:?}",
                    reply.outcome()
                )),
                Err(err) => self.note(format!("peerdex: CONNECT of {user} again failed: {err}")),
            }
        }
        self.install(&mut held, link, events);
        self.note("peerdex: session restored".to_string());
        false
    }
}
