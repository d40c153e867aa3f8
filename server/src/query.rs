//! SEARCH, FIND_SOURCES and WHOIS: read-only extension ops answered from
//! the in-memory indexes ([`crate::index`]) and tables ([`crate::state`]).
//!
//! The index lock is held only to copy the (bounded) hits out; descriptions,
//! sizes, hashes and addresses then come from the tables. Codes are
//! checked in the order of docs/PROTOCOL-EXTENSIONS.md (user exists, user
//! connected, the op's own condition, catch-all).

use bytes::BytesMut;
use peerdex_protocol::reply::{
    put_code, put_count, put_hash, put_search_entry, put_size, put_source_entry, put_whois,
    SearchEntry, Whois,
};
use peerdex_protocol::request::MAX_SEARCH_LIMIT;
use peerdex_protocol::{Operation, Outcome};

use peerdex_protocol::CodecError;

use crate::index::{Digest, Pattern};
use crate::state::{Presence, State, Tables};

/// Most sources in one FIND_SOURCES reply: bounds the reply; a downloader
/// gains nothing from more peers than it can open connections to.
pub const MAX_SOURCES: usize = 1000;

/// The answer to a query op: an error code, or the whole reply.
#[derive(Debug)]
pub enum QueryAnswer {
    Status(Outcome),
    /// Code 0 and the body, ready to send (bounded by the result caps).
    Reply(BytesMut),
}

/// Answers SEARCH, FIND_SOURCES or WHOIS for `user`.
pub fn query(state: &State, user: &str, operation: &Operation) -> Result<QueryAnswer, CodecError> {
    if let Operation::Whois { target } = operation {
        // Presence is public, as in LIST_USERS: the requester is not
        // looked at.
        return match target {
            Ok(target) => whois(&state.tables(), target),
            Err(_) => Ok(QueryAnswer::Status(Outcome::Fail)),
        };
    }
    {
        match state.tables().presence(user) {
            Presence::Unknown => return Ok(QueryAnswer::Status(Outcome::UserDoesNotExist)),
            Presence::Registered => return Ok(QueryAnswer::Status(Outcome::UserNotConnected)),
            Presence::Connected => {}
        }
    }
    match operation {
        Operation::Search { pattern, limit } => {
            let (Ok(pattern), Ok(limit)) = (pattern, limit) else {
                return Ok(QueryAnswer::Status(Outcome::Fail));
            };
            let Ok(pattern) = Pattern::parse(pattern) else {
                return Ok(QueryAnswer::Status(Outcome::Fail));
            };
            search(state, &pattern, (*limit).min(MAX_SEARCH_LIMIT) as usize)
        }
        Operation::FindSources {
            hash,
            remote_user,
            file,
        } => match hash {
            Err(_) => Ok(QueryAnswer::Status(Outcome::Fail)),
            Ok(Some(hash)) => by_hash(state, hash, None),
            Ok(None) => match (remote_user, file) {
                (Ok(remote), Ok(file)) if !remote.is_empty() && !file.is_empty() => {
                    by_entry(state, remote, file)
                }
                _ => Ok(QueryAnswer::Status(Outcome::Fail)),
            },
        },
        _ => Ok(QueryAnswer::Status(Outcome::Fail)),
    }
}

/// WHOIS `target`: online at its LIST_USERS address, or offline since its
/// last disconnect.
fn whois(tables: &Tables, target: &str) -> Result<QueryAnswer, CodecError> {
    if !tables.user_exists(target) {
        return Ok(QueryAnswer::Status(Outcome::UserDoesNotExist));
    }
    let whois = match tables.address(target) {
        Some(addr) => Whois::Online {
            ip: addr.ip().to_string(),
            port: addr.port().to_string(),
        },
        None => Whois::Offline {
            last_seen: tables.last_seen(target).map(utc_datetime),
        },
    };
    let mut reply = BytesMut::with_capacity(64);
    put_code(&mut reply, 0);
    put_whois(&mut reply, &whois)?;
    Ok(QueryAnswer::Reply(reply))
}

