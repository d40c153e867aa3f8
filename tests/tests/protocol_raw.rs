//! Raw bytes against the real `peerdex-server` binary: framing, hostile and
//! old-style requests, linearizability, address recording.

use std::io::Write;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use peerdex_tests::raw::{self, code, encode, read_to_close, register_and_connect, request};
use peerdex_tests::ServerProcess;

const DT: &str = "21/11/2026 09:05:07";

fn server() -> (tempfile::TempDir, ServerProcess) {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"), &[]).unwrap();
    (dir, server)
}

#[test]
fn request_split_across_many_small_writes() {
    let (_dir, server) = server();
    let bytes = encode(&["REGISTER", DT, "alice"]);
    let mut stream = raw::connect(server.port).unwrap();
    raw::write_slowly(&mut stream, &bytes, 1, Duration::from_millis(5)).unwrap();
    let (reply, _) = read_to_close(&mut stream).unwrap();
    assert_eq!(raw::decode(&reply), ["0"]);

    // Fields split in the middle, in a few writes.
    let bytes = encode(&["REGISTER", DT, "alice"]);
    let mut stream = raw::connect(server.port).unwrap();
    raw::write_slowly(&mut stream, &bytes, 7, Duration::from_millis(20)).unwrap();
    let (reply, _) = read_to_close(&mut stream).unwrap();
    assert_eq!(raw::decode(&reply), ["1"]);
}

#[test]
fn over_long_file_field_gets_the_catch_all_code_and_a_close() {
    let (_dir, server) = server();
    register_and_connect(server.port, "alice", "5000");
    let long = "f".repeat(300);
    let reply = request(server.port, &["PUBLISH", DT, "alice", &long, "desc"]).unwrap();
    assert_eq!(reply, ["4"], "PUBLISH with a 300-byte FILE");
    // Over-long DESCRIPTION too.
    let long_desc = "d".repeat(256);
    let reply = request(server.port, &["PUBLISH", DT, "alice", "a.txt", &long_desc]).unwrap();
    assert_eq!(reply, ["4"], "PUBLISH with a 256-byte DESCRIPTION");
    // A 255-byte FILE is fine.
    let max = "m".repeat(255);
    let reply = request(server.port, &["PUBLISH", DT, "alice", &max, "desc"]).unwrap();
    assert_eq!(reply, ["0"], "PUBLISH with a 255-byte FILE");
    // Nothing of the rejected ones was published.
    let reply = request(server.port, &["LIST_CONTENT", DT, "alice", "alice"]).unwrap();
    assert_eq!(reply, ["0", "1", &max, "desc"]);
}

#[test]
fn unknown_user_gets_code_1_even_with_a_malformed_later_field() {
    let (_dir, server) = server();
    let long = "f".repeat(300);
    let reply = request(server.port, &["PUBLISH", DT, "ghost", &long, "desc"]).unwrap();
    assert_eq!(reply.first().map(String::as_str), Some("1"));
    let reply = request(server.port, &["LIST_USERS", DT, "ghost"]).unwrap();
    assert_eq!(reply.first().map(String::as_str), Some("1"));
    // An empty USER is a user that does not exist.
    let reply = request(server.port, &["LIST_USERS", DT, ""]).unwrap();
    assert_eq!(reply.first().map(String::as_str), Some("1"));
}

#[test]
fn unknown_op_is_closed_without_reply_and_the_server_goes_on() {
    let (_dir, server) = server();
    let reply = request(server.port, &["FROBNICATE", DT, "alice"]).unwrap();
    assert!(reply.is_empty(), "unknown op got a reply: {reply:?}");
    assert_eq!(code(server.port, "REGISTER", "alice", &[]).unwrap(), "0");
}

#[test]
fn op_field_whitespace_is_ignored() {
    let (_dir, server) = server();
    assert_eq!(code(server.port, "REGISTER ", "alice", &[]).unwrap(), "0");
    assert_eq!(code(server.port, " REGISTER\t", "alice", &[]).unwrap(), "1");
}

#[test]
fn datetime_may_be_omitted() {
    let (_dir, server) = server();
    assert_eq!(request(server.port, &["REGISTER", "bob"]).unwrap(), ["0"]);
    assert_eq!(code(server.port, "REGISTER", "bob", &[]).unwrap(), "1");
    assert_eq!(
        request(server.port, &["CONNECT", "bob", "127.0.0.1", "5001"]).unwrap(),
        ["0"]
    );
    assert_eq!(
        request(server.port, &["PUBLISH", "bob", "a.txt", "some text"]).unwrap(),
        ["0"]
    );
    assert_eq!(
        request(server.port, &["LIST_CONTENT", "bob", "bob"]).unwrap(),
        ["0", "1", "a.txt", "some text"]
    );
    assert_eq!(
        request(server.port, &["LIST_USERS", "bob"]).unwrap(),
        ["0", "1", "bob", "127.0.0.1", "5001"]
    );
}

