//! The piped shell's exit status: 0 when every command succeeded, 1 when
//! any printed a FAIL or refusal line, 2 for a usage or start-up error; and
//! lines that are not result lines of the output contract go to stderr.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use peerdex_tests::{bin, ServerProcess};

/// Runs `peerdex` against `port` with `input` on stdin, in `dir`.
fn run_piped(port: u16, dir: &Path, extra: &[&str], input: &str) -> Output {
    let mut child = Command::new(bin("peerdex"))
        .args(["-s", "127.0.0.1", "-p", &port.to_string()])
        .args(["--listen", "127.0.0.1:0"])
        .arg("--share-dir")
        .arg(dir)
        .arg("--state-dir")
        .arg(dir.join(".state"))
        .args(extra)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("peerdex starts");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).expect("write stdin");
    drop(stdin);
    child.wait_with_output().expect("peerdex exits")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn every_command_ok_exits_0_and_any_fail_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"), &[]).unwrap();
    let ok = run_piped(
        server.port,
        dir.path(),
        &[],
        "REGISTER alice\nCONNECT alice\nLIST_USERS\nDISCONNECT alice\n",
    );
    assert_eq!(ok.status.code(), Some(0), "{}", stdout(&ok));
    // One refusal among successes: 1, and every line still printed.
    let refused = run_piped(
        server.port,
        dir.path(),
        &[],
        "REGISTER bob\nREGISTER bob\nCONNECT bob\n",
    );
    assert_eq!(
        stdout(&refused),
        "c> REGISTER OK\nc> USERNAME IN USE\nc> CONNECT OK\n"
    );
    assert_eq!(refused.status.code(), Some(1));
    for failing in [
        "CONNECT nobody\n",
        "REGISTER carol\nLIST_CONTENT nobody\n",
        "GET_FILE\n",
    ] {
        let out = run_piped(server.port, dir.path(), &[], failing);
        assert_eq!(out.status.code(), Some(1), "{failing:?}: {}", stdout(&out));
    }
}

#[test]
fn an_unreachable_directory_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_piped(
        peerdex_tests::closed_port(),
        dir.path(),
        &[],
        "REGISTER a\n",
    );
    assert_eq!(stdout(&out), "c> REGISTER FAIL\n");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn unknown_commands_go_to_stderr_and_usage_hints_stay_on_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_piped(
        peerdex_tests::closed_port(),
        dir.path(),
        &[],
        "frob\nregister\n",
    );
    assert_eq!(stdout(&out), "c> Syntax error. Usage: REGISTER <user>\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown command frob"), "{stderr}");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn usage_and_start_up_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let out = Command::new(bin("peerdex"))
        .args(["-s", "127.0.0.1", "-p", "1", "--share-dir"])
        .arg(&missing)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "a share dir that does not exist"
    );
    let out = Command::new(bin("peerdex"))
        .args(["-s", "127.0.0.1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "no port");
    assert!(out.stdout.is_empty());
}
