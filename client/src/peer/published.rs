//! [`PublicationRecord`]: the files this user published through a peerdex
//! client, the only ones the listener serves.
//!
//! The directory is no judge of what a peer serves: anyone who can talk to
//! it (a classic client acting for an unprotected account) could list a
//! file there, and a listener that believed the directory would serve it.
//! So the client keeps its own durable record, per (directory server,
//! user, canonical share root), of the names published through it: added
//! after a PUBLISH or PUBLISH_CONTENT that the directory accepted, removed
//! after a DELETE, cleared after an UNREGISTER. A name not in it is never
//! served, whatever the directory says.
//!
//! It lives in `<state dir>/published/<hex>`, `<hex>` a BLAKE3 hash of the
//! three keys: NUL-terminated fields, a header (`peerdex-published/1`, the
//! server, the user, the root, checked on load), then one field per name.
//! Each change re-reads the file (another shell of the same user may have
//! changed it), then writes a temporary file, fsyncs it, renames it over
//! the record and fsyncs the directory, so that a crash leaves the old or
//! the new record, never half of one. A missing or damaged record is an
//! empty one (nothing served until published again). Without a state dir
//! the record is kept in memory for the shell's life.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

/// The first field of a record file.
const MAGIC: &str = "peerdex-published/1";
/// The folder of records in the state dir.
const DIR_NAME: &str = "published";
/// Largest record file read; a larger one is taken as damaged.
pub const MAX_RECORD_BYTES: u64 = 64 * 1024 * 1024;

/// The names one user published from one share dir to one directory.
#[derive(Debug)]
pub struct PublicationRecord {
    /// The record file; `None`: memory only.
    path: Option<PathBuf>,
    /// The header the file must carry.
    header: [String; 3],
    names: Mutex<Loaded>,
}

/// The names as last read or written, and the file's stamp then.
#[derive(Debug, Default)]
struct Loaded {
    names: HashSet<String>,
    stamp: Option<(SystemTime, u64)>,
}

impl PublicationRecord {
    /// The record of `user` at `server` for the share dir `root`
    /// (canonical), from `state_dir` (`None`: memory only).
    pub fn open(state_dir: Option<&Path>, server: &str, user: &str, root: &Path) -> Self {
        let header = [
            server.to_string(),
            user.to_string(),
            root.to_string_lossy().into_owned(),
        ];
        let path = state_dir.map(|dir| {
            let mut key = blake3::Hasher::new();
            for field in &header {
                key.update(field.as_bytes());
                key.update(b"\0");
            }
            dir.join(DIR_NAME).join(key.finalize().to_hex().as_str())
        });
        let record = Self {
            path,
            header,
            names: Mutex::new(Loaded::default()),
        };
        {
            let mut loaded = record.lock();
            record.refresh(&mut loaded);
        }
        record
    }

    /// A record kept in memory only.
    #[cfg(test)]
    pub fn in_memory() -> Self {
        Self::open(None, "", "", Path::new(""))
    }

    /// Whether `name` was published through a peerdex client (re-read when
    /// the file changed since).
    pub fn contains(&self, name: &str) -> bool {
        let mut loaded = self.lock();
        if loaded.names.contains(name) {
            return true;
        }
        self.refresh(&mut loaded);
        loaded.names.contains(name)
    }

    /// Records `name` as published.
    pub fn insert(&self, name: &str) -> io::Result<()> {
        self.change(|names| {
            names.insert(name.to_string());
        })
    }

    /// Records `name` as no longer published.
    pub fn remove(&self, name: &str) -> io::Result<()> {
        self.change(|names| {
            names.remove(name);
        })
    }

    /// Forgets every name (the account is gone).
    pub fn clear(&self) -> io::Result<()> {
        self.change(HashSet::clear)
    }

    fn lock(&self) -> MutexGuard<'_, Loaded> {
        self.names.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the names as they are on disk now, and writes them back;
    /// memory follows even when the write fails (reported to the caller).
    fn change(&self, apply: impl FnOnce(&mut HashSet<String>)) -> io::Result<()> {
        let mut loaded = self.lock();
        self.refresh(&mut loaded);
        apply(&mut loaded.names);
        let Some(path) = &self.path else {
            return Ok(());
        };
        write_atomically(path, &self.encode(&loaded.names))?;
        loaded.stamp = stamp(path);
        Ok(())
    }

