//! Byte-exact replies of every operation, over real sockets.

mod common;

use common::{config, connected, TestServer, DT};

#[tokio::test]
async fn register_with_and_without_datetime() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;
    assert_eq!(server.send(&["REGISTER", DT, "alice"]).await, b"0\0");
    assert_eq!(server.send(&["REGISTER", "alice"]).await, b"1\0");
    assert_eq!(server.send(&["REGISTER", "bob"]).await, b"0\0");
    assert_eq!(server.send(&["REGISTER", DT, "bad name"]).await, b"2\0");
    assert_eq!(server.send(&[" REGISTER ", DT, "carol"]).await, b"0\0");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn list_users_format_and_source_address() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;
    assert_eq!(server.send(&["LIST_USERS", DT, "al"]).await, b"1\0");
    assert_eq!(server.send(&["REGISTER", DT, "al"]).await, b"0\0");
    assert_eq!(server.send(&["LIST_USERS", DT, "al"]).await, b"2\0");
    // 0.0.0.0 means "the TCP source address".
    assert_eq!(
        server.send(&["CONNECT", DT, "al", "0.0.0.0", "4000"]).await,
        b"0\0"
    );
    // Port-only form, without DATETIME.
    assert_eq!(server.send(&["REGISTER", "bo"]).await, b"0\0");
    assert_eq!(server.send(&["CONNECT", "bo", "4001"]).await, b"0\0");
    assert_eq!(server.send(&["REGISTER", DT, "cy"]).await, b"0\0");
    assert_eq!(
        server
            .send(&["CONNECT", DT, "cy", "10.1.2.3", "65535"])
            .await,
        b"0\0"
    );
    assert_eq!(
        server.send(&["CONNECT", DT, "cy", "10.1.2.3", "5"]).await,
        b"2\0"
    );
    assert_eq!(server.send(&["REGISTER", DT, "dan"]).await, b"0\0");
    assert_eq!(
        server.send(&["CONNECT", DT, "dan", "10.1.2.3", "0"]).await,
        b"3\0"
    );
    assert_eq!(
        server
            .send(&["CONNECT", DT, "dan", "not-an-ip", "80"])
            .await,
        b"3\0"
    );
    assert_eq!(
        server
            .send(&["CONNECT", DT, "ghost", "10.1.2.3", "80"])
            .await,
        b"1\0"
    );
    let reply = server.send(&["LIST_USERS", DT, "al"]).await;
    assert_eq!(
        reply,
        common::request(&[
            "0",
            "3",
            "al",
            "127.0.0.1",
            "4000",
            "bo",
            "127.0.0.1",
            "4001",
            "cy",
            "10.1.2.3",
            "65535"
        ])
    );
    assert_eq!(server.send(&["DISCONNECT", DT, "cy"]).await, b"0\0");
    assert_eq!(server.send(&["DISCONNECT", DT, "cy"]).await, b"2\0");
    assert_eq!(server.send(&["DISCONNECT", DT, "nobody"]).await, b"1\0");
    let reply = server.send(&["LIST_USERS", "bo"]).await;
    assert_eq!(
        reply,
        common::request(&[
            "0",
            "2",
            "al",
            "127.0.0.1",
            "4000",
            "bo",
            "127.0.0.1",
            "4001"
        ])
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn publish_delete_and_list_content_format() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;
    assert_eq!(
        server.send(&["PUBLISH", DT, "al", "a.txt", "d"]).await,
        b"1\0"
    );
    assert_eq!(server.send(&["REGISTER", DT, "al"]).await, b"0\0");
    assert_eq!(
        server.send(&["PUBLISH", DT, "al", "a.txt", "d"]).await,
        b"2\0"
    );
    connected(&server, "bo", 5000).await;
    assert_eq!(
        server.send(&["CONNECT", DT, "al", "10.0.0.2", "1"]).await,
        b"0\0"
    );
    assert_eq!(
        server
            .send(&["PUBLISH", DT, "al", "b.txt", "a nice file"])
            .await,
        b"0\0"
    );
    assert_eq!(server.send(&["PUBLISH", "al", "a.txt", ""]).await, b"0\0");
    assert_eq!(
        server.send(&["PUBLISH", DT, "al", "a.txt", "x"]).await,
        b"3\0"
    );
    assert_eq!(
        server.send(&["PUBLISH", DT, "al", "c d", "x"]).await,
        b"4\0"
    );
    assert_eq!(
        server.send(&["LIST_CONTENT", DT, "bo", "al"]).await,
        common::request(&["0", "2", "a.txt", "", "b.txt", "a nice file"])
    );
    assert_eq!(
        server.send(&["LIST_CONTENT", DT, "bo", "bo"]).await,
        common::request(&["0", "0"])
    );
    assert_eq!(server.send(&["LIST_CONTENT", DT, "bo", "zz"]).await, b"3\0");
    assert_eq!(server.send(&["LIST_CONTENT", DT, "zz", "al"]).await, b"1\0");
    assert_eq!(server.send(&["DELETE", DT, "al", "a.txt"]).await, b"0\0");
    assert_eq!(server.send(&["DELETE", DT, "al", "a.txt"]).await, b"3\0");
    assert_eq!(server.send(&["DELETE", DT, "zz", "a.txt"]).await, b"1\0");
    // Content stays published after DISCONNECT; the remote need not be connected.
    assert_eq!(server.send(&["DISCONNECT", DT, "al"]).await, b"0\0");
    assert_eq!(server.send(&["DELETE", DT, "al", "b.txt"]).await, b"2\0");
    assert_eq!(server.send(&["LIST_CONTENT", DT, "al", "al"]).await, b"2\0");
    assert_eq!(
        server.send(&["LIST_CONTENT", "bo", "al"]).await,
        common::request(&["0", "1", "b.txt", "a nice file"])
    );
    // UNREGISTER removes everything, whatever the state.
    assert_eq!(server.send(&["UNREGISTER", DT, "al"]).await, b"0\0");
    assert_eq!(server.send(&["UNREGISTER", DT, "al"]).await, b"1\0");
    assert_eq!(server.send(&["LIST_CONTENT", DT, "bo", "al"]).await, b"3\0");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn large_listing_streams_completely() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;
    connected(&server, "al", 1).await;
    let description = "d".repeat(200);
    let n = 800; // ~170 KiB: several chunks.
    let mut expected = common::request(&["0", &n.to_string()]);
    let mut names: Vec<String> = (0..n).map(|i| format!("file{i:04}")).collect();
    names.sort();
    for name in &names {
        assert_eq!(
            server
                .send(&["PUBLISH", DT, "al", name, &description])
                .await,
            b"0\0"
        );
        expected.extend(common::request(&[name, &description]));
    }
    let reply = server.send(&["LIST_CONTENT", DT, "al", "al"]).await;
    assert_eq!(reply.len(), expected.len());
    assert!(reply == expected);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn state_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;
    // A listener that answers: a CONNECT over an entry whose address
    // does not answer would take it over.
    let listener = common::connected_live(&server, "al").await;
    assert_eq!(server.send(&["PUBLISH", DT, "al", "f", "d"]).await, b"0\0");
    server.stop().await.unwrap();
    let server = TestServer::start(config(dir.path())).await;
    assert_eq!(server.send(&["REGISTER", DT, "al"]).await, b"1\0");
    assert_eq!(
        server.send(&["CONNECT", DT, "al", "127.0.0.1", "7"]).await,
        b"2\0"
    );
    drop(listener);
    assert_eq!(
        server.send(&["LIST_CONTENT", DT, "al", "al"]).await,
        common::request(&["0", "1", "f", "d"])
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn corrupt_data_dir_fails_to_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(peerdex_server::durable::DB_FILE_NAME),
        vec![0x5a; 10_000],
    )
    .unwrap();
    let err = match peerdex_server::Server::bind(config(dir.path())).await {
        Ok(_) => panic!("a corrupt database must not start"),
        Err(err) => err,
    };
    assert!(
        err.to_string().contains(&dir.path().display().to_string()),
        "{err}"
    );
}
