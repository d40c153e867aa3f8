//! The shell's state and the execution of its commands.
//!
//! [`Session::execute`] runs one [`Command`] and returns what it prints: the
//! contract lines for stdout and short reasons for stderr. It never prints
//! itself, so the shell decides where lines go and tests can check them.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use peerdex_protocol::{OpKind, Operation, Outcome, Reply, Request, UserEntry};

mod connect_form;
mod ext;

use crate::content::cache::HashCache;
use crate::content::pieces::Manifest;
use crate::content::Identity;
use crate::directory_client::{DirectoryClient, DirectoryError};
use crate::directory_ext_client::ExtDirectory;
use crate::peer::fetch::{fetch, FetchError, FetchOptions, Fetched};
use crate::peer::listener::Listener;
use crate::peer::published::DirectoryCheck;
use crate::peer::share::ShareDir;
use crate::peer::PeerAddr;
use crate::server_profiles::ServerProfile;
use crate::shell::command::{help_lines, Command};
use crate::shell::output::{self, GetFileResult};
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
    /// The same directory for extension ops, remembering whether it has them.
    ext: ExtDirectory,
}

impl Session {
    pub fn new(config: SessionConfig, known_users: Arc<Mutex<Vec<String>>>) -> Self {
        let hashes = Arc::new(HashCache::for_share(config.share.root()));
        Self {
            hashes,
            ext: ExtDirectory::with_profile(config.directory.clone(), config.profile.clone()),
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
    pub fn listener_addr(&self) -> Option<SocketAddr> {
        self.connected.as_ref().map(|c| c.listener.local_addr())
    }

    /// Runs one command.
    pub async fn execute(&mut self, command: Command) -> (Printed, Flow) {
        let printed = match command {
            Command::Register(user) => {
                self.last_named = user.clone();
                self.simple(OpKind::Register, &user, Operation::Register)
                    .await
                    .0
            }
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
        let Some(connection) = self.connected.take() else {
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
        printed
    }

    async fn call(&self, user: &str, operation: Operation) -> Result<Reply, DirectoryError> {
        let request = request(user, operation);
        let datetime = self.config.time.now().await;
        self.config.directory.call(&request, &datetime).await
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
            self.forget_connection_of(&user).await;
        }
        printed
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
        // What the user published in earlier sessions is asked of the
        // directory when a peer wants it, not listed here: the user sees in
        // the logger only the operations typed.
        let check = DirectoryCheck::new(
            self.config.directory.clone(),
            self.config.time.clone(),
            user.clone(),
        );
        let share = self.config.share.clone();
        let hashes = Arc::clone(&self.hashes);
        let listener = match Listener::start_with_cache(bind, share, Some(check), hashes).await {
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
            self.connected = Some(Connection { user, listener });
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
            if let Some(connection) = self.connected.take() {
                connection.listener.stop().await;
            }
        }
    }

    async fn publish(&mut self, file: String, description: String) -> Printed {
        let mut warning = None;
        let mut identity = None;
        if let Err(err) = self.config.share.resolve(&file) {
            warning = Some(format!(
                "warning: {file} is not servable from {} ({err}); peers will get FILE NOT EXIST",
                self.config.share.root().display()
            ));
        } else {
            match self.hash(&file).await {
                Ok(manifest) => {
                    identity = Some(Identity {
                        size: manifest.size,
                        root: manifest.root,
                    })
                }
                // Served all the same; peers fall back or hash on request.
                Err(err) => warning = Some(format!("warning: cannot hash {file}: {err}")),
            }
        }
        let user = self.current_user().to_string();
        let result = self
            .send_publish(&user, &file, &description, identity)
            .await;
        let (mut printed, reply) = reply_printed(OpKind::Publish, result);
        if let Some(warning) = warning {
            printed.err.insert(0, format!("peerdex: {warning}"));
        }
        // ALREADY PUBLISHED: by this user, earlier; served all the same.
        if reply
            .is_some_and(|r| matches!(r.outcome(), Outcome::Ok | Outcome::ContentAlreadyPublished))
        {
            if let Some(connection) = &self.connected {
                connection.listener.publish(&file);
            }
        }
        printed
    }

    async fn delete(&mut self, file: String) -> Printed {
        let user = self.current_user().to_string();
        let operation = Operation::Delete {
            file: Ok(file.clone()),
        };
        let (printed, reply) = self.simple(OpKind::Delete, &user, operation).await;
        // NOT PUBLISHED: the directory says so; no need to ask it again.
        if reply.is_some_and(|r| matches!(r.outcome(), Outcome::Ok | Outcome::ContentNotPublished))
        {
            if let Some(connection) = &self.connected {
                connection.listener.unpublish(&file);
            }
        }
        printed
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

    /// Computes (or finds in the cache) the hashes of a share dir file, so
    /// that peers get them at once. A bar on a terminal for big files.
    async fn hash(&self, name: &str) -> std::io::Result<Arc<Manifest>> {
        let share = self.config.share.clone();
        let hashes = Arc::clone(&self.hashes);
        let progress = self.config.progress;
        let name = name.to_string();
        tokio::task::spawn_blocking(move || {
            let (file, path) = share
                .open_with_path(&name)
                .map_err(|err| std::io::Error::other(err.to_string()))?;
            if let Some(manifest) = hashes.cached(&path, &file)? {
                return Ok(manifest);
            }
            let bar = (progress && file.metadata()?.len() >= HASH_BAR_MIN).then(|| {
                let bar = indicatif::ProgressBar::with_draw_target(
                    Some(file.metadata().map_or(0, |m| m.len())),
                    indicatif::ProgressDrawTarget::stderr(),
                );
                if let Ok(style) = indicatif::ProgressStyle::with_template(
                    "hashing {msg} {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
                ) {
                    bar.set_style(style);
                }
                bar.set_message(name.clone());
                bar
            });
            let result = hashes.manifest(&path, &file, |done, _| {
                if let Some(bar) = &bar {
                    bar.set_position(done);
                }
            });
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            result
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// `SHARE <dir> [description]`: publishes every eligible file under a
    /// directory of the share dir (see [`crate::shell::share`]).
    async fn share(&mut self, dir: &str, description: Option<String>) -> Printed {
        let fail = |reason: String| Printed::fail(output::share_fail_line()).with_reason(reason);
        let Some(connection) = &self.connected else {
            return fail("not connected through this shell; CONNECT first".into());
        };
        let user = connection.user.clone();
        let share = self.config.share.clone();
        let owned = dir.to_string();
        let walked = tokio::task::spawn_blocking(move || crate::shell::share::walk(&share, &owned))
            .await
            .map_err(|err| err.to_string())
            .and_then(|walked| walked.map_err(|err| err.to_string()));
        let walk = match walked {
            Ok(walk) => walk,
            Err(reason) => return fail(format!("cannot share {dir}: {reason}")),
        };
        let mut printed = Printed::default();
        let mut skipped = walk.skipped.len();
        for (name, why) in &walk.skipped {
            printed
                .err
                .push(format!("peerdex: SHARE skips {name}: {why}"));
        }
        let mut published = 0;
        for name in walk.files {
            if self
                .connected
                .as_ref()
                .is_some_and(|c| c.listener.is_published_here(&name))
            {
                skipped += 1;
                continue;
            }
            let identity = match self.hash(&name).await {
                Ok(manifest) => Some(Identity {
                    size: manifest.size,
                    root: manifest.root,
                }),
                Err(err) => {
                    printed
                        .err
                        .push(format!("peerdex: warning: cannot hash {name}: {err}"));
                    None
                }
            };
            let description = description.clone().unwrap_or_else(|| name.clone());
            match self
                .send_publish(&user, &name, &description, identity)
                .await
            {
                Ok(reply) => match reply.outcome() {
                    outcome @ (Outcome::Ok | Outcome::ContentAlreadyPublished) => {
                        if let Some(connection) = &self.connected {
                            connection.listener.publish(&name);
                        }
                        if outcome == Outcome::Ok {
                            published += 1;
                        } else {
                            skipped += 1;
                        }
                    }
                    outcome => {
                        skipped += 1;
                        printed.err.push(format!(
                            "peerdex: SHARE skips {name}: {}",
                            output::result_line(OpKind::Publish, outcome)
                                .trim_start_matches(output::PROMPT)
                        ));
                    }
                },
                Err(err) => {
                    let mut failed = fail(format!(
                        "the directory failed after {published} published: {err}"
                    ));
                    failed.err.splice(0..0, printed.err);
                    return failed;
                }
            }
        }
        printed.out.push(output::share_ok_line(published, skipped));
        printed
    }

    async fn get_file(&mut self, user: &str, remote_file: &str, local_file: &Path) -> Printed {
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
        let sources = |addr: Option<PeerAddr>| {
            ext::sources_with(addr.map(|a| (a, remote_file)), &plan.others)
        };
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
}

/// Files smaller than this are hashed without a progress bar.
const HASH_BAR_MIN: u64 = 64 << 20;

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
                Reply::Status(_) | Reply::Search(_) | Reply::Sources(_) => {}
            }
            (printed, Some(reply))
        }
        Err(err) => (Printed::fail(output::fail_line(op)).with_reason(err), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerdex_protocol::reply::{put_code, put_content_entry, put_count, put_user_entry};
    use peerdex_protocol::wire::{field_reader, read_request, RequestRead};
    use std::fs;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// A fake directory: answers each request with `answer(request)` and
    /// records the requests.
    struct FakeDirectory {
        port: u16,
        requests: Arc<Mutex<Vec<Request>>>,
    }

    impl FakeDirectory {
        async fn start(
            answer: impl Fn(&Request, SocketAddr) -> bytes::BytesMut + Send + Sync + 'static,
        ) -> Self {
            let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = socket.local_addr().unwrap().port();
            let requests = Arc::new(Mutex::new(Vec::new()));
            let seen = Arc::clone(&requests);
            let answer = Arc::new(answer);
            tokio::spawn(async move {
                loop {
                    let (mut sock, source) = socket.accept().await.unwrap();
                    let mut reader = field_reader(&mut sock);
                    let Ok(RequestRead::Request(request)) = read_request(&mut reader).await else {
                        continue;
                    };
                    let reply = answer(&request, source);
                    seen.lock().unwrap().push(request);
                    sock.write_all(&reply).await.unwrap();
                }
            });
            Self { port, requests }
        }

        fn requests(&self) -> Vec<Request> {
            self.requests.lock().unwrap().clone()
        }

        fn session(&self, share: &Path) -> Session {
            session_for(self.port, share)
        }
    }

    fn session_for(port: u16, share: &Path) -> Session {
        let directory = DirectoryClient::new("127.0.0.1", port);
        let config = SessionConfig {
            profile: ServerProfile::in_memory(&directory.key()),
            directory,
            time: TimeSource::local(),
            share: ShareDir::new(share).unwrap(),
            listen: Some("127.0.0.1:0".parse().unwrap()),
            progress: false,
            auto_share: None,
        };
        Session::new(config, Arc::new(Mutex::new(Vec::new())))
    }

    fn code(code: u8) -> bytes::BytesMut {
        let mut out = bytes::BytesMut::new();
        put_code(&mut out, code);
        out
    }

    async fn run(session: &mut Session, line: &str) -> Printed {
        let command = crate::shell::command::parse(line).unwrap().unwrap();
        session.execute(command).await.0
    }

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

    #[tokio::test]
    async fn earlier_publications_are_asked_of_the_directory_when_needed() {
        // The directory lists what alice published in an earlier session.
        let directory = FakeDirectory::start(|request, _| {
            let mut out = bytes::BytesMut::new();
            if let Operation::FindSources { .. } = request.operation {
                // The extension probe: nothing known about that content.
                put_code(&mut out, 3);
                return out;
            }
            put_code(&mut out, 0);
            if let Operation::ListContent { .. } = request.operation {
                put_count(&mut out, 2);
                put_content_entry(&mut out, "old.bin", "from before").unwrap();
                put_content_entry(&mut out, "dropped.bin", "deleted now").unwrap();
            }
            out
        })
        .await;
        let shared = tempfile::tempdir().unwrap();
        for name in ["old.bin", "stray.bin", "dropped.bin", "new.bin"] {
            fs::write(shared.path().join(name), format!("<{name}>")).unwrap();
        }
        let mut alice = directory.session(shared.path());
        assert_eq!(
            run(&mut alice, "CONNECT alice").await.out,
            ["c> CONNECT OK"]
        );
        let ops = |directory: &FakeDirectory| -> Vec<OpKind> {
            directory
                .requests()
                .iter()
                .map(|r| r.operation.kind())
                .collect()
        };
        // CONNECT lists nothing of earlier sessions; the directory's kind
        // being unknown, one read-only probe follows it (once per server).
        assert_eq!(
            ops(&directory),
            [OpKind::Connect, OpKind::FindSources],
            "CONNECT sends only CONNECT and the probe"
        );
        let listen = alice.listener_addr().unwrap();

        // A burst of requests for names the shell does not know: one query.
        let burst = ["old.bin", "stray.bin", "old.bin", "stray.bin"].repeat(4);
        let replies =
            futures::future::join_all(burst.iter().map(|name| raw_get_file(listen, name))).await;
        for (name, reply) in burst.iter().zip(replies) {
            let expected = match *name {
                "old.bin" => b"0\0<old.bin>".to_vec(),
                _ => b"1\0".to_vec(),
            };
            assert_eq!(reply, expected, "{name}");
        }
        let requests = directory.requests();
        assert_eq!(
            ops(&directory),
            [OpKind::Connect, OpKind::FindSources, OpKind::ListContent]
        );
        let query = &requests[2];
        assert_eq!(query.user, Ok("alice".into()));
        assert_eq!(
            query.operation,
            Operation::ListContent {
                remote_user: Ok("alice".into())
            }
        );
        assert!(query
            .datetime
            .as_deref()
            .is_some_and(peerdex_protocol::datetime::is_datetime));

        // Still known (cached), deleted or published here, or not in the
        // share dir: nobody asks the directory.
        assert_eq!(raw_get_file(listen, "stray.bin").await, b"1\0");
        assert_eq!(
            raw_get_file(listen, "dropped.bin").await,
            b"0\0<dropped.bin>"
        );
        assert_eq!(
            run(&mut alice, "DELETE dropped.bin").await.out,
            ["c> DELETE OK"]
        );
        assert_eq!(raw_get_file(listen, "dropped.bin").await, b"1\0");
        assert_eq!(
            run(&mut alice, "PUBLISH new.bin d").await.out,
            ["c> PUBLISH OK"]
        );
        assert_eq!(raw_get_file(listen, "new.bin").await, b"0\0<new.bin>");
        assert_eq!(raw_get_file(listen, "missing.bin").await, b"1\0");
        assert_eq!(
            ops(&directory),
            [
                OpKind::Connect,
                OpKind::FindSources,
                OpKind::ListContent,
                OpKind::Delete,
                // The file is in the share dir: published with its identity.
                OpKind::PublishContent
            ]
        );
        alice.execute(Command::Quit).await;
    }

    #[tokio::test]
    async fn a_silent_directory_means_not_published() {
        // Answers CONNECT, then never answers anything else.
        let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = socket.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let (mut sock, _) = socket.accept().await.unwrap();
                let mut reader = field_reader(&mut sock);
                let Ok(RequestRead::Request(request)) = read_request(&mut reader).await else {
                    continue;
                };
                if let Operation::Connect(_) = request.operation {
                    sock.write_all(b"0\0").await.unwrap();
                } else {
                    held.push(sock);
                }
            }
        });
        let shared = tempfile::tempdir().unwrap();
        fs::write(shared.path().join("old.bin"), b"old").unwrap();
        let mut alice = session_for(port, shared.path());
        assert_eq!(
            run(&mut alice, "CONNECT alice").await.out,
            ["c> CONNECT OK"]
        );
        let listen = alice.listener_addr().unwrap();
        let started = std::time::Instant::now();
        assert_eq!(raw_get_file(listen, "old.bin").await, b"1\0");
        let waited = started.elapsed();
        assert!(
            waited >= crate::peer::published::QUERY_TIMEOUT
                && waited < crate::peer::published::QUERY_TIMEOUT * 2,
            "{waited:?}"
        );
        // The failure is remembered for a moment: no second wait.
        let started = std::time::Instant::now();
        assert_eq!(raw_get_file(listen, "old.bin").await, b"1\0");
        assert!(started.elapsed() < crate::peer::published::QUERY_TIMEOUT);
    }

    /// A classic directory: closes the connection without a reply on the
    /// extension ops, answers 0 to the rest.
    async fn classic_directory() -> FakeDirectory {
        FakeDirectory::start(|request, _| {
            if request.operation.kind().is_extension() {
                bytes::BytesMut::new()
            } else {
                code(0)
            }
        })
        .await
    }

    #[tokio::test]
    async fn publish_sends_the_content_identity_when_the_directory_has_it() {
        let directory = FakeDirectory::start(|request, _| match request.operation {
            Operation::FindSources { .. } => code(3),
            _ => code(0),
        })
        .await;
        let shared = tempfile::tempdir().unwrap();
        fs::write(shared.path().join("a.txt"), b"hello").unwrap();
        let mut al = directory.session(shared.path());
        run(&mut al, "REGISTER al").await;
        let printed = run(&mut al, "PUBLISH a.txt the a file").await;
        assert_eq!(printed.out, ["c> PUBLISH OK"]);
        // Not in the share dir: classic PUBLISH with its warning, as before.
        let printed = run(&mut al, "PUBLISH ghost.txt g").await;
        assert_eq!(printed.out, ["c> PUBLISH OK"]);
        assert_eq!(printed.err.len(), 1);
        let ops: Vec<Operation> = directory
            .requests()
            .into_iter()
            .map(|r| r.operation)
            .collect();
        // A read-only probe first: the directory's kind was unknown.
        assert_eq!(ops[1].kind(), OpKind::FindSources);
        assert_eq!(
            ops[2],
            Operation::PublishContent {
                file: Ok("a.txt".into()),
                description: Ok("the a file".into()),
                size: Ok(5),
                hash: Ok(*blake3::hash(b"hello").as_bytes()),
            }
        );
        assert_eq!(ops[3].kind(), OpKind::Publish);
    }

    #[tokio::test]
    async fn a_classic_directory_gets_classic_ops_and_search_fails() {
        let directory = classic_directory().await;
        let shared = tempfile::tempdir().unwrap();
        fs::write(shared.path().join("a.txt"), b"hello").unwrap();
        fs::write(shared.path().join("b.txt"), b"bye").unwrap();
        let mut al = directory.session(shared.path());
        run(&mut al, "REGISTER al").await;
        assert_eq!(run(&mut al, "PUBLISH a.txt a").await.out, ["c> PUBLISH OK"]);
        assert_eq!(run(&mut al, "PUBLISH b.txt b").await.out, ["c> PUBLISH OK"]);
        let searched = run(&mut al, "SEARCH a").await;
        assert_eq!(searched.out, ["c> SEARCH FAIL"]);
        assert_eq!(searched.err, ["peerdex: directory does not support SEARCH"]);
        let ops: Vec<OpKind> = directory
            .requests()
            .iter()
            .map(|r| r.operation.kind())
            .collect();
        // One read-only extension probe refused (never the mutation
        // itself), then never an extension op again.
        assert_eq!(
            ops,
            [
                OpKind::Register,
                OpKind::FindSources,
                OpKind::Publish,
                OpKind::Publish
            ]
        );
    }

    #[tokio::test]
    async fn search_prints_counts_and_codes_for_the_current_user() {
        use peerdex_protocol::reply::{put_search_entry, SearchEntry};
        let directory = FakeDirectory::start(|request, _| {
            let mut out = bytes::BytesMut::new();
            match request.user.as_deref() {
                Ok("al") => {
                    put_code(&mut out, 0);
                    put_count(&mut out, 3);
                    put_count(&mut out, 1);
                    let entry = SearchEntry {
                        owner: "bo".into(),
                        file: "f12.bin".into(),
                        description: "twelve".into(),
                        size: Some(12),
                        hash: None,
                        connected: true,
                    };
                    put_search_entry(&mut out, &entry).unwrap();
                }
                Ok("") => put_code(&mut out, 1),
                _ => put_code(&mut out, 2),
            }
            out
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let mut session = directory.session(dir.path());
        assert_eq!(
            run(&mut session, "SEARCH f12").await.out,
            ["c> SEARCH FAIL, USER DOES NOT EXIST"]
        );
        run(&mut session, "REGISTER bo").await;
        assert_eq!(
            run(&mut session, "SEARCH f12").await.out,
            ["c> SEARCH FAIL, USER NOT CONNECTED"]
        );
        run(&mut session, "REGISTER al").await;
        assert_eq!(
            run(&mut session, "SEARCH f12").await.out,
            ["c> SEARCH OK 1 of 3", "\tbo f12.bin 12 - online twelve"]
        );
        let last = directory.requests().pop().unwrap();
        assert_eq!(
            last.operation,
            Operation::Search {
                pattern: Ok("f12".into()),
                limit: Ok(crate::shell::command::SEARCH_LIMIT)
            }
        );
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
