//! The shared directory: turns a published file name into a path that is
//! guaranteed to be a regular file inside it.

use std::io;
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
    #[error("not a regular file")]
    NotRegular,
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
    pub fn resolve(&self, name: &str) -> Result<PathBuf, ShareError> {
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
        match candidate.metadata() {
            Ok(meta) if meta.is_file() => Ok(candidate),
            Ok(_) => Err(ShareError::NotRegular),
            Err(err) => Err(ShareError::Missing(err)),
        }
    }
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
}
