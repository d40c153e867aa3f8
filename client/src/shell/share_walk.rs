//! What `SHARE <dir>` publishes: every regular file under a directory of
//! the share dir, named by its path relative to the share dir (`/`
//! separated, so names stay unique).
//!
//! Skipped, each with a reason: hidden files and directories (a name
//! starting with `.`, which also keeps the private `.peerdex` state dir
//! out), names the classic protocol cannot carry (whitespace, non-UTF-8,
//! over 255 bytes), symlinks leaving the share dir, symlinked directories
//! (not followed: no cycles), and anything that is not a regular file.
//! Nothing outside the share dir is ever walked.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use peerdex_protocol::MAX_FIELD_LEN;
use thiserror::Error;

use crate::peer::share_dir::ShareDir;

/// Why `SHARE` cannot start.
#[derive(Debug, Error)]
pub enum WalkError {
    #[error("{0} is outside the share dir")]
    Outside(String),
    #[error("{0}: {1}")]
    Missing(String, io::Error),
    #[error("{0} is not a directory")]
    NotADirectory(String),
}

/// The result of a walk.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Walk {
    /// Names to publish, sorted.
    pub files: Vec<String>,
    /// Entries left out, with the reason (relative names, lossy).
    pub skipped: Vec<(String, String)>,
}

/// Walks `dir` (relative to the share dir, or absolute inside it).
/// Blocking.
pub fn walk(share: &ShareDir, dir: &str) -> Result<Walk, WalkError> {
    let root = share.root();
    let start = root
        .join(dir)
        .canonicalize()
        .map_err(|err| WalkError::Missing(dir.to_string(), err))?;
    if !start.starts_with(root) || share.is_private(&start) {
        return Err(WalkError::Outside(dir.to_string()));
    }
    if !start.is_dir() {
        return Err(WalkError::NotADirectory(dir.to_string()));
    }
    let mut result = Walk::default();
    let mut stack: Vec<PathBuf> = vec![start];
    while let Some(dir) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) => {
                result.skipped.push((relative(root, &dir), err.to_string()));
                continue;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = relative(root, &path);
            let file_name = entry.file_name();
            if file_name.to_string_lossy().starts_with('.') {
                // Hidden: silently, as `ls` does.
                continue;
            }
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path);
                continue;
            }
            if meta.file_type().is_symlink() {
                match path.canonicalize() {
                    Ok(target) if !target.starts_with(root) || share.is_private(&target) => {
                        result
                            .skipped
                            .push((name, "symlink leaves the share dir".into()));
                        continue;
                    }
                    Ok(target) if target.is_dir() => {
                        result
                            .skipped
                            .push((name, "symlinked directory not followed".into()));
                        continue;
                    }
                    Ok(target) if target.is_file() => {}
                    _ => {
                        result.skipped.push((name, "broken symlink".into()));
                        continue;
                    }
                }
            } else if !meta.is_file() {
                result.skipped.push((name, "not a regular file".into()));
                continue;
            }
            match publishable(root, &path) {
                Ok(name) => result.files.push(name),
                Err(why) => result.skipped.push((name, why.into())),
            }
        }
    }
    result.files.sort();
    result.skipped.sort();
    Ok(result)
}

/// The published name of `path`, if the classic protocol can carry it.
fn publishable(root: &Path, path: &Path) -> Result<String, &'static str> {
    let relative = path
        .strip_prefix(root)
        .map_err(|_| "outside the share dir")?;
    let mut parts = Vec::new();
    for part in relative.components() {
        parts.push(part.as_os_str().to_str().ok_or("name is not UTF-8")?);
    }
    let name = parts.join("/");
    if name.chars().any(char::is_whitespace) {
        return Err("name contains whitespace (the protocol cannot carry it)");
    }
    if name.len() > MAX_FIELD_LEN {
        return Err("name longer than 255 bytes");
    }
    Ok(name)
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> (tempfile::TempDir, ShareDir) {
        let base = tempfile::tempdir().unwrap();
        let share = base.path().join("share");
        for dir in ["music/rock", ".hidden", "docs", ".peerdex/hashes"] {
            fs::create_dir_all(share.join(dir)).unwrap();
        }
        for file in [
            "a.txt",
            "music/b.mp3",
            "music/rock/c.mp3",
            ".dot",
            ".hidden/d",
            "docs/with space.txt",
            ".peerdex/hashes/x",
        ] {
            fs::write(share.join(file), file).unwrap();
        }
        fs::write(base.path().join("secret"), b"s").unwrap();
        symlink(base.path().join("secret"), share.join("escape")).unwrap();
        symlink(share.join("a.txt"), share.join("docs/inside")).unwrap();
        symlink(share.join("music"), share.join("loop")).unwrap();
        symlink(share.join(".peerdex/hashes/x"), share.join("state")).unwrap();
        let share = ShareDir::new(&share).unwrap();
        (base, share)
    }

    #[test]
    fn walks_everything_publishable_and_says_why_not() {
        let (_base, share) = tree();
        let walk = walk(&share, ".").unwrap();
        assert_eq!(
            walk.files,
            ["a.txt", "docs/inside", "music/b.mp3", "music/rock/c.mp3"]
        );
        let skipped: Vec<&str> = walk.skipped.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(skipped, ["docs/with space.txt", "escape", "loop", "state"]);
    }

    #[test]
    fn walks_a_subdirectory_with_names_relative_to_the_share() {
        let (_base, share) = tree();
        let walk = walk(&share, "music").unwrap();
        assert_eq!(walk.files, ["music/b.mp3", "music/rock/c.mp3"]);
        assert!(walk.skipped.is_empty());
    }

    #[test]
    fn refuses_what_is_not_a_directory_inside() {
        let (base, share) = tree();
        assert!(matches!(walk(&share, ".."), Err(WalkError::Outside(_))));
        assert!(matches!(
            walk(&share, base.path().to_str().unwrap()),
            Err(WalkError::Outside(_))
        ));
        assert!(matches!(
            walk(&share, "loop/.."),
            Err(WalkError::Outside(_)) | Ok(_)
        ));
        assert!(matches!(
            walk(&share, ".peerdex"),
            Err(WalkError::Outside(_))
        ));
        assert!(matches!(walk(&share, "nope"), Err(WalkError::Missing(..))));
        assert!(matches!(
            walk(&share, "a.txt"),
            Err(WalkError::NotADirectory(_))
        ));
    }
}
