//! The client side of the directory extensions (`PUBLISH_CONTENT`, `SEARCH`,
//! `FIND_SOURCES`, docs/PROTOCOL-EXTENSIONS.md).
//!
//! Our client must keep working against classic directories, and finding
//! out must cost them little: a classic directory may close the connection
//! on an op it does not know, answer it with a code the op does not define
//! (`-1`), or neither answer nor close. So every extension call goes
//! through [`ExtDirectory`], which knows per server whether it has the
//! extensions ([`Support`], remembered across sessions by
//! [`ServerProfile`]):
//! - unknown: the first extension op waits at most [`PROBE_BUDGET`] for a
//!   reply byte; a mutation (`PUBLISH_CONTENT`) is never the one that
//!   probes, a read-only `FIND_SOURCES` goes first, so that a slow answer
//!   can never leave a half-known change behind;
//! - classic: no extension op is sent; callers use the classic ops;
//! - peerdex: extension ops with the ordinary timeouts; one that gets the
//!   answer of a directory that does not know it (or none) checks again
//!   with the short probe, so a server replaced by a classic one is noticed.

use std::time::Duration;

use peerdex_protocol::{Checked, Operation, Reply, Request};
use thiserror::Error;

use crate::directory_client::{DirectoryClient, DirectoryError};
use crate::server_profiles::{now_secs, Extensions, ServerProfile};

/// How long a directory of unknown kind has to start answering an
/// extension op before it is taken for a classic one. Ours answers a
/// read-only op within a journal sync; a classic server that never
/// answers costs this much, once.
pub const PROBE_BUDGET: Duration = Duration::from_millis(500);

/// Whether the directory speaks the extensions, as far as this client knows.
pub type Support = Extensions;

/// Why an extension call gave no reply.
#[derive(Debug, Error)]
pub enum ExtError {
    /// The directory is classic (now or earlier): use the classic op.
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
    /// What is known about this server, shared and persisted.
    profile: ServerProfile,
    /// How long a probe waits for the first reply byte.
    probe_budget: Duration,
}

impl ExtDirectory {
    /// An extension client with nothing remembered about the server.
    #[cfg(test)]
    pub fn new(client: DirectoryClient) -> Self {
        let profile = ServerProfile::in_memory(&client.key());
        Self::with_profile(client, profile)
    }

    /// An extension client starting from what `profile` remembers.
    pub fn with_profile(client: DirectoryClient, profile: ServerProfile) -> Self {
        Self {
            client,
            profile,
            probe_budget: PROBE_BUDGET,
        }
    }

    /// What is known about the server's support (an old classic finding
    /// counts as unknown: it is checked again).
    pub fn support(&self) -> Support {
        self.profile.get().extensions_now(now_secs())
    }

    /// The profile this client records its findings in.
    pub fn profile(&self) -> &ServerProfile {
        &self.profile
    }

