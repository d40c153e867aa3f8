//! The server reports every operation to the RPC logger; the logger is
//! never on the critical path, and the server reconnects by itself.
//!
//! A logger line is `<user> <OP> [<file>] <datetime> -> <OUTCOME>`.

use std::time::{Duration, Instant};

use peerdex_protocol::datetime;
use peerdex_tests::raw::code;
use peerdex_tests::{closed_port, LoggerProcess, ServerProcess, Shell};

const LINE: Duration = Duration::from_secs(10);

/// A logger line without its DATETIME: `<user> <OP> [<file>] -> <OUTCOME>`,
/// after checking that the DATETIME sits right before the outcome.
fn without_datetime(line: &str) -> String {
    let (head, outcome) = line
        .rsplit_once(" -> ")
        .unwrap_or_else(|| panic!("no outcome in logger line {line:?}"));
    assert!(head.len() > 20, "short logger line {line:?}");
    let (head, dt) = head.split_at(head.len() - 19);
    assert!(
        datetime::is_datetime(dt),
        "no DATETIME before the outcome in {line:?}"
    );
    format!("{} -> {outcome}", head.trim_end())
}

fn next_record(logger: &LoggerProcess) -> String {
    let line = logger
        .read_line(LINE)
        .unwrap_or_else(|| panic!("no logger line; stderr: {}", logger.proc.stderr()));
    without_datetime(&line)
}

/// Reads records and checks they are exactly `expected`, in order: the shell
/// sends only the operations typed (and DISCONNECT at end of input). A
/// peerdex directory opens a session, which tells the shell its kind, so
/// no extension probe is sent (a classic directory would get one).
fn expect_records(logger: &LoggerProcess, expected: &[&str]) {
    for want in expected {
        assert_eq!(next_record(logger), *want);
    }
}

fn logged_server(dir: &tempfile::TempDir, logger_port: u16) -> ServerProcess {
    let logger = format!("127.0.0.1:{logger_port}");
    ServerProcess::start(&dir.path().join("data"), &["--logger", &logger]).unwrap()
}

fn shell(dir: &tempfile::TempDir, server: &ServerProcess, args: &[&str]) -> Shell {
    let work = dir.path().join("a");
    std::fs::create_dir_all(work.join("share")).unwrap();
    Shell::spawn(server.port, &work.join("share"), &work, args).unwrap()
}

#[test]
fn operations_through_a_shell_are_logged_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let logger = LoggerProcess::start(0).unwrap();
    let server = logged_server(&dir, logger.port);
    let mut a = shell(&dir, &server, &[]);

    // A usage error sends nothing, so it logs nothing.
    let line = a.run("REGISTER").unwrap();
    assert!(line.starts_with("c> "), "{line:?}");
    a.expect("REGISTER alice", "REGISTER OK").unwrap();
    a.expect("CONNECT alice", "CONNECT OK").unwrap();
    a.expect("PUBLISH song.mp3 a song", "PUBLISH OK").unwrap();
    a.expect("LIST_USERS", "LIST_USERS OK").unwrap();
    assert!(a.read_line(LINE).unwrap().starts_with("\talice 127.0.0.1 "));
    a.expect("LIST_CONTENT alice", "LIST_CONTENT OK").unwrap();
    assert_eq!(a.read_line(LINE).unwrap(), "\tsong.mp3 a song");
    a.expect("DELETE song.mp3", "DELETE OK").unwrap();
    a.expect("DISCONNECT alice", "DISCONNECT OK").unwrap();
    a.expect("UNREGISTER alice", "UNREGISTER OK").unwrap();
    // The usage error was a failed command.
    assert_eq!(a.quit().unwrap().code(), Some(1));

    let expected = [
        "alice REGISTER -> OK",
        "alice CONNECT -> OK",
        "alice PUBLISH song.mp3 -> OK",
        "alice LIST_USERS -> OK",
        "alice LIST_CONTENT -> OK",
        "alice DELETE song.mp3 -> OK",
        "alice DISCONNECT -> OK",
        "alice UNREGISTER -> OK",
    ];
    expect_records(&logger, &expected);
}

