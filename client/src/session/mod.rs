//! The shell's state and the execution of its commands.
//!
//! [`Session::execute`] runs one [`Command`] and returns what it prints: the
//! contract lines for stdout and short reasons for stderr. It never prints
//! itself, so the shell decides where lines go and tests can check them.
//!
//! This module holds the state and the commands that only change it
//! (REGISTER, UNREGISTER, CONNECT and DISCONNECT with the listener's start
//! and stop, LIST_USERS, LIST_CONTENT, QUIT). One file per command with
//! more to it than a request and its reply:
//! - [`connect_form`], which CONNECT form the directory reads;
//! - [`publish`], PUBLISH and DELETE, hashing for the content identity;
//! - [`share`], SHARE: a PUBLISH per file of a directory;
//! - [`get_file`], GET_FILE: its sources and the download;
//! - [`search`], SEARCH;
//! - [`passwd`], WHOIS and PASSWD;
//! - [`route`], whether a request goes through a session of its user or on
//!   a classic connection; [`reconnect`], the held session's opening and
//!   restoring; [`presence`], its events before each command.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use peerdex_protocol::{OpKind, Operation, Outcome, Reply, Request, UserEntry};

mod connect_form;
mod get_file;
mod passwd;
mod presence;
mod publish;
mod reconnect;
mod route;
mod search;
mod share;

use route::Route;

use crate::content::cache::HashCache;
use crate::directory_client::{DirectoryClient, DirectoryError};
use crate::passwords::Passwords;
use crate::peer::listener::Listener;
use crate::peer::published::PublicationRecord;
use crate::peer::share_dir::ShareDir;
use crate::peer::PeerAddr;
use crate::server_profiles::ServerProfile;
use crate::shell::command::{help_lines, Command};
use crate::shell::output;
use crate::time_source::TimeSource;

/// Where the listener binds when `--listen` is not given.
const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

/// What a command prints.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Printed {
    /// Contract lines, for stdout.
    pub out: Vec<String>,
    /// Reasons and warnings, for stderr (already prefixed `peerdex: `).
    pub err: Vec<String>,
    /// The command printed a FAIL or refusal line: a piped shell then exits
    /// with status 1, so that scripts can tell.
    pub failed: bool,
}

impl Printed {
    /// A successful command's result line.
    fn ok(line: String) -> Self {
        Self {
            out: vec![line],
            err: Vec::new(),
            failed: false,
        }
    }

    /// A FAIL or refusal line.
    fn fail(line: String) -> Self {
        Self {
            failed: true,
            ..Self::ok(line)
        }
    }

    /// The result line of a directory reply with `outcome`.
    fn outcome(line: String, outcome: Outcome) -> Self {
        Self {
            failed: outcome != Outcome::Ok,
            ..Self::ok(line)
        }
    }

    fn with_reason(mut self, reason: impl std::fmt::Display) -> Self {
        self.err.push(format!("peerdex: {reason}"));
        self
    }
}

/// Whether the shell goes on after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Quit,
}

/// The user connected through this shell, with its listener.
struct Connection {
    /// The connected user.
    user: String,
    /// Serves the user's published files while connected.
    listener: Listener,
    /// What the listener serves: the user's publication record.
    record: Arc<PublicationRecord>,
    /// Names published through this shell since CONNECT (SHARE skips them).
    published_here: HashSet<String>,
}

/// How a session reaches the world.
pub struct SessionConfig {
    /// The directory server.
    pub directory: DirectoryClient,
    /// What is known about that server (extensions, CONNECT form).
    pub profile: ServerProfile,
    /// Source of request DATETIMEs.
    pub time: TimeSource,
    /// Files served to peers are resolved here.
    pub share: ShareDir,
    /// Listener address for CONNECT (`None`: all interfaces, any port).
    pub listen: Option<SocketAddr>,
    /// Progress bars on stderr (hashing, downloads): on a terminal only.
    pub progress: bool,
    /// `--share DIR`: run `SHARE DIR` right after a successful CONNECT.
    pub auto_share: Option<String>,
    /// Where login and new passwords come from.
    pub passwords: Arc<Passwords>,
    /// The state dir: publication records (`None`: kept in memory).
    pub state_dir: Option<PathBuf>,
}

