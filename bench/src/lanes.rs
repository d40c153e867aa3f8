//! Which sessions the session load runs on, which user each acts for, and
//! their untimed set-up (login, then `SET_PASSWORD`).
//!
//! A session acts only for its own user, and the mix has pairs that change
//! that user's state (DISCONNECT then CONNECT), which would race with the
//! user's other requests in flight. Two layouts keep every reply
//! predictable:
//!
//! - `lanes`: each of the C clients runs D lanes; a lane owns one user and
//!   one session and keeps one request in flight on it, so a client has D
//!   requests in flight over D connections. Lane `c * D + d` owns user
//!   `c * D + d`: disjoint by construction.
//! - `single-session`: each client owns one user and one session with D
//!   workers on it: D requests in flight on one connection (true
//!   pipelining). A DISCONNECT+CONNECT pair takes the session exclusively:
//!   it waits for the session's requests in flight and runs alone.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use peerdex_protocol::{OpKind, Operation, Outcome, Request, Secret};
use rand::RngExt;
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

use crate::client::read_whole_reply;
use crate::model;
use crate::session::Session;

/// How a client's D requests in flight are carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PipelineMode {
    /// D sessions per client, one user and one request in flight each.
    Lanes,
    /// One session per client, D requests in flight on it.
    SingleSession,
}

impl PipelineMode {
    pub fn name(self) -> &'static str {
        match self {
            PipelineMode::Lanes => "lanes",
            PipelineMode::SingleSession => "single-session",
        }
    }
}

impl fmt::Display for PipelineMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The shape of a session load: C clients, D requests in flight each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub clients: usize,
    pub pipeline: usize,
    pub mode: PipelineMode,
}

impl Layout {
    /// Checks the layout against `users` directory users.
    pub fn new(
        clients: usize,
        pipeline: usize,
        mode: PipelineMode,
        users: usize,
    ) -> anyhow::Result<Layout> {
        anyhow::ensure!(clients > 0, "--clients must be at least 1");
        anyhow::ensure!(pipeline > 0, "--pipeline must be at least 1");
        let layout = Layout {
            clients,
            pipeline,
            mode,
        };
        let workers = clients
            .checked_mul(pipeline)
            .context("--clients x --pipeline overflows")?;
        anyhow::ensure!(
            users >= workers,
            "--users ({users}) must be at least --clients x --pipeline ({workers}): \
             every lane owns a user of its own"
        );
        Ok(layout)
    }

    /// Requests in flight in all: one worker each.
    pub fn workers(&self) -> usize {
        self.clients * self.pipeline
    }

    /// How many sessions there are.
    pub fn sessions(&self) -> usize {
        match self.mode {
            PipelineMode::Lanes => self.workers(),
            PipelineMode::SingleSession => self.clients,
        }
    }

    /// Workers sharing one session.
    pub fn per_session(&self) -> usize {
        match self.mode {
            PipelineMode::Lanes => 1,
            PipelineMode::SingleSession => self.pipeline,
        }
    }

    /// The session that worker `worker` uses.
    pub fn session_of(&self, worker: usize) -> usize {
        worker / self.per_session()
    }

    /// The directory user session `session` acts for (and logs in as).
    pub fn user_of_session(&self, session: usize) -> usize {
        session
    }

    /// The user worker `worker` acts for.
    pub fn user_of(&self, worker: usize) -> usize {
        self.user_of_session(self.session_of(worker))
    }

    /// One line for the reports.
    pub fn describe(&self) -> String {
        match self.mode {
            PipelineMode::Lanes => format!(
                "{} clients x {} lanes = {} sessions, 1 request in flight each",
                self.clients,
                self.pipeline,
                self.sessions()
            ),
            PipelineMode::SingleSession => format!(
                "{} sessions with {} requests in flight each (DISCONNECT+CONNECT runs alone)",
                self.clients, self.pipeline
            ),
        }
    }
}

