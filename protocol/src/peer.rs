//! The peer-to-peer `GET_FILE` exchange between a downloading client and the
//! listener of the peer that published the file.

use bytes::BytesMut;
use futures::StreamExt;
use tokio::io::AsyncRead;

use crate::field::{put_field, Checked, CodecError, Field};
use crate::wire::FieldReader;

/// The op field of a peer request.
pub const GET_FILE: &str = "GET_FILE";

/// Reply codes of the peer listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerCode {
    /// The file's raw bytes follow until the serving peer closes.
    Ok = 0,
    /// The file does not exist or is not published by this peer.
    NotFound = 1,
    /// Any other error (including an op this peer does not know).
    Error = 2,
}

impl PeerCode {
    pub fn as_field(self) -> &'static str {
        match self {
            PeerCode::Ok => "0",
            PeerCode::NotFound => "1",
            PeerCode::Error => "2",
        }
    }

    pub fn from_field(field: &str) -> Option<PeerCode> {
        match field.trim() {
            "0" => Some(PeerCode::Ok),
            "1" => Some(PeerCode::NotFound),
            "2" => Some(PeerCode::Error),
            _ => None,
        }
    }
}

/// The compatible request form: `"GET_FILE \0<file>\0"` in one write, for
/// peers that split the first read at a blank (see PROTOCOL.md).
pub fn compat_request(file: &str) -> Result<BytesMut, CodecError> {
    request_with_op("GET_FILE ", file)
}

/// The exact form, for peers that answered `2` to [`compat_request`].
pub fn exact_request(file: &str) -> Result<BytesMut, CodecError> {
    request_with_op(GET_FILE, file)
}

fn request_with_op(op: &str, file: &str) -> Result<BytesMut, CodecError> {
    let mut dst = BytesMut::with_capacity(file.len() + 12);
    put_field(&mut dst, op)?;
    put_field(&mut dst, file)?;
    Ok(dst)
}

/// A request received by a peer listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerRequest {
    GetFile {
        file: Checked<String>,
    },
    /// peerdex extension: the piece list of `file` (`peer_ext`).
    GetHashes {
        file: Checked<String>,
    },
    /// peerdex extension: `length` bytes of `file` from `offset`
    /// (`peer_ext`); `range` is `None` when a number field is malformed.
    GetRange {
        file: Checked<String>,
        range: Option<(u64, u64)>,
    },
    /// Some other op; answered with [`PeerCode::Error`].
    UnknownOp(String),
    /// The connection closed before a complete request.
    Incomplete,
}

/// Reads a peer request: the op, then FILE. Whatever follows (an optional
/// DATETIME) is left for the caller to drain before closing.
pub async fn read_peer_request<R: AsyncRead + Unpin>(
    reader: &mut FieldReader<R>,
) -> Result<PeerRequest, CodecError> {
    let op = match reader.next().await {
        Some(field) => field?,
        None => return Ok(PeerRequest::Incomplete),
    };
    match op {
        Field::Text(op) if op.trim_matches(|c: char| c.is_ascii_whitespace()) == GET_FILE => {}
        Field::Text(op)
            if op == crate::peer_ext::GET_HASHES || op == crate::peer_ext::GET_RANGE =>
        {
            return read_ext_request(reader, &op).await
        }
        Field::Text(op) => return Ok(PeerRequest::UnknownOp(op)),
        _ => return Ok(PeerRequest::UnknownOp("<malformed op>".into())),
    }
    match reader.next().await {
        Some(field) => Ok(PeerRequest::GetFile {
            file: field?.into_text(),
        }),
        None => Ok(PeerRequest::Incomplete),
    }
}

/// Reads the fields of an extension request after its op (exact op names
/// only: the extensions have no legacy spellings).
async fn read_ext_request<R: AsyncRead + Unpin>(
    reader: &mut FieldReader<R>,
    op: &str,
) -> Result<PeerRequest, CodecError> {
    let Some(file) = reader.next().await else {
        return Ok(PeerRequest::Incomplete);
    };
    let file = file?.into_text();
    if op == crate::peer_ext::GET_HASHES {
        return Ok(PeerRequest::GetHashes { file });
    }
    let (Some(offset), Some(length)) = (reader.next().await, reader.next().await) else {
        return Ok(PeerRequest::Incomplete);
    };
    let range = match (offset?, length?) {
        (Field::Text(offset), Field::Text(length)) => {
            crate::peer_ext::parse_range(&offset, &length)
        }
        _ => None,
    };
    Ok(PeerRequest::GetRange { file, range })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::field_reader;

    #[test]
    fn compat_form_has_one_trailing_blank() {
        assert_eq!(&compat_request("a.txt").unwrap()[..], b"GET_FILE \0a.txt\0");
        assert_eq!(&exact_request("a.txt").unwrap()[..], b"GET_FILE\0a.txt\0");
    }

    #[tokio::test]
    async fn listener_accepts_both_forms_and_trailing_datetime() {
        for bytes in [
            &b"GET_FILE \0a.txt\0"[..],
            b"GET_FILE\0a.txt\x0021/11/2026 09:05:07\0",
        ] {
            let mut reader = field_reader(bytes);
            let request = read_peer_request(&mut reader).await.unwrap();
            assert_eq!(
                request,
                PeerRequest::GetFile {
                    file: Ok("a.txt".into())
                }
            );
        }
        let mut reader = field_reader(&b"GET_HASHES\0a.txt\0"[..]);
        assert_eq!(
            read_peer_request(&mut reader).await.unwrap(),
            PeerRequest::GetHashes {
                file: Ok("a.txt".into())
            }
        );
        let mut reader = field_reader(&b"GET_RANGE\0a.txt\x0010\x0020\0"[..]);
        assert_eq!(
            read_peer_request(&mut reader).await.unwrap(),
            PeerRequest::GetRange {
                file: Ok("a.txt".into()),
                range: Some((10, 20))
            }
        );
        let mut reader = field_reader(&b"GET_RANGE\0a.txt\0x\x0020\0"[..]);
        assert_eq!(
            read_peer_request(&mut reader).await.unwrap(),
            PeerRequest::GetRange {
                file: Ok("a.txt".into()),
                range: None
            }
        );
        let mut reader = field_reader(&b"GET_RANGE\0a.txt\x0010\0"[..]);
        assert_eq!(
            read_peer_request(&mut reader).await.unwrap(),
            PeerRequest::Incomplete
        );
        let mut reader = field_reader(&b"PUT_FILE\0a\0"[..]);
        assert!(matches!(
            read_peer_request(&mut reader).await.unwrap(),
            PeerRequest::UnknownOp(_)
        ));
    }
}