    /// Re-reads the file when its stamp changed.
    fn refresh(&self, loaded: &mut Loaded) {
        let Some(path) = &self.path else { return };
        let now = stamp(path);
        // Unchanged, or still absent (memory holds what a failed write
        // could not store).
        if now == loaded.stamp {
            return;
        }
        loaded.stamp = now;
        loaded.names = match self.read(path) {
            Ok(names) => names,
            Err(err) => {
                if err.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %err, "publication record unreadable: serving nothing from it");
                }
                HashSet::new()
            }
        };
    }

    fn read(&self, path: &Path) -> io::Result<HashSet<String>> {
        let mut bytes = Vec::new();
        File::open(path)?
            .take(MAX_RECORD_BYTES + 1)
            .read_to_end(&mut bytes)?;
        if bytes.len() as u64 > MAX_RECORD_BYTES {
            return Err(io::Error::other("record too large"));
        }
        self.decode(&bytes)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "damaged record"))
    }

    fn decode(&self, bytes: &[u8]) -> Option<HashSet<String>> {
        let body = bytes.strip_suffix(b"\0")?;
        let mut fields = body.split(|&b| b == 0).map(std::str::from_utf8);
        if fields.next()?.ok()? != MAGIC {
            return None;
        }
        for expected in &self.header {
            if fields.next()?.ok()? != expected {
                return None;
            }
        }
        fields.map(|field| field.ok().map(str::to_string)).collect()
    }

    fn encode(&self, names: &HashSet<String>) -> Vec<u8> {
        let mut sorted: Vec<&String> = names.iter().collect();
        sorted.sort();
        let mut out = Vec::new();
        let header = std::iter::once(MAGIC).chain(self.header.iter().map(String::as_str));
        for field in header.chain(sorted.into_iter().map(String::as_str)) {
            out.extend_from_slice(field.as_bytes());
            out.push(0);
        }
        out
    }
}

/// Modification time and length: a record rewritten by another shell
/// changes at least one (the rename gives a new inode and time).
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Temp file, fsync, rename, fsync of the directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|err| err.error)?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_survive_a_new_shell_and_are_kept_apart_per_key() {
        let state = tempfile::tempdir().unwrap();
        let root = Path::new("/srv/share");
        let record = PublicationRecord::open(Some(state.path()), "h:1", "alice", root);
        assert!(!record.contains("a.txt"));
        record.insert("a.txt").unwrap();
        record.insert("with\nnewline and spaces").unwrap();
        record.insert("b.txt").unwrap();
        record.remove("b.txt").unwrap();
        let again = PublicationRecord::open(Some(state.path()), "h:1", "alice", root);
        assert!(again.contains("a.txt"));
        assert!(again.contains("with\nnewline and spaces"));
        assert!(!again.contains("b.txt"));
        for (server, user, root) in [
            ("h:2", "alice", root),
            ("h:1", "bob", root),
            ("h:1", "alice", Path::new("/srv/other")),
        ] {
            let other = PublicationRecord::open(Some(state.path()), server, user, root);
            assert!(!other.contains("a.txt"), "{server} {user} {root:?}");
        }
        again.clear().unwrap();
        assert!(
            !PublicationRecord::open(Some(state.path()), "h:1", "alice", root).contains("a.txt")
        );
    }

    #[test]
    fn another_shells_change_is_seen() {
        let state = tempfile::tempdir().unwrap();
        let root = Path::new("/r");
        let listener_side = PublicationRecord::open(Some(state.path()), "h", "al", root);
        let other_shell = PublicationRecord::open(Some(state.path()), "h", "al", root);
        other_shell.insert("x").unwrap();
        assert!(listener_side.contains("x"));
        // A change here keeps what the other shell added.
        listener_side.insert("y").unwrap();
        let fresh = PublicationRecord::open(Some(state.path()), "h", "al", root);
        assert!(fresh.contains("x") && fresh.contains("y"));
    }

    #[test]
    fn a_damaged_or_foreign_record_serves_nothing() {
        let state = tempfile::tempdir().unwrap();
        let root = Path::new("/r");
        let record = PublicationRecord::open(Some(state.path()), "h", "al", root);
        record.insert("a").unwrap();
        let path = record.path.clone().unwrap();
        for bytes in [
            &b"garbage"[..],
            b"peerdex-published/1\0h\0al\0/r\0a",
            b"peerdex-published/1\0h\0bob\0/r\0a\0",
            b"peerdex-published/1\0h\0al\0/r\0\xff\0a\0",
            b"",
        ] {
            std::fs::write(&path, bytes).unwrap();
            let reread = PublicationRecord::open(Some(state.path()), "h", "al", root);
            assert!(!reread.contains("a"), "{bytes:?}");
        }
        // An unwritable state dir fails the change, memory keeps it.
        let blocked = state.path().join("file");
        std::fs::write(&blocked, b"x").unwrap();
        let record = PublicationRecord::open(Some(&blocked), "h", "al", root);
        assert!(record.insert("a").is_err());
        assert!(record.contains("a"));
    }

    #[test]
    fn memory_only_records_work() {
        let record = PublicationRecord::in_memory();
        record.insert("a").unwrap();
        assert!(record.contains("a"));
        record.remove("a").unwrap();
        assert!(!record.contains("a"));
    }
}
