//! `WHOIS <user>` and `PASSWD`, the account commands of sessions.
//!
//! WHOIS is a read-only extension: a classic directory has no twin, so the
//! command fails there with a reason, like SEARCH. PASSWD sends
//! SET_PASSWORD in the current user's session; the new password comes from
//! [`crate::passwords`] (asked twice on a terminal, else a file or the
//! environment), never from the line typed.

use peerdex_protocol::{OpKind, Operation, Reply};

use super::{request, Printed, Session};
use crate::shell::output;

impl Session {
    pub(super) async fn whois(&self, target: String) -> Printed {
        let user = self.current_user().to_string();
        let operation = Operation::Whois {
            target: Ok(target.clone()),
        };
        let datetime = self.config.time.now().await;
        match self
            .route
            .ext_call(true, &request(&user, operation), &datetime)
            .await
        {
            Ok(Reply::Whois(whois)) => Printed {
                out: output::whois_lines(&target, &whois),
                ..Printed::default()
            },
            Ok(reply) => Printed::outcome(
                output::result_line(OpKind::Whois, reply.outcome()),
                reply.outcome(),
            ),
            Err(err) => Printed::fail(output::fail_line(OpKind::Whois)).with_reason(err),
        }
    }

    pub(super) async fn passwd(&self) -> Printed {
        let fail = || Printed::fail(output::passwd_line(false));
        let user = self.current_user().to_string();
        if user.is_empty() {
            return fail().with_reason("no current user: REGISTER or CONNECT one first");
        }
        let password = match self.config.passwords.new_for_passwd(&user).await {
            Ok(password) => password,
            Err(err) => return fail().with_reason(err),
        };
        let operation = Operation::SetPassword {
            password: Ok(password.clone()),
        };
        let datetime = self.config.time.now().await;
        let result = self
            .route
            .session_call(true, &request(&user, operation), &datetime)
            .await;
        match result {
            Ok(reply) if reply.outcome() == peerdex_protocol::Outcome::Ok => {
                self.config.passwords.remember(&user, password);
                Printed::ok(output::passwd_line(true))
            }
            Ok(reply) => fail().with_reason(format!(
                "the directory refused the new password of {user} ({})",
                output::result_line(OpKind::SetPassword, reply.outcome())
                    .trim_start_matches(output::PROMPT)
            )),
            Err(err) => fail().with_reason(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{
        code, run, session_with_passwords, FakeDirectory, FakeSessionDirectory, SeenLogin,
    };
    use crate::passwords::Passwords;
    use peerdex_protocol::frame::LoginCode;
    use peerdex_protocol::reply::{put_whois, Whois};
    use peerdex_protocol::{Operation, Secret};

    #[tokio::test]
    async fn whois_prints_each_state_and_the_unknown_user() {
        let directory = FakeSessionDirectory::start(
            |_, _| LoginCode::Ok,
            |request, _| match &request.operation {
                Operation::Whois { target } => {
                    let whois = match target.as_deref() {
                        Ok("on") => Whois::Online {
                            ip: "10.0.0.2".into(),
                            port: "4000".into(),
                        },
                        Ok("seen") => Whois::Offline {
                            last_seen: Some("21/11/2026 09:05:07".into()),
                        },
                        Ok("new") => Whois::Offline { last_seen: None },
                        _ => return code(1),
                    };
                    let mut out = code(0);
                    put_whois(&mut out, &whois).unwrap();
                    out
                }
                _ => code(0),
            },
        )
        .await;
        let share = tempfile::tempdir().unwrap();
        let mut shell = directory.session(share.path());
        run(&mut shell, "REGISTER al").await;
        for (line, out) in [
            ("WHOIS on", vec!["c> WHOIS OK", "\ton online 10.0.0.2 4000"]),
            (
                "WHOIS seen",
                vec!["c> WHOIS OK", "\tseen offline 21/11/2026 09:05:07"],
            ),
            ("WHOIS new", vec!["c> WHOIS OK", "\tnew offline never"]),
            ("WHOIS ghost", vec!["c> WHOIS FAIL, USER DOES NOT EXIST"]),
        ] {
            let printed = run(&mut shell, line).await;
            assert_eq!(printed.out, out, "{line}");
            assert_eq!(printed.failed, line == "WHOIS ghost");
        }
        assert!(directory
            .requests()
            .iter()
            .all(|(in_session, _)| *in_session));
    }

    #[tokio::test]
    async fn whois_on_a_classic_directory_fails_with_a_reason() {
        // A classic directory closes on an op it does not know.
        let directory = FakeDirectory::start(|request, _| match request.operation {
            Operation::Whois { .. } | Operation::FindSources { .. } => bytes::BytesMut::new(),
            _ => code(0),
        })
        .await;
        let share = tempfile::tempdir().unwrap();
        let mut shell = directory.session(share.path());
        run(&mut shell, "REGISTER al").await;
        let printed = run(&mut shell, "WHOIS bo").await;
        assert_eq!(printed.out, ["c> WHOIS FAIL"]);
        assert!(printed.failed);
        assert!(!printed.err.is_empty());
    }

    #[tokio::test]
    async fn passwd_sets_the_password_in_the_session_and_uses_it_next() {
        let directory = FakeSessionDirectory::start(|_, _| LoginCode::Ok, |_, _| code(0)).await;
        let share = tempfile::tempdir().unwrap();
        let passwords = Passwords::new(None, None, None, None, Some(Secret::new("n3w")));
        let mut shell = session_with_passwords(directory.port, share.path(), passwords);
        let printed = run(&mut shell, "PASSWD").await;
        assert_eq!(printed.out, ["c> PASSWD FAIL"], "no current user");
        run(&mut shell, "REGISTER al").await;
        assert_eq!(run(&mut shell, "PASSWD").await.out, ["c> PASSWD OK"]);
        let requests = directory.requests();
        let (in_session, set) = requests.last().unwrap();
        assert!(in_session);
        let Operation::SetPassword { password } = &set.operation else {
            panic!("{set:?}")
        };
        assert_eq!(password.as_ref().unwrap().expose(), "n3w");
        // The next login of al (after the shell acted for bo) uses it.
        run(&mut shell, "REGISTER bo").await;
        run(&mut shell, "CONNECT al").await;
        let logins = directory.logins();
        let login = |user: &str, password: &str| SeenLogin {
            user: user.into(),
            password: password.into(),
        };
        assert_eq!(
            logins,
            [login("al", ""), login("bo", ""), login("al", "n3w")]
        );
        let refused = FakeSessionDirectory::start(|_, _| LoginCode::Ok, |_, _| code(2)).await;
        let passwords = Passwords::new(None, None, None, None, Some(Secret::new("n3w")));
        let mut shell = session_with_passwords(refused.port, share.path(), passwords);
        run(&mut shell, "REGISTER al").await;
        let printed = run(&mut shell, "PASSWD").await;
        assert_eq!(printed.out, ["c> PASSWD FAIL"]);
        assert!(printed.failed);
        assert!(!format!("{printed:?}").contains("n3w"), "never printed");
    }

    #[tokio::test]
    async fn passwd_never_sends_a_password_on_a_classic_connection() {
        let directory = FakeDirectory::start(|_, _| code(0)).await;
        let share = tempfile::tempdir().unwrap();
        let passwords = Passwords::new(None, None, None, None, Some(Secret::new("n3w")));
        let mut shell = session_with_passwords(directory.port(), share.path(), passwords);
        run(&mut shell, "REGISTER al").await;
        let printed = run(&mut shell, "PASSWD").await;
        assert_eq!(printed.out, ["c> PASSWD FAIL"]);
        assert!(
            printed.err[0].contains("opens no sessions"),
            "{:?}",
            printed.err
        );
        let ops: Vec<_> = directory
            .requests()
            .iter()
            .map(|r| r.operation.kind())
            .collect();
        assert_eq!(ops, [peerdex_protocol::OpKind::Register]);
    }
}
