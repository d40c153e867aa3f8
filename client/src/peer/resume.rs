//! The on-disk state of a download in progress: `<local>.part` (the file
//! being filled, preallocated to its size, pieces written at their offsets)
//! and `<local>.part.state` (which pieces are verified and durable).
//!
//! State file (text, written as temp file + rename, after the `.part` data
//! it vouches for has been fsync'd):
//!
//! ```text
//! peerdex-part 1
//! root <64 hex>
//! size <bytes>
//! piece <bytes>
//! done <hex of the bitmap: bit i of byte i/8 (LSB first) = piece i>
//! check <64 hex: blake3 of the lines above, newlines included>
//! ```
//!
//! A state that does not parse, fails its check, or names another root,
//! size or piece size means "start over". Pieces it marks done are hashed
//! again from `.part` on resume, so a `.part` damaged behind our back only
//! costs those pieces.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use peerdex_protocol::peer_ext::{from_hex, to_hex};

use super::direct_io::DirectFile;
use crate::content::pieces::Manifest;

/// First line of a state file.
const MAGIC: &str = "peerdex-part 1";

/// Which pieces are done: one bit per piece.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitmap {
    /// Bit i of byte i/8, least significant first.
    bytes: Vec<u8>,
    /// Number of pieces.
    len: u64,
}

impl Bitmap {
    /// All pieces missing.
    pub fn new(len: u64) -> Bitmap {
        Bitmap {
            bytes: vec![0; len.div_ceil(8) as usize],
            len,
        }
    }

    pub fn get(&self, i: u64) -> bool {
        i < self.len && self.bytes[(i / 8) as usize] & (1 << (i % 8)) != 0
    }

    pub fn set(&mut self, i: u64) {
        if i < self.len {
            self.bytes[(i / 8) as usize] |= 1 << (i % 8);
        }
    }

    pub fn clear(&mut self, i: u64) {
        if i < self.len {
            self.bytes[(i / 8) as usize] &= !(1 << (i % 8));
        }
    }

    /// Number of pieces set.
    pub fn count(&self) -> u64 {
        self.bytes.iter().map(|b| u64::from(b.count_ones())).sum()
    }
}

/// What a state file records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub root: [u8; 32],
    pub size: u64,
    pub piece_size: u64,
    pub done: Bitmap,
}

impl State {
    /// The state file's text.
    pub fn encode(&self) -> String {
        let mut body = format!(
            "{MAGIC}\nroot {}\nsize {}\npiece {}\ndone ",
            to_hex(&self.root),
            self.size,
            self.piece_size
        );
        for byte in &self.done.bytes {
            body.push_str(&format!("{byte:02x}"));
        }
        body.push('\n');
        let check = to_hex(blake3::hash(body.as_bytes()).as_bytes());
        body.push_str(&format!("check {check}\n"));
        body
    }

    /// Parses a state file for a download of `pieces` pieces; `None` when
    /// anything is off.
    pub fn decode(text: &str) -> Option<State> {
        let (body, check_line) = text.strip_suffix('\n')?.rsplit_once('\n')?;
        let body = format!("{body}\n");
        let check = from_hex(check_line.strip_prefix("check ")?)?;
        if *blake3::hash(body.as_bytes()).as_bytes() != check {
            return None;
        }
        let mut lines = body.lines();
        if lines.next()? != MAGIC {
            return None;
        }
        let mut field = |name: &str| lines.next()?.strip_prefix(name)?.strip_prefix(' ');
        let root = from_hex(field("root")?)?;
        let size: u64 = field("size")?.parse().ok()?;
        let piece_size: u64 = field("piece")?.parse().ok()?;
        let done_hex = field("done")?;
        if !peerdex_protocol::peer_ext::valid_piece_size(piece_size) {
            return None;
        }
        let pieces = peerdex_protocol::peer_ext::piece_count(size, piece_size);
        if done_hex.len() as u64 != pieces.div_ceil(8) * 2 {
            return None;
        }
        let mut done = Bitmap::new(pieces);
        for (i, pair) in done_hex.as_bytes().chunks_exact(2).enumerate() {
            let text = std::str::from_utf8(pair).ok()?;
            done.bytes[i] = u8::from_str_radix(text, 16).ok()?;
        }
        Some(State {
            root,
            size,
            piece_size,
            done,
        })
    }

    fn matches(&self, manifest: &Manifest) -> bool {
        self.root == manifest.root
            && self.size == manifest.size
            && self.piece_size == manifest.piece_size
    }
}

/// `<local>.part`.
pub fn part_path(local: &Path) -> PathBuf {
    let mut name = local.as_os_str().to_owned();
    name.push(".part");
    PathBuf::from(name)
}

