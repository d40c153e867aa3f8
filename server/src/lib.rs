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
//! - [`directory`]: the rules: where a command is applied to state, reply
//!   codes checked in PROTOCOL.md's order.
//! - [`commit`]: group commit: one writer thread takes queued mutations as
//!   one batch and only answers once it is durable.
//! - [`engine`]: start-up recovery, the commit of one batch (journal, then
//!   memory), close.
//! - [`state`]: the committed directory in memory, which every request
//!   reads ([`state::tables`], on [`state::entries`]).
//! - [`journal`]: the write-ahead journal segments that make a batch
//!   durable with one write and one fdatasync.
//! - [`checkpoint`]: the background thread that applies full segments to
//!   the database.
//! - [`store`]: where state is stored on disk: the redb database, loaded at
//!   start-up.
//! - [`recovery`]: `check` and `salvage`, the operator's way out of a
//!   damaged journal.
//! - [`quiet_panic`]: a panic (redb's, on a damaged file) caught as an
//!   error without the hook's noise.
//! - [`index`], [`query`]: SEARCH / FIND_SOURCES.
//! - [`addr_text`]: IP and port text for LIST_USERS without heap strings.
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

pub mod addr_text;
pub mod checkpoint;
pub mod cli;
pub mod commit;
pub mod connection;
pub mod directory;
pub mod engine;
pub mod index;
pub mod journal;
pub mod log_record;
pub mod log_sink;
pub mod net_effects;
pub mod query;
pub mod quiet_panic;
pub mod recovery;
pub mod server;
pub mod shutdown;
pub mod state;
pub mod store;

pub use server::{run, Config, Server, ServerError};
