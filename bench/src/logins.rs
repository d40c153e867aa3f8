//! `peerdex-bench logins`: what password logins cost the directory.
//!
//! - (a) Rate: K sessions log in with the correct password to protected
//!   accounts, at each concurrency of `--concurrency`, for `--duration`
//!   each; logins/s, latency and the server's CPU (from /proc) per login.
//!   A login is one argon2id verification on the server's bounded pool,
//!   so the rate flattens at the pool's size and the CPU per login is
//!   the hash's.
//! - (b) Isolation: the LIST_CONTENT p99 of M classic clients alone, then
//!   while a storm of logins (some with wrong passwords) is attempted at
//!   once, side by side in one run. The contract says hashing never runs
//!   on the threads that serve other clients; the ratio of the two p99s
//!   says what it costs them anyway (the CPUs are shared).
//!
//! Set-up (untimed): fresh protected accounts, named with a random run tag
//! so that a directory used before is no obstacle, each registered
//! classically, then protected by `SET_PASSWORD` from a session of its own.
//! Wrong logins come each from a source address of their own (any
//! 127.x.y.z reaches a loopback server) and go to accounts of their own, so
//! the server's guessing delay, which counts failures per account and per
//! address, does not turn the storm into sleeping: the storm measures the
//! hashing. The rate part runs first, before any failure.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use futures::future::join_all;
use futures::stream::{self, StreamExt, TryStreamExt};
use peerdex_protocol::frame::LoginCode;
use peerdex_protocol::listing::ListKind;
use peerdex_protocol::{Operation, Outcome, Secret};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use tokio::time::Instant;

use crate::client::{call, call_list, ErrorLog};
use crate::lanes::{random_password, set_password};
use crate::model::{self, ContentCheck, DateCache, Ignore};
use crate::populate;
use crate::proc_stats::{self, ProcSample};
use crate::session::{login_once, Session};
use crate::stats::{ms, Samples, Summary};

#[derive(Debug, Args)]
pub struct LoginsArgs {
    /// Server host (loopback: the wrong logins use 127.x.y.z sources).
    #[arg(short = 's', long, default_value = "127.0.0.1")]
    pub host: String,
    /// Server port.
    #[arg(short, long)]
    pub port: u16,
    /// The server's pid, for its CPU (from /proc).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Protected accounts the correct logins use (K).
    #[arg(long, default_value_t = 64)]
    pub accounts: usize,
    /// Concurrencies of the rate part, e.g. 1,2,4,8.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16")]
    pub concurrency: Vec<usize>,
    /// Seconds per concurrency in the rate part.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Directory users for the LIST_CONTENT clients (populated classically,
    /// `bench-u0..`).
    #[arg(long, default_value_t = 1000)]
    pub users: usize,
    /// Classic LIST_CONTENT clients (M).
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Logins attempted at once in the storm.
    #[arg(long, default_value_t = 200)]
    pub storm: usize,
    /// How many of the storm's logins use a wrong password.
    #[arg(long, default_value_t = 20)]
    pub wrong: usize,
    /// Seconds of the LIST_CONTENT window alone (the storm's window lasts
    /// as long as the storm).
    #[arg(long, default_value_t = 5.0)]
    pub window: f64,
    /// Skip part (b).
    #[arg(long)]
    pub skip_storm: bool,
    /// The server is already populated with --users users.
    #[arg(long)]
    pub skip_populate: bool,
    /// Check LIST_CONTENT contents (needs a real directory, not the null
    /// server).
    #[arg(long)]
    pub verify_content: bool,
    /// Concurrent connections while populating and setting up accounts.
    #[arg(long, default_value_t = 32)]
    pub populate_concurrency: usize,
    /// Per-operation timeout (a login included), seconds.
    #[arg(long, default_value_t = 30.0)]
    pub op_timeout: f64,
}

/// A protected account and its password.
struct Account {
    name: String,
    password: Secret,
}