#[test]
fn concurrent_registers_of_one_name_give_exactly_one_ok() {
    let (_dir, server) = server();
    let port = server.port;
    const N: usize = 200;
    let barrier = Arc::new(Barrier::new(N));
    let threads: Vec<_> = (0..N)
        .map(|_| {
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                code(port, "REGISTER", "contested", &[])
            })
        })
        .collect();
    let codes: Vec<String> = threads
        .into_iter()
        .map(|t| t.join().unwrap().unwrap())
        .collect();
    let ok = codes.iter().filter(|c| *c == "0").count();
    let in_use = codes.iter().filter(|c| *c == "1").count();
    assert_eq!((ok, in_use), (1, N - 1), "codes: {codes:?}");
}

#[test]
fn connect_records_the_source_address_for_port_only_and_unspecified_ip() {
    let (_dir, server) = server();
    let port = server.port;
    for user in ["carol", "dave", "erin", "frank"] {
        assert_eq!(code(port, "REGISTER", user, &[]).unwrap(), "0");
    }
    assert_eq!(code(port, "CONNECT", "carol", &["6000"]).unwrap(), "0");
    assert_eq!(
        code(port, "CONNECT", "dave", &["0.0.0.0", "6001"]).unwrap(),
        "0"
    );
    assert_eq!(code(port, "CONNECT", "erin", &["", "6002"]).unwrap(), "0");
    // Bad ports are the catch-all.
    assert_eq!(
        code(port, "CONNECT", "frank", &["127.0.0.1", "0"]).unwrap(),
        "3"
    );
    assert_eq!(
        code(port, "CONNECT", "frank", &["127.0.0.1", "65536"]).unwrap(),
        "3"
    );
    assert_eq!(
        code(port, "CONNECT", "frank", &["127.0.0.1", "x"]).unwrap(),
        "3"
    );

    let reply = request(port, &["LIST_USERS", DT, "carol"]).unwrap();
    assert_eq!(reply[..2], ["0", "3"], "{reply:?}");
    let mut users: Vec<Vec<String>> = reply[2..].chunks(3).map(|c| c.to_vec()).collect();
    users.sort();
    assert_eq!(
        users,
        [
            ["carol", "127.0.0.1", "6000"],
            ["dave", "127.0.0.1", "6001"],
            ["erin", "127.0.0.1", "6002"],
        ]
    );
}

#[test]
fn one_operation_per_connection_then_close() {
    let (_dir, server) = server();
    // Two requests on one connection: only the first is answered.
    let mut bytes = encode(&["REGISTER", DT, "alice"]);
    bytes.extend(encode(&["REGISTER", DT, "bob"]));
    let reply = raw::request_bytes(server.port, &bytes).unwrap();
    assert_eq!(reply, ["0"]);
}

#[test]
fn truncated_and_garbage_requests_do_not_hurt_the_server() {
    let (_dir, server) = server();
    let port = server.port;
    // Half a request, then the client goes away.
    {
        let mut stream = raw::connect(port).unwrap();
        stream.write_all(b"REGISTER\0").unwrap();
    }
    // A megabyte without any NUL: the server must not buffer it all, and
    // must close (answering or not) within the timeout.
    {
        let mut stream = raw::connect(port).unwrap();
        let junk = vec![b'x'; 1 << 20];
        let started = Instant::now();
        // The server may close early: a failed write is fine.
        let _ = stream.write_all(&junk);
        raw::shutdown_write(&stream);
        let _ = read_to_close(&mut stream);
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    // Not UTF-8 in USER.
    let reply = raw::request_bytes(port, b"REGISTER\0\xff\xfe\0").unwrap();
    assert_eq!(reply.first().map(String::as_str), Some("2"));
    assert_eq!(code(port, "REGISTER", "alice", &[]).unwrap(), "0");
}

#[test]
fn list_replies_follow_the_reply_grammar() {
    let (_dir, server) = server();
    let port = server.port;
    register_and_connect(port, "alice", "7000");
    assert_eq!(
        code(port, "PUBLISH", "alice", &["a.txt", "first file"]).unwrap(),
        "0"
    );
    assert_eq!(code(port, "PUBLISH", "alice", &["b.txt", ""]).unwrap(), "0");
    let reply = request(port, &["LIST_CONTENT", DT, "alice", "alice"]).unwrap();
    assert_eq!(reply[..2], ["0", "2"], "{reply:?}");
    let mut files: Vec<Vec<String>> = reply[2..].chunks(2).map(|c| c.to_vec()).collect();
    files.sort();
    assert_eq!(files, [["a.txt", "first file"], ["b.txt", ""]]);
    // The remote user need not be connected.
    assert_eq!(code(port, "REGISTER", "bob", &[]).unwrap(), "0");
    assert_eq!(
        request(port, &["LIST_CONTENT", DT, "alice", "bob"]).unwrap(),
        ["0", "0"]
    );
    assert_eq!(
        request(port, &["LIST_CONTENT", DT, "alice", "ghost"]).unwrap()[0],
        "3"
    );
}
