//! A download onto a full disk: the shell prints `GET_FILE FAIL` with a
//! reason, goes on, and leaves neither a partial file nor a clobbered old one.
//!
//! The downloading shell runs in a private mount namespace (`unshare -m`,
//! available to root, as on every machine of this project) with a 1 MiB
//! tmpfs as its target directory, so the disk really fills up (ENOSPC) and
//! the mount vanishes with the process.

use std::process::Command;
use std::time::Duration;

use peerdex_tests::{bin, Proc, ServerProcess, Shell, TIMEOUT};

#[test]
fn download_onto_full_disk_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"), &[]).unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    let big: Vec<u8> = (0..4 * 1024 * 1024u32)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    std::fs::write(share.join("big.bin"), &big).unwrap();

    let mut publisher = Shell::spawn(server.port, &share, dir.path(), &[]).unwrap();
    publisher.expect("REGISTER bob", "REGISTER OK").unwrap();
    publisher.expect("CONNECT bob", "CONNECT OK").unwrap();
    publisher
        .expect("PUBLISH big.bin four MiB", "PUBLISH OK")
        .unwrap();

    let full = dir.path().join("full");
    std::fs::create_dir_all(&full).unwrap();
    let script = r#"
        mount -t tmpfs -o size=1m peerdex-full "$1" || exit 97
        echo old > "$1/big.bin"
        "$2" -s 127.0.0.1 -p "$3" --share-dir "$1" --listen 127.0.0.1:0 --history "$1/.h"
        echo "EXIT: $?"
        echo "LEFT: $(ls -A "$1" | grep -v '^\.h$' | tr '\n' ' ')"
        echo "OLD: $(cat "$1/big.bin")"
    "#;
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "sh", "-c", script, "sh"])
        .arg(&full)
        .arg(bin("peerdex"))
        .arg(server.port.to_string());
    let mut downloader = Proc::spawn("peerdex in a mount namespace", cmd).unwrap();
    for (command, expected) in [
        ("REGISTER dl", "c> REGISTER OK"),
        ("CONNECT dl", "c> CONNECT OK"),
        (
            &*format!("GET_FILE bob big.bin {}/big.bin", full.display()),
            "c> GET_FILE FAIL",
        ),
        // The shell goes on after the failure.
        ("LIST_CONTENT bob", "c> LIST_CONTENT OK"),
    ] {
        downloader.send(command).unwrap();
        let line = downloader.expect_line(TIMEOUT).unwrap();
        assert_eq!(
            line,
            expected,
            "after {command:?}; stderr:\n{}",
            downloader.stderr()
        );
    }
    assert_eq!(
        downloader.expect_line(TIMEOUT).unwrap(),
        "\tbig.bin four MiB"
    );
    downloader.close_stdin();
    let rest = downloader.rest_of_stdout(TIMEOUT);
    assert_eq!(
        rest,
        ["EXIT: 1", "LEFT: big.bin ", "OLD: old"],
        "the shell must exit 1 (GET_FILE failed), leave no temporary file and keep the old file; stderr:\n{}",
        downloader.stderr()
    );
    let stderr = downloader.stderr();
    assert!(
        stderr.to_lowercase().contains("space"),
        "one short reason naming the cause, got:\n{stderr}"
    );
    assert!(downloader.wait(Duration::from_secs(5)).unwrap().success());
}
