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

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use indicatif::ProgressBar;
use thiserror::Error;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::direct_io::AlignedBuf;
use super::resume::{Bitmap, PartFile};
use super::sources::{backoff, fetch_range, Source, SourceError};
use crate::content::pieces::Manifest;

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

/// The work queue and who is fetching what.
#[derive(Debug)]
struct Sched {
    /// Pieces nobody fetches yet.
    queue: VecDeque<u64>,
    /// Pieces being fetched, with the sources fetching them.
    requesters: HashMap<u64, Vec<usize>>,
    /// Verified copy being written: other copies are dropped.
    writing: HashSet<u64>,
    /// Verified and written.
    done: Bitmap,
    /// Pieces not done.
    remaining: u64,
    /// Sources not dropped.
    alive: usize,
    /// Pieces done since the last checkpoint.
    since_checkpoint: u64,
    /// A local failure that ends the run.
    fatal: Option<std::io::Error>,
}

impl Sched {
    /// The next piece for `source`: from the queue, else (endgame) a piece
    /// another source is fetching, at most two fetches per piece.
    fn take(&mut self, source: usize) -> Option<u64> {
        while let Some(piece) = self.queue.pop_front() {
            if self.done.get(piece) || self.writing.contains(&piece) {
                continue;
            }
            self.requesters.entry(piece).or_default().push(source);
            return Some(piece);
        }
        let piece = self
            .requesters
            .iter()
            .filter(|(piece, who)| {
                who.len() < 2 && !who.contains(&source) && !self.writing.contains(piece)
            })
            .min_by_key(|(piece, who)| (who.len(), **piece))
            .map(|(piece, _)| *piece)?;
        self.requesters.entry(piece).or_default().push(source);
        Some(piece)
    }

    /// `source` stops fetching `piece`; back in the queue if nobody else is
    /// on it and it is not done.
    fn give_back(&mut self, piece: u64, source: usize) {
        if let Some(who) = self.requesters.get_mut(&piece) {
            who.retain(|&s| s != source);
            if who.is_empty() {
                self.requesters.remove(&piece);
            }
        }
        if !self.done.get(piece)
            && !self.writing.contains(&piece)
            && !self.requesters.contains_key(&piece)
            && !self.queue.contains(&piece)
        {
            self.queue.push_front(piece);
        }
    }

    fn finished(&self) -> bool {
        self.remaining == 0 || self.fatal.is_some() || self.alive == 0
    }
}

/// What one piece request ended with.
enum PieceOutcome {
    /// Verified and written.
    Done,
    /// Verified, but another copy was written first.
    Duplicate,
    /// The request failed.
    Failed(SourceError),
    /// The bytes do not match the piece's digest.
    WrongHash,
    /// Writing `.part` failed: the run ends.
    Local(std::io::Error),
}

