//! The shared directory: turns a published file name into an open regular
//! file inside it.
//!
//! [`ShareDir::open`] is what the listener serves from. It checks the file it
//! actually opened, not the path it opened: the last path component is
//! opened with `O_NOFOLLOW`, then the open descriptor must be a regular file
//! whose real path (`/proc/self/fd/N`) is inside the share dir. A symlink
//! swapped in between a check and the open cannot make it serve a file from
//! outside. [`ShareDir::resolve`] is the same check on paths only, for
//! advice (the shell's PUBLISH warning).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use thiserror::Error;

/// Why a name does not resolve to a servable file.
#[derive(Debug, Error)]
pub enum ShareError {
    #[error("file name is empty")]
    Empty,
    #[error("file name is not a relative path inside the share dir")]
    NotRelative,
    #[error("file does not exist: {0}")]
    Missing(io::Error),
    #[error("file resolves outside the share dir")]
    Escapes,
    #[error("file is in the share dir's private state dir")]
    Private,
    #[error("not a regular file")]
    NotRegular,
    #[error("cannot open: {0}")]
    Open(io::Error),
    #[error("cannot verify the opened file: {0}")]
    Verify(io::Error),
}

impl ShareError {
    /// Whether the name simply does not designate a servable file (GET_FILE
    /// code 1), rather than a failure to serve one (code 2).
    pub fn is_not_found(&self) -> bool {
        !matches!(self, ShareError::Open(_) | ShareError::Verify(_))
    }
}

/// A directory whose files may be served to peers.
#[derive(Debug, Clone)]
pub struct ShareDir {
    /// The canonical (absolute, symlink-free) path of the directory; every
    /// resolved file must be under it.
    root: PathBuf,
}

impl ShareDir {
    /// Opens `dir`, which must exist.
    pub fn new(dir: impl AsRef<Path>) -> io::Result<Self> {
        let root = dir.as_ref().canonicalize()?;
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a directory", root.display()),
            ));
        }
        Ok(Self { root })
    }

    /// The canonical directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Resolves a published name to a regular file inside the share dir.
    /// Refuses absolute paths, `..`, and symlinks whose target leaves it.
    /// A check of paths only (the file may change afterwards): serve with
    /// [`Self::open`].
    pub fn resolve(&self, name: &str) -> Result<PathBuf, ShareError> {
        let candidate = self.candidate(name)?;
        match candidate.metadata() {
            Ok(meta) if meta.is_file() => Ok(candidate),
            Ok(_) => Err(ShareError::NotRegular),
            Err(err) => Err(ShareError::Missing(err)),
        }
    }

    /// [`Self::open_with_path`] without the path.
    #[cfg(test)]
    pub fn open(&self, name: &str) -> Result<File, ShareError> {
        self.open_with_path(name).map(|(file, _)| file)
    }

    /// Opens a published name for serving: a regular file inside the share
    /// dir, verified on the open descriptor. Blocking (file system calls).
    /// Returns the file and its real path (the key of its cached hashes).
    pub fn open_with_path(&self, name: &str) -> Result<(File, PathBuf), ShareError> {
        // Symlinks inside the share are followed here, once, to a path;
        // what is opened is that path's final component itself.
        self.open_verified(&self.candidate(name)?)
    }

    /// Whether `path` (canonical) is inside the private state dir, which
    /// is never served nor published.
    pub fn is_private(&self, path: &Path) -> bool {
        path.starts_with(self.root.join(crate::content::cache::STATE_DIR))
    }

    /// Opens `path` and checks the opened file: regular, really inside the
    /// share dir. `path` was checked already, but may have changed since.
    fn open_verified(&self, path: &Path) -> Result<(File, PathBuf), ShareError> {
        let file = OpenOptions::new()
            .read(true)
            // O_NOFOLLOW: a final component swapped for a symlink fails
            // (ELOOP). O_NONBLOCK: opening a FIFO swapped in does not block
            // (no effect on reads of regular files). O_NOCTTY: a terminal
            // never becomes ours.
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
            .map_err(|err| match err.raw_os_error() {
                Some(libc::ELOOP) => ShareError::Escapes,
                _ if err.kind() == io::ErrorKind::NotFound => ShareError::Missing(err),
                _ => ShareError::Open(err),
            })?;
        // fstat: the opened file, whatever the path names by now.
        let meta = file.metadata().map_err(ShareError::Verify)?;
        if !meta.is_file() {
            return Err(ShareError::NotRegular);
        }
        // A directory of the path may have been swapped for a symlink
        // leaving the share: where the descriptor really is decides.
        let real = opened_path(&file).map_err(ShareError::Verify)?;
        if !real.starts_with(&self.root) {
            return Err(ShareError::Escapes);
        }
        if self.is_private(&real) {
            return Err(ShareError::Private);
        }
        Ok((file, real))
    }

    /// The canonical path of `name` inside the share dir (not yet known to
    /// be a regular file).
    fn candidate(&self, name: &str) -> Result<PathBuf, ShareError> {
        if name.is_empty() {
            return Err(ShareError::Empty);
        }
        let relative = Path::new(name);
        if !relative
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(ShareError::NotRelative);
        }
        let candidate = self
            .root
            .join(relative)
            .canonicalize()
            .map_err(ShareError::Missing)?;
        if !candidate.starts_with(&self.root) {
            return Err(ShareError::Escapes);
        }
        if self.is_private(&candidate) {
            return Err(ShareError::Private);
        }
        Ok(candidate)
    }
}

