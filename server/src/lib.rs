//! The peerdex directory server: who is registered, who is connected where,
//! and what each user published. Speaks the classic protocol of
//! `docs/PROTOCOL.md` through the `peerdex-protocol` crate.
//!
//! Layout (one file per concern):
//! - [`cli`]: command-line arguments.
//! - [`server`]: the accept loop, connection limit and graceful shutdown;
//!   [`Server`] / [`run`] start a server in-process.
//! - [`connection`]: one connection: read a request with a deadline,
//!   dispatch, write the whole reply, close cleanly.
//! - [`rules`]: the rules of each operation: where a command is applied to
//!   state, reply codes checked in PROTOCOL.md's order.
//! - [`effect`]: [`effect::Effect`], one change to the directory, shared by
//!   the rules, the state, the indexes and the durable path.
//! - [`state`]: the directory in memory, which every request reads
//!   ([`state::tables`], on [`state::entries`]).
//! - [`durable`]: everything between a mutation and the disk: the
//!   group-commit writer and syncer ([`durable::writer`]), the staging of
//!   one batch, recovery and close ([`durable::engine`]), the write-ahead
//!   journal ([`durable::journal`]), the checkpoint into redb
//!   ([`durable::checkpoint`], [`durable::store`]), and `check` / `salvage`
//!   ([`durable::recovery`]).
//! - [`index`], [`query`]: SEARCH / FIND_SOURCES.
//! - [`log_record`]: what the RPC logger is told about one operation.
//! - [`log_sink`]: records for the RPC logger, off the critical path.
//! - [`shutdown`]: the signals that stop the server.
//!
//! Starting a server in-process (tests do this):
//!
//! ```no_run
//! # async fn demo(config: peerdex_server::Config) -> Result<(), Box<dyn std::error::Error>> {
//! let server = peerdex_server::Server::bind(config).await?;
//! let addr = server.local_addr()?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let task = tokio::spawn(server.run(async { let _ = stopped.await; }));
//! // ... talk to `addr` ...
//! let _ = stop.send(());
//! task.await.expect("server task")?;
//! # Ok(()) }
//! ```

// Public: what the binary (`main.rs`), the integration tests and the
// benches use. Everything else is crate-private, so that the compiler
// reports code nobody calls.
pub mod cli;
pub(crate) mod connection;
pub mod durable;
pub(crate) mod effect;
pub(crate) mod index;
pub(crate) mod log_record;
pub(crate) mod log_sink;
pub(crate) mod query;
pub(crate) mod rules;
pub(crate) mod server;
pub mod shutdown;
pub mod state;

pub use server::{run, Config, Server, ServerError};

#[cfg(test)]
mod extension_tests;
