//! iwf's small keyed state behind one async interface (DESIGN §3.5): delivery records
//! (mail identity × recipient: "this recipient has this mail already") and correlation
//! records (a key → a few named fields, for reports and threads). Every record has a time to
//! live; every store keeps at most `max_records` of each kind, dropping the records that
//! would expire first when full.
//!
//! | backend | config `store:` | for |
//! |---|---|---|
//! | [`SqliteStore`] | `sqlite` (default) | one instance: one file `<state_dir>/iwf.sqlite3`, WAL, fsync before the reply, group commit |
//! | [`RedisStore`] | `redis://host:port/db`, `rediss://…`, `redis+cluster://h1:p1,h2:p2` | several instances sharing one Redis |
//! | [`MemoryStore`] | `memory` | tests; forgets everything on restart |
//!
//! A store that cannot answer returns [`StoreError::Unavailable`]; the gateway then answers
//! 4xx (the sender retries later), never a 250 whose record it could not keep. Every such
//! error is counted in `iwf_store_errors_total{backend, op}` and logged with its cause.

mod memory;
mod redis;
mod sqlite;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;

pub use self::memory::MemoryStore;
pub use self::redis::RedisStore;
pub use self::sqlite::SqliteStore;

/// A boxed future (the trait is used as `dyn Store`).
pub(crate) use futures::future::BoxFuture;

/// The fields of a correlation record.
pub type Fields = BTreeMap<String, String>;

/// Why a store could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or cannot write (disk full, Redis down, timeout).
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// Why a store could not be opened (at start; [`StoreError`] is for what comes after).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The directory of the SQLite file cannot be created.
    #[error("state_dir {}: {error}", dir.display())]
    StateDir { dir: PathBuf, error: std::io::Error },
    /// The SQLite file cannot be opened, given its schema or read.
    #[error("store {}: {error}", path.display())]
    Sqlite {
        path: PathBuf,
        error: rusqlite::Error,
    },
    /// The SQLite writer thread did not start.
    #[error(transparent)]
    Thread(std::io::Error),
    /// A Redis URL or client the redis crate refuses.
    #[error(transparent)]
    Redis(#[from] ::redis::RedisError),
    #[error("no Redis URL")]
    NoRedisUrl,
}

/// A `store` setting that names no store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    #[error("redis+cluster:// needs at least one host:port")]
    NoClusterHost,
    /// A Redis URL the redis crate refuses, with its reason.
    #[error("`{url}`: {reason}")]
    RedisUrl { url: String, reason: String },
    /// None of memory, sqlite, redis://, rediss://, unix://, redis+cluster://.
    #[error(
        "`{0}` is not a store: give memory, sqlite, redis://host:port[/db] or redis+cluster://host:port,host:port"
    )]
    Unknown(String),
}

/// What a store holds now (`iwf store stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    pub backend: String,
    /// Where: the database file or the Redis URL (without a password).
    pub location: String,
    /// Live delivery records (expired ones not yet swept are not counted where the backend
    /// can tell).
    pub delivery_records: u64,
    pub correlation_records: u64,
    /// At most this many records of each kind.
    pub max_records: u64,
    pub delivery_ttl_secs: u64,
}

/// What `iwf store get KEY` shows: the recipients recorded for a mail identity and the
/// correlation record with that key.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Lookup {
    /// Recipient → Unix time (ms) at which the record expires.
    pub delivered: BTreeMap<String, u64>,
    pub correlation: Option<Fields>,
}

/// The one store interface.
pub trait Store: Send + Sync {
    /// For each of `rcpts`: whether `mail` was recorded as delivered to it (and the record
    /// has not expired). Recipients compare case-insensitively.
    fn delivered<'a>(
        &'a self,
        mail: &'a str,
        rcpts: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<bool>, StoreError>>;

    /// Records that `mail` was delivered to `rcpts`; returns once the records are durable
    /// (committed and synced for SQLite; acknowledged by Redis), so a reply that depends on
    /// them may be sent.
    fn record_delivered<'a>(
        &'a self,
        mail: &'a str,
        rcpts: &'a [String],
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Stores (replaces) the correlation record `key` for `ttl`.
    fn put<'a>(
        &'a self,
        key: &'a str,
        fields: &'a Fields,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// The correlation record `key`, if present and not expired.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Fields>, StoreError>>;

    /// Everything recorded under `key`, for operators.
    fn lookup<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Lookup, StoreError>>;

    fn stats(&self) -> BoxFuture<'_, Result<Stats, StoreError>>;

    /// Takes `key` for `ttl` if nobody holds it: true when this caller got it. Atomic where
    /// several processes share the store (Redis `SET NX`, the memory store's lock); the
    /// default (SQLite: one machine, one process in practice) looks and then writes.
    fn claim<'a>(&'a self, key: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let key = format!("claim:{key}");
            if self.get(&key).await?.is_some() {
                return Ok(false);
            }
            let mut f = Fields::new();
            f.insert("claim".into(), "1".into());
            self.put(&key, &f, ttl).await?;
            Ok(true)
        })
    }

    /// Gives a [`Store::claim`] back before its time is up.
    fn release<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            // A record that expires now: the same as no record (reads want expires > now).
            self.put(&format!("claim:{key}"), &Fields::new(), Duration::ZERO)
                .await
        })
    }
}