/// The shell's state.
pub struct Session {
    /// Directory, clock, share dir and listen address.
    config: SessionConfig,
    /// The last user named by REGISTER or CONNECT in this shell.
    last_named: String,
    /// The user connected through this shell, if any.
    connected: Option<Connection>,
    /// Peer addresses from the last LIST_USERS reply seen.
    peers: HashMap<String, PeerAddr>,
    /// User names from the last LIST_USERS reply, shared with the editor's
    /// tab completion.
    known_users: Arc<Mutex<Vec<String>>>,
    /// Hashes of the share dir's files, shared with the listener.
    hashes: Arc<HashCache>,
    /// Sessions or classic connections to the directory, and the extension
    /// client that remembers whether it has the extensions.
    route: Route,
}

impl Session {
    pub fn new(config: SessionConfig, known_users: Arc<Mutex<Vec<String>>>) -> Self {
        let hashes = Arc::new(HashCache::for_share(config.share.root()));
        Self {
            hashes,
            route: Route::new(
                config.directory.clone(),
                config.profile.clone(),
                Arc::clone(&config.passwords),
                config.time.clone(),
            ),
            config,
            last_named: String::new(),
            connected: None,
            peers: HashMap::new(),
            known_users,
        }
    }

    /// The user PUBLISH, DELETE, LIST_USERS and LIST_CONTENT act for.
    pub fn current_user(&self) -> &str {
        match &self.connected {
            Some(connection) => &connection.user,
            None => &self.last_named,
        }
    }

    /// The listener's address while a user is connected.
    #[cfg(test)]
    pub fn listener_addr(&self) -> Option<SocketAddr> {
        self.connected.as_ref().map(|c| c.listener.local_addr())
    }

    /// Runs one command.
    pub async fn execute(&mut self, command: Command) -> (Printed, Flow) {
        let notes = self.attend_session().await;
        let (mut printed, flow) = self.run_command(command).await;
        printed.err.splice(0..0, notes);
        (printed, flow)
    }

    async fn run_command(&mut self, command: Command) -> (Printed, Flow) {
        let printed = match command {
            Command::Register(user) => self.register(user).await,
            Command::Unregister(user) => self.unregister(user).await,
            Command::Connect(user) => self.connect(user).await,
            Command::Disconnect(user) => self.disconnect(user).await,
            Command::Publish { file, description } => self.publish(file, description).await,
            Command::Delete(file) => self.delete(file).await,
            Command::ListUsers => self.list_users().await,
            Command::ListContent(remote_user) => {
                let user = self.current_user().to_string();
                let operation = Operation::ListContent {
                    remote_user: Ok(remote_user),
                };
                self.simple(OpKind::ListContent, &user, operation).await.0
            }
            Command::GetFile {
                user,
                remote_file,
                local_file,
            } => {
                self.get_file(&user, &remote_file, Path::new(&local_file))
                    .await
            }
            Command::Share { dir, description } => self.share(&dir, description).await,
            Command::Search(pattern) => self.search(pattern).await,
            Command::Whois(user) => self.whois(user).await,
            Command::Passwd => self.passwd().await,
            Command::Help => Printed {
                out: help_lines(),
                ..Printed::default()
            },
            Command::Quit => return (self.shutdown().await, Flow::Quit),
        };
        (printed, Flow::Continue)
    }

