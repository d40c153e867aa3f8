//! The binary driven through a pipe, as the end-to-end tests drive it.

use std::io::Write;
use std::process::{Command, Stdio};

fn closed_port() -> u16 {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().port()
}

fn run_shell(input: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_peerdex"))
        .args(["-s", "127.0.0.1", "-p", &closed_port().to_string()])
        .arg("--share-dir")
        .arg(dir.path())
        .arg("--state-dir")
        .arg(dir.path().join(".state"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn unreachable_directory_gives_fail_lines_and_reasons() {
    let output = run_shell("REGISTER a\nfrob\nregister\n\nQUIT\nREGISTER b\n");
    assert_eq!(output.status.code(), Some(1), "a command failed");
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "c> REGISTER FAIL\n\
         c> Syntax error. Usage: REGISTER <user>\n"
    );
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 2, "{stderr}");
    assert!(stderr.contains("cannot reach directory"), "{stderr}");
    assert!(stderr.contains("unknown command frob"), "{stderr}");
}

#[test]
fn end_of_input_quits_cleanly() {
    let output = run_shell("LIST_USERS");
    assert_eq!(output.status.code(), Some(1), "LIST_USERS failed");
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "c> LIST_USERS FAIL\n"
    );
}