/// The real path of an open file, as the kernel knows it.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn opened_path(file: &File) -> io::Result<PathBuf> {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// Elsewhere the open file's path is not checked, so nothing is served
/// (refusing is the safe side).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn opened_path(_file: &File) -> io::Result<PathBuf> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "the real path of an open file is only checked on Linux",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn setup() -> (tempfile::TempDir, ShareDir) {
        let base = tempfile::tempdir().unwrap();
        fs::create_dir(base.path().join("share")).unwrap();
        fs::create_dir(base.path().join("share/sub")).unwrap();
        fs::write(base.path().join("share/a.txt"), b"a").unwrap();
        fs::write(base.path().join("share/sub/b.txt"), b"b").unwrap();
        fs::write(base.path().join("secret.txt"), b"s").unwrap();
        let share = ShareDir::new(base.path().join("share")).unwrap();
        (base, share)
    }

    #[test]
    fn resolves_files_inside() {
        let (_base, share) = setup();
        assert!(share.resolve("a.txt").unwrap().ends_with("share/a.txt"));
        assert!(share.resolve("sub/b.txt").is_ok());
        assert!(share.resolve("./a.txt").is_ok());
    }

    #[test]
    fn the_private_state_dir_is_never_served() {
        let (_base, share) = setup();
        let state = share.root().join(".peerdex/hashes");
        fs::create_dir_all(&state).unwrap();
        fs::write(state.join("x"), b"x").unwrap();
        std::os::unix::fs::symlink(state.join("x"), share.root().join("link")).unwrap();
        for name in [".peerdex/hashes/x", "./.peerdex/hashes/x", "link"] {
            let err = share.open(name).unwrap_err();
            assert!(matches!(err, ShareError::Private), "{name}: {err}");
            assert!(err.is_not_found());
        }
    }

    #[test]
    fn refuses_traversal_and_absolute_paths() {
        let (base, share) = setup();
        assert!(matches!(
            share.resolve("../secret.txt"),
            Err(ShareError::NotRelative)
        ));
        assert!(matches!(
            share.resolve("sub/../../secret.txt"),
            Err(ShareError::NotRelative)
        ));
        let absolute = base.path().join("secret.txt");
        assert!(matches!(
            share.resolve(absolute.to_str().unwrap()),
            Err(ShareError::NotRelative)
        ));
        assert!(matches!(
            share.resolve("/etc/passwd"),
            Err(ShareError::NotRelative)
        ));
        assert!(matches!(share.resolve(""), Err(ShareError::Empty)));
    }

    #[test]
    fn refuses_missing_files_and_directories() {
        let (_base, share) = setup();
        assert!(matches!(share.resolve("nope"), Err(ShareError::Missing(_))));
        assert!(matches!(share.resolve("sub"), Err(ShareError::NotRegular)));
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_may_not_leave_the_share_dir() {
        let (base, share) = setup();
        let dir = base.path().join("share");
        std::os::unix::fs::symlink(base.path().join("secret.txt"), dir.join("out")).unwrap();
        std::os::unix::fs::symlink(base.path(), dir.join("outdir")).unwrap();
        std::os::unix::fs::symlink(dir.join("a.txt"), dir.join("in")).unwrap();
        assert!(matches!(share.resolve("out"), Err(ShareError::Escapes)));
        assert!(matches!(
            share.resolve("outdir/secret.txt"),
            Err(ShareError::Escapes)
        ));
        assert!(share.resolve("in").is_ok());
    }

    #[test]
    fn open_serves_regular_files_inside() {
        let (_base, share) = setup();
        let mut content = String::new();
        std::io::Read::read_to_string(&mut share.open("sub/b.txt").unwrap(), &mut content).unwrap();
        assert_eq!(content, "b");
        assert!(share.open("./a.txt").is_ok());
        assert!(matches!(share.open("nope"), Err(ShareError::Missing(_))));
        assert!(matches!(share.open("sub"), Err(ShareError::NotRegular)));
        assert!(matches!(
            share.open("../secret.txt"),
            Err(ShareError::NotRelative)
        ));
        assert!(matches!(
            share.open("/etc/passwd"),
            Err(ShareError::NotRelative)
        ));
        assert!(share.open("nope").unwrap_err().is_not_found());
    }

    #[cfg(unix)]
    #[test]
    fn open_refuses_a_symlink_inside_the_share_pointing_outside() {
        let (base, share) = setup();
        let dir = base.path().join("share");
        std::os::unix::fs::symlink(base.path().join("secret.txt"), dir.join("out")).unwrap();
        std::os::unix::fs::symlink("../secret.txt", dir.join("rel-out")).unwrap();
        std::os::unix::fs::symlink(base.path(), dir.join("outdir")).unwrap();
        std::os::unix::fs::symlink(dir.join("a.txt"), dir.join("in")).unwrap();
        for name in ["out", "rel-out", "outdir/secret.txt", "sub/../out"] {
            let err = share.open(name).unwrap_err();
            assert!(
                matches!(err, ShareError::Escapes | ShareError::NotRelative),
                "{name}: {err}"
            );
            assert!(err.is_not_found(), "{name}: answered as code 1");
        }
        // A symlink staying inside is followed to its target.
        let mut content = String::new();
        std::io::Read::read_to_string(&mut share.open("in").unwrap(), &mut content).unwrap();
        assert_eq!(content, "a");
    }

    /// What a symlink swapped in after the path check meets: the opened
    /// file itself is checked.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_opened_file_is_checked_not_the_path() {
        let (base, share) = setup();
        let dir = share.root().to_path_buf();
        // The final component became a symlink (to a file inside, even).
        std::os::unix::fs::symlink(dir.join("a.txt"), dir.join("swapped")).unwrap();
        assert!(matches!(
            share.open_verified(&dir.join("swapped")),
            Err(ShareError::Escapes)
        ));
        // A directory of the path became a symlink leaving the share.
        std::os::unix::fs::symlink(base.path(), dir.join("outdir")).unwrap();
        assert!(matches!(
            share.open_verified(&dir.join("outdir/secret.txt")),
            Err(ShareError::Escapes)
        ));
        // A FIFO swapped in does not block the open, and is not served.
        let fifo = dir.join("fifo");
        let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: `c_path` is a valid NUL-terminated string for the call.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        assert!(matches!(
            share.open_verified(&fifo),
            Err(ShareError::NotRegular)
        ));
        assert!(share.open_verified(&dir.join("a.txt")).is_ok());
    }
}
