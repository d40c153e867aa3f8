//! The downloading side of `GET_FILE`.
//!
//! The request goes out in the compatible form first and, when the peer
//! answers `2`, once more in the exact form (PROTOCOL.md). The content is
//! written to a temporary file next to the destination, synced, and renamed
//! onto it only when the peer has closed the connection: a failed download
//! never leaves a partial file and never clobbers an existing one.
//!
//! When the directory holds the file's [`Identity`], the bytes are hashed
//! as they are written and the file is renamed into place only if size and
//! root match: whoever answers at a peer's address cannot pass off other
//! content, and one that sends more than the size is cut off at once.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use peerdex_protocol::peer::{compat_request, exact_request, PeerCode};
use peerdex_protocol::wire::{field_reader, next_text, ReplyError};
use peerdex_protocol::CodecError;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::direct_io::{AlignedBuf, DirectFile};
use super::PeerAddr;
use crate::content::{Digest, Identity};
use crate::directory_client::describe_io;

/// Bound on connecting to the peer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound on waiting for the reply code (or an extension reply's header).
/// A stopped process's listener still completes connections, so this is
/// what notices a frozen peer: connect and reply together stay under 10 s.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// A transfer with no byte received for this long is abandoned; one that
/// keeps moving, however slowly, never is.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Write buffer: filled from the socket, then written in one call. Memory
/// stays flat whatever the file size. A multiple of
/// [`ALIGN`](super::direct_io::ALIGN): every full buffer lands at an aligned
/// offset and is written around the page cache.
const BUFFER_SIZE: usize = 1024 * 1024;
/// Buffers per download: one being filled, one queued, one being written.
const WRITE_BUFFERS: usize = 3;

/// Why a download failed.
#[derive(Debug, Error)]
pub enum DownloadError {
    #[error("cannot reach peer {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("peer {addr} does not have {file}")]
    NotFound { addr: String, file: String },
    #[error("peer {addr} refused to send {file} (code 2)")]
    Refused { addr: String, file: String },
    #[error("bad reply from peer {addr}: {reason}")]
    BadReply { addr: String, reason: String },
    #[error("transfer from peer {addr} failed: {reason}")]
    Transfer { addr: String, reason: String },
    #[error("cannot write {path}: {reason}")]
    Local { path: PathBuf, reason: String },
    /// The bytes are not the file the directory knows.
    #[error("content from peer {addr} does not match the directory's record: {reason}")]
    Mismatch { addr: String, reason: String },
    #[error("cannot request {0}")]
    Encode(#[from] CodecError),
}

impl DownloadError {
    /// The peer could not be reached at all (its address may be stale).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, DownloadError::Unreachable { .. })
    }
}

/// Downloads `remote_file` from the peer at `addr` into `local_file`,
/// accepting it only if it matches `expected` when given. Returns the
/// number of bytes written.
pub async fn download(
    addr: &PeerAddr,
    remote_file: &str,
    local_file: &Path,
    expected: Option<Identity>,
) -> Result<u64, DownloadError> {
    let (mut stream, leftover) = match ask(addr, &compat_request(remote_file)?).await? {
        (PeerCode::Error, _, _) => {
            tracing::debug!("peer {addr} answered 2 to the compatible form; retrying");
            match ask(addr, &exact_request(remote_file)?).await? {
                (PeerCode::Ok, stream, leftover) => (stream, leftover),
                (code, _, _) => return Err(code_error(code, addr, remote_file)),
            }
        }
        (PeerCode::Ok, stream, leftover) => (stream, leftover),
        (code, _, _) => return Err(code_error(code, addr, remote_file)),
    };
    save(&mut stream, &leftover, addr, local_file, expected).await
}

fn code_error(code: PeerCode, addr: &PeerAddr, file: &str) -> DownloadError {
    let (addr, file) = (addr.to_string(), file.to_string());
    match code {
        PeerCode::NotFound => DownloadError::NotFound { addr, file },
        _ => DownloadError::Refused { addr, file },
    }
}

