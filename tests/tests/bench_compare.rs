//! `peerdex-bench compare` end to end, small: the real server against both
//! ceilings, with the null server's populate and the machine's idle and
//! steal in the report. The numbers are not checked (machines are noisy),
//! only that every part of the comparison ran and was reported.

use std::process::Command;

use peerdex_tests::bin;

#[test]
fn compare_reports_ceilings_populate_and_machine() {
    let dir = tempfile::tempdir().unwrap();
    let server_cmd = format!(
        "{} -p {{port}} --bind 127.0.0.1 --data-dir {}",
        bin("peerdex-server").display(),
        dir.path().join("data").display()
    );
    let out = Command::new("timeout")
        .arg("120")
        .arg(bin("peerdex-bench"))
        .args(["compare", "--server-cmd", &server_cmd])
        .args(["--rounds", "1", "--users", "200", "--clients", "4"])
        .args(["--duration", "1", "--warmup", "0", "--pause", "0"])
        .args(["--mix", "no-list-users", "--populate-concurrency", "8"])
        .args(["--durable-ceiling", "--populate-ceiling", "--json"])
        // Steal never exceeds 100%: the round is kept and the count shown.
        .args(["--max-steal", "100"])
        .env("TMPDIR", dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "compare failed:\n{stdout}\n{stderr}");
    for wanted in [
        "populate of the null server: 200 users (800 ops)",
        "populate ours: 200 users (800 ops)",
        "populate null: 200 users (800 ops)",
        "machine during null: idle % ",
        "machine during durable: idle % ",
        "machine during ours: idle % ",
        "rounds discarded for steal above 100%: 0",
        "  errors: 0",
    ] {
        assert!(stdout.contains(wanted), "no {wanted:?} in:\n{stdout}");
    }
    // One `machine` line per window: null, durable, ours.
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.starts_with("  machine  busy "))
            .count(),
        3,
        "{stdout}"
    );
    let json = stdout
        .lines()
        .find(|l| l.starts_with("{\"kind\":\"compare\""))
        .unwrap_or_else(|| panic!("no compare JSON in:\n{stdout}"));
    assert!(json.contains("\"null_populate_secs\":"), "{json}");
    assert!(json.contains("\"ratio_durable_null\":"), "{json}");
    assert!(json.contains("\"discarded_rounds\":0"), "{json}");
}

#[test]
fn compare_refuses_a_steal_limit_that_is_not_a_percentage() {
    let out = Command::new("timeout")
        .arg("60")
        .arg(bin("peerdex-bench"))
        .args(["compare", "--server-cmd", "true", "--users", "1"])
        .args(["--clients", "1", "--duration", "1", "--max-steal", "150"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("expected a percentage from 0 to 100, not \"150\""),
        "{stderr}"
    );
}
