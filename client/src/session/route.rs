//! How the shell's requests reach the directory: through a session of the
//! user they act for, or on classic connections.
//!
//! A server known as peerdex, or of unknown kind, is offered a session
//! ([`SessionLink`]) for the user a request names; a server of unknown
//! kind has [`PROBE_BUDGET`] to start answering, like the extension probe.
//! A close, silence or anything that is not a login reply means classic:
//! remembered in the [`ServerProfile`], and every request goes through
//! [`DirectoryClient`] as before. Requests naming nobody yet (a fresh
//! shell's LIST_USERS) go classic.
//!
//! The shell's own user (the one connected, else the last named) has the
//! *held* session, kept open across commands: it holds the user's
//! presence. A request naming anyone else gets a session of its own,
//! closed after its reply.

use std::net::SocketAddr;
use std::sync::Arc;

use peerdex_protocol::frame::FrameError;
use peerdex_protocol::{Operation, Reply, Request, Secret};
use tokio::sync::mpsc;

use super::reconnect::Opener;
use crate::directory_client::{DirectoryClient, DirectoryError};
use crate::directory_ext_client::{ExtDirectory, ExtError};
use crate::directory_session::{CallError, OpenError, SessionEvent, SessionLink};
use crate::passwords::Passwords;
use crate::server_profiles::{Extensions, ServerProfile, Sessions};
use crate::time_source::TimeSource;

/// Which way one request goes.
enum Via {
    Classic,
    Held(Arc<SessionLink>),
    /// A session for this request only.
    Once(SessionLink),
}

/// The shell's way to the directory.
pub(crate) struct Route {
    directory: DirectoryClient,
    ext: ExtDirectory,
    /// Opens sessions and keeps the held one.
    opener: Opener,
}

impl Drop for Route {
    fn drop(&mut self) {
        self.opener
            .stopped
            .store(true, std::sync::atomic::Ordering::Relaxed);
        // Ends the held session (its watcher then ends too).
        if let Ok(mut held) = self.opener.held.try_lock() {
            held.take();
        }
    }
}

impl Route {
    pub(crate) fn new(
        directory: DirectoryClient,
        profile: ServerProfile,
        passwords: Arc<Passwords>,
        time: TimeSource,
    ) -> Self {
        let opener = Opener::new(
            directory.host().to_string(),
            directory.port(),
            directory.addr(),
            profile.clone(),
            passwords,
            time,
        );
        Self {
            ext: ExtDirectory::with_profile(directory.clone(), profile),
            directory,
            opener,
        }
    }

    /// Records the user connected through the shell (restored sessions
    /// CONNECT it again), or that none is.
    pub(crate) fn set_presence(&self, presence: Option<(String, SocketAddr)>) {
        self.opener.set_presence(presence);
    }

    /// Restores a lost held session now; returns the lines noted for
    /// stderr since the last call (losses, restores).
    pub(crate) async fn restore(&self) -> Vec<String> {
        self.opener.restore().await;
        self.opener.take_notices()
    }

    pub(crate) fn ext(&self) -> &ExtDirectory {
        &self.ext
    }

    /// Whether sessions may be tried with this server.
    pub(crate) fn sessions_possible(&self) -> bool {
        let profile = self.opener.profile.get();
        let now = crate::server_profiles::now_secs();
        profile.extensions_now(now) != Extensions::Classic
            && profile.sessions_now(now) != Sessions::No
    }

    /// Sends `request` (acting for its user) and reads the reply; `own`
    /// when that user is the shell's own (the held session).
    pub(crate) async fn call(
        &self,
        own: bool,
        request: &Request,
        datetime: &str,
    ) -> Result<Reply, DirectoryError> {
        self.call_with(own, &|_| request.clone(), datetime).await
    }

    /// Like [`Self::call`], the request built from the local address of
    /// the connection that carries it (CONNECT's IP).
    pub(crate) async fn call_with(
        &self,
        own: bool,
        build: &(dyn Fn(SocketAddr) -> Request + Sync),
        datetime: &str,
    ) -> Result<Reply, DirectoryError> {
        let probe = build(SocketAddr::from(([0, 0, 0, 0], 0)));
        let user = request_user(&probe);
        match self.via_for(&user, own, &probe).await? {
            Via::Classic => self.directory.call_with(build, datetime).await,
            Via::Held(link) => self.call_on(&link, build, datetime).await,
            Via::Once(link) => {
                let result = self.call_on(&link, build, datetime).await;
                link.close().await;
                result
            }
        }
    }

