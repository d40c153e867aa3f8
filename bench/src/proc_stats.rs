//! Memory and CPU of a process from /proc, sampled at the start and end of
//! the measured window: the memory target (RSS) and the "where does the
//! time go" question of docs/PERFORMANCE.md both need them, and on a 2-core machine the load generator's own
//! CPU is part of the answer, so it is sampled too.

use std::collections::BTreeMap;
use std::io;
use std::sync::OnceLock;
use std::time::Duration;

/// One reading of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcSample {
    /// Resident set size now, KiB (VmRSS).
    pub rss_kib: u64,
    /// Peak resident set size over the process's life, KiB (VmHWM).
    pub hwm_kib: u64,
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    /// Name and utime + stime (clock ticks) of every thread, by thread id:
    /// which part of a server spends the CPU (the tokio workers, the
    /// commit writer, the syncer, ...). Empty if the task list could not
    /// be read.
    pub thread_ticks: BTreeMap<u32, (String, u64)>,
}

/// What happened to a process over the window.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcWindow {
    pub pid: u32,
    pub rss_end_kib: u64,
    pub hwm_kib: u64,
    /// CPU seconds (user + system) used during the window.
    pub cpu_secs: f64,
    /// `cpu_secs` as a percentage of one core over the window.
    pub cpu_pct: f64,
    /// CPU seconds per thread name during the window, most first (threads
    /// that started or ended inside the window count from zero or not at
    /// all: one connection per thread would blur this, our servers keep
    /// their threads).
    pub threads: Vec<(String, f64)>,
}

/// Reads /proc/`pid`/status and /proc/`pid`/stat.
pub fn sample(pid: u32) -> io::Result<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let bad =
        |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("/proc/{pid}: {what}"));
    Ok(ProcSample {
        rss_kib: status_kib(&status, "VmRSS:").ok_or_else(|| bad("no VmRSS"))?,
        hwm_kib: status_kib(&status, "VmHWM:").ok_or_else(|| bad("no VmHWM"))?,
        cpu_ticks: stat_cpu_ticks(&stat).ok_or_else(|| bad("unparsable stat"))?,
        thread_ticks: thread_ticks(pid).unwrap_or_default(),
    })
}

/// Name and utime + stime of every thread of `pid`, by thread id. A
/// thread that exits between listing and reading is skipped.
fn thread_ticks(pid: u32) -> io::Result<BTreeMap<u32, (String, u64)>> {
    let mut threads = BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = task?.path();
        let Some(tid) = path.file_name().and_then(|n| n.to_str()?.parse().ok()) else {
            continue;
        };
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(path.join("comm")),
            std::fs::read_to_string(path.join("stat")),
        ) else {
            continue;
        };
        if let Some(ticks) = stat_cpu_ticks(&stat) {
            threads.insert(tid, (comm.trim_end().to_string(), ticks));
        }
    }
    Ok(threads)
}

/// CPU seconds per thread name between two samples, most first. Each
/// thread counts its own difference (from zero if it started in the
/// window), then threads of one name are summed: tokio's blocking pool
/// shares the workers' name and its threads come and go, so summing per
/// name first would lose time or go negative.
fn thread_secs(start: &ProcSample, end: &ProcSample) -> Vec<(String, f64)> {
    let tick = clock_ticks() as f64;
    let mut by_name: BTreeMap<&str, u64> = BTreeMap::new();
    for (tid, (name, ticks)) in &end.thread_ticks {
        let before = match start.thread_ticks.get(tid) {
            Some((old_name, old)) if old_name == name => *old,
            _ => 0,
        };
        *by_name.entry(name).or_insert(0) += ticks.saturating_sub(before);
    }
    let mut threads: Vec<(String, f64)> = by_name
        .into_iter()
        .map(|(name, ticks)| (name.to_string(), ticks as f64 / tick))
        .collect();
    threads.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    threads
}

/// The window between two samples `elapsed` apart.
pub fn window(pid: u32, start: &ProcSample, end: &ProcSample, elapsed: Duration) -> ProcWindow {
    let cpu_secs = end.cpu_ticks.saturating_sub(start.cpu_ticks) as f64 / clock_ticks() as f64;
    let secs = elapsed.as_secs_f64();
    ProcWindow {
        threads: thread_secs(start, end),
        pid,
        rss_end_kib: end.rss_kib,
        hwm_kib: end.hwm_kib.max(start.hwm_kib),
        cpu_secs,
        cpu_pct: if secs > 0.0 {
            cpu_secs / secs * 100.0
        } else {
            0.0
        },
    }
}

/// The whole machine's CPU time from the `cpu` line of /proc/stat, in
/// clock ticks summed over all CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineSample {
    /// user + nice + system + irq + softirq.
    pub busy: u64,
    /// idle + iowait: nothing to run.
    pub idle: u64,
    /// Time the hypervisor gave this VM's CPUs to someone else.
    pub steal: u64,
}

/// What the machine did over a window, as shares of all its CPUs' time:
/// a window in which the hypervisor stole much, or in which the CPUs sat
/// idle, measures the machine rather than the server.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MachineWindow {
    pub busy_pct: f64,
    pub idle_pct: f64,
    pub steal_pct: f64,
}

/// Reads the `cpu` line of /proc/stat.
pub fn machine_sample() -> io::Result<MachineSample> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    parse_machine(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "/proc/stat: no cpu line"))
}

/// The `cpu  user nice system idle iowait irq softirq steal ...` line.
/// Guest time is already inside user and nice, so it is not added again.
fn parse_machine(stat: &str) -> Option<MachineSample> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let field = |i: usize| v.get(i).copied();
    Some(MachineSample {
        busy: field(0)? + field(1)? + field(2)? + field(5)? + field(6)?,
        idle: field(3)? + field(4)?,
        steal: field(7)?,
    })
}

