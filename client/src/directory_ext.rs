//! The client side of the directory extensions (`PUBLISH_CONTENT`, `SEARCH`,
//! `FIND_SOURCES`, docs/PROTOCOL-EXTENSIONS.md).
//!
//! Our client must keep working against classic directories, which close
//! the connection without a reply on an op they do not know. So every
//! extension call goes through [`ExtDirectory`], which remembers per shell
//! session whether this directory answered one ([`Support`]): once a
//! directory refused, no extension op is sent to it again and callers use
//! the classic ops straight away (one wasted connection per session at most).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use peerdex_protocol::{Reply, Request};
use thiserror::Error;

use crate::directory::{DirectoryClient, DirectoryError};

/// Whether the directory speaks the extensions, as far as this session knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// Nothing sent yet: try the extension.
    Unknown,
    /// It answered an extension op with a code.
    Yes,
    /// It closed or reset an extension op's connection before replying.
    No,
}

impl Support {
    fn encode(self) -> u8 {
        match self {
            Support::Unknown => 0,
            Support::Yes => 1,
            Support::No => 2,
        }
    }

    fn decode(raw: u8) -> Support {
        match raw {
            1 => Support::Yes,
            2 => Support::No,
            _ => Support::Unknown,
        }
    }
}

/// Shared tri-state: clones see each other's findings (the session and any
/// task it hands the directory to).
#[derive(Debug, Clone, Default)]
pub struct SupportCell(Arc<AtomicU8>);

impl SupportCell {
    pub fn get(&self) -> Support {
        Support::decode(self.0.load(Ordering::Acquire))
    }

    /// Records a finding. A directory that answered once keeps "yes": a later
    /// reset is a network problem, not a downgrade of the server.
    pub fn record(&self, found: Support) {
        let new = found.encode();
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| {
                (Support::decode(old) != Support::Yes).then_some(new)
            });
    }
}

/// Why an extension call gave no reply.
#[derive(Debug, Error)]
pub enum ExtError {
    /// The directory is classic (now or earlier in this session): use the
    /// classic op instead.
    #[error("directory does not support {op}")]
    Unsupported { op: &'static str },
    /// Any other failure (unreachable, timeout, bad reply).
    #[error(transparent)]
    Directory(#[from] DirectoryError),
}

/// A directory client that knows whether its server has the extensions.
#[derive(Debug, Clone)]
pub struct ExtDirectory {
    client: DirectoryClient,
    support: SupportCell,
}

impl ExtDirectory {
    pub fn new(client: DirectoryClient) -> Self {
        Self {
            client,
            support: SupportCell::default(),
        }
    }

    /// What is known about the server's support.
    pub fn support(&self) -> Support {
        self.support.get()
    }

    /// Sends an extension request, unless the server is known to be classic.
    /// A code (any code) proves support; a close before any reply byte proves
    /// the opposite and is remembered.
    pub async fn call(&self, request: &Request, datetime: &str) -> Result<Reply, ExtError> {
        let op = request.operation.kind().name();
        if self.support.get() == Support::No {
            return Err(ExtError::Unsupported { op });
        }
        match self.client.call(request, datetime).await {
            Ok(reply) => {
                self.support.record(Support::Yes);
                Ok(reply)
            }
            Err(DirectoryError::NoReply { addr, reason }) => {
                tracing::debug!("{addr} closed {op} without a reply ({reason}): classic directory");
                self.support.record(Support::No);
                if self.support.get() == Support::No {
                    Err(ExtError::Unsupported { op })
                } else {
                    Err(DirectoryError::NoReply { addr, reason }.into())
                }
            }
            Err(err) => Err(err.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerdex_protocol::{OpKind, Operation, Outcome};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn search() -> Request {
        Request {
            datetime: None,
            user: Ok("al".into()),
            operation: Operation::Search {
                pattern: Ok("f1".into()),
                limit: Ok(10),
            },
        }
    }

    /// A directory that answers every connection with `reply` after reading
    /// a little, and counts connections.
    async fn directory(reply: &'static [u8]) -> (ExtDirectory, Arc<AtomicU8>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let count = Arc::new(AtomicU8::new(0));
        let seen = Arc::clone(&count);
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                seen.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 256];
                let _ = sock.read(&mut buf).await;
                let _ = sock.write_all(reply).await;
            }
        });
        let client = DirectoryClient::new("127.0.0.1", port);
        (ExtDirectory::new(client), count)
    }

    #[test]
    fn tri_state_starts_unknown_and_yes_sticks() {
        let cell = SupportCell::default();
        assert_eq!(cell.get(), Support::Unknown);
        cell.record(Support::No);
        assert_eq!(cell.get(), Support::No);
        let cell = SupportCell::default();
        cell.record(Support::Yes);
        cell.record(Support::No);
        assert_eq!(cell.get(), Support::Yes, "a server that answered stays yes");
        let shared = cell.clone();
        assert_eq!(shared.get(), Support::Yes);
    }

    #[tokio::test]
    async fn a_close_without_reply_means_classic_and_is_remembered() {
        let (ext, connections) = directory(b"").await;
        let err = ext.call(&search(), "x").await.unwrap_err();
        assert!(
            matches!(err, ExtError::Unsupported { op: "SEARCH" }),
            "{err}"
        );
        assert_eq!(ext.support(), Support::No);
        let err = ext.call(&search(), "x").await.unwrap_err();
        assert_eq!(err.to_string(), "directory does not support SEARCH");
        assert_eq!(connections.load(Ordering::SeqCst), 1, "not asked again");
    }

    #[tokio::test]
    async fn any_code_means_support() {
        let (ext, _) = directory(b"2\0").await;
        let reply = ext.call(&search(), "x").await.unwrap();
        assert_eq!(reply, Reply::Status(Outcome::UserNotConnected));
        assert_eq!(ext.support(), Support::Yes);
        assert_eq!(OpKind::Search.code(Outcome::UserNotConnected), 2);
    }

    #[tokio::test]
    async fn a_broken_reply_is_not_classic() {
        let (ext, _) = directory(b"0\x005").await;
        let err = ext.call(&search(), "x").await.unwrap_err();
        assert!(matches!(err, ExtError::Directory(_)), "{err}");
        assert_eq!(ext.support(), Support::Unknown);
    }

    #[tokio::test]
    async fn an_unreachable_directory_decides_nothing() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let ext = ExtDirectory::new(DirectoryClient::new("127.0.0.1", port));
        let err = ext.call(&search(), "x").await.unwrap_err();
        assert!(matches!(err, ExtError::Directory(_)), "{err}");
        assert_eq!(ext.support(), Support::Unknown);
    }
}
