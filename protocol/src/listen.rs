//! Listening sockets sized for this protocol's traffic: every operation is a
//! connection of its own, so a burst of clients is a burst of handshakes.
//!
//! Why not `TcpListener::bind`: it listens with a backlog of 128. With more
//! clients than that connecting at once (populating a directory from a few
//! hundred connections), the kernel's accept queue overflows and each
//! dropped handshake costs its client a one-second retransmission.

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// Pending connections the kernel may queue before the server accepts
/// them. Linux caps it at `net.core.somaxconn` (4096 by default since 5.4).
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` (port 0 picks a free port) and listens with
/// [`LISTEN_BACKLOG`]. Like `TcpListener::bind`, it sets `SO_REUSEADDR`,
/// so a restarted server can bind while old connections sit in TIME_WAIT.
/// Must be called within a tokio runtime.
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    #[tokio::test]
    async fn accepts_on_the_chosen_port() {
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        let client = tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.write_all(b"ping").await.unwrap();
        });
        let (mut accepted, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        accepted.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"ping");
        client.await.unwrap();
    }

    #[tokio::test]
    async fn a_taken_port_is_an_error() {
        let first = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let taken = first.local_addr().unwrap();
        let err = listen(taken).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    /// More clients than std's backlog of 128 connect before the first
    /// accept. With a backlog of 128 the kernel drops the extra handshakes
    /// and those connects never complete while nobody accepts; here all of
    /// them complete (the timeout only keeps a regression from hanging).
    #[tokio::test]
    async fn queues_more_than_std_backlog() {
        const CLIENTS: usize = 300;
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let connects = async {
            let clients: Vec<_> = (0..CLIENTS)
                .map(|_| tokio::spawn(TcpStream::connect(addr)))
                .collect();
            let mut streams = Vec::with_capacity(CLIENTS);
            for client in clients {
                streams.push(client.await.unwrap().unwrap());
            }
            streams
        };
        let streams = tokio::time::timeout(std::time::Duration::from_secs(30), connects)
            .await
            .expect("connects beyond the backlog were dropped");
        assert_eq!(streams.len(), CLIENTS);
        for _ in 0..CLIENTS {
            listener.accept().await.unwrap();
        }
    }
}
