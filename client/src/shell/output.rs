//! The exact stdout lines of PROTOCOL.md's "shell's output contract".
//!
//! Nothing else in the crate spells a result line: the session decides the
//! outcome, this module turns it into text.

use peerdex_protocol::reply::{SearchReply, Whois};
use peerdex_protocol::{ContentEntry, OpKind, Outcome, UserEntry};

/// The shell prompt, also the prefix of every result line.
pub const PROMPT: &str = "c> ";

/// Result of a GET_FILE command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetFileResult {
    Ok,
    FileNotExist,
    Fail,
}

/// `c> ` + the result text of `op` for `outcome`. An outcome that `op`
/// cannot have is its catch-all FAIL.
pub fn result_line(op: OpKind, outcome: Outcome) -> String {
    format!("{PROMPT}{}", result_text(op, outcome))
}

/// The plain catch-all FAIL line of `op` (`c> REGISTER FAIL`, ...).
pub fn fail_line(op: OpKind) -> String {
    result_line(op, Outcome::Fail)
}

/// The result line of GET_FILE.
pub fn get_file_line(result: GetFileResult) -> String {
    let text = match result {
        GetFileResult::Ok => "GET_FILE OK",
        GetFileResult::FileNotExist => "GET_FILE FAIL, FILE NOT EXIST",
        GetFileResult::Fail => "GET_FILE FAIL",
    };
    format!("{PROMPT}{text}")
}

/// `c> SHARE OK <n> published, <m> skipped` (a peerdex command).
pub fn share_ok_line(published: usize, skipped: usize) -> String {
    format!("{PROMPT}SHARE OK {published} published, {skipped} skipped")
}

/// `c> SHARE FAIL` (the reason goes to stderr).
pub fn share_fail_line() -> String {
    format!("{PROMPT}SHARE FAIL")
}

/// The lines that follow `LIST_USERS OK`: `\t<name> <ip> <port>`.
pub fn user_lines(users: &[UserEntry]) -> Vec<String> {
    users
        .iter()
        .map(|u| format!("\t{} {} {}", u.name, u.ip, u.port))
        .collect()
}

/// The lines that follow `LIST_CONTENT OK`: `\t<file> <description>`.
pub fn content_lines(files: &[ContentEntry]) -> Vec<String> {
    files
        .iter()
        .map(|f| format!("\t{} {}", f.file, f.description))
        .collect()
}

/// `c> SEARCH OK <shown> of <total>` then one line per result:
/// `\t<owner> <file> <size or -> <first 12 hex of hash or -> <online|offline> <description>`.
/// A peerdex command; the short hash is enough to tell contents apart by eye,
/// FIND_SOURCES uses the full one.
pub fn search_lines(reply: &SearchReply) -> Vec<String> {
    let head = format!(
        "{PROMPT}SEARCH OK {} of {}",
        reply.entries.len(),
        reply.total
    );
    std::iter::once(head)
        .chain(reply.entries.iter().map(|e| {
            let size = e.size.map_or_else(|| "-".to_string(), |s| s.to_string());
            let hash = e.hash.map_or_else(
                || "-".to_string(),
                |h| peerdex_protocol::peer_ext::to_hex(&h)[..12].to_string(),
            );
            let state = if e.connected { "online" } else { "offline" };
            format!(
                "\t{} {} {size} {hash} {state} {}",
                e.owner, e.file, e.description
            )
        }))
        .collect()
}

/// `c> WHOIS OK` then `\t<user> online <ip> <port>` or
/// `\t<user> offline <DD/MM/YYYY HH:MM:SS|never>`.
pub fn whois_lines(user: &str, whois: &Whois) -> Vec<String> {
    let state = match whois {
        Whois::Online { ip, port } => format!("\t{user} online {ip} {port}"),
        Whois::Offline { last_seen } => format!(
            "\t{user} offline {}",
            last_seen.as_deref().unwrap_or("never")
        ),
    };
    vec![format!("{PROMPT}WHOIS OK"), state]
}

/// `c> PASSWD OK` or `c> PASSWD FAIL` (the shell's name for SET_PASSWORD).
pub fn passwd_line(ok: bool) -> String {
    format!("{PROMPT}PASSWD {}", if ok { "OK" } else { "FAIL" })
}

