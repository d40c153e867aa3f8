//! Human-readable tables and the one-line JSON summaries for scripts. The
//! JSON is formatted by hand: a handful of numbers does not justify serde.

use std::fmt::Write;

use crate::populate::PopulateReport;
use crate::proc_stats::{MachineWindow, ProcWindow};
use crate::stats::ms;
use crate::workload::LoadReport;

pub fn print_populate(p: &PopulateReport) {
    println!("populate: {}", populate_line(p));
}

/// `N users (M ops) in S s: ...`, the populate's outcome in one line.
pub fn populate_line(p: &PopulateReport) -> String {
    format!(
        "{} users ({} ops) in {:.2} s: {:.0} users/s, {:.0} ops/s{}",
        p.users,
        p.ops,
        p.elapsed.as_secs_f64(),
        p.users_per_sec(),
        p.ops_per_sec(),
        if p.retries > 0 {
            format!(", {} retried steps", p.retries)
        } else {
            String::new()
        }
    )
}

pub fn print_load(label: &str, r: &LoadReport) {
    let c = &r.config;
    println!(
        "{label}: {} users={} clients={} mix={} warmup={:.1}s window={:.1}s verify-content={}",
        c.addr,
        c.users,
        c.clients,
        c.mix,
        c.warmup.as_secs_f64(),
        r.window.as_secs_f64(),
        if c.verify_content { "yes" } else { "no" }
    );
    if let Some(lanes) = &c.sessions {
        println!(
            "  over sessions: {}, mode {}; {} ended, {} server events",
            lanes.layout.describe(),
            lanes.layout.mode,
            lanes.ended(),
            lanes.events()
        );
    }
    println!(
        "  {:<13} {:>9} {:>10} {:>9} {:>9} {:>9} {:>7}",
        "operation", "count", "ops/s", "p50 ms", "p99 ms", "max ms", "errors"
    );
    for row in &r.rows {
        let (p50, p99, max) = match row.latency {
            Some(l) => (ms(l.p50), ms(l.p99), ms(l.max)),
            None => (f64::NAN, f64::NAN, f64::NAN),
        };
        println!(
            "  {:<13} {:>9} {:>10.1} {:>9.3} {:>9.3} {:>9.3} {:>7}",
            row.row.op().name(),
            row.count,
            row.ops_per_sec,
            p50,
            p99,
            max,
            row.errors
        );
    }
    println!(
        "  {:<13} {:>9} {:>10.1}   (each op of a pair counts as one)",
        "TOTAL", r.total_ops, r.ops_per_sec
    );
    if let Some(s) = &r.server {
        println!("  server   {}", proc_line(s));
        if let Some(line) = threads_line(s, r.total_ops) {
            println!("           {line}");
        }
    }
    if let Some(s) = &r.loadgen {
        println!("  loadgen  {}", proc_line(s));
    }
    if let Some(m) = &r.machine {
        println!("  machine  {}", machine_line(m));
    }
    if r.errors == 0 {
        println!("  errors: 0");
    } else {
        println!("  ERRORS: {} failed operations", r.errors);
        for (class, n) in &r.error_classes {
            println!("    {n:>8}  {class}");
        }
        if r.addr_exhaustion > 0 {
            println!(
                "  NOTE: {} connects failed with EADDRNOTAVAIL/EADDRINUSE: the client ran out of \
                 ephemeral ports (sockets in TIME_WAIT); this is a limit of the test machine, \
                 see net.ipv4.ip_local_port_range and tcp_tw_reuse",
                r.addr_exhaustion
            );
        }
    }
}

fn proc_line(p: &ProcWindow) -> String {
    format!(
        "pid {}: RSS {:.1} MiB at end, peak {:.1} MiB; CPU {:.2} s in window = {:.0}% of one core",
        p.pid,
        p.rss_end_kib as f64 / 1024.0,
        p.hwm_kib as f64 / 1024.0,
        p.cpu_secs,
        p.cpu_pct
    )
}

/// The machine's CPUs over the window. Steal is time the hypervisor ran
/// someone else: a ratio between two windows with very different steal
/// compares the neighbours, not the servers.
pub fn machine_line(m: &MachineWindow) -> String {
    format!(
        "busy {:.0}%, idle {:.0}%, steal {:.0}% of all CPUs' time",
        m.busy_pct, m.idle_pct, m.steal_pct
    )
}

/// The server's CPU per operation by thread name: where an operation's
/// cost goes ("where does the time go" in docs/PERFORMANCE.md), comparable between
/// servers and runs of different speed. None without threads or ops.
fn threads_line(p: &ProcWindow, ops: usize) -> Option<String> {
    if p.threads.is_empty() || ops == 0 {
        return None;
    }
    let per_op = |secs: f64| secs * 1e6 / ops as f64;
    let threads: Vec<(String, f64)> = p
        .threads
        .iter()
        .map(|(name, secs)| (name.clone(), per_op(*secs)))
        .collect();
    Some(format!(
        "CPU us per op {:.1} = {}",
        per_op(p.cpu_secs),
        thread_list(&threads)
    ))
}

