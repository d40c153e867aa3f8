//! The multi-source piece engine of a verified download (the swarm).
//!
//! Pieces wait in a work queue. Each source is a worker with at most
//! [`Options::in_flight`] requests under way, one `GET_RANGE` (one
//! connection) per piece. A fetched piece is checked against its digest
//! before it is written into `.part` at its offset; only then is it done.
//!
//! - A request that fails (connect error, short read, stall) puts its piece
//!   back at the front of the queue; a source failing
//!   [`Options::max_failures`] times in a row is dropped.
//! - A source that sends a piece with a wrong hash, or other content, or
//!   says it no longer has the file, is dropped at once (noted on stderr).
//! - Endgame: when the queue is empty, an idle source re-requests a piece
//!   in flight elsewhere; the first verified copy wins, so a slow source's
//!   pieces are taken over.
//! - Every [`Options::checkpoint_every`] pieces, `.part` is fsync'd and the
//!   state file rewritten with the pieces written before the fsync.
//!
//! Memory is fixed: at most `in_flight` piece buffers per source, recycled.
//!
//! Split like rqbit's piece engine: [`tracker`] is the bookkeeping (which
//! pieces are needed, who fetches which, which are done), [`worker`] the
//! per-source tasks that fetch, verify and write; this module starts a run
//! and holds what they share.

mod tracker;
mod worker;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use indicatif::ProgressBar;
use thiserror::Error;
use tokio::sync::watch;

use super::direct_io::AlignedBuf;
use super::resume::{Bitmap, PartFile};
use super::sources::Source;
use crate::content::pieces::Manifest;
use tracker::PieceTracker;

/// Tuning of the engine.
#[derive(Debug, Clone)]
pub struct Options {
    /// Requests under way per source.
    pub in_flight: usize,
    /// Consecutive failed requests after which a source is dropped.
    pub max_failures: u32,
    /// Pieces between two checkpoints of the state file.
    pub checkpoint_every: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            in_flight: 4,
            max_failures: 3,
            checkpoint_every: 32,
        }
    }
}

/// What a finished (or failed) run did.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Bytes received from sources, duplicates and rejected pieces included.
    pub bytes_fetched: u64,
    /// Pieces verified and written in this run.
    pub pieces_written: u64,
    /// What happened to sources (dropped, and why), for stderr.
    pub notes: Vec<String>,
}

/// Why a run did not complete.
#[derive(Debug, Error)]
pub enum SwarmError {
    #[error("{missing} pieces missing and no source left")]
    NoSources { missing: u64, report: Report },
    #[error("cannot write the .part file: {0}")]
    Local(std::io::Error),
}

/// State shared by workers and their requests.
struct Shared {
    /// The run's bookkeeping.
    tracker: Mutex<PieceTracker>,
    /// Bumped on every change workers may wait for.
    wake: watch::Sender<u64>,
    manifest: Arc<Manifest>,
    part: Arc<PartFile>,
    options: Options,
    progress: Option<ProgressBar>,
    fetched: AtomicU64,
    /// Recycled piece buffers, aligned so that verified pieces go to
    /// `.part` with direct I/O straight from the buffer they were received
    /// into.
    pool: Mutex<Vec<AlignedBuf>>,
    /// Serializes checkpoints. The guard travels into the blocking write,
    /// so a checkpoint of an aborted request still holds it until written:
    /// the run's last checkpoint (and the rename after it) waits for it.
    checkpoint: Arc<tokio::sync::Mutex<()>>,
    notes: Mutex<Vec<String>>,
}

impl Shared {
    fn tracker(&self) -> std::sync::MutexGuard<'_, PieceTracker> {
        self.tracker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wake(&self) {
        self.wake.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn note(&self, note: String) {
        tracing::debug!("{note}");
        self.notes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(note);
    }

    /// A piece buffer: recycled, or a new one (at most `in_flight` per
    /// source exist at once).
    fn buffer(&self) -> std::io::Result<AlignedBuf> {
        let recycled = self
            .pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        match recycled {
            Some(buf) => Ok(buf),
            None => AlignedBuf::zeroed(self.manifest.piece_size as usize),
        }
    }

    fn recycle(&self, buf: AlignedBuf) {
        self.pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(buf);
    }

    fn show_sources(&self, alive: usize) {
        if let Some(bar) = &self.progress {
            bar.set_message(format!(
                "{alive} source{}",
                if alive == 1 { "" } else { "s" }
            ));
        }
    }

    /// Writes the durable state when enough pieces were done since the last
    /// time (or `force`).
    async fn maybe_checkpoint(&self, force: bool) -> Result<(), std::io::Error> {
        let due = self
            .tracker()
            .checkpoint_due(self.options.checkpoint_every, force);
        let Some(snapshot) = due else {
            return Ok(());
        };
        let one = Arc::clone(&self.checkpoint).lock_owned().await;
        let part = Arc::clone(&self.part);
        tokio::task::spawn_blocking(move || {
            let _one = one;
            part.checkpoint(&snapshot)
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

/// Downloads every piece not in `done` from `sources` into `part`.
pub async fn run(
    sources: Vec<Source>,
    manifest: Arc<Manifest>,
    part: Arc<PartFile>,
    done: Bitmap,
    options: Options,
    progress: Option<ProgressBar>,
) -> Result<Report, SwarmError> {
    let queue: VecDeque<u64> = (0..manifest.count()).filter(|&i| !done.get(i)).collect();
    let already = done.count();
    let remaining = queue.len() as u64;
    if let Some(bar) = &progress {
        bar.set_position(
            manifest.size
                - queue
                    .iter()
                    .map(|&i| manifest.piece_range(i).1)
                    .sum::<u64>(),
        );
    }
    let (wake, _) = watch::channel(0u64);
    let shared = Arc::new(Shared {
        tracker: Mutex::new(PieceTracker::new(queue, done, sources.len())),
        wake,
        manifest,
        part,
        options,
        progress,
        fetched: AtomicU64::new(0),
        pool: Mutex::new(Vec::new()),
        checkpoint: Arc::new(tokio::sync::Mutex::new(())),
        notes: Mutex::new(Vec::new()),
    });
    shared.show_sources(sources.len());
    if remaining > 0 {
        let workers = sources
            .into_iter()
            .enumerate()
            .map(|(id, source)| worker::worker(Arc::clone(&shared), id, source));
        futures::future::join_all(workers).await;
    }
    let (remaining, fatal, pieces_written) = {
        let mut tracker = shared.tracker();
        (
            tracker.remaining(),
            tracker.take_fatal(),
            tracker.done_count() - already,
        )
    };
    let report = Report {
        bytes_fetched: shared.fetched.load(Ordering::Relaxed),
        pieces_written,
        notes: std::mem::take(&mut *shared.notes.lock().unwrap_or_else(PoisonError::into_inner)),
    };
    if let Some(err) = fatal {
        return Err(SwarmError::Local(err));
    }
    // Keep what was done for a later run, whatever happens next.
    shared
        .maybe_checkpoint(true)
        .await
        .map_err(SwarmError::Local)?;
    if remaining > 0 {
        return Err(SwarmError::NoSources {
            missing: remaining,
            report,
        });
    }
    Ok(report)
}
