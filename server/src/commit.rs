//! Group commit: every mutation goes through one writer thread.
//!
//! The writer takes everything queued (up to [`MAX_BATCH`] operations) and
//! commits it as one batch through [`Engine::commit`]: applied in arrival
//! order (each operation sees the previous one's effect), made durable with
//! one journal write and one `fdatasync`, published to readers, and only
//! then answered. A reply of 0 therefore always means "on disk". If the
//! batch cannot be made durable every operation in it fails.

use std::thread;

use peerdex_protocol::Outcome;
use tokio::sync::{mpsc, oneshot};

use crate::engine::Engine;
pub use crate::engine::Mutation;

/// Most operations applied in one batch.
pub const MAX_BATCH: usize = 1024;

/// Queued mutations before submitters wait (backpressure).
const QUEUE_CAPACITY: usize = 16 * 1024;

/// A queued mutation and where its outcome goes.
struct Job {
    /// What to apply.
    mutation: Mutation,
    /// Receives the outcome after the batch committed.
    done: oneshot::Sender<Outcome>,
}

/// Handle that submits mutations to the writer. Cheap to clone; the writer
/// stops once every handle is dropped.
#[derive(Clone)]
pub struct Committer {
    /// The writer's queue.
    queue: mpsc::Sender<Job>,
}

/// The writer thread; join it after every [`Committer`] is dropped to get
/// the engine back (and close it).
pub struct Writer {
    /// The running thread, which returns the engine when the queue closes.
    thread: thread::JoinHandle<Engine>,
}

impl Writer {
    /// Waits for the writer to apply what is queued and stop.
    pub fn join(self) -> thread::Result<Engine> {
        self.thread.join()
    }
}

impl Committer {
    /// Starts the writer thread, which owns `engine` until it stops.
    pub fn start(engine: Engine) -> std::io::Result<(Committer, Writer)> {
        let (queue, jobs) = mpsc::channel(QUEUE_CAPACITY);
        let thread = thread::Builder::new()
            .name("peerdex-commit".into())
            .spawn(move || write_loop(engine, jobs))?;
        Ok((Committer { queue }, Writer { thread }))
    }

    /// Applies `mutation` and returns its outcome once committed. Any
    /// failure of the writer is the catch-all FAIL.
    pub async fn submit(&self, mutation: Mutation) -> Outcome {
        let (done, outcome) = oneshot::channel();
        if self.queue.send(Job { mutation, done }).await.is_err() {
            tracing::error!("commit writer is gone");
            return Outcome::Fail;
        }
        outcome.await.unwrap_or(Outcome::Fail)
    }
}

fn write_loop(mut engine: Engine, mut jobs: mpsc::Receiver<Job>) -> Engine {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = jobs.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let outcomes = engine.commit(batch.iter().map(|job| &job.mutation));
        tracing::trace!(ops = outcomes.len(), "batch committed");
        for (job, outcome) in batch.drain(..).zip(outcomes) {
            // The connection may have gone away; nothing to tell it then.
            let _ = job.done.send(outcome);
        }
    }
    tracing::debug!("commit writer stopped");
    engine
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