/// `name value, name value, ...` with one decimal: per-thread microseconds
/// per operation, as `load` and `compare` print them.
pub fn thread_list(threads: &[(String, f64)]) -> String {
    threads
        .iter()
        .map(|(name, us)| format!("{name} {us:.1}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// JSON number: finite values only (NaN and inf are not JSON).
pub fn num(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.3}")
    } else {
        "null".into()
    }
}

/// JSON string with the escapes our values can need.
pub fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn proc_json(p: &Option<ProcWindow>) -> String {
    match p {
        Some(p) => {
            let threads: Vec<String> = p
                .threads
                .iter()
                .map(|(name, secs)| format!("{}:{}", string(name), num(*secs)))
                .collect();
            format!(
                "{{\"pid\":{},\"rss_end_kib\":{},\"hwm_kib\":{},\"cpu_secs\":{},\"cpu_pct\":{},\"thread_cpu_secs\":{{{}}}}}",
                p.pid,
                p.rss_end_kib,
                p.hwm_kib,
                num(p.cpu_secs),
                num(p.cpu_pct),
                threads.join(",")
            )
        }
        None => "null".into(),
    }
}

fn machine_json(m: &Option<MachineWindow>) -> String {
    match m {
        Some(m) => format!(
            "{{\"busy_pct\":{},\"idle_pct\":{},\"steal_pct\":{}}}",
            num(m.busy_pct),
            num(m.idle_pct),
            num(m.steal_pct)
        ),
        None => "null".into(),
    }
}

/// The key numbers of one load run as a JSON object.
pub fn load_json(r: &LoadReport, populate: Option<&PopulateReport>) -> String {
    let c = &r.config;
    let mut rows = String::new();
    for (i, row) in r.rows.iter().enumerate() {
        if i > 0 {
            rows.push(',');
        }
        let lat = |f: fn(&crate::stats::Summary) -> std::time::Duration| {
            row.latency
                .as_ref()
                .map_or("null".to_string(), |l| num(ms(f(l))))
        };
        let _ = write!(
            rows,
            "{}:{{\"count\":{},\"ops_per_sec\":{},\"p50_ms\":{},\"p99_ms\":{},\"max_ms\":{},\"errors\":{}}}",
            string(row.row.op().name()),
            row.count,
            num(row.ops_per_sec),
            lat(|l| l.p50),
            lat(|l| l.p99),
            lat(|l| l.max),
            row.errors
        );
    }
    let populate = match populate {
        Some(p) => format!(
            "{{\"users\":{},\"secs\":{},\"users_per_sec\":{},\"ops_per_sec\":{}}}",
            p.users,
            num(p.elapsed.as_secs_f64()),
            num(p.users_per_sec()),
            num(p.ops_per_sec())
        ),
        None => "null".into(),
    };
    format!(
        "{{\"kind\":\"load\",\"addr\":{},\"users\":{},\"clients\":{},\"mix\":{},\"window_secs\":{},\
         \"ops_per_sec\":{},\"total_ops\":{},\"errors\":{},\"addr_exhaustion\":{},\"rows\":{{{}}},\
         \"server\":{},\"loadgen\":{},\"machine\":{},\"populate\":{}{}}}",
        string(&c.addr.to_string()),
        c.users,
        c.clients,
        string(c.mix.name()),
        num(r.window.as_secs_f64()),
        num(r.ops_per_sec),
        r.total_ops,
        r.errors,
        r.addr_exhaustion,
        rows,
        proc_json(&r.server),
        proc_json(&r.loadgen),
        machine_json(&r.machine),
        populate,
        session_json(c)
    )
}

/// The session keys of a load run's JSON, only for a run over sessions
/// (so that classic lines stay byte for byte what they were).
fn session_json(c: &crate::workload::LoadConfig) -> String {
    match &c.sessions {
        Some(lanes) => format!(
            ",\"session\":{{\"clients\":{},\"pipeline\":{},\"mode\":{},\"sessions\":{},\"setup_secs\":{}}}",
            lanes.layout.clients,
            lanes.layout.pipeline,
            string(lanes.layout.mode.name()),
            lanes.layout.sessions(),
            num(lanes.setup.as_secs_f64())
        ),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escapes_and_numbers() {
        assert_eq!(string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
        assert_eq!(num(1.5), "1.500");
        assert_eq!(num(f64::NAN), "null");
    }

    #[test]
    fn machine_line_and_json() {
        let m = MachineWindow {
            busy_pct: 80.4,
            idle_pct: 9.6,
            steal_pct: 10.0,
        };
        assert_eq!(
            machine_line(&m),
            "busy 80%, idle 10%, steal 10% of all CPUs' time"
        );
        assert_eq!(
            machine_json(&Some(m)),
            "{\"busy_pct\":80.400,\"idle_pct\":9.600,\"steal_pct\":10.000}"
        );
        assert_eq!(machine_json(&None), "null");
    }
}
