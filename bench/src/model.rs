//! The directory the benchmark builds and what every reply must look like.
//!
//! Names are derived from the user index so that a server populated once can
//! be measured by any later run (`--skip-populate`) without shared state.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use bytes::BytesMut;
use peerdex_protocol::{
    datetime, CodecError, ConnectAddr, ContentEntry, Operation, Request, UserEntry,
};

/// The IP every benchmark user registers as its (fake) peer address.
pub const USER_IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Prefix of temporary files published and deleted by the workload.
pub const TEMP_PREFIX: &str = "tmp-";

pub fn user_name(i: usize) -> String {
    format!("bench-u{i}")
}

/// The fake listening port of user `i`: only a directory entry, nobody
/// listens there.
pub fn user_port(i: usize) -> u16 {
    // i % 50_000 + 10_000 < 60_000: always a valid port.
    (10_000 + i % 50_000) as u16
}

/// The two permanent files of user `i`, with their descriptions.
pub fn permanent_files(i: usize) -> [(String, String); 2] {
    [
        (format!("f{i}a"), format!("bench file {i} a")),
        (format!("f{i}b"), format!("bench file {i} b")),
    ]
}

/// A temporary file name unique to one client loop and sequence number.
pub fn temp_file(client: usize, seq: u64) -> String {
    format!("{TEMP_PREFIX}{client}-{seq}")
}

pub fn connect_op(i: usize) -> Operation {
    Operation::Connect(ConnectAddr {
        ip: Ok(Some(USER_IP)),
        port: Ok(user_port(i)),
    })
}

pub fn publish_op(file: String, description: String) -> Operation {
    Operation::Publish {
        file: Ok(file),
        description: Ok(description),
    }
}

/// Encodes one request of user `i`.
pub fn encode(i: usize, operation: Operation, datetime: &str) -> Result<BytesMut, CodecError> {
    Request {
        datetime: None,
        user: Ok(user_name(i)),
        operation,
    }
    .encode(datetime)
}

/// The DATETIME field, formatted at most once a second: formatting the local
/// time per operation would cost the load generator CPU that the server
/// under test competes for.
#[derive(Debug, Default)]
pub struct DateCache {
    at: Option<Instant>,
    text: String,
}

impl DateCache {
    pub fn get(&mut self) -> &str {
        let stale = match self.at {
            Some(at) => at.elapsed().as_secs() >= 1,
            None => true,
        };
        if stale {
            self.text = datetime::now();
            self.at = Some(Instant::now());
        }
        &self.text
    }
}

/// Checks a LIST_CONTENT reply for user `remote`: both permanent files with
/// their descriptions, and nothing else but other loops' temporary files.
pub fn check_content(remote: usize, files: &[ContentEntry]) -> Result<(), String> {
    for (file, description) in permanent_files(remote) {
        match files.iter().find(|e| e.file == file) {
            None => return Err(format!("{} lacks file {file}", user_name(remote))),
            Some(e) if e.description != description => {
                return Err(format!(
                    "{file} has description {:?}, expected {description:?}",
                    e.description
                ))
            }
            Some(_) => {}
        }
    }
    let extra = files.len() - 2;
    let temps = files
        .iter()
        .filter(|e| e.file.starts_with(TEMP_PREFIX))
        .count();
    if extra != temps {
        return Err(format!(
            "{} lists {} files, expected 2 plus temporary ones",
            user_name(remote),
            files.len()
        ));
    }
    Ok(())
}

/// Checks a LIST_USERS reply: every benchmark user listed has the address it
/// connected with, and at most `clients` of the `users` are missing (each
/// client loop disconnects at most one of its own users at a time).
pub fn check_users(entries: &[UserEntry], users: usize, clients: usize) -> Result<(), String> {
    let mut listed = 0usize;
    for entry in entries {
        let Some(i) = entry
            .name
            .strip_prefix("bench-u")
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        if entry.ip != USER_IP.to_string() || entry.port != user_port(i).to_string() {
            return Err(format!(
                "{} listed at {}:{}, expected {}:{}",
                entry.name,
                entry.ip,
                entry.port,
                USER_IP,
                user_port(i)
            ));
        }
        if i < users {
            listed += 1;
        }
    }
    if listed + clients < users {
        return Err(format!(
            "only {listed} of {users} users connected (at most {clients} may be mid-reconnect)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(file: &str, description: &str) -> ContentEntry {
        ContentEntry {
            file: file.into(),
            description: description.into(),
        }
    }

    #[test]
    fn content_check_accepts_permanent_and_temporary_files() {
        let ok = [
            entry("f7b", "bench file 7 b"),
            entry("tmp-3-9", "temp"),
            entry("f7a", "bench file 7 a"),
        ];
        assert!(check_content(7, &ok).is_ok());
        assert!(check_content(7, &ok[..2]).is_err());
        let stray = [
            entry("f7a", "bench file 7 a"),
            entry("f7b", "bench file 7 b"),
            entry("other", ""),
        ];
        assert!(check_content(7, &stray).is_err());
    }

    #[test]
    fn users_check_tolerates_loops_mid_reconnect() {
        let user = |i: usize| UserEntry {
            name: user_name(i),
            ip: "127.0.0.1".into(),
            port: user_port(i).to_string(),
        };
        let all: Vec<_> = (0..10).map(user).collect();
        assert!(check_users(&all, 10, 2).is_ok());
        assert!(check_users(&all[..8], 10, 2).is_ok());
        assert!(check_users(&all[..7], 10, 2).is_err());
        let mut wrong = all.clone();
        wrong[3].port = "1".into();
        assert!(check_users(&wrong, 10, 2).is_err());
    }
}
