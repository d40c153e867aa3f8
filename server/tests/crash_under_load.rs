//! Group commit must not weaken "a reply of 0 means
//! durable". Many clients write concurrently (so batches are large), the
//! real server binary is SIGKILLed in the middle, restarted on the same data
//! directory, and every operation that was answered 0 must be found.
//!
//! Each writer thread owns its users and runs their operations one after
//! another, so the state every user must have after the restart follows from
//! the replies it got. The one operation in flight when the server died (no
//! reply) may or may not have been applied: its user is left out of the
//! check, every other user is checked exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

const DT: &str = "21/11/2026 09:05:07";
const WRITERS: usize = 32;
/// How long the write-heavy load runs before the SIGKILL.
const LOAD_BEFORE_KILL: Duration = Duration::from_millis(1500);

/// The server child process and where it listens.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data_dir: &Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_peerdex-server"))
        .args(["-p", "0", "--bind", "127.0.0.1", "--data-dir"])
        .arg(data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the server binary");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the init line");
    let addr = line
        .trim()
        .strip_prefix("s> init server ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .expect("address in the init line");
    Server { child, addr }
}

/// One request on its own connection; the reply's fields, or an error when
/// the server is gone.
fn call(addr: SocketAddr, fields: &[&str]) -> std::io::Result<Vec<String>> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request = Vec::new();
    for field in fields {
        request.extend_from_slice(field.as_bytes());
        request.push(0);
    }
    stream.write_all(&request)?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply)?;
    if reply.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "no reply",
        ));
    }
    Ok(String::from_utf8_lossy(&reply)
        .split_terminator('\0')
        .map(str::to_string)
        .collect())
}

/// What a user must look like after the restart.
#[derive(Debug, Default, Clone)]
struct Expected {
    registered: bool,
    connected: bool,
    files: BTreeSet<String>,
}

/// Users whose state is known exactly, and how many operations got a 0.
struct WriterResult {
    users: BTreeMap<String, Expected>,
    acknowledged: usize,
}

/// Runs operations for users `w{id}_{i}` until the server dies or `stop`.
fn writer(addr: SocketAddr, id: usize, stop: &AtomicBool) -> WriterResult {
    let mut users = BTreeMap::new();
    let mut acknowledged = 0;
    for i in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let user = format!("w{id}_{i}");
        let port = (1000 + i % 60000).to_string();
        let mut steps: Vec<Vec<&str>> = vec![
            vec!["REGISTER", DT, &user],
            vec!["CONNECT", DT, &user, "127.0.0.1", &port],
            vec!["PUBLISH", DT, &user, "a.txt", "first file"],
            vec!["PUBLISH", DT, &user, "b.txt", "second file"],
            vec!["DELETE", DT, &user, "a.txt"],
        ];
        if i % 3 == 0 {
            steps.push(vec!["DISCONNECT", DT, &user]);
        }
        if i % 5 == 0 {
            steps.push(vec!["UNREGISTER", DT, &user]);
        }
        let mut state = Expected::default();
        for step in &steps {
            match call(addr, step) {
                Ok(reply) => {
                    assert_eq!(reply.first().map(String::as_str), Some("0"), "{step:?}");
                    acknowledged += 1;
                    match step[0] {
                        "REGISTER" => state.registered = true,
                        "CONNECT" => state.connected = true,
                        "DISCONNECT" => state.connected = false,
                        "PUBLISH" => {
                            state.files.insert(step[3].to_string());
                        }
                        "DELETE" => {
                            state.files.remove(step[3]);
                        }
                        "UNREGISTER" => state = Expected::default(),
                        other => unreachable!("{other}"),
                    }
                }
                // The server died with this operation in flight: its user's
                // state is uncertain, leave it out; this writer is done.
                Err(_) => {
                    return WriterResult {
                        users,
                        acknowledged,
                    }
                }
            }
        }
        users.insert(user, state);
    }
    WriterResult {
        users,
        acknowledged,
    }
}

#[test]
fn sigkill_during_write_load_loses_no_acknowledged_operation() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let mut server = start(&data);
    let addr = server.addr;

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|id| {
            let stop = stop.clone();
            thread::spawn(move || writer(addr, id, &stop))
        })
        .collect();
    thread::sleep(LOAD_BEFORE_KILL);
    // Child::kill is SIGKILL on Unix: no flush, no shutdown path.
    server.child.kill().expect("SIGKILL the server");
    server.child.wait().expect("reap the server");
    stop.store(true, Ordering::Relaxed);

    let mut expected = BTreeMap::new();
    let mut acknowledged = 0;
    for handle in writers {
        let result = handle.join().expect("writer thread");
        acknowledged += result.acknowledged;
        expected.extend(result.users);
    }
    assert!(
        acknowledged > 200,
        "only {acknowledged} operations acknowledged: the load was not write-heavy"
    );

    eprintln!(
        "{acknowledged} operations acknowledged before the SIGKILL; checking {} users",
        expected.len()
    );
    let server = start(&data);
    let addr = server.addr;
    let checker = "zz_checker";
    assert_eq!(call(addr, &["REGISTER", DT, checker]).unwrap()[0], "0");
    let connect = ["CONNECT", DT, checker, "127.0.0.1", "9"];
    assert_eq!(call(addr, &connect).unwrap()[0], "0");

    let listed = call(addr, &["LIST_USERS", DT, checker]).unwrap();
    assert_eq!(listed[0], "0");
    let connected: BTreeSet<&str> = listed[2..].chunks(3).map(|e| e[0].as_str()).collect();

    let mut lost = Vec::new();
    for (user, want) in &expected {
        let reply = call(addr, &["LIST_CONTENT", DT, checker, user]).unwrap();
        if want.registered {
            let files: BTreeSet<String> = reply
                .get(2..)
                .unwrap_or_default()
                .chunks(2)
                .map(|e| e[0].clone())
                .collect();
            if reply[0] != "0" || files != want.files {
                lost.push(format!(
                    "{user}: want files {:?}, got {reply:?}",
                    want.files
                ));
            }
        } else if reply[0] != "3" {
            lost.push(format!(
                "{user}: unregistered, but LIST_CONTENT gave {reply:?}"
            ));
        }
        if want.connected != connected.contains(user.as_str()) {
            lost.push(format!("{user}: connected should be {}", want.connected));
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} users differ after the restart ({acknowledged} ops acknowledged):\n{}",
        lost.len(),
        expected.len(),
        lost.join("\n")
    );
}
