//! One source's task in a swarm run: keeps up to
//! [`Options::in_flight`](super::Options::in_flight) piece requests under
//! way, verifies each piece before it is written, and drops the source
//! when it misbehaves or keeps failing.
//!
//! Which piece to fetch next, and whether a verified copy may be written,
//! is asked of the run's [`PieceTracker`](super::tracker::PieceTracker).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::task::JoinSet;

use super::Shared;
use crate::peer::sources::{backoff, fetch_range, Source, SourceError};

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
    if !shared.tracker().start_writing(piece) {
        shared.recycle(buf);
        return PieceOutcome::Duplicate;
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
        shared.tracker().write_failed(piece);
        return PieceOutcome::Local(err);
    }
    shared.tracker().written(piece);
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
pub(super) async fn worker(shared: Arc<Shared>, id: usize, source: Source) {
    let source = Arc::new(source);
    let mut wake = shared.wake.subscribe();
    let mut set: JoinSet<(u64, PieceOutcome)> = JoinSet::new();
    let mut failures = 0u32;
    let mut dropped = false;
    loop {
        wake.borrow_and_update();
        if shared.tracker().finished() {
            break;
        }
        if !dropped {
            while set.len() < shared.options.in_flight {
                let Some(piece) = shared.tracker().take(id) else {
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
                shared.tracker().fail(err);
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
        shared.tracker().give_back(piece, id);
        if let Some(reason) = drop_reason {
            if !dropped {
                dropped = true;
                shared.note(format!("source {source} dropped: {reason}"));
                let alive = shared.tracker().drop_source();
                shared.show_sources(alive);
            }
        }
        shared.wake();
    }
    let over = shared.tracker().over();
    if over {
        // Only duplicates can be under way: not worth waiting for.
        set.abort_all();
    }
    // Otherwise requests under way may still bring verified pieces (they
    // record them themselves): let them end.
    while set.join_next().await.is_some() {}
    // Whatever this source still held goes back to the others.
    let mut tracker = shared.tracker();
    tracker.give_back_all(id);
    if !dropped {
        tracker.source_ended();
    }
    drop(tracker);
    shared.wake();
}
