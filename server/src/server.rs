//! The accept loop: one task per connection, a semaphore capping how many
//! run at once, and graceful shutdown.
//!
//! On shutdown the server stops accepting, waits (bounded) for in-flight
//! connections, lets the group-commit writer finish what is queued, gives
//! the logger sink a last bounded flush, and closes the store.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use peerdex_protocol::frame;
use peerdex_protocol::listen::listen;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::auth::limiter::Limiter;
use crate::auth::Hasher;
use crate::connection::{self, Shared};
use crate::durable::engine::Engine;
use crate::durable::store::StoreError;
use crate::durable::writer::Committer;
use crate::log_sink::LogSink;
use crate::presence::prober::{ProbeConfig, Prober};
use crate::session::registry::Registry;

/// Extra time, beyond the request deadline, that shutdown waits for
/// in-flight connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How the server runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub bind: IpAddr,
    /// Port to listen on; 0 lets the OS choose (see [`Server::local_addr`]).
    pub port: u16,
    /// Directory holding the database.
    pub data_dir: PathBuf,
    /// RPC logger `HOST:PORT`, if any.
    pub logger: Option<String>,
    /// Most connections served at once.
    pub max_connections: usize,
    /// How long a client has to send its whole request.
    pub request_timeout: Duration,
    /// `--auth required`: account creation and every mutation need an
    /// authenticated session.
    pub auth_required: bool,
    /// Time between two probes of a classic-connected user's listener;
    /// zero disables probing.
    pub probe_interval: Duration,
    /// Most listener probes started per second.
    pub probe_rate: u32,
    /// Password hashes computed at once (each on a blocking thread).
    pub login_threads: usize,
    /// Session heartbeats: a `Ping` after this long without sending.
    pub heartbeat_interval: Duration,
    /// Session heartbeats: a session silent this long is closed.
    pub heartbeat_timeout: Duration,
}

impl Config {
    /// The defaults of everything but where to listen and store.
    pub fn new(bind: IpAddr, port: u16, data_dir: PathBuf) -> Config {
        Config {
            bind,
            port,
            data_dir,
            logger: None,
            max_connections: 1024,
            request_timeout: Duration::from_secs(5),
            auth_required: false,
            probe_interval: DEFAULT_PROBE_INTERVAL,
            probe_rate: DEFAULT_PROBE_RATE,
            login_threads: 1,
            heartbeat_interval: frame::HEARTBEAT_INTERVAL,
            heartbeat_timeout: frame::HEARTBEAT_TIMEOUT,
        }
    }
}

/// Default time between two probes of a classic listener.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(80);
/// Default most probes per second.
pub const DEFAULT_PROBE_RATE: u32 = 2000;

