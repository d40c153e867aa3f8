//! The peer listener: serves this user's published files to other peers
//! with the `GET_FILE` exchange, one request per connection.
//!
//! A file is served when it was published through this shell; a file
//! deleted through it is not. For any other name that opens inside the
//! share dir, the listener asks the directory whether the user published it
//! in an earlier session ([`DirectoryCheck`], cached briefly).

use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use peerdex_protocol::peer::{read_peer_request, PeerCode, PeerRequest};
use peerdex_protocol::wire::field_reader;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

use super::published::DirectoryCheck;
use super::share::ShareDir;

/// Bound on receiving a complete request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on the time spent draining what a client sends after its request.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on the bytes drained after a request.
pub const DRAIN_LIMIT: usize = 64 * 1024;
/// Transfers served at once; further connections wait to be accepted.
pub const MAX_CONNECTIONS: usize = 64;

/// What this shell knows about a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    /// Published through this shell: served.
    Published,
    /// Deleted through this shell: not served, without asking.
    Deleted,
    /// Neither: the directory decides.
    Unknown,
}

/// Names published and deleted through this shell. A name is in at most
/// one of the two.
#[derive(Debug, Default)]
struct Names {
    published: HashSet<String>,
    deleted: HashSet<String>,
}

/// What the listener tasks share with the shell.
#[derive(Debug)]
struct Shared {
    /// Names published and deleted through this shell.
    names: Mutex<Names>,
    /// Where published names are resolved.
    share: ShareDir,
    /// Asks the directory about other names; without it they are not served.
    directory: Option<DirectoryCheck>,
}

impl Shared {
    fn names(&self) -> std::sync::MutexGuard<'_, Names> {
        self.names.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn known(&self, name: &str) -> Known {
        let names = self.names();
        if names.published.contains(name) {
            Known::Published
        } else if names.deleted.contains(name) {
            Known::Deleted
        } else {
            Known::Unknown
        }
    }

    /// Whether `name` is served: from what this shell did, else from the
    /// directory.
    async fn is_published(&self, name: &str) -> bool {
        match self.known(name) {
            Known::Published => true,
            Known::Deleted => false,
            Known::Unknown => match &self.directory {
                // A DELETE typed while the directory was asked wins.
                Some(check) => check.is_published(name).await && self.known(name) != Known::Deleted,
                None => false,
            },
        }
    }
}

/// A running listener. Dropping it without [`Listener::stop`] also stops it.
#[derive(Debug)]
pub struct Listener {
    /// The address actually bound (with the OS-chosen port).
    addr: SocketAddr,
    /// Published set and share dir, shared with connection tasks.
    shared: Arc<Shared>,
    /// Tells the accept loop to stop.
    stop: watch::Sender<bool>,
    /// The accept loop.
    task: JoinHandle<()>,
}

