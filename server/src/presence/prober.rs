//! The classic prober: finds classic-connected users whose listener died.
//!
//! Each classic-connected user (no session holds it) is probed about every
//! `interval`, the first time one full interval after its CONNECT (or after
//! start-up, for the entries loaded from disk); a failed probe is retried
//! after 2 s and 4 s, and the third failure in a row disconnects the user
//! durably, as the server ([`Actor::Server`]) with the dead address as the
//! takeover, so that the rules disconnect only the entry found dead.
//!
//! One task does it all, cheaply enough for a hundred thousand users: the
//! users due are kept in three FIFO queues (next round, first retry, second
//! retry) whose due times only grow, so the next one due is always at a
//! front; a generation per user drops queued probes that a newer CONNECT
//! superseded; a token bucket caps the probes per second; the probes in
//! flight are futures of this task, not tasks of their own.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use peerdex_protocol::Operation;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::actor::{Actor, Takeover};
use crate::durable::writer::{Committer, Mutation};
use crate::presence::{answers, PROBE_TIMEOUT};
use crate::state::State;

/// Waits before the retries of a failed probe.
const RETRIES: [Duration; 2] = [Duration::from_secs(2), Duration::from_secs(4)];
/// Failures in a row that disconnect a user.
const FAILURES: u8 = 3;
/// Most probes in flight (each is a socket).
const MAX_IN_FLIGHT: usize = 8192;

/// How the prober runs.
#[derive(Debug, Clone, Copy)]
pub struct ProbeConfig {
    /// Time between two probes of a user; zero disables probing.
    pub interval: Duration,
    /// Most probes started per second.
    pub rate: u32,
}

/// Tells the prober about new classic CONNECTs. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Prober {
    connects: Option<mpsc::UnboundedSender<Arc<str>>>,
}

impl Prober {
    /// A prober that probes nothing (`--probe-interval 0`).
    pub fn disabled() -> Prober {
        Prober::default()
    }

    /// `user` was just CONNECTed by a classic client: probe it from one
    /// interval on (an earlier entry of the user is superseded).
    pub fn connected(&self, user: &str) {
        if let Some(connects) = &self.connects {
            let _ = connects.send(Arc::from(user));
        }
    }

    /// Starts the prober task; the entries connected now are due one
    /// interval from now. No task when the interval is zero.
    pub fn start(
        state: Arc<State>,
        committer: Committer,
        config: ProbeConfig,
    ) -> (Prober, Option<JoinHandle<()>>) {
        if config.interval.is_zero() {
            return (Prober::disabled(), None);
        }
        let (connects, receiver) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(state, committer, config, receiver));
        (
            Prober {
                connects: Some(connects),
            },
            Some(task),
        )
    }
}

/// A probe due at `at`.
#[derive(Debug)]
struct Due {
    at: Instant,
    user: Arc<str>,
    generation: u64,
}

/// What the prober knows of one classic-connected user.
#[derive(Debug)]
struct Tracked {
    /// Bumped by each CONNECT: queued probes of older ones are stale.
    generation: u64,
    /// Failed probes in a row, of `addr`.
    failures: u8,
    addr: Option<SocketAddr>,
}

/// The prober's bookkeeping, apart from the futures in flight.
struct Schedule {
    interval: Duration,
    /// Next round, first retry, second retry: each sorted by due time.
    queues: [VecDeque<Due>; 3],
    users: HashMap<Arc<str>, Tracked>,
}

impl Schedule {
    fn track(&mut self, user: Arc<str>, now: Instant) {
        let tracked = self.users.entry(user.clone()).or_insert(Tracked {
            generation: 0,
            failures: 0,
            addr: None,
        });
        tracked.generation += 1;
        tracked.failures = 0;
        let generation = tracked.generation;
        self.queues[0].push_back(Due {
            at: now + self.interval,
            user,
            generation,
        });
    }

    fn is_current(&self, due: &Due) -> bool {
        self.users
            .get(&due.user)
            .is_some_and(|t| t.generation == due.generation)
    }

    /// The queue whose front is due first.
    fn next_queue(&self) -> Option<usize> {
        (0..self.queues.len())
            .filter(|&q| !self.queues[q].is_empty())
            .min_by_key(|&q| self.queues[q].front().map(|d| d.at))
    }

