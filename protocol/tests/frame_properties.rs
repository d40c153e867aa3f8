//! Property tests of the session frame codec and of `classify`: round trips
//! under any chunking, arbitrary bytes never panic, over-long lengths are
//! refused before anything is buffered, and no classic request is ever
//! taken for a session or TLS.

use std::net::IpAddr;
use std::num::NonZeroU32;

use bytes::{Bytes, BytesMut};
use peerdex_protocol::frame::{
    classify, parse_request_body, reply_frames, BadFrame, Event, Frame, FrameCodec, FrameError,
    Login, LoginCode, Opening, RequestId, LEN_SIZE, MAX_BODY_LEN, MAX_FRAME_LEN, PREFACE,
};
use peerdex_protocol::{ConnectAddr, Operation, Request, MAX_FIELD_LEN};
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

type Decoded = Result<Frame, BadFrame>;

fn encode(frame: &Frame) -> BytesMut {
    let mut dst = BytesMut::new();
    FrameCodec
        .encode(frame, &mut dst)
        .expect("generated frames are encodable");
    dst
}

/// Decodes `bytes` fed in chunks of the given sizes (cycled), as a socket
/// would; checks after every step that the buffer never holds more than one
/// frame plus the last chunk.
fn decode_chunked(bytes: &[u8], chunks: &[usize]) -> (Vec<Decoded>, Result<(), FrameError>) {
    let mut codec = FrameCodec::new();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut offset = 0;
    let mut chunk = chunks.iter().cycle();
    while offset < bytes.len() {
        let n = (*chunk.next().unwrap_or(&1))
            .max(1)
            .min(bytes.len() - offset);
        buf.extend_from_slice(&bytes[offset..offset + n]);
        offset += n;
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(item)) => out.push(item),
                Ok(None) => break,
                Err(err) => return (out, Err(err)),
            }
        }
        assert!(
            buf.len() < LEN_SIZE + MAX_FRAME_LEN + n,
            "buffer holds more than one frame"
        );
    }
    match codec.decode_eof(&mut buf) {
        Ok(Some(item)) => {
            out.push(item);
            (out, Ok(()))
        }
        Ok(None) => (out, Ok(())),
        Err(err) => (out, Err(err)),
    }
}

fn field_text() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[^\u{0}]{0,60}")
        .expect("valid regex")
        .prop_filter("fits a field", |s| s.len() <= MAX_FIELD_LEN)
}

fn request_id() -> impl Strategy<Value = RequestId> {
    (1u32..).prop_map(|n| NonZeroU32::new(n).expect("range starts at 1"))
}

fn body(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (field_text(), field_text(), field_text()).prop_map(|(user, password, client_version)| {
            Frame::Login(Login {
                user,
                password: peerdex_protocol::Secret::new(password),
                client_version,
            })
        }),
        prop_oneof![
            Just(LoginCode::Ok),
            Just(LoginCode::Refused),
            Just(LoginCode::Fail)
        ]
        .prop_map(Frame::LoginReply),
        (request_id(), body(600)).prop_map(|(id, body)| Frame::Request { id, body }),
        (request_id(), any::<bool>(), body(600)).prop_map(|(id, more, body)| Frame::Reply {
            id,
            more,
            body
        }),
        any::<u32>().prop_map(Frame::Ping),
        any::<u32>().prop_map(Frame::Pong),
        (
            field_text().prop_filter("named", |n| !n.is_empty()),
            proptest::collection::vec(field_text(), 0..5)
        )
            .prop_map(|(name, fields)| Frame::Event(Event { name, fields })),
        field_text().prop_map(Frame::Close),
    ]
}

fn token() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_.ñ-]{1,40}"
}

