//! A streaming, allocation-free reader of LIST_USERS / LIST_CONTENT replies.
//!
//! Why it exists beside [`crate::wire::read_reply`]: `read_reply` builds a
//! `Vec` of entries with one `String` per field, which costs client CPU per
//! entry. That is fine for the shell, but a load generator that measures
//! LIST_USERS latency would then measure itself. [`ListingReader`] reads the code and
//! the count, then hands out one entry at a time as `&str`s borrowed from the
//! reader's buffer (or, for an entry split across two reads, from a fixed
//! buffer inside the reader), so a listing of any length costs no
//! allocation and no more memory than the read buffer.
//!
//! It follows the same contract as `read_reply`, and returns the same
//! [`ReplyError`]s: NUL-terminated UTF-8 fields of at most
//! [`MAX_FIELD_LEN`] bytes, the code looked up in the operation's table,
//! nothing read after a non-zero code, exactly COUNT entries (a close before
//! the last one is an error, never a short list). Unlike the field codec it
//! does not skip an over-long field to stay in sync: a reply with one is
//! unusable, so the reader stops at byte 256 of the field instead.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use crate::field::{CodecError, MAX_FIELD_LEN};
use crate::op::{OpKind, Outcome};
use crate::wire::ReplyError;

/// The two listings, and so the number of fields of one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// LIST_USERS: entries of `[name, ip, port]`.
    Users,
    /// LIST_CONTENT: entries of `[file, description]`.
    Content,
}

impl ListKind {
    /// The operation whose code table applies.
    pub fn op(self) -> OpKind {
        match self {
            ListKind::Users => OpKind::ListUsers,
            ListKind::Content => OpKind::ListContent,
        }
    }

    /// Fields per entry.
    pub fn arity(self) -> usize {
        match self {
            ListKind::Users => 3,
            ListKind::Content => 2,
        }
    }
}

/// Most fields an entry has (LIST_USERS).
const MAX_ARITY: usize = 3;

/// One entry, borrowed from the reader until the next call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRef<'a> {
    fields: [&'a str; MAX_ARITY],
    arity: usize,
}

impl<'a> EntryRef<'a> {
    /// `[name, ip, port]` for LIST_USERS, `[file, description]` for
    /// LIST_CONTENT, as the server sent them.
    pub fn fields(&self) -> &[&'a str] {
        &self.fields[..self.arity]
    }
}

/// Reads one listing reply from a buffered reader; see the module doc.
///
/// Over a socket, wrap it in a `tokio::io::BufReader` first.
///
/// ```
/// use peerdex_protocol::listing::{ListKind, ListingReader};
/// use peerdex_protocol::{wire::ReplyError, Outcome};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let reply: &[u8] = b"0\x001\x00alice\x0010.0.0.1\x008080\x00";
/// let mut list = ListingReader::start(reply, ListKind::Users).await?;
/// assert_eq!((list.outcome(), list.count()), (Outcome::Ok, 1));
/// while let Some(entry) = list.next_entry().await? {
///     assert_eq!(entry.fields(), ["alice", "10.0.0.1", "8080"]);
/// }
/// # Ok::<(), ReplyError>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct ListingReader<R> {
    /// The reply's source; after the last entry it holds whatever follows.
    reader: R,
    kind: ListKind,
    outcome: Outcome,
    /// COUNT as sent (0 after a non-zero code).
    count: u64,
    /// Entries not read yet.
    remaining: u64,
    /// Bytes of the entry last returned straight from the reader's buffer:
    /// consumed only on the next call, because the entry borrowed them.
    pending: usize,
    /// An entry that arrived split across reads, each field followed by its
    /// NUL. Fixed size: one entry can never need more, so it is never
    /// reallocated, and an over-long field is never buffered.
    scratch: [u8; MAX_ENTRY_LEN],
    /// Where each field of the current entry ends (at its NUL), from the
    /// scan that found the entry: splitting then needs no second search.
    ends: [usize; MAX_ARITY],
}

/// The longest entry with its NULs.
const MAX_ENTRY_LEN: usize = MAX_ARITY * (MAX_FIELD_LEN + 1);

