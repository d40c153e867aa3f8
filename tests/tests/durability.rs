//! A reply of 0 is durable: state survives SIGKILL; SIGTERM is a clean
//! exit; a corrupt data dir is an error, never a silent empty state.

use std::path::Path;
use std::time::{Duration, Instant};

use peerdex_tests::raw::{code, request};
use peerdex_tests::{ServerProcess, TIMEOUT};

const DT: &str = "21/11/2026 09:05:07";

/// SIGKILLs the server and starts a new one on the same data dir.
fn crash_and_restart(server: &mut ServerProcess) -> ServerProcess {
    server.kill9().unwrap();
    ServerProcess::start(&server.data_dir, &[]).unwrap()
}

#[test]
fn replies_of_0_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(&dir.path().join("data"), &[]).unwrap();

    assert_eq!(code(server.port, "REGISTER", "alice", &[]).unwrap(), "0");
    let mut server2 = crash_and_restart(&mut server);
    assert_eq!(code(server2.port, "REGISTER", "alice", &[]).unwrap(), "1");

    // A listener that answers at the CONNECTed address: a listed address
    // that no longer answers would be taken over by the next CONNECT.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    assert_eq!(
        code(server2.port, "CONNECT", "alice", &["127.0.0.1", &port]).unwrap(),
        "0"
    );
    let mut server3 = crash_and_restart(&mut server2);
    assert_eq!(
        code(server3.port, "CONNECT", "alice", &["127.0.0.1", &port]).unwrap(),
        "2"
    );
    assert_eq!(
        request(server3.port, &["LIST_USERS", DT, "alice"]).unwrap(),
        ["0", "1", "alice", "127.0.0.1", &port]
    );

    assert_eq!(
        code(server3.port, "PUBLISH", "alice", &["song.mp3", "a song"]).unwrap(),
        "0"
    );
    let mut server4 = crash_and_restart(&mut server3);
    assert_eq!(
        request(server4.port, &["LIST_CONTENT", DT, "alice", "alice"]).unwrap(),
        ["0", "1", "song.mp3", "a song"]
    );

    assert_eq!(
        code(server4.port, "DELETE", "alice", &["song.mp3"]).unwrap(),
        "0"
    );
    assert_eq!(code(server4.port, "DISCONNECT", "alice", &[]).unwrap(), "0");
    let mut server5 = crash_and_restart(&mut server4);
    assert_eq!(
        request(server5.port, &["LIST_CONTENT", DT, "alice", "alice"]).unwrap()[0],
        "2",
        "alice must be disconnected after the restart"
    );
    assert_eq!(
        code(server5.port, "CONNECT", "alice", &["127.0.0.1", "7001"]).unwrap(),
        "0"
    );
    assert_eq!(
        request(server5.port, &["LIST_CONTENT", DT, "alice", "alice"]).unwrap(),
        ["0", "0"]
    );

    assert_eq!(code(server5.port, "UNREGISTER", "alice", &[]).unwrap(), "0");
    let server6 = crash_and_restart(&mut server5);
    assert_eq!(code(server6.port, "REGISTER", "alice", &[]).unwrap(), "0");
}

#[test]
fn many_quick_writes_then_sigkill_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(&dir.path().join("data"), &[]).unwrap();
    for i in 0..50 {
        assert_eq!(
            code(server.port, "REGISTER", &format!("u{i}"), &[]).unwrap(),
            "0"
        );
    }
    let server2 = crash_and_restart(&mut server);
    for i in 0..50 {
        assert_eq!(
            code(server2.port, "REGISTER", &format!("u{i}"), &[]).unwrap(),
            "1",
            "u{i} was lost"
        );
    }
}

#[test]
fn sigterm_exits_0_and_keeps_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(&dir.path().join("data"), &[]).unwrap();
    assert_eq!(code(server.port, "REGISTER", "alice", &[]).unwrap(), "0");
    let started = Instant::now();
    let status = server.terminate().unwrap();
    assert!(status.success(), "SIGTERM: exit status {status}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let server2 = ServerProcess::start(&server.data_dir, &[]).unwrap();
    assert_eq!(code(server2.port, "REGISTER", "alice", &[]).unwrap(), "1");
}

/// Overwrites every regular file under `dir` with garbage of its size (at
/// least 4 KiB).
fn corrupt(dir: &Path) -> usize {
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            count += corrupt(&path);
        } else if path.is_file() {
            let len = std::fs::metadata(&path).unwrap().len().max(4096) as usize;
            let garbage: Vec<u8> = (0..len).map(|i| (i * 7 + 13) as u8 ^ 0x5a).collect();
            std::fs::write(&path, garbage).unwrap();
            count += 1;
        }
    }
    count
}

#[test]
fn corrupt_data_dir_is_an_error_not_an_empty_state() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = ServerProcess::start(&data, &[]).unwrap();
    assert_eq!(code(server.port, "REGISTER", "alice", &[]).unwrap(), "0");
    assert!(server.terminate().unwrap().success());
    assert!(corrupt(&data) > 0, "the data dir holds no file");

    let mut proc = ServerProcess::spawn(0, &data, &[]).unwrap();
    let status = match proc.wait(TIMEOUT) {
        Ok(status) => status,
        Err(_) => {
            let line = proc.read_line(Duration::ZERO);
            panic!("the server runs on a corrupt data dir (stdout: {line:?})");
        }
    };
    assert!(
        !status.success(),
        "exit status {status} on a corrupt data dir"
    );
    let stderr = proc.stderr();
    assert!(!stderr.trim().is_empty(), "no error message on stderr");
    let stdout = proc.rest_of_stdout(Duration::from_millis(100));
    assert!(
        !stdout.iter().any(|l| l.starts_with("s> init server")),
        "the server announced itself on a corrupt data dir: {stdout:?}"
    );
}
