//! The peer listener: serves this user's published files to other peers
//! with the `GET_FILE` exchange, one request per connection.
//!
//! Besides the classic `GET_FILE` it answers the peerdex extensions
//! `GET_HASHES` and `GET_RANGE` (docs/PROTOCOL-EXTENSIONS.md) from the same
//! published files; their hashes come from the share's [`HashCache`],
//! checked against the `fstat` of the very descriptor the bytes are read
//! from, so hashes never describe other bytes than those served.
//!
//! A file is served only when the user published it through a peerdex
//! client: its name is in the [`PublicationRecord`] (durable, in the state
//! dir), whatever the directory lists.
//!
//! This module accepts, reads the request and decides the answer; the
//! file's bytes go out through [`super::send`] (`sendfile(2)`, or a copy).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use peerdex_protocol::listen::listen;
use peerdex_protocol::peer::{read_peer_request, PeerCode, PeerRequest};
use peerdex_protocol::peer_ext::{put_piece, ExtCode, RangeHeader};
use peerdex_protocol::wire::field_reader;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

use super::published::PublicationRecord;
use super::send::send_from;
use super::share_dir::ShareDir;
use crate::content::cache::HashCache;
use crate::content::pieces::Manifest;

/// Bound on receiving a complete request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on the time spent draining what a client sends after its request.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on the bytes drained after a request.
pub const DRAIN_LIMIT: usize = 64 * 1024;
/// Transfers served at once; further connections wait to be accepted.
pub const MAX_CONNECTIONS: usize = 64;

/// What the listener tasks share with the shell.
#[derive(Debug)]
struct Shared {
    /// What the user published through peerdex: the only names served.
    record: Arc<PublicationRecord>,
    /// Where published names are resolved.
    share: ShareDir,
    /// Hashes of served files (GET_HASHES, GET_RANGE).
    hashes: Arc<HashCache>,
}

impl Shared {
    /// Whether `name` is served.
    fn is_published(&self, name: &str) -> bool {
        self.record.contains(name)
    }
}

/// A running listener. Dropping it without [`Listener::stop`] also stops it.
#[derive(Debug)]
pub struct Listener {
    /// The address actually bound (with the OS-chosen port).
    addr: SocketAddr,
    /// Record and share dir, shared with connection tasks (tests change
    /// the record through it).
    #[cfg(test)]
    shared: Arc<Shared>,
    /// Tells the accept loop to stop.
    stop: watch::Sender<bool>,
    /// The accept loop.
    task: JoinHandle<()>,
}

