//! The commit a peerdex binary was built from, for its `--version`.
//!
//! Each binary crate's `build.rs` calls [`emit`], which sets the
//! environment variable [`ENV`] for the crate's compilation to the package
//! version followed by the commit, e.g. `0.1.0 (git 7042f62)`, with
//! `-dirty` after the hash when the work tree had changes, or
//! `0.1.0 (git unknown)` when git or the repository is missing (a source
//! tarball). The binaries hand it to clap:
//! `#[command(version = env!("PEERDEX_VERSION"))]`, so that
//! `peerdex-server --version` prints `peerdex-server 0.1.0 (git 7042f62)`.
//!
//! The build script is rerun only when HEAD or the branch it points to
//! moves (a commit, a checkout, a reset), not on every build: those are
//! the only files it watches. So `-dirty` says whether the work tree had
//! changes at the last such moment; edits made since do not rebuild
//! anything just to say so.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The environment variable [`emit`] sets for the crate being built.
pub const ENV: &str = "PEERDEX_VERSION";

/// For a build script: sets [`ENV`] for the package being built and tells
/// cargo to rerun the script only when the commit can have changed.
pub fn emit() {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| ".".into()));
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let watched = watched_files(&dir);
    if watched.is_empty() {
        // No repository: the stamp cannot change, and without any
        // rerun-if-changed line cargo would rerun the script whenever a
        // file of the package changes.
        println!("cargo:rerun-if-changed=build.rs");
    }
    for path in watched {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    println!(
        "cargo:rustc-env={ENV}={}",
        stamp(&version, commit(&dir).as_deref())
    );
}

/// `VERSION (git COMMIT)`, `unknown` standing for a missing commit.
pub fn stamp(version: &str, commit: Option<&str>) -> String {
    format!("{version} (git {})", commit.unwrap_or("unknown"))
}

/// The short hash of HEAD in the repository holding `dir`, with `-dirty`
/// appended when `git status --porcelain` lists anything; `None` without
/// git, outside a repository, or before its first commit.
pub fn commit(dir: &Path) -> Option<String> {
    let hash = git(dir, &["rev-parse", "--short", "HEAD"])?;
    let status = git(dir, &["status", "--porcelain"])?;
    Some(if status.is_empty() {
        hash
    } else {
        format!("{hash}-dirty")
    })
}

/// The files whose change can change [`commit`]'s hash: HEAD, and the
/// branch it points to (its loose ref, or `packed-refs` when the branch
/// has none). Only files that exist: cargo reruns a build script on every
/// build while a watched file is missing. Worktrees are handled by asking
/// git where each file is (`--git-path`).
pub fn watched_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Some(head) = git_path(dir, "HEAD") else {
        return files;
    };
    files.push(head);
    if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        match git_path(dir, &branch) {
            Some(loose) => files.push(loose),
            None => files.extend(git_path(dir, "packed-refs")),
        }
    }
    files
}

/// Where git keeps `name` (`--git-path`), if that file exists.
fn git_path(dir: &Path, name: &str) -> Option<PathBuf> {
    let path = dir.join(git(dir, &["rev-parse", "--git-path", name])?);
    path.is_file().then_some(path)
}

/// The trimmed standard output of `git -C dir ARGS`, if it ran and
/// succeeded.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8(out.stdout).ok()?.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs git in `dir` with an identity, for setting up a repository.
    fn run_git(dir: &Path, args: &[&str]) {
        let status = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(["-c", "commit.gpgsign=false"])
            .args(args)
            .stdout(Stdio::null())
            .status()
            .expect("git runs");
        assert!(status.success(), "git {args:?}");
    }

    fn git_available() -> bool {
        git(Path::new("."), &["--version"]).is_some()
    }

    #[test]
    fn stamp_names_the_commit_or_unknown() {
        assert_eq!(stamp("0.1.0", Some("7042f62")), "0.1.0 (git 7042f62)");
        assert_eq!(
            stamp("0.1.0", Some("7042f62-dirty")),
            "0.1.0 (git 7042f62-dirty)"
        );
        assert_eq!(stamp("0.1.0", None), "0.1.0 (git unknown)");
    }

    #[test]
    fn outside_a_repository_there_is_no_commit_and_nothing_to_watch() {
        let dir = tempfile::tempdir().unwrap();
        if git(dir.path().parent().unwrap(), &["rev-parse", "--git-dir"]).is_some() {
            return; // the temp dir is inside a repository: nothing to show
        }
        assert_eq!(commit(dir.path()), None);
        assert!(watched_files(dir.path()).is_empty());
    }

    #[test]
    fn a_repository_gives_its_hash_dirty_when_changed() {
        if !git_available() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path();
        run_git(repo, &["init", "-q", "-b", "main"]);
        assert_eq!(commit(repo), None, "no commit yet");
        std::fs::write(repo.join("a"), "a").unwrap();
        run_git(repo, &["add", "a"]);
        run_git(repo, &["commit", "-q", "-m", "a"]);
        let hash = git(repo, &["rev-parse", "--short", "HEAD"]).unwrap();
        assert_eq!(commit(repo), Some(hash.clone()));
        let watched = watched_files(repo);
        assert_eq!(
            watched,
            [repo.join(".git/HEAD"), repo.join(".git/refs/heads/main")]
        );

        std::fs::write(repo.join("a"), "changed").unwrap();
        assert_eq!(commit(repo), Some(format!("{hash}-dirty")));

        // A packed branch is watched through packed-refs.
        run_git(repo, &["pack-refs", "--all"]);
        assert_eq!(
            watched_files(repo),
            [repo.join(".git/HEAD"), repo.join(".git/packed-refs")]
        );
    }
}