/// Sends one request and reads the reply code. Returns the code, the stream
/// and the bytes already read past the code (the start of the content).
async fn ask(
    addr: &PeerAddr,
    request: &[u8],
) -> Result<(PeerCode, TcpStream, BytesMut), DownloadError> {
    let name = addr.to_string();
    let unreachable = |reason: String| DownloadError::Unreachable {
        addr: name.clone(),
        reason,
    };
    let connect = TcpStream::connect((addr.host.as_str(), addr.port));
    let mut stream = match timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => return Err(unreachable(describe_io(&err))),
        Err(_) => return Err(unreachable("connection timed out".into())),
    };
    let bad = |reason: String| DownloadError::BadReply {
        addr: name.clone(),
        reason,
    };
    stream
        .write_all(request)
        .await
        .map_err(|err| bad(describe_io(&err)))?;
    let mut reader = field_reader(stream);
    let code = match timeout(REPLY_TIMEOUT, next_text(&mut reader)).await {
        Ok(Ok(code)) => code,
        Ok(Err(ReplyError::Closed)) => return Err(bad("closed without a reply code".into())),
        Ok(Err(err)) => return Err(bad(err.to_string())),
        Err(_) => return Err(bad("no reply code in time".into())),
    };
    let code = PeerCode::from_field(&code).ok_or_else(|| bad(format!("unknown code {code:?}")))?;
    let leftover = std::mem::take(reader.read_buffer_mut());
    Ok((code, reader.into_inner(), leftover))
}

/// Streams the content into a temporary file beside `local_file` and renames
/// it into place once the peer has closed.
async fn save(
    stream: &mut TcpStream,
    leftover: &[u8],
    addr: &PeerAddr,
    local_file: &Path,
    expected: Option<Identity>,
) -> Result<u64, DownloadError> {
    let local = |err: std::io::Error| DownloadError::Local {
        path: local_file.to_path_buf(),
        reason: describe_io(&err),
    };
    let parent = match local_file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let temp = tempfile::Builder::new()
        .prefix(".peerdex-")
        .suffix(".part")
        .tempfile_in(parent)
        .map_err(|err| DownloadError::Local {
            path: parent.to_path_buf(),
            reason: format!("cannot create a temporary file: {}", describe_io(&err)),
        })?;
    // `temp_path` removes the file when dropped: every early return below
    // cleans up.
    let (file, temp_path) = temp.into_parts();
    // A blocking task writes while the next buffer is received: full
    // aligned buffers with O_DIRECT where the filesystem allows it (the
    // copy into the page cache is most of a buffered writer's CPU), the
    // last one's unaligned tail buffered. WRITE_BUFFERS buffers, recycled
    // through `empty` (allocated zeroed: untouched pages cost no memory,
    // so a small file does not cost 3 MiB).
    let (full_tx, mut full_rx) = tokio::sync::mpsc::channel::<(AlignedBuf, usize)>(1);
    let (empty_tx, mut empty_rx) = tokio::sync::mpsc::unbounded_channel::<AlignedBuf>();
    for _ in 0..WRITE_BUFFERS {
        let _ = empty_tx.send(AlignedBuf::zeroed(BUFFER_SIZE).map_err(local)?);
    }
    // Set once everything was received: only then is the file synced.
    let complete = Arc::new(AtomicBool::new(false));
    let synced = Arc::clone(&complete);
    // The content is hashed by the writer, which has every buffer in turn.
    let mut hasher = expected.map(|_| blake3::Hasher::new());
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
        let file = DirectFile::new(file);
        let mut offset = 0u64;
        while let Some((buf, len)) = full_rx.blocking_recv() {
            file.write_at(&buf[..len], offset)?;
            if let Some(hasher) = &mut hasher {
                hasher.update(&buf[..len]);
            }
            offset += len as u64;
            let _ = empty_tx.send(buf);
        }
        if synced.load(Ordering::Acquire) {
            // One inode: syncing the ordinary descriptor covers the direct
            // writes' metadata (allocation, size) too.
            file.file().sync_all()?;
        }
        Ok((file.into_file(), hasher.map(|h| *h.finalize().as_bytes())))
    });
    let limit = expected.map(|e| e.size);
    let received = receive(stream, leftover, addr, limit, &full_tx, &mut empty_rx).await;
    // A transfer error first (the temporary file is removed on return; the
    // writer ends on its own). A writer error shows below.
    let total = received?;
    complete.store(true, Ordering::Release);
    drop(full_tx);
    let (file, root) = writer
        .await
        .map_err(|err| local(std::io::Error::other(err)))?
        .map_err(local)?;
    if let (Some(expected), Some(root)) = (expected, root) {
        check(addr, expected, total, &root)?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(local)?;
    }
    drop(file);
    temp_path
        .persist(local_file)
        .map_err(|err| local(err.error))?;
    Ok(total)
}

