//! A test scene: a temporary directory with a real server (or the port of
//! another directory) and named shells, each with its own working dir
//! `<tmp>/<name>/` and share dir `<tmp>/<name>/share/`. Shared by the
//! end-to-end tests that drive several shells at once.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::{ServerProcess, Shell};

/// A server (optional) and the directories of the shells started in it.
pub struct Scene {
    /// The directory port the shells are pointed at.
    port: u16,
    /// Our server, when the scene started one. Declared before `dir` so it
    /// is dropped (killed) before its data dir is removed.
    server: Option<ServerProcess>,
    /// Holds the server's data dir and every shell's dirs.
    dir: tempfile::TempDir,
}

impl Scene {
    /// A scene with a freshly started real server.
    pub fn new() -> Scene {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = ServerProcess::start(&dir.path().join("data"), &[]).expect("server starts");
        Scene {
            port: server.port,
            server: Some(server),
            dir,
        }
    }

    /// A scene whose shells talk to the directory at `port` (e.g. a fake).
    pub fn against(port: u16) -> Scene {
        Scene {
            port,
            server: None,
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// The directory port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The scene's server, when it started one.
    pub fn server(&mut self) -> Option<&mut ServerProcess> {
        self.server.as_mut()
    }

    /// Working dir of shell `name` (created).
    pub fn workdir(&self, name: &str) -> PathBuf {
        self.share(name)
            .parent()
            .expect("share has a parent")
            .to_path_buf()
    }

    /// Share dir of shell `name` (created).
    pub fn share(&self, name: &str) -> PathBuf {
        let share = self.dir.path().join(name).join("share");
        std::fs::create_dir_all(&share).expect("create share dir");
        share
    }

    /// `file` in the working dir of shell `name`.
    pub fn path(&self, name: &str, file: &str) -> PathBuf {
        self.workdir(name).join(file)
    }

    /// Starts shell `name`.
    pub fn spawn(&self, name: &str) -> Shell {
        self.spawn_env(name, &[])
    }

    /// Starts shell `name` with extra environment variables.
    pub fn spawn_env(&self, name: &str, env: &[(&str, &str)]) -> Shell {
        let share = self.share(name);
        Shell::spawn_with_env(self.port, &share, &self.workdir(name), &[], env)
            .expect("shell starts")
    }

    /// Starts shell `name` and registers and connects `user` through it.
    pub fn shell(&self, name: &str, user: &str) -> Shell {
        self.shell_env(name, user, &[])
    }

    /// [`Scene::shell`] with extra environment variables.
    pub fn shell_env(&self, name: &str, user: &str, env: &[(&str, &str)]) -> Shell {
        let mut shell = self.spawn_env(name, env);
        shell
            .expect(&format!("REGISTER {user}"), "REGISTER OK")
            .expect("REGISTER");
        shell
            .expect(&format!("CONNECT {user}"), "CONNECT OK")
            .expect("CONNECT");
        shell
    }
}

impl Default for Scene {
    fn default() -> Self {
        Scene::new()
    }
}

/// Writes `len` random bytes to `path`; returns their BLAKE3 hash.
pub fn random_file(path: &Path, len: usize) -> blake3::Hash {
    let mut out = BufWriter::new(File::create(path).expect("create file"));
    let mut hasher = blake3::Hasher::new();
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len());
        rand::fill(&mut chunk[..n]);
        hasher.update(&chunk[..n]);
        out.write_all(&chunk[..n]).expect("write file");
        left -= n;
    }
    out.flush().expect("flush file");
    hasher.finalize()
}

/// The BLAKE3 hash of the file at `path`.
pub fn hash_file(path: &Path) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new();
    hasher
        .update_reader(File::open(path).expect("open file"))
        .expect("read file");
    hasher.finalize()
}
