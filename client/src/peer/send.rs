//! Sending a served file's bytes to a peer's socket: `sendfile(2)` where
//! the kernel allows it, else a pipelined `pread` copy.
//!
//! Kept apart from the listener's accept and dispatch ([`super::listener`]):
//! what a request is answered with is decided there, how the bytes reach
//! the socket here, in blocking, `libc`-level code (`sendfile`, `poll`,
//! `pread`) with its own tests. Both paths send what the open descriptor
//! holds, bounded in bytes and in idle time.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;

/// Bytes read from disk per write to the socket (`GET_FILE`, `GET_RANGE`).
const SEND_CHUNK: usize = 256 * 1024;
/// Chunk buffers per transfer: one being read, one queued, one being sent.
const SEND_BUFFERS: usize = 3;
/// Bytes per `sendfile` call: large enough that calls are few, small
/// enough that a shrinking file or a closing peer is noticed soon.
const SENDFILE_CHUNK: u64 = 4 * 1024 * 1024;
/// A transfer whose peer takes no byte for this long is abandoned (the
/// downloader gives up after 30 s without data anyway).
const SEND_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Sends the bytes of `file` from `offset` to `out`: `limit` bytes at most,
/// else up to the end of the file. Returns the number sent.
///
/// With `sendfile(2)` ([`sendfile_all`]) where the kernel allows it: the
/// socket takes the page-cache pages themselves, so the `pread` copy, the
/// copy into the socket and the buffers' allocation, a large part of a
/// serving shell's CPU (docs/PERFORMANCE.md), disappear.
/// Otherwise (a file or socket `sendfile` refuses), [`copy_from`].
pub(super) async fn send_from(
    file: std::fs::File,
    offset: u64,
    limit: Option<u64>,
    out: &mut OwnedWriteHalf,
) -> io::Result<u64> {
    use std::os::fd::AsFd;
    // Its own descriptor of the socket: the blocking task may outlive this
    // future (a cancelled transfer), and must never write to a reused
    // descriptor number.
    let socket = out.as_ref().as_fd().try_clone_to_owned()?;
    let file = Arc::new(file);
    let sending = Arc::clone(&file);
    let sent = tokio::task::spawn_blocking(move || {
        sendfile_all(&sending, &socket, offset, limit, SEND_IDLE_TIMEOUT)
    })
    .await
    .map_err(io::Error::other)??;
    match sent {
        Sendfile::Sent(n) => Ok(n),
        Sendfile::Unsupported => {
            let file = Arc::try_unwrap(file).or_else(|file| file.try_clone())?;
            copy_from(file, offset, limit, out).await
        }
    }
}

/// What [`sendfile_all`] did.
#[derive(Debug, PartialEq, Eq)]
enum Sendfile {
    /// This many bytes went out (fewer than asked only at the end of file).
    Sent(u64),
    /// Refused before the first byte: send another way.
    Unsupported,
}

/// `sendfile(2)` from `file` at `offset` to the (non-blocking) `socket`:
/// `limit` bytes at most, else up to the end of the file. Blocking: waits
/// with `poll` when the socket is full, at most `idle` without progress
/// (then `TimedOut`: a peer that stopped reading does not hold a thread
/// for ever).
fn sendfile_all(
    file: &std::fs::File,
    socket: &std::os::fd::OwnedFd,
    offset: u64,
    limit: Option<u64>,
    idle: Duration,
) -> io::Result<Sendfile> {
    use std::os::fd::AsRawFd;
    let mut at = offset;
    let mut left = limit.unwrap_or(u64::MAX);
    let mut sent = 0u64;
    while left > 0 {
        let Ok(mut pos) = libc::off_t::try_from(at) else {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        };
        let count = left.min(SENDFILE_CHUNK) as usize;
        // SAFETY: both descriptors are open for the duration of the call;
        // `pos` is a valid `off_t` the kernel updates.
        let n = unsafe { libc::sendfile(socket.as_raw_fd(), file.as_raw_fd(), &mut pos, count) };
        if n > 0 {
            let n = n as u64;
            (at, left, sent) = (at + n, left - n, sent + n);
            continue;
        }
        if n == 0 {
            // End of file (it may have shrunk: the reply ends short).
            break;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::EAGAIN) => wait_writable(socket, idle)?,
            Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) if sent == 0 => {
                return Ok(Sendfile::Unsupported)
            }
            _ => return Err(err),
        }
    }
    Ok(Sendfile::Sent(sent))
}

