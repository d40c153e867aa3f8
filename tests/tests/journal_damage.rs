//! A damaged data dir never silently loses acknowledged operations: damage
//! in the middle of the journal stops start-up (file and offset named, the
//! segment kept), `check` reports it without changing anything, `salvage`
//! keeps what precedes it and lists what was lost; a torn tail (the last
//! write, never acknowledged) is dropped with a warning; flipped bytes in
//! the database are an error naming it, never a panic.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use peerdex_tests::raw::code;
use peerdex_tests::{bin, Proc, ServerProcess, TIMEOUT};

/// The data dir's first journal segment, where 100 REGISTERs land.
fn first_segment(data: &Path) -> PathBuf {
    data.join("peerdex.journal.000000000001")
}

/// 100 REGISTERs (`u1` .. `u100`) answered 0, one at a time (one journal
/// record each), then SIGKILL.
fn hundred_registers_then_sigkill(data: &Path) {
    let mut server = ServerProcess::start(data, &[]).unwrap();
    for i in 1..=100 {
        assert_eq!(
            code(server.port, "REGISTER", &format!("u{i}"), &[]).unwrap(),
            "0"
        );
    }
    server.kill9().unwrap();
}

/// Byte offsets of the records of a journal file (magic, then `len u32 LE,
/// hash u64 LE, payload`; zeros after the last).
fn record_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut at = 8;
    while at + 12 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        offsets.push(at);
        at += 12 + len;
    }
    offsets
}

/// Starts the server on `data` and expects it to refuse: exit 1 without
/// announcing itself. Returns its stderr.
fn start_fails(data: &Path) -> String {
    let mut proc = ServerProcess::spawn(0, data, &[]).unwrap();
    let status = match proc.wait(TIMEOUT) {
        Ok(status) => status,
        Err(_) => panic!(
            "the server runs on a damaged data dir; stderr:\n{}",
            proc.stderr()
        ),
    };
    let stdout = proc.rest_of_stdout(Duration::from_millis(200));
    let stderr = proc.stderr();
    assert_eq!(
        status.code(),
        Some(1),
        "exit status {status}; stderr:\n{stderr}"
    );
    assert!(
        !stdout.iter().any(|l| l.starts_with("s> init server")),
        "the server announced itself: {stdout:?}"
    );
    stderr
}

/// Runs `peerdex-server <subcommand> --data-dir <data>`; its exit status,
/// stdout and stderr.
fn tool(subcommand: &str, data: &Path) -> (ExitStatus, String, String) {
    let mut cmd = Command::new(bin("peerdex-server"));
    cmd.arg(subcommand).arg("--data-dir").arg(data);
    let mut proc = Proc::spawn(&format!("peerdex-server {subcommand}"), cmd).unwrap();
    let status = proc.wait(TIMEOUT).unwrap();
    let stdout = proc.rest_of_stdout(Duration::from_secs(1)).join("\n");
    (status, stdout, proc.stderr())
}

#[test]
fn a_flipped_byte_in_the_middle_stops_start_up_and_salvage_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    hundred_registers_then_sigkill(&data);
    let segment = first_segment(&data);
    let mut bytes = std::fs::read(&segment).unwrap();
    let offsets = record_offsets(&bytes);
    assert_eq!(offsets.len(), 100, "one record per REGISTER");
    let at = offsets[49];
    // The first byte of the 50th user's name.
    bytes[at + 12 + 3] ^= 0x01;
    std::fs::write(&segment, &bytes).unwrap();

    let stderr = start_fails(&data);
    assert!(
        stderr.contains(&segment.display().to_string()) && stderr.contains(&format!("offset {at}")),
        "the error names neither the file nor the offset:\n{stderr}"
    );
    assert_eq!(
        std::fs::read(&segment).unwrap(),
        bytes,
        "start-up changed the segment"
    );

    let (status, stdout, stderr) = tool("check", &data);
    assert_eq!(
        status.code(),
        Some(1),
        "check: {status}\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("peerdex.journal.000000000001")
            && stdout.contains(&format!("damaged at offset {at}"))
            && stdout.contains("49 records"),
        "check's report:\n{stdout}"
    );
    assert_eq!(
        std::fs::read(&segment).unwrap(),
        bytes,
        "check changed the segment"
    );

    let (status, stdout, stderr) = tool("salvage", &data);
    assert!(status.success(), "salvage: {status}\n{stdout}\n{stderr}");
    let lost: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("lost record"))
        .collect();
    assert_eq!(lost.len(), 51, "salvage's report:\n{stdout}");
    assert!(
        lost[0].contains(&format!("offset {at}")) && lost[0].contains("damaged"),
        "{}",
        lost[0]
    );
    for (line, i) in lost[1..].iter().zip(51..) {
        assert!(line.contains(&format!("REGISTER \"u{i}\"")), "{line}");
    }
    assert!(!segment.exists(), "the damaged segment is still in place");
    assert_eq!(
        std::fs::read(data.join("damaged").join("peerdex.journal.000000000001")).unwrap(),
        bytes,
        "the damaged segment was not moved aside unchanged"
    );

    let (status, stdout, _) = tool("check", &data);
    assert!(status.success(), "check after salvage: {status}\n{stdout}");

    let server = ServerProcess::start(&data, &[]).unwrap();
    for i in 1..=49 {
        assert_eq!(
            code(server.port, "REGISTER", &format!("u{i}"), &[]).unwrap(),
            "1",
            "u{i} was lost"
        );
    }
    // The lost operations can be redone.
    for i in 50..=100 {
        assert_eq!(
            code(server.port, "REGISTER", &format!("u{i}"), &[]).unwrap(),
            "0",
            "u{i}"
        );
    }
}

