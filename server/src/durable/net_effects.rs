//! The net change of a run of journal effects: what a checkpoint writes
//! to the store instead of every effect one by one.
//!
//! Why: with a million users the checkpointer was a fifth of the server's
//! CPU (docs/PERFORMANCE.md), every effect a B-tree update in redb on a
//! page that is rarely cached. Yet within one journal segment most effects
//! cancel: a file published and deleted again, a user disconnected and
//! connected again. Only the net change needs writing.
//!
//! Why it is exact: effects come from the rules ([`crate::rules`]),
//! which add only what is absent and remove only what is present. So the
//! first effect on a key says whether it existed when the run began, and a
//! key that was absent then and is absent at the end needs no write at all.
//! Addresses are the exception: a CONNECT that takes over a dead holder's
//! entry replaces it, so a first address set is taken as "may have
//! existed", and an address absent at the end is always cleared.
//! Every other key gets one write of its final state. A removed user's
//! files are removed as a whole first (the files it had when the run
//! began, whatever they were), then the files added after are written.
//!
//! Applying the net change to a store that already holds the whole run
//! (a crash between the checkpoint's commit and the segment's deletion
//! replays it) leaves the store as it is, as replaying the effects does.

use std::collections::HashSet;
use std::hash::RandomState;
use std::net::SocketAddr;

use crate::actor::SessionId;
use crate::effect::Effect;

/// A connected user's entry: its address and the session holding it
/// (`None`: a classic CONNECT).
type Connection = (SocketAddr, Option<SessionId>);

/// A key's state across the run.
#[derive(Debug, Clone)]
struct Net<T> {
    /// Present when the run began (inferred from the first effect on it).
    existed: bool,
    /// Present now, with this value.
    now: Option<T>,
}

impl<T> Net<T> {
    /// State of a key whose first effect adds it.
    fn added() -> Net<T> {
        Net {
            existed: false,
            now: None,
        }
    }

    /// State of a key whose first effect removes it.
    fn removed() -> Net<T> {
        Net {
            existed: true,
            now: None,
        }
    }

    /// Nothing to write: absent before and after.
    fn unchanged(&self) -> bool {
        !self.existed && self.now.is_none()
    }
}

/// Maps keyed by name, looked up by `&str` without allocating.
type HashMap<K, V> = hashbrown::HashMap<K, V, RandomState>;

/// A file's final value.
#[derive(Debug, Clone)]
struct FileValue {
    description: String,
    content: Option<(u64, [u8; 32])>,
}

/// An effect sequence the rules never produce (content for a file not
/// added in the run): the caller applies the run effect by effect instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotNettable;

/// The net change of the effects added so far.
#[derive(Debug, Default)]
pub struct NetEffects {
    users: HashMap<String, Net<()>>,
    connected: HashMap<String, Net<Connection>>,
    /// Credentials set during the run, final value (a removed user's is
    /// dropped: its removal, written first, takes the stored one).
    credentials: HashMap<String, String>,
    /// Last-seen times set during the run, final value (as credentials).
    last_seen: HashMap<String, u64>,
    /// By owner, then file name (an owner's removal drops its map).
    files: HashMap<String, HashMap<String, Net<FileValue>>>,
    /// Users removed during the run: every file they had when it began is
    /// gone; files added after are in `files`.
    cleared: HashSet<String>,
}

impl NetEffects {
    /// Adds the next effect of the run.
    pub fn add(&mut self, effect: &Effect) -> Result<(), NotNettable> {
        match effect {
            Effect::AddUser(user) => {
                entry(&mut self.users, user, Net::added).now = Some(());
            }
            Effect::RemoveUser(user) => {
                entry(&mut self.users, user, Net::removed).now = None;
                // Connected or not when the run began: a removal of an
                // absent address is harmless, so assume it was there.
                entry(&mut self.connected, user, Net::removed).now = None;
                self.files.remove(user);
                self.credentials.remove(user);
                self.last_seen.remove(user);
                self.cleared.insert(user.clone());
            }
            // A CONNECT that takes over a dead holder's entry replaces
            // it, so a first address does not prove the key was absent:
            // assume it was there (clearing an absent address is harmless).
            Effect::SetAddress(user, addr) => {
                entry(&mut self.connected, user, Net::removed).now = Some((*addr, None));
            }
            Effect::SetHeldAddress {
                user,
                addr,
                session,
            } => {
                entry(&mut self.connected, user, Net::removed).now = Some((*addr, Some(*session)));
            }
            Effect::SetCredential { user, phc } => {
                self.credentials.insert(user.clone(), phc.clone());
            }
            Effect::SetLastSeen { user, at } => {
                self.last_seen.insert(user.clone(), *at);
            }
            Effect::ClearAddress(user) => {
                entry(&mut self.connected, user, Net::removed).now = None;
            }
            Effect::AddFile {
                user,
                file,
                description,
            } => {
                let files = self.files.entry_ref(user.as_str()).or_default();
                entry(files, file, Net::added).now = Some(FileValue {
                    description: description.clone(),
                    content: None,
                });
            }
            Effect::RemoveFile { user, file } => {
                let files = self.files.entry_ref(user.as_str()).or_default();
                entry(files, file, Net::removed).now = None;
            }
            Effect::SetContent {
                user,
                file,
                size,
                hash,
            } => {
                let value = self
                    .files
                    .get_mut(user)
                    .and_then(|files| files.get_mut(file))
                    .and_then(|net| net.now.as_mut())
                    .ok_or(NotNettable)?;
                value.content = Some((*size, *hash));
            }
        }
        Ok(())
    }