/// Every directory operation the classic codec can encode, extensions too.
fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        Just(Operation::Register),
        Just(Operation::Unregister),
        Just(Operation::Disconnect),
        Just(Operation::ListUsers),
        (any::<Option<[u8; 16]>>(), any::<[u8; 4]>(), 1u16..).prop_map(|(v6, v4, port)| {
            let ip = v6.map_or(IpAddr::from(v4), IpAddr::from);
            let ip = if ip.is_unspecified() { None } else { Some(ip) };
            Operation::Connect(ConnectAddr {
                ip: Ok(ip),
                port: Ok(port),
            })
        }),
        (token(), field_text()).prop_map(|(f, d)| Operation::Publish {
            file: Ok(f),
            description: Ok(d)
        }),
        token().prop_map(|f| Operation::Delete { file: Ok(f) }),
        token().prop_map(|u| Operation::ListContent { remote_user: Ok(u) }),
        (token(), field_text(), any::<u64>(), any::<[u8; 32]>()).prop_map(|(f, d, size, hash)| {
            Operation::PublishContent {
                file: Ok(f),
                description: Ok(d),
                size: Ok(size),
                hash: Ok(hash),
            }
        }),
        (token(), 1u32..=1000).prop_map(|(pattern, limit)| Operation::Search {
            pattern: Ok(pattern),
            limit: Ok(limit)
        }),
        (any::<Option<[u8; 32]>>(), token(), token()).prop_map(|(hash, remote, file)| {
            Operation::FindSources {
                hash: Ok(hash),
                remote_user: Ok(remote),
                file: Ok(file),
            }
        }),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    (field_text(), operation()).prop_map(|(user, operation)| Request {
        datetime: Some("05/03/2027 17:08:09".into()),
        user: Ok(user),
        operation,
    })
}

/// Bytes that start with a length field, so that the decoder also gets
/// past the length check into kinds, ids and bodies.
fn framed_garbage() -> impl Strategy<Value = Vec<u8>> {
    (0u32..700, proptest::collection::vec(any::<u8>(), 0..800)).prop_map(|(len, rest)| {
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.extend(rest);
        bytes
    })
}