    fn next_at(&self) -> Option<Instant> {
        self.next_queue()
            .and_then(|q| self.queues[q].front().map(|d| d.at))
    }

    /// Pops the first probe due by `now`.
    fn pop_due(&mut self, now: Instant) -> Option<Due> {
        let q = self.next_queue()?;
        if self.queues[q].front()?.at > now {
            return None;
        }
        self.queues[q].pop_front()
    }

    /// Records a probe's result; returns the address to disconnect when
    /// this was the last failure allowed.
    fn settle(&mut self, due: Due, addr: SocketAddr, ok: bool, now: Instant) -> Option<SocketAddr> {
        if !self.is_current(&due) {
            return None;
        }
        let tracked = self.users.get_mut(&due.user)?;
        if ok {
            tracked.failures = 0;
            self.queues[0].push_back(Due {
                at: now + self.interval,
                ..due
            });
            return None;
        }
        tracked.failures += 1;
        if tracked.failures >= FAILURES {
            self.users.remove(&due.user);
            return Some(addr);
        }
        let retry = usize::from(tracked.failures);
        self.queues[retry].push_back(Due {
            at: now + RETRIES[retry - 1],
            ..due
        });
        None
    }
}

/// Where `user` is to be probed: its classic entry's address, or `None`
/// when it is no longer connected classically.
fn classic_address(state: &State, user: &str) -> Option<SocketAddr> {
    let tables = state.tables();
    if tables.holder(user).is_some() {
        return None;
    }
    tables.address(user)
}

async fn probe(due: Due, addr: SocketAddr) -> (Due, SocketAddr, bool) {
    let ok = answers(addr, PROBE_TIMEOUT).await;
    (due, addr, ok)
}

