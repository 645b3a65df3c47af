//! Identifiers, injectable so that dry runs and snapshots are reproducible: the only place
//! iwf draws random numbers ([`RandomIds`]); and the fixed time of snapshots ([`fixed_now`]).

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use rand::Rng;

/// Where random identifiers come from.
pub trait Ids: Send + Sync + std::fmt::Debug {
    /// A token of at least 64 random bits from `[0-9a-z]` (a CPIM/SIP token).
    fn token(&self) -> String;

    /// 64 random bits: SIP branch, Call-ID and tags, digest cnonce, SRV weighted draws,
    /// SDP session ids.
    fn bits(&self) -> u64;

    /// `digits` random lower-case hex digits (16 per [`Ids::bits`] drawn).
    fn hex(&self, digits: usize) -> String {
        let mut s = String::with_capacity(digits.next_multiple_of(16));
        while s.len() < digits {
            s.push_str(&format!("{:016x}", self.bits()));
        }
        s.truncate(digits);
        s
    }

    /// An RFC 4975 ident of 12 alphanumerics (an MSRP transaction id, Message-ID or session
    /// id).
    fn ident(&self) -> String {
        const ALNUM: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let mut n = self.bits();
        (0..IDENT_LEN)
            .map(|_| {
                let c = ALNUM[(n % 62) as usize] as char;
                n /= 62;
                c
            })
            .collect()
    }
}

/// Length of [`Ids::ident`].
pub const IDENT_LEN: usize = 12;

/// CSPRNG-backed identifiers (RFC 5438 §6.3 recommends a CSPRNG for imdn.Message-ID).
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomIds;

impl Ids for RandomIds {
    fn token(&self) -> String {
        const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let mut rng = rand::rng();
        (0..16)
            .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
            .collect()
    }

    fn bits(&self) -> u64 {
        rand::rng().random()
    }

    fn ident(&self) -> String {
        rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(IDENT_LEN)
            .map(char::from)
            .collect()
    }
}

/// Deterministic identifiers for dry runs with `--deterministic`, self-tests and snapshots.
#[derive(Debug)]
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

    fn bits(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

/// The fixed clock of self-tests and snapshots: Fri, 21 Nov 2025 14:03:07 GMT.
pub fn fixed_now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_763_733_787, 0).expect("valid timestamp")
}

/// Random identifiers, shared.
pub fn random() -> std::sync::Arc<dyn Ids> {
    std::sync::Arc::new(RandomIds)
}
