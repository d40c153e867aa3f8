//! What the RPC logger is told about one operation: who asked, for what,
//! and what they were answered.
//!
//! The logger's reader thinks in the shell's terms, so the record names the
//! operation the user typed (both publish forms are `PUBLISH`) and the
//! outcome as the shell words it. The outcome is the one the reply carries:
//! the caller passes what it answers after durability (a failed sync is
//! FAIL), and an outcome the operation cannot have is logged as the
//! catch-all, as its code says.
//!
//! Fields are copied as received, not escaped: the logger escapes what it
//! prints, whoever sent it.

use peerdex_logger::rpc::OpRecord;
use peerdex_protocol::datetime;
use peerdex_protocol::request::PartialRequest;
use peerdex_protocol::{Checked, OpKind, Operation, Outcome, Request};

/// Stands for a field that could not be read (over-long, not UTF-8).
const MALFORMED: &str = "<malformed>";
/// Stands for a field that never arrived.
const MISSING: &str = "<missing>";

/// The record of a request that reached the rules and was answered with
/// `outcome`.
pub fn answered(request: &Request, kind: OpKind, outcome: Outcome) -> OpRecord {
    let file = match &request.operation {
        Operation::Publish { file, .. }
        | Operation::PublishContent { file, .. }
        | Operation::Delete { file } => Some(label(file)),
        _ => None,
    };
    OpRecord {
        user: label(&request.user),
        op: op_name(kind).to_string(),
        file,
        datetime: request.datetime.clone().unwrap_or_else(datetime::now),
        outcome: Some(replied(kind, outcome).text().to_string()),
    }
}

/// The record of a request that could not be read to its end and was
/// answered with the catch-all.
pub fn refused(kind: OpKind, partial: PartialRequest) -> OpRecord {
    let file = match kind {
        OpKind::Publish | OpKind::PublishContent | OpKind::Delete => Some(
            partial
                .file
                .as_ref()
                .map_or_else(|| MISSING.to_string(), label),
        ),
        _ => None,
    };
    OpRecord {
        user: partial
            .user
            .as_ref()
            .map_or_else(|| MISSING.to_string(), label),
        op: op_name(kind).to_string(),
        file,
        datetime: partial.datetime.unwrap_or_else(datetime::now),
        outcome: Some(Outcome::Fail.text().to_string()),
    }
}

/// The operation as the user knows it: PUBLISH_CONTENT is how the shell
/// sends a PUBLISH whose content it hashed.
pub fn op_name(kind: OpKind) -> &'static str {
    match kind {
        OpKind::PublishContent => OpKind::Publish.name(),
        other => other.name(),
    }
}

/// The outcome the client reads from the code written for `outcome`;
/// except that a refusal (a protected account acted for by someone who did
/// not prove its password) stays `REFUSED`, although the client reads the
/// catch-all, so that the logger's reader can tell it from a failure.
pub fn replied(kind: OpKind, outcome: Outcome) -> Outcome {
    if outcome == Outcome::Refused {
        return Outcome::Refused;
    }
    kind.outcome(kind.code(outcome)).unwrap_or(Outcome::Fail)
}

/// A field's text, or what stands for it when it could not be read.
fn label(field: &Checked<String>) -> String {
    match field {
        Ok(text) => text.clone(),
        Err(_) => MALFORMED.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerdex_protocol::{ConnectAddr, Malformed};

    const DT: &str = "21/11/2026 09:05:07";

    fn request(user: &str, operation: Operation) -> Request {
        Request {
            datetime: Some(DT.into()),
            user: Ok(user.into()),
            operation,
        }
    }

    #[test]
    fn both_publish_forms_are_publish() {
        let content = Operation::PublishContent {
            file: Ok("song.mp3".into()),
            description: Ok("d".into()),
            size: Ok(5),
            hash: Ok([0; 32]),
        };
        let record = answered(&request("al", content), OpKind::PublishContent, Outcome::Ok);
        assert_eq!(record.op, "PUBLISH");
        assert_eq!(record.file.as_deref(), Some("song.mp3"));
        assert_eq!(record.outcome.as_deref(), Some("OK"));
        assert_eq!(op_name(OpKind::Search), "SEARCH");
        assert_eq!(op_name(OpKind::FindSources), "FIND_SOURCES");
    }

    #[test]
    fn failures_carry_their_name() {
        let connect = Operation::Connect(ConnectAddr {
            ip: Ok(None),
            port: Ok(4000),
        });
        let record = answered(
            &request("bob", connect),
            OpKind::Connect,
            Outcome::UserDoesNotExist,
        );
        assert_eq!(record.outcome.as_deref(), Some("USER DOES NOT EXIST"));
    }

    #[test]
    fn an_outcome_the_op_cannot_have_is_logged_as_its_code_says() {
        // REGISTER has no CONTENT NOT PUBLISHED: its code is the catch-all.
        let record = answered(
            &request("al", Operation::Register),
            OpKind::Register,
            Outcome::ContentNotPublished,
        );
        assert_eq!(record.outcome.as_deref(), Some("FAIL"));
    }

    #[test]
    fn a_refusal_is_logged_as_refused_though_its_code_is_the_catch_all() {
        let record = answered(
            &request("al", Operation::Register),
            OpKind::Register,
            Outcome::Refused,
        );
        assert_eq!(record.outcome.as_deref(), Some("REFUSED"));
    }

    #[test]
    fn malformed_and_missing_fields_are_labelled() {
        let mut bad = request(
            "al",
            Operation::Delete {
                file: Err(Malformed::NotUtf8),
            },
        );
        bad.user = Err(Malformed::TooLong);
        let record = answered(&bad, OpKind::Delete, Outcome::Fail);
        assert_eq!(
            (record.user.as_str(), record.file.as_deref()),
            ("<malformed>", Some("<malformed>"))
        );
        let record = refused(OpKind::Publish, PartialRequest::default());
        assert_eq!(
            (record.user.as_str(), record.file.as_deref()),
            ("<missing>", Some("<missing>"))
        );
        assert_eq!(record.outcome.as_deref(), Some("FAIL"));
        assert!(datetime::is_datetime(&record.datetime));
    }
}
