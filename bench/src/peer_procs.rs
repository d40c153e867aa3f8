//! The real programs a transfer benchmark runs: a `peerdex-server` and
//! `peerdex` shells driven through piped stdin, their stdout read line by
//! line. Measuring the shipped binaries (not a library call in the bench's
//! own process) is what makes the numbers the user's numbers, and gives the
//! downloader its own /proc entry for memory.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

/// A child program with its stdout as a stream of lines.
pub struct Proc {
    pub name: String,
    pub pid: u32,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Proc {
    /// Starts `cmd` with piped stdin/stdout; stderr is appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<Proc> {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true);
        let mut child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        let pid = child
            .id()
            .with_context(|| format!("{name} exited at once"))?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::unbounded_channel();
        // Drained all the time, so the child never blocks on a full pipe.
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Proc {
            name: name.to_string(),
            pid,
            child,
            stdin,
            lines,
        })
    }

    /// Writes one line to the child's stdin.
    pub async fn send(&mut self, line: &str) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("stdin closed")?;
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .with_context(|| format!("writing to {}", self.name))?;
        stdin.flush().await?;
        Ok(())
    }

    /// The next stdout line, within `wait`.
    pub async fn line(&mut self, wait: Duration) -> anyhow::Result<String> {
        match tokio::time::timeout(wait, self.lines.recv()).await {
            Ok(Some(line)) => Ok(line),
            Ok(None) => bail!("{} closed its stdout", self.name),
            Err(_) => bail!("{}: no output line within {wait:?}", self.name),
        }
    }

    /// Sends `command` and checks that its first line is `c> <want>`.
    pub async fn expect(
        &mut self,
        command: &str,
        want: &str,
        wait: Duration,
    ) -> anyhow::Result<()> {
        self.send(command).await?;
        let line = self.line(wait).await?;
        if line != format!("c> {want}") {
            bail!(
                "{}: {command:?} answered {line:?}, expected \"c> {want}\"",
                self.name
            );
        }
        Ok(())
    }

    /// SIGKILL (the child is ours: killed by its handle, never by name).
    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }

    /// Closes stdin (a shell then disconnects and exits) and waits a moment;
    /// kills what is still running.
    pub async fn close(mut self) {
        self.stdin = None;
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            self.kill().await;
        }
    }
}

/// Starts `peerdex-server -p 0 --bind 127.0.0.1 --data-dir DATA` and waits
/// for its `s> init server ip:port` line.
pub async fn start_server(bin_dir: &Path, data: &Path, log: &Path) -> anyhow::Result<(Proc, u16)> {
    let mut cmd = Command::new(bin_dir.join("peerdex-server"));
    cmd.args(["-p", "0", "--bind", "127.0.0.1", "--data-dir"])
        .arg(data);
    let mut server = Proc::spawn("peerdex-server", cmd, log)?;
    loop {
        let line = server.line(Duration::from_secs(30)).await?;
        if let Some(rest) = line.strip_prefix("s> init server ") {
            let addr: SocketAddr = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .parse()
                .with_context(|| format!("server announced {rest:?}"))?;
            return Ok((server, addr.port()));
        }
    }
}

/// Starts a `peerdex` shell on the directory at `port`, serving `share`,
/// its peer listener on loopback.
pub fn start_shell(
    bin_dir: &Path,
    name: &str,
    port: u16,
    share: &Path,
    log: &Path,
) -> anyhow::Result<Proc> {
    let mut cmd = Command::new(bin_dir.join("peerdex"));
    cmd.args(["-s", "127.0.0.1", "-p", &port.to_string()])
        .arg("--share-dir")
        .arg(share)
        .arg("--history")
        .arg(share.join(".history"))
        .args(["--listen", "127.0.0.1:0"]);
    Proc::spawn(name, cmd, log)
}

/// `LIST_USERS` through `shell`: `(name, ip, port)` of the `count` users
/// expected to be connected.
pub async fn list_users(
    shell: &mut Proc,
    count: usize,
) -> anyhow::Result<Vec<(String, String, u16)>> {
    shell
        .expect("LIST_USERS", "LIST_USERS OK", Duration::from_secs(10))
        .await?;
    let mut users = Vec::with_capacity(count);
    for _ in 0..count {
        let line = shell.line(Duration::from_secs(10)).await?;
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some(name), Some(ip), Some(port)) => users.push((
                name.to_string(),
                ip.to_string(),
                port.parse()
                    .with_context(|| format!("bad port in {line:?}"))?,
            )),
            _ => bail!("unexpected LIST_USERS line {line:?}"),
        }
    }
    Ok(users)
}
