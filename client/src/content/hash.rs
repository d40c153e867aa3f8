//! BLAKE3 split into pieces.
//!
//! A file is cut into pieces of [`PIECE_SIZE`] bytes (a power-of-two
//! multiple of BLAKE3's 1 KiB chunk, so each piece is a complete subtree of
//! BLAKE3's tree). The chaining value (CV) of each piece merges, following
//! BLAKE3's own tree shape, into exactly `blake3::hash(file)`: a downloader
//! that knows the root can check a piece list from anyone, then check every
//! piece on its own.
//!
//! Convention: a one-piece file (the empty file included) has no non-root
//! CV; its single piece digest is the root itself.

use std::io::{self, Read};

use blake3::hazmat::{merge_subtrees_non_root, merge_subtrees_root, HasherExt, Mode};

use super::pieces::Manifest;
use super::Digest;

/// The piece size of files this client publishes: 1 MiB.
pub const PIECE_SIZE: u64 = 1 << 20;

/// Read buffer of [`hash_reader`]: big enough for BLAKE3's SIMD paths.
const READ_BUFFER: usize = 256 * 1024;

/// The digest piece `index` must have: its non-root CV, or the root hash
/// when the file has a single piece.
pub fn piece_digest(data: &[u8], index: u64, piece_size: u64, count: u64) -> Digest {
    if count == 1 {
        return *blake3::hash(data).as_bytes();
    }
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(index * piece_size);
    hasher.update(data);
    hasher.finalize_non_root()
}

/// Merges piece digests into the root, splitting a run of n > 1 pieces at
/// the largest power of two below n, as BLAKE3 does. `digests` is never
/// empty (every file has at least one piece).
pub fn merge_root(digests: &[Digest]) -> Digest {
    match digests {
        [] => *blake3::hash(b"").as_bytes(),
        [only] => *only,
        _ => {
            let split = left_len(digests.len());
            let left = merge_subtree(&digests[..split]);
            let right = merge_subtree(&digests[split..]);
            *merge_subtrees_root(&left, &right, Mode::Hash).as_bytes()
        }
    }
}

/// The CV of a non-root subtree of pieces.
fn merge_subtree(digests: &[Digest]) -> Digest {
    if digests.len() == 1 {
        return digests[0];
    }
    let split = left_len(digests.len());
    merge_subtrees_non_root(
        &merge_subtree(&digests[..split]),
        &merge_subtree(&digests[split..]),
        Mode::Hash,
    )
}

/// The largest power of two strictly below `n` (n > 1).
fn left_len(n: usize) -> usize {
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// Hashes a whole stream into its manifest with fixed memory (one read
/// buffer, one hasher, 32 bytes per piece). `progress` gets the bytes read
/// so far after each read.
pub fn hash_reader(
    mut reader: impl Read,
    piece_size: u64,
    mut progress: impl FnMut(u64),
) -> io::Result<Manifest> {
    assert!(
        piece_size.is_power_of_two() && piece_size >= 1024,
        "piece size must be a power-of-two multiple of 1 KiB"
    );
    let mut buf = vec![0u8; READ_BUFFER];
    let mut digests = Vec::new();
    let mut hasher = blake3::Hasher::new();
    let mut in_piece = 0u64;
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        let mut data = &buf[..n];
        while !data.is_empty() {
            if in_piece == piece_size {
                // More data: the finished piece is not the last one, so its
                // non-root CV is what the tree needs.
                digests.push(hasher.finalize_non_root());
                hasher = blake3::Hasher::new();
                hasher.set_input_offset(digests.len() as u64 * piece_size);
                in_piece = 0;
            }
            let take = data.len().min((piece_size - in_piece) as usize);
            hasher.update(&data[..take]);
            in_piece += take as u64;
            data = &data[take..];
        }
        total += n as u64;
        progress(total);
    }
    let root = if digests.is_empty() {
        let root = *hasher.finalize().as_bytes();
        digests.push(root);
        root
    } else {
        digests.push(hasher.finalize_non_root());
        merge_root(&digests)
    };
    Ok(Manifest {
        size: total,
        piece_size,
        root,
        pieces: digests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize) -> Vec<u8> {
        (0..len as u64)
            .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
            .collect()
    }

    /// Pieces hashed one by one with `piece_digest`, merged: must equal
    /// `blake3::hash` of the whole, and `hash_reader` must agree.
    fn check(len: usize, piece_size: u64) {
        let bytes = data(len);
        let count = peerdex_protocol::peer_ext::piece_count(len as u64, piece_size);
        let digests: Vec<Digest> = (0..count)
            .map(|i| {
                let start = (i * piece_size) as usize;
                let end = (start + piece_size as usize).min(len);
                piece_digest(&bytes[start..end], i, piece_size, count)
            })
            .collect();
        let expected = *blake3::hash(&bytes).as_bytes();
        assert_eq!(
            merge_root(&digests),
            expected,
            "len {len}, piece {piece_size}"
        );
        let manifest = hash_reader(&bytes[..], piece_size, |_| {}).unwrap();
        assert_eq!(manifest.root, expected, "hash_reader len {len}");
        assert_eq!(manifest.pieces, digests, "hash_reader pieces len {len}");
        assert_eq!(manifest.size, len as u64);
        manifest.verify().unwrap();
    }

    #[test]
    fn small_pieces_merge_into_the_standard_hash() {
        // 4 KiB pieces: every shape of the tree, cheaply.
        let p = 4096usize;
        for len in [
            0,
            1,
            1023,
            1024,
            p - 1,
            p,
            p + 1,
            2 * p,
            3 * p + 5,
            5 * p,
            7 * p - 1,
            8 * p,
            13 * p + 1000,
        ] {
            check(len, p as u64);
        }
    }

    #[test]
    fn one_kib_pieces_are_single_chunks() {
        for len in [1025, 3000, 8192, 10_000] {
            check(len, 1024);
        }
    }

    #[test]
    fn real_piece_size_merges_into_the_standard_hash() {
        let p = PIECE_SIZE as usize;
        for len in [0, 1, 1023, 1024, p - 1, p, p + 1, 3 * p + 5, 8 * p] {
            check(len, PIECE_SIZE);
        }
    }

    #[test]
    fn left_len_is_the_largest_power_of_two_below() {
        assert_eq!(left_len(2), 1);
        assert_eq!(left_len(3), 2);
        assert_eq!(left_len(4), 2);
        assert_eq!(left_len(5), 4);
        assert_eq!(left_len(9), 8);
    }
}
