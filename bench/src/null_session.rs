//! Sessions on the null server: every `Login` is answered 0, every request
//! frame with the classic null reply (code 0, empty lists) under its id,
//! every `Ping` with a `Pong`. It keeps no state, not even who logged in,
//! so its throughput is what a persistent connection with framed,
//! pipelined requests allows on this machine: the session ceiling, and a
//! server to test the session load generator against.
//!
//! Frames are answered in arrival order and written in batches: a reply is
//! flushed only when no further complete frame is already buffered, so a
//! pipelining client gets many replies per write, as from a real server.

use bytes::{Buf, BytesMut};
use futures::{SinkExt, StreamExt};
use peerdex_protocol::frame::{
    parse_request_body, Frame, FrameCodec, LoginCode, RequestBodyError, HEADER_LEN,
    HEARTBEAT_TIMEOUT, LEN_SIZE,
};
use peerdex_protocol::reply::put_code;
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, FramedParts};

use crate::null_server::Replies;

/// Serves one session whose preface was read; `rest` holds the bytes that
/// came with it.
pub async fn serve(stream: TcpStream, rest: BytesMut, replies: Replies) {
    let _ = stream.set_nodelay(true);
    // From parts, so that the bytes that came with the preface are decoded
    // before the socket is read again (they may be the whole login).
    let mut parts = FramedParts::new::<Frame>(stream, FrameCodec);
    parts.read_buf = rest;
    let mut framed = Framed::from_parts(parts);
    loop {
        let frame = match tokio::time::timeout(HEARTBEAT_TIMEOUT, framed.next()).await {
            Ok(Some(Ok(Ok(frame)))) => frame,
            Ok(Some(Ok(Err(_bad)))) => {
                let _ = framed.send(Frame::Close("bad frame".into())).await;
                return;
            }
            // A bad length, a broken connection, the client gone, or
            // silence past the heartbeat timeout.
            Ok(Some(Err(_)) | None) | Err(_) => return,
        };
        let answer = match answer(frame, &replies) {
            Answer::Send(frame) => frame,
            Answer::Nothing => continue,
            Answer::Close(reason) => {
                let _ = framed.send(Frame::Close(reason.into())).await;
                return;
            }
            Answer::End => return,
        };
        if framed.feed(answer).await.is_err() {
            return;
        }
        if !holds_a_frame(framed.read_buffer())
            && SinkExt::<Frame>::flush(&mut framed).await.is_err()
        {
            return;
        }
    }
}

/// What the null session does with one frame.
#[derive(Debug, PartialEq)]
enum Answer {
    Send(Frame),
    Nothing,
    /// Send `Close` with this reason, then close.
    Close(&'static str),
    /// Close without a word (the client closed).
    End,
}

fn answer(frame: Frame, replies: &Replies) -> Answer {
    match frame {
        Frame::Login(_) => Answer::Send(Frame::LoginReply(LoginCode::Ok)),
        Frame::Request { id, body } => match parse_request_body(&body) {
            Ok(request) => Answer::Send(Frame::Reply {
                id,
                more: false,
                body: replies.for_op(request.operation.kind()),
            }),
            // As a classic server: an unknown op gets no reply.
            Err(RequestBodyError::UnknownOp(_)) => Answer::Close("unknown op"),
            Err(
                RequestBodyError::Incomplete { op: Some(op) }
                | RequestBodyError::Trailing { op, .. },
            ) => {
                let mut code = BytesMut::new();
                put_code(&mut code, op.fail_code());
                Answer::Send(Frame::Reply {
                    id,
                    more: false,
                    body: code.freeze(),
                })
            }
            Err(RequestBodyError::Incomplete { op: None }) => Answer::Close("empty request"),
        },
        Frame::Ping(nonce) => Answer::Send(Frame::Pong(nonce)),
        Frame::Pong(_) => Answer::Nothing,
        Frame::Close(_) => Answer::End,
        Frame::LoginReply(_) | Frame::Reply { .. } | Frame::Event(_) => {
            Answer::Close("frame a client does not send")
        }
    }
}

/// Whether `buffer` already holds a complete frame: then the reply being
/// written can wait for the next one's and go out in the same write.
fn holds_a_frame(buffer: &BytesMut) -> bool {
    let mut header = &buffer[..];
    if header.len() < LEN_SIZE {
        return false;
    }
    let len = header.get_u32() as usize;
    len >= HEADER_LEN && buffer.len() >= LEN_SIZE + len
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use peerdex_protocol::{OpKind, Operation, Request};

    use bytes::Bytes;

    use super::*;

    fn plain_ok() -> Bytes {
        Bytes::from_static(b"0\0")
    }

    fn request(op: Operation) -> Bytes {
        Request {
            datetime: None,
            user: Ok("u".into()),
            operation: op,
        }
        .encode("01/01/2026 00:00:00")
        .expect("encodable")
        .freeze()
    }

    #[test]
    fn every_frame_gets_its_null_answer() {
        let replies = Replies::new();
        let id = NonZeroU32::new(7).expect("non-zero");
        let login = Frame::Login(peerdex_protocol::frame::Login {
            user: "u".into(),
            password: peerdex_protocol::Secret::new("pw"),
            client_version: "t".into(),
        });
        assert_eq!(
            answer(login, &replies),
            Answer::Send(Frame::LoginReply(LoginCode::Ok))
        );
        let body = request(Operation::Disconnect);
        assert_eq!(
            answer(Frame::Request { id, body }, &replies),
            Answer::Send(Frame::Reply {
                id,
                more: false,
                body: plain_ok()
            })
        );
        let body = request(Operation::ListUsers);
        assert_eq!(
            answer(Frame::Request { id, body }, &replies),
            Answer::Send(Frame::Reply {
                id,
                more: false,
                body: replies.for_op(OpKind::ListUsers)
            })
        );
        let body = Bytes::from_static(b"NO_SUCH_OP\0");
        assert_eq!(
            answer(Frame::Request { id, body }, &replies),
            Answer::Close("unknown op")
        );
        assert_eq!(
            answer(Frame::Ping(3), &replies),
            Answer::Send(Frame::Pong(3))
        );
        assert_eq!(answer(Frame::Close(String::new()), &replies), Answer::End);
    }

    #[test]
    fn a_buffered_frame_is_recognised_whole_only() {
        let frame = [0, 0, 0, 5, 6, 0, 0, 0, 1];
        assert!(holds_a_frame(&BytesMut::from(&frame[..])));
        assert!(!holds_a_frame(&BytesMut::from(&frame[..8])));
        assert!(!holds_a_frame(&BytesMut::from(&frame[..3])));
        assert!(!holds_a_frame(&BytesMut::new()));
    }
}
