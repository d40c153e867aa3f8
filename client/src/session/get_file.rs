//! `GET_FILE <user> <remote> <local>`: where to download from, then the
//! download itself ([`crate::peer::fetch`]).
//!
//! The sources come from the directory extension `FIND_SOURCES`: every peer
//! with identical content, and the size and root the content must have.
//! Every step has a classic twin it falls back to: the directory may be
//! classic ([`crate::directory_ext_client::ExtDirectory`] remembers), and
//! FIND_SOURCES may know nothing about the file (published with a classic
//! PUBLISH, by a classic client); then the named peer alone is asked, at
//! the address LIST_USERS gives.

use std::path::Path;

use peerdex_protocol::reply::SourcesReply;
use peerdex_protocol::{OpKind, Operation, Reply};

use super::{request, Printed, Session};
use crate::content::Identity;
use crate::peer::fetch::{fetch, FetchError, FetchOptions, Fetched};
use crate::peer::sources::Source;
use crate::peer::PeerAddr;
use crate::shell::output::{self, GetFileResult};

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
    /// `GET_FILE <user> <remote_file> <local_file>`: downloads from every
    /// source FIND_SOURCES gives, the named user first; retries once at a
    /// fresh address when the cached one reaches nobody.
    pub(super) async fn get_file(
        &mut self,
        user: &str,
        remote_file: &str,
        local_file: &Path,
    ) -> Printed {
        let fail = |reason: String| {
            Printed::fail(output::get_file_line(GetFileResult::Fail)).with_reason(reason)
        };
        // Every peer with identical content, and the root it must have,
        // when the directory has the extension and knows the file's hash.
        let plan = self.plan_sources(user, remote_file).await;
        // The named user's address: fresh from FIND_SOURCES, else cached
        // from LIST_USERS, else asked for. It stays a source even when
        // FIND_SOURCES omitted it.
        let (addr, cached) = match (plan.named.clone(), self.peers.get(user)) {
            (Some(addr), _) => (Some(addr), false),
            (None, Some(addr)) => (Some(addr.clone()), true),
            (None, None) => match self.lookup(user).await {
                Ok(addr) => (Some(addr), false),
                Err(reason) if plan.others.is_empty() => return fail(reason),
                Err(reason) => {
                    tracing::debug!("{reason}; downloading from the other sources");
                    (None, false)
                }
            },
        };
        let options = FetchOptions {
            progress: self.config.progress,
            expected: plan.expected,
            // Only a peer whose content the directory has an identity for
            // was published by a peerdex client; any other gets only the
            // classic request.
            try_extension: plan.expected.is_some(),
            ..FetchOptions::default()
        };
        let sources =
            |addr: Option<PeerAddr>| sources_with(addr.map(|a| (a, remote_file)), &plan.others);
        let first = sources(addr.clone());
        tracing::debug!(
            "GET_FILE {user} {remote_file}: {} source(s): {}",
            first.len(),
            first
                .iter()
                .map(|s| format!("{} {}", s.addr, s.file))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut result = fetch(&first, local_file, &options).await;
        if cached && result.as_ref().is_err_and(FetchError::is_unreachable) {
            // The cached address may be stale: ask the directory once.
            match self.lookup(user).await {
                Ok(fresh) if Some(&fresh) != addr.as_ref() => {
                    result = fetch(&sources(Some(fresh)), local_file, &options).await;
                }
                Ok(_) => {}
                Err(reason) => tracing::debug!("refreshing {user}'s address: {reason}"),
            }
        }
        match result {
            Ok(fetched) => {
                let mut printed = Printed::ok(output::get_file_line(GetFileResult::Ok));
                match fetched {
                    Fetched::Verified {
                        size,
                        resumed,
                        report,
                    } => {
                        tracing::debug!(
                            "downloaded {remote_file} from {user}: {size} bytes verified, \
                             {resumed} pieces resumed, {} bytes fetched",
                            report.bytes_fetched
                        );
                        for note in report.notes {
                            printed = printed.with_reason(note);
                        }
                    }
                    Fetched::Classic { size } => {
                        tracing::debug!(
                            "downloaded {remote_file} from {user}: {size} bytes (classic)"
                        )
                    }
                }
                printed
            }
            Err(FetchError::Classic(
                err @ crate::peer::download::DownloadError::NotFound { .. },
            )) => {
                Printed::fail(output::get_file_line(GetFileResult::FileNotExist)).with_reason(err)
            }
            Err(err @ FetchError::NotFound(_)) => {
                Printed::fail(output::get_file_line(GetFileResult::FileNotExist)).with_reason(err)
            }
            Err(err) => {
                let mut printed = Printed::fail(output::get_file_line(GetFileResult::Fail));
                for note in err.notes() {
                    printed = printed.with_reason(note);
                }
                printed.with_reason(err)
            }
        }
    }

    /// Asks the directory which peers have the content `user` published as
    /// `file`. Any failure gives an empty plan: GET_FILE then does what it
    /// does with a classic directory (the named peer only).
    pub(super) async fn plan_sources(&self, user: &str, file: &str) -> Plan {
        let me = self.current_user().to_string();
        let operation = Operation::FindSources {
            hash: Ok(None),
            remote_user: Ok(user.to_string()),
            file: Ok(file.to_string()),
        };
        let datetime = self.config.time.now().await;
        match self
            .route
            .ext_call(true, &request(&me, operation), &datetime)
            .await
        {
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

    /// Asks the directory where `user` listens (LIST_USERS as the current user).
    async fn lookup(&mut self, user: &str) -> Result<PeerAddr, String> {
        let me = self.current_user().to_string();
        match self.call(&me, Operation::ListUsers).await {
            Ok(Reply::Users(users)) => {
                self.remember_users(&users);
                self.peers
                    .get(user)
                    .cloned()
                    .ok_or_else(|| format!("{user} is not connected (not in LIST_USERS)"))
            }
            Ok(reply) => Err(format!(
                "cannot find {user}: the directory answered {}",
                output::result_line(OpKind::ListUsers, reply.outcome())
                    .trim_start_matches(output::PROMPT)
            )),
            Err(err) => Err(format!("cannot find {user}: {err}")),
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
    use super::super::testing::{run, FakeDirectory};
    use super::super::Flow;
    use super::*;
    use crate::shell::command::Command;
    use peerdex_protocol::reply::SourceEntry;
    use peerdex_protocol::reply::{put_code, put_content_entry, put_count, put_user_entry};
    use std::fs;
    use std::net::IpAddr;
    use std::sync::{Arc, Mutex};

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

    #[tokio::test]
    async fn connect_publish_and_get_file_between_two_sessions() {
        let connected_at: Arc<Mutex<Option<(IpAddr, u16)>>> = Arc::default();
        let at = Arc::clone(&connected_at);
        let directory = FakeDirectory::start(move |request, _source| {
            let mut out = bytes::BytesMut::new();
            match &request.operation {
                Operation::Connect(addr) => {
                    let ip = addr.ip.unwrap().unwrap();
                    *at.lock().unwrap() = Some((ip, addr.port.unwrap()));
                    put_code(&mut out, 0);
                }
                Operation::ListContent { .. } => {
                    put_code(&mut out, 0);
                    put_count(&mut out, 1);
                    put_content_entry(&mut out, "old.bin", "from before").unwrap();
                }
                Operation::ListUsers => {
                    let (ip, port) = at.lock().unwrap().unwrap();
                    put_code(&mut out, 0);
                    put_count(&mut out, 1);
                    put_user_entry(&mut out, "alice", ip, port).unwrap();
                }
                // The extension probe: nothing known about that content.
                Operation::FindSources { .. } => put_code(&mut out, 3),
                _ => put_code(&mut out, 0),
            }
            out
        })
        .await;

        let shared = tempfile::tempdir().unwrap();
        let old: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(shared.path().join("old.bin"), &old).unwrap();
        fs::write(shared.path().join("new.txt"), b"new\0content").unwrap();
        let mut alice = directory.session(shared.path());
        assert_eq!(
            run(&mut alice, "CONNECT alice").await.out,
            ["c> CONNECT OK"]
        );
        let listen = alice.listener_addr().unwrap();
        assert_eq!(
            *connected_at.lock().unwrap(),
            Some((listen.ip(), listen.port()))
        );
        // Served only because alice published it through peerdex (the
        // directory's listing alone would not do).
        let earlier = run(&mut alice, "PUBLISH old.bin from before").await;
        assert_eq!(earlier.out, ["c> PUBLISH OK"]);
        let published = run(&mut alice, "PUBLISH new.txt a new file").await;
        assert_eq!(published.out, ["c> PUBLISH OK"]);
        assert!(published.err.is_empty());
        let missing = run(&mut alice, "PUBLISH ghost.txt").await;
        assert_eq!(missing.out, ["c> PUBLISH OK"]);
        assert_eq!(missing.err.len(), 1, "warns about the missing file");

        let downloads = tempfile::tempdir().unwrap();
        let mut bob = directory.session(downloads.path());
        let target = downloads.path().join("old.copy");
        let line = format!("GET_FILE alice old.bin {}", target.display());
        assert_eq!(run(&mut bob, &line).await.out, ["c> GET_FILE OK"]);
        assert!(fs::read(&target).unwrap() == old);
        let target = downloads.path().join("new.copy");
        let line = format!("GET_FILE alice new.txt {}", target.display());
        assert_eq!(run(&mut bob, &line).await.out, ["c> GET_FILE OK"]);
        assert_eq!(fs::read(&target).unwrap(), b"new\0content");
        let line = format!("GET_FILE alice ghost.txt {}", target.display());
        assert_eq!(
            run(&mut bob, &line).await.out,
            ["c> GET_FILE FAIL, FILE NOT EXIST"]
        );
        assert_eq!(fs::read(&target).unwrap(), b"new\0content", "not clobbered");
        let line = format!("GET_FILE carol x {}", target.display());
        assert_eq!(run(&mut bob, &line).await.out, ["c> GET_FILE FAIL"]);

        let before = directory.requests().len();
        let other = run(&mut alice, "CONNECT bob").await;
        assert_eq!(other.out, ["c> CONNECT FAIL"]);
        assert!(other.err[0].contains("already connected as alice"));
        assert_eq!(directory.requests().len(), before, "nothing sent");

        let (printed, flow) = alice.execute(Command::Quit).await;
        assert_eq!(flow, Flow::Quit);
        assert!(printed.out.is_empty() && printed.err.is_empty());
        let last = directory.requests().pop().unwrap();
        assert_eq!(last.operation, Operation::Disconnect);
        assert_eq!(last.user, Ok("alice".into()));
        assert!(tokio::net::TcpStream::connect(listen).await.is_err());
    }
}
