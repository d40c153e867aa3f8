//! peerdex shells against other deployed directory servers of the
//! protocol family (stand-ins in `peerdex_tests::classic`): one that never
//! answers an op it does not know, one that answers it with `-1`, and one
//! that reads only a port in CONNECT. Each must cost a shell at most a
//! short wait once, and GET_FILE must work through each of them, between
//! peerdex shells and with that system's own (classic) clients.

use std::time::{Duration, Instant};

use peerdex_tests::classic::{ClassicDirectory, ClassicPeer, Flavour};
use peerdex_tests::scene::Scene;
use peerdex_tests::{raw, Shell};

/// Sends `command`, checks its result line, and returns how long it took.
fn timed_expect(shell: &mut Shell, command: &str, result: &str) -> Duration {
    let started = Instant::now();
    shell.expect(command, result).unwrap();
    started.elapsed()
}

/// Far below the 10 s reply timeout a silent server used to cost.
const SHORT: Duration = Duration::from_secs(3);

#[test]
fn a_directory_silent_on_unknown_ops_costs_one_short_wait_once() {
    let directory = ClassicDirectory::start(Flavour::SilentOnUnknown);
    let setup = Scene::against(directory.port);
    std::fs::write(setup.share("a").join("one.txt"), b"one").unwrap();
    std::fs::write(setup.share("a").join("two.txt"), b"two").unwrap();
    let mut alice = setup.shell("a", "alice");
    let took = timed_expect(&mut alice, "PUBLISH one.txt first", "PUBLISH OK");
    assert!(took < SHORT, "first PUBLISH took {took:?}");
    let took = timed_expect(&mut alice, "PUBLISH two.txt second", "PUBLISH OK");
    assert!(took < SHORT, "second PUBLISH took {took:?}");
    assert!(alice.quit().unwrap().success());
    let probes = directory.count("FIND_SOURCES");
    assert_eq!(probes, 1, "{:?}", directory.ops());

    // A new shell session of the same user remembers: no probe at all.
    let mut again = setup.spawn("a");
    again.expect("CONNECT alice", "CONNECT OK").unwrap();
    std::fs::write(setup.share("a").join("three.txt"), b"3").unwrap();
    let took = timed_expect(&mut again, "PUBLISH three.txt third", "PUBLISH OK");
    assert!(took < SHORT, "took {took:?}");
    assert!(again.quit().unwrap().success());
    let ops = directory.ops();
    assert_eq!(directory.count("FIND_SOURCES"), probes, "{ops:?}");
    assert_eq!(directory.count("PUBLISH_CONTENT"), 0, "{ops:?}");
    assert_eq!(directory.count("PUBLISH"), 3, "{ops:?}");
}

#[test]
fn a_directory_answering_minus_one_gets_classic_publishes() {
    let directory = ClassicDirectory::start(Flavour::MinusOneOnUnknown);
    let setup = Scene::against(directory.port);
    std::fs::write(setup.share("a").join("one.txt"), b"one").unwrap();
    std::fs::write(setup.share("a").join("two.txt"), b"two").unwrap();
    let mut alice = setup.shell("a", "alice");
    alice.expect("PUBLISH one.txt first", "PUBLISH OK").unwrap();
    alice
        .expect("PUBLISH two.txt second", "PUBLISH OK")
        .unwrap();
    let mut bob = setup.shell("b", "bob");
    bob.expect("GET_FILE alice two.txt got.txt", "GET_FILE OK")
        .unwrap();
    assert_eq!(std::fs::read(setup.path("b", "got.txt")).unwrap(), b"two");
    assert!(alice.quit().unwrap().success());
    assert!(bob.quit().unwrap().success());
    assert_eq!(directory.count("PUBLISH_CONTENT"), 0);
    assert_eq!(directory.count("PUBLISH"), 2);
}

#[test]
fn a_classic_peer_behind_a_classic_directory_gets_only_the_classic_request() {
    let directory = ClassicDirectory::start(Flavour::ClosesUnknown);
    let setup = Scene::against(directory.port);
    let peer = ClassicPeer::serving(b"classic bytes");
    raw::register_and_connect(directory.port, "old", &peer.port.to_string());
    assert_eq!(
        raw::code(directory.port, "PUBLISH", "old", &["old.txt", "x"]).unwrap(),
        "0"
    );
    let mut bob = setup.shell("b", "bob");
    bob.expect("GET_FILE old old.txt got.txt", "GET_FILE OK")
        .unwrap();
    assert_eq!(
        std::fs::read(setup.path("b", "got.txt")).unwrap(),
        b"classic bytes"
    );
    assert_eq!(peer.requests(), [b"GET_FILE \0old.txt\0".to_vec()]);
    assert!(bob.quit().unwrap().success());
}

#[test]
fn a_port_only_directory_lists_the_shell_at_its_real_address() {
    let directory = ClassicDirectory::start(Flavour::PortOnlyConnect);
    let setup = Scene::against(directory.port);
    std::fs::write(setup.share("a").join("song.txt"), b"a song").unwrap();
    let mut alice = setup.shell("a", "alice");
    let mut bob = setup.shell("b", "bob");
    let listed = bob.list_users().unwrap();
    let alice_entry = listed
        .iter()
        .find(|u| u.0 == "alice")
        .expect("alice listed");
    assert_ne!(
        alice_entry.2, 127,
        "listed at the IP read as a port: {listed:?}"
    );

    // Between two peerdex shells.
    alice.expect("PUBLISH song.txt s", "PUBLISH OK").unwrap();
    bob.expect("GET_FILE alice song.txt got.txt", "GET_FILE OK")
        .unwrap();
    assert_eq!(
        std::fs::read(setup.path("b", "got.txt")).unwrap(),
        b"a song"
    );

    // From that system's own client: port-only CONNECT, classic GET_FILE.
    let peer = ClassicPeer::serving(b"theirs");
    assert_eq!(
        raw::code(directory.port, "REGISTER", "them", &[]).unwrap(),
        "0"
    );
    assert_eq!(
        raw::code(directory.port, "CONNECT", "them", &[&peer.port.to_string()]).unwrap(),
        "0"
    );
    assert_eq!(
        raw::code(directory.port, "PUBLISH", "them", &["t.txt", "x"]).unwrap(),
        "0"
    );
    bob.expect("GET_FILE them t.txt t.txt", "GET_FILE OK")
        .unwrap();
    assert_eq!(std::fs::read(setup.path("b", "t.txt")).unwrap(), b"theirs");

    // To that system's client: it asks alice's listener directly.
    let (code, body) = raw::get_file(alice_entry.2, "song.txt").unwrap();
    assert_eq!((code.as_str(), body.as_slice()), ("0", &b"a song"[..]));

    // A new session remembers the port-only form: CONNECT right first time.
    assert!(alice.quit().unwrap().success());
    let connects = directory.count("CONNECT");
    let mut again = setup.spawn("a");
    again.expect("CONNECT alice", "CONNECT OK").unwrap();
    assert_eq!(directory.count("CONNECT"), connects + 1);
    let listed = bob.list_users().unwrap();
    let entry = listed
        .iter()
        .find(|u| u.0 == "alice")
        .expect("alice listed");
    assert_ne!(entry.2, 127);
    assert!(again.quit().unwrap().success());
    assert!(bob.quit().unwrap().success());
}
