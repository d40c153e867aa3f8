//! Manifests cached by (canonical path, size, mtime).
//!
//! Hashing a multi-GiB file takes seconds; publishing it again, or serving
//! it to the next peer, must not. Entries live in memory and on disk in
//! `<share>/.peerdex/hashes/<blake3 of the path>` (the share dir's hidden
//! state dir, never served nor published), written atomically (temp file +
//! rename). A disk entry that does not parse, or whose pieces do not merge
//! into its root, is ignored and rewritten: the cache can only cost a
//! rehash, never serve a wrong hash.
//!
//! A manifest is only handed out for the size and mtime of the file it is
//! asked about (the caller's `fstat` of the descriptor it serves from): a
//! file changed since it was hashed is hashed again.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::UNIX_EPOCH;

use peerdex_protocol::peer_ext::{from_hex, to_hex};

use super::hash::{hash_reader, PIECE_SIZE};
use super::pieces::Manifest;

/// The hidden state dir inside a share dir.
pub const STATE_DIR: &str = ".peerdex";
/// First line of a disk entry (format version).
const MAGIC: &str = "peerdex-hashes 1";

/// What a manifest was computed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// File size when hashed.
    pub size: u64,
    /// Modification time (ns since the epoch) when hashed.
    pub mtime_ns: u128,
}

impl Stamp {
    /// The stamp of a file's metadata.
    pub fn of(meta: &fs::Metadata) -> Stamp {
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        Stamp {
            size: meta.len(),
            mtime_ns,
        }
    }
}

/// Manifests of one share dir.
#[derive(Debug)]
pub struct HashCache {
    /// `<share>/.peerdex/hashes`.
    dir: PathBuf,
    /// Entries known in this process, by canonical path.
    memory: Mutex<HashMap<PathBuf, (Stamp, Arc<Manifest>)>>,
    /// One hashing at a time: a burst of requests for a stale file hashes
    /// it once, and disk bandwidth is not split between files.
    hashing: Mutex<()>,
}

impl HashCache {
    /// A cache for the share dir `root` (its disk entries under `.peerdex`).
    pub fn for_share(root: &Path) -> HashCache {
        HashCache {
            dir: root.join(STATE_DIR).join("hashes"),
            memory: Mutex::new(HashMap::new()),
            hashing: Mutex::new(()),
        }
    }

    /// The manifest of `file` (open, at canonical `path`) if cached for its
    /// current size and mtime. Blocking (disk).
    pub fn cached(&self, path: &Path, file: &File) -> io::Result<Option<Arc<Manifest>>> {
        let stamp = Stamp::of(&file.metadata()?);
        Ok(self.lookup(path, stamp))
    }

    fn lookup(&self, path: &Path, stamp: Stamp) -> Option<Arc<Manifest>> {
        if let Some((cached, manifest)) = self.memory().get(path) {
            if *cached == stamp {
                return Some(Arc::clone(manifest));
            }
        }
        let manifest = Arc::new(self.read_entry(path, stamp)?);
        self.memory()
            .insert(path.to_path_buf(), (stamp, Arc::clone(&manifest)));
        Some(manifest)
    }

