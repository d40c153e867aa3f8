//! `--version` of every binary names the commit it was built from:
//! `peerdex-server 0.1.0 (git 7042f62)`, with `-dirty` after the hash when
//! the work tree had changes, and `unknown` instead of the hash when it was
//! built without git or outside a repository (peerdex-build-info).

use std::path::Path;
use std::process::Command;

use peerdex_tests::bin;

/// Every binary of the workspace.
const BINARIES: [&str; 4] = [
    "peerdex-server",
    "peerdex",
    "peerdex-logger",
    "peerdex-bench",
];

/// Splits `NAME VERSION (git COMMIT)` into its version and commit.
fn parse<'a>(line: &'a str, name: &str) -> Option<(&'a str, &'a str)> {
    let rest = line.strip_prefix(name)?.strip_prefix(' ')?;
    let (version, commit) = rest.split_once(" (git ")?;
    Some((version, commit.strip_suffix(')')?))
}

/// Whether `commit` is a short hash, optionally `-dirty`, or `unknown`.
fn well_formed(commit: &str) -> bool {
    let hash = commit.strip_suffix("-dirty").unwrap_or(commit);
    commit == "unknown" || (hash.len() >= 7 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The short hash of the repository's HEAD, if git and the repository
/// are there: what the binaries, just built by [`bin`], must name.
fn head() -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")))
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn every_binary_prints_its_version_and_commit() {
    let head = head();
    for name in BINARIES {
        let out = Command::new(bin(name))
            .arg("--version")
            .output()
            .expect("run --version");
        assert!(out.status.success(), "{name} --version: {}", out.status);
        let text = String::from_utf8(out.stdout).expect("UTF-8");
        let line = text.strip_suffix('\n').unwrap_or(&text);
        let (version, commit) =
            parse(line, name).unwrap_or_else(|| panic!("{name} --version printed {line:?}"));
        assert_eq!(version, env!("CARGO_PKG_VERSION"), "{line}");
        assert!(well_formed(commit), "{line}");
        match &head {
            Some(head) => assert_eq!(commit.trim_end_matches("-dirty"), head, "{line}"),
            None => assert_eq!(commit, "unknown", "{line}"),
        }
    }
}

#[test]
fn the_format_is_recognised() {
    let server = "peerdex-server";
    assert_eq!(
        parse("peerdex-server 0.1.0 (git 7042f62)", server),
        Some(("0.1.0", "7042f62"))
    );
    assert_eq!(
        parse("peerdex-server 0.1.0 (git 7042f62-dirty)", server),
        Some(("0.1.0", "7042f62-dirty"))
    );
    assert_eq!(parse("peerdex-server 0.1.0", server), None);
    assert_eq!(parse("peerdex 0.1.0 (git 7042f62)", server), None);
    assert!(well_formed("7042f62") && well_formed("7042f62-dirty") && well_formed("unknown"));
    assert!(!well_formed("7042") && !well_formed("dirty") && !well_formed("7042f6g"));
}