impl<R: AsyncBufRead + Unpin> ListingReader<R> {
    /// Reads the code and, after code 0, the count. A non-zero code is not an
    /// error: [`Self::outcome`] says which, and nothing more is read (some
    /// servers send a count even after an error).
    pub async fn start(reader: R, kind: ListKind) -> Result<Self, ReplyError> {
        let mut list = ListingReader {
            reader,
            kind,
            outcome: Outcome::Fail,
            count: 0,
            remaining: 0,
            pending: 0,
            scratch: [0; MAX_ENTRY_LEN],
            ends: [0; MAX_ARITY],
        };
        let op = kind.op();
        let code = list.read_text_field().await?;
        list.outcome = code
            .trim()
            .parse::<u8>()
            .ok()
            .and_then(|code| op.outcome(code))
            .ok_or_else(|| ReplyError::UnknownCode(code.to_string(), op))?;
        if list.outcome == Outcome::Ok {
            // Parsed as `usize` like `read_reply`, so both accept the same counts.
            let count: usize = list
                .read_text_field()
                .await?
                .trim()
                .parse()
                .map_err(|_| ReplyError::Malformed("count is not a number"))?;
            list.count = count as u64;
            list.remaining = list.count;
        }
        Ok(list)
    }

    /// The reply's outcome; entries follow only after [`Outcome::Ok`].
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }

    /// COUNT as the server sent it (0 after a non-zero code).
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The next entry, or `None` after the COUNT-th (at once after a
    /// non-zero code). After an error the reply is unusable: stop reading.
    ///
    /// An entry that lies whole in the reader's buffer (nearly all of them)
    /// is returned in place, without a copy; one split across reads is
    /// gathered in a fixed buffer first.
    pub async fn next_entry(&mut self) -> Result<Option<EntryRef<'_>>, ReplyError> {
        self.consume_pending();
        if self.remaining == 0 {
            return Ok(None);
        }
        let arity = self.kind.arity();
        // Two looks at the buffer: returning a borrow from the first one would
        // keep the reader borrowed on the fallback path too. The second is
        // immediate, since nothing was consumed in between.
        let buffered = self.reader.fill_buf().await.map_err(CodecError::Io)?;
        let ends = &mut self.ends[..arity];
        if let Some(len) = whole_entry(buffered, ends)? {
            let buffered = self.reader.fill_buf().await.map_err(CodecError::Io)?;
            let Some(bytes) = buffered.get(..len) else {
                return Err(ReplyError::Malformed("buffered reply bytes vanished"));
            };
            self.pending = len;
            self.remaining -= 1;
            return split_entry(bytes, ends).map(Some);
        }
        let mut len = 0;
        for end in ends.iter_mut() {
            // `len + MAX_FIELD_LEN < MAX_ENTRY_LEN` for every field of an entry.
            let field = &mut self.scratch[len..len + MAX_FIELD_LEN + 1];
            let field_len = read_field(&mut self.reader, &mut field[..MAX_FIELD_LEN]).await?;
            field[field_len] = 0;
            *end = len + field_len;
            len += field_len + 1;
        }
        self.remaining -= 1;
        split_entry(&self.scratch[..len], ends).map(Some)
    }

    /// The underlying reader, positioned right after what was read: after
    /// the last entry, the bytes that followed the reply (a correct server
    /// sends none and closes).
    pub fn into_inner(mut self) -> R {
        self.consume_pending();
        self.reader
    }

    /// Releases the bytes of the entry returned last from the buffer.
    fn consume_pending(&mut self) {
        if self.pending > 0 {
            self.reader.consume(self.pending);
            self.pending = 0;
        }
    }

    /// Reads one field into the start of `scratch` and returns it as text.
    async fn read_text_field(&mut self) -> Result<&str, ReplyError> {
        let len = read_field(&mut self.reader, &mut self.scratch[..MAX_FIELD_LEN]).await?;
        text(&self.scratch[..len])
    }
}

/// The length, NULs included, of the entry of `ends.len()` fields at the
/// start of `buffered` (with where each field ends in `ends`), or `None` if
/// it does not lie there whole. A field that already shows more than
/// [`MAX_FIELD_LEN`] bytes is an error.
fn whole_entry(buffered: &[u8], ends: &mut [usize]) -> Result<Option<usize>, ReplyError> {
    let mut start = 0;
    for end in ends.iter_mut() {
        let rest = buffered.get(start..).unwrap_or_default();
        let window = &rest[..rest.len().min(MAX_FIELD_LEN + 1)];
        match window.iter().position(|&b| b == 0) {
            Some(nul) => {
                *end = start + nul;
                start += nul + 1;
            }
            None if rest.len() > MAX_FIELD_LEN => return Err(too_long()),
            None => return Ok(None),
        }
    }
    Ok(Some(start))
}