/// `secs` since the Unix epoch as a DATETIME field in UTC
/// (`DD/MM/YYYY HH:MM:SS`), by the proleptic Gregorian calendar.
fn utc_datetime(secs: u64) -> String {
    let days = secs / 86_400;
    let of_day = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{day:02}/{month:02}/{year:04} {:02}:{:02}:{:02}",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// The (year, month, day) `days` after 1970-01-01: Howard Hinnant's
/// `civil_from_days`, for non-negative day counts.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

fn search(state: &State, pattern: &Pattern, limit: usize) -> Result<QueryAnswer, CodecError> {
    let (total, hits) = {
        let indexes = state.indexes();
        let (total, hits) = indexes.names.search(pattern, limit);
        let hits: Vec<(String, String, bool)> = hits
            .into_iter()
            .map(|h| (h.owner.to_string(), h.file.to_string(), h.connected))
            .collect();
        (total, hits)
    };
    let mut body = BytesMut::with_capacity(64 * hits.len());
    let mut count = 0u64;
    let view = state.tables();
    for (owner, file, connected) in hits {
        // Gone since the index was read: leave it out.
        let Some(info) = view.file(&owner, &file) else {
            continue;
        };
        let entry = SearchEntry {
            description: info.description.to_string(),
            size: info.content.map(|c| c.0),
            hash: info.content.map(|c| c.1),
            owner,
            file,
            connected,
        };
        put_search_entry(&mut body, &entry)?;
        count += 1;
    }
    let mut reply = BytesMut::with_capacity(body.len() + 32);
    put_code(&mut reply, 0);
    put_count(&mut reply, total.max(count));
    put_count(&mut reply, count);
    reply.extend_from_slice(&body);
    Ok(QueryAnswer::Reply(reply))
}

/// FIND_SOURCES naming REMOTE_USER's FILE.
fn by_entry(state: &State, remote: &str, file: &str) -> Result<QueryAnswer, CodecError> {
    let (content, address) = {
        let view = state.tables();
        let Some(info) = view.file(remote, file) else {
            return Ok(QueryAnswer::Status(Outcome::ContentNotPublished));
        };
        (info.content, view.address(remote))
    };
    match content {
        Some((size, hash)) => by_hash(state, &hash, Some(size)),
        None => {
            // Published without a hash: nobody can be proven to hold the
            // same bytes, so the owner alone is the source.
            let mut reply = BytesMut::new();
            put_code(&mut reply, 0);
            put_size(&mut reply, None);
            put_hash(&mut reply, None);
            match address {
                Some(addr) => {
                    put_count(&mut reply, 1);
                    put_source_entry(&mut reply, remote, addr.ip(), addr.port(), file)?;
                }
                None => put_count(&mut reply, 0),
            }
            Ok(QueryAnswer::Reply(reply))
        }
    }
}

/// FIND_SOURCES for a hash: every connected owner of an entry with it
/// (one source per user, its first such file by name), ordered by user.
fn by_hash(state: &State, hash: &Digest, size: Option<u64>) -> Result<QueryAnswer, CodecError> {
    let (known_size, mut owners) = {
        let indexes = state.indexes();
        let ids = indexes.content.entries(hash);
        let known_size = ids.first().and_then(|id| indexes.content.content(*id));
        let owners: Vec<(String, String)> = ids
            .iter()
            .filter_map(|id| indexes.names.hit(*id))
            .filter(|hit| hit.connected)
            .map(|hit| (hit.owner.to_string(), hit.file.to_string()))
            .collect();
        (known_size.map(|c| c.0), owners)
    };
    let Some(size) = size.or(known_size) else {
        return Ok(QueryAnswer::Status(Outcome::ContentNotPublished));
    };
    owners.sort_unstable();
    owners.dedup_by(|a, b| a.0 == b.0);
    let mut body = BytesMut::new();
    let mut count = 0u64;
    let view: &Tables = &state.tables();
    for (owner, file) in owners.into_iter().take(MAX_SOURCES) {
        if let Some(addr) = view.address(&owner) {
            put_source_entry(&mut body, &owner, addr.ip(), addr.port(), &file)?;
            count += 1;
        }
    }
    let mut reply = BytesMut::with_capacity(body.len() + 96);
    put_code(&mut reply, 0);
    put_size(&mut reply, Some(size));
    put_hash(&mut reply, Some(hash));
    put_count(&mut reply, count);
    reply.extend_from_slice(&body);
    Ok(QueryAnswer::Reply(reply))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_are_utc_in_the_protocol_format() {
        assert_eq!(utc_datetime(0), "01/01/1970 00:00:00");
        // 2000-02-29 (a leap day of a century year) 12:34:56.
        assert_eq!(utc_datetime(951_827_696), "29/02/2000 12:34:56");
        assert_eq!(utc_datetime(1_709_164_800 + 86_399), "29/02/2024 23:59:59");
        assert_eq!(utc_datetime(1_735_689_600), "01/01/2025 00:00:00");
        assert!(peerdex_protocol::datetime::is_datetime(&utc_datetime(
            4_102_444_799
        )));
        assert_eq!(utc_datetime(4_102_444_799), "31/12/2099 23:59:59");
    }
}