    /// Sends an extension request, unless the server is known to be classic.
    pub async fn call(&self, request: &Request, datetime: &str) -> Result<Reply, ExtError> {
        let op = request.operation.kind().name();
        let unsupported = || ExtError::Unsupported { op };
        if self.support() == Support::Unknown {
            if is_mutation(&request.operation) {
                self.probe(&request.user, probe_hash(&request.operation), datetime)
                    .await?;
            } else {
                // A read-only op is its own probe.
                return match self
                    .client
                    .call_probing(request, datetime, self.probe_budget)
                    .await
                {
                    Ok(reply) => {
                        self.profile.set_extensions(Support::Peerdex);
                        Ok(reply)
                    }
                    Err(err) if is_classic_answer(&err) => {
                        tracing::debug!("{err}: classic directory");
                        self.profile.set_extensions(Support::Classic);
                        Err(unsupported())
                    }
                    Err(err) => Err(err.into()),
                };
            }
        }
        if self.support() == Support::Classic {
            return Err(unsupported());
        }
        match self.client.call(request, datetime).await {
            Ok(reply) => Ok(reply),
            Err(err)
                if err.is_unknown_op_answer() || matches!(err, DirectoryError::Timeout { .. }) =>
            {
                // A peerdex server that stopped answering extensions, or a
                // network problem: the short probe tells which.
                tracing::debug!("{op}: {err}; checking whether the directory is still peerdex");
                let hash = probe_hash(&request.operation);
                match self.probe(&request.user, hash, datetime).await {
                    Ok(Support::Classic) => Err(unsupported()),
                    _ => Err(err.into()),
                }
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Finds out, if not known yet, whether the server has the extensions
    /// (a short read-only probe acting for `user`). Failures to reach it
    /// leave it unknown.
    pub async fn ensure_known(&self, user: &str, datetime: &str) -> Support {
        if self.support() != Support::Unknown {
            return self.support();
        }
        match self.probe(&Ok(user.to_string()), [0; 32], datetime).await {
            Ok(found) => found,
            Err(err) => {
                tracing::debug!("cannot tell whether the directory is peerdex: {err}");
                Support::Unknown
            }
        }
    }

    /// Finds out with a read-only op (`FIND_SOURCES` of `hash`, acting for
    /// `user`) whether the server has the extensions, records it and
    /// returns it. An unreachable server decides nothing.
    async fn probe(
        &self,
        user: &Checked<String>,
        hash: [u8; 32],
        datetime: &str,
    ) -> Result<Support, DirectoryError> {
        let probe = Request {
            datetime: None,
            user: user.clone(),
            operation: Operation::FindSources {
                hash: Ok(Some(hash)),
                remote_user: Ok(String::new()),
                file: Ok(String::new()),
            },
        };
        let found = match self
            .client
            .call_probing(&probe, datetime, self.probe_budget)
            .await
        {
            Ok(_) => Support::Peerdex,
            Err(err) if is_classic_answer(&err) => {
                tracing::debug!("probe: {err}: classic directory");
                Support::Classic
            }
            Err(err) => return Err(err),
        };
        self.profile.set_extensions(found);
        Ok(found)
    }
}

/// Extension ops that change the directory.
fn is_mutation(operation: &Operation) -> bool {
    matches!(operation, Operation::PublishContent { .. })
}

/// What a classic directory does with an op it does not know: close, a
/// code the op does not define, or silence past the probe's budget.
fn is_classic_answer(err: &DirectoryError) -> bool {
    err.is_unknown_op_answer() || matches!(err, DirectoryError::Silent { .. })
}

/// The hash a probe asks about: the content being published when there is
/// one (a meaningful question), else zeros.
fn probe_hash(operation: &Operation) -> [u8; 32] {
    match operation {
        Operation::PublishContent { hash: Ok(hash), .. } => *hash,
        _ => [0; 32],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerdex_protocol::{OpKind, Outcome};
    use std::sync::{Arc, Mutex};
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

    fn publish_content() -> Request {
        Request {
            datetime: None,
            user: Ok("al".into()),
            operation: Operation::PublishContent {
                file: Ok("f".into()),
                description: Ok("d".into()),
                size: Ok(1),
                hash: Ok([7; 32]),
            },
        }
    }

    /// A directory that answers every connection with `reply` (`None`:
    /// never answers, never closes) and records each request's op.
    async fn directory(reply: Option<&'static [u8]>) -> (ExtDirectory, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let ops = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&ops);
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 512];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let op = buf[..n].split(|&b| b == 0).next().unwrap_or_default();
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(op).into_owned());
                match reply {
                    Some(reply) => {
                        let _ = sock.write_all(reply).await;
                    }
                    None => {
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_secs(30)).await;
                            drop(sock);
                        });
                    }
                }
            }
        });
        let client = DirectoryClient::new("127.0.0.1", port);
        (ExtDirectory::new(client), ops)
    }

    fn ops(seen: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
        seen.lock().unwrap().clone()
    }

    #[tokio::test]
    async fn a_close_without_reply_means_classic_and_is_remembered() {
        let (ext, seen) = directory(Some(b"")).await;
        let err = ext.call(&search(), "x").await.unwrap_err();
        assert!(
            matches!(err, ExtError::Unsupported { op: "SEARCH" }),
            "{err}"
        );
        assert_eq!(ext.support(), Support::Classic);
        let err = ext.call(&search(), "x").await.unwrap_err();
        assert_eq!(err.to_string(), "directory does not support SEARCH");
        assert_eq!(ops(&seen), ["SEARCH"], "not asked again");
    }

    #[tokio::test]
    async fn a_silent_directory_costs_one_short_wait() {
        let (ext, seen) = directory(None).await;
        let started = std::time::Instant::now();
        let err = ext.call(&search(), "x").await.unwrap_err();
        assert!(matches!(err, ExtError::Unsupported { .. }), "{err}");
        assert!(
            started.elapsed() < REPLY_BOUND,
            "waited {:?}",
            started.elapsed()
        );
        assert_eq!(ext.support(), Support::Classic);
        assert!(ext.call(&publish_content(), "x").await.is_err());
        assert_eq!(ops(&seen), ["SEARCH"]);
    }

    /// Far below the 10 s reply timeout, far above the probe budget.
    const REPLY_BOUND: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn an_undefined_code_means_classic() {
        let (ext, seen) = directory(Some(b"-1\0")).await;
        let err = ext.call(&publish_content(), "x").await.unwrap_err();
        assert!(
            matches!(
                err,
                ExtError::Unsupported {
                    op: "PUBLISH_CONTENT"
                }
            ),
            "{err}"
        );
        // The mutation itself was never sent: a read-only probe went first.
        assert_eq!(ops(&seen), ["FIND_SOURCES"]);
        assert_eq!(ext.support(), Support::Classic);
    }

    #[tokio::test]
    async fn a_mutation_on_an_unknown_directory_is_sent_after_a_probe() {
        // 3: FIND_SOURCES "nothing known", PUBLISH_CONTENT "already published".
        let (ext, seen) = directory(Some(b"3\0")).await;
        let reply = ext.call(&publish_content(), "x").await.unwrap();
        assert_eq!(reply, Reply::Status(Outcome::ContentAlreadyPublished));
        assert_eq!(ops(&seen), ["FIND_SOURCES", "PUBLISH_CONTENT"]);
        assert_eq!(ext.support(), Support::Peerdex);
        ext.call(&publish_content(), "x").await.unwrap();
        assert_eq!(ops(&seen).len(), 3, "known peerdex: no more probes");
    }

    #[tokio::test]
    async fn a_remembered_peerdex_server_that_stops_answering_is_checked_again() {
        let (ext, seen) = directory(Some(b"-1\0")).await;
        ext.profile().set_extensions(Support::Peerdex);
        let err = ext.call(&search(), "x").await.unwrap_err();
        assert!(matches!(err, ExtError::Unsupported { .. }), "{err}");
        assert_eq!(ops(&seen), ["SEARCH", "FIND_SOURCES"]);
        assert_eq!(ext.support(), Support::Classic);
    }

    #[tokio::test]
    async fn any_code_means_support() {
        let (ext, _) = directory(Some(b"2\0")).await;
        let reply = ext.call(&search(), "x").await.unwrap();
        assert_eq!(reply, Reply::Status(Outcome::UserNotConnected));
        assert_eq!(ext.support(), Support::Peerdex);
        assert_eq!(OpKind::Search.code(Outcome::UserNotConnected), 2);
    }

    #[tokio::test]
    async fn a_broken_reply_is_not_classic() {
        let (ext, _) = directory(Some(b"0\x005")).await;
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
        let err = ext.call(&publish_content(), "x").await.unwrap_err();
        assert!(matches!(err, ExtError::Directory(_)), "{err}");
        assert_eq!(ext.support(), Support::Unknown);
    }
}
