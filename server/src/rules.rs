//! The rules of each operation: where a command is applied to state.
//!
//! Reply codes are checked strictly in PROTOCOL.md's order (user exists,
//! user connected, the op's own condition, then the catch-all). Mutations run
//! inside the group-commit writer's batch ([`apply`] over a [`Batch`]);
//! listings take a snapshot of the state ([`list`]), stream from it
//! ([`Listing`]) once the batches it depends on are durable.
//!
//! Who may mutate (docs/PROTOCOL-EXTENSIONS.md, "Accounts and sessions"),
//! decided after the user's existence and before anything else:
//! - a protected account (one with a credential) only by a session that
//!   proved its current credential ([`crate::actor::SessionActor::may_act_for`]);
//!   anyone else gets [`Outcome::Refused`] and nothing changes;
//! - under [`AuthMode::Required`] only by sessions proving the account's
//!   credential (an account without one is frozen);
//! - [`Actor::Server`] only DISCONNECTs, and only the entry presence found
//!   dead ([`Takeover`]), so that it never knocks out a user who
//!   reconnected meanwhile. The same guard lets a CONNECT replace the entry
//!   of a holder found gone.
//!
//! The credential is read through the batch: a password change and a
//! request of a session of the old password in one batch cannot both win.

use std::net::SocketAddr;

use bytes::BytesMut;
use peerdex_protocol::names::{is_valid_description, is_valid_file, is_valid_user};
use peerdex_protocol::{Checked, Operation, Outcome, Request, Secret};

use crate::actor::{Actor, AuthMode, Takeover};
use crate::durable::engine::Mutation;

use crate::state::entries::Part;
use crate::state::tables::listed_file;
use crate::state::{Batch, Presence, State};

/// What a request needs from the server.
#[derive(Debug)]
pub enum Plan {
    /// Answered without looking at state (malformed USER field, invalid
    /// name to register).
    Answer(Outcome),
    /// A mutation: goes through the group-commit writer.
    Mutate { user: String },
    /// A listing: answered from a snapshot of the state.
    Read { user: String },
    /// SEARCH / FIND_SOURCES: answered from the in-memory indexes and
    /// tables ([`crate::query`]).
    Query { user: String },
}

/// Decides what a request needs, settling the failures that do not depend
/// on state.
pub fn plan(request: &Request) -> Plan {
    let user = match &request.user {
        Ok(user) => user.clone(),
        // A malformed or over-long USER field is the catch-all for every op.
        Err(_) => return Plan::Answer(Outcome::Fail),
    };
    match request.operation {
        // An invalid name never exists, so FAIL before USERNAME IN USE
        // cannot contradict the code order.
        Operation::Register if !is_valid_user(&user) => Plan::Answer(Outcome::Fail),
        Operation::ListUsers | Operation::ListContent { .. } => Plan::Read { user },
        Operation::Search { .. } | Operation::FindSources { .. } | Operation::Whois { .. } => {
            Plan::Query { user }
        }
        _ => Plan::Mutate { user },
    }
}

/// What the rules need of a batch beyond its mutations: the server's
/// `--auth` mode and the batch's time (one clock reading per batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    pub auth: AuthMode,
    /// Seconds since the Unix epoch, recorded by DISCONNECT as last seen.
    pub now: u64,
}

/// Applies one mutation to a batch. Codes come in PROTOCOL.md's order (the
/// user's existence first); a mutation the actor may not make for the
/// account is [`Outcome::Refused`] and changes nothing.
pub fn apply<'a>(batch: &mut Batch<'a>, mutation: &'a Mutation, context: Context) -> Outcome {
    let user = mutation.user.as_str();
    let operation = &mutation.operation;
    let actor = &mutation.actor;
    if let Operation::Register = operation {
        return register(batch, user, actor, context.auth);
    }
    let connected = match batch.presence(user) {
        Presence::Unknown => return Outcome::UserDoesNotExist,
        Presence::Registered => false,
        Presence::Connected => true,
    };
    let credential = batch.credential(user);
    match actor {
        // The directory itself acts only to end a connection that was
        // found dead, and only if it is still the one found dead.
        Actor::Server => {
            return match operation {
                Operation::Disconnect if !connected => Outcome::UserNotConnected,
                Operation::Disconnect if still_dead(batch, user, mutation.takeover) => {
                    disconnect(batch, user, context.now)
                }
                _ => Outcome::Fail,
            };
        }
        Actor::Classic if context.auth == AuthMode::Required || credential.is_some() => {
            return Outcome::Refused;
        }
        Actor::Session(session)
            if (context.auth == AuthMode::Required
                && (session.credential.is_none() || credential.is_none()))
                || !session.may_act_for(credential.as_deref()) =>
        {
            return Outcome::Refused;
        }
        Actor::Classic | Actor::Session(_) => {}
    }
    match operation {
        Operation::Unregister => {
            batch.remove_user(user);
            Outcome::Ok
        }
        Operation::SetPassword { password } => set_password(batch, user, actor, password),
        Operation::Connect(addr) => {
            if connected && !may_replace(batch, user, mutation, credential.as_deref()) {
                return Outcome::UserAlreadyConnected;
            }
            match (addr.ip, addr.port) {
                (Ok(ip), Ok(port)) => {
                    let ip = ip.unwrap_or(mutation.peer_ip).to_canonical();
                    let addr = SocketAddr::new(ip, port);
                    match actor {
                        Actor::Session(session) => batch.set_held_address(user, addr, session.id),
                        _ => batch.set_address(user, addr),
                    }
                    Outcome::Ok
                }
                _ => Outcome::Fail,
            }
        }
        // Every other operation needs a connected user.
        _ if !connected => Outcome::UserNotConnected,
        Operation::Disconnect => disconnect(batch, user, context.now),
        Operation::Publish { file, description } => publish(batch, user, file, description, None),
        Operation::PublishContent {
            file,
            description,
            size,
            hash,
        } => {
            // Size and hash are checked after ALREADY PUBLISHED, like the
            // description: codes stay in PUBLISH's order.
            let content = match (size, hash) {
                (Ok(size), Ok(hash)) => Ok((*size, *hash)),
                _ => Err(()),
            };
            publish(batch, user, file, description, Some(content))
        }
        Operation::Delete { file } => match file {
            Err(_) => Outcome::Fail,
            Ok(file) if batch.remove_file(user, file) => Outcome::Ok,
            Ok(_) => Outcome::ContentNotPublished,
        },
        // Listings are not mutations: a misrouted one is a failure, never a
        // reply without its entries.
        Operation::Register
        | Operation::ListUsers
        | Operation::ListContent { .. }
        | Operation::Search { .. }
        | Operation::FindSources { .. }
        | Operation::Whois { .. } => Outcome::Fail,
    }
}