    /// A request only a session may carry (SET_PASSWORD: a password is
    /// never sent on a classic connection).
    pub(crate) async fn session_call(
        &self,
        own: bool,
        request: &Request,
        datetime: &str,
    ) -> Result<Reply, DirectoryError> {
        let user = request_user(request);
        match self.via(&user, own, None).await? {
            Via::Classic => Err(DirectoryError::NoSessions {
                addr: self.directory.addr(),
            }),
            Via::Held(link) => self.call_on(&link, &|_| request.clone(), datetime).await,
            Via::Once(link) => {
                let result = self.call_on(&link, &|_| request.clone(), datetime).await;
                link.close().await;
                result
            }
        }
    }

    /// An extension request: in the session when there is one (the server
    /// is peerdex), else through the extension client's probing.
    pub(crate) async fn ext_call(
        &self,
        own: bool,
        request: &Request,
        datetime: &str,
    ) -> Result<Reply, ExtError> {
        let user = request_user(request);
        match self.via_for(&user, own, request).await? {
            Via::Classic => self.ext.call(request, datetime).await,
            Via::Held(link) => Ok(self.call_on(&link, &|_| request.clone(), datetime).await?),
            Via::Once(link) => {
                let result = self.call_on(&link, &|_| request.clone(), datetime).await;
                link.close().await;
                Ok(result?)
            }
        }
    }

    /// Sends a REGISTER of `user` in a session logged in with `password`
    /// (a new account protected by it): a fresh session, held when `own`.
    /// Classic when the server has no sessions (the password is unused).
    pub(crate) async fn register_with(
        &self,
        own: bool,
        request: &Request,
        password: Secret,
        datetime: &str,
    ) -> Result<Reply, DirectoryError> {
        let user = request_user(request);
        match self.via(&user, own, Some(password)).await? {
            Via::Classic => self.directory.call(request, datetime).await,
            Via::Held(link) => self.call_on(&link, &|_| request.clone(), datetime).await,
            Via::Once(link) => {
                let result = self.call_on(&link, &|_| request.clone(), datetime).await;
                link.close().await;
                result
            }
        }
    }

    /// The held session's user, and whether it is alive.
    #[cfg(test)]
    pub(crate) async fn held_state(&self) -> Option<(String, bool)> {
        let held = self.opener.held.lock().await;
        held.as_ref()
            .map(|h| (h.link.user().to_string(), h.link.is_alive()))
    }

    /// Events of the held session not yet seen.
    pub(crate) async fn events(&self) -> Vec<SessionEvent> {
        let mut held = self.opener.held.lock().await;
        let mut events = Vec::new();
        if let Some(held) = held.as_mut() {
            while let Ok(event) = held.events.try_recv() {
                events.push(event);
            }
        }
        events
    }

    /// Drops the held session (it no longer acts for its account).
    pub(crate) async fn forget(&self) {
        self.opener.held.lock().await.take();
    }

    /// Ends the held session politely (QUIT).
    pub(crate) async fn close(&self) {
        if let Some(held) = self.opener.held.lock().await.take() {
            held.link.close().await;
        }
    }

    /// Picks the way for a request acting for `user`, opening a session
    /// when one is due. `password`: log in with it (a REGISTER's new
    /// password) in a fresh session.
    /// [`Self::via`] for `request`: a read whose user's login is refused
    /// goes on a classic connection, as any classic client's would (it
    /// changes nothing and carries no password; WHOIS asks nothing of its
    /// user). A mutation fails with the reason.
    async fn via_for(
        &self,
        user: &str,
        own: bool,
        request: &Request,
    ) -> Result<Via, DirectoryError> {
        match self.via(user, own, None).await {
            Err(DirectoryError::WrongPassword { .. }) if is_read(&request.operation) => {
                Ok(Via::Classic)
            }
            other => other,
        }
    }

    async fn via(
        &self,
        user: &str,
        own: bool,
        password: Option<Secret>,
    ) -> Result<Via, DirectoryError> {
        if user.is_empty() || !self.sessions_possible() {
            return Ok(Via::Classic);
        }
        let mut held = self.opener.held.lock().await;
        if own && password.is_none() {
            let lost = held.as_ref().is_some_and(|current| {
                current.link.user() == user
                    && !current.link.is_alive()
                    && current.link.end_signal().lost()
            });
            if lost {
                // Restored with the user's CONNECT, not merely reopened.
                drop(held);
                self.opener.restore().await;
                held = self.opener.held.lock().await;
            }
            if let Some(current) = held.as_ref() {
                if current.link.user() == user && current.link.is_alive() {
                    return Ok(Via::Held(Arc::clone(&current.link)));
                }
            }
        }
        if !own {
            drop(held);
            return Ok(match self.open(user, password).await? {
                Some((link, _events)) => Via::Once(link),
                None => Via::Classic,
            });
        }
        match self.open(user, password).await? {
            Some((link, events)) => Ok(Via::Held(self.opener.install(&mut held, link, events))),
            None => Ok(Via::Classic),
        }
    }

