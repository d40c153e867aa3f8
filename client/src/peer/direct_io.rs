//! Writing downloads around the page cache (`O_DIRECT`).
//!
//! Why: a downloaded byte is received into user memory, then (buffered
//! `pwrite`) copied by the kernel into the page cache, then written back and
//! fsync'd. That copy (`copy_folio_from_iter_atomic` in profiles) is most
//! of a verified download's CPU (figures in docs/PERFORMANCE.md). With
//! `O_DIRECT` the device reads the user buffer itself: no copy, and the
//! final fsync has almost nothing left to flush.
//!
//! `O_DIRECT` wants the buffer, the file offset and the length aligned to
//! the device's logical block. [`AlignedBuf`] gives [`ALIGN`]-aligned
//! memory; [`DirectFile`] writes the aligned head of each write through an
//! `O_DIRECT` descriptor and whatever is left (an unaligned tail, an
//! unaligned offset or buffer) through an ordinary one on the same file.
//! Both descriptors point at one inode, so `sync_data` / `sync_all` on the
//! ordinary one covers everything. Byte ranges written through the two
//! never share a page, because direct writes cover whole aligned blocks
//! only: the kernel keeps the cache coherent for the rest.
//!
//! The unaligned tail goes through the second descriptor rather than being
//! padded to a whole block and cut back with `set_len`: a padded write
//! would grow a preallocated `.part` past its size, and a crash before the
//! `set_len` would leave a `.part` of the wrong size, which a resume
//! rightly treats as "start over".
//!
//! Filesystems without `O_DIRECT` refuse the open or a write with `EINVAL`;
//! then (and from then on) everything goes through the ordinary descriptor,
//! an ordinary buffered write.

use std::alloc::{self, Layout};
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::{Deref, DerefMut};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

/// Alignment of buffers, offsets and lengths for direct writes: the largest
/// logical block size of common devices (512 divides it).
pub const ALIGN: usize = 4096;

/// A zero-initialised byte buffer whose start is [`ALIGN`]-aligned, for
/// direct I/O (a `Vec<u8>` only guarantees alignment 1). Owns its memory
/// like a `Vec`; derefs to `[u8]` of the requested length.
pub struct AlignedBuf {
    /// Start of the allocation (never null, `ALIGN`-aligned).
    ptr: NonNull<u8>,
    /// Bytes visible through `Deref`.
    len: usize,
    /// The allocation's layout (size `len` rounded up to `ALIGN`, at least
    /// `ALIGN`), needed to free it.
    layout: Layout,
}

// SAFETY: AlignedBuf owns its allocation exclusively, like Vec<u8>; no
// interior mutability, so sharing `&AlignedBuf` is as safe as `&[u8]`.
unsafe impl Send for AlignedBuf {}
// SAFETY: see Send.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// `len` zero bytes, aligned. Fails (`InvalidInput`) only for sizes no
    /// allocation can have.
    pub fn zeroed(len: usize) -> io::Result<AlignedBuf> {
        let size = len
            .max(1)
            .checked_next_multiple_of(ALIGN)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "buffer too large"))?;
        let layout = Layout::from_size_align(size, ALIGN)
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?;
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        Ok(AlignedBuf { ptr, len, layout })
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with exactly this layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `len` <= the allocation's size, all of it initialised.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .finish()
    }
}

/// One file open twice: an ordinary descriptor and, where the filesystem
/// allows it, an `O_DIRECT` one. Positional writes only, so the two never
/// disagree about an offset.
#[derive(Debug)]
pub struct DirectFile {
    /// The ordinary descriptor: unaligned parts, the fallback, syncing,
    /// metadata, reads.
    file: File,
    /// The `O_DIRECT` descriptor; `None` where the open was refused.
    direct: Option<File>,
    /// Cleared for good when a direct write is refused with `EINVAL`.
    direct_works: AtomicBool,
    /// Serializes buffered writes: ext4 takes the inode lock exclusively
    /// for them anyway, and waiting here sleeps, while waiting for the inode
    /// lock spins on a CPU (`rwsem_spin_on_owner` in profiles of a
    /// download with several pieces in flight). Direct writes
    /// of whole blocks into allocated space take that lock shared and run
    /// concurrently.
    buffered: Mutex<()>,
}

