//! Identifiers and the clock, injectable so that dry runs and snapshots are reproducible.

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use rand::Rng;

/// Where random identifiers come from.
pub trait Ids: Send + Sync {
    /// A token of at least 64 random bits from `[0-9a-z]` (a CPIM/SIP token).
    fn token(&self) -> String;
}

/// CSPRNG-backed identifiers (RFC 5438 §6.3 recommends a CSPRNG for imdn.Message-ID).
pub struct RandomIds;

impl Ids for RandomIds {
    fn token(&self) -> String {
        const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let mut rng = rand::rng();
        (0..16)
            .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
            .collect()
    }
}

/// Deterministic identifiers for dry runs with `--deterministic`, self-tests and snapshots.
pub struct SequentialIds(AtomicU64);

impl SequentialIds {
    pub fn new() -> Self {
        SequentialIds(AtomicU64::new(1))
    }
}

impl Default for SequentialIds {
    fn default() -> Self {
        Self::new()
    }
}

impl Ids for SequentialIds {
    fn token(&self) -> String {
        format!("t{:015}", self.0.fetch_add(1, Ordering::Relaxed))
    }
}

/// The fixed clock of self-tests and snapshots: Fri, 21 Nov 2025 14:03:07 GMT.
pub fn fixed_now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_763_733_787, 0).expect("valid timestamp")
}