    /// Leaves the shell: disconnects the connected user without printing on
    /// stdout (failures go to stderr) and stops the listener.
    pub async fn shutdown(&mut self) -> Printed {
        let Some(connection) = self.take_connection() else {
            return Printed::default();
        };
        let mut printed = Printed::default();
        let result = self.call(&connection.user, Operation::Disconnect).await;
        match result {
            Ok(Reply::Status(Outcome::Ok)) => {}
            Ok(reply) => {
                printed = printed.with_reason(format!(
                    "DISCONNECT of {} on exit: {}",
                    connection.user,
                    output::result_line(OpKind::Disconnect, reply.outcome())
                        .trim_start_matches(output::PROMPT)
                ))
            }
            Err(err) => {
                printed = printed.with_reason(format!(
                    "DISCONNECT of {} on exit failed: {err}",
                    connection.user
                ))
            }
        }
        connection.listener.stop().await;
        self.route.close().await;
        printed
    }

    /// Forgets the connection (the directory no longer lists the user).
    fn take_connection(&mut self) -> Option<Connection> {
        self.route.set_presence(None);
        self.connected.take()
    }

    /// Whether `user` is the shell's own user, whose session is held.
    fn is_own(&self, user: &str) -> bool {
        user == self.current_user()
    }

    async fn call(&self, user: &str, operation: Operation) -> Result<Reply, DirectoryError> {
        let request = request(user, operation);
        let datetime = self.config.time.now().await;
        self.route
            .call(self.is_own(user), &request, &datetime)
            .await
    }

    /// REGISTER: on a terminal, the new account's password is asked first
    /// (empty for none) and the session that registers logs in with it.
    async fn register(&mut self, user: String) -> Printed {
        self.last_named = user.clone();
        let fail =
            |reason: String| Printed::fail(output::fail_line(OpKind::Register)).with_reason(reason);
        // A server known to open no sessions would never see the password.
        let password = if self.route.sessions_possible() {
            match self.config.passwords.new_for_register(&user).await {
                Ok(password) => password,
                Err(err) => return fail(err.to_string()),
            }
        } else {
            None
        };
        let password = password.filter(|p| !p.is_empty());
        let protected = password.is_some();
        let result = match password {
            Some(password) => {
                let datetime = self.config.time.now().await;
                let request = request(&user, Operation::Register);
                self.route
                    .register_with(self.is_own(&user), &request, password, &datetime)
                    .await
            }
            None => self.call(&user, Operation::Register).await,
        };
        let (printed, reply) = reply_printed(OpKind::Register, result);
        let registered = reply.is_some_and(|r| r.outcome() == Outcome::Ok);
        if protected && registered && !self.route.sessions_possible() {
            return printed.with_reason(format!(
                "warning: the directory opens no sessions: {user} was registered without a password"
            ));
        }
        printed
    }

    /// Sends a request and prints its result line. Also returns the reply.
    async fn simple(
        &self,
        op: OpKind,
        user: &str,
        operation: Operation,
    ) -> (Printed, Option<Reply>) {
        let result = self.call(user, operation).await;
        reply_printed(op, result)
    }

    async fn unregister(&mut self, user: String) -> Printed {
        let (printed, reply) = self
            .simple(OpKind::Unregister, &user, Operation::Unregister)
            .await;
        if reply.is_some_and(|r| r.outcome() == Outcome::Ok) {
            let record = self.record_of(&user);
            self.forget_connection_of(&user).await;
            if let Err(err) = record.clear() {
                return printed.with_reason(format!(
                    "warning: cannot clear the record of {user}'s publications: {err}"
                ));
            }
        }
        printed
    }

    /// The record of what `user` published through peerdex from this
    /// share dir to this directory (the listener's, when connected).
    fn record_of(&self, user: &str) -> Arc<PublicationRecord> {
        match &self.connected {
            Some(connection) if connection.user == user => Arc::clone(&connection.record),
            _ => Arc::new(PublicationRecord::open(
                self.config.state_dir.as_deref(),
                &self.config.directory.key(),
                user,
                self.config.share.root(),
            )),
        }
    }