impl Listener {
    /// Binds `addr` and starts accepting. Names neither published nor
    /// deleted through [`Self::publish`] / [`Self::unpublish`] are served
    /// when `directory` says the user published them (never without it).
    pub async fn start(
        addr: SocketAddr,
        share: ShareDir,
        directory: Option<DirectoryCheck>,
    ) -> io::Result<Listener> {
        let socket = TcpListener::bind(addr).await?;
        let addr = socket.local_addr()?;
        let shared = Arc::new(Shared {
            names: Mutex::new(Names::default()),
            share,
            directory,
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(socket, Arc::clone(&shared), stopped));
        Ok(Listener {
            addr,
            shared,
            stop,
            task,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts serving `name`: the user published it.
    pub fn publish(&self, name: &str) {
        let mut names = self.shared.names();
        names.deleted.remove(name);
        names.published.insert(name.to_string());
    }

    /// Stops serving `name`: the user's content does not have it.
    pub fn unpublish(&self, name: &str) {
        let mut names = self.shared.names();
        names.published.remove(name);
        names.deleted.insert(name.to_string());
    }

    /// Stops accepting and waits until the socket is closed. Transfers in
    /// flight go on to their end.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        let _ = (&mut self.task).await;
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn accept_loop(socket: TcpListener, shared: Arc<Shared>, mut stopped: watch::Receiver<bool>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            _ = stopped.changed() => return,
        };
        let accepted = tokio::select! {
            accepted = socket.accept() => accepted,
            _ = stopped.changed() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    if let Err(err) = serve(stream, &shared).await {
                        tracing::debug!(%peer, "GET_FILE connection ended: {err}");
                    }
                    drop(permit);
                });
            }
            Err(err) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!("peer listener accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Serves one connection: reads the request, answers, then drains.
async fn serve(stream: TcpStream, shared: &Shared) -> io::Result<()> {
    let (read_half, mut write_half) = stream.into_split();
    let mut reader = field_reader(read_half);
    let request = match timeout(REQUEST_TIMEOUT, read_peer_request(&mut reader)).await {
        Ok(Ok(request)) => request,
        Ok(Err(err)) => {
            tracing::debug!("bad peer request: {err}");
            PeerRequest::UnknownOp("<malformed>".into())
        }
        Err(_) => return Ok(()),
    };
    match request {
        PeerRequest::Incomplete => {}
        PeerRequest::UnknownOp(op) => {
            tracing::debug!("peer asked for unknown op {op:?}");
            write_half.write_all(b"2\0").await?;
        }
        PeerRequest::GetFile { file: Err(_) } => write_half.write_all(b"1\0").await?,
        PeerRequest::GetFile { file: Ok(name) } => {
            send_file(&name, shared, &mut write_half).await?
        }
    }
    write_half.shutdown().await?;
    drain(reader.into_inner()).await;
    Ok(())
}

async fn send_file(
    name: &str,
    shared: &Shared,
    out: &mut (impl tokio::io::AsyncWrite + Unpin),
) -> io::Result<()> {
    let code_field = |code: PeerCode| format!("{}\0", code.as_field());
    let not_found = code_field(PeerCode::NotFound);
    let known = shared.known(name);
    if known == Known::Deleted {
        return out.write_all(not_found.as_bytes()).await;
    }
    // Opened first, checked on the descriptor, and served from it: nothing
    // swapped in after the check is served. Only a name that opens is worth
    // asking the directory about.
    let share = shared.share.clone();
    let owned = name.to_string();
    let opened = tokio::task::spawn_blocking(move || share.open(&owned))
        .await
        .map_err(io::Error::other)?;
    let file = match opened {
        Ok(file) => file,
        // What is in the share dir is nobody's business unless published.
        Err(err) if err.is_not_found() || known != Known::Published => {
            tracing::debug!("{name:?} not served: {err}");
            return out.write_all(not_found.as_bytes()).await;
        }
        Err(err) => {
            tracing::warn!("cannot serve {name:?}: {err}");
            return out.write_all(code_field(PeerCode::Error).as_bytes()).await;
        }
    };
    if !shared.is_published(name).await {
        tracing::debug!("{name:?} not served: not published");
        return out.write_all(not_found.as_bytes()).await;
    }
    let mut file = tokio::fs::File::from_std(file);
    out.write_all(code_field(PeerCode::Ok).as_bytes()).await?;
    let sent = tokio::io::copy(&mut file, out).await?;
    tracing::debug!("served {name:?} ({sent} bytes)");
    Ok(())
}

/// Reads and discards what the client still sends, so that closing does not
/// turn into a reset that could destroy the reply in flight. Bounded in
/// bytes and time.
async fn drain(mut reader: impl AsyncRead + Unpin) {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let mut buf = [0u8; 4096];
    let mut total = 0;
    while total < DRAIN_LIMIT {
        match tokio::time::timeout_at(deadline, reader.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => total += n,
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    async fn listener_with(files: &[(&str, &[u8])]) -> (tempfile::TempDir, Listener) {
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in files {
            fs::write(dir.path().join(name), bytes).unwrap();
        }
        let share = ShareDir::new(dir.path()).unwrap();
        let listener = Listener::start("127.0.0.1:0".parse().unwrap(), share, None)
            .await
            .unwrap();
        (dir, listener)
    }

    /// Sends `request` raw and returns everything the listener answered.
    async fn exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await.unwrap();
        reply
    }

    #[tokio::test]
    async fn serves_published_files_in_both_request_forms() {
        let content: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
        let (_dir, listener) = listener_with(&[("a.bin", &content)]).await;
        listener.publish("a.bin");
        let addr = listener.local_addr();
        for request in [
            &b"GET_FILE \0a.bin\0"[..],
            b"GET_FILE\0a.bin\0",
            b"GET_FILE\0a.bin\x0021/11/2026 09:05:07\0",
        ] {
            let reply = exchange(addr, request).await;
            assert_eq!(&reply[..2], b"0\0");
            assert!(reply[2..] == content[..], "content differs");
        }
    }

    #[tokio::test]
    async fn unpublished_missing_and_unknown() {
        let (_dir, listener) = listener_with(&[("a.txt", b"a"), ("b.txt", b"b")]).await;
        listener.publish("a.txt");
        listener.publish("ghost.txt");
        listener.publish("../etc/passwd");
        let addr = listener.local_addr();
        assert_eq!(exchange(addr, b"GET_FILE\0b.txt\0").await, b"1\0");
        assert_eq!(exchange(addr, b"GET_FILE\0ghost.txt\0").await, b"1\0");
        assert_eq!(exchange(addr, b"GET_FILE\0../etc/passwd\0").await, b"1\0");
        assert_eq!(exchange(addr, b"PUT_FILE\0a.txt\0").await, b"2\0");
        listener.unpublish("a.txt");
        assert_eq!(exchange(addr, b"GET_FILE\0a.txt\0").await, b"1\0");
    }

    #[tokio::test]
    async fn stop_closes_the_socket() {
        let (_dir, listener) = listener_with(&[]).await;
        let addr = listener.local_addr();
        listener.stop().await;
        assert!(TcpStream::connect(addr).await.is_err());
    }
}
