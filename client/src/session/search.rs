//! `SEARCH <pattern>`: the directory extension that finds files by name
//! across all users. A classic directory has no twin for it: the command
//! then fails with a reason.

use peerdex_protocol::{OpKind, Operation, Reply};

use super::{request, Printed, Session};
use crate::shell::command::SEARCH_LIMIT;
use crate::shell::output;

impl Session {
    /// `SEARCH <pattern>` for the current user.
    pub(super) async fn search(&self, pattern: String) -> Printed {
        let user = self.current_user().to_string();
        let operation = Operation::Search {
            pattern: Ok(pattern),
            limit: Ok(SEARCH_LIMIT),
        };
        let datetime = self.config.time.now().await;
        match self
            .route
            .ext_call(true, &request(&user, operation), &datetime)
            .await
        {
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
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, FakeDirectory};
    use peerdex_protocol::reply::{put_code, put_count};
    use peerdex_protocol::Operation;

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
}