    /// Records that `user` published (`true`) or withdrew `name`; a record
    /// that cannot be written gives a warning for stderr.
    fn note_publication(&mut self, user: &str, name: &str, published: bool) -> Option<String> {
        let record = self.record_of(user);
        if let Some(connection) = self.connected.as_mut().filter(|c| c.user == user) {
            if published {
                connection.published_here.insert(name.to_string());
            } else {
                connection.published_here.remove(name);
            }
        }
        let result = if published {
            record.insert(name)
        } else {
            record.remove(name)
        };
        result.err().map(|err| {
            format!("warning: cannot record the publication of {name}: {err}; peers may not get it")
        })
    }

    async fn connect(&mut self, user: String) -> Printed {
        self.last_named = user.clone();
        if let Some(connection) = &self.connected {
            if connection.user != user {
                return Printed::fail(output::fail_line(OpKind::Connect)).with_reason(format!(
                    "already connected as {}; DISCONNECT first",
                    connection.user
                ));
            }
            // Same user again: the directory says whether it is connected.
            let listen = connection.listener.local_addr();
            let result = self.send_connect(&user, listen).await;
            return reply_printed(OpKind::Connect, result).0;
        }
        let bind = self.config.listen.unwrap_or(DEFAULT_LISTEN);
        // The listener serves what the user published through peerdex, in
        // this or an earlier shell: the durable record, never the directory.
        let record = self.record_of(&user);
        let share = self.config.share.clone();
        let hashes = Arc::clone(&self.hashes);
        let listener = match Listener::start(bind, share, Arc::clone(&record), hashes).await {
            Ok(listener) => listener,
            Err(err) => {
                return Printed::fail(output::fail_line(OpKind::Connect))
                    .with_reason(format!("cannot listen on {bind}: {err}"))
            }
        };
        let result = self.send_connect(&user, listener.local_addr()).await;
        let (mut printed, reply) = reply_printed(OpKind::Connect, result);
        if reply.is_some_and(|r| r.outcome() == Outcome::Ok) {
            if let Some(warning) = self.settle_connect_form(&user, listener.local_addr()).await {
                printed = printed.with_reason(warning);
            }
            self.route
                .set_presence(Some((user.clone(), listener.local_addr())));
            self.connected = Some(Connection {
                user,
                listener,
                record,
                published_here: HashSet::new(),
            });
            if let Some(dir) = self.config.auto_share.clone() {
                let shared = self.share(&dir, None).await;
                let mut printed = printed;
                printed.out.extend(shared.out);
                printed.err.extend(shared.err);
                return printed;
            }
        } else {
            listener.stop().await;
        }
        printed
    }

    async fn disconnect(&mut self, user: String) -> Printed {
        let (printed, reply) = self
            .simple(OpKind::Disconnect, &user, Operation::Disconnect)
            .await;
        // Whatever the directory knew, it no longer has this user connected.
        if matches!(
            reply.map(|r| r.outcome()),
            Some(Outcome::Ok | Outcome::UserNotConnected | Outcome::UserDoesNotExist)
        ) {
            self.forget_connection_of(&user).await;
        }
        printed
    }

    /// Stops the listener if `user` is the one connected through this shell.
    async fn forget_connection_of(&mut self, user: &str) {
        if self.connected.as_ref().is_some_and(|c| c.user == user) {
            if let Some(connection) = self.take_connection() {
                connection.listener.stop().await;
            }
        }
    }

    async fn list_users(&mut self) -> Printed {
        let user = self.current_user().to_string();
        let (printed, reply) = self
            .simple(OpKind::ListUsers, &user, Operation::ListUsers)
            .await;
        if let Some(Reply::Users(users)) = reply {
            self.remember_users(&users);
        }
        printed
    }

