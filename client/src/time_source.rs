//! Where the DATETIME of each request comes from: the RPC logger's clock
//! (`--time-service`) when configured and answering, else the local clock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use peerdex_logger::rpc::{self, LoggerClient};
use peerdex_protocol::datetime;
use thiserror::Error;
use tokio::sync::Mutex;

/// Bound on one request to the time service, connection included.
pub const DEADLINE: Duration = Duration::from_secs(1);
/// After a failure, the service is not asked again for this long, so that a
/// dead service does not slow every command down.
pub const RETRY_AFTER: Duration = Duration::from_secs(30);

/// Why the time service gave no DATETIME.
#[derive(Debug, Error)]
enum ServiceError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("request failed: {0}")]
    Rpc(tarpc::client::RpcError),
    #[error("no answer within {DEADLINE:?}")]
    Timeout,
    #[error("answered {0:?}, which is not a DATETIME")]
    BadAnswer(String),
}

/// Supplies DATETIME fields. Clones share one connection and one failure
/// record (the shell and its peer listener use the same source).
#[derive(Clone)]
pub struct TimeSource {
    /// `HOST:PORT` of the logger, when `--time-service` was given.
    service: Option<String>,
    /// Connection to the logger and failure bookkeeping.
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// Cached RPC client; dropped after an error.
    client: Option<LoggerClient>,
    /// When the last failure happened, to pace retries.
    failed_at: Option<Instant>,
    /// The fallback warning goes to stderr only once.
    warned: bool,
}

impl TimeSource {
    /// The local clock only.
    #[cfg(test)]
    pub fn local() -> Self {
        Self::new(None)
    }

    /// The time service at `service` if given, with the local clock as fallback.
    pub fn new(service: Option<String>) -> Self {
        Self {
            service,
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    /// The DATETIME for a request being sent now.
    pub async fn now(&self) -> String {
        let Some(service) = &self.service else {
            return datetime::now();
        };
        let mut state = self.state.lock().await;
        if state.failed_at.is_some_and(|at| at.elapsed() < RETRY_AFTER) {
            return datetime::now();
        }
        match tokio::time::timeout(DEADLINE, ask(service, &mut state.client)).await {
            Ok(Ok(stamp)) => {
                state.failed_at = None;
                stamp
            }
            Ok(Err(err)) => fallback(&mut state, service, &err),
            Err(_) => fallback(&mut state, service, &ServiceError::Timeout),
        }
    }
}

fn fallback(state: &mut State, service: &str, err: &ServiceError) -> String {
    state.client = None;
    state.failed_at = Some(Instant::now());
    if !state.warned {
        state.warned = true;
        eprintln!("peerdex: time service {service} unavailable ({err}); using the local clock");
    }
    datetime::now()
}

async fn ask(service: &str, client: &mut Option<LoggerClient>) -> Result<String, ServiceError> {
    let logger = match client {
        Some(logger) => logger.clone(),
        None => {
            let logger = rpc::connect(service)
                .await
                .map_err(|err| ServiceError::Connect(crate::directory_client::describe_io(&err)))?;
            *client = Some(logger.clone());
            logger
        }
    };
    let mut ctx = tarpc::context::current();
    ctx.deadline = Instant::now() + DEADLINE;
    let stamp = logger.now(ctx).await.map_err(ServiceError::Rpc)?;
    if datetime::is_datetime(&stamp) {
        Ok(stamp)
    } else {
        Err(ServiceError::BadAnswer(stamp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_clock_gives_a_datetime() {
        assert!(datetime::is_datetime(&TimeSource::local().now().await));
    }

    #[tokio::test]
    async fn dead_service_falls_back_to_the_local_clock() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let source = TimeSource::new(Some(addr.to_string()));
        assert!(datetime::is_datetime(&source.now().await));
        assert!(source.state.lock().await.warned);
        // The second call does not wait for the service again.
        let started = Instant::now();
        assert!(datetime::is_datetime(&source.now().await));
        assert!(started.elapsed() < DEADLINE);
    }
}