/// Whether `total` bytes hashing to `root` are the file `expected` says.
fn check(
    addr: &PeerAddr,
    expected: Identity,
    total: u64,
    root: &Digest,
) -> Result<(), DownloadError> {
    let reason = if total != expected.size {
        format!("{total} bytes instead of {}", expected.size)
    } else if *root != expected.root {
        "same size, other bytes (BLAKE3 root differs)".to_string()
    } else {
        return Ok(());
    };
    Err(DownloadError::Mismatch {
        addr: addr.to_string(),
        reason,
    })
}

/// Receives the content until the peer closes, handing full buffers to the
/// writer; `leftover` (content read with the reply code) goes first, into
/// the first buffer, so that every full buffer starts at an aligned file
/// offset. More than `limit` bytes (the known size) is a failure at once.
/// Returns the bytes received; stops early (with the count so far) when
/// the writer is gone, whose error then tells why.
async fn receive(
    stream: &mut TcpStream,
    leftover: &[u8],
    addr: &PeerAddr,
    limit: Option<u64>,
    full: &tokio::sync::mpsc::Sender<(AlignedBuf, usize)>,
    empty: &mut tokio::sync::mpsc::UnboundedReceiver<AlignedBuf>,
) -> Result<u64, DownloadError> {
    let transfer = |reason: String| DownloadError::Transfer {
        addr: addr.to_string(),
        reason,
    };
    let mut total = 0u64;
    let mut pending = leftover;
    loop {
        let Some(mut buf) = empty.recv().await else {
            return Ok(total);
        };
        let mut filled = pending.len().min(buf.len());
        buf[..filled].copy_from_slice(&pending[..filled]);
        pending = &pending[filled..];
        let mut eof = false;
        while filled < buf.len() {
            match timeout(IDLE_TIMEOUT, stream.read(&mut buf[filled..])).await {
                Ok(Ok(0)) => {
                    eof = true;
                    break;
                }
                Ok(Ok(n)) => filled += n,
                Ok(Err(err)) => return Err(transfer(describe_io(&err))),
                Err(_) => return Err(transfer(format!("no data for {IDLE_TIMEOUT:?}"))),
            }
        }
        if let Some(limit) = limit.filter(|&limit| total + filled as u64 > limit) {
            return Err(DownloadError::Mismatch {
                addr: addr.to_string(),
                reason: format!("more than the {limit} bytes the file has"),
            });
        }
        if filled > 0 {
            if full.send((buf, filled)).await.is_err() {
                return Ok(total);
            }
            total += filled as u64;
        }
        if eof {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::listener::listener_with;
    use std::fs;
    use tokio::net::TcpListener;

    fn loopback(port: u16) -> PeerAddr {
        PeerAddr {
            host: "127.0.0.1".into(),
            port,
        }
    }

    /// Files in `dir` other than the expected ones (temp files left behind).
    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn downloads_binary_content_from_a_listener() {
        let content: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let (_shared, listener) = listener_with(&[("blob.bin", &content)]).await;
        listener.publish("blob.bin");
        let out = tempfile::tempdir().unwrap();
        let target = out.path().join("copy.bin");
        fs::write(&target, b"old content").unwrap();
        let n = download(
            &loopback(listener.local_addr().port()),
            "blob.bin",
            &target,
            None,
        )
        .await
        .unwrap();
        assert_eq!(n, content.len() as u64);
        assert!(fs::read(&target).unwrap() == content, "content differs");
        assert_eq!(entries(out.path()), ["copy.bin"]);
    }

    /// A fake peer that answers each connection from `replies` in turn and
    /// records the requests it got.
    async fn fake_peer(
        replies: Vec<&'static [u8]>,
    ) -> (u16, tokio::task::JoinHandle<Vec<Vec<u8>>>) {
        let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = socket.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let mut requests = Vec::new();
            for reply in replies {
                let (mut sock, _) = socket.accept().await.unwrap();
                let mut got = Vec::new();
                let mut buf = [0u8; 256];
                while got.iter().filter(|&&b| b == 0).count() < 2 {
                    let n = sock.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                requests.push(got);
                sock.write_all(reply).await.unwrap();
            }
            requests
        });
        (port, task)
    }

    #[tokio::test]
    async fn code_2_is_retried_once_with_the_exact_form() {
        let (port, peer) = fake_peer(vec![b"2\0", b"0\0hello\0world"]).await;
        let out = tempfile::tempdir().unwrap();
        let target = out.path().join("f");
        download(&loopback(port), "a.txt", &target, None)
            .await
            .unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"hello\0world");
        let requests = peer.await.unwrap();
        assert_eq!(requests, [&b"GET_FILE \0a.txt\0"[..], b"GET_FILE\0a.txt\0"]);
    }

    #[tokio::test]
    async fn failures_leave_no_file_behind() {
        let out = tempfile::tempdir().unwrap();
        let target = out.path().join("f");
        fs::write(out.path().join("keep"), b"keep").unwrap();

        let (port, _peer) = fake_peer(vec![b"1\0"]).await;
        let err = download(&loopback(port), "a", &target, None)
            .await
            .unwrap_err();
        assert!(matches!(err, DownloadError::NotFound { .. }), "{err}");

        let (port, _peer) = fake_peer(vec![b"2\0", b"2\0"]).await;
        let err = download(&loopback(port), "a", &target, None)
            .await
            .unwrap_err();
        assert!(matches!(err, DownloadError::Refused { .. }), "{err}");

        let (port, _peer) = fake_peer(vec![b"9\0"]).await;
        let err = download(&loopback(port), "a", &target, None)
            .await
            .unwrap_err();
        assert!(matches!(err, DownloadError::BadReply { .. }), "{err}");

        let (port, _peer) = fake_peer(vec![b""]).await;
        let err = download(&loopback(port), "a", &target, None)
            .await
            .unwrap_err();
        assert!(matches!(err, DownloadError::BadReply { .. }), "{err}");

        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let err = download(&loopback(port), "a", &target, None)
            .await
            .unwrap_err();
        assert!(err.is_unreachable(), "{err}");

        assert_eq!(entries(out.path()), ["keep"]);
    }

    #[tokio::test]
    async fn missing_local_directory_fails_without_clobbering() {
        let (port, _peer) = fake_peer(vec![b"0\0data"]).await;
        let out = tempfile::tempdir().unwrap();
        let target = out.path().join("no/such/dir/f");
        let err = download(&loopback(port), "a", &target, None)
            .await
            .unwrap_err();
        assert!(matches!(err, DownloadError::Local { .. }), "{err}");
        assert!(entries(out.path()).is_empty());
    }

    #[tokio::test]
    async fn reset_mid_transfer_keeps_the_old_file() {
        let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = socket.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut sock, _) = socket.accept().await.unwrap();
            let mut buf = [0u8; 64];
            let _ = sock.read(&mut buf).await;
            sock.write_all(b"0\0partial").await.unwrap();
            // Linger 0 turns the close into a reset: an error, not an EOF.
            sock.set_zero_linger().unwrap();
            drop(sock);
        });
        let out = tempfile::tempdir().unwrap();
        let target = out.path().join("f");
        fs::write(&target, b"old").unwrap();
        let result = download(&loopback(port), "a", &target, None).await;
        if result.is_err() {
            assert_eq!(fs::read(&target).unwrap(), b"old");
        }
        assert_eq!(entries(out.path()), ["f"]);
    }

    fn identity_of(bytes: &[u8]) -> Identity {
        Identity {
            size: bytes.len() as u64,
            root: *blake3::hash(bytes).as_bytes(),
        }
    }

    #[tokio::test]
    async fn content_that_matches_the_identity_is_kept() {
        let (port, _peer) = fake_peer(vec![b"0\0hello world"]).await;
        let out = tempfile::tempdir().unwrap();
        let target = out.path().join("f");
        let expected = identity_of(b"hello world");
        let n = download(&loopback(port), "a", &target, Some(expected))
            .await
            .unwrap();
        assert_eq!(n, 11);
        assert_eq!(fs::read(&target).unwrap(), b"hello world");
    }

    #[tokio::test]
    async fn other_content_is_refused_and_nothing_is_clobbered() {
        let out = tempfile::tempdir().unwrap();
        let target = out.path().join("f");
        fs::write(&target, b"old").unwrap();
        let expected = identity_of(b"hello world");
        // Same size, other bytes; shorter; longer.
        for reply in [&b"0\0hello WORLD"[..], b"0\0hello", b"0\0hello world!"] {
            let (port, _peer) = fake_peer(vec![reply]).await;
            let err = download(&loopback(port), "a", &target, Some(expected))
                .await
                .unwrap_err();
            assert!(matches!(err, DownloadError::Mismatch { .. }), "{err}");
            assert_eq!(fs::read(&target).unwrap(), b"old");
            assert_eq!(entries(out.path()), ["f"]);
        }
    }
}
