//! A shell's peer listener serves only what its user published through a
//! peerdex client, across shell runs (the durable record in the state
//! dir), never a file that the directory lists because someone published
//! it as that user with a raw classic client.

use std::io::{Read, Write};
use std::net::TcpStream;

use peerdex_tests::raw;
use peerdex_tests::scene::Scene;

/// A raw GET_FILE to the peer at `port`, its whole answer.
fn get_file(port: u16, name: &str) -> Vec<u8> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(format!("GET_FILE\0{name}\0").as_bytes())
        .unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    reply
}

#[test]
fn the_listener_serves_its_own_record_not_the_directory() {
    let setup = Scene::new();
    std::fs::write(setup.share("a").join("mine.txt"), b"mine").unwrap();
    std::fs::write(setup.share("a").join("raw.txt"), b"raw").unwrap();
    let mut first = setup.shell("a", "alice");
    first.expect("PUBLISH mine.txt d", "PUBLISH OK").unwrap();
    first.quit().unwrap();

    // A new shell run in the same place: mine.txt is still served.
    let mut alice = setup.spawn("a");
    alice.expect("CONNECT alice", "CONNECT OK").unwrap();
    // Someone with a raw client publishes raw.txt as alice.
    assert_eq!(
        raw::code(setup.port(), "PUBLISH", "alice", &["raw.txt", "x"]).unwrap(),
        "0"
    );
    let users = alice.list_users().unwrap();
    let (_, _, port) = users
        .into_iter()
        .find(|(name, _, _)| name == "alice")
        .expect("alice listed");
    assert_eq!(get_file(port, "mine.txt"), b"0\0mine");
    assert_eq!(get_file(port, "raw.txt"), b"1\0", "listed, not served");
    alice.expect("DELETE mine.txt", "DELETE OK").unwrap();
    assert_eq!(get_file(port, "mine.txt"), b"1\0");
    alice.quit().unwrap();
}
