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

use crate::client::ListVisitor;

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

/// CONNECT at a given listener address.
pub fn connect_at(peer: std::net::SocketAddr) -> Operation {
    Operation::Connect(ConnectAddr {
        ip: Ok(Some(peer.ip())),
        port: Ok(peer.port()),
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

/// Checks a LIST_CONTENT listing of user `remote` entry by entry: both
/// permanent files with their descriptions, and nothing else but other
/// loops' temporary files.
#[derive(Debug)]
pub struct ContentCheck {
    remote: usize,
    permanent: [(String, String); 2],
    found: [bool; 2],
    entries: usize,
    error: Option<String>,
}

impl ContentCheck {
    pub fn new(remote: usize) -> Self {
        ContentCheck {
            remote,
            permanent: permanent_files(remote),
            found: [false; 2],
            entries: 0,
            error: None,
        }
    }

    pub fn finish(self) -> Result<(), String> {
        if let Some(error) = self.error {
            return Err(error);
        }
        for (i, (file, _)) in self.permanent.iter().enumerate() {
            if !self.found[i] {
                return Err(format!(
                    "{} lacks file {file} ({} entries listed)",
                    user_name(self.remote),
                    self.entries
                ));
            }
        }
        Ok(())
    }
}

impl ListVisitor for ContentCheck {
    fn entry(&mut self, fields: &[&str]) {
        self.entries += 1;
        if self.error.is_some() {
            return;
        }
        let (file, description) = (fields[0], fields[1]);
        if let Some(i) = self.permanent.iter().position(|(f, _)| f == file) {
            if self.found[i] {
                self.error = Some(format!("{file} listed twice"));
            } else if description != self.permanent[i].1 {
                self.error = Some(format!(
                    "{file} has description {description:?}, expected {:?}",
                    self.permanent[i].1
                ));
            }
            self.found[i] = true;
        } else if !file.starts_with(TEMP_PREFIX) {
            self.error = Some(format!(
                "{} lists unexpected file {file:?}",
                user_name(self.remote)
            ));
        }
    }
}

/// Checks a LIST_USERS listing entry by entry: every benchmark user listed
/// has the address it connected with, and at most `clients` of the `users`
/// are missing (each client loop disconnects at most one of its own users at
/// a time). Users of other names are ignored.
#[derive(Debug)]
pub struct UsersCheck {
    users: usize,
    clients: usize,
    listed: usize,
    error: Option<String>,
}

impl UsersCheck {
    pub fn new(users: usize, clients: usize) -> Self {
        UsersCheck {
            users,
            clients,
            listed: 0,
            error: None,
        }
    }

    pub fn finish(self) -> Result<(), String> {
        if let Some(error) = self.error {
            return Err(error);
        }
        if self.listed + self.clients < self.users {
            return Err(format!(
                "only {} of {} users listed as connected (at most {} may be mid-reconnect)",
                self.listed, self.users, self.clients
            ));
        }
        Ok(())
    }
}

impl ListVisitor for UsersCheck {
    fn entry(&mut self, fields: &[&str]) {
        let (name, ip, port) = (fields[0], fields[1], fields[2]);
        let Some(i) = name
            .strip_prefix("bench-u")
            .and_then(|n| n.parse::<usize>().ok())
        else {
            return;
        };
        // Compared without formatting: this runs once per listed user.
        let ip_ok = ip == "127.0.0.1" || ip.parse::<IpAddr>() == Ok(USER_IP);
        let port_ok = port.parse::<u16>() == Ok(user_port(i));
        if !(ip_ok && port_ok) && self.error.is_none() {
            self.error = Some(format!(
                "{name} listed at {ip}:{port}, expected {USER_IP}:{}",
                user_port(i)
            ));
        }
        if i < self.users {
            self.listed += 1;
        }
    }
}

/// Ignores the entries: checking codes only (the null server's lists are
/// empty by design).
pub struct Ignore;

impl ListVisitor for Ignore {
    fn entry(&mut self, _: &[&str]) {}
}

/// [`ContentCheck`] over a decoded reply (the `--protocol-reader` path).
pub fn check_content(remote: usize, files: &[ContentEntry]) -> Result<(), String> {
    let mut check = ContentCheck::new(remote);
    for e in files {
        check.entry(&[&e.file, &e.description]);
    }
    check.finish()
}

/// [`UsersCheck`] over a decoded reply (the `--protocol-reader` path).
pub fn check_users(entries: &[UserEntry], users: usize, clients: usize) -> Result<(), String> {
    let mut check = UsersCheck::new(users, clients);
    for e in entries {
        check.entry(&[&e.name, &e.ip, &e.port]);
    }
    check.finish()
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
        let twice = [
            entry("f7a", "bench file 7 a"),
            entry("f7a", "bench file 7 a"),
            entry("f7b", "bench file 7 b"),
        ];
        assert!(check_content(7, &twice).is_err());
        let wrong = [entry("f7a", "bench file 7 a"), entry("f7b", "x")];
        assert!(check_content(7, &wrong).is_err());
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
