//! One record as one printed line.
//!
//! The line is PROTOCOL.md's `<user> <OP> [<file>] <datetime>`, followed by
//! ` -> ` and what the client was answered, in the shell's words:
//!
//! ```text
//! alice REGISTER 21/11/2026 09:05:07 -> OK
//! alice PUBLISH song.mp3 21/11/2026 09:05:07 -> OK
//! bob CONNECT 21/11/2026 09:05:07 -> USER DOES NOT EXIST
//! alice PUBLISH song.mp3 21/11/2026 09:05:07 -> CONTENT ALREADY PUBLISHED
//! eve\nmallory REGISTER 21/11/2026 09:05:07 -> FAIL
//! ```
//!
//! The prefix stays exactly PROTOCOL.md's for well-formed records, so a
//! reader of the classic line finds it unchanged; the outcome comes after
//! the datetime because it is the one part of the line with spaces of its
//! own. A record without an outcome (from a server that predates the
//! field) prints the classic line alone.
//!
//! Every field is escaped ([`crate::escape`]): whatever a sender put in a
//! record, it prints as exactly one line without control characters. The
//! user, the op and the file are tokens (a space in them is escaped too, so
//! the prefix still splits on spaces); the datetime and the outcome keep
//! their spaces.

use crate::rpc::OpRecord;

use crate::escape::{push_escaped, Kind};

/// Separates the classic line from the outcome.
pub const OUTCOME_SEPARATOR: &str = " -> ";

/// Appends `record`'s line to `out`, with its final newline.
pub fn push_line(out: &mut String, record: &OpRecord) {
    push_escaped(out, &record.user, Kind::Token);
    out.push(' ');
    push_escaped(out, &record.op, Kind::Token);
    if let Some(file) = &record.file {
        out.push(' ');
        push_escaped(out, file, Kind::Token);
    }
    out.push(' ');
    push_escaped(out, &record.datetime, Kind::Text);
    if let Some(outcome) = &record.outcome {
        out.push_str(OUTCOME_SEPARATOR);
        push_escaped(out, outcome, Kind::Text);
    }
    out.push('\n');
}

/// `record`'s line, with its final newline.
#[cfg(test)]
pub fn line(record: &OpRecord) -> String {
    let mut out = String::with_capacity(64);
    push_line(&mut out, record);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::escape::tests::hostile_text;
    use proptest::prelude::*;

    const DT: &str = "21/11/2026 09:05:07";

    fn record(user: &str, op: &str, file: Option<&str>, outcome: Option<&str>) -> OpRecord {
        OpRecord {
            user: user.into(),
            op: op.into(),
            file: file.map(Into::into),
            datetime: DT.into(),
            outcome: outcome.map(Into::into),
        }
    }

    #[test]
    fn lines_extend_protocol_with_the_outcome() {
        assert_eq!(
            line(&record("alice", "REGISTER", None, Some("OK"))),
            format!("alice REGISTER {DT} -> OK\n")
        );
        assert_eq!(
            line(&record("alice", "PUBLISH", Some("song.mp3"), Some("OK"))),
            format!("alice PUBLISH song.mp3 {DT} -> OK\n")
        );
        assert_eq!(
            line(&record("bob", "CONNECT", None, Some("USER DOES NOT EXIST"))),
            format!("bob CONNECT {DT} -> USER DOES NOT EXIST\n")
        );
    }

    #[test]
    fn a_record_without_outcome_is_the_classic_line() {
        assert_eq!(
            line(&record("alice", "DELETE", Some("a.txt"), None)),
            format!("alice DELETE a.txt {DT}\n")
        );
    }

    #[test]
    fn hostile_fields_stay_on_one_line() {
        let forged = format!("eve\nmallory REGISTER {DT} -> OK");
        assert_eq!(
            line(&record(&forged, "REGISTER", None, Some("FAIL"))),
            format!(
                "eve\\nmallory\\x20REGISTER\\x2021/11/2026\\x2009:05:07\\x20->\\x20OK \
                 REGISTER {DT} -> FAIL\n"
            )
        );
        let mut odd = record("a", "PUBLISH", Some("x\u{1b}[31m\\"), Some("OK\r"));
        odd.datetime = "\t\u{9b}".into();
        assert_eq!(line(&odd), "a PUBLISH x\\x1b[31m\\\\ \\t\\x9b -> OK\\r\n");
    }

    fn any_record() -> impl Strategy<Value = OpRecord> {
        let text = hostile_text;
        (
            text(),
            text(),
            proptest::option::of(text()),
            text(),
            proptest::option::of(text()),
        )
            .prop_map(|(user, op, file, datetime, outcome)| OpRecord {
                user,
                op,
                file,
                datetime,
                outcome,
            })
    }

    proptest! {
        #[test]
        fn any_record_prints_as_one_line_without_control_characters(record in any_record()) {
            let line = line(&record);
            let body = line.strip_suffix('\n');
            prop_assert!(body.is_some(), "{:?} does not end the line", line);
            let body = body.unwrap_or_default();
            prop_assert!(!body.chars().any(char::is_control), "{:?}", line);
            prop_assert!(!body.contains(['\u{2028}', '\u{2029}']), "{:?}", line);
            // The tokens keep the prefix's shape: user, op, [file] then the datetime.
            let tokens = 2 + usize::from(record.file.is_some());
            let head: Vec<&str> = body.splitn(tokens + 1, ' ').collect();
            prop_assert_eq!(head.len(), tokens + 1, "{:?}", line);
        }
    }
}