/// Splits an entry of NUL-terminated fields ending at `ends`. UTF-8 is
/// checked once for the whole entry: NUL is ASCII, so no character can
/// straddle a field boundary, and the entry is valid exactly when each field
/// is (so every `end` is a character boundary).
fn split_entry<'a>(bytes: &'a [u8], ends: &[usize]) -> Result<EntryRef<'a>, ReplyError> {
    let text = text(bytes)?;
    let mut fields = [""; MAX_ARITY];
    let mut begin = 0;
    for (slot, &end) in fields.iter_mut().zip(ends) {
        let Some(field) = text.get(begin..end) else {
            return Err(ReplyError::Malformed("entry field out of bounds"));
        };
        *slot = field;
        begin = end + 1;
    }
    Ok(EntryRef {
        fields,
        arity: ends.len(),
    })
}

/// Reads one NUL-terminated field into `dst` (which holds exactly
/// [`MAX_FIELD_LEN`] bytes) and returns its length, consuming the NUL.
/// Stops at the first byte beyond the limit: an over-long field is an error
/// and is never buffered. A close before any byte of the field is
/// [`ReplyError::Closed`]; inside it, [`CodecError::Truncated`], as the field
/// codec reports them.
async fn read_field<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    dst: &mut [u8],
) -> Result<usize, ReplyError> {
    let mut len = 0;
    loop {
        let buf = reader.fill_buf().await.map_err(CodecError::Io)?;
        if buf.is_empty() {
            return Err(if len == 0 {
                ReplyError::Closed
            } else {
                ReplyError::Codec(CodecError::Truncated)
            });
        }
        let (take, done) = match buf.iter().position(|&b| b == 0) {
            Some(nul) => (nul, true),
            None => (buf.len(), false),
        };
        let Some(room) = dst.get_mut(len..len + take) else {
            return Err(too_long());
        };
        room.copy_from_slice(&buf[..take]);
        len += take;
        reader.consume(if done { take + 1 } else { take });
        if done {
            return Ok(len);
        }
    }
}

fn too_long() -> ReplyError {
    ReplyError::Malformed("field longer than 255 bytes")
}

