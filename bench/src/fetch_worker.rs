//! `peerdex-bench fetch-worker`: one download through the client library's
//! own code path, in a process of its own.
//!
//! Why not only the shell: the classic `GET_FILE` is unreachable from the
//! shell between peerdex peers (the extension is always tried first), and
//! the shell does not print what a download fetched, which the
//! killed-source benchmark needs to show it did not start over. The worker
//! calls the same functions the shell does (`peer::fetch::fetch` with
//! default options over an explicit source list, `peer::download::download`
//! for the classic exchange), and running them in a child keeps the
//! downloader's memory and CPU separate from the bench's.
//!
//! Prints one line `fetch-worker OK key=value ...` (or `fetch-worker FAIL
//! reason`), including `bytes_fetched` (what arrived from sources) and the
//! process's peak RSS (VmHWM) read just before exiting.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use peerdex_client::peer::download::download;
use peerdex_client::peer::fetch::{fetch, FetchOptions, Fetched};
use peerdex_client::peer::sources::Source;
use peerdex_client::peer::PeerAddr;

#[derive(Debug, Args)]
pub struct FetchWorkerArgs {
    /// A source as HOST:PORT (repeat for several sources).
    #[arg(long = "source", required = true)]
    pub sources: Vec<String>,
    /// The file's published name.
    #[arg(long)]
    pub file: String,
    /// Where to write it.
    #[arg(long)]
    pub out: PathBuf,
    /// The classic GET_FILE from the first source (no size, no hash).
    #[arg(long)]
    pub classic: bool,
    /// Engine tuning (default: the client's defaults), to find what limits.
    #[arg(long)]
    pub in_flight: Option<usize>,
    #[arg(long)]
    pub checkpoint_every: Option<u64>,
}

/// Parses `HOST:PORT`.
fn peer_addr(text: &str) -> anyhow::Result<PeerAddr> {
    let (host, port) = text
        .rsplit_once(':')
        .with_context(|| format!("{text:?} is not HOST:PORT"))?;
    Ok(PeerAddr {
        host: host.to_string(),
        port: port
            .parse()
            .with_context(|| format!("bad port in {text:?}"))?,
    })
}

pub async fn run(args: FetchWorkerArgs) -> anyhow::Result<bool> {
    let sources = args
        .sources
        .iter()
        .map(|text| {
            Ok(Source {
                addr: peer_addr(text)?,
                file: args.file.clone(),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let summary = if args.classic {
        match download(&sources[0].addr, &args.file, &args.out, None).await {
            Ok(size) => Ok(format!("kind=classic size={size} bytes_fetched={size}")),
            Err(err) => Err(err.to_string()),
        }
    } else {
        let mut options = FetchOptions::default();
        if let Some(n) = args.in_flight {
            options.engine.in_flight = n;
        }
        if let Some(n) = args.checkpoint_every {
            options.engine.checkpoint_every = n;
        }
        match fetch(&sources, &args.out, &options).await {
            Ok(Fetched::Verified {
                size,
                resumed,
                report,
            }) => {
                for note in &report.notes {
                    eprintln!("fetch-worker: {note}");
                }
                Ok(format!(
                    "kind=verified size={size} bytes_fetched={} pieces_written={} resumed={resumed}",
                    report.bytes_fetched, report.pieces_written
                ))
            }
            Ok(Fetched::Classic { size }) => Ok(format!(
                "kind=classic-fallback size={size} bytes_fetched={size}"
            )),
            Err(err) => {
                for note in err.notes() {
                    eprintln!("fetch-worker: {note}");
                }
                Err(err.to_string())
            }
        }
    };
    let hwm = crate::proc_stats::sample(std::process::id())
        .map(|s| s.hwm_kib.to_string())
        .unwrap_or_else(|_| "unknown".into());
    match summary {
        Ok(summary) => {
            println!("fetch-worker OK {summary} hwm_kib={hwm}");
            Ok(true)
        }
        Err(reason) => {
            println!("fetch-worker FAIL {reason} hwm_kib={hwm}");
            Ok(false)
        }
    }
}

/// The `key=value` of a worker's result line.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources_and_result_fields() {
        let addr = peer_addr("127.0.0.1:4000").unwrap();
        assert_eq!((addr.host.as_str(), addr.port), ("127.0.0.1", 4000));
        assert!(peer_addr("nowhere").is_err());
        let line = "fetch-worker OK kind=verified size=10 bytes_fetched=12 hwm_kib=99";
        assert_eq!(field(line, "bytes_fetched"), Some("12"));
        assert_eq!(field(line, "size"), Some("10"));
        assert_eq!(field(line, "missing"), None);
    }
}