/// Runs both parts; `Ok(false)` when any login or LIST_CONTENT failed.
pub async fn run(args: LoginsArgs) -> anyhow::Result<bool> {
    anyhow::ensure!(args.accounts > 0, "--accounts must be at least 1");
    anyhow::ensure!(
        args.concurrency.iter().all(|&c| c > 0),
        "every --concurrency must be at least 1"
    );
    anyhow::ensure!(args.wrong <= args.storm, "--wrong must be at most --storm");
    anyhow::ensure!(
        args.skip_storm || (args.clients > 0 && args.users > 0),
        "the storm part needs --clients and --users of at least 1"
    );
    let addr = crate::resolve(&args.host, args.port).await?;
    let timeout = crate::secs(args.op_timeout, "--op-timeout")?;
    let duration = crate::secs(args.duration, "--duration")?;
    let window = crate::secs(args.window, "--window")?;
    let tag = format!("{:06x}", rand::rng().random_range(0..0x100_0000u32));

    let started = Instant::now();
    let wrong_accounts = if args.skip_storm { 0 } else { args.wrong };
    let accounts = create_accounts(&args, addr, &tag, "l", args.accounts, timeout).await?;
    let targets = create_accounts(&args, addr, &tag, "w", wrong_accounts, timeout).await?;
    println!(
        "logins set-up: {} protected accounts (+{} for wrong passwords) in {:.2} s \
         (one argon2 hash each, plus the sessions' logins)",
        accounts.len(),
        targets.len(),
        started.elapsed().as_secs_f64()
    );

    let mut ok = true;
    let accounts = Arc::new(accounts);
    println!(
        "{:>11} {:>8} {:>10} {:>9} {:>9} {:>10} {:>12} {:>7}",
        "concurrency",
        "logins",
        "logins/s",
        "p50 ms",
        "p99 ms",
        "server CPU",
        "CPU ms/login",
        "errors"
    );
    for &concurrency in &args.concurrency {
        let rate = rate(
            addr,
            accounts.clone(),
            concurrency,
            duration,
            timeout,
            args.server_pid,
        )
        .await;
        ok &= rate.errors == 0;
        println!("{}", rate.line(concurrency));
    }

    if !args.skip_storm {
        if !args.skip_populate {
            let p =
                populate::populate(addr, args.users, args.populate_concurrency, timeout).await?;
            crate::report::print_populate(&p);
        }
        ok &= storm(&args, addr, accounts, targets, window, timeout).await?;
    }
    Ok(ok)
}