fn text(field: &[u8]) -> Result<&str, ReplyError> {
    std::str::from_utf8(field).map_err(|_| ReplyError::Malformed("field is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::BytesMut;
    use proptest::prelude::*;
    use tokio::io::{AsyncRead, AsyncReadExt, BufReader, ReadBuf};

    use super::*;
    use crate::reply::{put_code, put_content_entry, put_count, put_user_entry, Reply};
    use crate::wire::{field_reader, read_reply};

    /// Hands out its bytes in chunks of the given sizes (cycled), like a
    /// socket that delivers a reply in arbitrary segments.
    struct Chunked {
        bytes: Vec<u8>,
        at: usize,
        sizes: Vec<usize>,
        turn: usize,
    }

    impl AsyncRead for Chunked {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let size = self.sizes[self.turn % self.sizes.len()].max(1);
            self.turn += 1;
            let end = (self.at + size.min(buf.remaining())).min(self.bytes.len());
            buf.put_slice(&self.bytes[self.at..end]);
            self.at = end;
            Poll::Ready(Ok(()))
        }
    }

    fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
            .block_on(future)
    }

    /// What a reply read with [`ListingReader`] comes to: the outcome, the
    /// entries as owned fields, and the bytes left after the reply.
    type Read = (Outcome, Vec<Vec<String>>, Vec<u8>);

    async fn listing<R: AsyncBufRead + Unpin>(
        reader: R,
        kind: ListKind,
    ) -> Result<Read, ReplyError> {
        let mut list = ListingReader::start(reader, kind).await?;
        let mut entries = Vec::new();
        while let Some(entry) = list.next_entry().await? {
            entries.push(entry.fields().iter().map(|f| f.to_string()).collect());
        }
        assert_eq!(entries.len() as u64, list.count());
        let outcome = list.outcome();
        let mut rest = Vec::new();
        list.into_inner()
            .read_to_end(&mut rest)
            .await
            .map_err(CodecError::Io)?;
        Ok((outcome, entries, rest))
    }

    /// Reads `bytes` delivered in chunks of `sizes` through a buffer of
    /// `capacity` bytes.
    fn read_chunked(
        bytes: &[u8],
        kind: ListKind,
        sizes: Vec<usize>,
        capacity: usize,
    ) -> Result<Read, ReplyError> {
        let source = Chunked {
            bytes: bytes.to_vec(),
            at: 0,
            sizes,
            turn: 0,
        };
        block_on(listing(
            BufReader::with_capacity(capacity.max(1), source),
            kind,
        ))
    }

    fn read_whole(bytes: &[u8], kind: ListKind) -> Result<Read, ReplyError> {
        block_on(listing(bytes, kind))
    }

    /// `read_reply`'s entries as the same field lists.
    fn protocol(bytes: &[u8], kind: ListKind) -> Result<(Outcome, Vec<Vec<String>>), ReplyError> {
        let reply = block_on(read_reply(&mut field_reader(bytes), kind.op()))?;
        let entries = match &reply {
            Reply::Users(users) => users
                .iter()
                .map(|u| vec![u.name.clone(), u.ip.clone(), u.port.clone()])
                .collect(),
            Reply::Content(files) => files
                .iter()
                .map(|c| vec![c.file.clone(), c.description.clone()])
                .collect(),
            _ => Vec::new(),
        };
        Ok((reply.outcome(), entries))
    }

    /// Whatever the bytes, both readers accept or reject them alike, and
    /// agree on what they accept.
    fn agree(
        read: Result<Read, ReplyError>,
        whole: Result<(Outcome, Vec<Vec<String>>), ReplyError>,
    ) -> Result<(), TestCaseError> {
        match (read, whole) {
            (Ok((outcome, entries, _)), Ok(expected)) => {
                prop_assert_eq!((outcome, entries), expected)
            }
            (Err(_), Err(_)) => {}
            (read, whole) => prop_assert!(false, "listing {:?}, read_reply {:?}", read, whole),
        }
        Ok(())
    }

    fn users_reply(names: &[String]) -> BytesMut {
        let mut b = BytesMut::new();
        put_code(&mut b, 0);
        put_count(&mut b, names.len() as u64);
        for (i, name) in names.iter().enumerate() {
            let ip = if i % 2 == 0 {
                IpAddr::V4(Ipv4Addr::new(10, 0, (i / 256) as u8, (i % 256) as u8))
            } else {
                IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, i as u16))
            };
            put_user_entry(&mut b, name, ip, (1000 + i) as u16).expect("valid entry");
        }
        b
    }

    fn content_reply(entries: &[(String, String)]) -> BytesMut {
        let mut b = BytesMut::new();
        put_code(&mut b, 0);
        put_count(&mut b, entries.len() as u64);
        for (file, description) in entries {
            put_content_entry(&mut b, file, description).expect("valid entry");
        }
        b
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("user-{i}-ü")).collect()
    }

    #[test]
    fn users_agree_with_read_reply() {
        let bytes = users_reply(&names(300));
        let (outcome, expected) = protocol(&bytes, ListKind::Users).unwrap();
        assert_eq!(outcome, Outcome::Ok);
        assert_eq!(expected.len(), 300);
        for (sizes, capacity) in [(vec![1], 1), (vec![3, 7], 5), (vec![4096], 64 * 1024)] {
            let read = read_chunked(&bytes, ListKind::Users, sizes, capacity).unwrap();
            assert_eq!(read, (Outcome::Ok, expected.clone(), Vec::new()));
        }
    }

    #[test]
    fn content_agrees_with_read_reply() {
        let entries = vec![
            ("a.txt".to_string(), "a file with spaces".to_string()),
            ("b".to_string(), String::new()),
            ("x".repeat(255), "y".repeat(255)),
        ];
        let bytes = content_reply(&entries);
        let (_, expected) = protocol(&bytes, ListKind::Content).unwrap();
        let read = read_chunked(&bytes, ListKind::Content, vec![2], 3).unwrap();
        assert_eq!(read, (Outcome::Ok, expected, Vec::new()));
    }

    #[test]
    fn empty_listing_and_error_codes() {
        let read = read_whole(b"0\x000\x00", ListKind::Users).unwrap();
        assert_eq!(read, (Outcome::Ok, Vec::new(), Vec::new()));
        // After a non-zero code nothing more is read, as in read_reply.
        let read = read_whole(b"2\x005\x00", ListKind::Users).unwrap();
        assert_eq!(
            read,
            (Outcome::UserNotConnected, Vec::new(), b"5\0".to_vec())
        );
        let read = read_whole(b"3\0", ListKind::Content).unwrap();
        assert_eq!(read.0, Outcome::RemoteUserDoesNotExist);
    }

    #[test]
    fn bytes_after_the_last_entry_are_left_to_the_caller() {
        let mut bytes = users_reply(&names(2));
        bytes.extend_from_slice(b"junk\0");
        let read = read_whole(&bytes, ListKind::Users).unwrap();
        assert_eq!(read.1.len(), 2);
        assert_eq!(read.2, b"junk\0");
    }

    #[test]
    fn malformed_replies_are_errors() {
        let cases: [(&[u8], &str); 6] = [
            (b"9\0", "code not in the table"),
            (b"zero\0", "code not a number"),
            (b"0\0x\0", "count not a number"),
            (b"0\x00-1\x00", "negative count"),
            (b"0\x001\x00\xff\xfe\x001.2.3.4\x0080\x00", "not UTF-8"),
            (b"", "empty"),
        ];
        for (bytes, why) in cases {
            assert!(read_whole(bytes, ListKind::Users).is_err(), "{why}");
            assert!(protocol(bytes, ListKind::Users).is_err(), "{why}");
        }
        assert!(matches!(
            read_whole(b"9\0", ListKind::Users),
            Err(ReplyError::UnknownCode(code, OpKind::ListUsers)) if code == "9"
        ));
    }

    #[test]
    fn over_long_field_is_an_error_in_any_chunking() {
        for at in [0, 1, 2] {
            let mut fields: Vec<Vec<u8>> = vec![b"n".to_vec(), b"1.2.3.4".to_vec(), b"80".to_vec()];
            fields[at] = vec![b'a'; 256];
            let mut bytes = b"0\x001\x00".to_vec();
            for field in fields {
                bytes.extend(field);
                bytes.push(0);
            }
            for (size, capacity) in [(1, 1), (10, 7), (1000, 4096)] {
                let err = read_chunked(&bytes, ListKind::Users, vec![size], capacity).unwrap_err();
                assert!(matches!(err, ReplyError::Malformed(_)), "{err:?}");
            }
            assert!(protocol(&bytes, ListKind::Users).is_err());
        }
        // An over-long code or count, too.
        let mut long_code = vec![b'0'; 256];
        long_code.push(0);
        assert!(read_whole(&long_code, ListKind::Users).is_err());
    }

    #[test]
    fn truncation_is_an_error_never_a_short_list() {
        let bytes = users_reply(&names(3));
        for cut in 0..bytes.len() {
            let result = read_whole(&bytes[..cut], ListKind::Users);
            assert!(
                matches!(
                    result,
                    Err(ReplyError::Closed | ReplyError::Codec(CodecError::Truncated))
                ),
                "cut at {cut}: {result:?}"
            );
        }
    }

    fn field_text() -> impl Strategy<Value = String> {
        // Short names with multi-byte characters, up to the 255-byte limit.
        prop_oneof!["[a-z0-9 ._ü€-]{0,20}", "[a-z]{250,255}",]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn any_chunking_agrees_with_read_reply(
            users in proptest::collection::vec(field_text(), 0..40),
            files in proptest::collection::vec((field_text(), field_text()), 0..40),
            sizes in proptest::collection::vec(1usize..300, 1..8),
            capacity in 1usize..600,
        ) {
            let bytes = users_reply(&users);
            let (outcome, expected) = protocol(&bytes, ListKind::Users).unwrap();
            let read = read_chunked(&bytes, ListKind::Users, sizes.clone(), capacity).unwrap();
            prop_assert_eq!(read, (outcome, expected, Vec::new()));

            let bytes = content_reply(&files);
            let (outcome, expected) = protocol(&bytes, ListKind::Content).unwrap();
            let read = read_chunked(&bytes, ListKind::Content, sizes, capacity).unwrap();
            prop_assert_eq!(read, (outcome, expected, Vec::new()));
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_agree_on_success(
            bytes in proptest::collection::vec(
                prop_oneof![Just(0u8), Just(b'0'), Just(b'1'), Just(b'2'), any::<u8>()],
                0..600,
            ),
            users in any::<bool>(),
            size in 1usize..50,
            capacity in 1usize..100,
        ) {
            let kind = if users { ListKind::Users } else { ListKind::Content };
            let read = read_chunked(&bytes, kind, vec![size], capacity);
            agree(read, protocol(&bytes, kind))?;
        }

        #[test]
        fn corrupted_replies_agree_with_read_reply(
            users in proptest::collection::vec(field_text(), 1..10),
            at in any::<prop::sample::Index>(),
            byte in prop_oneof![Just(0u8), Just(0xffu8), Just(b'9'), any::<u8>()],
        ) {
            let mut bytes = users_reply(&users).to_vec();
            let at = at.index(bytes.len());
            bytes[at] = byte;
            let read = read_chunked(&bytes, ListKind::Users, vec![7], 13);
            agree(read, protocol(&bytes, ListKind::Users))?;
        }

        #[test]
        fn truncated_replies_are_errors(
            users in proptest::collection::vec(field_text(), 1..20),
            cut in any::<prop::sample::Index>(),
            size in 1usize..64,
        ) {
            let bytes = users_reply(&users);
            let cut = cut.index(bytes.len());
            let read = read_chunked(&bytes[..cut], ListKind::Users, vec![size], 16);
            prop_assert!(read.is_err(), "cut at {} of {}: {:?}", cut, bytes.len(), read);
        }
    }
}
