//! `peerdex-bench transfer`: the transfer targets of docs/PERFORMANCE.md,
//! measured against a plain TCP copy of the same file in the same run.
//!
//! Per round, alternated (A B C A B C ...), on one random file:
//! - `plain`: [`plain_copy`](crate::plain_copy), the ceiling (fsync'd like
//!   the client's result);
//! - `ours`: the verified piece download. With one source, the real
//!   `peerdex` shell's `GET_FILE` (timed from writing the command to its
//!   `c> GET_FILE OK`); with several (or `--via-worker`), the client
//!   library's `fetch` over the sources' list in a
//!   [`fetch_worker`](crate::fetch_worker) child, which reports the bytes
//!   it fetched;
//! - `classic`: the classic `GET_FILE` exchange (no size, no verification),
//!   through the same worker: the "without verification" number.
//!
//! Every result is compared byte for byte with the source before it counts.
//! The downloading process's VmRSS is sampled every 20 ms and its VmHWM
//! read at the end. `--kill-one` SIGKILLs one serving shell once the
//! download's state file says `--kill-at` of the pieces are done, and
//! reports completion, integrity, bytes fetched and the progress series.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::process::Command;

use crate::fetch_worker::field;
use crate::part_progress::pieces_done;
use crate::peer_procs::{list_users, start_server, start_shell, Proc};
use crate::plain_copy;
use crate::transfer_report::{Measured, Method, Summary};

/// The published name of the payload.
const FILE: &str = "payload.bin";
/// Piece size peerdex publishes with.
const PIECE: u64 = 1 << 20;

#[derive(Debug, Args)]
pub struct TransferArgs {
    /// Size of the random file, MiB.
    #[arg(long)]
    pub size_mib: u64,
    /// Serving peers (each a `peerdex` shell publishing the file).
    #[arg(long, default_value_t = 1)]
    pub sources: usize,
    /// SIGKILL one serving shell mid-transfer (needs --sources >= 2; one
    /// round).
    #[arg(long)]
    pub kill_one: bool,
    /// Fraction of pieces done (per the state file) at which to kill.
    #[arg(long, default_value_t = 0.3)]
    pub kill_at: f64,
    /// Alternated rounds.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Where to create the working directory (default: the system temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Where `peerdex` and `peerdex-server` are.
    #[arg(long, default_value = "target/release")]
    pub bin_dir: PathBuf,
    /// With one source, use the worker (the library) instead of the shell.
    #[arg(long)]
    pub via_worker: bool,
    /// Extra arguments for the worker's engine (e.g. "--in-flight 8"),
    /// whitespace-separated; for finding what limits, not for the record.
    #[arg(long, allow_hyphen_values = true)]
    pub worker_args: Option<String>,
    /// Skip the classic GET_FILE runs.
    #[arg(long)]
    pub no_classic: bool,
    /// Pause between runs, seconds (lets writeback of the last run settle).
    #[arg(long, default_value_t = 2.0)]
    pub pause: f64,
}

/// The working directory, removed with everything in it at the end.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_dir_all(&self.0) {
            eprintln!("transfer: cannot remove {}: {err}", self.0.display());
        }
    }
}

/// Everything running for the benchmark.
struct Setup {
    root: PathBuf,
    payload: PathBuf,
    size: u64,
    log: PathBuf,
    _server: Proc,
    serving: Vec<Proc>,
    /// `ip:port` of each serving shell's listener, in `serving` order.
    addrs: Vec<String>,
    downloader: Proc,
}

pub async fn run(args: TransferArgs) -> anyhow::Result<bool> {
    anyhow::ensure!(args.size_mib > 0, "--size-mib must be at least 1");
    anyhow::ensure!(args.sources >= 1, "--sources must be at least 1");
    anyhow::ensure!(args.rounds >= 1, "--rounds must be at least 1");
    anyhow::ensure!(
        !args.kill_one || args.sources >= 2,
        "--kill-one needs --sources >= 2"
    );
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let work = WorkDir(base.join(format!("peerdex-transfer-{}", std::process::id())));
    std::fs::create_dir_all(&work.0).with_context(|| format!("creating {}", work.0.display()))?;
    let load_before = loadavg();
    let mut setup = set_up(&args, &work.0).await?;
    let pause = crate::secs(args.pause, "--pause")?;
    let rounds = if args.kill_one { 1 } else { args.rounds };
    let mut runs: Vec<Measured> = Vec::new();
    let mut all_ok = true;
    for round in 1..=rounds {
        let mut methods = vec![Method::Plain, Method::Ours];
        if !args.no_classic && !args.kill_one {
            methods.push(Method::Classic);
        }
        for method in methods {
            tokio::time::sleep(pause).await;
            let measured = measure(&mut setup, &args, method, round).await?;
            all_ok &= measured.intact;
            println!("{}", measured.line());
            runs.push(measured);
        }
    }
    let summary = Summary {
        size: setup.size,
        sources: args.sources,
        kill_one: args.kill_one,
        runs,
        load_before,
        load_after: loadavg(),
    };
    summary.print();
    for shell in std::mem::take(&mut setup.serving) {
        shell.close().await;
    }
    setup.downloader.close().await;
    Ok(all_ok)
}

