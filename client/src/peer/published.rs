//! Whether the listener's user published a file in an earlier session.
//!
//! The listener knows what was published and deleted through this shell.
//! For any other name a peer asks for (and that exists in the share dir),
//! [`DirectoryCheck`] asks the directory: `LIST_CONTENT` of the user, as the
//! user, stamped by the shell's time source. The listing is kept for
//! [`CACHE_TTL`], and only one query runs at a time, so a burst of requests
//! costs at most one query. A directory that cannot be asked means "not
//! published" (the peer gets code 1).

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use peerdex_protocol::{Operation, Reply, Request};
use tokio::sync::Mutex;
use tokio::time::{timeout, Instant};

use crate::directory_client::DirectoryClient;
use crate::time_source::TimeSource;

/// How long a listing from the directory is trusted.
pub const CACHE_TTL: Duration = Duration::from_secs(10);
/// How long a failed query (unreachable directory, error code, timeout)
/// stands for "nothing published", so that a burst does not wait on a dead
/// directory once per request.
pub const FAILURE_TTL: Duration = Duration::from_secs(2);
/// Bound on one query, DATETIME included; the asking peer waits meanwhile.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(3);
/// At most this many names of a listing are kept; a longer listing answers
/// only for the names kept (and the name asked), others are asked again.
pub const MAX_CACHED_NAMES: usize = 4096;

/// Asks the directory what a user published, with a short-lived cache.
pub struct DirectoryCheck {
    /// The directory server.
    directory: DirectoryClient,
    /// The shell's time source, for the DATETIME of queries.
    time: TimeSource,
    /// The user whose content is listed, and who asks.
    user: String,
    /// The last listing. Held locked during a query: one query at a time.
    cache: Mutex<Option<Listing>>,
}

/// What the directory answered, until when.
struct Listing {
    /// When the answer stops being trusted.
    until: Instant,
    /// Published names (at most [`MAX_CACHED_NAMES`] plus the name asked).
    names: HashSet<String>,
    /// Whether `names` is the whole listing, so that a name missing from it
    /// is known not to be published.
    complete: bool,
}

impl Listing {
    /// "Nothing published", for `ttl`.
    fn empty(ttl: Duration) -> Self {
        Self {
            until: Instant::now() + ttl,
            names: HashSet::new(),
            complete: true,
        }
    }

    /// The answer for `name`, if this listing knows it at `now`.
    fn answer(&self, name: &str, now: Instant) -> Option<bool> {
        if now >= self.until {
            None
        } else if self.names.contains(name) {
            Some(true)
        } else if self.complete {
            Some(false)
        } else {
            None
        }
    }
}

impl fmt::Debug for DirectoryCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectoryCheck")
            .field("directory", &self.directory.addr())
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl DirectoryCheck {
    /// Checks `user`'s content at `directory`, stamping queries with `time`.
    pub fn new(directory: DirectoryClient, time: TimeSource, user: impl Into<String>) -> Self {
        Self {
            directory,
            time,
            user: user.into(),
            cache: Mutex::new(None),
        }
    }

    /// Whether the directory lists `name` as published by the user.
    pub async fn is_published(&self, name: &str) -> bool {
        // Requests arriving during a query wait for its answer instead of
        // sending their own (bounded by QUERY_TIMEOUT).
        let mut cache = self.cache.lock().await;
        if let Some(answer) = cache
            .as_ref()
            .and_then(|listing| listing.answer(name, Instant::now()))
        {
            return answer;
        }
        let listing = self.fetch(name).await;
        let answer = listing.names.contains(name);
        *cache = Some(listing);
        answer
    }

    /// Asks the directory for the user's listing.
    async fn fetch(&self, name: &str) -> Listing {
        let query = async {
            let datetime = self.time.now().await;
            let request = Request {
                datetime: None,
                user: Ok(self.user.clone()),
                operation: Operation::ListContent {
                    remote_user: Ok(self.user.clone()),
                },
            };
            self.directory.call(&request, &datetime).await
        };
        let failed = |reason: String| {
            tracing::debug!("cannot tell whether {name:?} is published: {reason}");
            Listing::empty(FAILURE_TTL)
        };
        match timeout(QUERY_TIMEOUT, query).await {
            Ok(Ok(Reply::Content(files))) => {
                let complete = files.len() <= MAX_CACHED_NAMES;
                let names: HashSet<String> = files
                    .into_iter()
                    .enumerate()
                    .filter(|(i, f)| *i < MAX_CACHED_NAMES || f.file == name)
                    .map(|(_, f)| f.file)
                    .collect();
                tracing::debug!(
                    "directory lists {} files of {}; {name:?} is {}published",
                    names.len(),
                    self.user,
                    if names.contains(name) { "" } else { "not " }
                );
                Listing {
                    until: Instant::now() + CACHE_TTL,
                    names,
                    complete,
                }
            }
            Ok(Ok(reply)) => failed(format!("LIST_CONTENT answered {:?}", reply.outcome())),
            Ok(Err(err)) => failed(err.to_string()),
            Err(_) => failed(format!("no answer within {QUERY_TIMEOUT:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_answers_until_it_expires() {
        let now = Instant::now();
        let listing = Listing {
            until: now + CACHE_TTL,
            names: ["a".to_string()].into(),
            complete: true,
        };
        assert_eq!(listing.answer("a", now), Some(true));
        assert_eq!(listing.answer("b", now), Some(false));
        assert_eq!(listing.answer("a", now + CACHE_TTL), None);
        let partial = Listing {
            complete: false,
            ..listing
        };
        assert_eq!(partial.answer("a", now), Some(true));
        assert_eq!(partial.answer("b", now), None, "asked again");
    }

    #[tokio::test]
    async fn an_unreachable_directory_means_not_published() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let check = DirectoryCheck::new(
            DirectoryClient::new("127.0.0.1", port),
            TimeSource::local(),
            "alice",
        );
        assert!(!check.is_published("a.txt").await);
        // Remembered for a moment: the next request does not ask again.
        let cache = check.cache.lock().await;
        assert_eq!(
            cache.as_ref().unwrap().answer("a.txt", Instant::now()),
            Some(false)
        );
    }
}
