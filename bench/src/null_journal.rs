//! The durable ceiling: the least a durable server must add to the null
//! server. Every mutating request's bytes are appended to a file and made
//! durable by a group commit (one `fdatasync` for everything queued while
//! the previous one ran) before the reply; reads answer at once. No state,
//! no rules, no checks.
//!
//! Why: target 1 (docs/PERFORMANCE.md) asks for 85% of the null server *with
//! durability on*. Whether that is reachable on a machine depends on what a
//! disk flush costs there, not on our server. Running this stand-in in the
//! same alternation says how much of the gap any durable server must pay
//! (docs/PERFORMANCE.md).
//!
//! The file is written once with zeros up front and then overwritten in a
//! ring, as our journal's pre-zeroed segments are: `fdatasync` then flushes
//! data only, never the file's size or block map.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;

use tokio::sync::oneshot;

/// Size of the ring the records are written into.
const RING_BYTES: u64 = 64 * 1024 * 1024;

/// Records waiting for the next sync, and who waits for each.
#[derive(Default)]
struct Queue {
    bytes: Vec<u8>,
    waiters: Vec<oneshot::Sender<bool>>,
    closed: bool,
}

/// Handle to the group-commit thread. Cheap to clone.
#[derive(Clone)]
pub struct NullJournal {
    shared: Arc<(Mutex<Queue>, Condvar)>,
}

impl NullJournal {
    /// Creates (or overwrites) the ring file in `dir` and starts the sync
    /// thread.
    pub fn open(dir: &Path) -> io::Result<NullJournal> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("null-journal");
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)?;
        let zeros = vec![0u8; 1024 * 1024];
        for chunk in 0..RING_BYTES / zeros.len() as u64 {
            file.write_all_at(&zeros, chunk * zeros.len() as u64)?;
        }
        file.sync_all()?;
        File::open(dir)?.sync_all()?;
        let shared = Arc::new((Mutex::new(Queue::default()), Condvar::new()));
        let for_thread = shared.clone();
        thread::Builder::new()
            .name("null-journal".into())
            .spawn(move || sync_loop(&file, &for_thread))?;
        Ok(NullJournal { shared })
    }

    /// Appends `record` and waits until it is durable; false if the write
    /// or sync failed.
    pub async fn append(&self, record: &[u8]) -> bool {
        let (done, durable) = oneshot::channel();
        {
            let (queue, wake) = &*self.shared;
            let Ok(mut queue) = queue.lock() else {
                return false;
            };
            if queue.closed {
                return false;
            }
            queue.bytes.extend_from_slice(record);
            queue.waiters.push(done);
            wake.notify_one();
        }
        durable.await.unwrap_or(false)
    }
}

/// Takes everything queued, writes it at the ring's cursor, syncs once and
/// answers every waiter; stops (answering false) after the first failure.
fn sync_loop(file: &File, shared: &(Mutex<Queue>, Condvar)) {
    let (queue, wake) = shared;
    let mut offset = 0u64;
    let mut bytes = Vec::new();
    let mut waiters = Vec::new();
    loop {
        {
            let Ok(mut guard) = queue.lock() else { return };
            while guard.waiters.is_empty() {
                guard = match wake.wait(guard) {
                    Ok(guard) => guard,
                    Err(_) => return,
                };
            }
            std::mem::swap(&mut guard.bytes, &mut bytes);
            std::mem::swap(&mut guard.waiters, &mut waiters);
        }
        let len = bytes.len() as u64;
        if offset + len > RING_BYTES {
            offset = 0;
        }
        let ok = len <= RING_BYTES
            && file.write_all_at(&bytes, offset).is_ok()
            && file.sync_data().is_ok();
        offset += len;
        for waiter in waiters.drain(..) {
            let _ = waiter.send(ok);
        }
        bytes.clear();
        if !ok {
            eprintln!(
                "null-server: journal write or sync failed; failing every mutation from now on"
            );
            if let Ok(mut guard) = queue.lock() {
                guard.closed = true;
                for waiter in guard.waiters.drain(..) {
                    let _ = waiter.send(false);
                }
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn appended_records_reach_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let journal = NullJournal::open(dir.path()).unwrap();
        let appends = (0..50).map(|i| {
            let journal = journal.clone();
            tokio::spawn(async move { journal.append(format!("record-{i:02};").as_bytes()).await })
        });
        for append in appends {
            assert!(append.await.unwrap());
        }
        let written = std::fs::read(dir.path().join("null-journal")).unwrap();
        let text = String::from_utf8_lossy(&written[..50 * 10]);
        for i in 0..50 {
            assert!(
                text.contains(&format!("record-{i:02};")),
                "record {i} missing"
            );
        }
    }
}