proptest! {
    /// Encode then decode gives the frame back, however the bytes of a run
    /// of frames are split by the network.
    #[test]
    fn frames_round_trip_under_any_chunking(
        frames in proptest::collection::vec(frame(), 1..8),
        chunks in proptest::collection::vec(1usize..200, 1..8),
    ) {
        let mut bytes = BytesMut::new();
        for frame in &frames {
            bytes.extend_from_slice(&encode(frame));
        }
        let (decoded, end) = decode_chunked(&bytes, &chunks);
        prop_assert!(end.is_ok(), "{:?}", end);
        let expected: Vec<Decoded> = frames.into_iter().map(Ok).collect();
        prop_assert_eq!(decoded, expected);
    }

    /// Whatever arrives, the decoder returns frames, bad frames or an
    /// error; it never panics and never holds more than one frame.
    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop_oneof![proptest::collection::vec(any::<u8>(), 0..1024), framed_garbage()],
        chunks in proptest::collection::vec(1usize..300, 1..8),
    ) {
        let _ = decode_chunked(&bytes, &chunks);
    }

    /// A length above the maximum is refused as soon as its 4 bytes are in,
    /// with nothing reserved for the announced frame, however the 4 bytes
    /// arrive.
    #[test]
    fn over_long_length_is_refused_from_four_bytes(
        len in (MAX_FRAME_LEN as u32 + 1)..,
        split in 1usize..LEN_SIZE,
    ) {
        let header = len.to_be_bytes();
        let mut src = BytesMut::with_capacity(LEN_SIZE);
        src.extend_from_slice(&header[..split]);
        prop_assert!(matches!(FrameCodec.decode(&mut src), Ok(None)));
        src.extend_from_slice(&header[split..]);
        let capacity = src.capacity();
        prop_assert!(matches!(FrameCodec.decode(&mut src), Err(FrameError::TooLong(n)) if n == len));
        prop_assert_eq!(src.len(), LEN_SIZE);
        prop_assert_eq!(src.capacity(), capacity, "decoder reserved memory");
        prop_assert!(capacity <= 64, "buffer of {} bytes for a refused frame", capacity);
    }

    /// A valid but incomplete frame is not reserved for either: the buffer
    /// grows only with bytes that arrived.
    #[test]
    fn announced_length_is_never_reserved(len in 5u32..=MAX_FRAME_LEN as u32, have in 0usize..64) {
        let mut src = BytesMut::with_capacity(LEN_SIZE + have);
        src.extend_from_slice(&len.to_be_bytes());
        src.extend_from_slice(&vec![1u8; have.min(len as usize - 1)]);
        let capacity = src.capacity();
        prop_assert!(matches!(FrameCodec.decode(&mut src), Ok(None)));
        prop_assert_eq!(src.capacity(), capacity);
    }

    /// No request the classic codec produces, nor any of its prefixes, is
    /// classified as a session or TLS, or kept waiting for more bytes.
    #[test]
    fn classic_requests_are_classic(request in request(), cut in any::<prop::sample::Index>()) {
        let bytes = request.encode("05/03/2027 17:08:09").expect("generated requests encode");
        prop_assert_eq!(classify(&bytes), Opening::Classic);
        let prefix = &bytes[..1 + cut.index(bytes.len())];
        prop_assert_eq!(classify(prefix), Opening::Classic);
    }

    /// Arbitrary first bytes: NeedMore only for a strict prefix of the
    /// preface, Session only after the whole preface, Tls only for 0x16.
    #[test]
    fn classify_waits_only_on_a_preface_prefix(
        bytes in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..16),
            (0usize..=PREFACE.len(), proptest::collection::vec(any::<u8>(), 0..8))
                .prop_map(|(n, rest)| [&PREFACE[..n], &rest[..]].concat()),
        ],
    ) {
        let opening = classify(&bytes);
        let is_strict_prefix = bytes.len() < PREFACE.len() && PREFACE.starts_with(&bytes);
        prop_assert_eq!(opening == Opening::NeedMore, is_strict_prefix);
        prop_assert_eq!(opening == Opening::Session, bytes.starts_with(&PREFACE));
        prop_assert_eq!(opening == Opening::Tls, bytes.first() == Some(&0x16));
    }

    /// A request travels in a Request frame as the classic codec's bytes
    /// and parses back to itself.
    #[test]
    fn request_frames_carry_classic_requests(request in request(), id in request_id()) {
        let frame = Frame::request(id, &request, "05/03/2027 17:08:09").expect("encodable");
        let (decoded, end) = decode_chunked(&encode(&frame), &[13]);
        prop_assert!(end.is_ok());
        let Some(Ok(Frame::Request { id: got, body })) = decoded.into_iter().next() else {
            return Err(TestCaseError::fail("not a request frame"));
        };
        prop_assert_eq!(got, id);
        prop_assert_eq!(&body[..], &request.encode("05/03/2027 17:08:09").expect("encodable")[..]);
        prop_assert_eq!(parse_request_body(&body), Ok(request));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// A reply of any size streams as bounded frames whose bodies,
    /// concatenated in order, are the reply; only the last says "final".
    #[test]
    fn long_replies_stream_in_bounded_frames(
        len in 0usize..(3 * MAX_BODY_LEN + 100),
        id in request_id(),
        chunks in proptest::collection::vec(1000usize..70_000, 1..4),
    ) {
        let reply = Bytes::from((0..len).map(|i| i as u8).collect::<Vec<u8>>());
        let mut bytes = BytesMut::new();
        for frame in reply_frames(id, reply.clone()) {
            bytes.extend_from_slice(&encode(&frame));
        }
        let (decoded, end) = decode_chunked(&bytes, &chunks);
        prop_assert!(end.is_ok());
        let mut joined = Vec::new();
        let count = decoded.len();
        for (i, item) in decoded.into_iter().enumerate() {
            let Ok(Frame::Reply { id: got, more, body }) = item else {
                return Err(TestCaseError::fail("not a reply frame"));
            };
            prop_assert_eq!(got, id);
            prop_assert_eq!(more, i + 1 < count);
            prop_assert!(body.len() <= MAX_BODY_LEN);
            joined.extend_from_slice(&body);
        }
        prop_assert_eq!(joined, reply.to_vec());
    }
}
