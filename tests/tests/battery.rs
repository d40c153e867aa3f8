//! The scripted battery: every `tests/battery/*.case` file is a dialogue
//! with one or more real `peerdex` shells against a freshly started real
//! `peerdex-server` (own temporary data dir, free loopback port).
//!
//! # Case format
//!
//! One directive per line; blank lines and lines starting with `#` are
//! ignored (the first comment line is the case's title).
//!
//! | line | meaning |
//! |---|---|
//! | `@server up [ARGS...]` / `@server down` | before any shell: start a server (default) with extra command-line args (kept across `@restart`), or point the shells at a closed port |
//! | `@secret NAME TEXT...` | write TEXT and a newline to `<tmp>/secrets/NAME`, for a shell's `--password-file ../secrets/NAME` |
//! | `@shell X [ARGS...]` | start shell `X` (a name without blanks) with extra command-line args; its working dir is `<tmp>/X/`, its share dir `<tmp>/X/share/` |
//! | `@file X NAME CONTENT...` | write CONTENT (rest of line, escapes allowed) to `share/NAME` of shell X |
//! | `X> COMMAND` | send one line to shell X's stdin; X must have no unread output |
//! | `X< LINE` | read one line of X's stdout (10 s timeout) and compare it with LINE |
//! | `@same X PATH Y PATH` | the two files (relative to each shell's working dir) exist and are equal |
//! | `@absent X PATH` | no such file in X's working dir |
//! | `@quit X` | close X's stdin: it must exit with no further output, status 0, or 1 when one of its result lines was a FAIL or refusal |
//! | `@kill X` | SIGKILL shell X |
//! | `@restart` | SIGKILL the server and start it again on the same port and data dir |
//! | `@stop` | SIGKILL the server; it stays down |
//!
//! Expected lines: `\t`, `\n` and `\\` are escapes; `{any}` matches one
//! non-empty token without blanks (a dynamic port); `{*}` at the end
//! matches any rest of the line. Consecutive expected lines of one shell
//! that start with a TAB (list lines) match in any order, since
//! PROTOCOL.md does not order users or files.
//!
//! At the end every running shell gets end of input and must exit with
//! nothing left unread on its stdout, and with the status its lines call
//! for: 1 when any result line it printed was a FAIL, a refusal or a usage
//! error, else 0.
//!
//! Cases run in parallel (8 threads); every failing case is reported with a
//! transcript. `BATTERY_CASE=<substring>` runs only matching cases.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use peerdex_tests::{closed_port, ServerProcess, Shell};

const LINE_TIMEOUT: Duration = Duration::from_secs(10);
const PARALLEL: usize = 8;

/// One parsed directive, with its line number.
#[derive(Debug, Clone)]
enum Step {
    Shell {
        name: String,
        args: Vec<String>,
    },
    File {
        shell: String,
        name: String,
        content: String,
    },
    Send {
        shell: String,
        line: String,
    },
    Expect {
        shell: String,
        lines: Vec<String>,
    },
    Same {
        a: String,
        a_path: String,
        b: String,
        b_path: String,
    },
    Absent {
        shell: String,
        path: String,
    },
    Quit {
        shell: String,
    },
    Kill {
        shell: String,
    },
    Restart,
    Stop,
    Secret {
        name: String,
        text: String,
    },
}