    /// Keeps the addresses and names of a LIST_USERS reply.
    fn remember_users(&mut self, users: &[UserEntry]) {
        self.peers = users
            .iter()
            .filter_map(|u| {
                let port = u.port.trim().parse::<u16>().ok()?;
                let addr = PeerAddr {
                    host: u.ip.clone(),
                    port,
                };
                Some((u.name.clone(), addr))
            })
            .collect();
        let mut known = self
            .known_users
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *known = users.iter().map(|u| u.name.clone()).collect();
    }
}

fn request(user: &str, operation: Operation) -> Request {
    Request {
        datetime: None,
        user: Ok(user.to_string()),
        operation,
    }
}

/// The lines of a directory reply, or the FAIL line and the reason.
fn reply_printed(op: OpKind, result: Result<Reply, DirectoryError>) -> (Printed, Option<Reply>) {
    match result {
        Ok(reply) => {
            let mut printed =
                Printed::outcome(output::result_line(op, reply.outcome()), reply.outcome());
            match &reply {
                Reply::Users(users) => printed.out.extend(output::user_lines(users)),
                Reply::Content(files) => printed.out.extend(output::content_lines(files)),
                // Extension replies are printed by their own commands.
                Reply::Status(_) | Reply::Search(_) | Reply::Sources(_) | Reply::Whois(_) => {}
            }
            (printed, Some(reply))
        }
        Err(err) => (Printed::fail(output::fail_line(op)).with_reason(err), None),
    }
}

#[cfg(test)]
mod testing;

