//! The peerdex directory server: who is registered, who is connected where,
//! and what each user published. Speaks the classic protocol of
//! `docs/PROTOCOL.md` through the `peerdex-protocol` crate.
//!
//! Layout (one file per concern), in the order a request meets them:
//! - [`cli`]: command-line arguments (serve, `check`, `salvage`).
//! - [`server`]: the accept loop, connection limit and graceful shutdown;
//!   [`Server`] / [`run`] start a server in-process. [`shutdown`]: the
//!   signals that stop it.
//! - [`connection`]: one connection: read a request with a deadline,
//!   dispatch, wait until what it answers is durable, write the whole
//!   reply, close cleanly.
//! - [`session`]: a framed session: login ([`auth`]: argon2id on a
//!   bounded blocking pool, the failed-login limiter), many requests in
//!   flight through the same path as classic ones, heartbeats, events, and
//!   the registry of live sessions.
//! - [`presence`]: whether a connected user's holder is still there: the
//!   CONNECT takeover pre-check and the classic listener prober.
//! - [`actor`]: who asks for a mutation (classic connection, session,
//!   the server's presence), which decides what a protected account allows.
//! - [`rules`]: the rules of each operation: where a command is applied to
//!   state, reply codes checked in PROTOCOL.md's order.
//! - [`effect`]: [`effect::Effect`], one change to the directory: what the
//!   rules emit and what the state, the indexes and the durable path apply.
//! - [`state`]: the directory in memory, which every request reads
//!   ([`state::tables`], on [`state::entries`]; [`state::batch`] is the
//!   writer's overlay of one batch).
//! - [`index`], [`query`]: SEARCH / FIND_SOURCES, from in-memory indexes.
//! - [`durable`]: everything between a mutation and the disk:
//!   - [`durable::writer`]: the group-commit writer and syncer threads, and
//!     [`durable::writer::Durability`], which readers wait on;
//!   - [`durable::engine`]: one batch staged, start-up recovery, close;
//!   - [`durable::journal`]: the write-ahead journal segments;
//!   - [`durable::checkpoint`], [`durable::net_effects`],
//!     [`durable::store`] (its migrations in `store/migrate.rs`): full
//!     segments applied to redb in the background;
//!   - [`durable::recovery`]: `check` and `salvage`;
//!   - [`durable::quiet_panic`]: redb's panics on a damaged file as errors.
//! - [`log_record`]: what the RPC logger is told about one operation;
//!   [`log_sink`] ships records to it (`peerdex_logger::rpc`), off the
//!   critical path.
//!
//! Only what the binary, `server/tests` and `server/benches` use is public;
//! the rest is `pub(crate)`, so that the compiler reports dead code.
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

// Public: what the binary (`main.rs`), `server/tests` and `server/benches`
// use. Everything else is crate-private, so that the compiler reports code
// nobody calls.
pub(crate) mod actor;
pub(crate) mod auth;
pub mod cli;
pub(crate) mod connection;
pub mod durable;
pub(crate) mod effect;
pub(crate) mod index;
pub(crate) mod log_record;
pub(crate) mod log_sink;
pub(crate) mod presence;
pub(crate) mod query;
pub(crate) mod rules;
pub(crate) mod server;
pub(crate) mod session;
pub mod shutdown;
pub mod state;

pub use server::{run, Config, Server, ServerError};

#[cfg(test)]
mod extension_tests;
