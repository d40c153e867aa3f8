//! The failed-login limiter: slows guessing down, per account and per
//! source address.
//!
//! After [`FREE_FAILURES`] failed logins in a row for one key, every
//! further attempt of that key is answered only after a delay that doubles
//! from [`FIRST_DELAY`] up to [`MAX_DELAY`]; a success clears the account's
//! count (not the address's: one right password must not reopen a
//! guessing address); [`FORGET_AFTER`] without a failure forgets a key.
//! Pure logic over an injected clock, so that its rules are tested without
//! waiting. Memory is bounded: each map holds at most a fixed number of
//! keys, and a full map first forgets expired keys, then its stalest one.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures in a row that cost nothing.
pub const FREE_FAILURES: u32 = 3;
/// Delay of the first slowed attempt.
pub const FIRST_DELAY: Duration = Duration::from_millis(250);
/// Longest delay.
pub const MAX_DELAY: Duration = Duration::from_secs(30);
/// Time without a failure after which a key is forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Most keys each map holds.
const MAX_KEYS: usize = 16 * 1024;

/// Failures of one key.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

/// Consecutive failures per key, bounded.
#[derive(Debug)]
struct Counts<K> {
    map: HashMap<K, Failures>,
    cap: usize,
}

impl<K: Hash + Eq + Clone> Counts<K> {
    fn new(cap: usize) -> Self {
        Counts {
            map: HashMap::new(),
            cap,
        }
    }

    fn count(&self, key: &K, now: Instant) -> u32 {
        match self.map.get(key) {
            Some(f) if now.saturating_duration_since(f.last) < FORGET_AFTER => f.count,
            _ => 0,
        }
    }

    fn fail(&mut self, key: &K, now: Instant) {
        let count = self.count(key, now);
        if !self.map.contains_key(key) && self.map.len() >= self.cap {
            self.make_room(now);
        }
        self.map.insert(
            key.clone(),
            Failures {
                count: count.saturating_add(1),
                last: now,
            },
        );
    }

    fn clear(&mut self, key: &K) {
        self.map.remove(key);
    }

    /// Forgets expired keys; if none expired, the stalest key.
    fn make_room(&mut self, now: Instant) {
        self.map
            .retain(|_, f| now.saturating_duration_since(f.last) < FORGET_AFTER);
        if self.map.len() >= self.cap {
            let stalest = self
                .map
                .iter()
                .min_by_key(|(_, f)| f.last)
                .map(|(key, _)| key.clone());
            if let Some(key) = stalest {
                self.map.remove(&key);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

/// The delay owed after `count` failures in a row.
pub fn delay_after(count: u32) -> Duration {
    if count < FREE_FAILURES {
        return Duration::ZERO;
    }
    let doublings = (count - FREE_FAILURES).min(16);
    FIRST_DELAY.saturating_mul(1 << doublings).min(MAX_DELAY)
}

/// The limiter shared by every login.
#[derive(Debug)]
pub struct Limiter {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    accounts: Counts<String>,
    addresses: Counts<IpAddr>,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter::with_capacity(MAX_KEYS)
    }
}

impl Limiter {
    fn with_capacity(cap: usize) -> Limiter {
        Limiter {
            inner: Mutex::new(Inner {
                accounts: Counts::new(cap),
                addresses: Counts::new(cap),
            }),
        }
    }

    /// How long a login attempt for `account` from `from` waits before it
    /// is answered.
    pub fn delay(&self, account: &str, from: IpAddr, now: Instant) -> Duration {
        let inner = self.lock();
        let count = inner
            .accounts
            .count(&account.to_string(), now)
            .max(inner.addresses.count(&from, now));
        delay_after(count)
    }

    /// Records a wrong password.
    pub fn failed(&self, account: &str, from: IpAddr, now: Instant) {
        let mut inner = self.lock();
        inner.accounts.fail(&account.to_string(), now);
        inner.addresses.fail(&from, now);
    }

    /// Records a right password: the account's count starts over.
    pub fn succeeded(&self, account: &str) {
        self.lock().accounts.clear(&account.to_string());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The counts stay consistent whatever panicked while holding them.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "alice";

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn three_failures_are_free_then_the_delay_doubles_up_to_its_cap() {
        let limiter = Limiter::default();
        let t = Instant::now();
        let mut delays = Vec::new();
        for _ in 0..12 {
            delays.push(limiter.delay(A, ip(1), t));
            limiter.failed(A, ip(1), t);
        }
        let ms = |n| Duration::from_millis(n);
        assert_eq!(
            delays,
            [
                ms(0),
                ms(0),
                ms(0),
                ms(250),
                ms(500),
                ms(1000),
                ms(2000),
                ms(4000),
                ms(8000),
                ms(16000),
                ms(30000),
                ms(30000)
            ]
        );
        assert_eq!(delay_after(u32::MAX), MAX_DELAY);
    }

    #[test]
    fn an_account_is_slowed_from_every_address_and_an_address_for_every_account() {
        let limiter = Limiter::default();
        let t = Instant::now();
        for n in 0..3 {
            limiter.failed(A, ip(n), t);
        }
        assert_eq!(limiter.delay(A, ip(9), t), FIRST_DELAY);
        assert_eq!(limiter.delay("bob", ip(9), t), Duration::ZERO);
        for name in ["b1", "b2", "b3"] {
            limiter.failed(name, ip(7), t);
        }
        assert_eq!(limiter.delay("carol", ip(7), t), FIRST_DELAY);
    }

    #[test]
    fn success_clears_the_account_but_not_the_address() {
        let limiter = Limiter::default();
        let t = Instant::now();
        for _ in 0..4 {
            limiter.failed(A, ip(1), t);
        }
        limiter.succeeded(A);
        assert_eq!(limiter.delay(A, ip(2), t), Duration::ZERO);
        assert_eq!(limiter.delay(A, ip(1), t), FIRST_DELAY * 2);
    }

    #[test]
    fn fifteen_idle_minutes_forget() {
        let limiter = Limiter::default();
        let t = Instant::now();
        for _ in 0..5 {
            limiter.failed(A, ip(1), t);
        }
        assert!(
            limiter.delay(A, ip(1), t + FORGET_AFTER - Duration::from_secs(1)) > Duration::ZERO
        );
        assert_eq!(limiter.delay(A, ip(1), t + FORGET_AFTER), Duration::ZERO);
        // A failure after the idle time starts a new count.
        limiter.failed(A, ip(1), t + FORGET_AFTER);
        assert_eq!(limiter.delay(A, ip(1), t + FORGET_AFTER), Duration::ZERO);
    }

    #[test]
    fn hostile_keys_cannot_grow_the_maps_past_their_cap() {
        let limiter = Limiter::with_capacity(8);
        let t = Instant::now();
        for n in 0..100u32 {
            let at = t + Duration::from_millis(n.into());
            limiter.failed(&format!("u{n}"), IpAddr::from(n.to_be_bytes()), at);
        }
        let inner = limiter.lock();
        assert!(inner.accounts.len() <= 8);
        assert!(inner.addresses.len() <= 8);
        // The newest keys are the ones kept.
        assert_eq!(inner.accounts.count(&"u99".to_string(), t), 1);
    }
}