    /// Opens a session for `user`; `None` when the server does not open
    /// sessions (remembered). A refused empty password is asked for once
    /// on a terminal.
    async fn open(
        &self,
        user: &str,
        password: Option<Secret>,
    ) -> Result<Option<(SessionLink, mpsc::Receiver<SessionEvent>)>, DirectoryError> {
        let given = password.is_some();
        let password = match password {
            Some(password) => password,
            None => self.opener.passwords.login(user)?,
        };
        match self.opener.try_open(user, password.clone()).await {
            Ok(opened) => {
                if given && !password.is_empty() {
                    self.opener.passwords.remember(user, password);
                }
                Ok(Some(opened))
            }
            Err(OpenError::NotSession { addr, why }) => {
                tracing::debug!("{addr} opens no session ({why}): classic connections");
                self.opener.profile.set_sessions(Sessions::No);
                Ok(None)
            }
            Err(OpenError::Refused { user: refused }) if password.is_empty() && !given => {
                let Some(typed) = self.opener.passwords.prompt_login(user).await? else {
                    return Err(DirectoryError::WrongPassword { user: refused });
                };
                match self.opener.try_open(user, typed.clone()).await {
                    Ok(opened) => {
                        self.opener.passwords.remember(user, typed);
                        Ok(Some(opened))
                    }
                    Err(err) => Err(open_error(err)),
                }
            }
            Err(err) => Err(open_error(err)),
        }
    }

    async fn call_on(
        &self,
        link: &SessionLink,
        build: &(dyn Fn(SocketAddr) -> Request + Sync),
        datetime: &str,
    ) -> Result<Reply, DirectoryError> {
        let request = build(link.local_addr());
        link.call(&request, datetime)
            .await
            .map_err(|err| call_error(&self.directory.addr(), err))
    }
}

/// True for the operations that change nothing.
fn is_read(operation: &Operation) -> bool {
    matches!(
        operation,
        Operation::ListUsers
            | Operation::ListContent { .. }
            | Operation::Search { .. }
            | Operation::FindSources { .. }
            | Operation::Whois { .. }
    )
}

/// The user a request acts for (empty when it names nobody valid).
fn request_user(request: &Request) -> String {
    request.user.clone().unwrap_or_default()
}

fn open_error(err: OpenError) -> DirectoryError {
    match err {
        OpenError::Unreachable { addr, reason } => DirectoryError::Unreachable { addr, reason },
        OpenError::NotSession { addr, why } => DirectoryError::SessionLost { addr, reason: why },
        OpenError::Refused { user } => DirectoryError::WrongPassword { user },
        OpenError::Failed { addr, user } => DirectoryError::LoginFailed { addr, user },
    }
}