struct Case {
    server_up: bool,
    /// Extra args of the server (`@server up ARGS`).
    server_args: Vec<String>,
    steps: Vec<(usize, Step)>,
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

fn parse(text: &str) -> Result<Case> {
    let mut case = Case {
        server_up: true,
        server_args: Vec::new(),
        steps: Vec::new(),
    };
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let line = raw.trim_end();
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let err = || anyhow!("line {number}: cannot parse {line:?}");
        let step = if let Some(directive) = line.strip_prefix('@') {
            let words: Vec<&str> = directive.split_whitespace().collect();
            match words[..] {
                ["server", "up", ref args @ ..] => {
                    case.server_up = true;
                    case.server_args = args.iter().map(|a| a.to_string()).collect();
                    continue;
                }
                ["secret", name, ref words @ ..] if !words.is_empty() => Step::Secret {
                    name: name.into(),
                    text: words.join(" "),
                },
                ["server", "down"] => {
                    case.server_up = false;
                    continue;
                }
                ["shell", name, ref args @ ..] => Step::Shell {
                    name: name.into(),
                    args: args.iter().map(|a| a.to_string()).collect(),
                },
                ["file", shell, name, ..] => {
                    // Content: everything after the name, blanks kept.
                    let after = directive
                        .trim_start()
                        .strip_prefix("file")
                        .and_then(|r| r.trim_start().strip_prefix(shell))
                        .and_then(|r| r.trim_start().strip_prefix(name))
                        .ok_or_else(err)?;
                    Step::File {
                        shell: shell.into(),
                        name: name.into(),
                        content: unescape(after.strip_prefix(' ').unwrap_or(after)),
                    }
                }
                ["same", a, a_path, b, b_path] => Step::Same {
                    a: a.into(),
                    a_path: a_path.into(),
                    b: b.into(),
                    b_path: b_path.into(),
                },
                ["absent", shell, path] => Step::Absent {
                    shell: shell.into(),
                    path: path.into(),
                },
                ["quit", shell] => Step::Quit {
                    shell: shell.into(),
                },
                ["kill", shell] => Step::Kill {
                    shell: shell.into(),
                },
                ["restart"] => Step::Restart,
                ["stop"] => Step::Stop,
                _ => return Err(err()),
            }
        } else {
            let split = line.find(['>', '<']).ok_or_else(err)?;
            let shell = &line[..split];
            if shell.is_empty() || shell.contains(char::is_whitespace) {
                return Err(err());
            }
            let rest = &line[split + 1..];
            let rest = rest.strip_prefix(' ').unwrap_or(rest);
            if line.as_bytes()[split] == b'>' {
                Step::Send {
                    shell: shell.into(),
                    line: rest.into(),
                }
            } else {
                Step::Expect {
                    shell: shell.into(),
                    lines: vec![unescape(rest)],
                }
            }
        };
        // Merge consecutive list lines of one shell into one unordered group.
        if let (Some((_, Step::Expect { shell, lines })), Step::Expect { shell: s, lines: l }) =
            (case.steps.last_mut(), &step)
        {
            let last_is_list = lines.last().is_some_and(|x| x.starts_with('\t'));
            if shell == s && last_is_list && l[0].starts_with('\t') {
                lines.push(l[0].clone());
                continue;
            }
        }
        case.steps.push((number, step));
    }
    Ok(case)
}

/// Does `line` match the expected pattern (`{any}` = one token, `{*}` = rest)?
fn matches(pattern: &str, line: &str) -> bool {
    if let Some(prefix) = pattern.strip_suffix("{*}") {
        return match_tokens(prefix, line, true);
    }
    match_tokens(pattern, line, false)
}

fn match_tokens(pattern: &str, line: &str, open_end: bool) -> bool {
    let mut parts = pattern.split("{any}");
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = line.strip_prefix(first) else {
        return false;
    };
    for part in parts {
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        if end == 0 {
            return false;
        }
        rest = &rest[end..];
        match rest.strip_prefix(part) {
            Some(r) => rest = r,
            None => return false,
        }
    }
    open_end || rest.is_empty()
}

/// Runs one case; returns its transcript on failure.
fn run_case(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let case = parse(&text).map_err(|e| format!("{e:#}"))?;
    let mut transcript = String::new();
    let mut stderr = String::new();
    match execute(&case, &mut transcript, &mut stderr) {
        Ok(()) => Ok(()),
        Err(err) => Err(format!("{err:#}\n--- transcript ---\n{transcript}{stderr}")),
    }
}

/// A case in progress. Fields drop in order: processes before their dirs.
struct Run {
    /// The shells by name.
    shells: HashMap<String, Shell>,
    /// Shells that printed a failure line: they must exit with status 1.
    failed: std::collections::HashSet<String>,
    /// The server, `None` for `@server down`.
    server: Option<ServerProcess>,
    /// The server's extra args, for `@restart`.
    server_args: Vec<String>,
    /// The port the shells point at.
    port: u16,
    /// Working dirs of the shells and the server's data dir.
    dir: tempfile::TempDir,
}

impl Run {
    fn shell(&mut self, name: &str) -> Result<&mut Shell> {
        self.shells
            .get_mut(name)
            .ok_or_else(|| anyhow!("no shell {name:?} (declare it with @shell)"))
    }

