//! peerdex extensions of the peer-to-peer exchange: `GET_HASHES` (the piece
//! list of a file) and `GET_RANGE` (a sized, ranged, hash-stamped transfer).
//! See `docs/PROTOCOL-EXTENSIONS.md` for the contract.
//!
//! A classic peer answers `2` to these ops (or closes): that is how a
//! peerdex downloader detects it and falls back to the classic `GET_FILE`.
//! Nothing here changes how `GET_FILE` is parsed or answered.

use bytes::BytesMut;
use thiserror::Error;
use tokio::io::AsyncRead;

use crate::field::{put_field, CodecError};
use crate::wire::{next_text, FieldReader, ReplyError};

/// The op field of a piece-list request.
pub const GET_HASHES: &str = "GET_HASHES";
/// The op field of a ranged transfer request.
pub const GET_RANGE: &str = "GET_RANGE";

/// A BLAKE3 hash or chaining value.
pub type Digest = [u8; 32];

/// BLAKE3's chunk: every piece size is a power-of-two multiple of it.
pub const MIN_PIECE_SIZE: u64 = 1024;
/// Largest piece size a receiver accepts (bounds its per-piece buffers).
pub const MAX_PIECE_SIZE: u64 = 64 << 20;
/// Largest piece count a receiver accepts (bounds the piece list it keeps:
/// 2^20 pieces of 32 bytes = 32 MiB at most; at 1 MiB pieces, 1 TiB files).
pub const MAX_PIECES: u64 = 1 << 20;

/// Reply codes of the extension ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtCode {
    /// The reply's fields (and, for `GET_RANGE`, the bytes) follow.
    Ok = 0,
    /// The file does not exist or is not published by this peer.
    NotFound = 1,
    /// Any other error; also what a classic peer answers to an unknown op.
    Error = 2,
    /// `GET_RANGE` only: the offset is past the end of the file.
    OutOfRange = 3,
}

impl ExtCode {
    /// The code as its reply field.
    pub fn as_field(self) -> &'static str {
        match self {
            ExtCode::Ok => "0",
            ExtCode::NotFound => "1",
            ExtCode::Error => "2",
            ExtCode::OutOfRange => "3",
        }
    }

    /// Parses a reply code field (surrounding blanks ignored).
    pub fn from_field(field: &str) -> Option<ExtCode> {
        match field.trim() {
            "0" => Some(ExtCode::Ok),
            "1" => Some(ExtCode::NotFound),
            "2" => Some(ExtCode::Error),
            "3" => Some(ExtCode::OutOfRange),
            _ => None,
        }
    }

    /// The code alone, as a complete reply (`"1\0"`).
    pub fn reply(self) -> &'static [u8] {
        match self {
            ExtCode::Ok => b"0\0",
            ExtCode::NotFound => b"1\0",
            ExtCode::Error => b"2\0",
            ExtCode::OutOfRange => b"3\0",
        }
    }
}

/// Lower-case hex of a digest (64 characters).
pub fn to_hex(digest: &Digest) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(64);
    for byte in digest {
        out.push(HEX[(byte >> 4) as usize] as char);
        out.push(HEX[(byte & 15) as usize] as char);
    }
    out
}

/// Parses exactly 64 hex characters (either case).
pub fn from_hex(text: &str) -> Option<Digest> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

/// Number of pieces of a file: at least one (an empty file is one empty
/// piece, so that every file has a root and a non-empty list).
pub fn piece_count(size: u64, piece_size: u64) -> u64 {
    size.div_ceil(piece_size.max(1)).max(1)
}

/// Whether `piece_size` is a power-of-two multiple of BLAKE3's chunk
/// within the bounds a receiver accepts.
pub fn valid_piece_size(piece_size: u64) -> bool {
    piece_size.is_power_of_two() && (MIN_PIECE_SIZE..=MAX_PIECE_SIZE).contains(&piece_size)
}

/// `GET_HASHES\0<file>\0`, in one write.
pub fn hashes_request(file: &str) -> Result<BytesMut, CodecError> {
    let mut dst = BytesMut::with_capacity(file.len() + 13);
    put_field(&mut dst, GET_HASHES)?;
    put_field(&mut dst, file)?;
    Ok(dst)
}

/// `GET_RANGE\0<file>\0<offset>\0<length>\0`, in one write.
pub fn range_request(file: &str, offset: u64, length: u64) -> Result<BytesMut, CodecError> {
    let mut dst = BytesMut::with_capacity(file.len() + 52);
    put_field(&mut dst, GET_RANGE)?;
    put_field(&mut dst, file)?;
    put_field(&mut dst, &offset.to_string())?;
    put_field(&mut dst, &length.to_string())?;
    Ok(dst)
}

