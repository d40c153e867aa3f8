//! Builds the directory: N users, each registered, connected and with two
//! published files, from K concurrent connections.
//!
//! Every step accepts the reply that means "already done", so populate can be
//! repeated against a server that is partly or fully populated, and a step
//! that failed on the socket can simply be retried.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use peerdex_protocol::{Operation, Outcome};

use crate::client::{call, CallError, ErrorLog};
use crate::model::{self, DateCache};

/// Attempts per step before populate gives up on it.
const ATTEMPTS: usize = 5;

/// Failed users after which populate stops handing out work: against a dead
/// or broken server, a million users times five attempts would take hours.
const MAX_FAILED: usize = 100;

#[derive(Debug, Clone, Copy)]
pub struct PopulateReport {
    pub users: usize,
    pub ops: usize,
    pub elapsed: Duration,
    /// Steps that had to be retried (e.g. ephemeral port exhaustion).
    pub retries: usize,
}

impl PopulateReport {
    pub fn users_per_sec(&self) -> f64 {
        self.users as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

struct Shared {
    addr: SocketAddr,
    users: usize,
    timeout: Duration,
    next: AtomicUsize,
    done: AtomicUsize,
    retries: AtomicUsize,
    failed: AtomicUsize,
    noted: AtomicBool,
    log: ErrorLog,
    /// Connect user i at `peers[i % len]` and publish nothing (the
    /// presence benchmark: addresses that answer the server's probes).
    peers: Option<Arc<Vec<SocketAddr>>>,
}

/// Populates users `0..users`; fails if any user could not be completed.
pub async fn populate(
    addr: SocketAddr,
    users: usize,
    concurrency: usize,
    timeout: Duration,
) -> anyhow::Result<PopulateReport> {
    populate_with(addr, users, concurrency, timeout, None).await
}

/// Registers users `0..users` and connects user i at `peers[i % len]`,
/// without files: a directory whose every entry the server can probe.
pub async fn populate_at_peers(
    addr: SocketAddr,
    users: usize,
    concurrency: usize,
    timeout: Duration,
    peers: Arc<Vec<SocketAddr>>,
) -> anyhow::Result<PopulateReport> {
    anyhow::ensure!(!peers.is_empty(), "no peer addresses to connect users at");
    populate_with(addr, users, concurrency, timeout, Some(peers)).await
}

async fn populate_with(
    addr: SocketAddr,
    users: usize,
    concurrency: usize,
    timeout: Duration,
    peers: Option<Arc<Vec<SocketAddr>>>,
) -> anyhow::Result<PopulateReport> {
    let steps_per_user = if peers.is_some() { 2 } else { 4 };
    let shared = Arc::new(Shared {
        addr,
        users,
        timeout,
        next: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        retries: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        noted: AtomicBool::new(false),
        log: ErrorLog::new(10),
        peers,
    });
    let started = Instant::now();
    let progress = tokio::spawn(progress(shared.clone(), started));
    let workers: Vec<_> = (0..concurrency.clamp(1, users.max(1)))
        .map(|_| tokio::spawn(worker(shared.clone())))
        .collect();
    for worker in workers {
        worker.await?;
    }
    progress.abort();
    let elapsed = started.elapsed();
    let failed = shared.failed.load(Ordering::Relaxed);
    if failed > 0 {
        let done = shared.done.load(Ordering::Relaxed);
        bail!(
            "populate failed: {failed} users failed, {done} of {users} completed \
             (it stops after {MAX_FAILED} failures; see the errors above)"
        );
    }
    Ok(PopulateReport {
        users,
        ops: users * steps_per_user,
        elapsed,
        retries: shared.retries.load(Ordering::Relaxed),
    })
}

/// A progress line every 5 s: populating a million users takes minutes.
async fn progress(shared: Arc<Shared>, started: Instant) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.tick().await;
    loop {
        tick.tick().await;
        let done = shared.done.load(Ordering::Relaxed);
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "populate: {done}/{} users after {secs:.0} s ({:.0} users/s)",
            shared.users,
            done as f64 / secs
        );
    }
}

async fn worker(shared: Arc<Shared>) {
    let mut dates = DateCache::default();
    loop {
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        if i >= shared.users || shared.failed.load(Ordering::Relaxed) >= MAX_FAILED {
            return;
        }
        if populate_user(&shared, &mut dates, i).await {
            shared.done.fetch_add(1, Ordering::Relaxed);
        } else {
            shared.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn populate_user(shared: &Shared, dates: &mut DateCache, i: usize) -> bool {
    let steps = match &shared.peers {
        Some(peers) => vec![
            (Operation::Register, Outcome::UsernameInUse),
            (
                model::connect_at(peers[i % peers.len()]),
                Outcome::UserAlreadyConnected,
            ),
        ],
        None => {
            let [(fa, da), (fb, db)] = model::permanent_files(i);
            vec![
                (Operation::Register, Outcome::UsernameInUse),
                (model::connect_op(i), Outcome::UserAlreadyConnected),
                (model::publish_op(fa, da), Outcome::ContentAlreadyPublished),
                (model::publish_op(fb, db), Outcome::ContentAlreadyPublished),
            ]
        }
    };
    for (operation, already) in steps {
        if !step(shared, dates, i, operation, already).await {
            return false;
        }
    }
    true
}

/// One idempotent step: OK or `already` is success.
async fn step(
    shared: &Shared,
    dates: &mut DateCache,
    i: usize,
    operation: Operation,
    already: Outcome,
) -> bool {
    let op = operation.kind();
    let what = format!("populate {op} {}", model::user_name(i));
    let request = match model::encode(i, operation, dates.get()) {
        Ok(request) => request,
        Err(e) => {
            shared.log.report(&what, &e.to_string());
            return false;
        }
    };
    for attempt in 1..=ATTEMPTS {
        match call(shared.addr, &request, op, shared.timeout).await {
            Ok(reply) if matches!(reply.outcome(), Outcome::Ok) || reply.outcome() == already => {
                return true;
            }
            Ok(reply) => {
                shared
                    .log
                    .report(&what, &format!("unexpected reply {:?}", reply.outcome()));
                return false;
            }
            Err(e) if attempt < ATTEMPTS => {
                shared.retries.fetch_add(1, Ordering::Relaxed);
                retry_note(shared, &what, &e);
                tokio::time::sleep(Duration::from_millis(20 << attempt)).await;
            }
            Err(e) => {
                shared
                    .log
                    .report(&what, &format!("{e} (after {ATTEMPTS} attempts)"));
                return false;
            }
        }
    }
    false
}

/// Retries are not errors, but the first one is worth a line on stderr.
fn retry_note(shared: &Shared, what: &str, e: &CallError) {
    if !shared.noted.swap(true, Ordering::Relaxed) {
        let hint = if e.is_addr_exhaustion() {
            " (ephemeral port exhaustion: too many sockets in TIME_WAIT?)"
        } else {
            ""
        };
        eprintln!("note: {what}: {e}{hint}; retrying (further retries only counted)");
    }
}
