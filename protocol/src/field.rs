//! The wire unit: a UTF-8 string terminated by one NUL byte, at most 255 bytes.
//!
//! [`FieldCodec`] is hostile-input code: it never buffers more than one
//! field's worth of bytes, and an over-long field is skipped (bounded by
//! [`MAX_DISCARD`]) and reported as [`Field::TooLong`] so that the caller can
//! still answer the operation's catch-all code, as PROTOCOL.md asks.

use bytes::{Buf, BufMut, BytesMut};
use thiserror::Error;
use tokio_util::codec::{Decoder, Encoder};

/// Longest field content, in bytes, before its NUL terminator.
pub const MAX_FIELD_LEN: usize = 255;

/// How many bytes of one over-long field the decoder skips while looking for
/// its NUL before it gives up on the connection. Bounds the work a hostile
/// peer can make us do while keeping the stream in sync for honest mistakes.
pub const MAX_DISCARD: usize = 64 * 1024;

/// One decoded field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// A well-formed field.
    Text(String),
    /// The field had more than [`MAX_FIELD_LEN`] bytes; its content was discarded.
    TooLong,
    /// The field was not valid UTF-8.
    NotUtf8,
}

impl Field {
    /// The field's text, or why it has none.
    pub fn into_text(self) -> Result<String, Malformed> {
        match self {
            Field::Text(text) => Ok(text),
            Field::TooLong => Err(Malformed::TooLong),
            Field::NotUtf8 => Err(Malformed::NotUtf8),
        }
    }
}

/// Why a field's value cannot be used. Carried inside requests instead of
/// failing the parse, because PROTOCOL.md checks reply codes in order: an
/// unknown user gets code 1 even if a later field is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Malformed {
    #[error("field longer than {MAX_FIELD_LEN} bytes")]
    TooLong,
    #[error("field is not valid UTF-8")]
    NotUtf8,
    #[error("invalid value: {0}")]
    Invalid(&'static str),
}

/// A field value that may be malformed.
pub type Checked<T> = Result<T, Malformed>;

/// Errors of the field codec.
#[derive(Debug, Error)]
pub enum CodecError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("over-long field did not end within {MAX_DISCARD} bytes")]
    Unbounded,
    #[error("connection closed in the middle of a field")]
    Truncated,
    #[error("field of {0} bytes is longer than {MAX_FIELD_LEN}")]
    EncodeTooLong(usize),
    #[error("field contains a NUL byte")]
    EncodeNul,
}

/// tokio-util codec for NUL-terminated fields.
#[derive(Debug, Default)]
pub struct FieldCodec {
    /// `Some(n)` while skipping an over-long field: `n` bytes skipped so far.
    discarding: Option<usize>,
}