/// `<local>.part.state`.
pub fn state_path(local: &Path) -> PathBuf {
    let mut name = local.as_os_str().to_owned();
    name.push(".part.state");
    PathBuf::from(name)
}

/// The `.part` file and its state, open for a download.
#[derive(Debug)]
pub struct PartFile {
    /// The `.part` file, preallocated to its size. Pieces are written
    /// around the page cache (`O_DIRECT`) where the filesystem allows it:
    /// the kernel's copy into the cache is most of the downloader's CPU.
    file: DirectFile,
    /// Where it is.
    part: PathBuf,
    /// Where its state is.
    state: PathBuf,
    /// Root, size, piece size of the download.
    template: State,
}

impl PartFile {
    /// Opens the `.part` of `local` for `manifest`: resumes when its state
    /// matches (pieces marked done that still hash right are kept), starts
    /// over otherwise. Returns the part file and the pieces already done.
    /// Blocking.
    pub fn open(local: &Path, manifest: &Manifest) -> io::Result<(PartFile, Bitmap)> {
        let part = part_path(local);
        let state = state_path(local);
        let template = State {
            root: manifest.root,
            size: manifest.size,
            piece_size: manifest.piece_size,
            done: Bitmap::new(manifest.count()),
        };
        let previous = fs::read_to_string(&state)
            .ok()
            .and_then(|text| State::decode(&text))
            .filter(|s| s.matches(manifest));
        if let Some(previous) = previous {
            if let Ok(file) = OpenOptions::new().read(true).write(true).open(&part) {
                if file.metadata()?.len() == manifest.size {
                    let done = recheck(&file, manifest, previous.done)?;
                    let part_file = PartFile {
                        file: DirectFile::new(file),
                        part,
                        state,
                        template,
                    };
                    return Ok((part_file, done));
                }
            }
        }
        let fresh = || -> io::Result<PartFile> {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&part)?;
            preallocate(&file, manifest.size)?;
            let part_file = PartFile {
                file: DirectFile::new(file),
                part: part.clone(),
                state: state.clone(),
                template,
            };
            part_file.save(&Bitmap::new(manifest.count()))?;
            Ok(part_file)
        };
        match fresh() {
            Ok(part_file) => Ok((part_file, Bitmap::new(manifest.count()))),
            Err(err) => {
                // Nothing worth resuming yet (a full disk, say): leave nothing.
                let _ = fs::remove_file(&part);
                let _ = fs::remove_file(&state);
                Err(err)
            }
        }
    }

    /// Writes piece data at its offset. Data in an
    /// [`AlignedBuf`](super::direct_io::AlignedBuf) at an aligned offset
    /// (every piece of 4 KiB or more: piece sizes are powers of two)
    /// bypasses the page cache, except the unaligned tail of the last
    /// piece; anything else is written buffered. Blocking.
    pub fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_at(data, offset)
    }

    /// Makes the written data durable, then records `done` (pieces written
    /// before this call) atomically. Blocking.
    pub fn checkpoint(&self, done: &Bitmap) -> io::Result<()> {
        self.file.file().sync_data()?;
        self.save(done)
    }

    fn save(&self, done: &Bitmap) -> io::Result<()> {
        let state = State {
            done: done.clone(),
            ..self.template.clone()
        };
        let dir = match self.state.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let mut temp = tempfile::Builder::new()
            .prefix(".peerdex-state-")
            .tempfile_in(dir)?;
        temp.write_all(state.encode().as_bytes())?;
        temp.as_file().sync_data()?;
        temp.persist(&self.state).map_err(|err| err.error)?;
        Ok(())
    }

    /// Completes the download: size check, fsync, rename `.part` onto
    /// `local`, remove the state. Blocking.
    pub fn finish(&self, local: &Path) -> io::Result<()> {
        let file = self.file.file();
        if file.metadata()?.len() != self.template.size {
            return Err(io::Error::other("the .part file has the wrong size"));
        }
        file.sync_all()?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        }
        fs::rename(&self.part, local)?;
        let _ = fs::remove_file(&self.state);
        if let Some(dir) = local.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(dir) = File::open(dir) {
                let _ = dir.sync_all();
            }
        }
        Ok(())
    }
}

/// Reserves the blocks of the file so a full disk fails now, not mid-way
/// (falls back to a sparse `set_len` where reservation is unsupported).
fn preallocate(file: &File, size: u64) -> io::Result<()> {
    file.set_len(size)?;
    #[cfg(target_os = "linux")]
    if size > 0 {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid open descriptor and in-range arguments.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, size as libc::off_t) };
        if rc == libc::ENOSPC {
            return Err(io::Error::from_raw_os_error(rc));
        }
    }
    Ok(())
}

