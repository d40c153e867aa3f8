//! `GET_FILE`'s download: verified, resumable and multi-source when the
//! peers speak the extension, the classic transfer otherwise.
//!
//! 1. When the extension may be tried (the directory holds the file's
//!    identity, so its publisher is a peerdex client), ask the sources, in
//!    order, for the piece list (`GET_HASHES`) until one gives a list that
//!    merges into its root and matches the expected identity. Otherwise a
//!    classic peer is sent nothing but the classic request.
//! 2. With a list: open `<local>.part` (resuming when its state matches),
//!    run the piece engine ([`swarm`](super::swarm)) over all sources, check the size,
//!    rename into place.
//! 3. Without one, when a source answered like a classic peer (code 2, a
//!    close, or garbage), or when the extension is not tried: the classic
//!    `GET_FILE` from the first such source, accepted only if it matches the
//!    expected identity when there is one. Without an identity its size is
//!    unknowable, so a peer dying mid-file can still look like a complete
//!    transfer there.
//!
//! A source that does not answer within the peer step bounds of
//! [`super::download`] is dropped, never waited on: a frozen peer fails a
//! download (or leaves it to the other sources) within 10 s.

use std::path::Path;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use thiserror::Error;

use super::download::{download, DownloadError};
use super::resume::PartFile;
use super::sources::{fetch_manifest, Source, SourceError};
use super::swarm::{self, Options, Report, SwarmError};
use crate::content::pieces::Manifest;
use crate::content::Identity;
use crate::directory_client::describe_io;

/// How to fetch.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Tuning of the piece engine ([`swarm`](super::swarm)).
    pub engine: Options,
    /// Draw a progress bar on stderr (terminal only).
    pub progress: bool,
    /// The size and root the content must have (the directory's record),
    /// checked on every path; `None` trusts the first source's list.
    pub expected: Option<Identity>,
    /// Ask the sources for piece lists before the classic transfer. Off
    /// when nothing says the peers are peerdex clients: an extension must
    /// never cost a classic peer a request it has to refuse.
    pub try_extension: bool,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            engine: Options::default(),
            progress: false,
            expected: None,
            try_extension: true,
        }
    }
}

/// How a download completed.
#[derive(Debug)]
pub enum Fetched {
    /// Through the extension: every piece verified.
    Verified {
        size: u64,
        /// Pieces already on disk from an earlier run.
        resumed: u64,
        report: Report,
    },
    /// Through the classic GET_FILE: checked against the expected identity
    /// when there was one, else unverifiable.
    Classic { size: u64 },
}

/// Why a download failed.
#[derive(Debug, Error)]
pub enum FetchError {
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Classic(#[from] DownloadError),
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    Failed(String),
    /// Pieces are missing and no source is left; `.part` and its state stay
    /// for a later run.
    #[error("incomplete: {reason} (kept {part} for a later resume)")]
    Incomplete {
        reason: String,
        part: String,
        notes: Vec<String>,
    },
    #[error("cannot write {path}: {reason}")]
    Local { path: String, reason: String },
}

impl FetchError {
    /// No source could be reached at all (addresses may be stale).
    pub fn is_unreachable(&self) -> bool {
        match self {
            FetchError::Unreachable(_) => true,
            FetchError::Classic(err) => err.is_unreachable(),
            _ => false,
        }
    }

