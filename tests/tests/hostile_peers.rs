//! Downloads from peers that lie or freeze. When the directory holds a
//! file's size and hash, whatever a peer sends is accepted only if it
//! matches them, on every transfer path (the classic fallback included);
//! an unresponsive peer fails the download, or is dropped as a source,
//! within 10 s.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use peerdex_tests::classic::ClassicPeer;
use peerdex_tests::scene::Scene;
use peerdex_tests::{raw, wait_until, Shell};

/// Moves `user`'s directory entry to `port` on loopback, as anyone who can
/// reach a classic-protocol directory can.
fn redirect(directory: u16, user: &str, port: u16) {
    assert_eq!(raw::code(directory, "DISCONNECT", user, &[]).unwrap(), "0");
    assert_eq!(
        raw::code(
            directory,
            "CONNECT",
            user,
            &["127.0.0.1", &port.to_string()]
        )
        .unwrap(),
        "0"
    );
}

/// Temporary download files left in a shell's working dir.
fn leftovers(setup: &Scene, name: &str) -> Vec<String> {
    std::fs::read_dir(setup.workdir(name))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".part"))
        .collect()
}

#[test]
fn a_substituted_peer_cannot_pass_off_other_content() {
    let setup = Scene::new();
    std::fs::write(setup.share("a").join("song.txt"), b"the real song").unwrap();
    let mut alice = setup.shell("a", "alice");
    alice
        .expect("PUBLISH song.txt a song", "PUBLISH OK")
        .unwrap();
    // Someone else answers at alice's listed address: it refuses the
    // extension and serves other bytes of the same length classically.
    let fake = ClassicPeer::serving(b"the fake song");
    redirect(setup.port(), "alice", fake.port);

    let mut bob = setup.shell("b", "bob");
    bob.expect("GET_FILE alice song.txt out.txt", "GET_FILE FAIL")
        .unwrap();
    assert!(!setup.path("b", "out.txt").exists());
    // An existing file of that name stays as it was.
    std::fs::write(setup.path("b", "out.txt"), b"mine").unwrap();
    bob.expect("GET_FILE alice song.txt out.txt", "GET_FILE FAIL")
        .unwrap();
    assert_eq!(std::fs::read(setup.path("b", "out.txt")).unwrap(), b"mine");
    assert!(
        fake.ops().iter().any(|op| op == "GET_FILE"),
        "the classic transfer was tried: {:?}",
        fake.ops()
    );
    assert!(
        wait_until(Duration::from_secs(5), || bob
            .proc
            .stderr()
            .contains("does not match")),
        "{}",
        bob.proc.stderr()
    );
    assert_eq!(leftovers(&setup, "b"), Vec::<String>::new());
    assert_eq!(bob.quit().unwrap().code(), Some(1));
    assert!(alice.quit().unwrap().success());
}

#[test]
fn a_peer_that_sends_more_than_the_file_is_cut_off() {
    let setup = Scene::new();
    std::fs::write(setup.share("a").join("small.txt"), b"tiny").unwrap();
    let mut alice = setup.shell("a", "alice");
    alice.expect("PUBLISH small.txt s", "PUBLISH OK").unwrap();
    static HUGE: [u8; 4 << 20] = [b'x'; 4 << 20];
    let fake = ClassicPeer::serving(&HUGE);
    redirect(setup.port(), "alice", fake.port);
    let mut bob = setup.shell("b", "bob");
    bob.expect("GET_FILE alice small.txt out.txt", "GET_FILE FAIL")
        .unwrap();
    assert!(!setup.path("b", "out.txt").exists());
    assert_eq!(leftovers(&setup, "b"), Vec::<String>::new());
    assert_eq!(bob.quit().unwrap().code(), Some(1));
    assert!(alice.quit().unwrap().success());
}

/// Sends `command` and returns its result line and how long it took.
fn timed(shell: &mut Shell, command: &str) -> (String, Duration) {
    let started = Instant::now();
    shell.send(command).unwrap();
    let line = shell
        .read_line(Duration::from_secs(60))
        .expect("a result line");
    (line, started.elapsed())
}

/// The design bound is 10 s; the margin is for a loaded machine.
const FROZEN_BOUND: Duration = Duration::from_secs(15);

#[test]
fn a_frozen_peerdex_peer_fails_the_download_within_ten_seconds() {
    let setup = Scene::new();
    std::fs::write(setup.share("a").join("song.txt"), b"a song").unwrap();
    let mut alice = setup.shell("a", "alice");
    alice.expect("PUBLISH song.txt s", "PUBLISH OK").unwrap();
    let mut bob = setup.shell("b", "bob");
    // alice's shell stops: its listener's backlog still completes
    // connections, and nothing answers on them.
    kill(alice.proc.pid(), Signal::SIGSTOP).unwrap();
    let (line, took) = timed(&mut bob, "GET_FILE alice song.txt out.txt");
    kill(alice.proc.pid(), Signal::SIGCONT).unwrap();
    assert_eq!(line, "c> GET_FILE FAIL");
    assert!(took < FROZEN_BOUND, "took {took:?}");
    assert!(!setup.path("b", "out.txt").exists());
    assert_eq!(bob.quit().unwrap().code(), Some(1));
    assert!(alice.quit().unwrap().success());
}

#[test]
fn a_frozen_classic_peer_fails_the_download_within_ten_seconds() {
    let setup = Scene::new();
    // Connections complete in the kernel's backlog; nobody ever accepts.
    let frozen = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = frozen.local_addr().unwrap().port().to_string();
    raw::register_and_connect(setup.port(), "old", &port);
    assert_eq!(
        raw::code(setup.port(), "PUBLISH", "old", &["old.txt", "classic"]).unwrap(),
        "0"
    );
    let mut bob = setup.shell("b", "bob");
    let (line, took) = timed(&mut bob, "GET_FILE old old.txt out.txt");
    assert_eq!(line, "c> GET_FILE FAIL");
    assert!(took < FROZEN_BOUND, "took {took:?}");
    assert_eq!(bob.quit().unwrap().code(), Some(1));
    drop(frozen);
}

#[test]
fn a_slow_but_moving_transfer_is_never_cut() {
    let setup = Scene::new();
    // A classic peer that sends a byte every 1.5 s for 15 s: slower than
    // any per-step bound, but always moving.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    raw::register_and_connect(setup.port(), "slow", &port);
    assert_eq!(
        raw::code(setup.port(), "PUBLISH", "slow", &["slow.txt", "drip"]).unwrap(),
        "0"
    );
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = [0u8; 64];
        let _ = stream.read(&mut buf);
        let _ = stream.write_all(b"0\0");
        for byte in b"0123456789" {
            std::thread::sleep(Duration::from_millis(1500));
            let _ = stream.write_all(&[*byte]);
        }
    });
    let mut bob = setup.shell("b", "bob");
    let (line, _) = timed(&mut bob, "GET_FILE slow slow.txt out.txt");
    assert_eq!(line, "c> GET_FILE OK", "{}", bob.proc.stderr());
    assert_eq!(
        std::fs::read(setup.path("b", "out.txt")).unwrap(),
        b"0123456789"
    );
    assert!(bob.quit().unwrap().success());
}
