//! The shared store: one Redis (or a Redis Cluster) for several iwf instances.
//!
//! - Delivery record: `SET iwf:delivered:<mail identity> <rcpt> 1 NX PX <ttl>` (one key per
//!   mail × recipient; the mail identity never contains a space, see
//!   [`super::mail_identity`]). Looked up with `EXISTS`.
//! - Correlation record: the hash `iwf:corr:<key>` (`HSET`) with `PEXPIRE`, in one
//!   MULTI/EXEC.
//! - Every call has a deadline ([`TIMEOUT`]); a Redis that is down, slow or refusing writes
//!   (`maxmemory` with `noeviction`, a read-only replica) makes the call fail with
//!   [`StoreError::Unavailable`], so the mail is answered 4xx.
//! - The bound on the number of records is Redis's `maxmemory` with
//!   `maxmemory-policy volatile-ttl` (every iwf key has a TTL): see the README.
//! - Durability is Redis's: `appendonly yes` with `appendfsync always` gives what the SQLite
//!   store gives; the default `everysec` may lose the last second on a Redis crash.
//!
//! The connection is made lazily and re-made after a failure (redis's `ConnectionManager`,
//! or the cluster client), so iwf starts, and answers 4xx, while Redis is down.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use tokio::sync::Mutex;

use crate::clock::Clock;

use super::{
    BoxFuture, Fields, Limits, Lookup, OpenError, Stats, Store, StoreError, failed, ms, rcpt_key,
};

/// Deadline of every Redis call.
pub const TIMEOUT: Duration = Duration::from_secs(2);

enum Conn {
    Single(ConnectionManager),
    /// Connected on first use, dropped after a failure.
    Cluster {
        client: Box<redis::cluster::ClusterClient>,
        conn: Mutex<Option<ClusterConnection>>,
    },
}

/// See the module documentation.
pub struct RedisStore {
    conn: Conn,
    location: String,
    limits: Limits,
    clock: Arc<dyn Clock>,
}

fn delivered_key(mail: &str, rcpt: &str) -> String {
    format!("iwf:delivered:{mail} {}", rcpt_key(rcpt))
}

fn corr_key(key: &str) -> String {
    format!("iwf:corr:{key}")
}

/// `s` with Redis glob characters escaped.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The URL without a password (for logs and `iwf store stats`).
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

impl RedisStore {
    /// Prepares the connection (made on first use). Needs a Tokio runtime.
    pub fn new(
        urls: &[String],
        cluster: bool,
        limits: Limits,
        clock: Arc<dyn Clock>,
    ) -> Result<RedisStore, OpenError> {
        let location = urls.iter().map(|u| redact(u)).collect::<Vec<_>>().join(",");
        let conn = if cluster {
            let client = redis::cluster::ClusterClient::builder(urls.iter().map(String::as_str))
                .connection_timeout(TIMEOUT)
                .response_timeout(TIMEOUT)
                .retries(1)
                .build()?;
            Conn::Cluster {
                client: Box::new(client),
                conn: Mutex::new(None),
            }
        } else {
            let url = urls.first().ok_or(OpenError::NoRedisUrl)?;
            let client = redis::Client::open(url.as_str())?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(TIMEOUT))
                .set_response_timeout(Some(TIMEOUT))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(500));
            Conn::Single(ConnectionManager::new_lazy_with_config(client, config)?)
        };
        Ok(RedisStore {
            conn,
            location,
            limits,
            clock,
        })
    }

    /// A connection (the cluster one is made on first use).
    async fn conn(&self) -> Result<AnyConn, StoreError> {
        match &self.conn {
            Conn::Single(m) => Ok(AnyConn::Single(m.clone())),
            Conn::Cluster { client, conn } => {
                let mut slot = conn.lock().await;
                if let Some(c) = &*slot {
                    return Ok(AnyConn::Cluster(c.clone()));
                }
                let c = tokio::time::timeout(TIMEOUT, client.get_async_connection())
                    .await
                    .map_err(|_| unavailable("no answer within 2 s"))?
                    .map_err(unavailable)?;
                *slot = Some(c.clone());
                Ok(AnyConn::Cluster(c))
            }
        }
    }

    /// Runs a pipeline (or one command) with the deadline; counts and logs a failure.
    async fn run<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        p: &redis::Pipeline,
    ) -> Result<T, StoreError> {
        let r = match self.conn().await {
            Ok(mut c) => tokio::time::timeout(TIMEOUT, p.query_async::<T>(&mut c))
                .await
                .map_err(|_| unavailable("no answer within 2 s"))
                .and_then(|r| r.map_err(unavailable)),
            Err(e) => Err(e),
        };
        if let Err(e) = &r {
            if let Conn::Cluster { conn, .. } = &self.conn {
                *conn.lock().await = None;
            }
            failed("redis", op, e);
        }
        r
    }

    /// Keys matching `pattern` (SCAN; for operators only).
    async fn scan(&self, pattern: &str) -> Result<Vec<String>, StoreError> {
        let mut cursor: u64 = 0;
        let mut all = Vec::new();
        loop {
            let mut p = redis::pipe();
            p.cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000);
            let ((next, keys),): ((u64, Vec<String>),) = self.run("scan", &p).await?;
            all.extend(keys);
            if next == 0 {
                return Ok(all);
            }
            cursor = next;
        }
    }
}

