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
    #[error("hashing task failed")]
    Join(#[from] tokio::task::JoinError),
    #[error("hashing pool closed")]
    Closed,
}

/// The hashing pool: every hash and verification waits for one of its
/// permits, then runs on tokio's blocking threads.
#[derive(Debug, Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
}

impl Hasher {
    /// A pool running at most `threads` (at least 1) hashes at once.
    pub fn new(threads: usize) -> Hasher {
        Hasher {
            permits: Arc::new(Semaphore::new(threads.max(1))),
        }
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
        Ok(tokio::task::spawn_blocking(move || {
            let done = work();
            drop(permit);
            done
        })
        .await?)
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
    async fn a_hash_verifies_its_password_and_no_other() {
        let hasher = Hasher::new(1);
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
        let hasher = Hasher::new(2);
        let a = hasher.hash(Secret::new("pw")).await.unwrap();
        let b = hasher.hash(Secret::new("pw")).await.unwrap();
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn a_damaged_credential_is_an_error_not_a_match() {
        let hasher = Hasher::new(1);
        let err = hasher
            .verify(Secret::new("pw"), Arc::from("not a phc string"))
            .await;
        assert!(matches!(err, Err(AuthError::BadCredential(_))));
    }
}
