//! Stand-ins for other deployed systems of the protocol family, in a
//! thread each: a classic directory ([`ClassicDirectory`]) that behaves like
//! one of the servers peerdex must work with, and a classic peer
//! ([`ClassicPeer`]) that serves GET_FILE and records what it was sent.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How a classic directory treats what it does not know, and CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// Closes the connection without a reply on an unknown op.
    ClosesUnknown,
    /// Neither replies to nor closes a connection carrying an unknown op
    /// (until the client gives up).
    SilentOnUnknown,
    /// Answers an unknown op with `-1`.
    MinusOneOnUnknown,
    /// Like `ClosesUnknown`, but reads a single field after USER in
    /// CONNECT and takes it as the port (the IP is the source address).
    PortOnlyConnect,
}

/// A classic directory: the classic ops with their codes, unknown ops as
/// its [`Flavour`] says. Records the ops it was sent.
pub struct ClassicDirectory {
    pub port: u16,
    ops: Arc<Mutex<Vec<String>>>,
}

#[derive(Default)]
struct ClassicState {
    /// user -> listening address when connected.
    users: HashMap<String, Option<(String, String)>>,
    /// user -> (file, description).
    files: HashMap<String, Vec<(String, String)>>,
}

impl ClassicDirectory {
    pub fn start(flavour: Flavour) -> ClassicDirectory {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind classic directory");
        let port = listener.local_addr().expect("local addr").port();
        let ops = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&ops);
        std::thread::spawn(move || {
            let mut state = ClassicState::default();
            // Connections left hanging by a silent flavour.
            let mut held = Vec::new();
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let served = serve(&mut stream, &mut state, flavour);
                if let Some((op, hold)) = served {
                    seen.lock().unwrap_or_else(|e| e.into_inner()).push(op);
                    if hold {
                        held.push(stream);
                    }
                }
            }
        });
        ClassicDirectory { port, ops }
    }

    /// The ops received so far, in order.
    pub fn ops(&self) -> Vec<String> {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many times `op` was received.
    pub fn count(&self, op: &str) -> usize {
        self.ops().iter().filter(|o| *o == op).count()
    }
}

fn read_field(stream: &mut TcpStream) -> Option<String> {
    let mut field = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        stream.read_exact(&mut byte).ok()?;
        if byte[0] == 0 {
            return String::from_utf8(field).ok();
        }
        field.push(byte[0]);
    }
}

