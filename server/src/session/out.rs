//! A reply written as frames: the bytes of one classic reply, cut into
//! `ReplyPart`s and a final `Reply` carrying the request's id.

use std::io;

use bytes::Bytes;
use peerdex_protocol::frame::{reply_frames, Frame, RequestId, MAX_BODY_LEN};
use tokio::sync::mpsc;

use crate::connection::ReplyOut;

/// Sends a reply's parts to the session's writer. It holds back the last
/// bytes it was given until the reply is finished, because only then is
/// it known which frame is the final `Reply`.
pub struct FrameOut {
    id: RequestId,
    frames: mpsc::Sender<Frame>,
    held: Option<Bytes>,
}

impl FrameOut {
    pub fn new(id: RequestId, frames: mpsc::Sender<Frame>) -> FrameOut {
        FrameOut {
            id,
            frames,
            held: None,
        }
    }

    async fn push(&self, frame: Frame) -> io::Result<()> {
        self.frames
            .send(frame)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "session closed"))
    }
}

impl ReplyOut for FrameOut {
    async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        if let Some(previous) = self.held.take() {
            for start in (0..previous.len()).step_by(MAX_BODY_LEN) {
                let end = (start + MAX_BODY_LEN).min(previous.len());
                self.push(Frame::Reply {
                    id: self.id,
                    more: true,
                    body: previous.slice(start..end),
                })
                .await?;
            }
        }
        self.held = Some(Bytes::copy_from_slice(bytes));
        Ok(())
    }

    async fn finish(&mut self) -> io::Result<()> {
        let last = self.held.take().unwrap_or_default();
        for frame in reply_frames(self.id, last) {
            self.push(frame).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    async fn collect(chunks: &[Vec<u8>]) -> Vec<Frame> {
        let (tx, mut rx) = mpsc::channel(64);
        let id = NonZeroU32::new(7).unwrap();
        let mut out = FrameOut::new(id, tx);
        for chunk in chunks {
            out.send(chunk).await.unwrap();
        }
        out.finish().await.unwrap();
        drop(out);
        let mut frames = Vec::new();
        while let Some(frame) = rx.recv().await {
            frames.push(frame);
        }
        frames
    }

    fn bodies(frames: &[Frame]) -> (Vec<u8>, Vec<bool>) {
        let mut all = Vec::new();
        let mut more = Vec::new();
        for frame in frames {
            let Frame::Reply { body, more: m, .. } = frame else {
                panic!("not a reply: {frame:?}");
            };
            all.extend_from_slice(body);
            more.push(*m);
        }
        (all, more)
    }

    #[tokio::test]
    async fn a_short_reply_is_one_final_frame() {
        let frames = collect(&[b"0\0".to_vec()]).await;
        assert_eq!(bodies(&frames), (b"0\0".to_vec(), vec![false]));
    }

    #[tokio::test]
    async fn a_long_reply_is_parts_then_one_final_frame_with_every_byte() {
        let a: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let b: Vec<u8> = (0..70_000u32).map(|i| (i * 3) as u8).collect();
        let frames = collect(&[a.clone(), b.clone()]).await;
        let (all, more) = bodies(&frames);
        assert_eq!(all, [a, b].concat());
        assert_eq!(more.last(), Some(&false));
        assert!(more[..more.len() - 1].iter().all(|m| *m));
        assert_eq!(frames.len(), 4);
    }
}