/// Why the server could not start or stop cleanly.
#[derive(Debug, Error)]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot start the commit writer")]
    Writer(#[source] io::Error),
    #[error("cannot start the password hashing threads")]
    Hasher(#[source] io::Error),
    #[error("the commit writer panicked")]
    WriterPanicked,
    #[error("blocking task failed")]
    Join(#[from] tokio::task::JoinError),
}

/// A bound server, ready to [`run`](Server::run).
pub struct Server {
    /// The listening socket.
    listener: TcpListener,
    /// The open directory (state, journal, database).
    engine: Engine,
    /// The configuration it was bound with.
    config: Config,
}

impl Server {
    /// Opens the store (creating the data directory) and binds the
    /// listener. A bad data directory fails here, before any client is
    /// accepted.
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        let dir = config.data_dir.clone();
        let mut engine = tokio::task::spawn_blocking(move || Engine::open(&dir)).await??;
        if config.auth_required {
            engine.set_auth_mode(crate::actor::AuthMode::Required);
        }
        let addr = SocketAddr::new(config.bind, config.port);
        let listener = listen(addr).map_err(|source| ServerError::Bind { addr, source })?;
        Ok(Server {
            listener,
            engine,
            config,
        })
    }

    /// The address actually bound (the OS-chosen port for port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then stops gracefully.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let Server {
            listener,
            engine,
            config,
        } = self;
        let state = engine.state().clone();
        let (committer, writer) = Committer::start(engine).map_err(ServerError::Writer)?;
        let (log, log_task) = match config.logger.clone() {
            Some(addr) => {
                let (sink, task) = LogSink::start(addr);
                (sink, Some(task))
            }
            None => (LogSink::disabled(), None),
        };
        let (prober, prober_task) = Prober::start(
            state.clone(),
            committer.clone(),
            ProbeConfig {
                interval: config.probe_interval,
                rate: config.probe_rate,
            },
        );
        let (stop_sessions, sessions_stop) = watch::channel(false);
        let shared = Arc::new(Shared {
            state,
            committer,
            log,
            request_timeout: config.request_timeout,
            registry: Registry::default(),
            hasher: Hasher::new(config.login_threads).map_err(ServerError::Hasher)?,
            limiter: Limiter::default(),
            prober,
            heartbeat_interval: config.heartbeat_interval,
            heartbeat_timeout: config.heartbeat_timeout,
            shutdown: sessions_stop,
        });
        let permits = config
            .max_connections
            .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        let limit = Arc::new(Semaphore::new(permits));

        tokio::select! {
            _ = accept_loop(&listener, &limit, &shared) => {}
            _ = shutdown => tracing::info!("shutting down: no new connections"),
        }
        drop(listener);
        // Sessions close on their own (a session would otherwise hold its
        // permit until its client leaves); the prober stops probing.
        let _ = stop_sessions.send(true);
        if let Some(task) = prober_task {
            task.abort();
            let _ = task.await;
        }

        // In-flight connections hold permits: all permits back = all done.
        let grace = config.request_timeout + SHUTDOWN_GRACE;
        match tokio::time::timeout(grace, limit.acquire_many(permits as u32)).await {
            Ok(_) => tracing::debug!("all connections finished"),
            Err(_) => tracing::warn!("connections still running after {grace:?}, abandoning them"),
        }
        let dropped = shared.log.dropped();
        drop(shared);

        if let Some(task) = log_task {
            // Ends after its own bounded final flush once the sinks are gone;
            // abandoned connections may still hold one, so bound it too.
            let _ = tokio::time::timeout(Duration::from_secs(3), task).await;
        }
        if dropped > 0 {
            tracing::warn!(dropped, "logger records dropped");
        }
        // The writer stops when the last committer handle is dropped.
        let joined = tokio::time::timeout(
            SHUTDOWN_GRACE,
            tokio::task::spawn_blocking(move || writer.join()),
        )
        .await;
        let engine = match joined {
            Ok(Ok(Ok(engine))) => engine,
            Ok(Ok(Err(_))) => return Err(ServerError::WriterPanicked),
            Ok(Err(err)) => return Err(err.into()),
            Err(_) => {
                tracing::warn!("commit writer still busy; committed data is durable");
                return Ok(());
            }
        };
        // Checkpoints the journal into the database, so that the next start
        // has nothing to replay.
        tokio::task::spawn_blocking(move || engine.close()).await??;
        tracing::info!("server stopped");
        Ok(())
    }
}

/// Binds and runs a server until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    Server::bind(config).await?.run(shutdown).await
}

/// Accepts forever: waits for a connection permit, then for a client, and
/// spawns its handler. Accept errors (e.g. out of file descriptors) are
/// logged and retried after a short backoff.
async fn accept_loop(listener: &TcpListener, limit: &Arc<Semaphore>, shared: &Arc<Shared>) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => {
                backoff = Duration::from_millis(10);
                accepted
            }
            Err(err) => {
                tracing::warn!(error = %err, "accept failed");
                drop(permit);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            connection::handle(socket, peer, &shared).await;
            drop(permit);
        });
    }
}