    fn workdir(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn stderr_of_all(&self) -> String {
        let mut out = String::new();
        let mut names: Vec<&String> = self.shells.keys().collect();
        names.sort();
        for name in names {
            let _ = writeln!(
                out,
                "--- stderr of shell {name} ---\n{}",
                self.shells[name].proc.stderr()
            );
        }
        if let Some(server) = &self.server {
            let _ = writeln!(
                out,
                "--- stderr of the server ---\n{}",
                server.proc.stderr()
            );
        }
        out
    }
}

fn execute(case: &Case, transcript: &mut String, stderr: &mut String) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("server-data");
    let (server, port) = if case.server_up {
        let args: Vec<&str> = case.server_args.iter().map(String::as_str).collect();
        let server = ServerProcess::start(&data_dir, &args)?;
        let port = server.port;
        (Some(server), port)
    } else {
        (None, closed_port())
    };
    let mut run = Run {
        dir,
        server,
        server_args: case.server_args.clone(),
        port,
        shells: HashMap::new(),
        failed: Default::default(),
    };
    for (number, step) in &case.steps {
        if let Err(err) = apply(&mut run, step, transcript) {
            *stderr = run.stderr_of_all();
            return Err(err.context(format!("line {number}")));
        }
    }
    let mut names: Vec<String> = run.shells.keys().cloned().collect();
    names.sort();
    for name in names {
        if let Err(err) = quit(&mut run, &name, transcript) {
            *stderr = run.stderr_of_all();
            return Err(err.context("at the end of the case"));
        }
    }
    Ok(())
}

/// Whether a stdout line is a result line saying a command failed: the
/// shell's exit status must then be 1.
fn is_failure_line(line: &str) -> bool {
    let Some(text) = line.strip_prefix("c> ") else {
        return false;
    };
    text.contains("FAIL")
        || text.starts_with("Syntax error")
        || matches!(
            text,
            "USERNAME IN USE" | "USER DOES NOT EXIST" | "USER ALREADY CONNECTED"
        )
}

fn quit(run: &mut Run, name: &str, transcript: &mut String) -> Result<()> {
    let expected = if run.failed.contains(name) { 1 } else { 0 };
    let shell = run.shell(name)?;
    if !shell.proc.is_running() && shell.wait(LINE_TIMEOUT).is_ok_and(|s| s.code().is_none()) {
        return Ok(()); // killed by @kill
    }
    shell.close_stdin();
    let status = shell.wait(LINE_TIMEOUT)?;
    let rest = shell.proc.rest_of_stdout(Duration::from_millis(200));
    for line in &rest {
        let _ = writeln!(transcript, "{name}<! {line:?} (unexpected)");
    }
    if !rest.is_empty() {
        bail!("shell {name}: unexpected output at the end: {rest:?}");
    }
    if status.code() != Some(expected) {
        bail!("shell {name}: exit status {status} after end of input, expected {expected}");
    }
    Ok(())
}

fn apply(run: &mut Run, step: &Step, transcript: &mut String) -> Result<()> {
    match step {
        Step::Shell { name, args } => {
            let workdir = run.workdir(name);
            let share = workdir.join("share");
            std::fs::create_dir_all(&share)?;
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let shell = Shell::spawn(run.port, &share, &workdir, &args)?;
            run.shells.insert(name.clone(), shell);
        }
        Step::File {
            shell,
            name,
            content,
        } => {
            std::fs::write(run.workdir(shell).join("share").join(name), content)?;
        }
        Step::Send { shell, line } => {
            let _ = writeln!(transcript, "{shell}> {line}");
            let sh = run.shell(shell)?;
            if let Some(early) = sh.read_line(Duration::ZERO) {
                let _ = writeln!(transcript, "{shell}<! {early:?} (unexpected)");
                bail!("shell {shell}: unexpected output {early:?} before {line:?}");
            }
            sh.send(line)?;
        }
        Step::Expect { shell, lines } => {
            let sh = run.shell(shell)?;
            let mut got = Vec::new();
            for _ in lines {
                match sh.read_line(LINE_TIMEOUT) {
                    Some(line) => {
                        let _ = writeln!(transcript, "{shell}< {line:?}");
                        got.push(line);
                    }
                    None => {
                        let _ = writeln!(transcript, "{shell}< (nothing within {LINE_TIMEOUT:?})");
                        bail!(
                            "shell {shell}: expected {:?}, got {got:?} and then nothing",
                            lines
                        );
                    }
                }
            }
            if !lines_match(lines, &got) {
                bail!("shell {shell}: expected {lines:?}, got {got:?}");
            }
            if got.iter().any(|line| is_failure_line(line)) {
                run.failed.insert(shell.clone());
            }
        }
        Step::Same {
            a,
            a_path,
            b,
            b_path,
        } => {
            let pa = run.workdir(a).join(a_path);
            let pb = run.workdir(b).join(b_path);
            let da = std::fs::read(&pa).with_context(|| format!("read {}", pa.display()))?;
            let db = std::fs::read(&pb).with_context(|| format!("read {}", pb.display()))?;
            if da != db {
                bail!(
                    "{} ({} bytes) differs from {} ({} bytes)",
                    pa.display(),
                    da.len(),
                    pb.display(),
                    db.len()
                );
            }
        }
        Step::Absent { shell, path } => {
            let p = run.workdir(shell).join(path);
            if p.exists() {
                bail!("{} exists", p.display());
            }
        }
        Step::Quit { shell } => {
            let _ = writeln!(transcript, "@quit {shell}");
            quit(run, shell, transcript)?;
        }
        Step::Kill { shell } => {
            let _ = writeln!(transcript, "@kill {shell}");
            run.shell(shell)?.proc.kill9()?;
        }
        Step::Restart => {
            let _ = writeln!(transcript, "@restart");
            let mut server = run.server.take().context("@restart: no server")?;
            server.kill9()?;
            let args: Vec<&str> = run.server_args.iter().map(String::as_str).collect();
            run.server = Some(server.restart(&args)?);
        }
        Step::Secret { name, text } => {
            let dir = run.dir.path().join("secrets");
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join(name), format!("{text}\n"))?;
        }
        Step::Stop => {
            let _ = writeln!(transcript, "@stop");
            run.server.as_mut().context("@stop: no server")?.kill9()?;
        }
    }
    Ok(())
}

