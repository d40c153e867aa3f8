//! End-to-end test harness: starts the real `peerdex-server`, `peerdex` and
//! `peerdex-logger` binaries and talks to them through pipes and sockets.
//!
//! Layout:
//! - [`bin`] finds a binary next to the test executable, building the three
//!   binaries once per test process, so `cargo test --workspace` (or
//!   `cargo test -p peerdex-tests`) is enough.
//! - [`ServerProcess`], [`LoggerProcess`], [`Shell`]: one child process each,
//!   killed on drop, with line reads bounded by a timeout.
//! - [`raw`]: speak NUL-terminated fields to a server or a peer listener.
//! - [`closed_port`]: a loopback port with nobody listening.
//!
//! Every wait is bounded: nothing here can hang a test run.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub mod classic;
pub mod raw;
pub mod scene;

/// Default bound on any single wait (a line, an exit, a start-up).
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// The directory holding the workspace binaries of the profile these tests
/// were built with: `target/<profile>/` (the test executable lives in
/// `target/<profile>/deps/`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test executable has a parent dir");
    if deps.file_name() == Some(OsStr::new("deps")) {
        deps.parent().expect("deps has a parent").to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

/// Builds the workspace binaries once per test process, with the profile of
/// the running tests. Panics with cargo's output if the build fails.
fn ensure_built() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "peerdex-server",
            "-p",
            "peerdex-client",
            "-p",
            "peerdex-logger",
            "-p",
            "peerdex-bench",
        ]);
        let exe = std::env::current_exe().expect("current_exe");
        if exe.components().any(|c| c.as_os_str() == "release") {
            cmd.arg("--release");
        }
        // The workspace root: this crate's manifest dir's parent.
        cmd.current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
        let out = cmd.output().expect("cannot run cargo build");
        assert!(
            out.status.success(),
            "building the peerdex binaries failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// Path of a workspace binary, built if needed.
pub fn bin(name: &str) -> PathBuf {
    ensure_built();
    let path = bin_dir().join(name);
    assert!(path.exists(), "{} does not exist", path.display());
    path
}

/// A loopback port nobody listens on (bound, noted, released).
pub fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// A child process whose stdout is read line by line by a thread and whose
/// stderr is collected for diagnostics.
pub struct Proc {
    /// What was started, for messages.
    name: String,
    /// The process; killed and reaped on drop.
    child: Child,
    /// Its stdin, until closed.
    stdin: Option<ChildStdin>,
    /// Lines of its stdout, without the newline; disconnected at EOF.
    lines: Receiver<String>,
    /// Everything it wrote to stderr so far.
    stderr: Arc<Mutex<String>>,
    /// Its exit status, once reaped.
    status: Option<ExitStatus>,
}

impl Proc {
    /// Starts `cmd` with all three standard streams piped.
    pub fn spawn(name: &str, mut cmd: Command) -> Result<Proc> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            loop {
                let mut buf = Vec::new();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if buf.last() == Some(&b'\n') {
                            buf.pop();
                        }
                        let line = String::from_utf8_lossy(&buf).into_owned();
                        if tx.send(line).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let collected = Arc::new(Mutex::new(String::new()));
        let sink = collected.clone();
        thread::spawn(move || {
            let mut stderr = stderr;
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    return;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Ok(Proc {
            name: name.to_string(),
            stdin: child.stdin.take(),
            child,
            lines,
            stderr: collected,
            status: None,
        })
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// The next stdout line, or `None` after `timeout` or at end of output.
    pub fn read_line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// The next stdout line; an error names the process and shows its stderr.
    pub fn expect_line(&self, timeout: Duration) -> Result<String> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => Ok(line),
            Err(RecvTimeoutError::Timeout) => bail!(
                "{}: no stdout line within {timeout:?}; stderr:\n{}",
                self.name,
                self.stderr()
            ),
            Err(RecvTimeoutError::Disconnected) => {
                bail!("{}: stdout closed; stderr:\n{}", self.name, self.stderr())
            }
        }
    }

    /// All stdout lines until end of output, waiting at most `timeout`.
    pub fn rest_of_stdout(&self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut rest = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => rest.push(line),
                Err(_) => return rest,
            }
        }
    }

    /// Writes `line` and a newline to stdin.
    pub fn send(&mut self, line: &str) -> Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow!("{}: stdin already closed", self.name))?;
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .with_context(|| format!("{}: cannot write to stdin", self.name))
    }

    /// Closes stdin (end of input).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits at most `timeout` for the process to exit.
    pub fn wait(&mut self, timeout: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                self.status = Some(status);
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!(
                    "{}: still running after {timeout:?}; stderr:\n{}",
                    self.name,
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.status.is_none() && matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) -> Result<ExitStatus> {
        if self.status.is_none() {
            let _ = self.child.kill();
        }
        self.wait(TIMEOUT)
    }

    /// SIGTERM, then wait for the exit.
    pub fn terminate(&mut self) -> Result<ExitStatus> {
        if self.status.is_none() {
            kill(self.pid(), Signal::SIGTERM).context("SIGTERM")?;
        }
        self.wait(TIMEOUT)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A running `peerdex-server` on 127.0.0.1.
pub struct ServerProcess {
    /// The process.
    pub proc: Proc,
    /// The port it listens on.
    pub port: u16,
    /// Its data directory.
    pub data_dir: PathBuf,
}

impl ServerProcess {
    /// Starts a server on a free port.
    pub fn start(data_dir: &Path, extra_args: &[&str]) -> Result<ServerProcess> {
        Self::start_on(0, data_dir, extra_args)
    }

    /// Starts a server on `port` (0: a free one) and waits for its
    /// `s> init server 127.0.0.1:<port>` line.
    pub fn start_on(port: u16, data_dir: &Path, extra_args: &[&str]) -> Result<ServerProcess> {
        let proc = Self::spawn(port, data_dir, extra_args)?;
        let line = proc
            .expect_line(TIMEOUT)
            .context("waiting for the server's start-up line")?;
        let port = line
            .strip_prefix("s> init server 127.0.0.1:")
            .and_then(|p| p.trim().parse::<u16>().ok())
            .ok_or_else(|| anyhow!("unexpected start-up line {line:?}"))?;
        Ok(ServerProcess {
            proc,
            port,
            data_dir: data_dir.to_path_buf(),
        })
    }

    /// Spawns the server without waiting for anything (for tests that expect
    /// it to fail at start-up).
    pub fn spawn(port: u16, data_dir: &Path, extra_args: &[&str]) -> Result<Proc> {
        let mut cmd = Command::new(bin("peerdex-server"));
        cmd.arg("-p")
            .arg(port.to_string())
            .args(["--bind", "127.0.0.1", "--data-dir"])
            .arg(data_dir)
            .args(extra_args);
        Proc::spawn("peerdex-server", cmd)
    }

    /// Starts a server on the same port and data dir as this one had
    /// (after it was stopped).
    pub fn restart(&self, extra_args: &[&str]) -> Result<ServerProcess> {
        // The port was just released; retry briefly in case it lingers.
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match Self::start_on(self.port, &self.data_dir, extra_args) {
                Ok(server) => return Ok(server),
                Err(err) if Instant::now() >= deadline => return Err(err),
                Err(_) => thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    pub fn kill9(&mut self) -> Result<ExitStatus> {
        self.proc.kill9()
    }

    pub fn terminate(&mut self) -> Result<ExitStatus> {
        self.proc.terminate()
    }
}

/// A running `peerdex-logger` on 127.0.0.1.
pub struct LoggerProcess {
    /// The process; [`Proc::read_line`] reads the printed records.
    pub proc: Proc,
    /// The port it listens on.
    pub port: u16,
}

impl LoggerProcess {
    /// Starts a logger on `port` (0: a free one) and waits for its
    /// `logger listening on <ip>:<port>` line.
    pub fn start(port: u16) -> Result<LoggerProcess> {
        let mut cmd = Command::new(bin("peerdex-logger"));
        cmd.args(["-p", &port.to_string(), "--bind", "127.0.0.1"]);
        let proc = Proc::spawn("peerdex-logger", cmd)?;
        let line = proc
            .expect_line(TIMEOUT)
            .context("waiting for the logger's start-up line")?;
        let port = line
            .strip_prefix("logger listening on ")
            .and_then(|addr| addr.rsplit(':').next())
            .and_then(|p| p.trim().parse::<u16>().ok())
            .ok_or_else(|| anyhow!("unexpected start-up line {line:?}"))?;
        Ok(LoggerProcess { proc, port })
    }

    /// Restarts on `port`, retrying briefly while the port is released.
    pub fn start_retrying(port: u16) -> Result<LoggerProcess> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match Self::start(port) {
                Ok(logger) => return Ok(logger),
                Err(err) if Instant::now() >= deadline => return Err(err),
                Err(_) => thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// The next printed line.
    pub fn read_line(&self, timeout: Duration) -> Option<String> {
        self.proc.read_line(timeout)
    }
}

/// A `peerdex` shell driven through its stdin and stdout.
pub struct Shell {
    /// The process.
    pub proc: Proc,
}

impl Shell {
    /// Starts `peerdex -s 127.0.0.1 -p PORT --share-dir SHARE` in `cwd`,
    /// with its peer listener on loopback, a private history file and a
    /// private state dir ([`state_dir_of`]).
    pub fn spawn(
        server_port: u16,
        share_dir: &Path,
        cwd: &Path,
        extra_args: &[&str],
    ) -> Result<Shell> {
        Self::spawn_with_env(server_port, share_dir, cwd, extra_args, &[])
    }

    /// Like [`Shell::spawn`] with extra environment variables, e.g.
    /// `PEERDEX_LOG=debug` to see on stderr which sources a download used.
    pub fn spawn_with_env(
        server_port: u16,
        share_dir: &Path,
        cwd: &Path,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Shell> {
        let mut cmd = Command::new(bin("peerdex"));
        cmd.envs(env.iter().copied());
        cmd.args(["-s", "127.0.0.1", "-p", &server_port.to_string()])
            .arg("--share-dir")
            .arg(share_dir)
            .arg("--history")
            .arg(cwd.join(".peerdex_history"));
        if !extra_args.contains(&"--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        if !extra_args.contains(&"--state-dir") {
            // What the shell learns about servers stays with this test,
            // beside the working dir (tests look for stray files in it).
            cmd.arg("--state-dir").arg(state_dir_of(cwd));
        }
        cmd.args(extra_args).current_dir(cwd);
        Ok(Shell {
            proc: Proc::spawn("peerdex", cmd)?,
        })
    }

    pub fn send(&mut self, line: &str) -> Result<()> {
        self.proc.send(line)
    }

    pub fn read_line(&self, timeout: Duration) -> Option<String> {
        self.proc.read_line(timeout)
    }

    /// Sends `command` and returns its first output line.
    pub fn run(&mut self, command: &str) -> Result<String> {
        self.send(command)?;
        self.proc
            .expect_line(TIMEOUT)
            .with_context(|| format!("no result line for {command:?}"))
    }

    /// Sends `command` and checks that its result line is `c> <result>`.
    pub fn expect(&mut self, command: &str, result: &str) -> Result<()> {
        let line = self.run(command)?;
        if line != format!("c> {result}") {
            bail!(
                "{command:?}: expected {:?}, got {line:?}; stderr:\n{}",
                format!("c> {result}"),
                self.proc.stderr()
            );
        }
        Ok(())
    }

    /// Sends `LIST_USERS` and returns `(name, ip, port)` of each listed user.
    pub fn list_users(&mut self) -> Result<Vec<(String, String, u16)>> {
        self.send("LIST_USERS")?;
        let first = self.proc.expect_line(TIMEOUT)?;
        if first != "c> LIST_USERS OK" {
            bail!("LIST_USERS: got {first:?}; stderr:\n{}", self.proc.stderr());
        }
        // The list lines follow at once; a short wait ends the list.
        let mut users = Vec::new();
        while let Some(line) = self.read_line(Duration::from_millis(500)) {
            let fields: Vec<&str> = line.trim_start_matches('\t').split(' ').collect();
            match fields[..] {
                [name, ip, port] => users.push((name.into(), ip.into(), port.parse()?)),
                _ => bail!("LIST_USERS: bad line {line:?}"),
            }
        }
        Ok(users)
    }

    pub fn close_stdin(&mut self) {
        self.proc.close_stdin()
    }

    /// Closes stdin and waits for the exit.
    pub fn quit(&mut self) -> Result<ExitStatus> {
        self.proc.close_stdin();
        self.proc.wait(TIMEOUT)
    }

    pub fn wait(&mut self, timeout: Duration) -> Result<ExitStatus> {
        self.proc.wait(timeout)
    }
}

/// The state dir a shell started in `cwd` gets: `.<name>.peerdex-state`
/// beside `cwd`, so one working dir keeps its findings across sessions.
pub fn state_dir_of(cwd: &Path) -> PathBuf {
    let name = cwd
        .file_name()
        .map_or_else(|| "shell".into(), |n| n.to_string_lossy().into_owned());
    cwd.parent()
        .unwrap_or(cwd)
        .join(format!(".{name}.peerdex-state"))
}

/// Polls `check` every 20 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}
