//! The directory extensions (PUBLISH_CONTENT, SEARCH, FIND_SOURCES) as raw
//! bytes against the real `peerdex-server` binary, including a restart
//! (indexes rebuilt from the store) and the classic view of the entries.

use peerdex_tests::raw::{code, register_and_connect, request};
use peerdex_tests::ServerProcess;

const DT: &str = "21/11/2026 09:05:07";

#[test]
fn publish_content_search_find_sources_over_the_wire() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let hash = "ab".repeat(32);
    let port = {
        let server = ServerProcess::start(&data, &[]).unwrap();
        let port = server.port;
        register_and_connect(port, "al", "4000");
        register_and_connect(port, "bo", "4001");
        let publish = |user: &str, file: &str| {
            request(
                port,
                &["PUBLISH_CONTENT", DT, user, file, "same bytes", "5", &hash],
            )
            .unwrap()
        };
        assert_eq!(publish("al", "Song.mp3"), ["0"]);
        assert_eq!(publish("bo", "copy.mp3"), ["0"]);
        assert_eq!(publish("bo", "copy.mp3"), ["3"]);
        assert_eq!(
            code(port, "PUBLISH", "al", &["notes.txt", "n"]).unwrap(),
            "0"
        );
        // Classic view unchanged: FILE, DESCRIPTION only.
        assert_eq!(
            request(port, &["LIST_CONTENT", DT, "al", "al"]).unwrap(),
            ["0", "2", "Song.mp3", "same bytes", "notes.txt", "n"]
        );
        let reply = request(port, &["SEARCH", DT, "bo", "SONG", "10"]).unwrap();
        assert_eq!(
            reply,
            [
                "0",
                "1",
                "1",
                "al",
                "Song.mp3",
                "same bytes",
                "5",
                hash.as_str(),
                "1"
            ]
        );
        let reply = request(port, &["FIND_SOURCES", DT, "bo", "", "al", "Song.mp3"]).unwrap();
        assert_eq!(
            reply,
            [
                "0",
                "5",
                hash.as_str(),
                "2",
                "al",
                "127.0.0.1",
                "4000",
                "Song.mp3",
                "bo",
                "127.0.0.1",
                "4001",
                "copy.mp3"
            ]
        );
        assert_eq!(
            request(port, &["SEARCH", DT, "nobody", "x", "1"]).unwrap(),
            ["1"]
        );
        assert_eq!(
            request(port, &["SEARCH", DT, "al", "", "1"]).unwrap(),
            ["3"]
        );
        port
    };
    // After a restart the indexes are rebuilt from the store; connections
    // are kept (DISCONNECT was never sent).
    let server = ServerProcess::start_on(port, &data, &[]).unwrap();
    let reply = request(server.port, &["SEARCH", DT, "al", "*.mp?", "1"]).unwrap();
    assert_eq!(reply[..4], ["0", "2", "1", "al"]);
    assert_eq!(code(server.port, "DISCONNECT", "al", &[]).unwrap(), "0");
    let reply = request(server.port, &["FIND_SOURCES", DT, "bo", &hash, "", ""]).unwrap();
    assert_eq!(reply[..4], ["0", "5", hash.as_str(), "1"]);
    assert_eq!(reply[4], "bo");
}