#[test]
fn a_length_past_the_end_in_the_middle_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    hundred_registers_then_sigkill(&data);
    let segment = first_segment(&data);
    let mut bytes = std::fs::read(&segment).unwrap();
    let at = record_offsets(&bytes)[49];
    bytes[at..at + 4].copy_from_slice(&[0xff; 4]);
    std::fs::write(&segment, &bytes).unwrap();

    let stderr = start_fails(&data);
    assert!(
        stderr.contains(&segment.display().to_string()) && stderr.contains(&format!("offset {at}")),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&segment).unwrap(), bytes);
    let (status, stdout, _) = tool("check", &data);
    assert_eq!(status.code(), Some(1), "{stdout}");
}

#[test]
fn a_torn_last_record_is_dropped_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    hundred_registers_then_sigkill(&data);
    let segment = first_segment(&data);
    let bytes = std::fs::read(&segment).unwrap();
    let last = *record_offsets(&bytes).last().unwrap();
    // The last write stopped after the record's header.
    std::fs::write(&segment, &bytes[..last + 12]).unwrap();

    let (status, stdout, _) = tool("check", &data);
    assert!(
        status.success(),
        "a torn tail is not damage: {status}\n{stdout}"
    );
    assert!(
        stdout.contains(&format!("torn tail at offset {last}")),
        "{stdout}"
    );

    let server = ServerProcess::start(&data, &[]).unwrap();
    let stderr = server.proc.stderr();
    assert!(
        stderr.contains("WARN")
            && stderr.contains("torn")
            && stderr.contains(&segment.display().to_string())
            && stderr.contains(&last.to_string()),
        "no warning naming the file and offset:\n{stderr}"
    );
    for i in 1..=99 {
        assert_eq!(
            code(server.port, "REGISTER", &format!("u{i}"), &[]).unwrap(),
            "1",
            "u{i} was lost"
        );
    }
    assert_eq!(code(server.port, "REGISTER", "u100", &[]).unwrap(), "0");
}

/// Four bytes flipped at many places of a database written by a real run:
/// start-up works (the bytes were unused) or exits 1 naming the file; it
/// never panics (no panic hook output, no "blocking task failed").
#[test]
fn flipped_bytes_in_the_database_are_an_error_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = ServerProcess::start(&data, &[]).unwrap();
    for i in 0..150 {
        let user = format!("user{i:03}");
        assert_eq!(code(server.port, "REGISTER", &user, &[]).unwrap(), "0");
        let port = (7000 + i).to_string();
        assert_eq!(
            code(server.port, "CONNECT", &user, &["127.0.0.1", &port]).unwrap(),
            "0"
        );
        for f in 0..2 {
            let file = format!("song{f}.mp3");
            assert_eq!(
                code(server.port, "PUBLISH", &user, &[&file, "a nice song"]).unwrap(),
                "0"
            );
        }
    }
    assert!(server.terminate().unwrap().success());
    let db_path = data.join("peerdex.redb");
    let db = std::fs::read(&db_path).unwrap();

    let mut refused = 0;
    // The pages holding the tables follow the header and allocator pages.
    for at in (12 * 1024..db.len() - 4).step_by(1531).take(24) {
        let trial = dir.path().join(format!("at-{at}"));
        std::fs::create_dir_all(&trial).unwrap();
        let mut bytes = db.clone();
        bytes[at..at + 4].iter_mut().for_each(|b| *b ^= 0xff);
        let path = trial.join("peerdex.redb");
        std::fs::write(&path, &bytes).unwrap();
        let mut proc = ServerProcess::spawn(0, &trial, &[]).unwrap();
        match proc.expect_line(TIMEOUT) {
            Ok(line) if line.starts_with("s> init server") => {
                proc.kill9().unwrap();
            }
            _ => {
                let status = proc.wait(TIMEOUT).unwrap();
                let stderr = proc.stderr();
                assert_eq!(status.code(), Some(1), "offset {at}: {status}\n{stderr}");
                assert!(
                    stderr.contains(&path.display().to_string()),
                    "offset {at}: the error does not name the file:\n{stderr}"
                );
                assert!(
                    !stderr.contains("panicked at") && !stderr.contains("blocking task failed"),
                    "offset {at}: a panic instead of an error:\n{stderr}"
                );
                refused += 1;
            }
        }
        std::fs::remove_dir_all(&trial).unwrap();
    }
    assert!(refused > 0, "no flip was noticed");
}
