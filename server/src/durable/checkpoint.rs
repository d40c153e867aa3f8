//! The checkpointer: a background thread that brings the database (redb) up
//! to date with each full journal segment, then deletes the segment.
//!
//! Why in the background: requests are answered from memory
//! ([`crate::state`]) once the journal is synced, so the database only
//! bounds how much journal a restart replays. Applying a whole segment in
//! one transaction also copies each touched B-tree page once per segment
//! instead of once per batch.
//!
//! A segment that cannot be applied stays on disk (it is retried with the
//! next one, and replayed at the next start): durability never depends on
//! the checkpointer, only the journal's length does.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread;

use crate::durable::journal::{read_segment, segment_path};
use crate::durable::store::{Store, StoreError};

/// Finished segments waiting before the writer blocks: if the database
/// cannot keep up, commits slow down instead of the journal growing
/// without bound.
pub const MAX_WAITING: usize = 4;

/// Handle to the checkpointer thread.
pub struct Checkpointer {
    /// Numbers of finished segments, oldest first.
    queue: SyncSender<u64>,
    /// The thread; returns the store once the queue closes.
    thread: thread::JoinHandle<Store>,
}

impl Checkpointer {
    /// Starts the thread over `store`, for segments in `dir`.
    pub fn start(store: Store, dir: &Path) -> std::io::Result<Checkpointer> {
        let (queue, segments) = mpsc::sync_channel(MAX_WAITING);
        let dir = dir.to_path_buf();
        let thread = thread::Builder::new()
            .name("peerdex-checkpoint".into())
            .spawn(move || run(store, &dir, segments))?;
        Ok(Checkpointer { queue, thread })
    }

    /// Hands over finished segment `number` (every record in it synced).
    /// Blocks while [`MAX_WAITING`] segments wait.
    pub fn segment_finished(&self, number: u64) {
        if self.queue.send(number).is_err() {
            // The thread is gone (it panicked): the segment stays on disk
            // and is replayed at the next start.
            tracing::error!(segment = number, "checkpointer is gone; segment kept");
        }
    }

    /// Applies everything handed over, stops, and returns the store.
    pub fn finish(self) -> thread::Result<Store> {
        drop(self.queue);
        self.thread.join()
    }
}

fn run(store: Store, dir: &Path, segments: Receiver<u64>) -> Store {
    let mut waiting = VecDeque::new();
    while let Ok(number) = segments.recv() {
        waiting.push_back(number);
        while let Ok(number) = segments.try_recv() {
            waiting.push_back(number);
        }
        apply_waiting(&store, dir, &mut waiting);
    }
    tracing::debug!("checkpointer stopped");
    store
}

/// Applies waiting segments in order; stops at the first failure, which
/// is retried later. A damaged segment is never applied nor deleted: it
/// stops checkpoints until a restart, which refuses to start until
/// `peerdex-server salvage` set it aside (the running server keeps serving
/// from memory, and every record after the damage stays in the journal).
fn apply_waiting(store: &Store, dir: &Path, waiting: &mut VecDeque<u64>) {
    while let Some(number) = waiting.front().copied() {
        let path = segment_path(dir, number);
        // A finished segment is never the newest: its records end clean.
        let applied = read_segment(&path, false)
            .map_err(StoreError::from)
            .and_then(|read| {
                read.intact()?;
                store.apply_segment(&read)
            });
        match applied {
            Ok(effects) => {
                tracing::debug!(segment = number, effects, "checkpoint done");
                waiting.pop_front();
                // Deleting is what keeps the journal short; a segment that
                // survives is only replayed again, which is idempotent.
                if let Err(err) = std::fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), error = %err, "cannot delete a checkpointed segment");
                }
            }
            Err(err) => {
                tracing::error!(path = %path.display(), error = %err, "checkpoint failed; segment kept and retried");
                return;
            }
        }
    }
}
