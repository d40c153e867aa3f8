//! Passwords: argon2id hashing and verification on a bounded pool of
//! blocking threads ([`Hasher`]), and the failed-login limiter
//! ([`limiter`]).
//!
//! A hash costs 19 MiB and tens of milliseconds of one core by design, so it
//! never runs on the async worker threads that serve other clients: a login
//! storm can use at most the pool's permits worth of CPU, and waits for a
//! permit instead of queueing unbounded blocking work.

pub(crate) mod limiter;

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use password_hash::rand_core::OsRng;
use peerdex_protocol::Secret;
use thiserror::Error;
use tokio::sync::Semaphore;

/// Memory cost in KiB: the OWASP minimum for argon2id (19 MiB).
const MEMORY_KIB: u32 = 19 * 1024;
/// Passes over the memory.
const PASSES: u32 = 2;
/// Lanes.
const LANES: u32 = 1;

/// Why a password could not be hashed or checked.
#[derive(Debug, Error)]
pub enum AuthError {
    #[error("argon2: {0}")]
    Hash(argon2::password_hash::Error),
    #[error("stored credential is not a valid PHC string: {0}")]
    BadCredential(argon2::password_hash::Error),
    #[error("hashing pool closed")]
    Closed,
}

/// The hashing pool: `threads` long-lived threads of its own that run
/// every hash and verification, at most one each at a time.
///
/// Why threads of its own and not tokio's blocking pool: an argon2 hash
/// allocates its 19 MiB anew each time, and the allocator keeps what a
/// thread freed for that thread's arena. The blocking pool's threads come
/// and go, each new one in another arena, so a few dozen logins left
/// hundreds of MiB behind; a fixed set of threads reuses the same memory.
#[derive(Debug, Clone)]
pub struct Hasher {
    /// One per thread: a job waits for a permit before it is queued, so the
    /// queue never holds more than the threads can take.
    permits: Arc<Semaphore>,
    /// Where the threads take their jobs from.
    jobs: std::sync::mpsc::SyncSender<Job>,
}

/// A hash or verification for the pool, which sends its own result.
type Job = Box<dyn FnOnce() + Send>;

/// Name of the pool's threads (in `top` and /proc).
const THREAD_NAME: &str = "peerdex-hash";

impl Hasher {
    /// A pool of `threads` (at least 1) threads. Fails only if the system
    /// refuses to start a thread.
    pub fn new(threads: usize) -> std::io::Result<Hasher> {
        let threads = threads.max(1);
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(threads);
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for _ in 0..threads {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(THREAD_NAME.into())
                .spawn(move || loop {
                    // The lock is held only to take a job; a poisoned lock
                    // (a job cannot panic while holding it) still works.
                    let job = queue
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .recv();
                    match job {
                        Ok(job) => job(),
                        // Every Hasher is gone: the server stopped.
                        Err(_) => return,
                    }
                })?;
        }
        Ok(Hasher {
            permits: Arc::new(Semaphore::new(threads)),
            jobs,
        })
    }

    /// The PHC string of `password` with a fresh random salt.
    pub async fn hash(&self, password: Secret) -> Result<Arc<str>, AuthError> {
        self.run(move || hash_now(&password)).await?
    }

    /// True when `password` is the one `credential` (a PHC string) was
    /// made from.
    pub async fn verify(&self, password: Secret, credential: Arc<str>) -> Result<bool, AuthError> {
        self.run(move || verify_now(&password, &credential)).await?
    }

    /// Runs `work` on a blocking thread once a permit is free. The permit
    /// travels with the work, so a caller that gives up (a client that
    /// hangs up mid-login) does not free it while the hash still runs.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AuthError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| AuthError::Closed)?;
        let (done, result) = tokio::sync::oneshot::channel();
        // The permit travels with the job: a client that gives up while its
        // hash runs does not free a thread that is still busy.
        let job: Job = Box::new(move || {
            let _ = done.send(work());
            drop(permit);
        });
        self.jobs.send(job).map_err(|_| AuthError::Closed)?;
        result.await.map_err(|_| AuthError::Closed)
    }
}

/// argon2id with the parameters every peerdex credential uses.
fn argon2() -> Result<Argon2<'static>, AuthError> {
    let params =
        Params::new(MEMORY_KIB, PASSES, LANES, None).map_err(|err| AuthError::Hash(err.into()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

fn hash_now(password: &Secret) -> Result<Arc<str>, AuthError> {
    let salt = SaltString::generate(&mut OsRng);
    let hash = argon2()?
        .hash_password(password.expose().as_bytes(), &salt)
        .map_err(AuthError::Hash)?;
    Ok(Arc::from(hash.to_string()))
}

/// Verifies with the parameters stored in the PHC string itself, so that a
/// credential made with other costs still verifies.
fn verify_now(password: &Secret, credential: &str) -> Result<bool, AuthError> {
    let parsed = PasswordHash::new(credential).map_err(AuthError::BadCredential)?;
    match Argon2::default().verify_password(password.expose().as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(err) => Err(AuthError::Hash(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_run_on_the_pools_own_threads() {
        let hasher = Hasher::new(2).unwrap();
        let names = futures::future::join_all(
            (0..6).map(|_| hasher.run(|| std::thread::current().name().map(str::to_string))),
        )
        .await;
        for name in names {
            assert_eq!(name.unwrap().as_deref(), Some(THREAD_NAME));
        }
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_no_other() {
        let hasher = Hasher::new(1).unwrap();
        let phc = hasher.hash(Secret::new("correct horse")).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(hasher
            .verify(Secret::new("correct horse"), phc.clone())
            .await
            .unwrap());
        assert!(!hasher
            .verify(Secret::new("correct horsE"), phc.clone())
            .await
            .unwrap());
        assert!(!hasher.verify(Secret::new(""), phc).await.unwrap());
    }

    #[tokio::test]
    async fn each_hash_has_its_own_salt() {
        let hasher = Hasher::new(2).unwrap();
        let a = hasher.hash(Secret::new("pw")).await.unwrap();
        let b = hasher.hash(Secret::new("pw")).await.unwrap();
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn a_damaged_credential_is_an_error_not_a_match() {
        let hasher = Hasher::new(1).unwrap();
        let err = hasher
            .verify(Secret::new("pw"), Arc::from("not a phc string"))
            .await;
        assert!(matches!(err, Err(AuthError::BadCredential(_))));
    }
}