    /// The net change as effects, in an order that applies it: removed
    /// users first (taking their old files), then users, addresses and
    /// files, each sorted by key so that the store's B-tree is walked in
    /// order.
    pub fn into_effects(self) -> Vec<Effect> {
        let mut out = Vec::new();
        let mut cleared: Vec<String> = self.cleared.into_iter().collect();
        cleared.sort_unstable();
        let already_removed: HashSet<&str> = cleared.iter().map(String::as_str).collect();
        out.extend(cleared.iter().cloned().map(Effect::RemoveUser));

        // Only RemoveUser makes a user absent, and its removal is written
        // above: what is left is users registered now that were absent
        // when the run began or were removed (and registered again) in it.
        let mut users: Vec<(String, Net<()>)> = self.users.into_iter().collect();
        users.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (user, net) in users {
            if net.now.is_some() && (!net.existed || already_removed.contains(user.as_str())) {
                out.push(Effect::AddUser(user));
            }
        }

        let mut credentials: Vec<(String, String)> = self.credentials.into_iter().collect();
        credentials.sort_unstable();
        out.extend(
            credentials
                .into_iter()
                .map(|(user, phc)| Effect::SetCredential { user, phc }),
        );

        let mut connected: Vec<(String, Net<Connection>)> = self.connected.into_iter().collect();
        connected.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (user, net) in connected {
            // A removed user's address went with it.
            let gone_with_user = net.now.is_none() && already_removed.contains(user.as_str());
            if net.unchanged() || gone_with_user {
                continue;
            }
            out.push(match net.now {
                Some((addr, None)) => Effect::SetAddress(user, addr),
                Some((addr, Some(session))) => Effect::SetHeldAddress {
                    user,
                    addr,
                    session,
                },
                None => Effect::ClearAddress(user),
            });
        }

        let mut last_seen: Vec<(String, u64)> = self.last_seen.into_iter().collect();
        last_seen.sort_unstable();
        out.extend(
            last_seen
                .into_iter()
                .map(|(user, at)| Effect::SetLastSeen { user, at }),
        );

        let mut files: Vec<(String, HashMap<String, Net<FileValue>>)> =
            self.files.into_iter().collect();
        files.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (user, by_name) in files {
            let mut by_name: Vec<(String, Net<FileValue>)> = by_name.into_iter().collect();
            by_name.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            for (file, net) in by_name {
                if net.unchanged() {
                    continue;
                }
                if net.existed {
                    // Its old description and content go, whatever they
                    // were (a re-published file may have no content).
                    out.push(Effect::RemoveFile {
                        user: user.clone(),
                        file: file.clone(),
                    });
                }
                let Some(value) = net.now else { continue };
                out.push(Effect::AddFile {
                    user: user.clone(),
                    file: file.clone(),
                    description: value.description,
                });
                if let Some((size, hash)) = value.content {
                    out.push(Effect::SetContent {
                        user: user.clone(),
                        file,
                        size,
                        hash,
                    });
                }
            }
        }
        out
    }
}

