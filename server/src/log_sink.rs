//! Sends one [`OpRecord`] per handled operation to the RPC logger, off the
//! critical path.
//!
//! Connections hand records over with [`LogSink::record`], which never waits:
//! when the queue is full the record is dropped and counted. A background
//! task batches what is queued, connects lazily, calls `log` with a
//! deadline, and on failure keeps the batch (bounded backlog, oldest dropped
//! first) and retries with backoff, reconnecting when the logger returns.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use peerdex_logger::rpc::{self, LoggerClient, OpRecord};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Records queued between connections and the sender task.
const QUEUE_CAPACITY: usize = 16 * 1024;
/// Most records per RPC.
const MAX_BATCH: usize = 1000;
/// Most records kept while the logger is unreachable: a couple of seconds
/// at full load, a few MiB, so that a logger that is down cannot grow the
/// server's memory without bound; a logger that is away longer loses the
/// oldest records, which are counted.
const MAX_BACKLOG: usize = 30_000;
/// Deadline of one `log` call, and of connecting.
const RPC_DEADLINE: Duration = Duration::from_secs(5);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long the sender keeps trying to flush after the server stopped.
const FINAL_FLUSH: Duration = Duration::from_secs(2);

/// Where connections hand their records; a no-op without `--logger`.
#[derive(Clone, Default)]
pub struct LogSink {
    /// The sender task's queue; `None` when no logger is configured.
    queue: Option<mpsc::Sender<OpRecord>>,
    /// Records dropped because the queue or backlog was full.
    dropped: Arc<AtomicU64>,
}

impl LogSink {
    /// A sink that drops everything (no logger configured).
    pub fn disabled() -> LogSink {
        LogSink::default()
    }

    /// Starts the sender task for the logger at `addr` (`HOST:PORT`). The
    /// task ends, after a last bounded flush, once every sink is dropped.
    pub fn start(addr: String) -> (LogSink, JoinHandle<()>) {
        let (queue, records) = mpsc::channel(QUEUE_CAPACITY);
        let dropped = Arc::new(AtomicU64::new(0));
        let sender = Sender {
            addr,
            client: None,
            backlog: VecDeque::new(),
            dropped: dropped.clone(),
        };
        let task = tokio::spawn(sender.run(records));
        (
            LogSink {
                queue: Some(queue),
                dropped,
            },
            task,
        )
    }

    /// Queues a record without waiting; drops it if the queue is full.
    pub fn record(&self, record: OpRecord) {
        let Some(queue) = &self.queue else { return };
        if queue.try_send(record).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(dropped, "logger queue full, dropping records");
            }
        }
    }

    /// Whether records go anywhere: callers skip building them otherwise.
    pub fn is_enabled(&self) -> bool {
        self.queue.is_some()
    }

    /// Records dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The background task's state.
struct Sender {
    /// The logger's `HOST:PORT`.
    addr: String,
    /// The connected client, `None` until connected or after a failure.
    client: Option<LoggerClient>,
    /// Records received but not yet acknowledged by the logger, oldest first.
    backlog: VecDeque<OpRecord>,
    /// Shared drop counter (see [`LogSink::dropped`]).
    dropped: Arc<AtomicU64>,
}

impl Sender {
    async fn run(mut self, mut records: mpsc::Receiver<OpRecord>) {
        let mut backoff = MIN_BACKOFF;
        let mut open = true;
        loop {
            if self.backlog.is_empty() {
                match records.recv().await {
                    Some(record) => self.push(record),
                    None => break,
                }
            }
            while self.backlog.len() < MAX_BACKLOG {
                match records.try_recv() {
                    Ok(record) => self.push(record),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            if !open {
                break;
            }
            if self.send_batch().await {
                backoff = MIN_BACKOFF;
            } else {
                // Wait, but keep taking records so the queue never fills
                // because of the logger.
                let until = tokio::time::Instant::now() + backoff;
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep_until(until) => break,
                        record = records.recv() => match record {
                            Some(record) => self.push(record),
                            None => { open = false; break; }
                        },
                    }
                }
                if !open {
                    break;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        // The server is stopping: one bounded attempt at what is left.
        while let Ok(record) = records.try_recv() {
            self.push(record);
        }
        let deadline = tokio::time::Instant::now() + FINAL_FLUSH;
        while !self.backlog.is_empty() && tokio::time::Instant::now() < deadline {
            let attempt = tokio::time::timeout_at(deadline, self.send_batch()).await;
            if !matches!(attempt, Ok(true)) {
                break;
            }
        }
        if !self.backlog.is_empty() {
            tracing::warn!(
                unsent = self.backlog.len(),
                "logger records not delivered at shutdown"
            );
        }
    }

    fn push(&mut self, record: OpRecord) {
        if self.backlog.len() >= MAX_BACKLOG {
            self.backlog.pop_front();
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(dropped, "logger backlog full, dropping oldest records");
            }
        }
        self.backlog.push_back(record);
    }

    /// Sends the oldest batch; true when the logger acknowledged it.
    async fn send_batch(&mut self) -> bool {
        let client = match self.client.take() {
            Some(client) => client,
            None => {
                match tokio::time::timeout(RPC_DEADLINE, rpc::connect(self.addr.as_str())).await {
                    Ok(Ok(client)) => {
                        tracing::info!(logger = %self.addr, "connected to logger");
                        client
                    }
                    Ok(Err(err)) => {
                        tracing::debug!(logger = %self.addr, error = %err, "logger unreachable");
                        return false;
                    }
                    Err(_) => {
                        tracing::debug!(logger = %self.addr, "logger connect timed out");
                        return false;
                    }
                }
            }
        };
        let n = self.backlog.len().min(MAX_BATCH);
        let batch: Vec<OpRecord> = self.backlog.iter().take(n).cloned().collect();
        let mut ctx = tarpc::context::current();
        ctx.deadline = Instant::now() + RPC_DEADLINE;
        match client.log(ctx, batch).await {
            Ok(_) => {
                self.backlog.drain(..n);
                self.client = Some(client);
                true
            }
            Err(err) => {
                tracing::warn!(logger = %self.addr, error = %err, "logger call failed, will retry");
                false
            }
        }
    }
}