/// Keeps the pieces of `done` whose bytes in `file` still hash right.
fn recheck(file: &File, manifest: &Manifest, mut done: Bitmap) -> io::Result<Bitmap> {
    let mut buf = vec![0u8; manifest.piece_size as usize];
    for i in 0..manifest.count() {
        if !done.get(i) {
            continue;
        }
        let (offset, len) = manifest.piece_range(i);
        let data = &mut buf[..len as usize];
        file.read_exact_at(data, offset)?;
        if !manifest.piece_matches(i, data) {
            done.clear(i);
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::hash::hash_reader;

    fn manifest(bytes: &[u8]) -> Manifest {
        hash_reader(bytes, 1024, |_| {}).unwrap()
    }

    #[test]
    fn state_round_trips_and_rejects_corruption() {
        let mut done = Bitmap::new(11);
        done.set(0);
        done.set(9);
        let state = State {
            root: [3; 32],
            size: 11 * 1024 - 5,
            piece_size: 1024,
            done,
        };
        let text = state.encode();
        assert_eq!(State::decode(&text), Some(state.clone()));
        // Any flipped character fails the check.
        let flipped = text.replacen("done 01", "done 03", 1);
        assert_ne!(flipped, text);
        assert_eq!(State::decode(&flipped), None);
        assert_eq!(State::decode(&text[..text.len() - 3]), None);
        assert_eq!(State::decode(""), None);
        assert_eq!(State::decode("garbage\n"), None);
    }

    /// Pieces written from aligned buffers (direct writes where the test
    /// directory's filesystem has them), the last one with an unaligned
    /// tail, survive a resume and form the file.
    #[test]
    fn aligned_pieces_and_partial_last_piece_resume_and_finish() {
        use crate::peer::direct_io::AlignedBuf;
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().join("out.bin");
        let bytes: Vec<u8> = (0..5 * 4096 + 100u32).map(|i| (i % 251) as u8).collect();
        let m = hash_reader(&bytes[..], 4096, |_| {}).unwrap();
        assert_eq!(m.count(), 6);
        let write = |part: &PartFile, pieces: &[u64]| {
            for &i in pieces {
                let (offset, len) = m.piece_range(i);
                let mut buf = AlignedBuf::zeroed(4096).unwrap();
                buf[..len as usize]
                    .copy_from_slice(&bytes[offset as usize..(offset + len) as usize]);
                part.write_at(&buf[..len as usize], offset).unwrap();
            }
        };
        let (part, _) = PartFile::open(&local, &m).unwrap();
        write(&part, &[5, 1, 3]);
        let mut done = Bitmap::new(m.count());
        for i in [5, 1, 3] {
            done.set(i);
        }
        part.checkpoint(&done).unwrap();
        drop(part);
        let (part, resumed) = PartFile::open(&local, &m).unwrap();
        assert_eq!(resumed, done, "every piece written reads back right");
        write(&part, &[0, 2, 4]);
        part.finish(&local).unwrap();
        assert!(fs::read(&local).unwrap() == bytes);
        assert!(!state_path(&local).exists());
    }

    #[test]
    fn resumes_matching_state_and_starts_over_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().join("out.bin");
        let bytes: Vec<u8> = (0..5000u32).map(|i| (i % 7) as u8).collect();
        let m = manifest(&bytes);
        let (part, done) = PartFile::open(&local, &m).unwrap();
        assert_eq!(done.count(), 0);
        assert_eq!(fs::metadata(part_path(&local)).unwrap().len(), 5000);
        let mut done = Bitmap::new(m.count());
        for i in [0u64, 2, 4] {
            let (offset, len) = m.piece_range(i);
            part.write_at(&bytes[offset as usize..(offset + len) as usize], offset)
                .unwrap();
            done.set(i);
        }
        // Piece 3 is claimed done but its bytes are zeros: rechecked away.
        done.set(3);
        part.checkpoint(&done).unwrap();
        drop(part);
        let (_part, resumed) = PartFile::open(&local, &m).unwrap();
        assert_eq!(
            (0..5).filter(|&i| resumed.get(i)).collect::<Vec<_>>(),
            [0, 2, 4]
        );
        // Another file under the same name: start over.
        let other = manifest(&bytes[..4000]);
        let (_part, fresh) = PartFile::open(&local, &other).unwrap();
        assert_eq!(fresh.count(), 0);
        // A corrupt state: start over.
        let (part, _) = PartFile::open(&local, &m).unwrap();
        part.checkpoint(&done).unwrap();
        fs::write(state_path(&local), "peerdex-part 1\nroot zz\n").unwrap();
        let (_part, fresh) = PartFile::open(&local, &m).unwrap();
        assert_eq!(fresh.count(), 0);
    }
}
