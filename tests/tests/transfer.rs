//! Peer-to-peer transfers through two real `peerdex` shells: big files
//! intact, traversal refused, an interrupted download leaves nothing behind.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use peerdex_tests::raw::{self, encode, read_to_close};
use peerdex_tests::scene::{hash_file, random_file, Scene};
use peerdex_tests::Shell;

/// Entries of `dir` other than the share dir and the history file.
fn stray_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "share" && n != ".peerdex_history")
        .collect();
    names.sort();
    names
}

#[test]
fn a_200_mib_random_file_arrives_intact() {
    let setup = Scene::new();
    const LEN: usize = 200 << 20;
    let hash = random_file(&setup.share("b").join("big.bin"), LEN);
    let mut b = setup.shell("b", "bob");
    b.expect("PUBLISH big.bin two hundred MiB", "PUBLISH OK")
        .unwrap();
    let mut a = setup.shell("a", "alice");

    let started = Instant::now();
    a.send("GET_FILE bob big.bin local.bin").unwrap();
    let line = a.proc.expect_line(Duration::from_secs(120)).unwrap();
    assert_eq!(line, "c> GET_FILE OK", "stderr: {}", a.proc.stderr());
    eprintln!("200 MiB downloaded in {:?}", started.elapsed());
    let local = setup.workdir("a").join("local.bin");
    assert_eq!(std::fs::metadata(&local).unwrap().len(), LEN as u64);
    assert_eq!(hash_file(&local), hash, "the downloaded bytes differ");
    assert_eq!(stray_files(&setup.workdir("a")), ["local.bin"]);
    assert!(a.quit().unwrap().success());
    assert!(b.quit().unwrap().success());
}

/// The listener port of `user` as LIST_USERS shows it to `shell`.
fn listener_port(shell: &mut Shell, user: &str) -> u16 {
    let users = shell.list_users().unwrap();
    let (_, ip, port) = users
        .into_iter()
        .find(|(name, _, _)| name == user)
        .unwrap_or_else(|| panic!("{user} is not listed"));
    assert_eq!(ip, "127.0.0.1");
    port
}

#[test]
fn the_peer_listener_refuses_paths_outside_its_share_dir() {
    let setup = Scene::new();
    // A secret next to the share dir, and one link inside it pointing out.
    std::fs::write(setup.workdir("b").join("secret.txt"), "top secret").unwrap();
    std::os::unix::fs::symlink(
        setup.workdir("b").join("secret.txt"),
        setup.share("b").join("link.txt"),
    )
    .unwrap();
    std::os::unix::fs::symlink("../secret.txt", setup.share("b").join("rel-link.txt")).unwrap();
    std::fs::write(setup.share("b").join("ok.txt"), "shared content").unwrap();

    let mut b = setup.shell("b", "bob");
    b.expect("PUBLISH ok.txt fine", "PUBLISH OK").unwrap();
    // The shell may or may not let these through; the listener must refuse
    // them either way.
    for name in ["../secret.txt", "/etc/passwd", "link.txt", "rel-link.txt"] {
        let line = b.run(&format!("PUBLISH {name} hostile")).unwrap();
        eprintln!("PUBLISH {name}: {line}");
    }
    let port = listener_port(&mut b, "bob");

    // Positive control, in the three request forms.
    let (code, body) = raw::get_file(port, "ok.txt").unwrap();
    assert_eq!(
        (code.as_str(), body.as_slice()),
        ("0", &b"shared content"[..])
    );
    for request in [
        &b"GET_FILE \0ok.txt\0"[..],
        b"GET_FILE\0ok.txt\x0021/11/2026 09:05:07\0",
    ] {
        let mut stream = raw::connect(port).unwrap();
        stream.write_all(request).unwrap();
        let (reply, _) = read_to_close(&mut stream).unwrap();
        assert_eq!(reply, b"0\0shared content", "request {request:?}");
    }

    for name in [
        "../secret.txt",
        "/etc/passwd",
        "link.txt",
        "rel-link.txt",
        "share/../../secret.txt",
        "./../secret.txt",
        "..",
        "",
    ] {
        let (code, body) = raw::get_file(port, name).unwrap();
        assert!(
            code == "1" || (name.is_empty() && code == "2"),
            "GET_FILE {name:?} answered {code:?} with {} bytes",
            body.len()
        );
        assert!(body.is_empty(), "GET_FILE {name:?} sent bytes: {body:?}");
    }

    // An op the listener does not know: code 2.
    let mut stream = raw::connect(port).unwrap();
    stream.write_all(&encode(&["PUT_FILE", "ok.txt"])).unwrap();
    let (reply, _) = read_to_close(&mut stream).unwrap();
    assert_eq!(reply, b"2\0");

    assert!(b.quit().unwrap().success());
}

