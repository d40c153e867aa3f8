//! The shell: reads lines, runs them through the session, prints results.
//!
//! On a terminal it uses the rustyline editor ([`editor`]); otherwise it
//! reads stdin line by line. Both print the same lines and flush stdout
//! after every command, so that a program driving the shell through a pipe
//! can wait for each result line, and both end with a [`Status`] that says
//! whether any command failed (the process's exit status).

pub(crate) mod command;
pub(crate) mod editor;
pub(crate) mod output;
pub(crate) mod share_walk;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rustyline::error::ReadlineError;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::session::{Flow, Printed, Session};
use command::{parse, Command, ParseError};
use output::PROMPT;

/// How often an idle terminal shell looks at its directory session.
const ATTEND_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// How a shell ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Every command succeeded.
    AllOk,
    /// At least one command printed a FAIL or refusal line, or was not a
    /// valid command.
    SomeFailed,
}

/// Whether any command of a shell failed so far.
#[derive(Debug, Default)]
struct Tally {
    failed: bool,
}

impl Tally {
    fn count(&mut self, printed: &Printed) {
        self.failed |= printed.failed;
    }

    fn status(&self) -> Status {
        if self.failed {
            Status::SomeFailed
        } else {
            Status::AllOk
        }
    }
}

/// Runs the shell until QUIT or end of input.
pub async fn run(
    session: Session,
    known_users: Arc<Mutex<Vec<String>>>,
    history: Option<PathBuf>,
) -> anyhow::Result<Status> {
    if std::io::stdin().is_terminal() {
        interactive(session, known_users, history).await
    } else {
        piped(session).await
    }
}

/// Parses and runs one line, printing its result. When `interruptible`
/// (on a terminal), Ctrl-C abandons a running GET_FILE: its temporary file
/// is removed and the command fails.
async fn handle_line(
    session: &mut Session,
    line: &str,
    interruptible: bool,
    tally: &mut Tally,
) -> Flow {
    match parse(line) {
        Ok(None) => Flow::Continue,
        Err(err) => {
            let printed = parse_error_printed(&err);
            tally.count(&printed);
            emit(&printed);
            Flow::Continue
        }
        Ok(Some(command)) => {
            let downloading = matches!(command, Command::GetFile { .. });
            let (printed, flow) = if interruptible && downloading {
                tokio::select! {
                    done = session.execute(command) => done,
                    _ = tokio::signal::ctrl_c() => (
                        Printed {
                            out: vec![output::get_file_line(output::GetFileResult::Fail)],
                            err: vec!["peerdex: GET_FILE interrupted".into()],
                            failed: true,
                        },
                        Flow::Continue,
                    ),
                }
            } else {
                session.execute(command).await
            };
            tally.count(&printed);
            emit(&printed);
            flow
        }
    }
}

/// A usage error keeps its one-line hint where PROTOCOL.md puts it (a
/// result line on stdout); an unknown command is not a result line of the
/// contract, so it goes to stderr. Both count as failed commands.
fn parse_error_printed(err: &ParseError) -> Printed {
    match err {
        ParseError::Usage(_) => Printed {
            out: vec![format!("{PROMPT}{err}")],
            err: Vec::new(),
            failed: true,
        },
        ParseError::Unknown(_) => Printed {
            out: Vec::new(),
            err: vec![format!("peerdex: {err}")],
            failed: true,
        },
    }
}

/// Writes a command's lines: stdout (flushed), then stderr. A closed
/// stdout is not an error worth dying for.
fn emit(printed: &Printed) {
    let mut out = std::io::stdout().lock();
    for line in &printed.out {
        let _ = writeln!(out, "{line}");
    }
    let _ = out.flush();
    drop(out);
    let mut err = std::io::stderr().lock();
    for line in &printed.err {
        let _ = writeln!(err, "{line}");
    }
}

async fn piped(mut session: Session) -> anyhow::Result<Status> {
    let mut tally = Tally::default();
    let mut stdin = BufReader::new(tokio::io::stdin());
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match stdin.read_until(b'\n', &mut buf).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(err) => {
                eprintln!("peerdex: cannot read stdin: {err}");
                break;
            }
        }
        let line = String::from_utf8_lossy(&buf);
        if handle_line(&mut session, &line, false, &mut tally).await == Flow::Quit {
            return Ok(tally.status());
        }
    }
    emit(&session.shutdown().await);
    Ok(tally.status())
}

async fn interactive(
    mut session: Session,
    known_users: Arc<Mutex<Vec<String>>>,
    history: Option<PathBuf>,
) -> anyhow::Result<Status> {
    let mut tally = Tally::default();
    let mut editor = editor::new_editor(known_users)?;
    let history = editor::history_path(history);
    if let Some(path) = &history {
        // A missing history file is normal on first use.
        let _ = editor.load_history(path);
    }
    let mut history_warned = false;
    loop {
        let mut reading = tokio::task::spawn_blocking(move || {
            let read = editor.readline(PROMPT);
            (editor, read)
        });
        // While the user types, what the directory says (a disconnect, a
        // lost session) is handled and shown at once.
        let (returned, read) = loop {
            tokio::select! {
                done = &mut reading => break done?,
                _ = tokio::time::sleep(ATTEND_INTERVAL) => {
                    let notes = session.attend_session().await;
                    if !notes.is_empty() {
                        emit(&Printed { err: notes, ..Printed::default() });
                    }
                }
            }
        };
        editor = returned;
        let line = match read {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(err) => {
                eprintln!("peerdex: cannot read the terminal: {err}");
                break;
            }
        };
        if !line.trim().is_empty() {
            let _ = editor.add_history_entry(line.as_str());
            if let Some(path) = &history {
                if let Err(err) = editor.save_history(path) {
                    if !history_warned {
                        history_warned = true;
                        eprintln!("peerdex: cannot save history to {}: {err}", path.display());
                    }
                }
            }
        }
        if handle_line(&mut session, &line, true, &mut tally).await == Flow::Quit {
            return Ok(tally.status());
        }
    }
    emit(&session.shutdown().await);
    Ok(tally.status())
}