impl FieldCodec {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Decoder for FieldCodec {
    type Item = Field;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Field>, CodecError> {
        if let Some(skipped) = self.discarding {
            return match src.iter().position(|&b| b == 0) {
                Some(nul) if skipped + nul <= MAX_DISCARD => {
                    src.advance(nul + 1);
                    self.discarding = None;
                    Ok(Some(Field::TooLong))
                }
                Some(_) => Err(CodecError::Unbounded),
                None => {
                    let skipped = skipped + src.len();
                    src.clear();
                    if skipped > MAX_DISCARD {
                        return Err(CodecError::Unbounded);
                    }
                    self.discarding = Some(skipped);
                    Ok(None)
                }
            };
        }
        let window = &src[..src.len().min(MAX_FIELD_LEN + 1)];
        match window.iter().position(|&b| b == 0) {
            Some(nul) => {
                let bytes = src.split_to(nul);
                src.advance(1);
                Ok(Some(match String::from_utf8(bytes.to_vec()) {
                    Ok(text) => Field::Text(text),
                    Err(_) => Field::NotUtf8,
                }))
            }
            None if src.len() > MAX_FIELD_LEN => {
                self.discarding = Some(0);
                self.decode(src)
            }
            None => Ok(None),
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Field>, CodecError> {
        match self.decode(src)? {
            Some(field) => Ok(Some(field)),
            None if src.is_empty() && self.discarding.is_none() => Ok(None),
            None => Err(CodecError::Truncated),
        }
    }
}

impl Encoder<&str> for FieldCodec {
    type Error = CodecError;

    fn encode(&mut self, field: &str, dst: &mut BytesMut) -> Result<(), CodecError> {
        put_field(dst, field)
    }
}

/// Appends one field (content + NUL) to `dst`, refusing what the receiver
/// would reject.
pub fn put_field(dst: &mut BytesMut, field: &str) -> Result<(), CodecError> {
    if field.len() > MAX_FIELD_LEN {
        return Err(CodecError::EncodeTooLong(field.len()));
    }
    if field.as_bytes().contains(&0) {
        return Err(CodecError::EncodeNul);
    }
    dst.reserve(field.len() + 1);
    dst.put_slice(field.as_bytes());
    dst.put_u8(0);
    Ok(())
}

/// Encodes several fields into one buffer, so that they go out in one write.
pub fn encode_fields<'a>(
    fields: impl IntoIterator<Item = &'a str>,
) -> Result<BytesMut, CodecError> {
    let mut dst = BytesMut::new();
    for field in fields {
        put_field(&mut dst, field)?;
    }
    Ok(dst)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8]) -> Result<Vec<Field>, CodecError> {
        let mut codec = FieldCodec::new();
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(field) = codec.decode_eof(&mut buf)? {
            out.push(field);
        }
        Ok(out)
    }

    #[test]
    fn decodes_consecutive_fields() {
        let fields = decode_all(b"REGISTER\0alice\0\0").unwrap();
        assert_eq!(
            fields,
            vec![
                Field::Text("REGISTER".into()),
                Field::Text("alice".into()),
                Field::Text(String::new())
            ]
        );
    }

    #[test]
    fn field_of_255_bytes_is_accepted_256_is_too_long() {
        let mut bytes = vec![b'a'; 255];
        bytes.push(0);
        bytes.extend(vec![b'b'; 256]);
        bytes.push(0);
        bytes.extend(b"next\0");
        let fields = decode_all(&bytes).unwrap();
        assert_eq!(fields[0], Field::Text("a".repeat(255)));
        assert_eq!(fields[1], Field::TooLong);
        assert_eq!(fields[2], Field::Text("next".into()));
    }

    #[test]
    fn over_long_field_split_across_reads_stays_in_sync() {
        let mut codec = FieldCodec::new();
        let mut buf = BytesMut::from(&vec![b'x'; 300][..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert!(buf.is_empty(), "skipped bytes are not buffered");
        buf.extend_from_slice(b"yyy\0ok\0");
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(Field::TooLong));
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(Field::Text("ok".into()))
        );
    }

    #[test]
    fn endless_field_is_an_error_not_a_hang() {
        let mut codec = FieldCodec::new();
        let mut buf = BytesMut::new();
        let mut result = Ok(None);
        for _ in 0..100 {
            buf.extend_from_slice(&[b'z'; 4096]);
            result = codec.decode(&mut buf);
            if result.is_err() {
                break;
            }
        }
        assert!(matches!(result, Err(CodecError::Unbounded)));
    }

    #[test]
    fn invalid_utf8_is_reported_per_field() {
        let fields = decode_all(b"\xff\xfe\0fine\0").unwrap();
        assert_eq!(fields, vec![Field::NotUtf8, Field::Text("fine".into())]);
    }

    #[test]
    fn truncated_final_field_is_an_error() {
        assert!(matches!(
            decode_all(b"REGISTER\0ali"),
            Err(CodecError::Truncated)
        ));
    }

    #[test]
    fn encoder_refuses_what_decoder_would_reject() {
        assert!(matches!(
            encode_fields(["a\0b"]),
            Err(CodecError::EncodeNul)
        ));
        let long = "x".repeat(256);
        assert!(matches!(
            encode_fields([long.as_str()]),
            Err(CodecError::EncodeTooLong(256))
        ));
        assert_eq!(&encode_fields(["a", "", "bc"]).unwrap()[..], b"a\0\0bc\0");
    }
}