/// REGISTER: a session that carries a credential creates the account
/// protected by it; under `--auth required` only such a session may.
fn register<'a>(batch: &mut Batch<'a>, user: &'a str, actor: &Actor, auth: AuthMode) -> Outcome {
    if !is_valid_user(user) {
        return Outcome::Fail;
    }
    if batch.user_exists(user) {
        return Outcome::UsernameInUse;
    }
    let credential = match actor {
        Actor::Server => return Outcome::Fail,
        Actor::Classic if auth == AuthMode::Required => return Outcome::Refused,
        Actor::Classic => None,
        Actor::Session(session) => match &session.credential {
            None if auth == AuthMode::Required => return Outcome::Refused,
            credential => credential.clone(),
        },
    };
    batch.add_user(user);
    if let Some(phc) = credential {
        batch.set_credential(user, phc);
    }
    Outcome::Ok
}

/// SET_PASSWORD, once the actor may act for the account: only a session
/// can, with a non-empty password hashed before the batch.
fn set_password<'a>(
    batch: &mut Batch<'a>,
    user: &'a str,
    actor: &Actor,
    password: &Checked<Secret>,
) -> Outcome {
    let Actor::Session(session) = actor else {
        return Outcome::Refused;
    };
    match (password, &session.new_credential) {
        (Ok(password), Some(phc)) if !password.is_empty() => {
            batch.set_credential(user, phc.clone());
            Outcome::Ok
        }
        _ => Outcome::Fail,
    }
}

/// DISCONNECT: the entry goes, and when it went is remembered.
fn disconnect<'a>(batch: &mut Batch<'a>, user: &'a str, now: u64) -> Outcome {
    batch.clear_address(user);
    batch.set_last_seen(user, now);
    Outcome::Ok
}

/// True when `takeover` names the entry `user` has now: the holder that
/// was found gone has not been replaced since.
fn still_dead(batch: &Batch<'_>, user: &str, takeover: Option<Takeover>) -> bool {
    match takeover {
        Some(Takeover::DeadSession(id)) => batch.holder(user) == Some(id),
        Some(Takeover::DeadAddress(addr)) => {
            batch.holder(user).is_none() && batch.address(user) == Some(addr)
        }
        None => false,
    }
}

/// Whether a CONNECT may replace the entry of a connected user: its holder
/// is gone, or the CONNECT comes from an authenticated session of the
/// (protected) account, which takes the connection over.
fn may_replace(batch: &Batch<'_>, user: &str, mutation: &Mutation, current: Option<&str>) -> bool {
    if still_dead(batch, user, mutation.takeover) {
        return true;
    }
    match (&mutation.actor, current) {
        (Actor::Session(session), Some(current)) => session.credential.as_deref() == Some(current),
        _ => false,
    }
}

/// PUBLISH and PUBLISH_CONTENT after the user checks. `content` is `None`
/// for a classic PUBLISH, `Some(Err)` for a malformed size or hash.
fn publish<'a>(
    batch: &mut Batch<'a>,
    user: &'a str,
    file: &'a Checked<String>,
    description: &Checked<String>,
    content: Option<Result<(u64, [u8; 32]), ()>>,
) -> Outcome {
    let file = match file {
        Err(_) => return Outcome::Fail,
        Ok(file) => file,
    };
    if batch.has_file(user, file) {
        return Outcome::ContentAlreadyPublished;
    }
    let description = match description {
        Ok(description) if is_valid_file(file) && is_valid_description(description) => description,
        _ => return Outcome::Fail,
    };
    match content {
        None => batch.add_file(user, file, description),
        Some(Err(())) => return Outcome::Fail,
        Some(Ok((size, hash))) => {
            batch.add_file(user, file, description);
            batch.set_content(user, file, size, &hash);
        }
    }
    Outcome::Ok
}

/// Which listing, and so how stored entries become reply entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListingKind {
    /// LIST_USERS: `connected` entries are sent as stored.
    Users,
    /// LIST_CONTENT: `files` entries without the owner and content fields.
    Files,
}

/// A listing ready to stream: LIST_USERS or LIST_CONTENT after code 0. It
/// owns a snapshot (shared chunks), so later changes do not affect it and
/// no lock is held while it is written.
pub struct Listing {
    kind: ListingKind,
    /// The snapshot's entries.
    parts: Vec<Part>,
    /// The next part to write, and the next entry in it.
    next: (usize, usize),
    /// Number of entries, written right after the code.
    count: u64,
}

impl Listing {
    /// Number of entries in the listing.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// At least the bytes the entries take on the wire (for LIST_CONTENT
    /// more: the stored entries also hold the owner and content fields),
    /// to size a small listing's buffer exactly.
    pub fn bytes_bound(&self) -> usize {
        self.parts.iter().map(|part| part.bytes().len()).sum()
    }

