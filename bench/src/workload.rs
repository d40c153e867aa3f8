//! The timed mixed workload: C client loops, each doing one operation per TCP
//! connection, checked reply by reply.
//!
//! Users are partitioned among loops (user i belongs to loop i % C) and a
//! loop finishes every pair it starts, so the expected reply of every
//! operation is known in advance: OK for all of them. Any other reply is an
//! error, never noise.
//!
//! With sessions ([`crate::lanes`]) the same workers run over open
//! sessions instead of a connection per operation; a worker then acts for
//! its lane's user only, and every reply's bytes are read and checked by
//! the same readers as a classic reply.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use peerdex_protocol::listing::ListKind;
use peerdex_protocol::{OpKind, Operation, Outcome, Reply};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use tokio::time::Instant;

use crate::client::{
    call, call_list, read_whole_listing, read_whole_reply, CallError, ErrorLog, ListVisitor,
};
use crate::lanes::{Lanes, Turn};
use crate::mix::{Action, Mix, MixKind};
use crate::model::{self, ContentCheck, DateCache, Ignore, UsersCheck};
use crate::proc_stats::{self, MachineWindow, ProcWindow};
use crate::search;
use crate::session::Session;
use crate::stats::{Samples, Summary};

#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub addr: SocketAddr,
    pub users: usize,
    pub clients: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub mix: MixKind,
    pub seed: u64,
    pub op_timeout: Duration,
    /// Check listing contents, not only codes (not against the null server).
    pub verify_content: bool,
    /// Decode listings with `wire::read_reply` instead of the streaming
    /// `listing::ListingReader` (slower on the client; for cross-checking).
    pub protocol_reader: bool,
    pub server_pid: Option<u32>,
    /// Run over these sessions (one worker per request in flight) instead
    /// of one connection per operation; `clients` is then their workers.
    pub sessions: Option<Arc<Lanes>>,
}

/// A row of the report: one operation. Pairs are reported as their two
/// operations, each counting as one op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Row {
    ListContent,
    Publish,
    Delete,
    Disconnect,
    Connect,
    ListUsers,
    Search,
}

impl Row {
    pub const ALL: [Row; 7] = [
        Row::ListContent,
        Row::Publish,
        Row::Delete,
        Row::Disconnect,
        Row::Connect,
        Row::ListUsers,
        Row::Search,
    ];