fn result_text(op: OpKind, outcome: Outcome) -> String {
    let outcome = if op.outcomes().contains(&outcome) {
        outcome
    } else {
        Outcome::Fail
    };
    match (op, outcome) {
        (_, Outcome::Ok) => format!("{op} OK"),
        (_, Outcome::Fail) => format!("{op} FAIL"),
        (OpKind::Register, Outcome::UsernameInUse) => "USERNAME IN USE".into(),
        (OpKind::Unregister, Outcome::UserDoesNotExist) => "USER DOES NOT EXIST".into(),
        (OpKind::Connect, Outcome::UserAlreadyConnected) => "USER ALREADY CONNECTED".into(),
        (_, outcome) => format!("{op} FAIL, {}", outcome.text()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PROTOCOL.md's table, row by row, in reply-code order.
    const TABLE: [(OpKind, &[&str]); 8] = [
        (
            OpKind::Register,
            &["REGISTER OK", "USERNAME IN USE", "REGISTER FAIL"],
        ),
        (
            OpKind::Unregister,
            &["UNREGISTER OK", "USER DOES NOT EXIST", "UNREGISTER FAIL"],
        ),
        (
            OpKind::Connect,
            &[
                "CONNECT OK",
                "CONNECT FAIL, USER DOES NOT EXIST",
                "USER ALREADY CONNECTED",
                "CONNECT FAIL",
            ],
        ),
        (
            OpKind::Disconnect,
            &[
                "DISCONNECT OK",
                "DISCONNECT FAIL, USER DOES NOT EXIST",
                "DISCONNECT FAIL, USER NOT CONNECTED",
                "DISCONNECT FAIL",
            ],
        ),
        (
            OpKind::Publish,
            &[
                "PUBLISH OK",
                "PUBLISH FAIL, USER DOES NOT EXIST",
                "PUBLISH FAIL, USER NOT CONNECTED",
                "PUBLISH FAIL, CONTENT ALREADY PUBLISHED",
                "PUBLISH FAIL",
            ],
        ),
        (
            OpKind::Delete,
            &[
                "DELETE OK",
                "DELETE FAIL, USER DOES NOT EXIST",
                "DELETE FAIL, USER NOT CONNECTED",
                "DELETE FAIL, CONTENT NOT PUBLISHED",
                "DELETE FAIL",
            ],
        ),
        (
            OpKind::ListUsers,
            &[
                "LIST_USERS OK",
                "LIST_USERS FAIL, USER DOES NOT EXIST",
                "LIST_USERS FAIL, USER NOT CONNECTED",
                "LIST_USERS FAIL",
            ],
        ),
        (
            OpKind::ListContent,
            &[
                "LIST_CONTENT OK",
                "LIST_CONTENT FAIL, USER DOES NOT EXIST",
                "LIST_CONTENT FAIL, USER NOT CONNECTED",
                "LIST_CONTENT FAIL, REMOTE USER DOES NOT EXIST",
                "LIST_CONTENT FAIL",
            ],
        ),
    ];

    #[test]
    fn every_line_of_the_table() {
        for (op, lines) in TABLE {
            assert_eq!(op.outcomes().len(), lines.len(), "{op}");
            for (code, expected) in lines.iter().enumerate() {
                let outcome = op.outcome(code as u8).unwrap();
                assert_eq!(result_line(op, outcome), format!("c> {expected}"));
            }
            assert_eq!(fail_line(op), format!("c> {}", lines[lines.len() - 1]));
        }
    }

    #[test]
    fn impossible_outcome_is_plain_fail() {
        assert_eq!(
            result_line(OpKind::Register, Outcome::ContentNotPublished),
            "c> REGISTER FAIL"
        );
    }

    #[test]
    fn whois_and_passwd_lines() {
        let online = Whois::Online {
            ip: "10.0.0.2".into(),
            port: "4000".into(),
        };
        assert_eq!(
            whois_lines("bo", &online),
            ["c> WHOIS OK", "\tbo online 10.0.0.2 4000"]
        );
        let seen = Whois::Offline {
            last_seen: Some("21/11/2026 09:05:07".into()),
        };
        assert_eq!(
            whois_lines("bo", &seen)[1],
            "\tbo offline 21/11/2026 09:05:07"
        );
        let never = Whois::Offline { last_seen: None };
        assert_eq!(whois_lines("bo", &never)[1], "\tbo offline never");
        assert_eq!(
            result_line(OpKind::Whois, Outcome::UserDoesNotExist),
            "c> WHOIS FAIL, USER DOES NOT EXIST"
        );
        assert_eq!(fail_line(OpKind::Whois), "c> WHOIS FAIL");
        assert_eq!(passwd_line(true), "c> PASSWD OK");
        assert_eq!(passwd_line(false), "c> PASSWD FAIL");
    }

    #[test]
    fn get_file_lines() {
        assert_eq!(get_file_line(GetFileResult::Ok), "c> GET_FILE OK");
        assert_eq!(
            get_file_line(GetFileResult::FileNotExist),
            "c> GET_FILE FAIL, FILE NOT EXIST"
        );
        assert_eq!(get_file_line(GetFileResult::Fail), "c> GET_FILE FAIL");
    }

    #[test]
    fn search_lines_show_counts_and_unknowns() {
        use peerdex_protocol::reply::SearchEntry;
        let reply = SearchReply {
            total: 7,
            entries: vec![
                SearchEntry {
                    owner: "al".into(),
                    file: "f12.bin".into(),
                    description: "a file".into(),
                    size: Some(42),
                    hash: Some([0xab; 32]),
                    connected: true,
                },
                SearchEntry {
                    owner: "bo".into(),
                    file: "F12.txt".into(),
                    description: String::new(),
                    size: None,
                    hash: None,
                    connected: false,
                },
            ],
        };
        assert_eq!(
            search_lines(&reply),
            [
                "c> SEARCH OK 2 of 7",
                "\tal f12.bin 42 abababababab online a file",
                "\tbo F12.txt - - offline ",
            ]
        );
        let none = SearchReply {
            total: 0,
            entries: Vec::new(),
        };
        assert_eq!(search_lines(&none), ["c> SEARCH OK 0 of 0"]);
        assert_eq!(
            result_line(OpKind::Search, Outcome::UserDoesNotExist),
            "c> SEARCH FAIL, USER DOES NOT EXIST"
        );
        assert_eq!(
            result_line(OpKind::Search, Outcome::UserNotConnected),
            "c> SEARCH FAIL, USER NOT CONNECTED"
        );
        assert_eq!(fail_line(OpKind::Search), "c> SEARCH FAIL");
    }

    #[test]
    fn listing_lines_are_tab_indented() {
        let users = [UserEntry {
            name: "al".into(),
            ip: "127.0.0.1".into(),
            port: "4000".into(),
        }];
        assert_eq!(user_lines(&users), ["\tal 127.0.0.1 4000"]);
        let files = [ContentEntry {
            file: "a.txt".into(),
            description: "the a file".into(),
        }];
        assert_eq!(content_lines(&files), ["\ta.txt the a file"]);
    }
}