/// The state of `key` in `map`, created by `first` when the run has not
/// touched it yet.
fn entry<'m, T>(
    map: &'m mut HashMap<String, Net<T>>,
    key: &str,
    first: fn() -> Net<T>,
) -> &'m mut Net<T> {
    map.entry_ref(key).or_insert_with(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actor::{Actor, AuthMode, SessionActor, Takeover};
    use crate::durable::engine::Mutation;
    use crate::durable::store::Store;
    use crate::rules::{self, Context};
    use crate::state::{Batch, Tables};
    use peerdex_protocol::{ConnectAddr, Operation, Secret};
    use proptest::prelude::*;
    use std::sync::Arc;

    const USERS: [&str; 4] = ["al", "bo", "cy", "di"];
    const FILES: [&str; 3] = ["a.txt", "b.txt", "c.txt"];

    /// A random request: (user, operation) over a few names, so that
    /// sequences collide on keys often.
    fn operation() -> impl Strategy<Value = (usize, Operation)> {
        let op = prop_oneof![
            Just(Operation::Register),
            Just(Operation::Unregister),
            (1u16..4).prop_map(|port| Operation::Connect(ConnectAddr {
                ip: Ok(None),
                port: Ok(port),
            })),
            Just(Operation::Disconnect),
            (0..FILES.len(), 0u8..2).prop_map(|(f, d)| Operation::Publish {
                file: Ok(FILES[f].into()),
                description: Ok(format!("d{d}")),
            }),
            (0..FILES.len(), 0u64..3, any::<u8>()).prop_map(|(f, size, h)| {
                Operation::PublishContent {
                    file: Ok(FILES[f].into()),
                    description: Ok("c".into()),
                    size: Ok(size),
                    hash: Ok([h; 32]),
                }
            }),
            (0..FILES.len()).prop_map(|f| Operation::Delete {
                file: Ok(FILES[f].into()),
            }),
            Just(Operation::SetPassword {
                password: Ok(Secret::new("pw")),
            }),
        ];
        (0..USERS.len(), op)
    }

    /// Who sends a random request: classic, sessions with and without
    /// credentials (so that accounts become protected and sessions hold
    /// users), or presence ending a session's or an address's entry.
    fn actor() -> impl Strategy<Value = (Actor, Option<Takeover>)> {
        let session = |id, credential: Option<&str>, new: &str| {
            Actor::Session(SessionActor {
                id,
                credential: credential.map(Arc::from),
                new_credential: Some(Arc::from(new)),
            })
        };
        prop_oneof![
            Just((Actor::Classic, None)),
            Just((session(1, None, "c1"), None)),
            Just((session(2, Some("c1"), "c2"), None)),
            Just((session(3, Some("c2"), "c1"), None)),
            Just((session(4, Some("c1"), "c1"), Some(Takeover::DeadSession(2)))),
            Just((Actor::Server, Some(Takeover::DeadSession(2)))),
            Just((
                Actor::Server,
                Some(Takeover::DeadAddress("127.0.0.1:1".parse().unwrap()))
            )),
        ]
    }

    /// A random mutation of a random actor.
    fn mutation() -> impl Strategy<Value = Mutation> {
        (operation(), actor()).prop_map(|((user, operation), (actor, takeover))| Mutation {
            user: USERS[user].into(),
            operation,
            peer_ip: "127.0.0.1".parse().unwrap(),
            actor,
            takeover,
        })
    }

    /// Classic mutations of `ops`.
    fn classic(ops: &[(usize, Operation)]) -> Vec<Mutation> {
        ops.iter()
            .map(|(user, operation)| Mutation {
                user: USERS[*user].into(),
                operation: operation.clone(),
                peer_ip: "127.0.0.1".parse().unwrap(),
                actor: Actor::Classic,
                takeover: None,
            })
            .collect()
    }

    /// The effects the rules produce for `mutations` on `tables` (one
    /// batch per mutation, as the writer may cut them, each at its own
    /// time), applied to `tables`.
    fn run(tables: &mut Tables, mutations: &[Mutation]) -> Vec<Effect> {
        let mut all = Vec::new();
        for (now, mutation) in mutations.iter().enumerate() {
            let context = Context {
                auth: AuthMode::Open,
                now: now as u64,
            };
            let effects = {
                let mut batch = Batch::new(tables);
                rules::apply(&mut batch, mutation, context);
                batch.into_effects()
            };
            for effect in &effects {
                tables.apply(effect).unwrap();
            }
            all.extend(effects);
        }
        all
    }

    fn net_of(effects: &[Effect]) -> Vec<Effect> {
        let mut net = NetEffects::default();
        for effect in effects {
            net.add(effect).unwrap();
        }
        net.into_effects()
    }

    /// Everything the tables hold, comparable.
    #[allow(clippy::type_complexity)]
    fn dump(
        tables: &Tables,
    ) -> (
        Vec<String>,
        Vec<Vec<u8>>,
        Vec<Vec<u8>>,
        Vec<(Option<Arc<str>>, Option<u64>, Option<u64>)>,
    ) {
        let connected = tables
            .connected_entries()
            .entries()
            .map(<[u8]>::to_vec)
            .collect();
        let files = USERS
            .iter()
            .flat_map(|u| {
                tables
                    .file_entries(u)
                    .entries()
                    .map(<[u8]>::to_vec)
                    .collect::<Vec<_>>()
            })
            .collect();
        let accounts = USERS
            .iter()
            .map(|u| (tables.credential(u), tables.holder(u), tables.last_seen(u)))
            .collect();
        (tables.user_names(), connected, files, accounts)
    }

    fn applied(mut tables: Tables, effects: &[Effect]) -> Tables {
        for effect in effects {
            tables.apply(effect).unwrap();
        }
        tables
    }

    proptest! {
        /// From any state the rules reached, the net change of any run
        /// leaves the tables exactly as the run does, and applying it again
        /// on top of the run changes nothing (a replayed checkpoint).
        #[test]
        fn net_change_equals_the_run(
            before in proptest::collection::vec(mutation(), 0..30),
            ops in proptest::collection::vec(mutation(), 0..60),
        ) {
            let mut start = Tables::default();
            run(&mut start, &before);
            let mut end = start.clone();
            let effects = run(&mut end, &ops);
            let net = net_of(&effects);
            prop_assert!(net.len() <= effects.len() + USERS.len());
            prop_assert_eq!(dump(&applied(start, &net)), dump(&end));
            prop_assert_eq!(dump(&applied(end.clone(), &net)), dump(&end));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        /// The same through the store (redb), whose files and content are
        /// separate tables.
        #[test]
        fn store_holds_the_same_after_the_net_change(
            before in proptest::collection::vec(mutation(), 0..20),
            ops in proptest::collection::vec(mutation(), 0..40),
        ) {
            let mut model = Tables::default();
            let first = run(&mut model, &before);
            let effects = run(&mut model, &ops);
            let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let (by_effect, by_net) = (Store::open(a.path()).unwrap(), Store::open(b.path()).unwrap());
            by_effect.apply_durably(&first).unwrap();
            by_effect.apply_durably(&effects).unwrap();
            by_net.apply_durably(&first).unwrap();
            by_net.apply_durably(&net_of(&effects)).unwrap();
            let (loaded_effect, _) = by_effect.load().unwrap();
            let (loaded_net, _) = by_net.load().unwrap();
            prop_assert_eq!(dump(&loaded_net), dump(&loaded_effect));
            prop_assert_eq!(dump(&loaded_net), dump(&model));
        }
    }

    #[test]
    fn pairs_that_cancel_write_nothing() {
        let mut tables = Tables::default();
        run(
            &mut tables,
            &classic(&[
                (0, Operation::Register),
                (
                    0,
                    Operation::Connect(ConnectAddr {
                        ip: Ok(None),
                        port: Ok(1),
                    }),
                ),
            ]),
        );
        let effects = run(
            &mut tables,
            &classic(&[
                (
                    0,
                    Operation::Publish {
                        file: Ok("x".into()),
                        description: Ok("d".into()),
                    },
                ),
                (
                    0,
                    Operation::Delete {
                        file: Ok("x".into()),
                    },
                ),
                (0, Operation::Disconnect),
                (
                    0,
                    Operation::Connect(ConnectAddr {
                        ip: Ok(None),
                        port: Ok(2),
                    }),
                ),
            ]),
        );
        assert_eq!(effects.len(), 5, "{effects:?}");
        let net = net_of(&effects);
        assert_eq!(
            net.len(),
            2,
            "only the new address and the last seen are written: {net:?}"
        );
        assert!(
            matches!(&net[0], Effect::SetAddress(user, addr) if user == "al" && addr.port() == 2)
        );
        assert!(matches!(&net[1], Effect::SetLastSeen { user, .. } if user == "al"));
    }

    #[test]
    fn a_file_published_again_without_content_loses_the_old_content() {
        let connect = Operation::Connect(ConnectAddr {
            ip: Ok(None),
            port: Ok(1),
        });
        let with_content = Operation::PublishContent {
            file: Ok("x".into()),
            description: Ok("old".into()),
            size: Ok(7),
            hash: Ok([9; 32]),
        };
        let plain = Operation::Publish {
            file: Ok("x".into()),
            description: Ok("new".into()),
        };
        let mut model = Tables::default();
        let first = run(
            &mut model,
            &classic(&[(0, Operation::Register), (0, connect), (0, with_content)]),
        );
        let effects = run(
            &mut model,
            &classic(&[
                (
                    0,
                    Operation::Delete {
                        file: Ok("x".into()),
                    },
                ),
                (0, plain),
            ]),
        );
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.apply_durably(&first).unwrap();
        store.apply_durably(&net_of(&effects)).unwrap();
        let (loaded, _) = store.load().unwrap();
        assert_eq!(dump(&loaded), dump(&model));
        assert!(loaded.file("al", "x").is_some_and(|f| f.content.is_none()));
    }

    #[test]
    fn content_for_a_file_not_added_in_the_run_is_refused() {
        let mut net = NetEffects::default();
        let effect = Effect::SetContent {
            user: "al".into(),
            file: "x".into(),
            size: 1,
            hash: [0; 32],
        };
        assert_eq!(net.add(&effect), Err(NotNettable));
    }
}
