//! Property tests of the peer extension messages: headers and requests
//! round-trip for any values, and arbitrary bytes never panic the peer
//! request reader (the listener's hostile-input path).

use bytes::BytesMut;
use peerdex_protocol::peer::{read_peer_request, PeerRequest};
use peerdex_protocol::peer_ext::{
    piece_count, put_piece, range_request, read_hashes_header, read_piece, read_range_header,
    HashesHeader, RangeHeader,
};
use peerdex_protocol::wire::field_reader;
use proptest::prelude::*;

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(future)
}

proptest! {
    #[test]
    fn hashes_header_round_trips(size in 0u64..(1 << 40), shift in 10u32..=26, root in any::<[u8; 32]>()) {
        let piece_size = 1u64 << shift;
        let count = piece_count(size, piece_size);
        prop_assume!(count <= 1 << 20);
        let header = HashesHeader { size, piece_size, root, count };
        let mut bytes = BytesMut::new();
        header.encode(&mut bytes);
        put_piece(&mut bytes, &root);
        let (got, piece) = block_on(async {
            let mut reader = field_reader(&bytes[..]);
            let got = read_hashes_header(&mut reader).await.expect("header");
            (got, read_piece(&mut reader).await.expect("piece"))
        });
        prop_assert_eq!(got, header);
        prop_assert_eq!(piece, root);
    }

    #[test]
    fn range_header_round_trips(size in any::<u64>(), length in any::<u64>(), root in any::<[u8; 32]>()) {
        let header = RangeHeader { size, root, length };
        let mut bytes = BytesMut::new();
        header.encode(&mut bytes);
        let got = block_on(async {
            read_range_header(&mut field_reader(&bytes[..])).await.expect("header")
        });
        prop_assert_eq!(got, header);
    }

    #[test]
    fn range_request_parses_back(file in "[a-z/._]{1,60}", offset in any::<u64>(), length in any::<u64>()) {
        let bytes = range_request(&file, offset, length).expect("encode");
        let request = block_on(async {
            read_peer_request(&mut field_reader(&bytes[..])).await.expect("read")
        });
        prop_assert_eq!(request, PeerRequest::GetRange { file: Ok(file), range: Some((offset, length)) });
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut prefixed = b"GET_RANGE\0".to_vec();
        prefixed.extend_from_slice(&bytes);
        block_on(async {
            let _ = read_peer_request(&mut field_reader(&bytes[..])).await;
            let _ = read_peer_request(&mut field_reader(&prefixed[..])).await;
            let _ = read_hashes_header(&mut field_reader(&bytes[..])).await;
        });
    }
}