async fn run(
    state: Arc<State>,
    committer: Committer,
    config: ProbeConfig,
    mut connects: mpsc::UnboundedReceiver<Arc<str>>,
) {
    let rate = f64::from(config.rate.max(1));
    let burst = (rate / 20.0).max(1.0);
    let max_in_flight = (config.rate as usize)
        .saturating_mul(4)
        .clamp(1, MAX_IN_FLIGHT);
    let mut schedule = Schedule {
        interval: config.interval,
        queues: Default::default(),
        users: HashMap::new(),
    };
    let start = Instant::now();
    // The entries loaded from disk: every classic one is probed from one
    // interval on (start-up already released the session-held ones).
    // Entries are `user\0ip\0port\0`, back to back.
    let connected = state.tables().connected_entries().into_parts();
    for part in &connected {
        for name in part.bytes().split(|b| *b == 0).step_by(3) {
            let Ok(user) = std::str::from_utf8(name) else {
                continue;
            };
            if !user.is_empty() && classic_address(&state, user).is_some() {
                schedule.track(Arc::from(user), start);
            }
        }
    }
    let mut in_flight = FuturesUnordered::new();
    let mut tokens = burst;
    let mut refilled = start;
    let mut open = true;
    loop {
        let now = Instant::now();
        tokens = (tokens + now.duration_since(refilled).as_secs_f64() * rate).min(burst);
        refilled = now;
        while tokens >= 1.0 && in_flight.len() < max_in_flight {
            let Some(due) = schedule.pop_due(now) else {
                break;
            };
            if !schedule.is_current(&due) {
                continue;
            }
            let Some(addr) = classic_address(&state, &due.user) else {
                schedule.users.remove(&due.user);
                continue;
            };
            if let Some(tracked) = schedule.users.get_mut(&due.user) {
                if tracked.addr != Some(addr) {
                    tracked.addr = Some(addr);
                    tracked.failures = 0;
                }
            }
            tokens -= 1.0;
            in_flight.push(probe(due, addr));
        }
        // Something due now waits only for tokens (or, with every probe
        // slot taken, for a probe to finish, which wakes the loop anyway).
        let idle = now + config.interval;
        let wake = match schedule.next_at() {
            Some(at) if at <= now && in_flight.len() >= max_in_flight => idle,
            Some(at) if at <= now => now + Duration::from_secs_f64(1.0 / rate),
            Some(at) => at,
            None => idle,
        };
        tokio::select! {
            connect = connects.recv(), if open => match connect {
                Some(user) => schedule.track(user, Instant::now()),
                None => open = false,
            },
            Some((due, addr, ok)) = in_flight.next(), if !in_flight.is_empty() => {
                let user = due.user.clone();
                if let Some(dead) = schedule.settle(due, addr, ok, Instant::now()) {
                    disconnect(&committer, &user, dead);
                }
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}

/// Disconnects `user`, whose listener at `addr` failed its probes, without
/// holding the prober up while the change becomes durable.
fn disconnect(committer: &Committer, user: &str, addr: SocketAddr) {
    tracing::info!(user = %user.escape_debug(), %addr, "listener gone, disconnecting");
    let committer = committer.clone();
    let mutation = Mutation {
        user: user.to_string(),
        operation: Operation::Disconnect,
        peer_ip: addr.ip(),
        actor: Actor::Server,
        takeover: Some(Takeover::DeadAddress(addr)),
    };
    tokio::spawn(async move {
        let outcome = committer.submit(mutation).await;
        tracing::debug!(?outcome, "presence disconnect");
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule() -> Schedule {
        Schedule {
            interval: Duration::from_secs(80),
            queues: Default::default(),
            users: HashMap::new(),
        }
    }

    const ADDR: &str = "127.0.0.1:9";

    #[tokio::test(start_paused = true)]
    async fn the_first_probe_is_one_interval_after_the_connect() {
        let mut s = schedule();
        let t = Instant::now();
        s.track(Arc::from("al"), t);
        assert!(s.pop_due(t + Duration::from_secs(79)).is_none());
        let due = s.pop_due(t + Duration::from_secs(80)).unwrap();
        assert_eq!(&*due.user, "al");
    }

    #[tokio::test(start_paused = true)]
    async fn three_failures_in_a_row_disconnect_with_retries_after_2_and_4_seconds() {
        let mut s = schedule();
        let t = Instant::now();
        let addr: SocketAddr = ADDR.parse().unwrap();
        s.track(Arc::from("al"), t);
        let due = s.pop_due(t + s.interval).unwrap();
        let t1 = t + s.interval;
        assert_eq!(s.settle(due, addr, false, t1), None);
        assert!(s.pop_due(t1 + Duration::from_millis(1999)).is_none());
        let due = s.pop_due(t1 + Duration::from_secs(2)).unwrap();
        let t2 = t1 + Duration::from_secs(2);
        assert_eq!(s.settle(due, addr, false, t2), None);
        assert!(s.pop_due(t2 + Duration::from_millis(3999)).is_none());
        let due = s.pop_due(t2 + Duration::from_secs(4)).unwrap();
        assert_eq!(
            s.settle(due, addr, false, t2 + Duration::from_secs(4)),
            Some(addr)
        );
        assert!(s.users.is_empty());
        assert!(s.next_at().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_starts_the_count_over_and_waits_a_full_interval() {
        let mut s = schedule();
        let t = Instant::now();
        let addr: SocketAddr = ADDR.parse().unwrap();
        s.track(Arc::from("al"), t);
        let t1 = t + s.interval;
        let due = s.pop_due(t1).unwrap();
        s.settle(due, addr, false, t1);
        let due = s.pop_due(t1 + RETRIES[0]).unwrap();
        s.settle(due, addr, true, t1 + RETRIES[0]);
        assert_eq!(s.users[&Arc::<str>::from("al")].failures, 0);
        assert_eq!(s.next_at(), Some(t1 + RETRIES[0] + s.interval));
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_connect_supersedes_the_queued_probe() {
        let mut s = schedule();
        let t = Instant::now();
        s.track(Arc::from("al"), t);
        s.track(Arc::from("al"), t + Duration::from_secs(10));
        let stale = s.pop_due(t + s.interval).unwrap();
        assert!(!s.is_current(&stale));
        let addr: SocketAddr = ADDR.parse().unwrap();
        assert_eq!(s.settle(stale, addr, false, t + s.interval), None);
        let fresh = s.pop_due(t + Duration::from_secs(90)).unwrap();
        assert!(s.is_current(&fresh));
    }
}
