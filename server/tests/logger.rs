//! The RPC logger sink: one record per operation, never on the critical path.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{config, TestServer, DT};
use futures::StreamExt;
use peerdex_protocol::rpc::{Logger, OpRecord};
use tarpc::serde_transport::tcp;
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Json;
use tokio::sync::mpsc;

/// A logger that forwards every record to a channel.
#[derive(Clone)]
struct Collecting(mpsc::UnboundedSender<OpRecord>);

impl Logger for Collecting {
    async fn log(self, _: tarpc::context::Context, records: Vec<OpRecord>) -> u64 {
        let n = records.len() as u64;
        for record in records {
            let _ = self.0.send(record);
        }
        n
    }

    async fn now(self, _: tarpc::context::Context) -> String {
        peerdex_protocol::datetime::now()
    }
}

async fn start_logger(addr: SocketAddr) -> mpsc::UnboundedReceiver<OpRecord> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut incoming = tcp::listen(addr, Json::default).await.unwrap();
    tokio::spawn(async move {
        while let Some(Ok(transport)) = incoming.next().await {
            let service = Collecting(tx.clone());
            tokio::spawn(
                BaseChannel::with_defaults(transport)
                    .execute(service.serve())
                    .for_each(|respond| respond),
            );
        }
    });
    rx
}

async fn next(rx: &mut mpsc::UnboundedReceiver<OpRecord>) -> OpRecord {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("record within 10 s")
        .expect("logger alive")
}

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test]
async fn records_carry_user_op_file_and_datetime() {
    let logger_addr = free_port();
    let mut records = start_logger(logger_addr).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.logger = Some(logger_addr.to_string());
    let server = TestServer::start(cfg).await;
    assert_eq!(server.send(&["REGISTER", DT, "al"]).await, b"0\0");
    assert_eq!(server.send(&["CONNECT", "al", "4000"]).await, b"0\0");
    assert_eq!(
        server.send(&["PUBLISH", DT, "al", "f.txt", "d"]).await,
        b"0\0"
    );
    assert_eq!(server.send(&["DELETE", DT, "zz", "g"]).await, b"1\0");
    assert_eq!(server.send(&["FROB", DT, "al"]).await, b"");
    let first = next(&mut records).await;
    assert_eq!(first.to_string(), format!("al REGISTER {DT}"));
    let second = next(&mut records).await;
    assert_eq!(
        (second.user.as_str(), second.op.as_str()),
        ("al", "CONNECT")
    );
    assert!(peerdex_protocol::datetime::is_datetime(&second.datetime));
    assert_eq!(
        next(&mut records).await.to_string(),
        format!("al PUBLISH f.txt {DT}")
    );
    assert_eq!(
        next(&mut records).await.to_string(),
        format!("zz DELETE g {DT}")
    );
    server.stop().await.unwrap();
    assert!(records.try_recv().is_err(), "no record for an unknown op");
}

#[tokio::test]
async fn logger_down_does_not_slow_operations_and_is_rejoined() {
    let logger_addr = free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.logger = Some(logger_addr.to_string());
    let server = TestServer::start(cfg).await;
    let started = Instant::now();
    for i in 0..50 {
        let user = format!("u{i}");
        assert_eq!(server.send(&["REGISTER", DT, &user]).await, b"0\0");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "operations waited for the logger"
    );
    // The logger comes up later: the backlog is delivered, in order.
    let mut records = start_logger(logger_addr).await;
    for i in 0..50 {
        assert_eq!(next(&mut records).await.user, format!("u{i}"));
    }
    server.stop().await.unwrap();
}