    pub fn op(self) -> OpKind {
        match self {
            Row::ListContent => OpKind::ListContent,
            Row::Publish => OpKind::Publish,
            Row::Delete => OpKind::Delete,
            Row::Disconnect => OpKind::Disconnect,
            Row::Connect => OpKind::Connect,
            Row::ListUsers => OpKind::ListUsers,
            Row::Search => OpKind::Search,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone)]
pub struct RowReport {
    pub row: Row,
    /// Operations completed inside the window.
    pub count: usize,
    pub ops_per_sec: f64,
    pub latency: Option<Summary>,
    /// Failed operations (whole run, warm-up included).
    pub errors: u64,
}

#[derive(Debug, Clone)]
pub struct LoadReport {
    pub config: LoadConfig,
    pub rows: Vec<RowReport>,
    pub total_ops: usize,
    pub ops_per_sec: f64,
    pub errors: u64,
    /// Error counts by class (connect: AddrNotAvailable, wrong reply, ...).
    pub error_classes: BTreeMap<String, u64>,
    pub addr_exhaustion: u64,
    pub window: Duration,
    pub server: Option<ProcWindow>,
    /// The load generator itself: on a small machine it competes with the
    /// server for the same cores.
    pub loadgen: Option<ProcWindow>,
    /// The whole machine over the window (steal, idle).
    pub machine: Option<MachineWindow>,
}

/// What a loop gathered.
#[derive(Debug, Default)]
struct LoopStats {
    samples: [Samples; 7],
    errors: [u64; 7],
    classes: BTreeMap<String, u64>,
    addr_exhaustion: u64,
}

/// State shared by the loops.
struct Ctx {
    config: LoadConfig,
    mix: Mix,
    window_start: Instant,
    end: Instant,
    log: ErrorLog,
}

/// What a reply must be beyond its code.
enum Expect {
    Ok,
    Content(usize),
    Users,
    Search(search::Query),
}

/// Why an operation counts as an error.
enum Failure {
    Call(CallError),
    Wrong(String),
}

/// Runs the workload; the caller checks `errors`.
pub async fn run(config: LoadConfig) -> anyhow::Result<LoadReport> {
    anyhow::ensure!(config.clients > 0, "--clients must be at least 1");
    anyhow::ensure!(
        config.users >= config.clients,
        "--users ({}) must be at least --clients ({}): each loop owns its users",
        config.users,
        config.clients
    );
    let start = Instant::now();
    let window_start = start + config.warmup;
    let end = window_start + config.duration;
    let ctx = Arc::new(Ctx {
        mix: Mix::new(config.mix),
        config: config.clone(),
        window_start,
        end,
        log: ErrorLog::new(10),
    });
    let sampler = tokio::spawn(sample_window(config.server_pid, window_start, end));
    let loops: Vec<_> = (0..config.clients)
        .map(|idx| tokio::spawn(Worker::new(ctx.clone(), idx).run()))
        .collect();
    let mut merged = LoopStats::default();
    for handle in loops {
        let stats = handle.await?;
        for (i, samples) in stats.samples.into_iter().enumerate() {
            merged.samples[i].merge(samples);
            merged.errors[i] += stats.errors[i];
        }
        for (class, n) in stats.classes {
            *merged.classes.entry(class).or_default() += n;
        }
        merged.addr_exhaustion += stats.addr_exhaustion;
    }
    let Sampled {
        server,
        loadgen,
        machine,
    } = sampler.await?;
    let secs = config.duration.as_secs_f64();
    let mut rows = Vec::new();
    for row in Row::ALL {
        let samples = &mut merged.samples[row.index()];
        let count = samples.len();
        if count == 0 && merged.errors[row.index()] == 0 && !row_in_mix(&ctx.mix, row) {
            continue;
        }
        rows.push(RowReport {
            row,
            count,
            ops_per_sec: count as f64 / secs,
            latency: samples.summarize(),
            errors: merged.errors[row.index()],
        });
    }
    let total_ops = rows.iter().map(|r| r.count).sum();
    Ok(LoadReport {
        config,
        total_ops,
        ops_per_sec: total_ops as f64 / secs,
        errors: merged.errors.iter().sum(),
        error_classes: merged.classes,
        addr_exhaustion: merged.addr_exhaustion,
        rows,
        window: ctx.end - ctx.window_start,
        server,
        loadgen,
        machine,
    })
}

fn row_in_mix(mix: &Mix, row: Row) -> bool {
    let action = match row {
        Row::ListContent => Action::ListContent,
        Row::Publish | Row::Delete => Action::PublishDelete,
        Row::Disconnect | Row::Connect => Action::DisconnectConnect,
        Row::ListUsers => Action::ListUsers,
        Row::Search => Action::Search,
    };
    mix.share(action) > 0.0
}

/// What [`sample_window`] measured.
struct Sampled {
    server: Option<ProcWindow>,
    loadgen: Option<ProcWindow>,
    machine: Option<MachineWindow>,
}

/// Samples the server, this process and the machine at the window's start
/// and end.
async fn sample_window(server_pid: Option<u32>, window_start: Instant, end: Instant) -> Sampled {
    let me = std::process::id();
    let read = |pid: u32| or_warn(proc_stats::sample(pid), &format!("/proc/{pid}"));
    let machine = || or_warn(proc_stats::machine_sample(), "/proc/stat");
    tokio::time::sleep_until(window_start).await;
    let t0 = Instant::now();
    let server0 = server_pid.and_then(read);
    let me0 = read(me);
    let machine0 = machine();
    tokio::time::sleep_until(end).await;
    let server1 = server_pid.and_then(read);
    let me1 = read(me);
    let machine1 = machine();
    let elapsed = t0.elapsed();
    let pair = |pid: Option<u32>, a, b| match (pid, a, b) {
        (Some(pid), Some(a), Some(b)) => Some(proc_stats::window(pid, &a, &b, elapsed)),
        _ => None,
    };
    Sampled {
        server: pair(server_pid, server0, server1),
        loadgen: pair(Some(me), me0, me1),
        machine: match (machine0, machine1) {
            (Some(a), Some(b)) => proc_stats::machine_window(&a, &b),
            _ => None,
        },
    }
}

/// A sample, or None with a warning: a window without it still counts,
/// only that part of the report is missing.
fn or_warn<T>(sample: std::io::Result<T>, what: &str) -> Option<T> {
    sample
        .map_err(|e| eprintln!("warning: cannot read {what}: {e}"))
        .ok()
}

/// One client loop.
struct Worker {
    ctx: Arc<Ctx>,
    idx: usize,
    /// How many users this loop owns: idx, idx + C, idx + 2C, ...
    owned: usize,
    rng: SmallRng,
    dates: DateCache,
    seq: u64,
    stats: LoopStats,
}

impl Worker {
    fn new(ctx: Arc<Ctx>, idx: usize) -> Worker {
        let (users, clients) = (ctx.config.users, ctx.config.clients);
        let owned = (users - idx).div_ceil(clients);
        let seed = ctx.config.seed ^ (idx as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Worker {
            ctx,
            idx,
            owned,
            rng: SmallRng::seed_from_u64(seed),
            dates: DateCache::default(),
            seq: 0,
            stats: LoopStats::default(),
        }
    }

    /// Loops until the window ends; the pair in flight is finished so that
    /// the directory is left as it was found.
    async fn run(mut self) -> LoopStats {
        while Instant::now() < self.ctx.end {
            let action = self
                .ctx
                .mix
                .pick(self.rng.random_range(0..self.ctx.mix.total()));
            let lanes = self.ctx.config.sessions.clone();
            let me = match &lanes {
                Some(lanes) => lanes.layout.user_of(self.idx),
                None => self.idx + self.ctx.config.clients * self.rng.random_range(0..self.owned),
            };
            let _turn = match &lanes {
                Some(lanes) => {
                    let alone = action == Action::DisconnectConnect;
                    lanes.turn(self.idx, alone).await
                }
                None => Turn::Free,
            };
            match action {
                Action::ListContent => {
                    let remote = self.rng.random_range(0..self.ctx.config.users);
                    let operation = Operation::ListContent {
                        remote_user: Ok(model::user_name(remote)),
                    };
                    self.op(Row::ListContent, me, operation, Expect::Content(remote))
                        .await;
                }
                Action::ListUsers => {
                    self.op(Row::ListUsers, me, Operation::ListUsers, Expect::Users)
                        .await;
                }
                Action::Search => {
                    let users = self.ctx.config.users;
                    let query =
                        search::query(self.rng.random_range(search::pick_range(users)), users);
                    let operation = Operation::Search {
                        pattern: Ok(query.pattern.clone()),
                        limit: Ok(search::LIMIT),
                    };
                    self.op(Row::Search, me, operation, Expect::Search(query))
                        .await;
                }
                Action::PublishDelete => self.publish_delete(me).await,
                Action::DisconnectConnect => self.disconnect_connect(me).await,
            }
        }
        self.stats
    }

    async fn publish_delete(&mut self, me: usize) {
        self.seq += 1;
        let file = model::temp_file(self.idx, self.seq);
        let publish = model::publish_op(file.clone(), "temp".into());
        if self.op(Row::Publish, me, publish, Expect::Ok).await {
            let delete = Operation::Delete { file: Ok(file) };
            self.op(Row::Delete, me, delete, Expect::Ok).await;
        } else {
            // The publish may or may not have happened: make sure it did not.
            let delete = Operation::Delete { file: Ok(file) };
            self.repair(me, delete, Outcome::ContentNotPublished).await;
        }
    }

    async fn disconnect_connect(&mut self, me: usize) {
        let disconnected = self
            .op(Row::Disconnect, me, Operation::Disconnect, Expect::Ok)
            .await;
        let connected = disconnected
            && self
                .op(Row::Connect, me, model::connect_op(me), Expect::Ok)
                .await;
        if !connected {
            // Leave the user connected whatever happened, or every later
            // operation of this user would fail too.
            self.repair(me, model::connect_op(me), Outcome::UserAlreadyConnected)
                .await;
        }
    }

    /// One timed, checked operation. Returns whether it succeeded.
    async fn op(&mut self, row: Row, me: usize, operation: Operation, expect: Expect) -> bool {
        let request = match model::encode(me, operation, self.dates.get()) {
            Ok(request) => request,
            Err(e) => {
                self.fail(row, me, Failure::Call(CallError::Encode(e)))
                    .await;
                return false;
            }
        };
        let started = Instant::now();
        let verdict = self.exchange(row.op(), &request, expect).await;
        let finished = Instant::now();
        match verdict {
            Ok(()) => {
                if finished >= self.ctx.window_start && finished <= self.ctx.end {
                    self.stats.samples[row.index()].record(finished - started);
                }
                true
            }
            Err(failure) => {
                self.fail(row, me, failure).await;
                false
            }
        }
    }

    /// How this worker reaches the server.
    fn via(&self) -> Via {
        let config = &self.ctx.config;
        Via {
            addr: config.addr,
            timeout: config.op_timeout,
            session: config
                .sessions
                .as_ref()
                .map(|l| l.session(self.idx).clone()),
        }
    }

    /// Sends the request and checks the reply against `expect`.
    async fn exchange(
        &mut self,
        op: OpKind,
        request: &[u8],
        expect: Expect,
    ) -> Result<(), Failure> {
        let config = &self.ctx.config;
        let verify = config.verify_content;
        let via = self.via();
        if config.protocol_reader || matches!(expect, Expect::Ok | Expect::Search(_)) {
            let reply = via.call(request, op).await.map_err(Failure::Call)?;
            return self.check(expect, reply).map_err(Failure::Wrong);
        }
        let kind = match expect {
            Expect::Content(_) => ListKind::Content,
            _ => ListKind::Users,
        };
        let (outcome, verdict) = match expect {
            Expect::Content(remote) if verify => {
                let mut check = ContentCheck::new(remote);
                let outcome = via.list(request, kind, &mut check).await;
                (outcome, check.finish())
            }
            Expect::Users if verify => {
                let mut check = UsersCheck::new(config.users, config.clients);
                let outcome = via.list(request, kind, &mut check).await;
                (outcome, check.finish())
            }
            _ => {
                let outcome = via.list(request, kind, &mut Ignore).await;
                (outcome, Ok(()))
            }
        };
        match outcome.map_err(Failure::Call)? {
            Outcome::Ok => verdict.map_err(Failure::Wrong),
            other => Err(Failure::Wrong(format!("expected OK, got {other:?}"))),
        }
    }

    /// Checks a decoded reply (the `--protocol-reader` path and non-lists).
    fn check(&self, expect: Expect, reply: Reply) -> Result<(), String> {
        let verify = self.ctx.config.verify_content;
        match (expect, reply) {
            (Expect::Ok, Reply::Status(Outcome::Ok)) => Ok(()),
            (Expect::Content(remote), Reply::Content(files)) if verify => {
                model::check_content(remote, &files)
            }
            (Expect::Content(_), Reply::Content(_)) => Ok(()),
            (Expect::Users, Reply::Users(users)) if verify => {
                model::check_users(&users, self.ctx.config.users, self.ctx.config.clients)
            }
            (Expect::Users, Reply::Users(_)) => Ok(()),
            // Counts and patterns are always checked (they need no model of
            // the directory); TOTAL and owners only with --verify-content.
            (Expect::Search(query), Reply::Search(reply)) => {
                search::check(&query, search::LIMIT, &reply, verify)
            }
            (_, reply) => Err(format!("expected OK, got {:?}", reply.outcome())),
        }
    }

    async fn fail(&mut self, row: Row, me: usize, failure: Failure) {
        let i = row.index();
        self.stats.errors[i] += 1;
        let (class, detail) = match &failure {
            Failure::Call(e) => {
                if e.is_addr_exhaustion() {
                    self.stats.addr_exhaustion += 1;
                }
                (e.class(), e.to_string())
            }
            Failure::Wrong(msg) => ("wrong reply".to_string(), msg.clone()),
        };
        *self
            .stats
            .classes
            .entry(format!("{}: {class}", row.op()))
            .or_default() += 1;
        let what = format!(
            "{} by {} (loop {})",
            row.op(),
            model::user_name(me),
            self.idx
        );
        self.ctx.log.report(&what, &detail);
        if matches!(
            failure,
            Failure::Call(CallError::Connect(_) | CallError::Session(_))
        ) {
            // Do not spin on a dead server, an exhausted port range or a
            // session that ended (each later request fails at once).
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Untimed, idempotent clean-up after a failed pair: OK or `already`
    /// both mean the state is restored.
    async fn repair(&mut self, me: usize, operation: Operation, already: Outcome) {
        let op = operation.kind();
        let Ok(request) = model::encode(me, operation, self.dates.get()) else {
            return;
        };
        let via = self.via();
        for _ in 0..3 {
            if let Ok(reply) = via.call(&request, op).await {
                let outcome = reply.outcome();
                if outcome == Outcome::Ok || outcome == already {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let what = format!("repair {op} by {}", model::user_name(me));
        self.ctx
            .log
            .report(&what, "could not restore the user's state");
    }
}

/// One operation's transport: a connection of its own, or the worker's
/// session. Both end in the same readers, so a reply is checked the same
/// way whichever way it came.
struct Via {
    addr: SocketAddr,
    timeout: Duration,
    session: Option<Arc<Session>>,
}

impl Via {
    async fn call(&self, request: &[u8], op: OpKind) -> Result<Reply, CallError> {
        match &self.session {
            None => call(self.addr, request, op, self.timeout).await,
            Some(session) => {
                let body = self.session_reply(session, request).await?;
                read_whole_reply(&body[..], op).await
            }
        }
    }

    async fn list<V: ListVisitor + Send>(
        &self,
        request: &[u8],
        kind: ListKind,
        visitor: &mut V,
    ) -> Result<Outcome, CallError> {
        match &self.session {
            None => call_list(self.addr, request, kind, self.timeout, visitor).await,
            Some(session) => {
                let body = self.session_reply(session, request).await?;
                read_whole_listing(&body[..], kind, visitor).await
            }
        }
    }

    /// The reply's bytes, within the operation timeout.
    async fn session_reply(
        &self,
        session: &Session,
        request: &[u8],
    ) -> Result<bytes::Bytes, CallError> {
        let body = bytes::Bytes::copy_from_slice(request);
        match tokio::time::timeout(self.timeout, session.call(body)).await {
            Ok(reply) => Ok(reply?),
            Err(_) => Err(CallError::Timeout(self.timeout)),
        }
    }
}
