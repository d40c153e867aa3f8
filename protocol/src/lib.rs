//! The peerdex wire protocol: the one crate that turns bytes into typed
//! messages and back. Server, client and logger all use it; nobody else
//! parses bytes. See `docs/PROTOCOL.md` for the contract.
//!
//! Layout:
//! - [`field`]: NUL-terminated fields and their tokio-util codec.
//! - [`op`]: the eight operations and their reply-code tables.
//! - [`request`]: typed directory requests and their sans-IO parser.
//! - [`reply`]: reply types and the helpers that stream them.
//! - [`frame`]: session frames (length, kind, id, body) and the preface
//!   that tells a session from a classic request on the same port.
//! - [`wire`]: async glue that reads requests and replies from a socket.
//! - [`listing`]: LIST_USERS / LIST_CONTENT entries streamed without
//!   allocating (for clients that read long listings often).
//! - [`peer`]: the peer-to-peer `GET_FILE` exchange (and the dispatch of
//!   extension requests).
//! - [`peer_ext`]: peerdex extension ops `GET_HASHES` / `GET_RANGE`.
//! - [`datetime`]: the `DATETIME` field.
//! - [`listen`]: listening sockets with a backlog for bursts of clients.
//! - [`names`]: what a valid user, file name and description are.
//! - [`secret`]: passwords, never shown when formatted.
//!
//! The RPC logger's tarpc service is not wire code: it lives in the
//! `peerdex-logger` crate (`peerdex_logger::rpc`).

pub mod datetime;
pub mod field;
pub mod frame;
pub mod listen;
pub mod listing;
pub mod names;
pub mod op;
pub mod peer;
pub mod peer_ext;
pub mod reply;
pub mod request;
pub mod secret;
pub mod wire;

pub use field::{Checked, CodecError, Field, FieldCodec, Malformed, MAX_FIELD_LEN};
pub use op::{OpKind, Outcome};
pub use reply::{ContentEntry, Reply, UserEntry};
pub use request::{ConnectAddr, Operation, Request};
pub use secret::Secret;