    /// Notes about sources, for stderr.
    pub fn notes(&self) -> &[String] {
        match self {
            FetchError::Incomplete { notes, .. } => notes,
            _ => &[],
        }
    }
}

/// Downloads the content the sources serve into `local`.
pub async fn fetch(
    sources: &[Source],
    local: &Path,
    options: &FetchOptions,
) -> Result<Fetched, FetchError> {
    if !options.try_extension {
        let source = sources
            .first()
            .ok_or_else(|| FetchError::Failed("no source".into()))?;
        let size = download(&source.addr, &source.file, local, options.expected).await?;
        return Ok(Fetched::Classic { size });
    }
    let mut classic: Option<&Source> = None;
    let mut reasons = Vec::new();
    let (mut not_found, mut unreachable) = (0, 0);
    for (i, source) in sources.iter().enumerate() {
        match fetch_manifest(source).await {
            Ok(manifest) => {
                if options
                    .expected
                    .is_some_and(|e| e.root != manifest.root || e.size != manifest.size)
                {
                    reasons.push(format!("{source} has other content"));
                    continue;
                }
                return fetch_pieces(&sources[i..], manifest, local, options).await;
            }
            Err(SourceError::Unsupported(why)) => {
                tracing::debug!("{source} does not speak the extension ({why})");
                classic.get_or_insert(source);
            }
            Err(SourceError::NotFound) => {
                not_found += 1;
                reasons.push(format!("peer {source} does not have {}", source.file));
            }
            Err(err @ (SourceError::Unreachable(_) | SourceError::Unresponsive(_))) => {
                unreachable += 1;
                reasons.push(format!("peer {source}: {err}"));
            }
            Err(err) => reasons.push(format!("peer {source}: {err}")),
        }
    }
    if let Some(source) = classic {
        let size = download(&source.addr, &source.file, local, options.expected).await?;
        return Ok(Fetched::Classic { size });
    }
    let reason = reasons.join("; ");
    if sources.is_empty() {
        Err(FetchError::Failed("no source".into()))
    } else if not_found == sources.len() {
        Err(FetchError::NotFound(reason))
    } else if unreachable == sources.len() {
        Err(FetchError::Unreachable(reason))
    } else {
        Err(FetchError::Failed(reason))
    }
}

async fn fetch_pieces(
    sources: &[Source],
    manifest: Manifest,
    local: &Path,
    options: &FetchOptions,
) -> Result<Fetched, FetchError> {
    let local_error = |err: std::io::Error| FetchError::Local {
        path: local.display().to_string(),
        reason: describe_io(&err),
    };
    let manifest = Arc::new(manifest);
    let (part, done) = {
        let (local, manifest) = (local.to_path_buf(), Arc::clone(&manifest));
        tokio::task::spawn_blocking(move || PartFile::open(&local, &manifest))
            .await
            .map_err(|err| local_error(std::io::Error::other(err)))?
            .map_err(local_error)?
    };
    let resumed = done.count();
    if resumed > 0 {
        tracing::debug!("resuming: {resumed} of {} pieces on disk", manifest.count());
    }
    let bar = options.progress.then(|| progress_bar(manifest.size));
    let part = Arc::new(part);
    let result = swarm::run(
        sources.to_vec(),
        Arc::clone(&manifest),
        Arc::clone(&part),
        done,
        options.engine.clone(),
        bar.clone(),
    )
    .await;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let report = match result {
        Ok(report) => report,
        Err(SwarmError::NoSources { missing, report }) => {
            return Err(FetchError::Incomplete {
                reason: format!(
                    "{missing} of {} pieces missing, no source left",
                    manifest.count()
                ),
                part: super::resume::part_path(local).display().to_string(),
                notes: report.notes,
            })
        }
        Err(SwarmError::Local(err)) => return Err(local_error(err)),
    };
    // Aborted duplicate requests may still hold the Arc for a moment; they
    // never write a piece that is done, and every piece is done here.
    let target = local.to_path_buf();
    tokio::task::spawn_blocking(move || part.finish(&target))
        .await
        .map_err(|err| local_error(std::io::Error::other(err)))?
        .map_err(local_error)?;
    Ok(Fetched::Verified {
        size: manifest.size,
        resumed,
        report,
    })
}

/// Bytes, rate, ETA and the number of sources, on stderr.
fn progress_bar(size: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{wide_bar} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
    ) {
        bar.set_style(style);
    }
    bar
}