    /// Appends entries until `out` holds at least `limit` bytes. Returns
    /// false once the listing is complete.
    pub fn fill(&mut self, out: &mut BytesMut, limit: usize) -> bool {
        while let Some(part) = self.parts.get(self.next.0) {
            match self.kind {
                ListingKind::Users => {
                    out.extend_from_slice(part.bytes());
                    self.next = (self.next.0 + 1, 0);
                }
                ListingKind::Files => {
                    // At least one entry per call, so that a caller whose
                    // buffer is already full still makes progress.
                    let start = self.next.1;
                    while self.next.1 < part.len() && (self.next.1 == start || out.len() < limit) {
                        out.extend_from_slice(listed_file(part.entry(self.next.1)));
                        self.next.1 += 1;
                    }
                    if self.next.1 == part.len() {
                        self.next = (self.next.0 + 1, 0);
                    }
                }
            }
            if out.len() >= limit {
                break;
            }
        }
        self.next.0 < self.parts.len()
    }
}

/// The answer to LIST_USERS / LIST_CONTENT: an error outcome, or code 0 with
/// a listing to stream.
pub enum ListAnswer {
    Status(Outcome),
    Listing(Box<Listing>),
}

/// Checks a listing request against the state and snapshots the
/// entries it lists; also returns the batch the answer depends on, which
/// must be durable before the answer is sent.
///
/// LIST_CONTENT depends only on the requester and the listed user: it
/// waits only if one of them changed in a batch still being synced, not
/// for every batch in flight. LIST_USERS depends on every user.
pub fn list(state: &State, user: &str, operation: &Operation) -> (ListAnswer, u64) {
    let tables = state.tables();
    let mut depends_on = tables.last_change(user);
    match tables.presence(user) {
        Presence::Unknown => return (ListAnswer::Status(Outcome::UserDoesNotExist), depends_on),
        Presence::Registered => return (ListAnswer::Status(Outcome::UserNotConnected), depends_on),
        Presence::Connected => {}
    }
    let (kind, slice) = match operation {
        Operation::ListUsers => {
            // Read under the lock: covers exactly the batches this
            // snapshot holds.
            depends_on = state.applied_seq();
            (ListingKind::Users, tables.connected_entries())
        }
        Operation::ListContent { remote_user } => match remote_user {
            Ok(remote) => {
                depends_on = depends_on.max(tables.last_change(remote));
                // Files exist only for registered users, so the user table
                // is consulted only when the listing is empty.
                let files = tables.file_entries(remote);
                if files.is_empty() && !tables.user_exists(remote) {
                    return (
                        ListAnswer::Status(Outcome::RemoteUserDoesNotExist),
                        depends_on,
                    );
                }
                (ListingKind::Files, files)
            }
            Err(_) => return (ListAnswer::Status(Outcome::Fail), depends_on),
        },
        _ => return (ListAnswer::Status(Outcome::Fail), depends_on),
    };
    drop(tables);
    let count = slice.len() as u64;
    let listing = ListAnswer::Listing(Box::new(Listing {
        kind,
        parts: slice.into_parts(),
        next: (0, 0),
        count,
    }));
    (listing, depends_on)
}