/// State shared by workers and their requests.
struct Shared {
    sched: Mutex<Sched>,
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
    fn sched(&self) -> std::sync::MutexGuard<'_, Sched> {
        self.sched.lock().unwrap_or_else(PoisonError::into_inner)
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
        let snapshot = {
            let mut sched = self.sched();
            if !force && sched.since_checkpoint < self.options.checkpoint_every {
                return Ok(());
            }
            sched.since_checkpoint = 0;
            sched.done.clone()
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

/// Fetches, verifies and writes one piece.
async fn fetch_piece(shared: Arc<Shared>, source: Arc<Source>, piece: u64) -> PieceOutcome {
    let (offset, len) = shared.manifest.piece_range(piece);
    let mut buf = match shared.buffer() {
        Ok(buf) => buf,
        Err(err) => return PieceOutcome::Local(err),
    };
    let fetched = fetch_range(&source, &shared.manifest, offset, &mut buf[..len as usize]).await;
    if let Err(err) = fetched {
        shared.recycle(buf);
        return PieceOutcome::Failed(err);
    }
    shared.fetched.fetch_add(len, Ordering::Relaxed);
    let manifest = Arc::clone(&shared.manifest);
    let checked = tokio::task::spawn_blocking(move || {
        let ok = manifest.piece_matches(piece, &buf[..len as usize]);
        (buf, ok)
    })
    .await;
    let Ok((buf, matches)) = checked else {
        return PieceOutcome::Failed(SourceError::Transfer("verification task failed".into()));
    };
    if !matches {
        shared.recycle(buf);
        return PieceOutcome::WrongHash;
    }
    {
        let mut sched = shared.sched();
        if sched.done.get(piece) || !sched.writing.insert(piece) {
            drop(sched);
            shared.recycle(buf);
            return PieceOutcome::Duplicate;
        }
    }
    let part = Arc::clone(&shared.part);
    let written = tokio::task::spawn_blocking(move || {
        let result = part.write_at(&buf[..len as usize], offset);
        (buf, result)
    })
    .await;
    let (buf, result) = match written {
        Ok(done) => done,
        Err(err) => return PieceOutcome::Local(std::io::Error::other(err)),
    };
    shared.recycle(buf);
    if let Err(err) = result {
        shared.sched().writing.remove(&piece);
        return PieceOutcome::Local(err);
    }
    {
        let mut sched = shared.sched();
        sched.writing.remove(&piece);
        sched.requesters.remove(&piece);
        sched.done.set(piece);
        sched.remaining -= 1;
        sched.since_checkpoint += 1;
    }
    if let Some(bar) = &shared.progress {
        bar.inc(len);
    }
    if let Err(err) = shared.maybe_checkpoint(false).await {
        return PieceOutcome::Local(err);
    }
    shared.wake();
    PieceOutcome::Done
}

/// One source: keeps its requests under way until the download is over or
/// the source is dropped.
async fn worker(shared: Arc<Shared>, id: usize, source: Source) {
    let source = Arc::new(source);
    let mut wake = shared.wake.subscribe();
    let mut set: JoinSet<(u64, PieceOutcome)> = JoinSet::new();
    let mut failures = 0u32;
    let mut dropped = false;
    loop {
        wake.borrow_and_update();
        if shared.sched().finished() {
            break;
        }
        if !dropped {
            while set.len() < shared.options.in_flight {
                let Some(piece) = shared.sched().take(id) else {
                    break;
                };
                let (shared, source) = (Arc::clone(&shared), Arc::clone(&source));
                set.spawn(async move { (piece, fetch_piece(shared, source, piece).await) });
            }
        }
        if set.is_empty() {
            if dropped || wake.changed().await.is_err() {
                break;
            }
            continue;
        }
        let joined = tokio::select! {
            joined = set.join_next() => joined,
            changed = wake.changed() => {
                if changed.is_err() { break; }
                continue;
            }
        };
        let Some(Ok((piece, outcome))) = joined else {
            continue;
        };
        let drop_reason = match outcome {
            PieceOutcome::Done | PieceOutcome::Duplicate => {
                failures = 0;
                None
            }
            PieceOutcome::Local(err) => {
                shared.sched().fatal.get_or_insert(err);
                shared.wake();
                break;
            }
            PieceOutcome::WrongHash => Some(format!("sent a wrong piece {piece}")),
            // A frozen source is dropped at its first silence: waiting
            // on it again would hold its pieces past the 10 s bound.
            PieceOutcome::Failed(
                err @ (SourceError::OtherContent
                | SourceError::NotFound
                | SourceError::Refused(_)
                | SourceError::Unsupported(_)
                | SourceError::Unresponsive(_)),
            ) => Some(format!("{err}")),
            PieceOutcome::Failed(err) => {
                failures += 1;
                tracing::debug!("source {source}: piece {piece}: {err} ({failures} in a row)");
                if failures >= shared.options.max_failures {
                    Some(format!("failed {failures} times in a row ({err})"))
                } else {
                    tokio::time::sleep(backoff(failures)).await;
                    None
                }
            }
        };
        shared.sched().give_back(piece, id);
        if let Some(reason) = drop_reason {
            if !dropped {
                dropped = true;
                shared.note(format!("source {source} dropped: {reason}"));
                let alive = {
                    let mut sched = shared.sched();
                    sched.alive -= 1;
                    sched.alive
                };
                shared.show_sources(alive);
            }
        }
        shared.wake();
    }
    let over = {
        let sched = shared.sched();
        sched.remaining == 0 || sched.fatal.is_some()
    };
    if over {
        // Only duplicates can be under way: not worth waiting for.
        set.abort_all();
    }
    // Otherwise requests under way may still bring verified pieces (they
    // record them themselves): let them end.
    while set.join_next().await.is_some() {}
    // Whatever this source still held goes back to the others.
    let mut sched = shared.sched();
    let held: Vec<u64> = sched
        .requesters
        .iter()
        .filter(|(_, who)| who.contains(&id))
        .map(|(piece, _)| *piece)
        .collect();
    for piece in held {
        sched.give_back(piece, id);
    }
    if !dropped {
        sched.alive = sched.alive.saturating_sub(1);
    }
    drop(sched);
    shared.wake();
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
        sched: Mutex::new(Sched {
            queue,
            requesters: HashMap::new(),
            writing: HashSet::new(),
            done,
            remaining,
            alive: sources.len(),
            since_checkpoint: 0,
            fatal: None,
        }),
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
            .map(|(id, source)| worker(Arc::clone(&shared), id, source));
        futures::future::join_all(workers).await;
    }
    let (remaining, fatal, pieces_written) = {
        let mut sched = shared.sched();
        (
            sched.remaining,
            sched.fatal.take(),
            sched.done.count() - already,
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