    /// The manifest of `file` (open, at canonical `path`), hashing it when
    /// not cached for its current size and mtime. `progress(done, size)`
    /// is called while hashing. Blocking (reads the whole file).
    pub fn manifest(
        &self,
        path: &Path,
        file: &File,
        mut progress: impl FnMut(u64, u64),
    ) -> io::Result<Arc<Manifest>> {
        let stamp = Stamp::of(&file.metadata()?);
        if let Some(manifest) = self.lookup(path, stamp) {
            return Ok(manifest);
        }
        let _one_at_a_time = self.hashing.lock().unwrap_or_else(PoisonError::into_inner);
        // Hashed by another caller while this one waited?
        if let Some(manifest) = self.lookup(path, stamp) {
            return Ok(manifest);
        }
        // Read through a clone of the descriptor from offset 0: the caller's
        // file position is not ours to move.
        let mut reader = file.try_clone()?;
        reader.seek(SeekFrom::Start(0))?;
        let manifest = hash_reader(reader, PIECE_SIZE, |done| progress(done, stamp.size))?;
        let after = Stamp::of(&file.metadata()?);
        if after != stamp || manifest.size != stamp.size {
            return Err(io::Error::other("the file changed while it was hashed"));
        }
        let manifest = Arc::new(manifest);
        if let Err(err) = self.write_entry(path, stamp, &manifest) {
            tracing::debug!("cannot cache the hashes of {}: {err}", path.display());
        }
        self.memory()
            .insert(path.to_path_buf(), (stamp, Arc::clone(&manifest)));
        Ok(manifest)
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, (Stamp, Arc<Manifest>)>> {
        self.memory.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn entry_path(&self, path: &Path) -> PathBuf {
        let key = blake3::hash(path.as_os_str().as_encoded_bytes());
        self.dir.join(to_hex(key.as_bytes()))
    }

    fn read_entry(&self, path: &Path, stamp: Stamp) -> Option<Manifest> {
        let file = File::open(self.entry_path(path)).ok()?;
        let manifest = parse_entry(BufReader::new(file), path, stamp)?;
        manifest.verify().ok()?;
        Some(manifest)
    }

    fn write_entry(&self, path: &Path, stamp: Stamp, manifest: &Manifest) -> io::Result<()> {
        let entry = self.entry_path(path);
        let Some(dir) = entry.parent() else {
            return Ok(());
        };
        fs::create_dir_all(dir)?;
        let mut temp = tempfile::NamedTempFile::new_in(dir)?;
        {
            let mut out = io::BufWriter::new(temp.as_file_mut());
            writeln!(out, "{MAGIC}")?;
            writeln!(
                out,
                "path {}",
                to_hex(blake3::hash(path.as_os_str().as_encoded_bytes()).as_bytes())
            )?;
            writeln!(out, "size {}", stamp.size)?;
            writeln!(out, "mtime {}", stamp.mtime_ns)?;
            writeln!(out, "piece {}", manifest.piece_size)?;
            writeln!(out, "root {}", to_hex(&manifest.root))?;
            writeln!(out, "count {}", manifest.count())?;
            for piece in &manifest.pieces {
                writeln!(out, "{}", to_hex(piece))?;
            }
            out.flush()?;
        }
        temp.persist(&entry).map_err(|err| err.error)?;
        Ok(())
    }
}

/// Parses a disk entry; `None` unless it is complete and for this exact
/// path and stamp.
fn parse_entry(reader: impl Read, path: &Path, stamp: Stamp) -> Option<Manifest> {
    let mut lines = BufReader::new(reader).lines();
    let mut next = || lines.next()?.ok();
    if next()? != MAGIC {
        return None;
    }
    let mut field = |name: &str| -> Option<String> {
        let line = next()?;
        line.strip_prefix(name)?
            .strip_prefix(' ')
            .map(str::to_string)
    };
    let path_key = to_hex(blake3::hash(path.as_os_str().as_encoded_bytes()).as_bytes());
    if field("path")? != path_key
        || field("size")?.parse::<u64>().ok()? != stamp.size
        || field("mtime")?.parse::<u128>().ok()? != stamp.mtime_ns
    {
        return None;
    }
    let piece_size = field("piece")?.parse().ok()?;
    let root = from_hex(&field("root")?)?;
    let count: u64 = field("count")?.parse().ok()?;
    if count != peerdex_protocol::peer_ext::piece_count(stamp.size, piece_size) {
        return None;
    }
    let mut pieces = Vec::with_capacity(count as usize);
    for _ in 0..count {
        pieces.push(from_hex(&next()?)?);
    }
    Some(Manifest {
        size: stamp.size,
        piece_size,
        root,
        pieces,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_once_then_reads_the_disk_entry() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let path = root.join("f.bin");
        let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        fs::write(&path, &bytes).unwrap();
        let cache = HashCache::for_share(&root);
        let file = File::open(&path).unwrap();
        let mut calls = 0;
        let first = cache.manifest(&path, &file, |_, _| calls += 1).unwrap();
        assert!(calls > 0);
        assert_eq!(first.root, *blake3::hash(&bytes).as_bytes());
        // A new cache (a new process) finds it on disk without hashing.
        let again = HashCache::for_share(&root);
        let mut calls = 0;
        let second = again.manifest(&path, &file, |_, _| calls += 1).unwrap();
        assert_eq!(calls, 0);
        assert_eq!(*first, *second);
        assert!(root.join(".peerdex/hashes").is_dir());
    }

    #[test]
    fn a_changed_file_is_hashed_again() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let path = root.join("f.bin");
        fs::write(&path, b"one").unwrap();
        let cache = HashCache::for_share(&root);
        let first = cache
            .manifest(&path, &File::open(&path).unwrap(), |_, _| {})
            .unwrap();
        fs::write(&path, b"two!").unwrap();
        let file = File::open(&path).unwrap();
        assert!(cache.cached(&path, &file).unwrap().is_none());
        let second = cache.manifest(&path, &file, |_, _| {}).unwrap();
        assert_ne!(first.root, second.root);
        assert_eq!(second.root, *blake3::hash(b"two!").as_bytes());
    }

    #[test]
    fn a_corrupt_disk_entry_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let path = root.join("f.bin");
        fs::write(&path, vec![5u8; 5000]).unwrap();
        let file = File::open(&path).unwrap();
        HashCache::for_share(&root)
            .manifest(&path, &file, |_, _| {})
            .unwrap();
        let entries: Vec<_> = fs::read_dir(root.join(".peerdex/hashes"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(entries.len(), 1);
        let text = fs::read_to_string(&entries[0]).unwrap();
        let root_line = text.lines().find(|l| l.starts_with("root ")).unwrap();
        fs::write(
            &entries[0],
            text.replace(root_line, &format!("root {}", "0".repeat(64))),
        )
        .unwrap();
        let cache = HashCache::for_share(&root);
        assert!(cache.cached(&path, &file).unwrap().is_none());
        let mut calls = 0;
        let manifest = cache.manifest(&path, &file, |_, _| calls += 1).unwrap();
        assert!(calls > 0);
        assert_eq!(manifest.root, *blake3::hash(&[5u8; 5000]).as_bytes());
    }
}
