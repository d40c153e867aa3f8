//! The peerdex RPC logger: a tarpc service (JSON over TCP) that prints one
//! line per operation record the directory server sends, and tells clients
//! the time.
//!
//! A line is PROTOCOL.md's `<user> <OP> [<file>] <datetime>`, then ` -> `
//! and what the client was answered, in the shell's words:
//!
//! ```text
//! alice PUBLISH song.mp3 21/11/2026 09:05:07 -> OK
//! bob CONNECT 21/11/2026 09:05:07 -> USER DOES NOT EXIST
//! ```
//!
//! Fields are escaped (`\\`, `\n`, `\r`, `\t`, `\x1b`, ...; a space in a
//! user, op or file name is `\x20`), so no record can print a second line
//! or a terminal escape. [`line`] has the format, [`escape`] the escaping.
//!
//! Layout:
//! - [`rpc`]: the service definition ([`rpc::Logger`], [`rpc::OpRecord`])
//!   and [`rpc::connect`], which the directory server and clients use.
//! - [`service`]: the [`Logger`](rpc::Logger) implementation
//!   and the output it prints to.
//! - [`line`]: one record as one line.
//! - [`escape`]: untrusted text made safe for a one-line, terminal log.
//! - this file: the accept loop ([`serve`]) with its connection cap.
//!
//! Invariants:
//! - Whatever a sender puts in a record, it prints as exactly one line
//!   without control characters.
//! - Records of one connection are printed in arrival order: the requests of
//!   one channel run one after the other, never concurrently.
//! - A batch is printed as a unit (no interleaving with another connection's
//!   batch) and the output is flushed after each batch.
//! - A client that vanishes ends only its own connection task.

pub(crate) mod escape;
pub(crate) mod line;
pub mod rpc;
pub(crate) mod service;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::StreamExt;
use rpc::Logger;
use tarpc::serde_transport::tcp;
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Json;
use tokio::net::ToSocketAddrs;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

pub use service::{Output, PrintingLogger};

/// Largest JSON frame, accepted by the logger and set by [`rpc::connect`].
pub const MAX_FRAME_LENGTH: usize = 16 * 1024 * 1024;

/// How many connections are served at once; further clients wait in the
/// listen backlog until one ends.
pub const MAX_CONNECTIONS: usize = 256;

/// A running logger.
pub struct RunningLogger {
    /// The address actually bound (the real port when asked for port 0).
    local_addr: SocketAddr,
    /// The accept loop; it runs until aborted.
    accept: JoinHandle<()>,
}

impl RunningLogger {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Waits for the accept loop (it only ends if it panics or is aborted).
    pub async fn join(mut self) -> Result<(), tokio::task::JoinError> {
        (&mut self.accept).await
    }
}

impl Drop for RunningLogger {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Binds `addr` and serves the logger on it, printing records to stdout.
pub async fn serve(addr: impl ToSocketAddrs) -> io::Result<RunningLogger> {
    serve_with_output(addr, Output::stdout()).await
}

/// Binds `addr` and serves the logger on it, printing records to `output`.
pub async fn serve_with_output(
    addr: impl ToSocketAddrs,
    output: Output,
) -> io::Result<RunningLogger> {
    let mut incoming = tcp::listen(addr, Json::default).await?;
    incoming.config_mut().max_frame_length(MAX_FRAME_LENGTH);
    let local_addr = incoming.local_addr();
    let service = PrintingLogger::new(output);
    let accept = tokio::spawn(async move {
        let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let permit = match limit.clone().acquire_owned().await {
                Ok(permit) => permit,
                Err(_) => return, // the semaphore is never closed
            };
            let transport = match incoming.next().await {
                Some(Ok(transport)) => transport,
                Some(Err(err)) => {
                    // Typically EMFILE or a connection reset before accept:
                    // back off a little and keep serving.
                    tracing::warn!("accept failed: {err}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
                None => return,
            };
            let service = service.clone();
            tokio::spawn(async move {
                let _permit = permit;
                // One request at a time, in arrival order: awaiting each
                // response future before taking the next request keeps the
                // printed lines in the order the client sent them.
                BaseChannel::with_defaults(transport)
                    .execute(service.serve())
                    .for_each(|respond| respond)
                    .await;
            });
        }
    });
    Ok(RunningLogger { local_addr, accept })
}
