//! Accounts, sessions and presence end to end: real `peerdex-server`,
//! real shells, raw classic bytes for what a classic client (or an
//! impostor) can send.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use peerdex_tests::raw::{self, request};
use peerdex_tests::{wait_until, LoggerProcess, ServerProcess, Shell};

const DT: &str = "21/11/2026 09:05:07";

/// A server and a place for shells.
struct World {
    dir: tempfile::TempDir,
    server: ServerProcess,
}

impl World {
    fn start(args: &[&str]) -> World {
        let dir = tempfile::tempdir().unwrap();
        let server = ServerProcess::start(&dir.path().join("data"), args).unwrap();
        World { dir, server }
    }

    /// A shell named `name` with its own working dir and share dir, and a
    /// password file holding `password` when one is given.
    fn shell(&self, name: &str, password: Option<&str>) -> Shell {
        let cwd = self.dir.path().join(name);
        let share = cwd.join("share");
        fs::create_dir_all(&share).unwrap();
        let mut args: Vec<String> = Vec::new();
        if let Some(password) = password {
            let file = self.secret(name, password);
            args.push("--password-file".into());
            args.push(file.to_string_lossy().into_owned());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Shell::spawn(self.server.port, &share, &cwd, &args).unwrap()
    }

    fn secret(&self, name: &str, password: &str) -> PathBuf {
        let dir = self.dir.path().join("secrets");
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join(name);
        fs::write(&file, format!("{password}\n")).unwrap();
        file
    }

    fn share(&self, name: &str) -> PathBuf {
        self.dir.path().join(name).join("share")
    }
}

fn listed(shell: &mut Shell, user: &str) -> bool {
    shell
        .list_users()
        .unwrap()
        .iter()
        .any(|(name, _, _)| name == user)
}

/// The bytes of a classic request, sent on its own connection.
fn classic(port: u16, fields: &[&str]) -> Vec<String> {
    request(port, fields).unwrap()
}

#[test]
fn a_protected_account_refuses_every_classic_mutation_and_changes_nothing() {
    let logger = LoggerProcess::start(0).unwrap();
    let logger_addr = format!("127.0.0.1:{}", logger.port);
    let world = World::start(&["--logger", &logger_addr]);
    let mut alice = world.shell("alice", Some("correct horse battery"));
    fs::write(world.share("alice").join("song.mp3"), b"la la la").unwrap();
    alice.expect("REGISTER alice", "REGISTER OK").unwrap();
    alice.expect("CONNECT alice", "CONNECT OK").unwrap();
    alice
        .expect("PUBLISH song.mp3 a song", "PUBLISH OK")
        .unwrap();
    let before = classic(world.server.port, &["LIST_CONTENT", DT, "alice", "alice"]);
    let port = world.server.port;
    let hash = "ab".repeat(32);
    // Every mutation an impostor can send in the classic protocol, with
    // the op's catch-all code expected.
    let attempts: [(&[&str], &str); 8] = [
        (&["UNREGISTER", DT, "alice"], "2"),
        (&["CONNECT", DT, "alice", "127.0.0.1", "4999"], "3"),
        (&["DISCONNECT", DT, "alice"], "3"),
        (&["PUBLISH", DT, "alice", "evil.txt", "planted"], "4"),
        (
            &[
                "PUBLISH_CONTENT",
                DT,
                "alice",
                "evil2.txt",
                "planted",
                "3",
                &hash,
            ],
            "4",
        ),
        (&["DELETE", DT, "alice", "song.mp3"], "4"),
        (&["SET_PASSWORD", DT, "alice", "mine now"], "2"),
        (&["CONNECT", DT, "alice", "4998"], "3"),
    ];
    for (fields, code) in attempts {
        assert_eq!(classic(port, fields), [code], "{fields:?}");
    }
    assert_eq!(
        classic(port, &["LIST_CONTENT", DT, "alice", "alice"]),
        before,
        "nothing changed"
    );
    let users = classic(port, &["LIST_USERS", DT, "alice"]);
    assert_eq!(users[..2], ["0".to_string(), "1".to_string()], "{users:?}");
    assert_eq!(users[2], "alice");
    // Still hers: her own shell goes on.
    alice.expect("DELETE song.mp3", "DELETE OK").unwrap();
    // The logger shows the refusals as such.
    let mut refused = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while refused < attempts.len() && Instant::now() < deadline {
        match logger.read_line(Duration::from_millis(200)) {
            Some(line) if line.ends_with("-> REFUSED") => {
                assert!(line.starts_with("alice "), "{line}");
                refused += 1;
            }
            _ => {}
        }
    }
    assert_eq!(refused, attempts.len(), "REFUSED lines in the logger");
}

#[test]
fn a_wrong_password_is_refused_and_the_right_one_works() {
    let world = World::start(&[]);
    let mut alice = world.shell("alice", Some("the right one"));
    alice.expect("REGISTER alice", "REGISTER OK").unwrap();
    alice.quit().unwrap();
    let mut impostor = world.shell("impostor", Some("a guess"));
    impostor.expect("CONNECT alice", "CONNECT FAIL").unwrap();
    // The reason goes to stderr, read by another thread: wait for it.
    assert!(
        wait_until(Duration::from_secs(5), || impostor
            .proc
            .stderr()
            .contains("wrong password for alice")),
        "{}",
        impostor.proc.stderr()
    );
    let mut anonymous = world.shell("anonymous", None);
    anonymous.expect("CONNECT alice", "CONNECT FAIL").unwrap();
    anonymous
        .expect("UNREGISTER alice", "UNREGISTER FAIL")
        .unwrap();
    let mut alice = world.shell("alice2", Some("the right one"));
    alice.expect("CONNECT alice", "CONNECT OK").unwrap();
}

#[test]
fn a_killed_session_client_leaves_at_once_and_can_connect_again() {
    let world = World::start(&[]);
    let mut alice = world.shell("alice", Some("pw for alice"));
    alice.expect("REGISTER alice", "REGISTER OK").unwrap();
    alice.expect("CONNECT alice", "CONNECT OK").unwrap();
    let mut bob = world.shell("bob", None);
    bob.expect("REGISTER bob", "REGISTER OK").unwrap();
    bob.expect("CONNECT bob", "CONNECT OK").unwrap();
    assert!(listed(&mut bob, "alice"));
    alice.proc.kill9().unwrap();
    let killed = Instant::now();
    // The default heartbeat timeout bounds it; a killed process's socket
    // is closed by its kernel, so it is much sooner in practice.
    assert!(
        wait_until(Duration::from_secs(15), || !listed(&mut bob, "alice")),
        "alice still listed after the default timeout"
    );
    eprintln!("alice gone from LIST_USERS after {:?}", killed.elapsed());
    let mut again = world.shell("alice-again", Some("pw for alice"));
    again.expect("CONNECT alice", "CONNECT OK").unwrap();
    assert!(listed(&mut bob, "alice"));
    // And WHOIS says where.
    again.send("WHOIS alice").unwrap();
    assert_eq!(
        again.read_line(Duration::from_secs(5)).unwrap(),
        "c> WHOIS OK"
    );
    let line = again.read_line(Duration::from_secs(5)).unwrap();
    assert!(line.starts_with("\talice online 127.0.0.1 "), "{line}");
}

#[test]
fn connect_takes_over_a_classic_entry_whose_listener_is_dead() {
    let world = World::start(&[]);
    let port = world.server.port;
    // A classic client registered and connected dave at a listener that
    // is gone now.
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port().to_string();
    drop(dead);
    assert_eq!(classic(port, &["REGISTER", DT, "dave"]), ["0"]);
    assert_eq!(
        classic(port, &["CONNECT", DT, "dave", "127.0.0.1", &dead_port]),
        ["0"]
    );
    let mut dave = world.shell("dave", None);
    dave.expect("CONNECT dave", "CONNECT OK").unwrap();
    let users = dave.list_users().unwrap();
    let entry = users.iter().find(|(name, _, _)| name == "dave").unwrap();
    assert_ne!(entry.2.to_string(), dead_port, "the new listener is listed");
    // A live holder keeps its entry.
    assert_eq!(
        classic(port, &["CONNECT", DT, "dave", "127.0.0.1", "4000"]),
        ["2"]
    );
}

#[test]
fn whois_tells_online_offline_and_never() {
    let world = World::start(&[]);
    let mut alice = world.shell("alice", None);
    alice.expect("REGISTER alice", "REGISTER OK").unwrap();
    alice.expect("CONNECT alice", "CONNECT OK").unwrap();
    alice.expect("REGISTER carol", "REGISTER OK").unwrap();
    let mut bob = world.shell("bob", None);
    bob.expect("REGISTER bob", "REGISTER OK").unwrap();
    let whois = |shell: &mut Shell, user: &str| -> Vec<String> {
        shell.send(&format!("WHOIS {user}")).unwrap();
        let mut lines = vec![shell.read_line(Duration::from_secs(5)).unwrap()];
        if lines[0] == "c> WHOIS OK" {
            lines.push(shell.read_line(Duration::from_secs(5)).unwrap());
        }
        lines
    };
    let online = whois(&mut bob, "alice");
    assert_eq!(online[0], "c> WHOIS OK");
    assert!(
        online[1].starts_with("\talice online 127.0.0.1 "),
        "{online:?}"
    );
    assert_eq!(
        whois(&mut bob, "carol"),
        ["c> WHOIS OK", "\tcarol offline never"]
    );
    assert_eq!(
        whois(&mut bob, "nobody"),
        ["c> WHOIS FAIL, USER DOES NOT EXIST"]
    );
    alice.expect("DISCONNECT alice", "DISCONNECT OK").unwrap();
    let offline = whois(&mut bob, "alice");
    assert_eq!(offline[0], "c> WHOIS OK");
    let seen = offline[1].strip_prefix("\talice offline ").unwrap();
    assert!(peerdex_protocol::datetime::is_datetime(seen), "{offline:?}");
}

#[test]
fn a_peer_refuses_a_file_published_for_it_by_someone_else() {
    let world = World::start(&[]);
    let mut alice = world.shell("alice", None);
    fs::write(world.share("alice").join("diary.txt"), b"private").unwrap();
    fs::write(world.share("alice").join("public.txt"), b"public").unwrap();
    alice.expect("REGISTER alice", "REGISTER OK").unwrap();
    alice.expect("CONNECT alice", "CONNECT OK").unwrap();
    alice.expect("PUBLISH public.txt ok", "PUBLISH OK").unwrap();
    // Anyone may publish for an account without a password, as classic
    // clients do; alice's peer must not serve it on that word.
    let port = world.server.port;
    assert_eq!(
        classic(port, &["PUBLISH", DT, "alice", "diary.txt", "planted"]),
        ["0"]
    );
    let users = classic(port, &["LIST_USERS", DT, "alice"]);
    let at = users.iter().position(|f| f == "alice").unwrap();
    let listener_port: u16 = users[at + 2].parse().unwrap();
    let get = |name: &str| -> Vec<u8> {
        let mut stream = raw::connect(listener_port).unwrap();
        std::io::Write::write_all(&mut stream, format!("GET_FILE\0{name}\0").as_bytes()).unwrap();
        raw::read_to_close(&mut stream).unwrap().0
    };
    assert_eq!(get("diary.txt"), b"1\0");
    assert_eq!(get("public.txt"), b"0\0public");
    let mut bob = world.shell("bob", None);
    bob.expect("REGISTER bob", "REGISTER OK").unwrap();
    bob.expect("CONNECT bob", "CONNECT OK").unwrap();
    bob.list_users().unwrap();
    bob.expect(
        "GET_FILE alice diary.txt got.txt",
        "GET_FILE FAIL, FILE NOT EXIST",
    )
    .unwrap();
    assert!(!Path::new(&world.dir.path().join("bob").join("got.txt")).exists());
}

#[test]
fn auth_required_accepts_changes_only_from_authenticated_sessions() {
    let world = World::start(&["--auth", "required"]);
    let port = world.server.port;
    assert_eq!(classic(port, &["REGISTER", DT, "mallory"]), ["2"]);
    let mut anonymous = world.shell("anonymous", None);
    anonymous
        .expect("REGISTER nopass", "REGISTER FAIL")
        .unwrap();
    let mut alice = world.shell("alice", Some("alice's password"));
    alice.expect("REGISTER alice", "REGISTER OK").unwrap();
    alice.expect("CONNECT alice", "CONNECT OK").unwrap();
    // Classic clients still read.
    let users = classic(port, &["LIST_USERS", DT, "alice"]);
    assert_eq!(users[..3], ["0", "1", "alice"]);
    assert_eq!(classic(port, &["DISCONNECT", DT, "alice"]), ["3"]);
}

#[test]
fn passwd_protects_an_open_account_and_changes_a_password() {
    let world = World::start(&[]);
    let new_password = world.secret("new", "brand new secret");
    let cwd = world.dir.path().join("carol");
    let share = cwd.join("share");
    fs::create_dir_all(&share).unwrap();
    let mut carol = Shell::spawn(
        world.server.port,
        &share,
        &cwd,
        &["--new-password-file", &new_password.to_string_lossy()],
    )
    .unwrap();
    carol.expect("REGISTER carol", "REGISTER OK").unwrap();
    carol.expect("PASSWD", "PASSWD OK").unwrap();
    let mut anonymous = world.shell("anonymous", None);
    anonymous.expect("CONNECT carol", "CONNECT FAIL").unwrap();
    let mut owner = world.shell("owner", Some("brand new secret"));
    owner.expect("CONNECT carol", "CONNECT OK").unwrap();
}
