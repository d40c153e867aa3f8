//! A file's manifest: size, piece size, root hash and piece digests, and
//! the checks a downloader makes before trusting any of it.

use peerdex_protocol::peer_ext::{piece_count, valid_piece_size, HashesHeader, MAX_PIECES};
use thiserror::Error;

use super::hash::{merge_root, piece_digest};
use super::Digest;

/// What identifies a file's content and lets each piece be checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// File size in bytes.
    pub size: u64,
    /// Piece size in bytes (power-of-two multiple of 1 KiB).
    pub piece_size: u64,
    /// `blake3::hash` of the whole file.
    pub root: Digest,
    /// One digest per piece (see [`super::hash`] for the one-piece case).
    pub pieces: Vec<Digest>,
}

/// Why a manifest is not trusted.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("unsupported piece size {0}")]
    PieceSize(u64),
    #[error("{got} pieces for a size that needs {expected}")]
    Count { got: u64, expected: u64 },
    #[error("the piece list does not merge into the announced root hash")]
    Root,
}

impl Manifest {
    /// Number of pieces.
    pub fn count(&self) -> u64 {
        self.pieces.len() as u64
    }

    /// The header of a GET_HASHES reply announcing this manifest (the
    /// piece digests follow it).
    pub fn hashes_header(&self) -> HashesHeader {
        HashesHeader {
            size: self.size,
            piece_size: self.piece_size,
            root: self.root,
            count: self.count(),
        }
    }

    /// Checks that the piece list is consistent with size and root: after
    /// this, a piece matching its digest is a piece of the file whose hash
    /// is `root`, whoever sent the list.
    pub fn verify(&self) -> Result<(), ManifestError> {
        if !valid_piece_size(self.piece_size) {
            return Err(ManifestError::PieceSize(self.piece_size));
        }
        let expected = piece_count(self.size, self.piece_size);
        if self.count() != expected || expected > MAX_PIECES {
            return Err(ManifestError::Count {
                got: self.count(),
                expected,
            });
        }
        if merge_root(&self.pieces) != self.root {
            return Err(ManifestError::Root);
        }
        Ok(())
    }

    /// Byte offset and length of piece `index`.
    pub fn piece_range(&self, index: u64) -> (u64, u64) {
        let offset = index * self.piece_size;
        (
            offset,
            self.piece_size.min(self.size.saturating_sub(offset)),
        )
    }

    /// Whether `data` is piece `index` of this file.
    pub fn piece_matches(&self, index: u64, data: &[u8]) -> bool {
        let Some(expected) = self.pieces.get(index as usize) else {
            return false;
        };
        data.len() as u64 == self.piece_range(index).1
            && piece_digest(data, index, self.piece_size, self.count()) == *expected
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::hash::hash_reader;

    fn manifest(len: usize) -> (Vec<u8>, Manifest) {
        let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let manifest = hash_reader(&bytes[..], 1024, |_| {}).unwrap();
        (bytes, manifest)
    }

    #[test]
    fn a_tampered_piece_list_is_rejected() {
        let (_, good) = manifest(5000);
        good.verify().unwrap();
        let mut bad = good.clone();
        bad.pieces[2][0] ^= 1;
        assert_eq!(bad.verify(), Err(ManifestError::Root));
        let mut bad = good.clone();
        bad.pieces.pop();
        assert!(matches!(bad.verify(), Err(ManifestError::Count { .. })));
        let mut bad = good.clone();
        bad.pieces.swap(0, 1);
        assert_eq!(bad.verify(), Err(ManifestError::Root));
        let mut bad = good.clone();
        bad.size += 2000;
        assert!(bad.verify().is_err());
        let mut bad = good;
        bad.piece_size = 1000;
        assert_eq!(bad.verify(), Err(ManifestError::PieceSize(1000)));
    }

    #[test]
    fn pieces_are_checked_one_by_one() {
        let (bytes, m) = manifest(5000);
        assert_eq!(m.piece_range(4), (4096, 904));
        assert!(m.piece_matches(1, &bytes[1024..2048]));
        assert!(!m.piece_matches(1, &bytes[0..1024]));
        assert!(m.piece_matches(4, &bytes[4096..]));
        assert!(!m.piece_matches(4, &bytes[4096..4999]));
        assert!(!m.piece_matches(9, &bytes[..1]));
        let (small, m) = manifest(10);
        assert!(m.piece_matches(0, &small));
        assert_eq!(m.root, *blake3::hash(&small).as_bytes());
    }
}
