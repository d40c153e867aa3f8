//! The server reports every operation to the RPC logger; the logger is
//! never on the critical path, and the server reconnects by itself.

use std::time::{Duration, Instant};

use peerdex_protocol::datetime;
use peerdex_tests::raw::code;
use peerdex_tests::{closed_port, LoggerProcess, ServerProcess, Shell};

const LINE: Duration = Duration::from_secs(10);

/// Splits a logger line into the part before the DATETIME and checks the
/// DATETIME.
fn without_datetime(line: &str) -> String {
    assert!(line.len() > 20, "short logger line {line:?}");
    let (head, dt) = line.split_at(line.len() - 19);
    assert!(
        datetime::is_datetime(dt),
        "no DATETIME at the end of {line:?}"
    );
    head.trim_end().to_string()
}

fn next_record(logger: &LoggerProcess) -> String {
    let line = logger
        .read_line(LINE)
        .unwrap_or_else(|| panic!("no logger line; stderr: {}", logger.proc.stderr()));
    without_datetime(&line)
}

/// Reads records and checks they are exactly `expected`, in order: the shell
/// sends only the operations typed (and DISCONNECT at end of input).
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
    assert!(a.quit().unwrap().success());

    let expected = [
        "alice REGISTER",
        "alice CONNECT",
        "alice PUBLISH song.mp3",
        "alice LIST_USERS",
        "alice LIST_CONTENT",
        "alice DELETE song.mp3",
        "alice DISCONNECT",
        "alice UNREGISTER",
    ];
    expect_records(&logger, &expected);
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
        assert_eq!(line, format!("u{i} REGISTER 21/11/2026 09:05:07"));
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
    assert_eq!(next_record(&logger), "before REGISTER");

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
        first.starts_with("after") || first.starts_with("down") || first == "before REGISTER",
        "unexpected record {first:?}"
    );
    // From now on each new operation is logged.
    while logger.read_line(Duration::from_millis(500)).is_some() {}
    assert_eq!(code(server.port, "REGISTER", "last", &[]).unwrap(), "0");
    assert_eq!(next_record(&logger), "last REGISTER");
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
        &["alice REGISTER", "alice CONNECT", "alice DISCONNECT"],
    );
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
