//! The session's use of the directory extensions: PUBLISH with the content's
//! identity, SEARCH, and the sources of a GET_FILE.
//!
//! Kept apart from `session.rs` because every path here has a classic twin
//! it must fall back to: the directory may be classic ([`ExtDirectory`]
//! remembers), and FIND_SOURCES may know nothing about the file (published
//! with a classic PUBLISH, by a classic client).

use peerdex_protocol::reply::SourcesReply;
use peerdex_protocol::{OpKind, Operation, Reply};

use super::{request, Printed, Session};
use crate::content::Identity;
use crate::directory_client::DirectoryError;
use crate::directory_ext_client::ExtError;
use crate::peer::sources::Source;
use crate::peer::PeerAddr;
use crate::shell::command::SEARCH_LIMIT;
use crate::shell::output;

/// Where a GET_FILE downloads from.
#[derive(Debug, Default)]
pub(super) struct Plan {
    /// Every peer with identical content (FIND_SOURCES), named user excluded.
    pub others: Vec<Source>,
    /// The size and root the content must have, when the directory knows
    /// them (then the publisher is a peerdex client).
    pub expected: Option<Identity>,
    /// The named user's address as FIND_SOURCES gave it (saves a LIST_USERS).
    pub named: Option<PeerAddr>,
}

impl Session {
    /// PUBLISH_CONTENT when the identity is known and the directory may have
    /// the extension; PUBLISH otherwise, or when the directory turns out to
    /// be classic. Both have the same codes, so the caller prints PUBLISH's
    /// lines either way.
    pub(super) async fn send_publish(
        &self,
        user: &str,
        file: &str,
        description: &str,
        identity: Option<Identity>,
    ) -> Result<Reply, DirectoryError> {
        if let Some(Identity { size, root }) = identity {
            let operation = Operation::PublishContent {
                file: Ok(file.to_string()),
                description: Ok(description.to_string()),
                size: Ok(size),
                hash: Ok(root),
            };
            let datetime = self.config.time.now().await;
            match self.ext.call(&request(user, operation), &datetime).await {
                Ok(reply) => return Ok(reply),
                Err(ExtError::Directory(err)) => return Err(err),
                Err(ExtError::Unsupported { .. }) => {}
            }
        }
        let operation = Operation::Publish {
            file: Ok(file.to_string()),
            description: Ok(description.to_string()),
        };
        self.call(user, operation).await
    }

    /// `SEARCH <pattern>` for the current user.
    pub(super) async fn search(&self, pattern: String) -> Printed {
        let user = self.current_user().to_string();
        let operation = Operation::Search {
            pattern: Ok(pattern),
            limit: Ok(SEARCH_LIMIT),
        };
        let datetime = self.config.time.now().await;
        match self.ext.call(&request(&user, operation), &datetime).await {
            Ok(Reply::Search(reply)) => Printed {
                out: output::search_lines(&reply),
                ..Printed::default()
            },
            Ok(reply) => Printed::outcome(
                output::result_line(OpKind::Search, reply.outcome()),
                reply.outcome(),
            ),
            Err(err) => Printed::fail(output::fail_line(OpKind::Search)).with_reason(err),
        }
    }

    /// Asks the directory which peers have the content `user` published as
    /// `file`. Any failure gives an empty plan: GET_FILE then does what it
    /// did before the extension (the named peer only).
    pub(super) async fn plan_sources(&self, user: &str, file: &str) -> Plan {
        let me = self.current_user().to_string();
        let operation = Operation::FindSources {
            hash: Ok(None),
            remote_user: Ok(user.to_string()),
            file: Ok(file.to_string()),
        };
        let datetime = self.config.time.now().await;
        match self.ext.call(&request(&me, operation), &datetime).await {
            Ok(Reply::Sources(reply)) => plan_from(user, reply),
            Ok(reply) => {
                // 3: not published there (or without a hash); 1/2: this shell
                // has no connected user. The named peer decides.
                tracing::debug!(
                    "FIND_SOURCES {user} {file}: {}",
                    output::result_line(OpKind::FindSources, reply.outcome())
                );
                Plan::default()
            }
            Err(err) => {
                tracing::debug!("FIND_SOURCES {user} {file}: {err}");
                Plan::default()
            }
        }
    }
}

/// Splits a FIND_SOURCES reply into the named user's address and the others.
fn plan_from(user: &str, reply: SourcesReply) -> Plan {
    let mut plan = Plan {
        expected: match (reply.size, reply.hash) {
            (Some(size), Some(root)) => Some(Identity { size, root }),
            _ => None,
        },
        ..Plan::default()
    };
    for entry in reply.sources {
        let Ok(port) = entry.port.trim().parse::<u16>() else {
            tracing::debug!("FIND_SOURCES: bad port {:?} of {}", entry.port, entry.user);
            continue;
        };
        let addr = PeerAddr {
            host: entry.ip,
            port,
        };
        if entry.user == user {
            plan.named = Some(addr);
        } else {
            plan.others.push(Source {
                addr,
                file: entry.file,
            });
        }
    }
    tracing::debug!(
        "FIND_SOURCES: {} other source(s): {}",
        plan.others.len(),
        plan.others
            .iter()
            .map(|s| format!("{} {}", s.addr, s.file))
            .collect::<Vec<_>>()
            .join(", ")
    );
    plan
}

/// The named peer first (it is the one the user asked for, and `fetch`
/// takes the piece list from the first source that has it), then the others
/// at other addresses.
pub(super) fn sources_with(named: Option<(PeerAddr, &str)>, others: &[Source]) -> Vec<Source> {
    let mut sources: Vec<Source> = named
        .map(|(addr, file)| Source {
            addr,
            file: file.to_string(),
        })
        .into_iter()
        .collect();
    for other in others {
        if !sources.iter().any(|s| s.addr == other.addr) {
            sources.push(other.clone());
        }
    }
    sources
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerdex_protocol::reply::SourceEntry;

    fn entry(user: &str, port: &str, file: &str) -> SourceEntry {
        SourceEntry {
            user: user.into(),
            ip: "127.0.0.1".into(),
            port: port.into(),
            file: file.into(),
        }
    }

    #[test]
    fn plan_keeps_per_source_names_and_sets_the_named_peer_apart() {
        let reply = SourcesReply {
            size: Some(5),
            hash: Some([1; 32]),
            sources: vec![
                entry("al", "4000", "a.bin"),
                entry("bo", "5000", "copy-of-a.bin"),
                entry("cy", "x", "bad-port"),
            ],
        };
        let plan = plan_from("al", reply);
        assert_eq!(
            plan.expected,
            Some(Identity {
                size: 5,
                root: [1; 32]
            })
        );
        assert_eq!(
            plan.named,
            Some(PeerAddr {
                host: "127.0.0.1".into(),
                port: 4000
            })
        );
        assert_eq!(plan.others.len(), 1);
        assert_eq!(plan.others[0].file, "copy-of-a.bin");
        let sources = sources_with(plan.named.clone().map(|a| (a, "a.bin")), &plan.others);
        let names: Vec<_> = sources.iter().map(|s| s.file.as_str()).collect();
        assert_eq!(names, ["a.bin", "copy-of-a.bin"]);
        // The named peer stays even when the directory omitted it.
        let alone = sources_with(
            Some((
                PeerAddr {
                    host: "10.0.0.9".into(),
                    port: 1,
                },
                "a.bin",
            )),
            &[],
        );
        assert_eq!(alone.len(), 1);
    }
}
