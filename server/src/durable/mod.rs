//! The durable path: how a mutation becomes durable, how the state is
//! rebuilt at start-up, and how a damaged data directory is repaired.
//!
//! In the order a mutation travels:
//! - [`writer`]: the group-commit writer thread (stages queued mutations as
//!   one batch) and the syncer thread (one `fdatasync` for every batch
//!   written so far, then the answers); [`writer::Durability`] is what
//!   readers wait on.
//! - [`engine`]: one batch staged (the rules over an overlay, its effects
//!   written to the journal and applied to memory), start-up recovery,
//!   close.
//! - [`journal`]: the write-ahead journal segments and how a segment read
//!   back ends (clean, torn tail, damage).
//! - [`checkpoint`]: the background thread that applies each full segment
//!   to the database, then deletes it.
//! - [`net_effects`]: what that transaction writes: a segment's net change.
//! - [`store`]: the redb database, the checkpoint behind the journal,
//!   loaded whole at start-up (its schema migrations in `store/migrate.rs`).
//! - [`recovery`]: `check` and `salvage`, the operator's way out of a
//!   damaged journal.
//! - [`quiet_panic`]: a panic inside redb (a damaged page) caught as an
//!   error.

pub(crate) mod checkpoint;
pub(crate) mod engine;
pub(crate) mod journal;
pub(crate) mod net_effects;
pub(crate) mod quiet_panic;
pub mod recovery;
pub(crate) mod store;
pub(crate) mod writer;

// The errors the binary reports, and the database's file name (tests
// damage it on purpose).
pub use journal::JournalError;
pub use store::{StoreError, DB_FILE_NAME};