/// Creates the file, starts the server and the shells, publishes.
async fn set_up(args: &TransferArgs, root: &Path) -> anyhow::Result<Setup> {
    let size = args.size_mib * (1 << 20);
    let payload = root.join(FILE);
    let started = Instant::now();
    {
        let payload = payload.clone();
        tokio::task::spawn_blocking(move || write_random(&payload, size)).await??;
    }
    println!(
        "transfer: {} MiB random file {} written in {:.1} s",
        args.size_mib,
        payload.display(),
        started.elapsed().as_secs_f64()
    );
    let log = root.join("children.log");
    let data = root.join("data");
    std::fs::create_dir_all(&data)?;
    let (server, port) = start_server(&args.bin_dir, &data, &log).await?;
    // Publishing hashes the file: allow for a slow disk.
    let publish_wait = Duration::from_secs(60 + size / (50 << 20));
    let mut serving = Vec::new();
    for i in 0..args.sources {
        let share = root.join(format!("share{i}"));
        std::fs::create_dir_all(&share)?;
        // A hard link: same inode, same page cache, no extra disk.
        std::fs::hard_link(&payload, share.join(FILE))?;
        let name = format!("src{i}");
        let mut shell = start_shell(&args.bin_dir, &name, port, &share, &log)?;
        let wait = Duration::from_secs(10);
        shell
            .expect(&format!("REGISTER {name}"), "REGISTER OK", wait)
            .await?;
        shell
            .expect(&format!("CONNECT {name}"), "CONNECT OK", wait)
            .await?;
        shell
            .expect(&format!("PUBLISH {FILE} bench"), "PUBLISH OK", publish_wait)
            .await?;
        serving.push(shell);
    }
    let dl = root.join("dl");
    std::fs::create_dir_all(&dl)?;
    let mut downloader = start_shell(&args.bin_dir, "dl", port, &dl, &log)?;
    let wait = Duration::from_secs(10);
    downloader
        .expect("REGISTER dl", "REGISTER OK", wait)
        .await?;
    downloader.expect("CONNECT dl", "CONNECT OK", wait).await?;
    let users = list_users(&mut downloader, args.sources + 1).await?;
    let mut addrs = Vec::new();
    for i in 0..args.sources {
        let name = format!("src{i}");
        let (_, ip, port) = users
            .iter()
            .find(|(user, _, _)| *user == name)
            .with_context(|| format!("{name} not in LIST_USERS"))?;
        addrs.push(format!("{ip}:{port}"));
    }
    println!(
        "transfer: server on port {port}, {} serving shell(s) at {} (pids {}), downloader pid {}",
        args.sources,
        addrs.join(" "),
        serving
            .iter()
            .map(|shell| shell.pid.to_string())
            .collect::<Vec<_>>()
            .join(" "),
        downloader.pid
    );
    Ok(Setup {
        root: root.to_path_buf(),
        payload,
        size,
        log,
        _server: server,
        serving,
        addrs,
        downloader,
    })
}

