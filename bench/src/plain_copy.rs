//! The baseline of `transfer`: the same file copied over one plain TCP
//! connection on 127.0.0.1, with nothing but `read`/`write` in between.
//!
//! It does the work a download cannot avoid and nothing else, and it is
//! made exactly as durable as the client's result: the receiver writes a
//! temporary file, `fsync`s it, renames it into place and syncs the
//! directory, as `GET_FILE` does (both the classic path and the piece
//! engine end with `sync_all` + rename). Without that the baseline would
//! measure the page cache and the client the disk.
//!
//! Blocking threads on purpose: the cheapest possible copy is the ceiling.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Copy buffer on both sides (the client's classic path uses the same).
const BUFFER: usize = 256 * 1024;

/// One plain copy.
#[derive(Debug, Clone, Copy)]
pub struct Copied {
    pub bytes: u64,
    /// From before the sender opens the file to after the receiver's
    /// rename and directory sync.
    pub elapsed: Duration,
}

/// Copies `source` to `target` through a loopback TCP connection.
pub fn copy(source: &Path, target: &Path) -> io::Result<Copied> {
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    let addr = listener.local_addr()?;
    let started = Instant::now();
    let (sent, received) = std::thread::scope(|scope| {
        let receiver = scope.spawn(|| receive(&listener, target));
        let sent = send(addr, source);
        let received = receiver
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("receiver thread panicked")));
        (sent, received)
    });
    let elapsed = started.elapsed();
    let (sent, received) = (sent?, received?);
    if sent != received {
        return Err(io::Error::other(format!(
            "sent {sent} bytes, received {received}"
        )));
    }
    Ok(Copied {
        bytes: received,
        elapsed,
    })
}

/// File -> socket, then a half close so the receiver sees the end.
fn send(addr: std::net::SocketAddr, source: &Path) -> io::Result<u64> {
    let mut file = File::open(source)?;
    let mut stream = TcpStream::connect(addr)?;
    let mut buf = vec![0u8; BUFFER];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        stream.write_all(&buf[..n])?;
        total += n as u64;
    }
    stream.shutdown(Shutdown::Write)?;
    Ok(total)
}

/// Socket -> temporary file, fsync, rename, directory sync.
fn receive(listener: &TcpListener, target: &Path) -> io::Result<u64> {
    let (mut stream, _) = listener.accept()?;
    let temp = temp_path(target);
    let mut file = File::create(&temp)?;
    let mut buf = vec![0u8; BUFFER];
    let mut total = 0u64;
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n])?;
        total += n as u64;
    }
    file.sync_all()?;
    std::fs::rename(&temp, target)?;
    if let Some(dir) = target.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(total)
}

fn temp_path(target: &Path) -> PathBuf {
    let mut name = target.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_a_file_exactly() {
        let dir = std::env::temp_dir().join(format!("plain-copy-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (src, dst) = (dir.join("a"), dir.join("b"));
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&src, &data).unwrap();
        let copied = copy(&src, &dst).unwrap();
        assert_eq!(copied.bytes, data.len() as u64);
        assert_eq!(std::fs::read(&dst).unwrap(), data);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
