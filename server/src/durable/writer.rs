//! Group commit: every mutation goes through one writer thread, every
//! journal sync through one syncer thread, pipelined.
//!
//! The writer takes everything queued (up to [`MAX_BATCH`] operations) and
//! stages it as one batch ([`Engine::stage`]): applied in arrival order
//! (each operation sees the previous one's effect), written to the journal
//! and applied to the in-memory state. It hands the batch to the syncer and
//! goes on with the next one while the syncer runs `fdatasync`: one sync
//! covers every batch written before it started, so the disk's flush
//! latency is paid once per sync, not once per batch plus the wait for the
//! previous one (docs/PERFORMANCE.md).
//!
//! Nothing leaves the server before it is durable: the syncer answers a
//! batch's operations only after the sync covering it, and readers, which
//! may see a staged batch in the state, wait for the same
//! ([`Durability::wait_for`]). If a sync fails, the state may hold changes
//! that are not on disk: the server fails every operation from then on
//! (a restart replays what is durable), as databases do after a failed
//! fsync.

use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::thread;

use peerdex_protocol::Outcome;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, watch};

pub use crate::durable::engine::Mutation;
use crate::durable::engine::{Engine, Staged};
use crate::state::State;

/// Most operations applied in one batch.
pub const MAX_BATCH: usize = 1024;

/// Queued mutations before submitters wait (backpressure).
const QUEUE_CAPACITY: usize = 16 * 1024;

/// Staged batches waiting for a sync before the writer waits.
const SYNC_QUEUE_CAPACITY: usize = 64;

/// A queued mutation and where its outcome goes.
struct Job {
    /// What to apply.
    mutation: Mutation,
    /// Receives the outcome after the batch is durable.
    done: oneshot::Sender<Outcome>,
}

/// A staged batch and who waits for it.
struct Pending {
    staged: Staged,
    done: Vec<oneshot::Sender<Outcome>>,
}

/// How far the journal is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Synced {
    /// Every batch up to this sequence number is durable.
    seq: u64,
    /// A sync failed: nothing may be answered from the state any more.
    failed: bool,
}

/// Lets readers wait until what they saw is durable. Cheap to clone.
#[derive(Clone)]
pub struct Durability {
    synced: watch::Receiver<Synced>,
}

impl Durability {
    /// Waits until every batch up to `seq` is durable. False if the
    /// journal failed (or the syncer is gone): the caller must answer with
    /// a failure instead of what it read.
    pub async fn wait_for(&self, seq: u64) -> bool {
        let current = *self.synced.borrow();
        if current.failed {
            return false;
        }
        if current.seq >= seq {
            return true;
        }
        let mut synced = self.synced.clone();
        let reached = synced
            .wait_for(|s| s.failed || s.seq >= seq)
            .await
            .map(|s| !s.failed);
        reached.unwrap_or(false)
    }
}

/// Handle that submits mutations to the writer. Cheap to clone; the writer
/// stops once every handle is dropped.
#[derive(Clone)]
pub struct Committer {
    /// The writer's queue.
    queue: mpsc::Sender<Job>,
    /// How far the journal is synced.
    durability: Durability,
}

/// The writer and syncer threads; join after every [`Committer`] is
/// dropped to get the engine back (and close it).
pub struct Writer {
    /// The writer, which returns the engine when the queue closes (after
    /// the syncer answered everything).
    thread: thread::JoinHandle<Engine>,
}

impl Writer {
    /// Waits for the writer to apply what is queued and stop.
    pub fn join(self) -> thread::Result<Engine> {
        self.thread.join()
    }
}

impl Committer {
    /// Starts the writer and syncer threads; the writer owns `engine` until
    /// it stops.
    pub fn start(engine: Engine) -> std::io::Result<(Committer, Writer)> {
        let (queue, jobs) = mpsc::channel(QUEUE_CAPACITY);
        let (synced_tx, synced) = watch::channel(Synced {
            seq: 0,
            failed: false,
        });
        let (pending_tx, pending) = std_mpsc::sync_channel(SYNC_QUEUE_CAPACITY);
        let state = engine.state().clone();
        let syncer = thread::Builder::new()
            .name("peerdex-sync".into())
            .spawn(move || sync_loop(&state, pending, &synced_tx))?;
        let thread = thread::Builder::new()
            .name("peerdex-commit".into())
            .spawn(move || {
                let engine = write_loop(engine, jobs, pending_tx);
                // The queue to the syncer is closed: it answers what is
                // left and stops.
                if syncer.join().is_err() {
                    tracing::error!("journal syncer panicked");
                }
                engine
            })?;
        let durability = Durability { synced };
        Ok((Committer { queue, durability }, Writer { thread }))
    }

    /// Applies `mutation` and returns its outcome once durable. Any
    /// failure of the writer is the catch-all FAIL.
    pub async fn submit(&self, mutation: Mutation) -> Outcome {
        let (done, outcome) = oneshot::channel();
        // The queue is rarely full: trying first keeps the job and the
        // channel's send future out of this future, which is part of every
        // mutation's connection task (the send future inline nearly doubles
        // the task's size).
        let sent = match self.queue.try_send(Job { mutation, done }) {
            Ok(()) => true,
            Err(TrySendError::Full(job)) => Box::pin(self.queue.send(job)).await.is_ok(),
            Err(TrySendError::Closed(_)) => false,
        };
        if !sent {
            tracing::error!("commit writer is gone");
            return Outcome::Fail;
        }
        outcome.await.unwrap_or(Outcome::Fail)
    }