impl DirectFile {
    /// Adds an `O_DIRECT` descriptor to `file` (opened for writing). It is
    /// opened through `/proc/self/fd`, so it is the same inode whatever
    /// happened to the path meanwhile; when that fails (no `/proc`, no
    /// `O_DIRECT`: `EINVAL`), writes stay buffered.
    pub fn new(file: File) -> DirectFile {
        use std::os::fd::AsRawFd;
        let direct = open_direct(Path::new(&format!("/proc/self/fd/{}", file.as_raw_fd())));
        DirectFile::with_direct(file, direct)
    }

    /// `file` with the given direct descriptor (`None`: buffered only).
    fn with_direct(file: File, direct: Option<File>) -> DirectFile {
        DirectFile {
            direct_works: AtomicBool::new(direct.is_some()),
            file,
            direct,
            buffered: Mutex::new(()),
        }
    }

    /// The ordinary descriptor (for syncing, metadata, reads).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The ordinary descriptor alone (the direct one is closed).
    pub fn into_file(self) -> File {
        self.file
    }

    /// Whether writes still go around the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct_works.load(Ordering::Relaxed)
    }

    /// Writes all of `data` at `offset`: its largest aligned head directly
    /// when `data` starts aligned in memory and `offset` is aligned, the
    /// rest buffered. Errors other than "direct I/O refused" (`ENOSPC`,
    /// `EIO`, ...) are returned as they are. Blocking.
    pub fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.write_split(data, offset, |head, offset| match &self.direct {
            Some(direct) => direct.write_all_at(head, offset),
            None => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        })
    }

    /// `write_at` with the direct write given (tests stand in a refusing
    /// one).
    fn write_split(
        &self,
        data: &[u8],
        offset: u64,
        direct: impl FnOnce(&[u8], u64) -> io::Result<()>,
    ) -> io::Result<()> {
        let aligned =
            (data.as_ptr() as usize).is_multiple_of(ALIGN) && offset.is_multiple_of(ALIGN as u64);
        let head = if aligned && self.is_direct() {
            data.len() / ALIGN * ALIGN
        } else {
            0
        };
        if head > 0 {
            match direct(&data[..head], offset) {
                Ok(()) => return self.write_buffered(&data[head..], offset + head as u64),
                Err(err) if refuses_direct(&err) => {
                    tracing::debug!(
                        "O_DIRECT write refused, writing through the page cache from now on: {err}"
                    );
                    self.direct_works.store(false, Ordering::Relaxed);
                }
                Err(err) => return Err(err),
            }
        }
        self.write_buffered(data, offset)
    }

    fn write_buffered(&self, data: &[u8], offset: u64) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let _one = self.buffered.lock().unwrap_or_else(PoisonError::into_inner);
        self.file.write_all_at(data, offset)
    }
}

/// Opens `path` for writing with `O_DIRECT`; `None` when refused (no
/// such file, or a filesystem without direct I/O: `EINVAL`).
fn open_direct(path: &Path) -> Option<File> {
    match OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Ok(direct) => Some(direct),
        Err(err) => {
            tracing::debug!("no O_DIRECT, writing through the page cache: {err}");
            None
        }
    }
}