/// The lines match the patterns as a multiset: a group is either one line
/// or a run of list lines, whose order PROTOCOL.md leaves open.
fn lines_match(patterns: &[String], got: &[String]) -> bool {
    if patterns.len() != got.len() {
        return false;
    }
    let mut unused: Vec<&String> = got.iter().collect();
    for pattern in patterns {
        match unused.iter().position(|line| matches(pattern, line)) {
            Some(i) => {
                unused.remove(i);
            }
            None => return false,
        }
    }
    true
}

fn case_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("battery");
    let filter = std::env::var("BATTERY_CASE").unwrap_or_default();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/battery exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "case"))
        .filter(|p| p.to_string_lossy().contains(&filter))
        .collect();
    files.sort();
    files
}

#[test]
fn battery() {
    let files = case_files();
    assert!(!files.is_empty(), "no battery cases found");
    let queue = Arc::new(Mutex::new(files.clone()));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..PARALLEL)
        .map(|_| {
            let queue = queue.clone();
            let failures = failures.clone();
            thread::spawn(move || loop {
                let Some(path) = queue.lock().unwrap().pop() else {
                    return;
                };
                if let Err(report) = run_case(&path) {
                    let name = path.file_name().unwrap().to_string_lossy().into_owned();
                    failures.lock().unwrap().push((name, report));
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("a battery worker panicked");
    }
    let mut failures = failures.lock().unwrap().clone();
    failures.sort();
    eprintln!(
        "battery: {} of {} cases passed",
        files.len() - failures.len(),
        files.len()
    );
    if !failures.is_empty() {
        let mut report = String::new();
        for (name, failure) in &failures {
            let _ = writeln!(report, "\n===== FAILED: {name} =====\n{failure}");
        }
        let names: Vec<&str> = failures.iter().map(|(n, _)| n.as_str()).collect();
        panic!(
            "{} of {} battery cases failed: {names:?}\n{report}",
            failures.len(),
            files.len()
        );
    }
}

#[test]
fn patterns() {
    assert!(matches("\tbob 127.0.0.1 {any}", "\tbob 127.0.0.1 4242"));
    assert!(!matches("\tbob 127.0.0.1 {any}", "\tbob 127.0.0.1 "));
    assert!(!matches("\tbob 127.0.0.1 {any}", "\tbob 127.0.0.1 1 2"));
    assert!(matches(
        "c> Syntax error. Usage: {*}",
        "c> Syntax error. Usage: REGISTER <user>"
    ));
    assert!(!matches("c> REGISTER OK", "c> REGISTER OK "));
    assert!(lines_match(
        &["c> OK".into(), "\ta".into(), "\tb".into()],
        &["c> OK".into(), "\tb".into(), "\ta".into()]
    ));
    let case = parse("# t\n@shell a\na> x\na< c> OK\na< \\ta 1\na< \\tb 2\n").unwrap();
    assert_eq!(case.steps.len(), 4, "{:?}", case.steps);
}
