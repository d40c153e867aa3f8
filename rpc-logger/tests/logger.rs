//! The logger served in-process, spoken to through `rpc::connect`.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use peerdex_logger::rpc::{self, OpRecord};
use peerdex_logger::{serve_with_output, Output};
use peerdex_protocol::datetime;
use tarpc::context;

/// An in-memory stdout.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

fn record(user: &str, op: &str, file: Option<&str>) -> OpRecord {
    OpRecord {
        user: user.into(),
        op: op.into(),
        file: file.map(Into::into),
        datetime: "21/11/2026 09:05:07".into(),
        outcome: Some("OK".into()),
    }
}

const LIMIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn prints_batches_in_order_and_tells_the_time() {
    let captured = Captured::default();
    let logger = serve_with_output("127.0.0.1:0", Output::new(captured.clone()))
        .await
        .unwrap();
    let client = tokio::time::timeout(LIMIT, rpc::connect(logger.local_addr()))
        .await
        .unwrap()
        .unwrap();

    let first = vec![
        record("alice", "REGISTER", None),
        record("alice", "CONNECT", None),
    ];
    let n = client.log(context::current(), first).await.unwrap();
    assert_eq!(n, 2);
    let second = vec![record("alice", "PUBLISH", Some("a.txt"))];
    let n = client.log(context::current(), second).await.unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        captured.text(),
        "alice REGISTER 21/11/2026 09:05:07 -> OK\n\
         alice CONNECT 21/11/2026 09:05:07 -> OK\n\
         alice PUBLISH a.txt 21/11/2026 09:05:07 -> OK\n"
    );

    let now = client.now(context::current()).await.unwrap();
    assert!(datetime::is_datetime(&now), "{now:?} is not a DATETIME");
}

#[tokio::test]
async fn many_batches_without_waiting_stay_in_order() {
    let captured = Captured::default();
    let logger = serve_with_output("127.0.0.1:0", Output::new(captured.clone()))
        .await
        .unwrap();
    let client = rpc::connect(logger.local_addr()).await.unwrap();
    // Issue all calls at once on one connection: tarpc pipelines them, the
    // logger must still print them in the order they were sent.
    let calls = (0..50).map(|i| {
        let client = client.clone();
        let batch = vec![record(&format!("u{i}"), "REGISTER", None)];
        async move { client.log(context::current(), batch).await }
    });
    let results = futures::future::join_all(calls).await;
    assert!(results.into_iter().all(|r| r.unwrap() == 1));
    let expected: String = (0..50)
        .map(|i| format!("u{i} REGISTER 21/11/2026 09:05:07 -> OK\n"))
        .collect();
    assert_eq!(captured.text(), expected);
}

#[tokio::test]
async fn a_vanishing_client_does_not_break_the_next_one() {
    let captured = Captured::default();
    let logger = serve_with_output("127.0.0.1:0", Output::new(captured.clone()))
        .await
        .unwrap();
    let addr = logger.local_addr();

    // A tarpc client that connects and is dropped at once.
    drop(rpc::connect(addr).await.unwrap());
    // A raw TCP client that sends half a frame and vanishes.
    {
        use tokio::io::AsyncWriteExt;
        let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
        raw.write_all(&[0, 0, 1, 0, b'{']).await.unwrap();
    }
    // A raw client that sends garbage.
    {
        use tokio::io::AsyncWriteExt;
        let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
        raw.write_all(&[0, 0, 0, 3, b'x', b'y', b'z'])
            .await
            .unwrap();
    }

    let client = tokio::time::timeout(LIMIT, rpc::connect(addr))
        .await
        .unwrap()
        .unwrap();
    let n = tokio::time::timeout(
        LIMIT,
        client.log(context::current(), vec![record("bob", "REGISTER", None)]),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(n, 1);
    assert_eq!(captured.text(), "bob REGISTER 21/11/2026 09:05:07 -> OK\n");
}

#[tokio::test]
async fn hostile_fields_print_as_one_line_without_control_characters() {
    let captured = Captured::default();
    let logger = serve_with_output("127.0.0.1:0", Output::new(captured.clone()))
        .await
        .unwrap();
    let client = rpc::connect(logger.local_addr()).await.unwrap();
    let hostile = OpRecord {
        user: "eve\nmallory REGISTER 21/11/2026 09:05:07".into(),
        op: "PUBLISH".into(),
        file: Some("a\u{1b}[2Jb\r".into()),
        datetime: "\t21/11/2026\u{9b}".into(),
        outcome: Some("USER DOES NOT EXIST\n".into()),
    };
    let n = client.log(context::current(), vec![hostile]).await.unwrap();
    assert_eq!(n, 1);
    let text = captured.text();
    assert_eq!(text.matches('\n').count(), 1, "{text:?}");
    assert!(
        !text.trim_end_matches('\n').chars().any(char::is_control),
        "{text:?}"
    );
    assert_eq!(
        text,
        "eve\\nmallory\\x20REGISTER\\x2021/11/2026\\x2009:05:07 PUBLISH a\\x1b[2Jb\\r \
         \\t21/11/2026\\x9b -> USER DOES NOT EXIST\\n\n"
    );
}

#[tokio::test]
async fn a_record_from_a_server_without_outcomes_prints_the_classic_line() {
    let captured = Captured::default();
    let logger = serve_with_output("127.0.0.1:0", Output::new(captured.clone()))
        .await
        .unwrap();
    let client = rpc::connect(logger.local_addr()).await.unwrap();
    let mut old = record("alice", "DELETE", Some("a.txt"));
    old.outcome = None;
    client.log(context::current(), vec![old]).await.unwrap();
    assert_eq!(captured.text(), "alice DELETE a.txt 21/11/2026 09:05:07\n");
}
