//! Raw wire access: NUL-terminated fields over blocking loopback sockets,
//! every read bounded by a timeout.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::TIMEOUT;

/// Encodes fields as the wire does: each followed by one NUL.
pub fn encode(fields: &[&str]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for field in fields {
        bytes.extend_from_slice(field.as_bytes());
        bytes.push(0);
    }
    bytes
}

/// Splits bytes at NULs; a trailing piece without NUL is kept as is.
pub fn decode(bytes: &[u8]) -> Vec<String> {
    let mut fields: Vec<String> = bytes
        .split(|&b| b == 0)
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect();
    if bytes.last() == Some(&0) || bytes.is_empty() {
        fields.pop();
    }
    fields
}

/// Connects to 127.0.0.1:`port` with read and write timeouts.
pub fn connect(port: u16) -> Result<TcpStream> {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .with_context(|| format!("connect 127.0.0.1:{port}"))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    Ok(stream)
}

/// How a connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// The peer closed (EOF).
    Closed,
    /// The peer reset the connection.
    Reset,
}

/// Reads until the peer closes; fails if that takes longer than `TIMEOUT`.
pub fn read_to_close(stream: &mut TcpStream) -> Result<(Vec<u8>, End)> {
    let mut got = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok((got, End::Closed)),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok((got, End::Reset)),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("reading until the peer closes"),
        }
    }
}

/// Sends `fields` in one write to the server on `port` and returns the
/// reply fields, read until the server closes.
pub fn request(port: u16, fields: &[&str]) -> Result<Vec<String>> {
    request_bytes(port, &encode(fields))
}

/// Sends `bytes` in one write and returns the reply fields.
pub fn request_bytes(port: u16, bytes: &[u8]) -> Result<Vec<String>> {
    let mut stream = connect(port)?;
    stream.write_all(bytes)?;
    let (reply, _) = read_to_close(&mut stream)?;
    Ok(decode(&reply))
}

/// Sends a request with a DATETIME and returns the reply's first field.
pub fn code(port: u16, op: &str, user: &str, extra: &[&str]) -> Result<String> {
    let mut fields = vec![op, "21/11/2026 09:05:07", user];
    fields.extend_from_slice(extra);
    let reply = request(port, &fields)?;
    reply
        .into_iter()
        .next()
        .with_context(|| format!("{op} {user}: no reply"))
}

/// Registers `user` and connects it at 127.0.0.1:`peer_port` through raw
/// requests, asserting both answer 0.
pub fn register_and_connect(port: u16, user: &str, peer_port: &str) {
    assert_eq!(code(port, "REGISTER", user, &[]).unwrap(), "0");
    assert_eq!(
        code(port, "CONNECT", user, &["127.0.0.1", peer_port]).unwrap(),
        "0"
    );
}

/// Writes `bytes` in pieces of `chunk` bytes with a pause between them.
pub fn write_slowly(
    stream: &mut TcpStream,
    bytes: &[u8],
    chunk: usize,
    pause: Duration,
) -> Result<()> {
    for piece in bytes.chunks(chunk.max(1)) {
        stream.write_all(piece)?;
        stream.flush()?;
        std::thread::sleep(pause);
    }
    Ok(())
}

/// Half-closes the sending side.
pub fn shutdown_write(stream: &TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
}

/// A GET_FILE request to a peer listener: returns the reply code field
/// and the bytes after it.
pub fn get_file(port: u16, file: &str) -> Result<(String, Vec<u8>)> {
    let reply = {
        let mut stream = connect(port)?;
        stream.write_all(&encode(&["GET_FILE", file]))?;
        read_to_close(&mut stream)?.0
    };
    let nul = reply
        .iter()
        .position(|&b| b == 0)
        .context("GET_FILE: no code field in the reply")?;
    Ok((
        String::from_utf8_lossy(&reply[..nul]).into_owned(),
        reply[nul + 1..].to_vec(),
    ))
}