/// Limits every backend applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long a delivery record lives: a sender retries for 4–5 days (RFC 5321
    /// §4.5.4.1), so the default is 5 days.
    pub delivery_ttl: Duration,
    /// At most this many delivery records and this many correlation records.
    pub max_records: usize,
    /// How long a report correlation record lives (engine/reports): a DSN or an IMDN may
    /// come days after the message (MMS expiry, a phone switched off), so 7 days.
    pub report_ttl: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            delivery_ttl: Duration::from_secs(5 * 24 * 3600),
            max_records: 1_000_000,
            report_ttl: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Which store, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Memory,
    /// The SQLite database file.
    Sqlite(PathBuf),
    /// A Redis URL (`redis://`, `rediss://`, `unix://`), or several for a cluster.
    Redis {
        urls: Vec<String>,
        cluster: bool,
    },
}

impl Backend {
    /// Reads the config value `store` (`memory`, `sqlite`, `redis://…`,
    /// `redis+cluster://h1:p1,h2:p2`); the SQLite file lives in `state_dir`.
    pub fn parse(store: &str, state_dir: &std::path::Path) -> Result<Backend, BackendError> {
        let s = store.trim();
        if s == "memory" {
            Ok(Backend::Memory)
        } else if s == "sqlite" {
            Ok(Backend::Sqlite(state_dir.join("iwf.sqlite3")))
        } else if let Some(rest) = s.strip_prefix("redis+cluster://") {
            let urls: Vec<String> = rest
                .split(',')
                .filter(|h| !h.is_empty())
                .map(|h| format!("redis://{h}"))
                .collect();
            if urls.is_empty() {
                return Err(BackendError::NoClusterHost);
            }
            Ok(Backend::Redis {
                urls,
                cluster: true,
            })
        } else if s.starts_with("redis://")
            || s.starts_with("rediss://")
            || s.starts_with("unix://")
        {
            ::redis::Client::open(s).map_err(|e| BackendError::RedisUrl {
                url: s.to_string(),
                reason: e.to_string(),
            })?;
            Ok(Backend::Redis {
                urls: vec![s.to_string()],
                cluster: false,
            })
        } else {
            Err(BackendError::Unknown(s.to_string()))
        }
    }

    /// Opens the store (a SQLite file is created with its directory; Redis is connected
    /// lazily, so iwf starts while Redis is down and answers 4xx until it is back).
    /// Records expire on `clock`.
    pub fn open(&self, limits: Limits, clock: Arc<dyn Clock>) -> Result<Arc<dyn Store>, OpenError> {
        Ok(match self {
            Backend::Memory => Arc::new(MemoryStore::new(limits, clock)),
            Backend::Sqlite(path) => Arc::new(SqliteStore::open(path, limits, clock)?),
            Backend::Redis { urls, cluster } => {
                Arc::new(RedisStore::new(urls, *cluster, limits, clock)?)
            }
        })
    }
}

/// The identity of a mail for idempotency: its Message-ID when it has one, else a SHA-256
/// of the envelope sender and the whole message (header section and body). A retry from a
/// sender's queue carries the same bytes, so it has the same identity; two different mails
/// share one only if they share the Message-ID (see the README for the limits).
pub fn mail_identity(mail_from: &str, raw: &[u8]) -> String {
    let id = crate::mail_to_cpm::mail::message_id_only(raw);
    mail_identity_of(mail_from, id.as_deref(), raw)
}

/// [`mail_identity`] with the Message-ID already parsed (the gateway parses a mail once:
/// `Mail::parse(raw).message_id()` is what `message_id_only(raw)` finds).
pub fn mail_identity_of(mail_from: &str, message_id: Option<&str>, raw: &[u8]) -> String {
    if let Some(id) = message_id {
        // No space or control character: the Redis key puts a space after the identity.
        let id: String = id
            .chars()
            .map(|c| {
                if c.is_whitespace() || c.is_control() {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        return format!("id:{id}");
    }
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(mail_from.to_ascii_lowercase().as_bytes());
    h.update([0u8]);
    h.update(raw);
    let d = h.finalize();
    let mut hex = String::with_capacity(64);
    for b in d.iter() {
        hex.push_str(&format!("{b:02x}"));
    }
    format!("sha256:{hex}")
}

/// Recipients are compared case-insensitively (the local part of a CPM address is a
/// telephone number or a case-insensitive user name in practice).
pub(crate) fn rcpt_key(rcpt: &str) -> String {
    rcpt.to_ascii_lowercase()
}

/// Now on `clock`, in Unix milliseconds.
pub(crate) fn now_ms(clock: &dyn Clock) -> u64 {
    u64::try_from(clock.now().timestamp_millis()).unwrap_or(0)
}

pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Counts and logs a store failure.
pub(crate) fn failed(backend: &'static str, op: &'static str, e: &StoreError) {
    ::metrics::counter!("iwf_store_errors_total", "backend" => backend, "op" => op).increment(1);
    tracing::warn!(backend, op, "store failure: {e}");
}

/// Describes the store metrics (call once the recorder is installed).
pub fn describe_metrics() {
    ::metrics::describe_counter!(
        "iwf_store_errors_total",
        "store operations that failed (the mail was answered 4xx), by backend and operation"
    );
    ::metrics::describe_counter!(
        "iwf_store_commits_total",
        "SQLite group commits (each one fsync), by backend"
    );
    ::metrics::describe_counter!(
        "iwf_store_records_committed_total",
        "records written by group commits, by backend"
    );
    ::metrics::describe_counter!(
        "iwf_store_swept_total",
        "expired records removed by the background sweep"
    );
}

#[cfg(test)]
mod tests;
