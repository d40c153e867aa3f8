//! A session's one writer: every frame the session sends goes through its
//! bounded queue, so replies of concurrent requests, events and heartbeats
//! never interleave inside a frame, and a client that stops reading stalls
//! the requests that reply to it (not the server).

use std::time::Duration;

use bytes::BytesMut;
use peerdex_protocol::frame::{Frame, FrameCodec};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_util::codec::Encoder;

/// Frames waiting for the writer, per session.
pub const QUEUE: usize = 64;
/// Bytes of frames gathered into one write.
const BATCH_BYTES: usize = 128 * 1024;

/// Writes the frames of `frames` to `out` until a `Close` was written, the
/// queue closed, or a write failed or took longer than `stall` (a client
/// that does not read). Sends a `Ping` after `interval` without sending.
pub async fn run(
    mut out: OwnedWriteHalf,
    mut frames: mpsc::Receiver<Frame>,
    interval: Duration,
    stall: Duration,
) {
    let mut codec = FrameCodec::new();
    let mut buf = BytesMut::new();
    let mut nonce: u32 = 0;
    loop {
        let first = match timeout(interval, frames.recv()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(_) => {
                nonce = nonce.wrapping_add(1);
                Frame::Ping(nonce)
            }
        };
        let mut closing = matches!(first, Frame::Close(_));
        if let Err(err) = codec.encode(&first, &mut buf) {
            tracing::warn!(error = %err, "frame not encodable, closing the session");
            break;
        }
        // Whatever else is queued goes in the same write.
        while !closing && buf.len() < BATCH_BYTES {
            let Ok(frame) = frames.try_recv() else {
                break;
            };
            closing = matches!(frame, Frame::Close(_));
            if let Err(err) = codec.encode(&frame, &mut buf) {
                tracing::warn!(error = %err, "frame not encodable, closing the session");
                closing = true;
            }
        }
        match timeout(stall, out.write_all(&buf)).await {
            Ok(Ok(())) => buf.clear(),
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "session write failed");
                return;
            }
            Err(_) => {
                tracing::debug!("session peer not reading, closing");
                return;
            }
        }
        if closing {
            break;
        }
    }
    let _ = timeout(stall, out.shutdown()).await;
}