#[test]
fn failures_are_logged_as_the_shell_says_them() {
    let dir = tempfile::tempdir().unwrap();
    let logger = LoggerProcess::start(0).unwrap();
    let server = logged_server(&dir, logger.port);
    let mut a = shell(&dir, &server, &[]);
    // A file in the share directory: the shell publishes it with its
    // identity (PUBLISH_CONTENT), which is still the user's PUBLISH.
    std::fs::write(dir.path().join("a/share/song.mp3"), b"la la la").unwrap();

    a.expect("CONNECT bob", "CONNECT FAIL, USER DOES NOT EXIST")
        .unwrap();
    a.expect("REGISTER alice", "REGISTER OK").unwrap();
    a.expect("REGISTER alice", "USERNAME IN USE").unwrap();
    a.expect("CONNECT alice", "CONNECT OK").unwrap();
    a.expect("CONNECT alice", "USER ALREADY CONNECTED").unwrap();
    a.expect("PUBLISH song.mp3 a song", "PUBLISH OK").unwrap();
    a.expect(
        "PUBLISH song.mp3 a song",
        "PUBLISH FAIL, CONTENT ALREADY PUBLISHED",
    )
    .unwrap();
    a.expect("DELETE nope.txt", "DELETE FAIL, CONTENT NOT PUBLISHED")
        .unwrap();
    a.expect(
        "LIST_CONTENT carol",
        "LIST_CONTENT FAIL, REMOTE USER DOES NOT EXIST",
    )
    .unwrap();
    assert_eq!(a.quit().unwrap().code(), Some(1));

    expect_records(
        &logger,
        &[
            "bob CONNECT -> USER DOES NOT EXIST",
            "alice REGISTER -> OK",
            "alice REGISTER -> USERNAME IN USE",
            "alice CONNECT -> OK",
            "alice CONNECT -> USER ALREADY CONNECTED",
            "alice PUBLISH song.mp3 -> OK",
            "alice PUBLISH song.mp3 -> CONTENT ALREADY PUBLISHED",
            "alice DELETE nope.txt -> CONTENT NOT PUBLISHED",
            "alice LIST_CONTENT -> REMOTE USER DOES NOT EXIST",
            "alice DISCONNECT -> OK",
        ],
    );
}

#[test]
fn hostile_names_are_escaped_on_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let logger = LoggerProcess::start(0).unwrap();
    let server = logged_server(&dir, logger.port);
    // Names the directory refuses still reach the logger as sent.
    let forged = "eve\nmallory REGISTER 21/11/2026 09:05:07 -> OK";
    assert_eq!(code(server.port, "REGISTER", forged, &[]).unwrap(), "2");
    assert_eq!(
        code(server.port, "UNREGISTER", "a\u{1b}[2J\\", &[]).unwrap(),
        "1"
    );
    assert_eq!(
        logger.read_line(LINE).unwrap(),
        "eve\\nmallory\\x20REGISTER\\x2021/11/2026\\x2009:05:07\\x20->\\x20OK \
         REGISTER 21/11/2026 09:05:07 -> FAIL"
    );
    assert_eq!(
        logger.read_line(LINE).unwrap(),
        "a\\x1b[2J\\\\ UNREGISTER 21/11/2026 09:05:07 -> USER DOES NOT EXIST"
    );
    assert_eq!(logger.read_line(Duration::from_millis(300)), None);
}

#[test]
fn raw_operations_are_logged_in_order_with_the_client_datetime() {
    let dir = tempfile::tempdir().unwrap();
    let logger = LoggerProcess::start(0).unwrap();
    let server = logged_server(&dir, logger.port);
    for i in 0..30 {
        assert_eq!(
            code(server.port, "REGISTER", &format!("u{i}"), &[]).unwrap(),
            "0"
        );
    }
    for i in 0..30 {
        let line = logger.read_line(LINE).expect("a logger line");
        // `code` sends DATETIME 21/11/2026 09:05:07: the logger prints it.
        assert_eq!(line, format!("u{i} REGISTER 21/11/2026 09:05:07 -> OK"));
    }
}