/// Handles one connection; returns the op name and whether to hold the
/// connection open without a reply.
fn serve(
    stream: &mut TcpStream,
    state: &mut ClassicState,
    flavour: Flavour,
) -> Option<(String, bool)> {
    let op = read_field(stream)?.trim().to_string();
    let connect_fields = if flavour == Flavour::PortOnlyConnect {
        1
    } else {
        2
    };
    let extra = match op.as_str() {
        "REGISTER" | "UNREGISTER" | "DISCONNECT" | "LIST_USERS" => 0,
        "DELETE" | "LIST_CONTENT" => 1,
        "CONNECT" => connect_fields,
        "PUBLISH" => 2,
        _ => {
            return match flavour {
                Flavour::SilentOnUnknown => Some((op, true)),
                Flavour::MinusOneOnUnknown => {
                    let _ = stream.write_all(b"-1\0");
                    Some((op, false))
                }
                // Close without a reply, unread bytes and all.
                _ => Some((op, false)),
            };
        }
    };
    let _datetime = read_field(stream)?;
    let user = read_field(stream)?;
    let args: Vec<String> = (0..extra).filter_map(|_| read_field(stream)).collect();
    if args.len() < extra {
        return Some((op, false));
    }
    let source_ip = stream
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let mut reply: Vec<String> = Vec::new();
    let known = state.users.contains_key(&user);
    let connected = state.users.get(&user).is_some_and(|a| a.is_some());
    match op.as_str() {
        "REGISTER" if known => reply.push("1".into()),
        "REGISTER" => {
            state.users.insert(user, None);
            reply.push("0".into());
        }
        "UNREGISTER" if !known => reply.push("1".into()),
        "UNREGISTER" => {
            state.users.remove(&user);
            state.files.remove(&user);
            reply.push("0".into());
        }
        "CONNECT" if !known => reply.push("1".into()),
        "CONNECT" if connected => reply.push("2".into()),
        "CONNECT" => {
            let addr = if flavour == Flavour::PortOnlyConnect {
                // The one field is the port, read the way C's atoi would.
                let digits: String = args[0].chars().take_while(char::is_ascii_digit).collect();
                (source_ip, digits)
            } else {
                (args[0].clone(), args[1].clone())
            };
            state.users.insert(user, Some(addr));
            reply.push("0".into());
        }
        "DISCONNECT" if !known => reply.push("1".into()),
        "DISCONNECT" if !connected => reply.push("2".into()),
        "DISCONNECT" => {
            state.users.insert(user, None);
            reply.push("0".into());
        }
        "PUBLISH" if !known => reply.push("1".into()),
        "PUBLISH" if !connected => reply.push("2".into()),
        "PUBLISH" => {
            let files = state.files.entry(user).or_default();
            files.push((args[0].clone(), args[1].clone()));
            reply.push("0".into());
        }
        "LIST_USERS" => {
            reply.push("0".into());
            let online: Vec<_> = state
                .users
                .iter()
                .filter_map(|(name, addr)| addr.as_ref().map(|a| (name, a)))
                .collect();
            reply.push(online.len().to_string());
            for (name, (ip, port)) in online {
                reply.extend([name.clone(), ip.clone(), port.clone()]);
            }
        }
        "LIST_CONTENT" => {
            let files = state.files.get(&args[0]).cloned().unwrap_or_default();
            reply.extend(["0".to_string(), files.len().to_string()]);
            for (file, description) in files {
                reply.extend([file, description]);
            }
        }
        _ => reply.push("4".into()),
    }
    let mut bytes = Vec::new();
    for field in reply {
        bytes.extend_from_slice(field.as_bytes());
        bytes.push(0);
    }
    let _ = stream.write_all(&bytes);
    Some((op, false))
}

/// What a classic peer answers to one request.
pub type PeerAnswer = dyn Fn(&[u8]) -> Vec<u8> + Send + Sync;

/// A peer in a thread: answers each connection's request with `answer`
/// (given the raw bytes received until two NULs or a pause) and records
/// every request's raw bytes.
pub struct ClassicPeer {
    pub port: u16,
    requests: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl ClassicPeer {
    pub fn start(answer: impl Fn(&[u8]) -> Vec<u8> + Send + Sync + 'static) -> ClassicPeer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind classic peer");
        let port = listener.local_addr().expect("local addr").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
                let request = read_request(&mut stream);
                let reply = answer(&request);
                seen.lock().unwrap_or_else(|e| e.into_inner()).push(request);
                let _ = stream.write_all(&reply);
            }
        });
        ClassicPeer { port, requests }
    }

    /// Serves `content` to `GET_FILE` in either form, answers 2 to anything else.
    pub fn serving(content: &'static [u8]) -> ClassicPeer {
        ClassicPeer::start(move |request| {
            let op = request.split(|&b| b == 0).next().unwrap_or_default();
            if op.trim_ascii() == b"GET_FILE" {
                let mut reply = b"0\0".to_vec();
                reply.extend_from_slice(content);
                reply
            } else {
                b"2\0".to_vec()
            }
        })
    }

    /// The raw requests received so far.
    pub fn requests(&self) -> Vec<Vec<u8>> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The op field of each request, trimmed.
    pub fn ops(&self) -> Vec<String> {
        self.requests()
            .iter()
            .map(|r| {
                let op = r.split(|&b| b == 0).next().unwrap_or_default();
                String::from_utf8_lossy(op).trim().to_string()
            })
            .collect()
    }
}

/// Reads until two NULs (op and file) arrived, the peer paused, or closed.
fn read_request(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while got.iter().filter(|&&b| b == 0).count() < 2 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got
}
