//! The [`Logger`] service: prints records (one line each, see [`line`]),
//! tells the time.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use crate::rpc::{Logger, OpRecord};
use peerdex_protocol::datetime;
use tarpc::context;

use crate::line;

/// Where printed lines go. Shared by all connections; one batch holds the
/// lock while it is written, so batches never interleave.
#[derive(Clone)]
pub struct Output {
    /// The writer behind a lock; written from blocking tasks so that a slow
    /// reader of our stdout never stalls the async workers.
    writer: Arc<Mutex<Box<dyn Write + Send>>>,
}

impl Output {
    /// The process's standard output.
    pub fn stdout() -> Output {
        Output::new(io::stdout())
    }

    /// Any writer (tests use an in-memory buffer).
    pub fn new(writer: impl Write + Send + 'static) -> Output {
        Output {
            writer: Arc::new(Mutex::new(Box::new(writer))),
        }
    }

    /// Writes one line per record ([`line`]), then flushes. The batch is
    /// formatted before the lock is taken and written with one call.
    fn print(&self, records: &[OpRecord]) -> io::Result<()> {
        let mut text = String::with_capacity(records.len() * 64);
        for record in records {
            line::push_line(&mut text, record);
        }
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        writer.write_all(text.as_bytes())?;
        writer.flush()
    }
}

/// The logger service; one clone per request.
#[derive(Clone)]
pub struct PrintingLogger {
    /// Where records are printed.
    output: Output,
}

impl PrintingLogger {
    pub fn new(output: Output) -> PrintingLogger {
        PrintingLogger { output }
    }
}

impl Logger for PrintingLogger {
    async fn log(self, _: context::Context, records: Vec<OpRecord>) -> u64 {
        let count = records.len() as u64;
        let output = self.output.clone();
        let printed = tokio::task::spawn_blocking(move || output.print(&records)).await;
        match printed {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!("cannot print records: {err}"),
            Err(err) => tracing::warn!("printing task failed: {err}"),
        }
        count
    }

    async fn now(self, _: context::Context) -> String {
        datetime::now()
    }
}