/// What a `GET_HASHES` reply announces before its piece list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashesHeader {
    /// File size in bytes.
    pub size: u64,
    /// Piece size in bytes.
    pub piece_size: u64,
    /// BLAKE3 hash of the whole file.
    pub root: Digest,
    /// Number of piece fields that follow.
    pub count: u64,
}

impl HashesHeader {
    /// `0\0<size>\0<piece_size>\0<root>\0<count>\0`.
    pub fn encode(&self, dst: &mut BytesMut) {
        for field in [
            "0".to_string(),
            self.size.to_string(),
            self.piece_size.to_string(),
            to_hex(&self.root),
            self.count.to_string(),
        ] {
            // Digits and hex are never too long nor contain NUL.
            dst.extend_from_slice(field.as_bytes());
            dst.extend_from_slice(b"\0");
        }
    }
}

/// One piece field: 64 hex characters and its NUL.
pub fn put_piece(dst: &mut BytesMut, digest: &Digest) {
    dst.extend_from_slice(to_hex(digest).as_bytes());
    dst.extend_from_slice(b"\0");
}

/// What a `GET_RANGE` reply announces before its raw bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeHeader {
    /// Size of the whole file.
    pub size: u64,
    /// BLAKE3 hash of the whole file.
    pub root: Digest,
    /// Exactly this many raw bytes follow.
    pub length: u64,
}

impl RangeHeader {
    /// `0\0<size>\0<root>\0<length>\0`.
    pub fn encode(&self, dst: &mut BytesMut) {
        for field in [
            "0".to_string(),
            self.size.to_string(),
            to_hex(&self.root),
            self.length.to_string(),
        ] {
            dst.extend_from_slice(field.as_bytes());
            dst.extend_from_slice(b"\0");
        }
    }
}

