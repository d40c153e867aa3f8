//! Property tests of the codec and request parser: round trips under any
//! chunking, and arbitrary bytes never panic or grow buffers unboundedly.

use bytes::BytesMut;
use peerdex_protocol::field::{encode_fields, MAX_DISCARD};
use peerdex_protocol::request::{Progress, RequestParser};
use peerdex_protocol::{ConnectAddr, Field, FieldCodec, Operation, Request, MAX_FIELD_LEN};
use proptest::prelude::*;
use tokio_util::codec::Decoder;

/// Decodes `bytes` fed in chunks of the given sizes (cycled), as a socket would.
fn decode_chunked(bytes: &[u8], chunks: &[usize]) -> (Vec<Field>, bool) {
    let mut codec = FieldCodec::new();
    let mut buf = BytesMut::new();
    let mut fields = Vec::new();
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
                Ok(Some(field)) => fields.push(field),
                Ok(None) => break,
                Err(_) => return (fields, false),
            }
            assert!(
                buf.len() <= MAX_FIELD_LEN + 1 + n,
                "buffer grew past one field"
            );
        }
    }
    (fields, codec.decode_eof(&mut buf).is_ok())
}

fn field_text() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[^\u{0}]{0,80}")
        .unwrap()
        .prop_filter("fits a field", |s| s.len() <= MAX_FIELD_LEN)
}

fn token() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_.ñ-]{1,40}"
}

fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        Just(Operation::Register),
        Just(Operation::Unregister),
        Just(Operation::Disconnect),
        Just(Operation::ListUsers),
        (any::<[u8; 4]>(), 1u16..).prop_map(|(ip, port)| {
            let ip = std::net::IpAddr::from(ip);
            let ip = if ip.is_unspecified() { None } else { Some(ip) };
            Operation::Connect(ConnectAddr {
                ip: Ok(ip),
                port: Ok(port),
            })
        }),
        (token(), "[a-z ]{0,60}").prop_map(|(f, d)| Operation::Publish {
            file: Ok(f),
            description: Ok(d)
        }),
        token().prop_map(|f| Operation::Delete { file: Ok(f) }),
        token().prop_map(|u| Operation::ListContent { remote_user: Ok(u) }),
    ]
}

proptest! {
    #[test]
    fn fields_round_trip_under_any_chunking(
        fields in proptest::collection::vec(field_text(), 0..12),
        chunks in proptest::collection::vec(1usize..40, 1..8),
    ) {
        let bytes = encode_fields(fields.iter().map(String::as_str)).unwrap();
        let (decoded, clean_eof) = decode_chunked(&bytes, &chunks);
        prop_assert!(clean_eof);
        let expected: Vec<Field> = fields.into_iter().map(Field::Text).collect();
        prop_assert_eq!(decoded, expected);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        chunks in proptest::collection::vec(1usize..300, 1..8),
    ) {
        let (fields, _) = decode_chunked(&bytes, &chunks);
        let mut parser = RequestParser::new();
        for field in fields {
            match parser.feed(field) {
                Progress::NeedMore => {}
                Progress::Done(_) | Progress::UnknownOp(_) => parser = RequestParser::new(),
            }
        }
    }

    #[test]
    fn an_endless_field_is_cut_off(len in (MAX_DISCARD + 300)..(MAX_DISCARD + 5000)) {
        let bytes = vec![b'q'; len];
        let (fields, ok) = decode_chunked(&bytes, &[4096]);
        prop_assert!(fields.is_empty());
        prop_assert!(!ok);
    }

    #[test]
    fn requests_round_trip(user in token(), operation in operation(), with_datetime in any::<bool>()) {
        let datetime = "05/03/2027 17:08:09";
        let request = Request { datetime: Some(datetime.into()), user: Ok(user), operation };
        let bytes = request.encode(datetime).unwrap();
        let mut fields: Vec<Field> = decode_chunked(&bytes, &[7]).0;
        if !with_datetime {
            fields.remove(1);
        }
        let mut parser = RequestParser::new();
        let mut result = Progress::NeedMore;
        let count = fields.len();
        for (i, field) in fields.into_iter().enumerate() {
            result = parser.feed(field);
            if i + 1 < count {
                prop_assert_eq!(&result, &Progress::NeedMore);
            }
        }
        let mut expected = request;
        if !with_datetime {
            expected.datetime = None;
        }
        prop_assert_eq!(result, Progress::Done(expected));
    }
}
