//! The bookkeeping of a swarm run: which pieces are still needed, who is
//! fetching which, and which are done.
//!
//! Kept apart from the per-source tasks of [`super::worker`] (who fetches
//! a piece, and how) so that the rules that make a download complete and
//! never write a piece twice are in one place, testable without sockets:
//! a piece is handed out from the queue first, then (endgame) to at most
//! two sources at once; a verified copy is written only if no other copy
//! is done or being written; a piece nobody fetches any more goes back to
//! the front of the queue.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::peer::resume::Bitmap;

/// The work queue and who is fetching what. One per run, behind the run's
/// mutex.
#[derive(Debug)]
pub(super) struct PieceTracker {
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

impl PieceTracker {
    /// A run that needs `queue` (the pieces not in `done`) from `sources`
    /// sources.
    pub(super) fn new(queue: VecDeque<u64>, done: Bitmap, sources: usize) -> Self {
        Self {
            remaining: queue.len() as u64,
            queue,
            requesters: HashMap::new(),
            writing: HashSet::new(),
            done,
            alive: sources,
            since_checkpoint: 0,
            fatal: None,
        }
    }

    /// The next piece for `source`: from the queue, else (endgame) a piece
    /// another source is fetching, at most two fetches per piece.
    pub(super) fn take(&mut self, source: usize) -> Option<u64> {
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
    pub(super) fn give_back(&mut self, piece: u64, source: usize) {
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

    /// Gives back every piece `source` still holds (it ended).
    pub(super) fn give_back_all(&mut self, source: usize) {
        let held: Vec<u64> = self
            .requesters
            .iter()
            .filter(|(_, who)| who.contains(&source))
            .map(|(piece, _)| *piece)
            .collect();
        for piece in held {
            self.give_back(piece, source);
        }
    }

    /// A verified copy of `piece` may be written: `false` when another copy
    /// is done or being written (this one is a duplicate).
    pub(super) fn start_writing(&mut self, piece: u64) -> bool {
        !self.done.get(piece) && self.writing.insert(piece)
    }

    /// Writing `piece` failed (the run ends with [`Self::fail`]).
    pub(super) fn write_failed(&mut self, piece: u64) {
        self.writing.remove(&piece);
    }

    /// `piece` is verified and written.
    pub(super) fn written(&mut self, piece: u64) {
        self.writing.remove(&piece);
        self.requesters.remove(&piece);
        self.done.set(piece);
        self.remaining -= 1;
        self.since_checkpoint += 1;
    }

    /// The pieces done, when a checkpoint is due: `every` pieces since the
    /// last one, or `force`. Counting starts again.
    pub(super) fn checkpoint_due(&mut self, every: u64, force: bool) -> Option<Bitmap> {
        if !force && self.since_checkpoint < every {
            return None;
        }
        self.since_checkpoint = 0;
        Some(self.done.clone())
    }

    /// A local failure ends the run; the first one is kept.
    pub(super) fn fail(&mut self, err: std::io::Error) {
        self.fatal.get_or_insert(err);
    }

    /// A source was dropped; returns the sources left.
    pub(super) fn drop_source(&mut self) -> usize {
        self.alive -= 1;
        self.alive
    }

    /// A source that was not dropped ended.
    pub(super) fn source_ended(&mut self) {
        self.alive = self.alive.saturating_sub(1);
    }

    /// Nothing is left to do: every piece done, a local failure, or no
    /// source left.
    pub(super) fn finished(&self) -> bool {
        self.remaining == 0 || self.fatal.is_some() || self.alive == 0
    }

    /// Every piece is done or the run failed: requests still under way can
    /// only bring duplicates.
    pub(super) fn over(&self) -> bool {
        self.remaining == 0 || self.fatal.is_some()
    }

    /// Pieces not done.
    pub(super) fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Pieces done, those of earlier runs included.
    pub(super) fn done_count(&self) -> u64 {
        self.done.count()
    }

    /// The local failure that ended the run, if any.
    pub(super) fn take_fatal(&mut self) -> Option<std::io::Error> {
        self.fatal.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(pieces: u64, sources: usize) -> PieceTracker {
        PieceTracker::new((0..pieces).collect(), Bitmap::new(pieces), sources)
    }

    #[test]
    fn queue_first_then_endgame_with_at_most_two_fetches_a_piece() {
        let mut t = tracker(2, 3);
        assert_eq!(t.take(0), Some(0));
        assert_eq!(t.take(1), Some(1));
        // Queue empty: source 2 doubles the least-fetched piece.
        assert_eq!(t.take(2), Some(0));
        // Both pieces have two fetchers now, or are held by the asker.
        assert_eq!(t.take(2), Some(1));
        assert_eq!(t.take(2), None);
        assert_eq!(t.take(0), None);
    }

    #[test]
    fn a_verified_piece_is_written_once_and_never_handed_out_again() {
        let mut t = tracker(1, 2);
        assert_eq!(t.take(0), Some(0));
        assert_eq!(t.take(1), Some(0));
        assert!(t.start_writing(0));
        assert!(!t.start_writing(0), "the second copy is a duplicate");
        t.written(0);
        assert!(!t.start_writing(0));
        t.give_back(0, 1);
        assert_eq!(t.take(1), None);
        assert!(t.finished() && t.over());
        assert_eq!(t.checkpoint_due(1, false).map(|d| d.count()), Some(1));
        assert!(
            t.checkpoint_due(1, false).is_none(),
            "counting starts again"
        );
    }

    #[test]
    fn a_piece_given_back_goes_to_the_front_of_the_queue() {
        let mut t = tracker(3, 2);
        assert_eq!(t.take(0), Some(0));
        assert_eq!(t.take(0), Some(1));
        t.give_back_all(0);
        let mut again = [t.take(1), t.take(1)];
        again.sort();
        assert_eq!(again, [Some(0), Some(1)], "ahead of the piece never taken");
        assert_eq!(t.take(1), Some(2));
        assert_eq!(t.drop_source(), 1);
        t.source_ended();
        assert!(t.finished() && !t.over(), "no source left, pieces missing");
        assert_eq!(t.remaining(), 3);
    }
}
