//! What the shell does when the directory speaks outside a reply: the
//! held session's events, and its loss.
//!
//! Before each command the shell reads the held session's events:
//! `DISCONNECTED` (the user was connected elsewhere) stops the listener and
//! forgets the connection; `LOGGED_OUT` (password changed, account
//! removed) ends the session and the connection it held. A session lost
//! otherwise (the server went away) is restored in the background
//! ([`super::reconnect`]); a command typed while it is still down first
//! tries to restore it, so that a script run right after a server restart
//! finds its user connected again before its next command.

use super::Session;
use crate::directory_session::SessionEvent;

impl Session {
    /// Handles pending events and restores a lost session; returns the
    /// lines for stderr.
    pub(crate) async fn attend_session(&mut self) -> Vec<String> {
        let mut notes = Vec::new();
        for event in self.route.events().await {
            match event {
                SessionEvent::Disconnected { reason } => {
                    if let Some(connection) = self.take_connection() {
                        notes.push(format!(
                            "peerdex: {} was disconnected by the directory: {reason}",
                            connection.user
                        ));
                        connection.listener.stop().await;
                    }
                }
                SessionEvent::LoggedOut { reason } => {
                    let user = self.current_user().to_string();
                    notes.push(format!(
                        "peerdex: {user} was logged out by the directory: {reason}"
                    ));
                    // The next command logs in afresh (asking on a terminal).
                    self.route.forget().await;
                    if let Some(connection) = self.take_connection() {
                        connection.listener.stop().await;
                    }
                }
                // Noted and restored by the reconnecting side.
                SessionEvent::Lost { reason } => tracing::debug!("session lost: {reason}"),
            }
        }
        notes.extend(self.route.restore().await);
        notes
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{code, run, FakeSessionDirectory};
    use peerdex_protocol::frame::{Event, LoginCode};
    use peerdex_protocol::{OpKind, Operation};
    use std::time::{Duration, Instant};

    async fn directory() -> FakeSessionDirectory {
        FakeSessionDirectory::start(
            |_, _| LoginCode::Ok,
            |request, _| {
                let mut out = code(0);
                if let Operation::ListUsers = request.operation {
                    peerdex_protocol::reply::put_count(&mut out, 0);
                }
                out
            },
        )
        .await
    }

    fn event(name: &str, reason: &str) -> Event {
        Event {
            name: name.into(),
            fields: vec![reason.into()],
        }
    }

    /// Polls until the held session is dead (bounded).
    async fn until_dead(shell: &super::Session) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while shell
            .route
            .held_state()
            .await
            .is_some_and(|(_, alive)| alive)
        {
            assert!(Instant::now() < deadline, "session still alive");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_lost_session_is_restored_with_the_same_connect_before_the_next_command() {
        let directory = directory().await;
        let share = tempfile::tempdir().unwrap();
        let mut shell = directory.session(share.path());
        run(&mut shell, "REGISTER al").await;
        assert_eq!(run(&mut shell, "CONNECT al").await.out, ["c> CONNECT OK"]);
        let listen = shell.listener_addr().unwrap();
        // The server goes away (every session dropped).
        directory.events.send(event("__DROP__", "")).unwrap();
        until_dead(&shell).await;
        let printed = run(&mut shell, "LIST_USERS").await;
        assert_eq!(printed.out, ["c> LIST_USERS OK"]);
        let addr = format!("127.0.0.1:{}", directory.port);
        assert_eq!(
            printed.err,
            [
                format!("peerdex: session with {addr} lost; reconnecting"),
                "peerdex: session restored".to_string()
            ]
        );
        assert_eq!(directory.logins().len(), 2);
        let connects: Vec<u16> = directory
            .requests()
            .into_iter()
            .filter_map(|(_, r)| match r.operation {
                Operation::Connect(addr) => addr.port.ok(),
                _ => None,
            })
            .collect();
        assert_eq!(connects, [listen.port(), listen.port()]);
        assert_eq!(shell.listener_addr(), Some(listen), "still serving");
        // Said once: the next command is quiet.
        assert!(run(&mut shell, "LIST_USERS").await.err.is_empty());
    }

    #[tokio::test]
    async fn a_lost_session_is_restored_in_the_background() {
        let directory = directory().await;
        let share = tempfile::tempdir().unwrap();
        let mut shell = directory.session(share.path());
        assert_eq!(run(&mut shell, "CONNECT al").await.out, ["c> CONNECT OK"]);
        directory.events.send(event("__DROP__", "")).unwrap();
        // No command typed: the shell logs in and connects again by itself.
        let deadline = Instant::now() + Duration::from_secs(5);
        let connects = || {
            directory
                .requests()
                .iter()
                .filter(|(_, r)| r.operation.kind() == OpKind::Connect)
                .count()
        };
        while connects() < 2 {
            assert!(Instant::now() < deadline, "not restored in the background");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(directory.logins().len(), 2);
        let printed = run(&mut shell, "LIST_USERS").await;
        assert_eq!(printed.err.len(), 2, "{:?}", printed.err);
        assert!(printed.err[0].ends_with("lost; reconnecting"));
        assert_eq!(printed.err[1], "peerdex: session restored");
        assert_eq!(
            directory.logins().len(),
            2,
            "the command used the restored session"
        );
    }

    #[tokio::test]
    async fn disconnected_stops_the_listener_and_logged_out_ends_the_session() {
        let directory = directory().await;
        let share = tempfile::tempdir().unwrap();
        let mut shell = directory.session(share.path());
        run(&mut shell, "CONNECT al").await;
        directory
            .events
            .send(event("DISCONNECTED", "connected elsewhere"))
            .unwrap();
        // Delivered once the frame arrives; polled, bounded.
        let deadline = Instant::now() + Duration::from_secs(5);
        let printed = loop {
            let printed = run(&mut shell, "LIST_USERS").await;
            if !printed.err.is_empty() || Instant::now() > deadline {
                break printed;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(
            printed.err,
            ["peerdex: al was disconnected by the directory: connected elsewhere"]
        );
        assert_eq!(shell.listener_addr(), None);

        directory
            .events
            .send(event("LOGGED_OUT", "password changed"))
            .unwrap();
        directory.events.send(event("__DROP__", "")).unwrap();
        until_dead(&shell).await;
        let printed = run(&mut shell, "LIST_USERS").await;
        assert_eq!(
            printed.err,
            ["peerdex: al was logged out by the directory: password changed"]
        );
        // The command itself logged in afresh.
        assert_eq!(directory.logins().len(), 2);
        let ops: Vec<OpKind> = directory
            .requests()
            .iter()
            .map(|(_, r)| r.operation.kind())
            .collect();
        assert_eq!(ops.iter().filter(|op| **op == OpKind::Connect).count(), 1);
    }
}