fn call_error(addr: &str, err: CallError) -> DirectoryError {
    match err {
        CallError::Lost { addr, reason } => DirectoryError::SessionLost { addr, reason },
        CallError::Timeout { addr } => DirectoryError::Timeout { addr },
        CallError::BadReply { addr, source } => DirectoryError::BadReply { addr, source },
        CallError::Encode(FrameError::Field(err)) => DirectoryError::Encode(err),
        CallError::Encode(err) => DirectoryError::Send {
            addr: addr.to_string(),
            reason: err.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{
        code, run, session_with_passwords, FakeDirectory, FakeSessionDirectory, SeenLogin,
    };
    use crate::passwords::tests::Scripted;
    use crate::passwords::Passwords;
    use peerdex_protocol::frame::LoginCode;
    use peerdex_protocol::{OpKind, Secret};

    /// Code 0, with an empty list for the ops that list.
    fn ok(request: &peerdex_protocol::Request, _: std::net::SocketAddr) -> bytes::BytesMut {
        let mut out = code(0);
        if matches!(
            request.operation.kind(),
            OpKind::ListUsers | OpKind::ListContent | OpKind::Search
        ) {
            peerdex_protocol::reply::put_count(&mut out, 0);
        }
        if request.operation.kind() == OpKind::Whois {
            let offline = peerdex_protocol::reply::Whois::Offline { last_seen: None };
            peerdex_protocol::reply::put_whois(&mut out, &offline).unwrap();
        }
        out
    }

    fn seen(user: &str, password: &str) -> SeenLogin {
        SeenLogin {
            user: user.into(),
            password: password.into(),
        }
    }

    /// A directory where alice's account is protected by "pw".
    async fn protected_alice() -> FakeSessionDirectory {
        FakeSessionDirectory::start(
            |user, password| match (user, password) {
                ("alice", "pw") => LoginCode::Ok,
                ("alice", _) => LoginCode::Refused,
                _ => LoginCode::Ok,
            },
            ok,
        )
        .await
    }

    #[tokio::test]
    async fn a_session_server_gets_the_commands_in_one_held_session() {
        let directory = FakeSessionDirectory::start(|_, _| LoginCode::Ok, ok).await;
        let share = tempfile::tempdir().unwrap();
        std::fs::write(share.path().join("f.txt"), b"hello").unwrap();
        let mut shell = directory.session(share.path());
        assert_eq!(
            run(&mut shell, "LIST_USERS").await.out[0],
            "c> LIST_USERS OK"
        );
        for (line, out) in [
            ("REGISTER alice", "c> REGISTER OK"),
            ("CONNECT alice", "c> CONNECT OK"),
            ("PUBLISH f.txt a file", "c> PUBLISH OK"),
            ("LIST_CONTENT alice", "c> LIST_CONTENT OK"),
        ] {
            assert_eq!(run(&mut shell, line).await.out[0], out, "{line}");
        }
        shell.shutdown().await;
        assert_eq!(directory.logins(), [seen("alice", "")], "one login");
        let requests = directory.requests();
        let ops: Vec<(bool, OpKind)> = requests
            .iter()
            .map(|(in_session, r)| (*in_session, r.operation.kind()))
            .collect();
        // Before any user is named: classic. No extension probe: a server
        // that opens sessions is peerdex.
        assert_eq!(
            ops,
            [
                (false, OpKind::ListUsers),
                (true, OpKind::Register),
                (true, OpKind::Connect),
                (true, OpKind::PublishContent),
                (true, OpKind::ListContent),
                (true, OpKind::Disconnect),
            ]
        );
    }

    #[tokio::test]
    async fn another_user_gets_a_short_lived_session() {
        let directory = FakeSessionDirectory::start(|_, _| LoginCode::Ok, ok).await;
        let share = tempfile::tempdir().unwrap();
        let mut shell = directory.session(share.path());
        run(&mut shell, "REGISTER alice").await;
        assert_eq!(
            run(&mut shell, "UNREGISTER bob").await.out,
            ["c> UNREGISTER OK"]
        );
        run(&mut shell, "LIST_USERS").await;
        assert_eq!(
            directory.logins(),
            [seen("alice", ""), seen("bob", "")],
            "alice's session is kept; bob had one of its own"
        );
        let users: Vec<String> = directory
            .requests()
            .into_iter()
            .map(|(in_session, r)| {
                assert!(in_session);
                r.user.unwrap()
            })
            .collect();
        assert_eq!(users, ["alice", "bob", "alice"]);
    }

    #[tokio::test]
    async fn a_wrong_password_fails_the_command_with_its_reason() {
        let directory = protected_alice().await;
        let share = tempfile::tempdir().unwrap();
        let mut shell = directory.session(share.path());
        let printed = run(&mut shell, "CONNECT alice").await;
        assert_eq!(printed.out, ["c> CONNECT FAIL"]);
        assert!(printed.failed);
        assert_eq!(printed.err, ["peerdex: wrong password for alice"]);
        assert!(directory.requests().is_empty(), "nothing sent");

        let env = Passwords::new(None, None, Some(Secret::new("pw")), None, None);
        let mut shell = session_with_passwords(directory.port, share.path(), env);
        assert_eq!(
            run(&mut shell, "CONNECT alice").await.out,
            ["c> CONNECT OK"]
        );
        assert_eq!(directory.logins().last(), Some(&seen("alice", "pw")));
    }

    #[tokio::test]
    async fn a_read_for_a_user_whose_login_is_refused_goes_classic() {
        let directory = protected_alice().await;
        let share = tempfile::tempdir().unwrap();
        let mut shell = directory.session(share.path());
        assert_eq!(
            run(&mut shell, "CONNECT alice").await.out,
            ["c> CONNECT FAIL"]
        );
        // WHOIS asks nothing of alice: a refused login does not stop it,
        // and a read carries no password on a classic connection.
        let printed = run(&mut shell, "WHOIS bob").await;
        assert_eq!(printed.out, ["c> WHOIS OK", "\tbob offline never"]);
        let sent = directory.requests();
        assert_eq!(sent.len(), 1, "{sent:?}");
        let (in_session, request) = &sent[0];
        assert!(!in_session);
        assert_eq!(request.operation.kind(), OpKind::Whois);
        // A mutation is not sent at all.
        assert_eq!(
            run(&mut shell, "DISCONNECT alice").await.out,
            ["c> DISCONNECT FAIL"]
        );
        assert_eq!(directory.requests().len(), 1);
    }

    #[tokio::test]
    async fn on_a_terminal_a_refused_empty_login_asks_once() {
        let directory = protected_alice().await;
        let share = tempfile::tempdir().unwrap();
        let prompter = Scripted::new(&["pw"]);
        let tty = Passwords::new(Some(prompter.clone()), None, None, None, None);
        let mut shell = session_with_passwords(directory.port, share.path(), tty);
        assert_eq!(
            run(&mut shell, "CONNECT alice").await.out,
            ["c> CONNECT OK"]
        );
        assert_eq!(directory.logins(), [seen("alice", ""), seen("alice", "pw")]);
        assert_eq!(
            prompter.asked.lock().unwrap().as_slice(),
            ["password for alice: "]
        );
        // Remembered: the next login (another user's command) asks nothing.
        run(&mut shell, "LIST_CONTENT alice").await;
        assert_eq!(prompter.asked.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn register_logs_in_with_the_new_password() {
        let directory = FakeSessionDirectory::start(|_, _| LoginCode::Ok, ok).await;
        let share = tempfile::tempdir().unwrap();
        let tty = Passwords::new(Some(Scripted::new(&["pw", "pw"])), None, None, None, None);
        let mut shell = session_with_passwords(directory.port, share.path(), tty);
        assert_eq!(
            run(&mut shell, "REGISTER carol").await.out,
            ["c> REGISTER OK"]
        );
        assert_eq!(directory.logins(), [seen("carol", "pw")]);
        // Piped: the login password source is the new account's.
        let file = share.path().join("pw.txt");
        std::fs::write(&file, "filepw\n").unwrap();
        let piped = Passwords::new(None, Some(file), None, None, None);
        let mut shell = session_with_passwords(directory.port, share.path(), piped);
        run(&mut shell, "REGISTER dave").await;
        assert_eq!(directory.logins().last(), Some(&seen("dave", "filepw")));
        // A classic directory: registered without it, and told so.
        let classic = FakeDirectory::start(|_, _| code(0)).await;
        let tty = Passwords::new(Some(Scripted::new(&["pw", "pw"])), None, None, None, None);
        let mut shell = session_with_passwords(classic.port(), share.path(), tty);
        let printed = run(&mut shell, "REGISTER frank").await;
        assert_eq!(printed.out, ["c> REGISTER OK"]);
        assert_eq!(
            printed.err,
            ["peerdex: warning: the directory opens no sessions: frank was registered without a password"]
        );
        // Mismatched on a terminal: nothing sent.
        let tty = Passwords::new(Some(Scripted::new(&["a", "b"])), None, None, None, None);
        let mut shell = session_with_passwords(directory.port, share.path(), tty);
        let printed = run(&mut shell, "REGISTER erin").await;
        assert_eq!(printed.out, ["c> REGISTER FAIL"]);
        assert_eq!(printed.err, ["peerdex: the passwords do not match"]);
        assert_eq!(directory.logins().len(), 2);
    }

    #[tokio::test]
    async fn a_classic_server_is_remembered_and_used_as_before() {
        let directory = FakeDirectory::start(|_, _| code(0)).await;
        let share = tempfile::tempdir().unwrap();
        let mut shell = directory.session(share.path());
        assert_eq!(
            run(&mut shell, "REGISTER alice").await.out,
            ["c> REGISTER OK"]
        );
        assert_eq!(
            shell.route.ext().profile().get().sessions,
            crate::server_profiles::Sessions::No
        );
        run(&mut shell, "UNREGISTER bob").await;
        let users: Vec<String> = directory
            .requests()
            .into_iter()
            .map(|r| r.user.unwrap())
            .collect();
        assert_eq!(users, ["alice", "bob"]);
    }
}