/// Why an extension reply could not be used.
#[derive(Debug, Error)]
pub enum ExtReplyError {
    /// A non-zero code (a classic peer answers 2 to unknown ops).
    #[error("peer answered code {0:?}")]
    Code(ExtCode),
    /// A field that is not what the extension specifies (a classic peer
    /// may also answer garbage to an op it does not know).
    #[error("malformed reply: {0}")]
    Malformed(&'static str),
    /// The connection ended or failed before the reply was complete.
    #[error(transparent)]
    Reply(#[from] ReplyError),
}

async fn read_code<R: AsyncRead + Unpin>(reader: &mut FieldReader<R>) -> Result<(), ExtReplyError> {
    let code = next_text(reader).await?;
    match ExtCode::from_field(&code) {
        Some(ExtCode::Ok) => Ok(()),
        Some(code) => Err(ExtReplyError::Code(code)),
        None => Err(ExtReplyError::Malformed("unknown reply code")),
    }
}

async fn read_number<R: AsyncRead + Unpin>(
    reader: &mut FieldReader<R>,
    what: &'static str,
) -> Result<u64, ExtReplyError> {
    let text = next_text(reader).await?;
    parse_number(&text).ok_or(ExtReplyError::Malformed(what))
}

async fn read_digest<R: AsyncRead + Unpin>(
    reader: &mut FieldReader<R>,
    what: &'static str,
) -> Result<Digest, ExtReplyError> {
    let text = next_text(reader).await?;
    from_hex(&text).ok_or(ExtReplyError::Malformed(what))
}

/// ASCII digits only (no sign, no blanks), fitting a u64.
fn parse_number(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Reads the code and header of a `GET_HASHES` reply; the caller then reads
/// `count` pieces with [`read_piece`]. Checks that piece size and count are
/// consistent with the size, so the caller never trusts an unchecked count.
pub async fn read_hashes_header<R: AsyncRead + Unpin>(
    reader: &mut FieldReader<R>,
) -> Result<HashesHeader, ExtReplyError> {
    read_code(reader).await?;
    let size = read_number(reader, "size is not a number").await?;
    let piece_size = read_number(reader, "piece size is not a number").await?;
    if !valid_piece_size(piece_size) {
        return Err(ExtReplyError::Malformed("unsupported piece size"));
    }
    let root = read_digest(reader, "root is not 64 hex characters").await?;
    let count = read_number(reader, "count is not a number").await?;
    if count != piece_count(size, piece_size) || count > MAX_PIECES {
        return Err(ExtReplyError::Malformed(
            "piece count does not match the size",
        ));
    }
    Ok(HashesHeader {
        size,
        piece_size,
        root,
        count,
    })
}

/// Reads one piece field of a `GET_HASHES` reply.
pub async fn read_piece<R: AsyncRead + Unpin>(
    reader: &mut FieldReader<R>,
) -> Result<Digest, ExtReplyError> {
    read_digest(reader, "piece is not 64 hex characters").await
}

/// Reads the code and header of a `GET_RANGE` reply. The raw bytes follow
/// in the reader's buffer and stream.
pub async fn read_range_header<R: AsyncRead + Unpin>(
    reader: &mut FieldReader<R>,
) -> Result<RangeHeader, ExtReplyError> {
    read_code(reader).await?;
    let size = read_number(reader, "size is not a number").await?;
    let root = read_digest(reader, "root is not 64 hex characters").await?;
    let length = read_number(reader, "length is not a number").await?;
    Ok(RangeHeader { size, root, length })
}

/// The range of a `GET_RANGE` request, once its number fields are checked.
pub fn parse_range(offset: &str, length: &str) -> Option<(u64, u64)> {
    Some((parse_number(offset)?, parse_number(length)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::field_reader;

    #[test]
    fn requests_are_nul_fields() {
        assert_eq!(
            &hashes_request("a/b.txt").unwrap()[..],
            b"GET_HASHES\0a/b.txt\0"
        );
        assert_eq!(
            &range_request("a", 1048576, 42).unwrap()[..],
            b"GET_RANGE\0a\x001048576\x0042\0"
        );
        assert!(hashes_request(&"x".repeat(256)).is_err());
    }

    #[test]
    fn hex_round_trip_and_rejects() {
        let digest: Digest = std::array::from_fn(|i| (i * 37) as u8);
        let hex = to_hex(&digest);
        assert_eq!(hex.len(), 64);
        assert_eq!(from_hex(&hex), Some(digest));
        assert_eq!(from_hex(&hex.to_uppercase()), Some(digest));
        assert_eq!(from_hex(&hex[1..]), None);
        assert_eq!(from_hex(&format!("{}g", &hex[1..])), None);
    }

    #[test]
    fn piece_counts() {
        assert_eq!(piece_count(0, 1024), 1);
        assert_eq!(piece_count(1, 1024), 1);
        assert_eq!(piece_count(1024, 1024), 1);
        assert_eq!(piece_count(1025, 1024), 2);
        assert!(valid_piece_size(1 << 20));
        assert!(!valid_piece_size(512));
        assert!(!valid_piece_size(3 << 10));
        assert!(!valid_piece_size(MAX_PIECE_SIZE * 2));
    }

    #[tokio::test]
    async fn hashes_reply_round_trip() {
        let header = HashesHeader {
            size: 3000,
            piece_size: 1024,
            root: [7; 32],
            count: 3,
        };
        let mut bytes = BytesMut::new();
        header.encode(&mut bytes);
        for i in 0..3u8 {
            put_piece(&mut bytes, &[i; 32]);
        }
        let mut reader = field_reader(&bytes[..]);
        assert_eq!(read_hashes_header(&mut reader).await.unwrap(), header);
        for i in 0..3u8 {
            assert_eq!(read_piece(&mut reader).await.unwrap(), [i; 32]);
        }
        assert!(read_piece(&mut reader).await.is_err());
    }

    #[tokio::test]
    async fn hashes_reply_rejects_inconsistent_counts_and_codes() {
        let header = HashesHeader {
            size: 3000,
            piece_size: 1024,
            root: [7; 32],
            count: 2,
        };
        let mut bytes = BytesMut::new();
        header.encode(&mut bytes);
        let mut reader = field_reader(&bytes[..]);
        assert!(matches!(
            read_hashes_header(&mut reader).await,
            Err(ExtReplyError::Malformed(_))
        ));
        for (reply, code) in [(&b"2\0"[..], ExtCode::Error), (b"1\0", ExtCode::NotFound)] {
            let mut reader = field_reader(reply);
            match read_hashes_header(&mut reader).await {
                Err(ExtReplyError::Code(got)) => assert_eq!(got, code),
                other => panic!("{other:?}"),
            }
        }
        let mut reader = field_reader(&b""[..]);
        assert!(matches!(
            read_hashes_header(&mut reader).await,
            Err(ExtReplyError::Reply(ReplyError::Closed))
        ));
    }

    #[tokio::test]
    async fn range_reply_leaves_the_bytes_in_the_reader() {
        let header = RangeHeader {
            size: 10,
            root: [1; 32],
            length: 4,
        };
        let mut bytes = BytesMut::new();
        header.encode(&mut bytes);
        bytes.extend_from_slice(b"\0\0ab");
        let mut reader = field_reader(&bytes[..]);
        assert_eq!(read_range_header(&mut reader).await.unwrap(), header);
        assert_eq!(&reader.read_buffer()[..], b"\0\0ab");
        assert_eq!(parse_range("0", "5"), Some((0, 5)));
        assert_eq!(parse_range("-1", "5"), None);
        assert_eq!(parse_range(" 1", "5"), None);
        assert_eq!(parse_range("1", "99999999999999999999999"), None);
    }
}