/// One run of one method.
async fn measure(
    setup: &mut Setup,
    args: &TransferArgs,
    method: Method,
    round: usize,
) -> anyhow::Result<Measured> {
    let local = setup
        .root
        .join("dl")
        .join(format!("{}-{round}.bin", method.name()));
    let deadline = Duration::from_secs(120 + setup.size / (20 << 20));
    let mut measured = Measured::new(method, round, setup.size);
    match method {
        Method::Plain => {
            let (payload, target) = (setup.payload.clone(), local.clone());
            let copied =
                tokio::task::spawn_blocking(move || plain_copy::copy(&payload, &target)).await??;
            measured.elapsed = copied.elapsed;
            anyhow::ensure!(
                copied.bytes == setup.size,
                "plain copy moved {} bytes",
                copied.bytes
            );
        }
        Method::Ours if args.sources == 1 && !args.via_worker => {
            let command = format!("GET_FILE src0 {FILE} {}", local.display());
            let started = Instant::now();
            setup.downloader.send(&command).await?;
            let pid = setup.downloader.pid;
            let line = watch(&mut setup.downloader, pid, &mut measured, None, deadline).await?;
            measured.elapsed = started.elapsed();
            if line != "c> GET_FILE OK" {
                bail!(
                    "{command:?} answered {line:?} (see {})",
                    setup.log.display()
                );
            }
            measured.hwm_kib = crate::proc_stats::sample(pid).ok().map(|s| s.hwm_kib);
        }
        Method::Ours | Method::Classic => {
            let exe = std::env::current_exe().context("locating this executable")?;
            let mut cmd = Command::new(exe);
            cmd.arg("fetch-worker")
                .args(["--file", FILE, "--out"])
                .arg(&local);
            let sources = if method == Method::Classic {
                &setup.addrs[..1]
            } else {
                &setup.addrs[..]
            };
            for addr in sources {
                cmd.args(["--source", addr]);
            }
            if method == Method::Classic {
                cmd.arg("--classic");
            } else if let Some(extra) = &args.worker_args {
                cmd.args(extra.split_whitespace());
            }
            let started = Instant::now();
            let mut worker = Proc::spawn("fetch-worker", cmd, &setup.log)?;
            let pid = worker.pid;
            let victim = (args.kill_one && method == Method::Ours).then(|| {
                let count = setup.size.div_ceil(PIECE);
                let threshold = ((count as f64) * args.kill_at).ceil() as u64;
                (&mut setup.serving[0], threshold, local.as_path())
            });
            let line = watch(&mut worker, pid, &mut measured, victim, deadline).await?;
            measured.elapsed = started.elapsed();
            worker.close().await;
            if !line.starts_with("fetch-worker OK") {
                bail!("{method:?}: {line} (see {})", setup.log.display());
            }
            measured.hwm_kib = field(&line, "hwm_kib").and_then(|v| v.parse().ok());
            measured.bytes_fetched = field(&line, "bytes_fetched").and_then(|v| v.parse().ok());
        }
    }
    let (payload, result) = (setup.payload.clone(), local.clone());
    measured.intact = tokio::task::spawn_blocking(move || same_content(&payload, &result))
        .await?
        .with_context(|| format!("comparing {}", local.display()))?;
    std::fs::remove_file(&local).with_context(|| format!("removing {}", local.display()))?;
    Ok(measured)
}

/// Waits for the result line of `proc`, sampling the downloader's VmRSS
/// every 20 ms and, with a victim, the state file's progress; kills the
/// victim once `threshold` pieces are done.
async fn watch(
    proc: &mut Proc,
    pid: u32,
    measured: &mut Measured,
    mut victim: Option<(&mut Proc, u64, &Path)>,
    deadline: Duration,
) -> anyhow::Result<String> {
    let started = Instant::now();
    loop {
        if started.elapsed() > deadline {
            bail!("no result within {deadline:?}");
        }
        tokio::select! {
            line = proc.line(deadline) => return line,
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
        if let Ok(sample) = crate::proc_stats::sample(pid) {
            measured.max_rss_kib = measured.max_rss_kib.max(Some(sample.rss_kib));
        }
        if let Some((shell, threshold, local)) = victim.as_mut() {
            if let Some(done) = pieces_done(local) {
                let t = started.elapsed().as_secs_f64();
                if measured.progress.last().map(|&(_, d)| d) != Some(done) {
                    measured.progress.push((t, done));
                }
                if measured.killed_at.is_none() && done >= *threshold {
                    shell.kill().await;
                    measured.killed_at = Some((t, done));
                    println!(
                        "transfer: SIGKILLed {} (pid {}) at {t:.2} s, {done} pieces done",
                        shell.name, shell.pid
                    );
                }
            }
        }
    }
}

/// Writes `size` random bytes (a fast seeded generator: content that does
/// not compress and is not all zeros, cheaply).
fn write_random(path: &Path, size: u64) -> anyhow::Result<()> {
    use std::io::Write;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut rng = SmallRng::seed_from_u64(u64::from(std::process::id()));
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        file.write_all(&buf[..n])?;
        left -= n as u64;
    }
    file.flush()?;
    Ok(())
}

/// Byte-for-byte comparison (stronger than a hash, and independent of the
/// client's own hashing code).
fn same_content(a: &Path, b: &Path) -> std::io::Result<bool> {
    let (mut fa, mut fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = read_full(&mut fa, &mut ba)?;
        let m = read_full(&mut fb, &mut bb)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::io::Read;
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// `/proc/loadavg`'s three load averages, for the record.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