#[test]
fn a_peer_killed_mid_transfer_leaves_no_temporary_file() {
    let setup = Scene::new();
    // 1 GiB: 16 MiB of random bytes, the rest a hole (cheap to make, long
    // enough to transfer that the kill lands mid-way).
    let path = setup.share("b").join("huge.bin");
    random_file(&path, 16 << 20);
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();

    let mut b = setup.shell("b", "bob");
    b.expect("PUBLISH huge.bin one GiB", "PUBLISH OK").unwrap();
    let mut a = setup.shell("a", "alice");
    let target = setup.workdir("a");

    a.send("GET_FILE bob huge.bin local.bin").unwrap();
    // Kill the serving shell once the temporary file appears in the target
    // dir, or after 1.5 s at the latest.
    let started = Instant::now();
    while stray_files(&target).is_empty() && started.elapsed() < Duration::from_millis(1500) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let seen = stray_files(&target);
    b.proc.kill9().unwrap();

    let line = a.proc.expect_line(Duration::from_secs(60)).unwrap();
    let left = stray_files(&target);
    match line.as_str() {
        // Between peerdex peers the size is known: the truncation is a
        // failure, and the .part file and its state stay for a resume
        // (never a local.bin).
        "c> GET_FILE FAIL" => assert!(
            left.is_empty() || left == ["local.bin.part", "local.bin.part.state"],
            "files left after a failed download: {left:?} (seen during: {seen:?})"
        ),
        // The kernel closes a killed peer's socket with a FIN: the protocol
        // (no length, bytes until close) cannot tell that from the end of
        // the file, so the downloader may report success with a prefix.
        "c> GET_FILE OK" => {
            let len = std::fs::metadata(target.join("local.bin")).unwrap().len();
            eprintln!(
                "note: killed peer looked like a complete transfer ({len} of {} bytes)",
                1u64 << 30
            );
            assert_eq!(left, ["local.bin"], "temporary files left: {left:?}");
        }
        other => panic!("unexpected result {other:?}; stderr: {}", a.proc.stderr()),
    }
    // 0 after a transfer that looked complete, 1 after GET_FILE FAIL.
    let failed = line.contains("FAIL");
    assert_eq!(a.quit().unwrap().code(), Some(i32::from(failed)));
}

/// A fake peer on 127.0.0.1 that serves up to `connections` connections
/// with `handle` (each gets the connection index), then stops. Registered
/// and connected in the directory as `user` through raw requests.
fn fake_peer(
    server_port: u16,
    user: &str,
    connections: usize,
    handle: impl Fn(usize, TcpStream) + Send + 'static,
) -> std::thread::JoinHandle<usize> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    assert_eq!(raw::code(server_port, "REGISTER", user, &[]).unwrap(), "0");
    assert_eq!(
        raw::code(server_port, "CONNECT", user, &["127.0.0.1", &port]).unwrap(),
        "0"
    );
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut served = 0;
        while served < connections && Instant::now() < deadline {
            match listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false).unwrap();
                    stream
                        .set_read_timeout(Some(Duration::from_secs(10)))
                        .unwrap();
                    handle(served, stream);
                    served += 1;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        served
    })
}

/// Reads what arrives in one `read` call (what some deployed peers do).
fn one_read(stream: &mut TcpStream) -> Vec<u8> {
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).unwrap_or(0);
    buf[..n].to_vec()
}

#[test]
fn a_reset_mid_transfer_is_a_failure_and_leaves_nothing() {
    let setup = Scene::new();
    let peer = fake_peer(setup.port(), "faker", 1, |_, mut stream| {
        // Never read the request: closing with it unread sends a RST.
        let _ = stream.write_all(b"0\0");
        let _ = stream.write_all(&vec![7u8; 4 << 20]);
        std::thread::sleep(Duration::from_millis(100));
    });
    let mut a = setup.shell("a", "alice");
    let line = a.run("GET_FILE faker song.mp3 local.bin").unwrap();
    assert_eq!(peer.join().unwrap(), 1, "the client never came");
    assert_eq!(line, "c> GET_FILE FAIL", "stderr: {}", a.proc.stderr());
    let left = stray_files(&setup.workdir("a"));
    assert!(
        left.is_empty(),
        "files left after a failed download: {left:?}"
    );
    assert_eq!(a.quit().unwrap().code(), Some(1), "GET_FILE failed");
}

#[test]
fn the_request_fits_one_read_and_code_2_gets_one_exact_retry() {
    let setup = Scene::new();
    let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = requests.clone();
    // The directory holds no identity for the file, so the peer is taken
    // for a classic one: only the classic request, in the compatible form
    // first; this old peer knows only the exact op and answers 2 to it.
    let peer = fake_peer(setup.port(), "oldpeer", 2, move |_, mut stream| {
        let request = one_read(&mut stream);
        seen.lock().unwrap().push(request.clone());
        if request == b"GET_FILE\0song.mp3\0" {
            let _ = stream.write_all(b"0\0old peer content");
        } else {
            let _ = stream.write_all(b"2\0");
        }
    });
    let mut a = setup.shell("a", "alice");
    let line = a.run("GET_FILE oldpeer song.mp3 local.bin").unwrap();
    assert_eq!(peer.join().unwrap(), 2, "expected exactly two connections");
    let requests = requests.lock().unwrap().clone();
    assert_eq!(
        requests,
        [
            b"GET_FILE \0song.mp3\0".to_vec(),
            b"GET_FILE\0song.mp3\0".to_vec()
        ],
        "requests as received by one read each"
    );
    assert_eq!(line, "c> GET_FILE OK", "stderr: {}", a.proc.stderr());
    assert_eq!(
        std::fs::read(setup.workdir("a").join("local.bin")).unwrap(),
        b"old peer content"
    );
    assert!(a.quit().unwrap().success());
}

#[test]
fn code_1_from_the_peer_is_file_not_exist() {
    let setup = Scene::new();
    let peer = fake_peer(setup.port(), "nofile", 1, |_, mut stream| {
        let _ = one_read(&mut stream);
        let _ = stream.write_all(b"1\0");
    });
    let mut a = setup.shell("a", "alice");
    let line = a.run("GET_FILE nofile song.mp3 local.bin").unwrap();
    assert_eq!(peer.join().unwrap(), 1);
    assert_eq!(line, "c> GET_FILE FAIL, FILE NOT EXIST");
    assert!(stray_files(&setup.workdir("a")).is_empty());
    assert_eq!(a.quit().unwrap().code(), Some(1), "GET_FILE failed");
}