/// `EINVAL` is how Linux refuses direct I/O it cannot do (filesystem
/// without it, or stricter alignment than ours).
fn refuses_direct(err: &io::Error) -> bool {
    err.raw_os_error() == Some(libc::EINVAL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn temp_file() -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .unwrap();
        (dir, file)
    }

    fn contents(file: &DirectFile) -> Vec<u8> {
        let len = file.file().metadata().unwrap().len() as usize;
        let mut out = vec![0u8; len];
        file.file().read_exact_at(&mut out, 0).unwrap();
        out
    }

    #[test]
    fn buffers_are_aligned_zeroed_and_sized() {
        for len in [0, 1, 4095, 4096, 4097, 1 << 20] {
            let mut buf = AlignedBuf::zeroed(len).unwrap();
            assert_eq!(buf.len(), len);
            assert_eq!(buf.as_ptr() as usize % ALIGN, 0, "len {len}");
            assert!(buf.iter().all(|&b| b == 0));
            buf.fill(7);
            assert!(buf.iter().all(|&b| b == 7));
        }
        assert!(AlignedBuf::zeroed(usize::MAX).is_err());
    }

    #[test]
    fn aligned_head_and_partial_tail_land_right() {
        let (_dir, file) = temp_file();
        let file = DirectFile::new(file);
        // Two whole "pieces" and a last one with an unaligned tail, written
        // out of order, like the engine does.
        let piece = 3 * ALIGN;
        let data = pattern(2 * piece + ALIGN + 123);
        for (offset, len) in [(piece, piece), (2 * piece, ALIGN + 123), (0, piece)] {
            let mut buf = AlignedBuf::zeroed(len).unwrap();
            buf.copy_from_slice(&data[offset..offset + len]);
            file.write_at(&buf, offset as u64).unwrap();
        }
        file.file().sync_all().unwrap();
        assert!(contents(&file) == data);
    }

    #[test]
    fn unaligned_memory_and_offsets_are_written_buffered() {
        let (_dir, file) = temp_file();
        let file = DirectFile::new(file);
        let data = pattern(3 * ALIGN + 5);
        let buf = data.clone();
        // A slice starting one byte into a Vec: not aligned in memory.
        file.write_at(&buf[1..], 1).unwrap();
        file.write_at(&buf[..1], 0).unwrap();
        assert!(contents(&file) == data);
    }

    #[test]
    fn without_direct_descriptor_everything_is_buffered() {
        let (_dir, file) = temp_file();
        let file = DirectFile::with_direct(file, None);
        assert!(!file.is_direct());
        let mut buf = AlignedBuf::zeroed(2 * ALIGN + 9).unwrap();
        buf.copy_from_slice(&pattern(2 * ALIGN + 9));
        file.write_at(&buf, 0).unwrap();
        assert!(contents(&file) == *buf);
    }

    #[test]
    fn refused_direct_write_falls_back_for_good() {
        let (_dir, file) = temp_file();
        let stand_in = file.try_clone().unwrap();
        let file = DirectFile::with_direct(file, Some(stand_in));
        let mut buf = AlignedBuf::zeroed(2 * ALIGN + 9).unwrap();
        buf.copy_from_slice(&pattern(2 * ALIGN + 9));
        let refuse = |_: &[u8], _: u64| Err(io::Error::from_raw_os_error(libc::EINVAL));
        file.write_split(&buf, 0, refuse).unwrap();
        assert!(!file.is_direct(), "EINVAL turns direct writes off");
        assert!(
            contents(&file) == *buf,
            "and the bytes are written buffered"
        );
        // From then on the direct write is not even tried.
        let never = |_: &[u8], _: u64| -> io::Result<()> { panic!("direct write tried") };
        file.write_split(&buf, 0, never).unwrap();
    }

    #[test]
    fn other_direct_errors_are_reported() {
        let (_dir, file) = temp_file();
        let stand_in = file.try_clone().unwrap();
        let file = DirectFile::with_direct(file, Some(stand_in));
        let buf = AlignedBuf::zeroed(ALIGN).unwrap();
        let full = |_: &[u8], _: u64| Err(io::Error::from_raw_os_error(libc::ENOSPC));
        let err = file.write_split(&buf, 0, full).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        assert!(file.is_direct());
    }

    #[test]
    fn refused_open_means_buffered() {
        let dir = tempfile::tempdir().unwrap();
        assert!(open_direct(&dir.path().join("missing")).is_none());
    }
}