/// Open, authenticated sessions laid out for the workload.
pub struct Lanes {
    pub layout: Layout,
    sessions: Vec<Arc<Session>>,
    /// Per session: shared by ordinary requests, exclusive for the pairs
    /// that change the user's connected state (single-session mode).
    turns: Vec<Arc<RwLock<()>>>,
    /// How long the set-up took (logins and password hashing).
    pub setup: Duration,
}

impl fmt::Debug for Lanes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lanes")
            .field("layout", &self.layout)
            .field("setup", &self.setup)
            .finish_non_exhaustive()
    }
}

/// A worker's right to send: shared, or the session to itself.
pub enum Turn {
    Shared(#[allow(dead_code)] OwnedRwLockReadGuard<()>),
    Alone(#[allow(dead_code)] OwnedRwLockWriteGuard<()>),
    /// Lanes: the worker is the session's only user.
    Free,
}

impl Lanes {
    /// The session of worker `worker`.
    pub fn session(&self, worker: usize) -> &Arc<Session> {
        &self.sessions[self.layout.session_of(worker)]
    }

    /// Waits for worker `worker`'s turn; `alone` for a pair that changes
    /// the user's state.
    pub async fn turn(&self, worker: usize, alone: bool) -> Turn {
        if self.layout.per_session() == 1 {
            return Turn::Free;
        }
        let lock = self.turns[self.layout.session_of(worker)].clone();
        if alone {
            Turn::Alone(lock.write_owned().await)
        } else {
            Turn::Shared(lock.read_owned().await)
        }
    }

    /// Sessions that ended (closed or broken) so far.
    pub fn ended(&self) -> usize {
        self.sessions.iter().filter(|s| s.ended().is_some()).count()
    }

    /// Events the server pushed to any session.
    pub fn events(&self) -> u64 {
        self.sessions.iter().map(|s| s.events()).sum()
    }
}

/// Opens every session of `layout`, `concurrency` at a time: each logs in
/// to its (unprotected) user with the empty password and, if
/// `authenticate`, sets a random password, after which it is an
/// authenticated session. Fails on the first session that cannot be set
/// up: a load on fewer sessions would measure something else.
pub async fn open(
    addr: SocketAddr,
    layout: Layout,
    authenticate: bool,
    concurrency: usize,
    timeout: Duration,
) -> anyhow::Result<Lanes> {
    let started = Instant::now();
    let sessions: Vec<Arc<Session>> = stream::iter(0..layout.sessions())
        .map(|session| set_up(addr, layout.user_of_session(session), authenticate, timeout))
        .buffered(concurrency.max(1))
        .try_collect()
        .await?;
    let turns = (0..sessions.len())
        .map(|_| Arc::new(RwLock::new(())))
        .collect();
    Ok(Lanes {
        layout,
        sessions,
        turns,
        setup: started.elapsed(),
    })
}

async fn set_up(
    addr: SocketAddr,
    user: usize,
    authenticate: bool,
    timeout: Duration,
) -> anyhow::Result<Arc<Session>> {
    let name = model::user_name(user);
    let session = Session::open(addr, &name, &Secret::default(), timeout)
        .await
        .with_context(|| format!("opening the session of {name}"))?;
    if authenticate {
        set_password(&session, &name, random_password(), timeout)
            .await
            .with_context(|| format!("SET_PASSWORD of {name}"))?;
    }
    Ok(Arc::new(session))
}

/// Protects `user`'s account with `password` from its session, which is
/// then authenticated.
pub async fn set_password(
    session: &Session,
    user: &str,
    password: Secret,
    timeout: Duration,
) -> anyhow::Result<()> {
    let request = Request {
        datetime: None,
        user: Ok(user.to_string()),
        operation: Operation::SetPassword {
            password: Ok(password),
        },
    }
    .encode(&peerdex_protocol::datetime::now())?
    .freeze();
    let body: Bytes = tokio::time::timeout(timeout, session.call(request))
        .await
        .map_err(|_| anyhow::anyhow!("no reply within {timeout:?}"))??;
    let reply = read_whole_reply(&body[..], OpKind::SetPassword).await?;
    anyhow::ensure!(
        reply.outcome() == Outcome::Ok,
        "answered {:?}",
        reply.outcome()
    );
    Ok(())
}

/// A password nobody knows (not even this process once it is sent): the
/// set-up only needs the session authenticated.
pub fn random_password() -> Secret {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    Secret::new(
        (0..24)
            .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
            .collect::<String>(),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn lane_users_are_disjoint_and_in_the_directory() {
        let layout = Layout::new(64, 8, PipelineMode::Lanes, 10_000).expect("valid");
        assert_eq!(layout.sessions(), 512);
        let users: HashSet<usize> = (0..layout.workers()).map(|w| layout.user_of(w)).collect();
        assert_eq!(users.len(), layout.workers(), "one user per lane");
        assert!(users.iter().all(|&u| u < 10_000));
        let sessions: HashSet<usize> = (0..layout.workers())
            .map(|w| layout.session_of(w))
            .collect();
        assert_eq!(sessions.len(), layout.workers(), "one session per lane");
    }

    #[test]
    fn single_session_workers_share_their_clients_session_and_user() {
        let layout = Layout::new(3, 4, PipelineMode::SingleSession, 12).expect("valid");
        assert_eq!(layout.sessions(), 3);
        assert_eq!(layout.workers(), 12);
        for w in 0..12 {
            assert_eq!(layout.session_of(w), w / 4);
            assert_eq!(layout.user_of(w), w / 4);
        }
    }

    #[test]
    fn layouts_need_a_user_per_lane() {
        assert!(Layout::new(64, 4, PipelineMode::Lanes, 255).is_err());
        assert!(Layout::new(64, 4, PipelineMode::Lanes, 256).is_ok());
        assert!(Layout::new(0, 4, PipelineMode::Lanes, 100).is_err());
        assert!(Layout::new(4, 0, PipelineMode::Lanes, 100).is_err());
        assert!(Layout::new(usize::MAX, 2, PipelineMode::Lanes, usize::MAX).is_err());
    }

    #[test]
    fn random_passwords_differ_and_fit_a_field() {
        let a = random_password();
        let b = random_password();
        assert_ne!(a.expose(), b.expose());
        assert!(!a.is_empty() && a.expose().len() <= 255);
    }
}

#[cfg(test)]
mod load_tests {

    use super::*;
    use crate::mix::MixKind;
    use crate::workload::{self, LoadConfig};

    /// The whole session load against the session-speaking null server:
    /// every reply checked, none may fail, in both layouts.
    async fn session_load(mode: PipelineMode) {
        let addr = crate::null_server::spawn_for_tests().await;
        let timeout = Duration::from_secs(5);
        let layout = Layout::new(3, 4, mode, 20).expect("valid layout");
        let lanes = open(addr, layout, true, 4, timeout).await.expect("set-up");
        assert_eq!(lanes.ended(), 0);
        let config = LoadConfig {
            addr,
            users: 20,
            clients: layout.workers(),
            warmup: Duration::ZERO,
            duration: Duration::from_millis(300),
            mix: MixKind::Default,
            seed: 1,
            op_timeout: timeout,
            verify_content: false,
            protocol_reader: false,
            server_pid: None,
            sessions: Some(Arc::new(lanes)),
        };
        let report = workload::run(config).await.expect("a report");
        assert_eq!(report.errors, 0, "{:?}", report.error_classes);
        assert!(report.total_ops > 0);
    }

    #[tokio::test]
    async fn lanes_run_clean_against_the_null_server() {
        session_load(PipelineMode::Lanes).await;
    }

    #[tokio::test]
    async fn single_sessions_run_clean_against_the_null_server() {
        session_load(PipelineMode::SingleSession).await;
    }
}