/// Registers `count` accounts `bl<tag>-<kind><i>` and protects each with a
/// random password from a session of its own.
async fn create_accounts(
    args: &LoginsArgs,
    addr: SocketAddr,
    tag: &str,
    kind: &str,
    count: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<Account>> {
    stream::iter(0..count)
        .map(|i| {
            let name = format!("bl{tag}-{kind}{i}");
            create_account(addr, name, timeout)
        })
        .buffered(args.populate_concurrency.max(1))
        .try_collect()
        .await
}

async fn create_account(
    addr: SocketAddr,
    name: String,
    timeout: Duration,
) -> anyhow::Result<Account> {
    let register = peerdex_protocol::Request {
        datetime: None,
        user: Ok(name.clone()),
        operation: Operation::Register,
    }
    .encode(DateCache::default().get())?;
    let reply = call(addr, &register, peerdex_protocol::OpKind::Register, timeout)
        .await
        .with_context(|| format!("REGISTER {name}"))?;
    anyhow::ensure!(
        reply.outcome() == Outcome::Ok,
        "REGISTER {name} answered {:?}",
        reply.outcome()
    );
    let session = Session::open(addr, &name, &Secret::default(), timeout)
        .await
        .with_context(|| format!("the session of {name}"))?;
    let password = random_password();
    set_password(&session, &name, password.clone(), timeout)
        .await
        .with_context(|| format!("SET_PASSWORD of {name}"))?;
    Ok(Account { name, password })
}

/// What one concurrency of the rate part measured.
struct Rate {
    logins: usize,
    secs: f64,
    latency: Option<Summary>,
    errors: u64,
    server_cpu_secs: Option<f64>,
}

impl Rate {
    fn line(&self, concurrency: usize) -> String {
        let per_sec = self.logins as f64 / self.secs;
        let (p50, p99) = self
            .latency
            .map_or((f64::NAN, f64::NAN), |l| (ms(l.p50), ms(l.p99)));
        let (cpu_pct, per_login) = match self.server_cpu_secs {
            Some(cpu) => (
                format!("{:.0}%", cpu * 100.0 / self.secs),
                format!("{:.1}", cpu * 1e3 / self.logins.max(1) as f64),
            ),
            None => ("-".into(), "-".into()),
        };
        format!(
            "{concurrency:>11} {:>8} {per_sec:>10.1} {p50:>9.1} {p99:>9.1} {cpu_pct:>10} {per_login:>12} {:>7}",
            self.logins, self.errors
        )
    }
}

/// `concurrency` tasks logging in with correct passwords for `duration`.
async fn rate(
    addr: SocketAddr,
    accounts: Arc<Vec<Account>>,
    concurrency: usize,
    duration: Duration,
    timeout: Duration,
    server_pid: Option<u32>,
) -> Rate {
    let log = Arc::new(ErrorLog::new(5));
    let cpu0 = server_pid.and_then(|pid| proc_stats::sample(pid).ok());
    let started = Instant::now();
    let end = started + duration;
    let tasks = (0..concurrency).map(|task| {
        let (accounts, log) = (accounts.clone(), log.clone());
        tokio::spawn(async move {
            let mut samples = Samples::default();
            let mut errors = 0u64;
            let mut next = task;
            while Instant::now() < end {
                let account = &accounts[next % accounts.len()];
                next += concurrency;
                let t0 = Instant::now();
                match login_once(addr, None, &account.name, &account.password, timeout).await {
                    Ok(LoginCode::Ok) => samples.record(t0.elapsed()),
                    other => {
                        errors += 1;
                        log.report(&format!("login of {}", account.name), &format!("{other:?}"));
                    }
                }
            }
            (samples, errors)
        })
    });
    let mut samples = Samples::default();
    let mut errors = 0;
    for done in join_all(tasks).await {
        match done {
            Ok((s, e)) => {
                samples.merge(s);
                errors += e;
            }
            Err(_) => errors += 1,
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu1 = server_pid.and_then(|pid| proc_stats::sample(pid).ok());
    Rate {
        logins: samples.len(),
        secs,
        latency: samples.summarize(),
        errors,
        server_cpu_secs: cpu_secs(cpu0.as_ref(), cpu1.as_ref()),
    }
}

/// Server CPU seconds between two samples.
fn cpu_secs(a: Option<&ProcSample>, b: Option<&ProcSample>) -> Option<f64> {
    let (a, b) = (a?, b?);
    Some(b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / proc_stats::clock_ticks() as f64)
}

/// Part (b): LIST_CONTENT alone, then during the storm.
async fn storm(
    args: &LoginsArgs,
    addr: SocketAddr,
    accounts: Arc<Vec<Account>>,
    targets: Vec<Account>,
    window: Duration,
    timeout: Duration,
) -> anyhow::Result<bool> {
    let lister = Lister {
        addr,
        users: args.users,
        timeout,
        verify: args.verify_content,
        log: Arc::new(ErrorLog::new(10)),
    };
    let cpu = || args.server_pid.and_then(|pid| proc_stats::sample(pid).ok());

    // Alone.
    let alone_window = Arc::new(Window::default());
    alone_window.recording.store(true, Ordering::Relaxed);
    let cpu0 = cpu();
    let t0 = Instant::now();
    let loops = lister.spawn(args.clients, &alone_window);
    tokio::time::sleep(window).await;
    alone_window.stop.store(true, Ordering::Relaxed);
    let (mut alone, alone_errors) = Lister::gather(loops).await;
    let alone_secs = t0.elapsed().as_secs_f64();
    let alone_cpu = cpu_secs(cpu0.as_ref(), cpu().as_ref());

    // During the storm: the same loops, keeping only the calls that end
    // between the first login sent and the last answered.
    let storm_window = Arc::new(Window::default());
    let loops = lister.spawn(args.clients, &storm_window);
    // Let the loops reach their steady state first.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cpu0 = cpu();
    let t0 = Instant::now();
    storm_window.recording.store(true, Ordering::Relaxed);
    let outcomes = fire(addr, &accounts, &targets, args.storm, timeout).await;
    storm_window.recording.store(false, Ordering::Relaxed);
    let storm_secs = t0.elapsed().as_secs_f64();
    let storm_cpu = cpu_secs(cpu0.as_ref(), cpu().as_ref());
    storm_window.stop.store(true, Ordering::Relaxed);
    let (mut during, during_errors) = Lister::gather(loops).await;

    let alone_sum = alone.summarize();
    let during_sum = during.summarize();
    let p99 = |s: &Option<Summary>| s.map_or(f64::NAN, |s| ms(s.p99));
    let p50 = |s: &Option<Summary>| s.map_or(f64::NAN, |s| ms(s.p50));
    let pct = |cpu: Option<f64>, secs: f64| {
        cpu.map_or("-".to_string(), |c| format!("{:.0}%", c * 100.0 / secs))
    };
    println!(
        "storm: {} logins at once ({} wrong, each from its own 127.x.y.z to its own account) \
         answered in {storm_secs:.2} s: {} OK, {} refused as expected, {} unexpected",
        args.storm,
        targets.len().min(args.wrong),
        outcomes.ok,
        outcomes.refused,
        outcomes.unexpected
    );
    println!(
        "LIST_CONTENT, {} classic clients: alone {} ops in {alone_secs:.1} s, p50 {:.3} ms, p99 {:.3} ms, server CPU {}; \
         during the storm {} ops in {storm_secs:.1} s, p50 {:.3} ms, p99 {:.3} ms, server CPU {}",
        args.clients,
        alone.len(),
        p50(&alone_sum),
        p99(&alone_sum),
        pct(alone_cpu, alone_secs),
        during.len(),
        p50(&during_sum),
        p99(&during_sum),
        pct(storm_cpu, storm_secs),
    );
    let ratio = p99(&during_sum) / p99(&alone_sum);
    println!(
        "LIST_CONTENT p99 during/alone: {ratio:.2}x (target <= 2x){}; errors {}",
        if ratio <= 2.0 {
            ""
        } else {
            "  <-- above target"
        },
        alone_errors + during_errors
    );
    Ok(alone_errors + during_errors == 0 && outcomes.unexpected == 0)
}

/// How the storm's logins were answered.
#[derive(Debug, Default)]
struct Outcomes {
    ok: usize,
    refused: usize,
    unexpected: usize,
}

/// Attempts `storm` logins at once: the first `targets.len()` (at most)
/// with wrong passwords, each from its own source address, the rest with
/// the right ones.
async fn fire(
    addr: SocketAddr,
    accounts: &[Account],
    targets: &[Account],
    storm: usize,
    timeout: Duration,
) -> Outcomes {
    let log = ErrorLog::new(5);
    let attempts = (0..storm).map(|i| {
        let wrong = targets.get(i);
        let (account, password, source) = match wrong {
            Some(account) => (account, random_password(), Some(wrong_source(i))),
            None => {
                let account = &accounts[i % accounts.len()];
                (account, account.password.clone(), None)
            }
        };
        let log = &log;
        async move {
            let code = login_once(addr, source, &account.name, &password, timeout).await;
            match (wrong.is_some(), code) {
                (false, Ok(LoginCode::Ok)) => (1, 0, 0),
                (true, Ok(LoginCode::Refused)) => (0, 1, 0),
                (_, other) => {
                    log.report(
                        &format!("storm login of {}", account.name),
                        &format!("{other:?}"),
                    );
                    (0, 0, 1)
                }
            }
        }
    });
    let mut outcomes = Outcomes::default();
    for (ok, refused, unexpected) in join_all(attempts).await {
        outcomes.ok += ok;
        outcomes.refused += refused;
        outcomes.unexpected += unexpected;
    }
    outcomes
}

/// A loopback source address for the `i`-th wrong login: 127.1.0.1 onwards,
/// never 127.0.0.1, never an address ending in 0 or 255.
fn wrong_source(i: usize) -> IpAddr {
    let n = i % (254 * 256 * 254);
    let host = (n % 254) as u8 + 1;
    let mid = ((n / 254) % 256) as u8;
    let high = (n / (254 * 256)) as u8 + 1;
    IpAddr::V4(Ipv4Addr::new(127, high, mid, host))
}

/// Classic LIST_CONTENT loops, each timing every call.
#[derive(Clone)]
struct Lister {
    addr: SocketAddr,
    users: usize,
    timeout: Duration,
    verify: bool,
    log: Arc<ErrorLog>,
}

type ListLoop = tokio::task::JoinHandle<(Samples, u64)>;

/// When the LIST_CONTENT loops keep their samples, and when they stop.
#[derive(Default)]
struct Window {
    recording: AtomicBool,
    stop: AtomicBool,
}

impl Lister {
    /// Starts `clients` loops; they time every call but keep only the
    /// calls that end while `window.recording` is set, and stop at
    /// `window.stop`.
    fn spawn(&self, clients: usize, window: &Arc<Window>) -> Vec<ListLoop> {
        static SEED: AtomicU32 = AtomicU32::new(1);
        (0..clients)
            .map(|client| {
                let (me, window) = (self.clone(), window.clone());
                let seed = u64::from(SEED.fetch_add(1, Ordering::Relaxed));
                tokio::spawn(async move { me.run(client, seed, window).await })
            })
            .collect()
    }

    async fn run(self, client: usize, seed: u64, window: Arc<Window>) -> (Samples, u64) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut dates = DateCache::default();
        let mut samples = Samples::default();
        let mut errors = 0;
        let me = client % self.users;
        while !window.stop.load(Ordering::Relaxed) {
            let remote = rng.random_range(0..self.users);
            let operation = Operation::ListContent {
                remote_user: Ok(model::user_name(remote)),
            };
            let Ok(request) = model::encode(me, operation, dates.get()) else {
                errors += 1;
                continue;
            };
            let t0 = Instant::now();
            let verdict = if self.verify {
                let mut check = ContentCheck::new(remote);
                let outcome = call_list(
                    self.addr,
                    &request,
                    ListKind::Content,
                    self.timeout,
                    &mut check,
                )
                .await;
                outcome.map(|o| (o, check.finish()))
            } else {
                call_list(
                    self.addr,
                    &request,
                    ListKind::Content,
                    self.timeout,
                    &mut Ignore,
                )
                .await
                .map(|o| (o, Ok(())))
            };
            match verdict {
                Ok((Outcome::Ok, Ok(()))) => {
                    if window.recording.load(Ordering::Relaxed) {
                        samples.record(t0.elapsed());
                    }
                }
                other => {
                    errors += 1;
                    let detail = match other {
                        Ok((outcome, Ok(()))) => format!("expected OK, got {outcome:?}"),
                        Ok((_, Err(wrong))) => wrong,
                        Err(e) => e.to_string(),
                    };
                    self.log.report("LIST_CONTENT", &detail);
                }
            }
        }
        (samples, errors)
    }

    async fn gather(loops: Vec<ListLoop>) -> (Samples, u64) {
        let mut samples = Samples::default();
        let mut errors = 0;
        for done in join_all(loops).await {
            match done {
                Ok((s, e)) => {
                    samples.merge(s);
                    errors += e;
                }
                Err(_) => errors += 1,
            }
        }
        (samples, errors)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn args(extra: &[&str]) -> LoginsArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            args: LoginsArgs,
        }
        let argv = ["logins", "-p", "1"].iter().chain(extra).copied();
        Wrap::try_parse_from(argv).expect("parsable").args
    }

    #[tokio::test]
    async fn bad_arguments_fail_before_any_connection() {
        for extra in [
            &["--wrong", "201"][..],
            &["--accounts", "0"],
            &["--concurrency", "1,0"],
            &["--clients", "0"],
        ] {
            let result = run(args(extra)).await;
            assert!(result.is_err(), "{extra:?} accepted");
        }
    }

    #[test]
    fn wrong_sources_are_distinct_loopback_hosts() {
        let sources: HashSet<IpAddr> = (0..100_000).map(wrong_source).collect();
        assert_eq!(sources.len(), 100_000);
        for ip in &sources {
            let IpAddr::V4(v4) = ip else {
                panic!("{ip} is not IPv4")
            };
            let [a, b, _, d] = v4.octets();
            assert_eq!(a, 127);
            assert!(b >= 1, "never 127.0.x.x: {v4}");
            assert!(d != 0 && d != 255, "{v4}");
        }
    }
}
