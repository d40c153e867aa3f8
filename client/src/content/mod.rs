//! Content identity: what a file is, independent of its name.
//!
//! - [`hash`]: BLAKE3 over pieces; the piece tree merges into the standard
//!   `blake3::hash` of the file.
//! - [`pieces`]: [`pieces::Manifest`], a file's size, root and piece chaining
//!   values, and its verification.
//! - [`cache`]: manifests cached by (path, size, mtime) in the share dir's
//!   hidden state dir, so publishing again is instant.

pub(crate) mod cache;
pub(crate) mod hash;
pub(crate) mod pieces;

pub use peerdex_protocol::peer_ext::Digest;

/// What a file is: its size and BLAKE3 root (the standard `blake3::hash`
/// of its bytes). The directory keeps it for files published with
/// `PUBLISH_CONTENT`; a download accepts only bytes that match it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub size: u64,
    pub root: Digest,
}