impl Listener {
    /// Binds `addr` and starts accepting. Only the names in `record` are
    /// served. `hashes` is the shell's hash cache, so that what PUBLISH
    /// hashed is served without hashing again.
    pub async fn start(
        addr: SocketAddr,
        share: ShareDir,
        record: Arc<PublicationRecord>,
        hashes: Arc<HashCache>,
    ) -> io::Result<Listener> {
        let socket = listen(addr)?;
        let addr = socket.local_addr()?;
        let shared = Arc::new(Shared {
            record,
            share,
            hashes,
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(socket, Arc::clone(&shared), stopped));
        Ok(Listener {
            addr,
            #[cfg(test)]
            shared,
            stop,
            task,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts serving `name` (tests; the shell changes the record).
    #[cfg(test)]
    pub fn publish(&self, name: &str) {
        self.shared.record.insert(name).unwrap();
    }

    /// Stops serving `name` (tests; the shell changes the record).
    #[cfg(test)]
    pub fn unpublish(&self, name: &str) {
        self.shared.record.remove(name).unwrap();
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
        PeerRequest::GetHashes { file: Err(_) } | PeerRequest::GetRange { file: Err(_), .. } => {
            write_half.write_all(ExtCode::NotFound.reply()).await?
        }
        PeerRequest::GetHashes { file: Ok(name) } => {
            send_hashes(&name, shared, &mut write_half).await?
        }
        PeerRequest::GetRange { range: None, .. } => {
            write_half.write_all(ExtCode::Error.reply()).await?
        }
        PeerRequest::GetRange {
            file: Ok(name),
            range: Some((offset, length)),
        } => send_range(&name, offset, length, shared, &mut write_half).await?,
    }
    write_half.shutdown().await?;
    drain(reader.into_inner()).await;
    Ok(())
}

/// Opens `name` if it is served: answers code 1 or 2 itself otherwise.
/// Returns the open file and its real path.
async fn open_served(
    name: &str,
    shared: &Shared,
    out: &mut (impl tokio::io::AsyncWrite + Unpin),
) -> io::Result<Option<(std::fs::File, std::path::PathBuf)>> {
    let code_field = |code: PeerCode| format!("{}\0", code.as_field());
    let not_found = code_field(PeerCode::NotFound);
    // What is in the share dir is nobody's business unless published.
    if !shared.is_published(name) {
        tracing::debug!("{name:?} not served: not published through peerdex");
        out.write_all(not_found.as_bytes()).await?;
        return Ok(None);
    }
    // Opened, checked on the descriptor, and served from it: nothing
    // swapped in after the check is served.
    let share = shared.share.clone();
    let owned = name.to_string();
    let opened = tokio::task::spawn_blocking(move || share.open_with_path(&owned))
        .await
        .map_err(io::Error::other)?;
    let opened = match opened {
        Ok(opened) => opened,
        Err(err) if err.is_not_found() => {
            tracing::debug!("{name:?} not served: {err}");
            out.write_all(not_found.as_bytes()).await?;
            return Ok(None);
        }
        Err(err) => {
            tracing::warn!("cannot serve {name:?}: {err}");
            out.write_all(code_field(PeerCode::Error).as_bytes())
                .await?;
            return Ok(None);
        }
    };
    Ok(Some(opened))
}

async fn send_file(name: &str, shared: &Shared, out: &mut OwnedWriteHalf) -> io::Result<()> {
    let Some((file, _)) = open_served(name, shared, out).await? else {
        return Ok(());
    };
    out.write_all(format!("{}\0", PeerCode::Ok.as_field()).as_bytes())
        .await?;
    let sent = send_from(file, 0, None, out).await?;
    tracing::debug!("served {name:?} ({sent} bytes)");
    Ok(())
}

/// The manifest of an open served file, for its current size and mtime
/// (hashed now if the file changed since it was hashed). `None` after
/// answering code 2.
async fn manifest_of(
    file: &std::fs::File,
    path: std::path::PathBuf,
    shared: &Shared,
    out: &mut (impl tokio::io::AsyncWrite + Unpin),
) -> io::Result<Option<Arc<Manifest>>> {
    let hashes = Arc::clone(&shared.hashes);
    let file = file.try_clone()?;
    let result = tokio::task::spawn_blocking(move || hashes.manifest(&path, &file, |_, _| {}))
        .await
        .map_err(io::Error::other)?;
    match result {
        Ok(manifest) => Ok(Some(manifest)),
        Err(err) => {
            tracing::warn!("cannot hash a served file: {err}");
            out.write_all(ExtCode::Error.reply()).await?;
            Ok(None)
        }
    }
}

/// Opens a served file and its piece manifest, as GET_HASHES and GET_RANGE
/// both need; `None` when the reply (1 or 2) was already written.
async fn served_manifest(
    name: &str,
    shared: &Shared,
    out: &mut (impl tokio::io::AsyncWrite + Unpin),
) -> io::Result<Option<(std::fs::File, Arc<Manifest>)>> {
    let Some((file, path)) = open_served(name, shared, out).await? else {
        return Ok(None);
    };
    let manifest = manifest_of(&file, path, shared, out).await?;
    Ok(manifest.map(|manifest| (file, manifest)))
}

/// `GET_HASHES`: size, piece size, root and the piece digests.
async fn send_hashes(
    name: &str,
    shared: &Shared,
    out: &mut (impl tokio::io::AsyncWrite + Unpin),
) -> io::Result<()> {
    let Some((_file, manifest)) = served_manifest(name, shared, out).await? else {
        return Ok(());
    };
    let mut buf = BytesMut::with_capacity(64 * 1024);
    manifest.hashes_header().encode(&mut buf);
    for piece in &manifest.pieces {
        put_piece(&mut buf, piece);
        if buf.len() >= 60 * 1024 {
            out.write_all(&buf).await?;
            buf.clear();
        }
    }
    out.write_all(&buf).await
}

/// `GET_RANGE`: size, root and the stated number of bytes from `offset`.
/// The bytes are read from the descriptor whose `fstat` matched the
/// manifest; if the file changes meanwhile, the downloader's per-piece check
/// catches it (and a shrunk file ends the reply short: truncation).
async fn send_range(
    name: &str,
    offset: u64,
    length: u64,
    shared: &Shared,
    out: &mut OwnedWriteHalf,
) -> io::Result<()> {
    let Some((file, manifest)) = served_manifest(name, shared, out).await? else {
        return Ok(());
    };
    if offset > manifest.size {
        return out.write_all(ExtCode::OutOfRange.reply()).await;
    }
    let length = length.min(manifest.size - offset);
    let mut header = BytesMut::with_capacity(128);
    RangeHeader {
        size: manifest.size,
        root: manifest.root,
        length,
    }
    .encode(&mut header);
    out.write_all(&header).await?;
    // A file that shrank ends the reply short: the downloader sees a
    // truncation.
    let sent = send_from(file, offset, Some(length), out).await?;
    tracing::debug!("served {name:?} [{offset}, +{sent})");
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

/// Test helper shared by the peer tests: a loopback listener over a
/// temporary share directory holding `files` (not yet published).
#[cfg(test)]
pub(crate) async fn listener_with(files: &[(&str, &[u8])]) -> (tempfile::TempDir, Listener) {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    let share = ShareDir::new(dir.path()).unwrap();
    let hashes = Arc::new(HashCache::for_share(share.root()));
    let record = Arc::new(PublicationRecord::in_memory());
    let listener = Listener::start("127.0.0.1:0".parse().unwrap(), share, record, hashes)
        .await
        .unwrap();
    (dir, listener)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

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
        let (_dir, listener) = super::listener_with(&[("a.bin", &content)]).await;
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
        let (_dir, listener) = super::listener_with(&[("a.txt", b"a"), ("b.txt", b"b")]).await;
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
    async fn serves_hashes_and_ranges_of_published_files_only() {
        let content: Vec<u8> = (0..2_500_000u32).map(|i| (i % 241) as u8).collect();
        let (_dir, listener) = super::listener_with(&[("a.bin", &content), ("b.bin", b"b")]).await;
        listener.publish("a.bin");
        let addr = listener.local_addr();
        let reply = exchange(addr, b"GET_HASHES\0a.bin\0").await;
        let mut reader = field_reader(&reply[..]);
        let header = peerdex_protocol::peer_ext::read_hashes_header(&mut reader)
            .await
            .unwrap();
        assert_eq!(header.size, content.len() as u64);
        assert_eq!(header.root, *blake3::hash(&content).as_bytes());
        assert_eq!(header.count, 3);
        let reply = exchange(addr, b"GET_RANGE\0a.bin\x001048576\x00100\0").await;
        let mut expected = BytesMut::new();
        RangeHeader {
            size: content.len() as u64,
            root: header.root,
            length: 100,
        }
        .encode(&mut expected);
        expected.extend_from_slice(&content[1 << 20..(1 << 20) + 100]);
        assert_eq!(reply, &expected[..]);
        // Clamped at the end of the file; the reply states the real length.
        let reply = exchange(addr, b"GET_RANGE\0a.bin\x002499990\x001000\0").await;
        assert!(reply.ends_with(&content[2_499_990..]));
        assert!(reply.windows(4).any(|w| w == b"\x0010\0"));
        assert_eq!(
            exchange(addr, b"GET_RANGE\0a.bin\x009999999\x001\0").await,
            b"3\0"
        );
        assert_eq!(exchange(addr, b"GET_RANGE\0a.bin\0x\x001\0").await, b"2\0");
        assert_eq!(exchange(addr, b"GET_HASHES\0b.bin\0").await, b"1\0");
        assert_eq!(
            exchange(addr, b"GET_RANGE\0b.bin\x000\x001\0").await,
            b"1\0"
        );
        assert_eq!(exchange(addr, b"GET_HASHES\0../x\0").await, b"1\0");
    }

    #[tokio::test]
    async fn a_file_changed_after_hashing_is_hashed_again() {
        let (dir, listener) = super::listener_with(&[("a.bin", b"first version")]).await;
        listener.publish("a.bin");
        let addr = listener.local_addr();
        let first = exchange(addr, b"GET_HASHES\0a.bin\0").await;
        fs::write(dir.path().join("a.bin"), b"the second version").unwrap();
        let second = exchange(addr, b"GET_HASHES\0a.bin\0").await;
        let root = |reply: Vec<u8>| async move {
            let mut reader = field_reader(&reply[..]);
            peerdex_protocol::peer_ext::read_hashes_header(&mut reader)
                .await
                .unwrap()
                .root
        };
        assert_eq!(
            root(first).await,
            *blake3::hash(b"first version").as_bytes()
        );
        assert_eq!(
            root(second).await,
            *blake3::hash(b"the second version").as_bytes()
        );
    }

    #[tokio::test]
    async fn stop_closes_the_socket() {
        let (_dir, listener) = super::listener_with(&[]).await;
        let addr = listener.local_addr();
        listener.stop().await;
        assert!(TcpStream::connect(addr).await.is_err());
    }
}