/// The machine between two samples; None if no time passed.
pub fn machine_window(start: &MachineSample, end: &MachineSample) -> Option<MachineWindow> {
    let busy = end.busy.saturating_sub(start.busy) as f64;
    let idle = end.idle.saturating_sub(start.idle) as f64;
    let steal = end.steal.saturating_sub(start.steal) as f64;
    let all = busy + idle + steal;
    (all > 0.0).then(|| MachineWindow {
        busy_pct: busy / all * 100.0,
        idle_pct: idle / all * 100.0,
        steal_pct: steal / all * 100.0,
    })
}

/// A `Vm*:   1234 kB` line of /proc/PID/status.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// utime + stime (fields 14 and 15) of /proc/PID/stat. The command name
/// (field 2) may contain spaces and parentheses, so fields are counted after
/// its last `)`.
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After ")" comes field 3 (state); utime is field 14 -> index 11.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// USER_HZ, the unit of /proc/PID/stat times. It is 100 on every Linux this
/// runs on; `getconf` confirms it without a libc dependency.
pub fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_lines() {
        let status =
            "Name:\tpeerdex\nVmPeak:\t  20000 kB\nVmHWM:\t   9000 kB\nVmRSS:\t   8123 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(8123));
        assert_eq!(status_kib(status, "VmHWM:"), Some(9000));
        assert_eq!(status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn parses_stat_with_odd_command_names() {
        let stat = "1234 (a) b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 4 0 5 0 0";
        assert_eq!(stat_cpu_ticks(stat), Some(325));
        assert_eq!(stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn parses_the_machine_line() {
        let stat = "cpu  100 5 50 800 20 3 2 40 7 0\ncpu0 50 2 25 400 10 1 1 20 3 0\nintr 1\n";
        let s = parse_machine(stat).unwrap();
        assert_eq!((s.busy, s.idle, s.steal), (160, 820, 40));
        assert_eq!(parse_machine("cpu0 1 2 3\n"), None);
        assert_eq!(parse_machine("cpu  1 2 x 4 5 6 7 8\n"), None);
        // Older kernels without the steal column.
        assert_eq!(parse_machine("cpu  1 2 3 4 5 6 7\n"), None);
    }

    #[test]
    fn machine_window_shares_add_up() {
        let a = MachineSample {
            busy: 100,
            idle: 100,
            steal: 0,
        };
        let b = MachineSample {
            busy: 250,
            idle: 130,
            steal: 20,
        };
        let w = machine_window(&a, &b).unwrap();
        assert!((w.busy_pct - 75.0).abs() < 1e-9);
        assert!((w.idle_pct - 15.0).abs() < 1e-9);
        assert!((w.steal_pct - 10.0).abs() < 1e-9);
        assert_eq!(machine_window(&a, &a), None);
    }

    #[test]
    fn samples_this_machine() {
        let s = machine_sample().unwrap();
        assert!(s.busy + s.idle > 0);
    }

    #[test]
    fn samples_this_process() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kib > 0 && s.hwm_kib >= s.rss_kib);
    }

    /// A named thread that burns CPU between two samples shows up under
    /// its name with about the time it burned.
    #[test]
    fn attributes_cpu_to_thread_names() {
        let start = sample(std::process::id()).unwrap();
        let started = std::time::Instant::now();
        let spinner = std::thread::Builder::new()
            .name("proc-stats-spin".into())
            .spawn(|| {
                let t = std::time::Instant::now();
                let mut x = 0u64;
                while t.elapsed() < Duration::from_millis(300) {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                }
                // Sampled before the thread exits, so it is still listed.
                std::thread::park();
                x
            })
            .unwrap();
        std::thread::sleep(Duration::from_millis(400));
        let end = sample(std::process::id()).unwrap();
        spinner.thread().unpark();
        spinner.join().unwrap();
        let w = window(std::process::id(), &start, &end, started.elapsed());
        let spin = w
            .threads
            .iter()
            .find(|(name, _)| name == "proc-stats-spin")
            .map(|(_, secs)| *secs);
        // 300 ms of spinning, counted in 10 ms ticks; a loaded machine may
        // deschedule it, so only a generous lower bound.
        assert!(spin.is_some_and(|s| s >= 0.05), "{:?}", w.threads);
        let sum: f64 = w.threads.iter().map(|(_, s)| s).sum();
        assert!(sum <= w.cpu_secs + 0.05, "{sum} > {}", w.cpu_secs);
    }

    #[test]
    fn thread_seconds_are_per_thread_then_per_name() {
        let at = |threads: &[(u32, &str, u64)]| ProcSample {
            rss_kib: 1,
            hwm_kib: 1,
            cpu_ticks: 0,
            thread_ticks: threads
                .iter()
                .map(|(tid, name, ticks)| (*tid, (name.to_string(), *ticks)))
                .collect(),
        };
        // Thread 3 (a blocking-pool thread named like the workers) exits
        // inside the window, thread 5 starts in it, thread 6 is a new
        // thread reusing an old id under another name.
        let start = at(&[
            (1, "worker", 100),
            (2, "sync", 10),
            (3, "worker", 900),
            (6, "old", 7),
        ]);
        let end = at(&[
            (1, "worker", 150),
            (2, "sync", 40),
            (5, "late", 5),
            (6, "new", 2),
        ]);
        let tick = clock_ticks() as f64;
        assert_eq!(
            thread_secs(&start, &end),
            vec![
                ("worker".to_string(), 50.0 / tick),
                ("sync".to_string(), 30.0 / tick),
                ("late".to_string(), 5.0 / tick),
                ("new".to_string(), 2.0 / tick),
            ]
        );
    }
}
