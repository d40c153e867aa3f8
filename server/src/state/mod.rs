//! Where the directory lives while the server runs: in memory, shared by
//! every connection.
//!
//! - [`entries`]: the chunked, snapshot-friendly sorted table of
//!   wire-encoded entries; `first_keys` is its directory of chunks.
//! - [`tables`]: users, connected users and files built on it; the
//!   authority for the rules and for every listing.
//! - [`batch`]: the writer's overlay of one group-commit batch.
//! - `changes`: the last batch that changed each user, until it is
//!   durable.
//!
//! Invariants:
//! - Only the group-commit writer changes [`State`], with the effects of a
//!   batch it has just written to the journal ([`State::apply`]), tables
//!   first, then indexes. The writer does not wait for that write's sync
//!   (the syncer thread runs it, [`crate::durable::writer`]), so the state
//!   may be ahead of the disk by the batches whose sync is still running.
//! - Nothing read from the state leaves the server before it is durable:
//!   a reader notes the batch its answer depends on ([`State::applied_seq`]
//!   for an answer about everyone, [`Tables::last_change`] for one about
//!   given users) and waits on [`crate::durable::writer::Durability`] until
//!   the journal is synced past it. After a failed sync
//!   ([`State::has_failed`]) nothing is answered from it at all.
//! - The on-disk store (redb) is not read while running: it catches up
//!   from the journal in the background ([`crate::durable::checkpoint`]).

pub(crate) mod batch;
mod changes;
pub mod entries;
mod first_keys;
pub(crate) mod tables;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard};

use crate::effect::Effect;
use crate::index::Indexes;

pub(crate) use batch::Batch;
pub(crate) use tables::{Presence, Tables};

/// The directory and its search indexes: every batch the writer staged,
/// durable or not yet (module doc).
#[derive(Default)]
pub(crate) struct State {
    /// Users, addresses and files.
    tables: RwLock<Tables>,
    /// SEARCH / FIND_SOURCES indexes, kept in step with `tables` by the
    /// same writer (see [`crate::index`]).
    indexes: RwLock<Indexes>,
    /// Sequence number of the last batch applied (see [`State::apply`]).
    applied: AtomicU64,
    /// Every batch up to this sequence number is durable (set by the
    /// syncer, [`crate::durable::writer`]); lets the tables forget old changes.
    durable: AtomicU64,
    /// Set when a journal sync failed: the state may hold changes that are
    /// not durable, so nothing may be answered from it any more.
    failed: AtomicBool,
}

impl State {
    /// State holding `tables` and `indexes`, loaded at start-up.
    pub fn new(tables: Tables, indexes: Indexes) -> State {
        State {
            tables: RwLock::new(tables),
            indexes: RwLock::new(indexes),
            applied: AtomicU64::new(0),
            durable: AtomicU64::new(0),
            failed: AtomicBool::new(false),
        }
    }

    /// The tables, for reading. Hold the guard briefly: take a [`Slice`]
    /// and drop it before writing to a socket.
    pub fn tables(&self) -> RwLockReadGuard<'_, Tables> {
        // Every change is applied whole or the writer logged a failure; a
        // panic mid-apply leaves a table that is still well-formed.
        self.tables.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The search indexes, for reading.
    pub fn indexes(&self) -> RwLockReadGuard<'_, Indexes> {
        self.indexes.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies the effects of batch `seq`, written to the journal but maybe
    /// not yet synced: tables first, then indexes (a reader of the index
    /// then always finds its entries in the tables or, for a just-removed
    /// entry, leaves it out). Whoever answers from the state must first
    /// wait until the journal is synced up to [`State::applied_seq`] read
    /// after looking ([`crate::durable::writer::Durability`]), or, for an answer
    /// about given users only, up to their [`Tables::last_change`].
    pub fn apply(&self, effects: &[Effect], seq: u64) {
        {
            let durable = self.durable.load(Ordering::Acquire);
            let mut tables = self.tables.write().unwrap_or_else(|p| p.into_inner());
            for effect in effects {
                if let Err(err) = tables.apply(effect) {
                    // Unreachable for effects built from checked requests;
                    // the journal still holds it for the next start.
                    tracing::error!(error = %err, ?effect, "cannot apply a journaled effect in memory");
                }
                tables.note_change(effect.user(), seq, durable);
            }
            self.applied.store(seq, Ordering::Release);
        }
        self.indexes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .apply(effects);
    }

    /// Sequence number of the last batch applied: everything a reader saw
    /// before calling this is covered by it.
    pub fn applied_seq(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// Records that every batch up to `seq` is durable.
    pub fn set_durable(&self, seq: u64) {
        self.durable.fetch_max(seq, Ordering::AcqRel);
    }

    /// Marks the state unusable after a failed journal sync.
    pub fn fail(&self) {
        self.failed.store(true, Ordering::Release);
    }

    /// True after a failed journal sync: every operation fails until a
    /// restart replays what is durable.
    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }
}