/// Either kind of connection, as one `ConnectionLike`.
enum AnyConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for AnyConn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            AnyConn::Single(c) => c.req_packed_command(cmd),
            AnyConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            AnyConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            AnyConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            AnyConn::Single(c) => c.get_db(),
            AnyConn::Cluster(c) => c.get_db(),
        }
    }
}

impl Store for RedisStore {
    fn delivered<'a>(
        &'a self,
        mail: &'a str,
        rcpts: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<bool>, StoreError>> {
        Box::pin(async move {
            if rcpts.is_empty() {
                return Ok(Vec::new());
            }
            let mut p = redis::pipe();
            for r in rcpts {
                p.exists(delivered_key(mail, r));
            }
            self.run("delivered", &p).await
        })
    }

    fn record_delivered<'a>(
        &'a self,
        mail: &'a str,
        rcpts: &'a [String],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            if rcpts.is_empty() {
                return Ok(());
            }
            let ttl = ms(self.limits.delivery_ttl).max(1);
            let mut p = redis::pipe();
            for r in rcpts {
                // NX: a record another instance wrote first stays as it is.
                p.cmd("SET")
                    .arg(delivered_key(mail, r))
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl)
                    .ignore();
            }
            self.run("record", &p).await
        })
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        fields: &'a Fields,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let k = corr_key(key);
            let mut p = redis::pipe();
            p.atomic().del(&k).ignore();
            if !fields.is_empty() {
                let items: Vec<(&String, &String)> = fields.iter().collect();
                p.hset_multiple(&k, &items).ignore();
            }
            p.pexpire(&k, ms(ttl).max(1) as i64).ignore();
            self.run("put", &p).await
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Fields>, StoreError>> {
        Box::pin(async move {
            let mut p = redis::pipe();
            p.hgetall(corr_key(key));
            let (f,): (Fields,) = self.run("get", &p).await?;
            Ok((!f.is_empty()).then_some(f))
        })
    }

    fn lookup<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Lookup, StoreError>> {
        Box::pin(async move {
            let prefix = format!("iwf:delivered:{key} ");
            let keys = self.scan(&format!("{}*", glob_escape(&prefix))).await?;
            let mut delivered = std::collections::BTreeMap::new();
            for k in keys {
                let mut p = redis::pipe();
                p.pttl(&k);
                let (left,): (i64,) = self.run("lookup", &p).await?;
                if left > 0
                    && let Some(rcpt) = k.strip_prefix(&prefix)
                {
                    delivered.insert(rcpt.to_string(), super::now_ms(&*self.clock) + left as u64);
                }
            }
            Ok(Lookup {
                delivered,
                correlation: self.get(key).await?,
            })
        })
    }

    fn stats(&self) -> BoxFuture<'_, Result<Stats, StoreError>> {
        Box::pin(async move {
            Ok(Stats {
                backend: "redis".into(),
                location: self.location.clone(),
                delivery_records: self.scan("iwf:delivered:*").await?.len() as u64,
                correlation_records: self.scan("iwf:corr:*").await?.len() as u64,
                max_records: self.limits.max_records as u64,
                delivery_ttl_secs: self.limits.delivery_ttl.as_secs(),
            })
        })
    }

    fn claim<'a>(&'a self, key: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            // SET NX: one instance of all those sharing this Redis gets it.
            let mut p = redis::pipe();
            p.cmd("SET")
                .arg(format!("iwf:claim:{key}"))
                .arg("1")
                .arg("NX")
                .arg("PX")
                .arg(ms(ttl).max(1));
            let (got,): (Option<String>,) = self.run("claim", &p).await?;
            Ok(got.is_some())
        })
    }

    fn release<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut p = redis::pipe();
            p.del(format!("iwf:claim:{key}")).ignore();
            self.run("release", &p).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_do_not_show() {
        assert_eq!(
            redact("redis://user:secret@127.0.0.1:6379/0"),
            "redis://***@127.0.0.1:6379/0"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    #[test]
    fn keys_are_unambiguous_and_globs_escaped() {
        assert_eq!(delivered_key("id:a@b", "X@Y"), "iwf:delivered:id:a@b x@y");
        assert_eq!(glob_escape("id:a*[b]?"), "id:a\\*\\[b\\]\\?");
    }
}
