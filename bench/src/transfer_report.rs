//! What `transfer` measured and how it is printed: per-run lines, then
//! medians per method and the ratios to the plain copy of the same run
//! (absolute MB/s on a shared VM swing between minutes; ratios of runs
//! alternated in one session much less).

use std::time::Duration;

use crate::stats::median;

/// How the file was moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Plain TCP copy: the ceiling.
    Plain,
    /// Our verified piece download.
    Ours,
    /// The classic GET_FILE: no size, no verification.
    Classic,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Plain => "plain",
            Method::Ours => "ours",
            Method::Classic => "classic",
        }
    }
}

/// One run.
#[derive(Debug, Clone)]
pub struct Measured {
    pub method: Method,
    pub round: usize,
    pub size: u64,
    pub elapsed: Duration,
    /// The result equals the source byte for byte.
    pub intact: bool,
    /// Downloader's peak RSS (VmHWM) at the end, KiB.
    pub hwm_kib: Option<u64>,
    /// Highest VmRSS seen while sampling, KiB.
    pub max_rss_kib: Option<u64>,
    /// Bytes received from sources (worker runs only).
    pub bytes_fetched: Option<u64>,
    /// (seconds, pieces done per the state file), when watched.
    pub progress: Vec<(f64, u64)>,
    /// When a source was killed: (seconds, pieces done then).
    pub killed_at: Option<(f64, u64)>,
}

impl Measured {
    pub fn new(method: Method, round: usize, size: u64) -> Measured {
        Measured {
            method,
            round,
            size,
            elapsed: Duration::ZERO,
            intact: false,
            hwm_kib: None,
            max_rss_kib: None,
            bytes_fetched: None,
            progress: Vec::new(),
            killed_at: None,
        }
    }

    /// Decimal MB/s.
    pub fn mb_per_sec(&self) -> f64 {
        self.size as f64 / self.elapsed.as_secs_f64() / 1e6
    }

    pub fn line(&self) -> String {
        let mut line = format!(
            "round {} {:<7} {:>8.1} MB/s  {:.3} s  {}",
            self.round,
            self.method.name(),
            self.mb_per_sec(),
            self.elapsed.as_secs_f64(),
            if self.intact { "intact" } else { "CORRUPT" }
        );
        if let Some(hwm) = self.hwm_kib {
            line.push_str(&format!("  peak RSS {:.1} MiB", hwm as f64 / 1024.0));
        }
        if let Some(rss) = self.max_rss_kib {
            line.push_str(&format!(" (max sampled {:.1} MiB)", rss as f64 / 1024.0));
        }
        if let Some(fetched) = self.bytes_fetched {
            line.push_str(&format!(
                "  fetched {fetched} bytes = {:.4} x size",
                fetched as f64 / self.size as f64
            ));
        }
        line
    }

    /// The progress series never went down (a restart would reset it).
    pub fn monotonic(&self) -> bool {
        self.progress.windows(2).all(|w| w[1].1 >= w[0].1)
    }
}

/// The whole session.
pub struct Summary {
    pub size: u64,
    pub sources: usize,
    pub kill_one: bool,
    pub runs: Vec<Measured>,
    pub load_before: String,
    pub load_after: String,
}

impl Summary {
    fn rates(&self, method: Method) -> Vec<f64> {
        self.runs
            .iter()
            .filter(|r| r.method == method)
            .map(Measured::mb_per_sec)
            .collect()
    }

    pub fn print(&self) {
        println!();
        println!(
            "transfer: {} MiB, {} source(s){}, load {} -> {}",
            self.size >> 20,
            self.sources,
            if self.kill_one { ", one killed" } else { "" },
            self.load_before,
            self.load_after
        );
        let plain = self.rates(Method::Plain);
        let plain_med = median(&plain);
        for method in [Method::Plain, Method::Ours, Method::Classic] {
            let rates = self.rates(method);
            let Some(med) = median(&rates) else { continue };
            let list: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
            let mut line = format!(
                "  {:<7} MB/s: {}  median {med:.0}",
                method.name(),
                list.join(" ")
            );
            if method != Method::Plain {
                if let Some(p) = plain_med {
                    let per_round: Vec<String> = rates
                        .iter()
                        .zip(&plain)
                        .map(|(r, p)| format!("{:.3}", r / p))
                        .collect();
                    line.push_str(&format!(
                        "  ratio to plain {:.3} (per round {})",
                        med / p,
                        per_round.join(" ")
                    ));
                }
            }
            println!("{line}");
        }
        let hwm = self.runs.iter().filter_map(|r| r.hwm_kib).max();
        if let Some(hwm) = hwm {
            println!(
                "  downloader peak RSS (VmHWM): {:.1} MiB",
                hwm as f64 / 1024.0
            );
        }
        for run in self.runs.iter().filter(|r| r.killed_at.is_some()) {
            let (t, at) = run.killed_at.unwrap_or_default();
            println!(
                "  killed a source at {t:.2} s with {at} pieces done; completed {}, fetched {} bytes ({:.4} x size); \
                 progress never went back: {}",
                if run.intact { "intact" } else { "CORRUPT" },
                run.bytes_fetched.map_or("?".into(), |b| b.to_string()),
                run.bytes_fetched.unwrap_or(0) as f64 / self.size as f64,
                run.monotonic()
            );
            let series: Vec<String> = run
                .progress
                .iter()
                .map(|(t, d)| format!("{t:.2}s:{d}"))
                .collect();
            println!("  state-file progress (s:pieces): {}", series.join(" "));
        }
        let corrupt = self.runs.iter().filter(|r| !r.intact).count();
        println!(
            "  results compared byte for byte: {} intact, {corrupt} corrupt",
            self.runs.len() - corrupt
        );
    }
}