#[cfg(test)]
mod tests {
    use super::testing::{code, run, session_for, session_in, FakeDirectory};
    use super::*;
    use peerdex_protocol::reply::{put_code, put_content_entry, put_count};
    use std::fs;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn current_user_follows_register_and_connect() {
        let directory = FakeDirectory::start(|request, _| match request.operation {
            Operation::Connect(_) => code(1),
            _ => code(2),
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let mut session = directory.session(dir.path());
        assert_eq!(session.current_user(), "");
        run(&mut session, "LIST_USERS").await;
        run(&mut session, "REGISTER al").await;
        run(&mut session, "LIST_USERS").await;
        let printed = run(&mut session, "CONNECT bo").await;
        assert_eq!(printed.out, ["c> CONNECT FAIL, USER DOES NOT EXIST"]);
        assert_eq!(session.listener_addr(), None, "listener stopped");
        run(&mut session, "DELETE f").await;
        let users: Vec<String> = directory
            .requests()
            .into_iter()
            .map(|r| r.user.unwrap())
            .collect();
        assert_eq!(users, ["", "al", "al", "bo", "bo"]);
    }

    /// Sends a raw GET_FILE to a listener and returns its whole answer.
    async fn raw_get_file(addr: SocketAddr, name: &str) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET_FILE\0{name}\0");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await.unwrap();
        reply
    }

    /// A directory that accepts everything and lists `raw.bin` (published
    /// by someone else with a raw client) as alice's.
    async fn lenient_directory() -> FakeDirectory {
        FakeDirectory::start(|request, _| {
            let mut out = bytes::BytesMut::new();
            if let Operation::FindSources { .. } = request.operation {
                put_code(&mut out, 3);
                return out;
            }
            put_code(&mut out, 0);
            if let Operation::ListContent { .. } = request.operation {
                put_count(&mut out, 2);
                put_content_entry(&mut out, "raw.bin", "not from alice's shell").unwrap();
                put_content_entry(&mut out, "old.bin", "from before").unwrap();
            }
            if let Operation::ListUsers = request.operation {
                put_count(&mut out, 0);
            }
            out
        })
        .await
    }

    #[tokio::test]
    async fn earlier_publications_are_served_from_the_durable_record() {
        let directory = lenient_directory().await;
        let shared = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        for name in ["old.bin", "raw.bin", "new.bin"] {
            fs::write(shared.path().join(name), format!("<{name}>")).unwrap();
        }
        let mut first = session_in(directory.port(), shared.path(), state.path());
        run(&mut first, "CONNECT alice").await;
        assert_eq!(
            run(&mut first, "PUBLISH old.bin d").await.out,
            ["c> PUBLISH OK"]
        );
        first.execute(Command::Quit).await;

        // A new shell, same state dir: old.bin is served without asking.
        let mut alice = session_in(directory.port(), shared.path(), state.path());
        assert_eq!(
            run(&mut alice, "CONNECT alice").await.out,
            ["c> CONNECT OK"]
        );
        let listen = alice.listener_addr().unwrap();
        assert_eq!(raw_get_file(listen, "old.bin").await, b"0\0<old.bin>");
        // The directory lists raw.bin as alice's: not served all the same.
        assert_eq!(raw_get_file(listen, "raw.bin").await, b"1\0");
        assert_eq!(raw_get_file(listen, "missing.bin").await, b"1\0");
        let ops: Vec<OpKind> = directory
            .requests()
            .iter()
            .map(|r| r.operation.kind())
            .collect();
        assert!(!ops.contains(&OpKind::ListContent), "{ops:?}");

        assert_eq!(
            run(&mut alice, "DELETE old.bin").await.out,
            ["c> DELETE OK"]
        );
        assert_eq!(raw_get_file(listen, "old.bin").await, b"1\0");
        assert_eq!(
            run(&mut alice, "PUBLISH new.bin d").await.out,
            ["c> PUBLISH OK"]
        );
        assert_eq!(raw_get_file(listen, "new.bin").await, b"0\0<new.bin>");
        alice.execute(Command::Quit).await;

        // Another user of the same state dir and share has its own record.
        let mut bob = session_in(directory.port(), shared.path(), state.path());
        run(&mut bob, "CONNECT bob").await;
        let listen = bob.listener_addr().unwrap();
        assert_eq!(raw_get_file(listen, "new.bin").await, b"1\0");
        bob.execute(Command::Quit).await;
    }

    #[tokio::test]
    async fn unregister_clears_the_record() {
        let directory = lenient_directory().await;
        let shared = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        fs::write(shared.path().join("a.bin"), b"a").unwrap();
        let mut alice = session_in(directory.port(), shared.path(), state.path());
        run(&mut alice, "REGISTER alice").await;
        run(&mut alice, "PUBLISH a.bin d").await;
        assert_eq!(
            run(&mut alice, "UNREGISTER alice").await.out,
            ["c> UNREGISTER OK"]
        );
        run(&mut alice, "CONNECT alice").await;
        let listen = alice.listener_addr().unwrap();
        assert_eq!(raw_get_file(listen, "a.bin").await, b"1\0");
        alice.execute(Command::Quit).await;
    }

    #[tokio::test]
    async fn unreachable_directory_prints_plain_fail_lines() {
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let dir = tempfile::tempdir().unwrap();
        let mut session = session_for(port, dir.path());
        for (line, expected) in [
            ("REGISTER a", "c> REGISTER FAIL"),
            ("UNREGISTER a", "c> UNREGISTER FAIL"),
            ("CONNECT a", "c> CONNECT FAIL"),
            ("DISCONNECT a", "c> DISCONNECT FAIL"),
            ("PUBLISH f d", "c> PUBLISH FAIL"),
            ("DELETE f", "c> DELETE FAIL"),
            ("LIST_USERS", "c> LIST_USERS FAIL"),
            ("LIST_CONTENT a", "c> LIST_CONTENT FAIL"),
            ("GET_FILE a f out", "c> GET_FILE FAIL"),
            ("SEARCH f", "c> SEARCH FAIL"),
        ] {
            let printed = run(&mut session, line).await;
            assert_eq!(printed.out, [expected], "{line}");
            let reason = printed.err.last().unwrap();
            assert!(reason.contains("connection refused"), "{line}: {reason}");
        }
        assert_eq!(session.listener_addr(), None);
    }
}