/// The user field as text for logs: the name, or a marker when malformed.
pub fn user_label(user: &Checked<String>) -> String {
    match user {
        Ok(user) => user.clone(),
        Err(_) => "<malformed>".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable::engine::{Engine, Mutation};
    use peerdex_protocol::{ConnectAddr, Malformed, OpKind};
    use std::cell::RefCell;
    use std::net::IpAddr;
    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));

    struct Fixture {
        _dir: tempfile::TempDir,
        engine: RefCell<Engine>,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let engine = RefCell::new(Engine::open(dir.path()).unwrap());
            Fixture { _dir: dir, engine }
        }

        /// Runs a request the way the server does; returns its reply code.
        fn run(&self, user: Checked<&str>, operation: Operation) -> u8 {
            let kind = operation.kind();
            let request = Request {
                datetime: None,
                user: user.map(str::to_string),
                operation,
            };
            let outcome = match plan(&request) {
                Plan::Answer(outcome) => outcome,
                Plan::Mutate { user } => {
                    let mutation = Mutation {
                        user,
                        operation: request.operation.clone(),
                        peer_ip: PEER,
                        actor: crate::actor::Actor::Classic,
                        takeover: None,
                    };
                    self.engine.borrow_mut().commit([&mutation])[0]
                }
                Plan::Query { .. } => panic!("query ops are tested in extension_tests.rs"),
                Plan::Read { user } => {
                    match list(self.engine.borrow().state(), &user, &request.operation).0 {
                        ListAnswer::Status(outcome) => outcome,
                        ListAnswer::Listing(_) => Outcome::Ok,
                    }
                }
            };
            kind.code(outcome)
        }

        fn ok(&self, user: &str, operation: Operation) {
            assert_eq!(self.run(Ok(user), operation), 0);
        }

        /// Commits one mutation of `actor` in its own batch.
        fn mutate(
            &self,
            user: &str,
            operation: Operation,
            actor: &Actor,
            takeover: Option<Takeover>,
        ) -> Outcome {
            let mutation = Mutation {
                user: user.into(),
                operation,
                peer_ip: PEER,
                actor: actor.clone(),
                takeover,
            };
            self.engine.borrow_mut().commit([&mutation])[0]
        }

        fn set_clock(&self, clock: crate::durable::engine::Clock) {
            self.engine.borrow_mut().set_clock(clock);
        }

        fn connected(&self, user: &str) {
            self.ok(user, Operation::Register);
            self.ok(user, connect(Some("10.0.0.1"), Ok(4000)));
        }

        fn listing(&self, user: &str, operation: Operation) -> (u64, Vec<String>) {
            let (ListAnswer::Listing(mut listing), _) =
                list(self.engine.borrow().state(), user, &operation)
            else {
                panic!("no listing")
            };
            let bound = listing.bytes_bound();
            let mut out = BytesMut::new();
            while listing.fill(&mut out, 7) {}
            // The reply buffer is sized from the bound: it must cover it.
            assert!(
                out.len() <= bound,
                "{} bytes over a bound of {bound}",
                out.len()
            );
            let text = String::from_utf8(out.to_vec()).unwrap();
            let fields = text
                .split_terminator('\0')
                .map(str::to_string)
                .collect::<Vec<_>>();
            (listing.count(), fields)
        }
    }

    fn connect(ip: Option<&str>, port: Checked<u16>) -> Operation {
        Operation::Connect(ConnectAddr {
            ip: Ok(ip.map(|ip| ip.parse().unwrap())),
            port,
        })
    }

    fn publish(file: &str, description: &str) -> Operation {
        Operation::Publish {
            file: Ok(file.into()),
            description: Ok(description.into()),
        }
    }

    fn delete(file: &str) -> Operation {
        Operation::Delete {
            file: Ok(file.into()),
        }
    }

    fn list_content(remote: Checked<&str>) -> Operation {
        Operation::ListContent {
            remote_user: remote.map(str::to_string),
        }
    }

    const TOO_LONG: Checked<&str> = Err(Malformed::TooLong);

    #[test]
    fn register_codes() {
        let f = Fixture::new();
        assert_eq!(f.run(Ok("alice"), Operation::Register), 0);
        assert_eq!(f.run(Ok("alice"), Operation::Register), 1);
        assert_eq!(f.run(Ok("a b"), Operation::Register), 2);
        assert_eq!(f.run(Ok(""), Operation::Register), 2);
        assert_eq!(f.run(TOO_LONG, Operation::Register), 2);
    }

    #[test]
    fn unregister_codes_and_cleanup() {
        let f = Fixture::new();
        assert_eq!(f.run(Ok("alice"), Operation::Unregister), 1);
        assert_eq!(f.run(Ok(""), Operation::Unregister), 1);
        assert_eq!(f.run(TOO_LONG, Operation::Unregister), 2);
        f.connected("alice");
        f.ok("alice", publish("a.txt", "x"));
        f.ok("alice", Operation::Unregister);
        // Everything is gone: registering again starts from scratch.
        f.connected("alice");
        f.connected("bob");
        assert_eq!(f.listing("bob", list_content(Ok("alice"))).0, 0);
        assert_eq!(f.listing("bob", Operation::ListUsers).0, 2);
        // Unregister works whatever the state.
        f.ok("alice", Operation::Unregister);
        assert_eq!(f.listing("bob", Operation::ListUsers).0, 1);
    }

    #[test]
    fn connect_codes() {
        let f = Fixture::new();
        assert_eq!(f.run(Ok("al"), connect(None, Ok(1))), 1);
        assert_eq!(f.run(TOO_LONG, connect(None, Ok(1))), 3);
        f.ok("al", Operation::Register);
        let bad_port = connect(None, Err(Malformed::Invalid("port")));
        assert_eq!(f.run(Ok("al"), bad_port), 3);
        let bad_ip = Operation::Connect(ConnectAddr {
            ip: Err(Malformed::Invalid("ip")),
            port: Ok(5),
        });
        assert_eq!(f.run(Ok("al"), bad_ip), 3);
        f.ok("al", connect(None, Ok(4000)));
        assert_eq!(f.run(Ok("al"), connect(None, Ok(4000))), 2);
        // Already connected wins over a bad port.
        let bad_port = connect(None, Err(Malformed::Invalid("port")));
        assert_eq!(f.run(Ok("al"), bad_port), 2);
        let (_, fields) = f.listing("al", Operation::ListUsers);
        assert_eq!(fields, ["al", "192.0.2.7", "4000"], "source IP recorded");
    }

    #[test]
    fn disconnect_codes_keep_content() {
        let f = Fixture::new();
        assert_eq!(f.run(Ok("al"), Operation::Disconnect), 1);
        assert_eq!(f.run(TOO_LONG, Operation::Disconnect), 3);
        f.ok("al", Operation::Register);
        assert_eq!(f.run(Ok("al"), Operation::Disconnect), 2);
        f.ok("al", connect(Some("10.0.0.9"), Ok(9)));
        f.ok("al", publish("f", "d"));
        f.ok("al", Operation::Disconnect);
        assert_eq!(f.run(Ok("al"), Operation::Disconnect), 2);
        f.connected("bob");
        let (count, fields) = f.listing("bob", list_content(Ok("al")));
        assert_eq!((count, fields), (1, vec!["f".into(), "d".into()]));
        // Reconnecting may use a new address.
        f.ok("al", connect(Some("10.0.0.10"), Ok(10)));
    }

    #[test]
    fn publish_codes() {
        let f = Fixture::new();
        assert_eq!(f.run(Ok("al"), publish("f", "d")), 1);
        // Unknown user wins over a malformed file.
        let malformed = Operation::Publish {
            file: Err(Malformed::TooLong),
            description: Ok(String::new()),
        };
        assert_eq!(f.run(Ok("al"), malformed.clone()), 1);
        assert_eq!(f.run(TOO_LONG, publish("f", "d")), 4);
        f.ok("al", Operation::Register);
        assert_eq!(f.run(Ok("al"), publish("f", "d")), 2);
        assert_eq!(f.run(Ok("al"), malformed.clone()), 2);
        f.ok("al", connect(None, Ok(1)));
        f.ok("al", publish("f", "a description"));
        assert_eq!(f.run(Ok("al"), publish("f", "other")), 3);
        assert_eq!(f.run(Ok("al"), malformed), 4);
        assert_eq!(f.run(Ok("al"), publish("a b", "d")), 4);
        assert_eq!(f.run(Ok("al"), publish("", "d")), 4);
        assert_eq!(f.run(Ok("al"), publish("g", "two\nlines")), 4);
        let long_description = Operation::Publish {
            file: Ok("g".into()),
            description: Err(Malformed::TooLong),
        };
        assert_eq!(f.run(Ok("al"), long_description), 4);
        f.ok("al", publish("g", ""));
    }

    #[test]
    fn delete_codes() {
        let f = Fixture::new();
        assert_eq!(f.run(Ok("al"), delete("f")), 1);
        assert_eq!(f.run(TOO_LONG, delete("f")), 4);
        f.ok("al", Operation::Register);
        assert_eq!(f.run(Ok("al"), delete("f")), 2);
        f.ok("al", connect(None, Ok(1)));
        assert_eq!(f.run(Ok("al"), delete("f")), 3);
        let malformed = Operation::Delete {
            file: Err(Malformed::TooLong),
        };
        assert_eq!(f.run(Ok("al"), malformed), 4);
        f.ok("al", publish("f", "d"));
        f.ok("al", delete("f"));
        assert_eq!(f.run(Ok("al"), delete("f")), 3);
    }

    #[test]
    fn list_users_codes_and_entries() {
        let f = Fixture::new();
        assert_eq!(f.run(Ok("al"), Operation::ListUsers), 1);
        assert_eq!(f.run(Ok(""), Operation::ListUsers), 1);
        assert_eq!(f.run(TOO_LONG, Operation::ListUsers), 3);
        f.ok("al", Operation::Register);
        assert_eq!(f.run(Ok("al"), Operation::ListUsers), 2);
        f.ok("al", connect(Some("10.0.0.1"), Ok(4000)));
        f.ok("zed", Operation::Register);
        f.ok("bo", Operation::Register);
        f.ok("bo", connect(Some("::1"), Ok(65535)));
        let (count, fields) = f.listing("al", Operation::ListUsers);
        assert_eq!(count, 2);
        assert_eq!(fields, ["al", "10.0.0.1", "4000", "bo", "::1", "65535"]);
    }

    #[test]
    fn a_listing_waits_only_for_batches_that_changed_its_users() {
        let f = Fixture::new();
        for user in ["al", "bo", "cy"] {
            f.connected(user);
        }
        let mut engine = f.engine.borrow_mut();
        // Staged but not synced, as while the syncer runs.
        let staged = engine.stage([&Mutation {
            user: "bo".into(),
            operation: publish("f", "d"),
            peer_ip: PEER,
            actor: crate::actor::Actor::Classic,
            takeover: None,
        }]);
        assert_eq!(staged.outcomes, [Outcome::Ok]);
        let state = engine.state();
        let depends_on = |user: &str, operation: Operation| list(state, user, &operation).1;
        // Listing bo, or listing for bo, shows the new file: it waits.
        assert_eq!(depends_on("al", list_content(Ok("bo"))), staged.seq);
        assert_eq!(depends_on("bo", list_content(Ok("cy"))), staged.seq);
        // So does every user list. Listing cy, or a user that does not
        // exist, does not: bo's batch changed neither.
        assert_eq!(depends_on("al", Operation::ListUsers), staged.seq);
        assert!(depends_on("al", list_content(Ok("cy"))) < staged.seq);
        assert!(depends_on("al", list_content(Ok("zed"))) < staged.seq);
        // Once synced, nothing is left to wait for.
        staged.sync.sync().unwrap();
        state.set_durable(staged.seq);
        let (answer, _) = list(state, "al", &list_content(Ok("bo")));
        let ListAnswer::Listing(listing) = answer else {
            panic!("bo is listed")
        };
        assert_eq!(listing.count(), 1);
    }

    #[test]
    fn list_content_codes_and_entries() {
        let f = Fixture::new();
        assert_eq!(f.run(Ok("al"), list_content(Ok("bo"))), 1);
        assert_eq!(f.run(TOO_LONG, list_content(Ok("bo"))), 4);
        f.ok("al", Operation::Register);
        assert_eq!(f.run(Ok("al"), list_content(Ok("bo"))), 2);
        f.ok("al", connect(None, Ok(1)));
        assert_eq!(f.run(Ok("al"), list_content(Ok("bo"))), 3);
        assert_eq!(f.run(Ok("al"), list_content(Ok(""))), 3);
        assert_eq!(f.run(Ok("al"), list_content(TOO_LONG)), 4);
        f.ok("bo", Operation::Register);
        assert_eq!(f.run(Ok("al"), list_content(Ok("bo"))), 0);
        assert_eq!(f.listing("al", list_content(Ok("bo"))).0, 0);
        f.ok("al", publish("b.txt", "second file"));
        f.ok("al", publish("a.txt", ""));
        let (count, fields) = f.listing("al", list_content(Ok("al")));
        assert_eq!(count, 2);
        assert_eq!(fields, ["a.txt", "", "b.txt", "second file"]);
    }

    #[test]
    fn every_op_has_its_catch_all_for_a_malformed_user() {
        let f = Fixture::new();
        for operation in [
            Operation::Register,
            Operation::Unregister,
            connect(None, Ok(1)),
            Operation::Disconnect,
            publish("f", "d"),
            delete("f"),
            Operation::ListUsers,
            list_content(Ok("x")),
        ] {
            let kind: OpKind = operation.kind();
            assert_eq!(f.run(Err(Malformed::NotUtf8), operation), kind.fail_code());
        }
    }

    /// Accounts, sessions and presence: who may change what.
    mod accounts {
        use super::*;
        use crate::actor::SessionActor;
        use peerdex_protocol::Secret;
        use std::sync::Arc;

        const H1: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdDE$aGFzaDE";
        const H2: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdDI$aGFzaDI";

        fn session(id: u64, credential: Option<&str>) -> Actor {
            Actor::Session(SessionActor {
                id,
                credential: credential.map(Arc::from),
                new_credential: None,
            })
        }

        /// A session that asks to set the password whose hash is `new`.
        fn setting(id: u64, credential: Option<&str>, new: Option<&str>) -> Actor {
            Actor::Session(SessionActor {
                id,
                credential: credential.map(Arc::from),
                new_credential: new.map(Arc::from),
            })
        }

        fn set_password(password: &str) -> Operation {
            Operation::SetPassword {
                password: Ok(Secret::new(password)),
            }
        }

        fn publish_content(file: &str) -> Operation {
            Operation::PublishContent {
                file: Ok(file.into()),
                description: Ok("d".into()),
                size: Ok(3),
                hash: Ok([7; 32]),
            }
        }

        fn at(port: u16) -> Operation {
            connect(Some("10.0.0.1"), Ok(port))
        }

        fn addr(port: u16) -> SocketAddr {
            SocketAddr::new("10.0.0.1".parse().unwrap(), port)
        }

        /// Every mutation a protected account refuses to strangers.
        fn every_mutation() -> Vec<Operation> {
            vec![
                Operation::Unregister,
                at(5000),
                Operation::Disconnect,
                publish("new", "d"),
                publish_content("new2"),
                delete("f"),
                set_password("pw"),
            ]
        }

        impl Fixture {
            /// Everything the tables hold about `users`, to compare.
            #[allow(clippy::type_complexity)]
            fn dump(
                &self,
                users: &[&str],
            ) -> Vec<(
                bool,
                Option<SocketAddr>,
                Vec<Vec<u8>>,
                Option<Arc<str>>,
                Option<u64>,
                Option<u64>,
            )> {
                let engine = self.engine.borrow();
                let tables = engine.state().tables();
                users
                    .iter()
                    .map(|u| {
                        (
                            tables.user_exists(u),
                            tables.address(u),
                            tables
                                .file_entries(u)
                                .entries()
                                .map(<[u8]>::to_vec)
                                .collect(),
                            tables.credential(u),
                            tables.holder(u),
                            tables.last_seen(u),
                        )
                    })
                    .collect()
            }

            fn credential(&self, user: &str) -> Option<Arc<str>> {
                self.engine.borrow().state().tables().credential(user)
            }

            fn holder(&self, user: &str) -> Option<u64> {
                self.engine.borrow().state().tables().holder(user)
            }

            fn address(&self, user: &str) -> Option<SocketAddr> {
                self.engine.borrow().state().tables().address(user)
            }

            fn last_seen(&self, user: &str) -> Option<u64> {
                self.engine.borrow().state().tables().last_seen(user)
            }

            /// `al`, protected by H1, connected through session 1 with
            /// file `f`.
            fn protected(&self) -> Actor {
                let owner = session(1, Some(H1));
                for operation in [Operation::Register, at(4000), publish("f", "d")] {
                    assert_eq!(self.mutate("al", operation, &owner, None), Outcome::Ok);
                }
                owner
            }
        }

        #[test]
        fn register_in_a_session_with_a_credential_protects_the_account() {
            let f = Fixture::new();
            assert_eq!(
                f.mutate("al", Operation::Register, &session(1, Some(H1)), None),
                Outcome::Ok
            );
            assert_eq!(f.credential("al").as_deref(), Some(H1));
            // Without one, or from a classic client, as PROTOCOL.md says.
            assert_eq!(
                f.mutate("bo", Operation::Register, &session(2, None), None),
                Outcome::Ok
            );
            f.ok("cy", Operation::Register);
            assert_eq!((f.credential("bo"), f.credential("cy")), (None, None));
            // A taken name keeps its code, protected or not.
            assert_eq!(f.run(Ok("al"), Operation::Register), 1);
            assert_eq!(
                f.mutate("al", Operation::Register, &session(3, Some(H2)), None),
                Outcome::UsernameInUse
            );
        }

        #[test]
        fn a_protected_account_refuses_everyone_but_its_sessions_and_changes_nothing() {
            let f = Fixture::new();
            f.protected();
            f.connected("bo");
            let before = f.dump(&["al", "bo"]);
            let strangers = [
                Actor::Classic,
                session(7, None),
                session(8, Some(H2)),
                setting(9, None, Some(H2)),
            ];
            for stranger in &strangers {
                for operation in every_mutation() {
                    let kind = operation.kind();
                    let outcome = f.mutate("al", operation, stranger, None);
                    assert_eq!(outcome, Outcome::Refused, "{kind} from {stranger:?}");
                    assert_eq!(kind.code(outcome), kind.fail_code());
                }
            }
            // Even with a takeover that matches the entry.
            let takeover = Some(Takeover::DeadSession(1));
            assert_eq!(
                f.mutate("al", at(5000), &Actor::Classic, takeover),
                Outcome::Refused
            );
            assert_eq!(f.dump(&["al", "bo"]), before);
            // Reads keep their codes.
            assert_eq!(f.listing("bo", list_content(Ok("al"))).0, 1);
            assert_eq!(f.listing("bo", Operation::ListUsers).0, 2);
        }

        #[test]
        fn an_authenticated_session_acts_for_its_account() {
            let f = Fixture::new();
            let owner = f.protected();
            // Another session of the same password is just as good.
            let other = session(2, Some(H1));
            for (operation, actor) in [
                (publish_content("g"), &owner),
                (delete("f"), &other),
                (Operation::Disconnect, &owner),
                (at(4001), &other),
                (Operation::Unregister, &owner),
            ] {
                let kind = operation.kind();
                assert_eq!(
                    f.mutate("al", operation, actor, None),
                    Outcome::Ok,
                    "{kind}"
                );
            }
            assert_eq!(f.dump(&["al"]), [(false, None, vec![], None, None, None)]);
        }

        #[test]
        fn set_password_codes() {
            let f = Fixture::new();
            let owner = setting(1, None, Some(H1));
            assert_eq!(
                f.mutate("al", set_password("pw"), &owner, None),
                Outcome::UserDoesNotExist
            );
            f.ok("al", Operation::Register);
            // Classic: refused, whatever the account.
            assert_eq!(f.run(Ok("al"), set_password("pw")), 2);
            assert_eq!(
                f.mutate("al", set_password("pw"), &Actor::Classic, None),
                Outcome::Refused
            );
            // Empty password, or nothing hashed: the catch-all.
            assert_eq!(
                f.mutate("al", set_password(""), &owner, None),
                Outcome::Fail
            );
            assert_eq!(
                f.mutate("al", set_password("pw"), &session(1, None), None),
                Outcome::Fail
            );
            let malformed = Operation::SetPassword {
                password: Err(Malformed::TooLong),
            };
            assert_eq!(f.mutate("al", malformed, &owner, None), Outcome::Fail);
            assert_eq!(f.credential("al"), None);
            // Not connected is fine: SET_PASSWORD has no such code.
            assert_eq!(
                f.mutate("al", set_password("pw"), &owner, None),
                Outcome::Ok
            );
            assert_eq!(f.credential("al").as_deref(), Some(H1));
            // Now protected: the session that set it (which proves H1 from
            // now on) may change it, a session of no or another password
            // may not.
            let changer = setting(1, Some(H1), Some(H2));
            let stranger = setting(2, None, Some(H2));
            assert_eq!(
                f.mutate("al", set_password("x"), &stranger, None),
                Outcome::Refused
            );
            assert_eq!(
                f.mutate("al", set_password("x"), &changer, None),
                Outcome::Ok
            );
            assert_eq!(f.credential("al").as_deref(), Some(H2));
            // A session of the old password no longer acts for it.
            assert_eq!(
                f.mutate("al", at(4000), &session(1, Some(H1)), None),
                Outcome::Refused
            );
            assert_eq!(
                f.mutate("al", at(4000), &session(3, Some(H2)), None),
                Outcome::Ok
            );
        }

        /// A password change and a request of a session of the old
        /// password in one batch: the request sees the change.
        #[test]
        fn a_batch_sees_its_own_credentials_and_holders() {
            let f = Fixture::new();
            let old = session(1, Some(H1));
            let mutations = [
                ("al", Operation::Register, old.clone(), None),
                ("al", at(4000), old.clone(), None),
                (
                    "al",
                    set_password("x"),
                    setting(1, Some(H1), Some(H2)),
                    None,
                ),
                ("al", publish("f", "d"), old.clone(), None),
                (
                    "al",
                    Operation::Disconnect,
                    Actor::Server,
                    Some(Takeover::DeadSession(1)),
                ),
                ("al", publish("g", "d"), session(2, Some(H2)), None),
            ]
            .map(|(user, operation, actor, takeover)| Mutation {
                user: user.into(),
                operation,
                peer_ip: PEER,
                actor,
                takeover,
            });
            let outcomes = f.engine.borrow_mut().commit(&mutations);
            use Outcome::*;
            assert_eq!(outcomes, [Ok, Ok, Ok, Refused, Ok, UserNotConnected]);
            assert_eq!(f.credential("al").as_deref(), Some(H2));
            assert_eq!((f.address("al"), f.holder("al")), (None, None));
        }

        #[test]
        fn connect_replaces_an_entry_only_when_its_holder_is_gone() {
            let f = Fixture::new();
            // A classic entry at port 4000.
            f.ok("al", Operation::Register);
            f.ok("al", at(4000));
            let stale = Some(Takeover::DeadAddress(addr(3999)));
            assert_eq!(
                f.mutate("al", at(4001), &Actor::Classic, stale),
                Outcome::UserAlreadyConnected
            );
            let wrong_kind = Some(Takeover::DeadSession(1));
            assert_eq!(
                f.mutate("al", at(4001), &Actor::Classic, wrong_kind),
                Outcome::UserAlreadyConnected
            );
            let dead = Some(Takeover::DeadAddress(addr(4000)));
            assert_eq!(
                f.mutate("al", at(4001), &session(5, None), dead),
                Outcome::Ok
            );
            assert_eq!(
                (f.address("al"), f.holder("al")),
                (Some(addr(4001)), Some(5))
            );
            // Now held by session 5: only its death lets another in.
            let by_address = Some(Takeover::DeadAddress(addr(4001)));
            for takeover in [None, Some(Takeover::DeadSession(4)), by_address] {
                assert_eq!(
                    f.mutate("al", at(4002), &Actor::Classic, takeover),
                    Outcome::UserAlreadyConnected,
                    "{takeover:?}"
                );
            }
            // A session of an unprotected account is no owner.
            assert_eq!(
                f.mutate("al", at(4002), &session(6, Some(H1)), None),
                Outcome::UserAlreadyConnected
            );
            let dead = Some(Takeover::DeadSession(5));
            assert_eq!(f.mutate("al", at(4002), &Actor::Classic, dead), Outcome::Ok);
            assert_eq!((f.address("al"), f.holder("al")), (Some(addr(4002)), None));
            // A takeover does not excuse a malformed address.
            let dead = Some(Takeover::DeadAddress(addr(4002)));
            let bad_port = connect(None, Err(Malformed::Invalid("port")));
            assert_eq!(
                f.mutate("al", bad_port, &Actor::Classic, dead),
                Outcome::Fail
            );
        }

        #[test]
        fn an_authenticated_session_takes_over_its_accounts_connection() {
            let f = Fixture::new();
            f.protected();
            let elsewhere = session(2, Some(H1));
            assert_eq!(f.mutate("al", at(4001), &elsewhere, None), Outcome::Ok);
            assert_eq!(
                (f.address("al"), f.holder("al")),
                (Some(addr(4001)), Some(2))
            );
        }

        #[test]
        fn presence_disconnects_only_the_entry_it_found_dead() {
            let f = Fixture::new();
            f.set_clock(|| 1_700_000_000);
            f.protected();
            let before = f.dump(&["al"]);
            let server = Actor::Server;
            for (operation, takeover) in [
                (Operation::Disconnect, None),
                (Operation::Disconnect, Some(Takeover::DeadSession(2))),
                (
                    Operation::Disconnect,
                    Some(Takeover::DeadAddress(addr(4000))),
                ),
                (publish("g", "d"), Some(Takeover::DeadSession(1))),
                (Operation::Unregister, Some(Takeover::DeadSession(1))),
                (at(4001), Some(Takeover::DeadSession(1))),
            ] {
                let kind = operation.kind();
                assert_eq!(
                    f.mutate("al", operation, &server, takeover),
                    Outcome::Fail,
                    "{kind} {takeover:?}"
                );
            }
            assert_eq!(f.dump(&["al"]), before);
            // The entry it found dead, even of a protected account.
            let dead = Some(Takeover::DeadSession(1));
            assert_eq!(
                f.mutate("al", Operation::Disconnect, &server, dead),
                Outcome::Ok
            );
            assert_eq!((f.address("al"), f.holder("al")), (None, None));
            assert_eq!(f.last_seen("al"), Some(1_700_000_000));
            // Gone already: nothing to do.
            assert_eq!(
                f.mutate("al", Operation::Disconnect, &server, dead),
                Outcome::UserNotConnected
            );
            assert_eq!(
                f.mutate("zed", Operation::Disconnect, &server, dead),
                Outcome::UserDoesNotExist
            );
            // A classic entry, reconnected elsewhere since its probe failed.
            f.ok("bo", Operation::Register);
            f.ok("bo", at(5000));
            let probed = Some(Takeover::DeadAddress(addr(5000)));
            f.ok("bo", Operation::Disconnect);
            f.ok("bo", at(5001));
            assert_eq!(
                f.mutate("bo", Operation::Disconnect, &server, probed),
                Outcome::Fail
            );
            let probed = Some(Takeover::DeadAddress(addr(5001)));
            assert_eq!(
                f.mutate("bo", Operation::Disconnect, &server, probed),
                Outcome::Ok
            );
        }

        #[test]
        fn disconnect_records_when() {
            let f = Fixture::new();
            f.set_clock(|| 1_234_567_890);
            f.connected("al");
            assert_eq!(f.last_seen("al"), None);
            f.ok("al", Operation::Disconnect);
            assert_eq!(f.last_seen("al"), Some(1_234_567_890));
            // Connecting again keeps it (WHOIS shows online meanwhile);
            // unregistering forgets it.
            f.ok("al", at(1));
            assert_eq!(f.last_seen("al"), Some(1_234_567_890));
            f.ok("al", Operation::Unregister);
            assert_eq!(f.last_seen("al"), None);
        }

        #[test]
        fn unregister_forgets_the_credential_and_the_holder() {
            let f = Fixture::new();
            let owner = f.protected();
            assert_eq!(
                f.mutate("al", Operation::Unregister, &owner, None),
                Outcome::Ok
            );
            assert_eq!(f.dump(&["al"]), [(false, None, vec![], None, None, None)]);
            // The name is free for anyone, without a password.
            f.ok("al", Operation::Register);
            f.ok("al", at(1));
            assert_eq!((f.credential("al"), f.holder("al")), (None, None));
        }

        #[test]
        fn auth_required_refuses_every_mutation_without_a_credential() {
            let f = Fixture::new();
            f.connected("old");
            f.engine.borrow_mut().set_auth_mode(AuthMode::Required);
            let before = f.dump(&["old", "new"]);
            for user in ["old", "new"] {
                let mut operations = every_mutation();
                operations.push(Operation::Register);
                for operation in operations {
                    let kind = operation.kind();
                    for actor in [Actor::Classic, setting(1, None, Some(H1))] {
                        let outcome = f.mutate(user, operation.clone(), &actor, None);
                        let expected = match (user, kind) {
                            ("old", OpKind::Register) => Outcome::UsernameInUse,
                            ("new", kind) if kind != OpKind::Register => Outcome::UserDoesNotExist,
                            _ => Outcome::Refused,
                        };
                        assert_eq!(outcome, expected, "{user} {kind} {actor:?}");
                    }
                }
            }
            // A session that brought a password the account does not have
            // proves nothing: an account without one is frozen.
            for operation in every_mutation() {
                let kind = operation.kind();
                let outcome = f.mutate("old", operation, &session(3, Some(H2)), None);
                assert_eq!(outcome, Outcome::Refused, "old {kind}");
            }
            assert_eq!(f.dump(&["old", "new"]), before);
            // Reads still work for classic clients.
            assert_eq!(f.listing("old", Operation::ListUsers).0, 1);
            // A session with a password registers a protected account.
            let owner = session(2, Some(H1));
            assert_eq!(
                f.mutate("new", Operation::Register, &owner, None),
                Outcome::Ok
            );
            assert_eq!(f.mutate("new", at(4000), &owner, None), Outcome::Ok);
            assert_eq!(f.credential("new").as_deref(), Some(H1));
            // Presence still works.
            let dead = Some(Takeover::DeadSession(2));
            assert_eq!(
                f.mutate("new", Operation::Disconnect, &Actor::Server, dead),
                Outcome::Ok
            );
        }
    }
}