/// Waits until `socket` takes more bytes, at most `idle`.
fn wait_writable(socket: &std::os::fd::OwnedFd, idle: Duration) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut poll = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    let millis = libc::c_int::try_from(idle.as_millis()).unwrap_or(libc::c_int::MAX);
    loop {
        // SAFETY: one valid pollfd, for the duration of the call.
        let rc = unsafe { libc::poll(&mut poll, 1, millis) };
        match rc {
            0 => return Err(io::Error::from(io::ErrorKind::TimedOut)),
            rc if rc > 0 => return Ok(()),
            _ => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
}

/// [`send_from`] without `sendfile`: a blocking task reads with `pread` into
/// [`SEND_CHUNK`] buffers while the previous one is being written to the
/// socket: one blocking hop per chunk, where `tokio::io::copy` from a
/// `tokio::fs::File` makes one per 8 KiB. At most [`SEND_BUFFERS`] buffers exist per
/// transfer, recycled.
async fn copy_from(
    file: std::fs::File,
    offset: u64,
    limit: Option<u64>,
    out: &mut (impl tokio::io::AsyncWrite + Unpin),
) -> io::Result<u64> {
    let (full_tx, mut full_rx) = tokio::sync::mpsc::channel::<io::Result<Vec<u8>>>(1);
    let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    tokio::task::spawn_blocking(move || {
        let mut at = offset;
        let mut left = limit.unwrap_or(u64::MAX);
        let mut allocated = 0;
        while left > 0 {
            let mut buf = match empty_rx.try_recv() {
                Ok(buf) => buf,
                Err(_) if allocated < SEND_BUFFERS => {
                    allocated += 1;
                    vec![0u8; SEND_CHUNK]
                }
                // The sender is gone: the transfer ended.
                Err(_) => match empty_rx.recv() {
                    Ok(buf) => buf,
                    Err(_) => return,
                },
            };
            buf.resize(SEND_CHUNK, 0);
            let want = left.min(SEND_CHUNK as u64) as usize;
            let n = match read_full_at(&file, &mut buf[..want], at) {
                Ok(n) => n,
                Err(err) => {
                    let _ = full_tx.blocking_send(Err(err));
                    return;
                }
            };
            if n == 0 {
                return;
            }
            buf.truncate(n);
            if full_tx.blocking_send(Ok(buf)).is_err() {
                return;
            }
            at += n as u64;
            left -= n as u64;
            if n < want {
                return;
            }
        }
    });
    let mut sent = 0u64;
    while let Some(chunk) = full_rx.recv().await {
        let chunk = chunk?;
        out.write_all(&chunk).await?;
        sent += chunk.len() as u64;
        let _ = empty_tx.send(chunk);
    }
    Ok(sent)
}

/// Reads as much of `buf` as the file has at `offset` (short only at EOF).
fn read_full_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A non-blocking socket pair, as the listener's sockets are.
    fn socket_pair() -> (std::os::fd::OwnedFd, std::os::unix::net::UnixStream) {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        (ours.into(), theirs)
    }

    #[test]
    fn sendfile_sends_the_range_and_stops_at_the_end_of_file() {
        use std::io::Read;
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        fs::write(dir.path().join("f"), &bytes).unwrap();
        let file = std::fs::File::open(dir.path().join("f")).unwrap();
        for (offset, limit, expected) in [
            (1000u64, Some(5000u64), &bytes[1000..6000]),
            (250_000, None, &bytes[250_000..]),
            (250_000, Some(100_000), &bytes[250_000..]),
        ] {
            let (ours, mut theirs) = socket_pair();
            let reader = std::thread::spawn(move || {
                let mut got = Vec::new();
                theirs.read_to_end(&mut got).unwrap();
                got
            });
            let sent = sendfile_all(&file, &ours, offset, limit, Duration::from_secs(30));
            assert_eq!(sent.unwrap(), Sendfile::Sent(expected.len() as u64));
            drop(ours);
            assert!(reader.join().unwrap() == expected);
        }
    }

    #[test]
    fn sendfile_gives_up_on_a_peer_that_does_not_read() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("f"), vec![7u8; 8 << 20]).unwrap();
        let file = std::fs::File::open(dir.path().join("f")).unwrap();
        let (ours, _theirs) = socket_pair();
        let err = sendfile_all(&file, &ours, 0, None, Duration::from_millis(50)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn sendfile_refused_before_the_first_byte_asks_for_the_copy() {
        // A directory is no source for sendfile (EINVAL).
        let dir = tempfile::tempdir().unwrap();
        let not_a_file = std::fs::File::open(dir.path()).unwrap();
        let (ours, _theirs) = socket_pair();
        let sent = sendfile_all(&not_a_file, &ours, 0, None, Duration::from_secs(1));
        assert_eq!(sent.unwrap(), Sendfile::Unsupported);
    }
}
