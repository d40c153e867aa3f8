//! The client side of the directory extensions through real shells:
//! PUBLISH with the content's identity, GET_FILE from every peer with the
//! same content (FIND_SOURCES), SEARCH, and a fake classic directory that
//! refuses the extension ops by closing.

use std::time::Duration;

use peerdex_tests::classic::{ClassicDirectory, Flavour};
use peerdex_tests::scene::Scene;
use peerdex_tests::{wait_until, Shell};

const LINE: Duration = Duration::from_secs(10);

/// Deterministic bytes that do not repeat within a piece.
fn content(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// The rest of a listing (lines that start with a TAB), waiting briefly.
fn listing(shell: &Shell) -> Vec<String> {
    let mut lines = Vec::new();
    while let Some(line) = shell.read_line(Duration::from_millis(500)) {
        lines.push(line);
    }
    lines
}

#[test]
fn get_file_downloads_from_every_peer_with_the_same_content() {
    let setup = Scene::new();
    let data = content(6 << 20);
    std::fs::write(setup.share("a").join("big.bin"), &data).unwrap();
    std::fs::write(setup.share("b").join("copy-of-big.bin"), &data).unwrap();
    let mut alice = setup.shell("a", "alice");
    let mut bob = setup.shell("b", "bob");
    alice.expect("PUBLISH big.bin big", "PUBLISH OK").unwrap();
    bob.expect("PUBLISH copy-of-big.bin same bytes", "PUBLISH OK")
        .unwrap();
    let debug = [("PEERDEX_LOG", "debug")];
    let mut carol = setup.shell_env("c", "carol", &debug);

    // Both peers are sources, each under its own file name.
    carol
        .expect("GET_FILE alice big.bin one.bin", "GET_FILE OK")
        .unwrap();
    assert!(std::fs::read(setup.path("c", "one.bin")).unwrap() == data);
    let logged = || {
        let log = carol.proc.stderr();
        log.contains("2 source(s)") && log.contains("copy-of-big.bin")
    };
    assert!(wait_until(LINE, logged), "{}", carol.proc.stderr());

    // alice dies without DISCONNECT: the directory still lists her, her
    // address refuses. The download completes from bob's copy alone,
    // checked against the root the directory gave.
    alice.proc.kill9().unwrap();
    carol
        .expect("GET_FILE alice big.bin two.bin", "GET_FILE OK")
        .unwrap();
    assert!(std::fs::read(setup.path("c", "two.bin")).unwrap() == data);

    // Published without a hash (not in the share dir): bob alone; not
    // published at all (FIND_SOURCES code 3): bob alone, as before.
    bob.expect("PUBLISH ghost.bin g", "PUBLISH OK").unwrap();
    for name in ["ghost.bin", "never.bin"] {
        carol
            .expect(
                &format!("GET_FILE bob {name} g.bin"),
                "GET_FILE FAIL, FILE NOT EXIST",
            )
            .unwrap();
    }
    assert!(!setup.path("c", "g.bin").exists());
    assert!(bob.quit().unwrap().success());
    assert_eq!(
        carol.quit().unwrap().code(),
        Some(1),
        "carol had FAIL lines"
    );
}

#[test]
fn search_through_the_shell() {
    let setup = Scene::new();
    for (shell, names) in [("a", ["f1.txt", "F12.bin"]), ("b", ["f123.txt", "g1.txt"])] {
        for name in names {
            std::fs::write(setup.share(shell).join(name), name.as_bytes()).unwrap();
        }
    }
    let mut alice = setup.shell("a", "alice");
    let mut bob = setup.shell("b", "bob");
    for name in ["f1.txt", "F12.bin"] {
        alice
            .expect(&format!("PUBLISH {name} file {name}"), "PUBLISH OK")
            .unwrap();
    }
    for name in ["f123.txt", "g1.txt"] {
        bob.expect(&format!("PUBLISH {name} file {name}"), "PUBLISH OK")
            .unwrap();
    }
    bob.expect("PUBLISH f1-old.txt classic", "PUBLISH OK")
        .unwrap();
    bob.expect("DISCONNECT bob", "DISCONNECT OK").unwrap();

    alice.expect("SEARCH f1", "SEARCH OK 4 of 4").unwrap();
    let lines = listing(&alice);
    let hash = |name: &str| blake3::hash(name.as_bytes()).to_hex()[..12].to_string();
    assert_eq!(
        lines,
        [
            format!("\talice F12.bin 7 {} online file F12.bin", hash("F12.bin")),
            format!("\talice f1.txt 6 {} online file f1.txt", hash("f1.txt")),
            "\tbob f1-old.txt - - offline classic".to_string(),
            format!(
                "\tbob f123.txt 8 {} offline file f123.txt",
                hash("f123.txt")
            ),
        ]
    );
    alice.expect("SEARCH f1?3*", "SEARCH OK 1 of 1").unwrap();
    assert_eq!(listing(&alice).len(), 1);
    alice.expect("SEARCH nothing", "SEARCH OK 0 of 0").unwrap();

    // The current-user rule: bob is the last named in b, not connected.
    bob.expect("SEARCH f1", "SEARCH FAIL, USER NOT CONNECTED")
        .unwrap();
    let mut nobody = setup.spawn("d");
    nobody
        .expect("SEARCH f1", "SEARCH FAIL, USER DOES NOT EXIST")
        .unwrap();
    // Exit 1 for the shells that printed a FAIL line.
    for (mut shell, status) in [(alice, 0), (bob, 1), (nobody, 1)] {
        assert_eq!(shell.quit().unwrap().code(), Some(status));
    }
}

#[test]
fn a_classic_directory_gets_classic_publish_and_get_file() {
    let directory = ClassicDirectory::start(Flavour::ClosesUnknown);
    let setup = Scene::against(directory.port);
    let data = content(300_000);
    std::fs::write(setup.share("a").join("song.bin"), &data).unwrap();
    let mut alice = setup.shell("a", "alice");
    let mut bob = setup.shell("b", "bob");
    alice
        .expect("PUBLISH song.bin a song", "PUBLISH OK")
        .unwrap();
    alice.expect("SEARCH song", "SEARCH FAIL").unwrap();
    // stderr is read by its own thread: it may come a moment later.
    assert!(
        wait_until(LINE, || alice
            .proc
            .stderr()
            .contains("directory does not support SEARCH")),
        "{}",
        alice.proc.stderr()
    );
    bob.expect("GET_FILE alice song.bin local.bin", "GET_FILE OK")
        .unwrap();
    assert!(std::fs::read(setup.path("b", "local.bin")).unwrap() == data);
    bob.expect("SEARCH song", "SEARCH FAIL").unwrap();
    // SEARCH FAIL: both shells had a failing command.
    assert_eq!(alice.quit().unwrap().code(), Some(1));
    assert_eq!(bob.quit().unwrap().code(), Some(1));

    // Each shell tried one read-only extension op (never the mutation
    // PUBLISH_CONTENT), learnt, and stayed classic.
    let ops = directory.ops();
    let count = |name: &str| ops.iter().filter(|op| *op == name).count();
    assert_eq!(count("PUBLISH_CONTENT"), 0, "{ops:?}");
    assert_eq!(count("PUBLISH"), 1, "{ops:?}");
    assert_eq!(count("FIND_SOURCES"), 2, "{ops:?}");
    assert_eq!(count("SEARCH"), 0, "known classic: not sent: {ops:?}");
    // Each CONNECT checked its own entry once (the CONNECT form of an
    // unknown classic server), and GET_FILE asked for alice.
    assert_eq!(count("LIST_USERS"), 3, "{ops:?}");
}