#[test]
fn a_missing_logger_does_not_slow_operations_down() {
    let dir = tempfile::tempdir().unwrap();
    let server = logged_server(&dir, closed_port());
    let started = Instant::now();
    for i in 0..30 {
        assert_eq!(
            code(server.port, "REGISTER", &format!("u{i}"), &[]).unwrap(),
            "0"
        );
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(5),
        "30 REGISTERs took {elapsed:?}"
    );

    let mut a = shell(&dir, &server, &[]);
    let started = Instant::now();
    a.expect("REGISTER alice", "REGISTER OK").unwrap();
    a.expect("CONNECT alice", "CONNECT OK").unwrap();
    a.expect("PUBLISH x.txt y", "PUBLISH OK").unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(a.quit().unwrap().success());
}

#[test]
fn the_server_reconnects_to_a_restarted_logger() {
    let dir = tempfile::tempdir().unwrap();
    let mut logger = LoggerProcess::start(0).unwrap();
    let logger_port = logger.port;
    let server = logged_server(&dir, logger_port);

    assert_eq!(code(server.port, "REGISTER", "before", &[]).unwrap(), "0");
    assert_eq!(next_record(&logger), "before REGISTER -> OK");

    // Let the acknowledgement reach the server; a record whose ack is lost
    // is sent again (at-least-once), which the checks below allow.
    std::thread::sleep(Duration::from_millis(200));
    logger.proc.kill9().unwrap();
    let started = Instant::now();
    for i in 0..20 {
        assert_eq!(
            code(server.port, "REGISTER", &format!("down{i}"), &[]).unwrap(),
            "0"
        );
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(5),
        "with the logger down: {elapsed:?}"
    );

    let logger = LoggerProcess::start_retrying(logger_port).unwrap();
    // Operate until records show up again (bounded by time and count).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = 0;
    let first = loop {
        assert!(
            Instant::now() < deadline,
            "no record reached the restarted logger within 30 s"
        );
        assert_eq!(
            code(server.port, "REGISTER", &format!("after{i}"), &[]).unwrap(),
            "0"
        );
        i += 1;
        if let Some(line) = logger.read_line(Duration::from_millis(250)) {
            break without_datetime(&line);
        }
    };
    assert!(
        first.starts_with("after") || first.starts_with("down") || first == "before REGISTER -> OK",
        "unexpected record {first:?}"
    );
    // From now on each new operation is logged.
    while logger.read_line(Duration::from_millis(500)).is_some() {}
    assert_eq!(code(server.port, "REGISTER", "last", &[]).unwrap(), "0");
    assert_eq!(next_record(&logger), "last REGISTER -> OK");
}

#[test]
fn the_shell_can_take_its_time_from_the_logger() {
    let dir = tempfile::tempdir().unwrap();
    let logger = LoggerProcess::start(0).unwrap();
    let server = logged_server(&dir, logger.port);
    let time_service = format!("127.0.0.1:{}", logger.port);
    let mut a = shell(&dir, &server, &["--time-service", &time_service]);
    a.expect("REGISTER alice", "REGISTER OK").unwrap();
    a.expect("CONNECT alice", "CONNECT OK").unwrap();
    assert!(a.quit().unwrap().success());
    // End of input disconnected alice.
    expect_records(
        &logger,
        &[
            "alice REGISTER -> OK",
            "alice CONNECT -> OK",
            "alice DISCONNECT -> OK",
        ],
    );
    // A new session remembers what the server is: no probe again.
    let mut a = shell(&dir, &server, &["--time-service", &time_service]);
    a.expect("CONNECT alice", "CONNECT OK").unwrap();
    assert!(a.quit().unwrap().success());
    expect_records(&logger, &["alice CONNECT -> OK", "alice DISCONNECT -> OK"]);
}

#[test]
fn a_dead_time_service_does_not_break_the_shell() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"), &[]).unwrap();
    let time_service = format!("127.0.0.1:{}", closed_port());
    let mut a = shell(&dir, &server, &["--time-service", &time_service]);
    let started = Instant::now();
    a.expect("REGISTER alice", "REGISTER OK").unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(a.quit().unwrap().success());
}