    /// What readers wait on before answering.
    pub fn durability(&self) -> &Durability {
        &self.durability
    }
}

fn write_loop(
    mut engine: Engine,
    mut jobs: mpsc::Receiver<Job>,
    pending: std_mpsc::SyncSender<Pending>,
) -> Engine {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = jobs.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let staged = engine.stage(batch.iter().map(|job| &job.mutation));
        let done = batch.drain(..).map(|job| job.done).collect();
        if pending.send(Pending { staged, done }).is_err() {
            // The syncer is gone (panicked): its senders dropped, so the
            // waiting connections get FAIL.
            tracing::error!("journal syncer is gone");
        }
    }
    tracing::debug!("commit writer stopped");
    engine
}

/// Syncs the journal for every batch waiting, then answers them.
fn sync_loop(
    state: &Arc<State>,
    pending: std_mpsc::Receiver<Pending>,
    synced: &watch::Sender<Synced>,
) {
    let mut durable = 0u64;
    let mut failed = false;
    let mut round = Vec::new();
    while let Ok(first) = pending.recv() {
        round.push(first);
        while let Ok(next) = pending.try_recv() {
            round.push(next);
        }
        let target = round.iter().map(|p| p.staged.seq).max().unwrap_or(durable);
        if !failed && target > durable {
            let mut handles: Vec<&crate::durable::journal::SyncHandle> = Vec::new();
            for p in &round {
                if !handles.iter().any(|h| h.same_segment(&p.staged.sync)) {
                    handles.push(&p.staged.sync);
                }
            }
            match handles.iter().try_for_each(|h| h.sync()) {
                Ok(()) => {
                    durable = target;
                    state.set_durable(durable);
                    synced.send_replace(Synced {
                        seq: durable,
                        failed: false,
                    });
                }
                Err(err) => {
                    tracing::error!(error = %err, "journal sync failed; every operation fails until a restart");
                    failed = true;
                    state.fail();
                    synced.send_replace(Synced {
                        seq: durable,
                        failed: true,
                    });
                }
            }
        }
        for p in round.drain(..) {
            let ok = !failed || p.staged.seq <= durable;
            for (done, outcome) in p.done.into_iter().zip(p.staged.outcomes) {
                // The connection may have gone away; nothing to tell it then.
                let _ = done.send(if ok { outcome } else { Outcome::Fail });
            }
        }
    }
    tracing::debug!("journal syncer stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerdex_protocol::{ConnectAddr, Operation};

    fn start() -> (tempfile::TempDir, Committer, Writer) {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path()).unwrap();
        let (committer, writer) = Committer::start(engine).unwrap();
        (dir, committer, writer)
    }

    fn mutation(user: &str, operation: Operation) -> Mutation {
        Mutation {
            user: user.into(),
            operation,
            peer_ip: "127.0.0.1".parse().unwrap(),
            actor: crate::actor::Actor::Classic,
            takeover: None,
        }
    }

    #[tokio::test]
    async fn simultaneous_registers_give_one_ok() {
        let (_dir, committer, writer) = start();
        let outcomes = futures::future::join_all(
            (0..100).map(|_| committer.submit(mutation("al", Operation::Register))),
        )
        .await;
        let oks = outcomes.iter().filter(|o| **o == Outcome::Ok).count();
        let in_use = outcomes
            .iter()
            .filter(|o| **o == Outcome::UsernameInUse)
            .count();
        assert_eq!((oks, in_use), (1, 99));
        drop(committer);
        writer.join().unwrap();
    }

    #[tokio::test]
    async fn ops_in_one_batch_see_each_other_in_order() {
        let (_dir, committer, _writer) = start();
        let ops = vec![
            Operation::Register,
            Operation::Connect(ConnectAddr {
                ip: Ok(None),
                port: Ok(80),
            }),
            Operation::Publish {
                file: Ok("f".into()),
                description: Ok("d".into()),
            },
            Operation::Publish {
                file: Ok("f".into()),
                description: Ok("d".into()),
            },
            Operation::Unregister,
            Operation::Disconnect,
        ];
        // join_all polls in order, so the jobs are queued in this order.
        let outcomes = futures::future::join_all(
            ops.into_iter()
                .map(|op| committer.submit(mutation("u", op))),
        )
        .await;
        assert_eq!(
            outcomes,
            [
                Outcome::Ok,
                Outcome::Ok,
                Outcome::Ok,
                Outcome::ContentAlreadyPublished,
                Outcome::Ok,
                Outcome::UserDoesNotExist
            ]
        );
    }

    #[tokio::test]
    async fn writer_stops_when_handles_drop() {
        let (_dir, committer, writer) = start();
        assert_eq!(
            committer.submit(mutation("x", Operation::Register)).await,
            Outcome::Ok
        );
        drop(committer);
        tokio::task::spawn_blocking(move || writer.join())
            .await
            .unwrap()
            .unwrap();
    }
}
