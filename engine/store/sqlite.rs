//! The embedded store: one SQLite file (`<state_dir>/iwf.sqlite3`) in WAL mode.
//!
//! - **Durable before the reply.** `synchronous=FULL`: a commit returns only after the WAL is
//!   fsynced, and [`Store::record_delivered`] returns only after the commit holding its
//!   records. A `kill -9` (or power loss) after the reply cannot lose a record the reply
//!   depended on; WAL recovery on the next open keeps every committed transaction.
//! - **Group commit.** One writer thread owns the write connection. It waits for a record,
//!   then takes every record queued meanwhile (up to [`BATCH`]) into the same transaction:
//!   while one fsync runs, the next batch collects, so N concurrent transactions cost about
//!   one fsync, not N.
//! - **Reads** (is this recipient delivered?) use a few reader connections of their own;
//!   WAL lets them run while the writer commits, and a primary-key lookup in a warm page
//!   cache takes microseconds, so it runs right on the calling task (a hop to a blocking
//!   thread would cost more than the lookup); only when every reader is busy does the call
//!   wait for one on a blocking thread.
//! - **Sweep.** The writer deletes expired records every [`SWEEP_EVERY`] (in chunks, so a
//!   large sweep never holds the write lock for long), and keeps each table at most
//!   `max_records` rows by deleting those that expire first.
//!
//! Schema (inspect with `sqlite3 state/iwf.sqlite3`):
//! `delivered(mail, rcpt, expires)` and `correlation(key, fields JSON, expires)`, `expires`
//! in Unix milliseconds.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use crate::clock::Clock;

use super::{
    BoxFuture, Fields, Limits, Lookup, OpenError, Stats, Store, StoreError, failed, ms, now_ms,
    rcpt_key,
};

/// Reader connections.
const READERS: usize = 4;
/// At most this many queued requests share one commit.
const BATCH: usize = 512;
/// How often expired records are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Rows deleted per sweep transaction.
const SWEEP_CHUNK: i64 = 5000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS delivered (
    mail    TEXT    NOT NULL,
    rcpt    TEXT    NOT NULL,
    expires INTEGER NOT NULL,
    PRIMARY KEY (mail, rcpt)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS delivered_expires ON delivered (expires);
CREATE TABLE IF NOT EXISTS correlation (
    key     TEXT    NOT NULL PRIMARY KEY,
    fields  TEXT    NOT NULL,
    expires INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS correlation_expires ON correlation (expires);
";

enum Job {
    Delivered {
        mail: String,
        rcpts: Vec<String>,
        expires: i64,
    },
    Put {
        key: String,
        fields: String,
        expires: i64,
    },
    /// Sweep now (tests, `iwf store`).
    Sweep,
}

struct Request {
    job: Job,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// See the module documentation.
pub struct SqliteStore {
    path: PathBuf,
    writer: Mutex<Option<mpsc::Sender<Request>>>,
    readers: Arc<Vec<Mutex<Connection>>>,
    limits: Limits,
    clock: Arc<dyn Clock>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let c = Connection::open(path)?;
    c.busy_timeout(Duration::from_secs(10))?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "FULL")?;
    Ok(c)
}

fn sql_err(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("sqlite: {e}"))
}

fn as_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl SqliteStore {
    /// Opens (creating it and its directory if needed) the database at `path` and starts
    /// the writer thread. Records expire on `clock`.
    pub fn open(
        path: &Path,
        limits: Limits,
        clock: Arc<dyn Clock>,
    ) -> Result<SqliteStore, OpenError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|error| OpenError::StateDir {
                dir: dir.to_path_buf(),
                error,
            })?;
        }
        let sqlite = |error| OpenError::Sqlite {
            path: path.to_path_buf(),
            error,
        };
        let limits = Limits {
            max_records: limits.max_records.max(1),
            ..limits
        };
        let writer_conn = open_connection(path)
            .and_then(|c| c.execute_batch(SCHEMA).map(|_| c))
            .map_err(sqlite)?;
        let readers = (0..READERS)
            .map(|_| open_connection(path).map(Mutex::new))
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(sqlite)?;
        let (tx, rx) = mpsc::channel();
        let mut w = Writer::new(writer_conn, limits, clock.clone()).map_err(sqlite)?;
        let thread = std::thread::Builder::new()
            .name("iwf-store-writer".into())
            .spawn(move || w.run(rx))
            .map_err(OpenError::Thread)?;
        Ok(SqliteStore {
            path: path.to_path_buf(),
            writer: Mutex::new(Some(tx)),
            readers: Arc::new(readers),
            limits,
            clock,
            thread: Mutex::new(Some(thread)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn submit(&self, job: Job) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        let sent = self
            .writer
            .lock()
            .ok()
            .and_then(|w| w.as_ref().map(|w| w.send(Request { job, done }).is_ok()));
        if sent != Some(true) {
            return Err(StoreError::Unavailable("sqlite writer stopped".into()));
        }
        wait.await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("sqlite writer stopped".into())))
    }

    /// Runs `f` on a free reader connection (see the module documentation).
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        for r in self.readers.iter() {
            if let Ok(c) = r.try_lock() {
                return f(&c).map_err(sql_err);
            }
        }
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let c = readers[0]
                .lock()
                .map_err(|_| StoreError::Unavailable("sqlite reader lock poisoned".into()))?;
            f(&c).map_err(sql_err)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("sqlite read task: {e}")))?
    }

    /// Deletes expired records now (the writer also does it every minute).
    pub async fn sweep(&self) -> Result<(), StoreError> {
        self.submit(Job::Sweep).await
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the channel ends the writer once it has committed what it holds.
        if let Ok(mut w) = self.writer.lock() {
            w.take();
        }
        if let Some(t) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = t.join();
        }
    }
}

/// The writer thread's state.
struct Writer {
    conn: Connection,
    limits: Limits,
    /// Record expiry and the sweep interval.
    clock: Arc<dyn Clock>,
    /// Upper bounds of the row counts (recounted when they pass the limit).
    delivered_rows: u64,
    correlation_rows: u64,
}

impl Writer {
    fn new(conn: Connection, limits: Limits, clock: Arc<dyn Clock>) -> rusqlite::Result<Writer> {
        let count = |t: &str| {
            conn.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as u64)
        };
        let (d, c) = (count("delivered")?, count("correlation")?);
        Ok(Writer {
            conn,
            limits,
            clock,
            delivered_rows: d,
            correlation_rows: c,
        })
    }

    fn run(&mut self, rx: mpsc::Receiver<Request>) {
        let mut last_sweep = self.clock.instant();
        loop {
            let first = match rx.recv_timeout(SWEEP_EVERY) {
                Ok(r) => r,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.sweep();
                    last_sweep = self.clock.instant();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            let sweep_asked = batch.iter().any(|r| matches!(r.job, Job::Sweep));
            let result = self.commit(&batch);
            if let Err(e) = &result {
                failed("sqlite", "commit", e);
            } else {
                ::metrics::counter!("iwf_store_commits_total", "backend" => "sqlite").increment(1);
                ::metrics::counter!("iwf_store_records_committed_total", "backend" => "sqlite")
                    .increment(batch.len() as u64);
            }
            if sweep_asked || self.clock.instant() - last_sweep >= SWEEP_EVERY {
                self.sweep();
                last_sweep = self.clock.instant();
            }
            for r in batch {
                let _ = r.done.send(result.clone());
            }
        }
    }

    /// One transaction for the whole batch; the commit is synced (synchronous=FULL).
    fn commit(&mut self, batch: &[Request]) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(sql_err)?;
        let (mut added_d, mut added_c) = (0u64, 0u64);
        {
            let mut ins_d = tx
                .prepare_cached(
                    "INSERT INTO delivered (mail, rcpt, expires) VALUES (?1, ?2, ?3)
                     ON CONFLICT (mail, rcpt) DO UPDATE SET expires = excluded.expires",
                )
                .map_err(sql_err)?;
            let mut ins_c = tx
                .prepare_cached(
                    "INSERT INTO correlation (key, fields, expires) VALUES (?1, ?2, ?3)
                     ON CONFLICT (key) DO UPDATE SET fields = excluded.fields, expires = excluded.expires",
                )
                .map_err(sql_err)?;
            for r in batch {
                match &r.job {
                    Job::Delivered {
                        mail,
                        rcpts,
                        expires,
                    } => {
                        for rc in rcpts {
                            ins_d.execute(params![mail, rc, expires]).map_err(sql_err)?;
                            added_d += 1;
                        }
                    }
                    Job::Put {
                        key,
                        fields,
                        expires,
                    } => {
                        ins_c
                            .execute(params![key, fields, expires])
                            .map_err(sql_err)?;
                        added_c += 1;
                    }
                    Job::Sweep => {}
                }
            }
        }
        self.delivered_rows += added_d;
        self.correlation_rows += added_c;
        let max = self.limits.max_records as u64;
        if self.delivered_rows > max {
            self.delivered_rows = bound(&tx, "delivered", "(mail, rcpt)", max)?;
        }
        if self.correlation_rows > max {
            self.correlation_rows = bound(&tx, "correlation", "key", max)?;
        }
        tx.commit().map_err(sql_err)
    }

    fn sweep(&mut self) {
        let now = as_i64(now_ms(&*self.clock));
        for (table, key) in [("delivered", "(mail, rcpt)"), ("correlation", "key")] {
            loop {
                let cols = key.trim_matches(['(', ')']);
                let sql = format!(
                    "DELETE FROM {table} WHERE {key} IN
                     (SELECT {cols} FROM {table} WHERE expires <= ?1 LIMIT ?2)"
                );
                match self.conn.execute(&sql, params![now, SWEEP_CHUNK]) {
                    Ok(n) => {
                        ::metrics::counter!("iwf_store_swept_total", "backend" => "sqlite")
                            .increment(n as u64);
                        let rows = if table == "delivered" {
                            &mut self.delivered_rows
                        } else {
                            &mut self.correlation_rows
                        };
                        *rows = rows.saturating_sub(n as u64);
                        if (n as i64) < SWEEP_CHUNK {
                            break;
                        }
                    }
                    Err(e) => {
                        failed("sqlite", "sweep", &sql_err(e));
                        break;
                    }
                }
            }
        }
    }
}

/// Keeps `table` at most `max` rows (down to 90% when over): the rows that expire first
/// (expired ones included) go. Returns the row count after.
fn bound(
    tx: &rusqlite::Transaction<'_>,
    table: &str,
    key: &str,
    max: u64,
) -> Result<u64, StoreError> {
    let n: i64 = tx
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .map_err(sql_err)?;
    let n = n as u64;
    if n <= max {
        return Ok(n);
    }
    let keep = max - max.div_ceil(10);
    let drop = as_i64(n - keep);
    let cols = key.trim_matches(['(', ')']);
    tx.execute(
        &format!(
            "DELETE FROM {table} WHERE {key} IN
             (SELECT {cols} FROM {table} ORDER BY expires LIMIT ?1)"
        ),
        params![drop],
    )
    .map_err(sql_err)?;
    Ok(keep)
}

impl Store for SqliteStore {
    fn delivered<'a>(
        &'a self,
        mail: &'a str,
        rcpts: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<bool>, StoreError>> {
        let mail = mail.to_string();
        let rcpts: Vec<String> = rcpts.iter().map(|r| rcpt_key(r)).collect();
        Box::pin(async move {
            let now = as_i64(now_ms(&*self.clock));
            let r = self
                .read(move |c| {
                    let mut q = c.prepare_cached(
                        "SELECT 1 FROM delivered WHERE mail = ?1 AND rcpt = ?2 AND expires > ?3",
                    )?;
                    rcpts
                        .iter()
                        .map(|rc| q.exists(params![mail, rc, now]))
                        .collect::<rusqlite::Result<Vec<bool>>>()
                })
                .await;
            if let Err(e) = &r {
                failed("sqlite", "delivered", e);
            }
            r
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
            let expires = as_i64(now_ms(&*self.clock).saturating_add(ms(self.limits.delivery_ttl)));
            let r = self
                .submit(Job::Delivered {
                    mail: mail.to_string(),
                    rcpts: rcpts.iter().map(|r| rcpt_key(r)).collect(),
                    expires,
                })
                .await;
            // A failed commit is counted by the writer; a stopped writer here.
            if let Err(e @ StoreError::Unavailable(m)) = &r
                && m.contains("writer stopped")
            {
                failed("sqlite", "record", e);
            }
            r
        })
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        fields: &'a Fields,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let fields = serde_json::to_string(fields)
                .map_err(|e| StoreError::Unavailable(format!("fields: {e}")))?;
            let r = self
                .submit(Job::Put {
                    key: key.to_string(),
                    fields,
                    expires: as_i64(now_ms(&*self.clock).saturating_add(ms(ttl))),
                })
                .await;
            if let Err(e) = &r {
                failed("sqlite", "put", e);
            }
            r
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Fields>, StoreError>> {
        let key = key.to_string();
        Box::pin(async move {
            let now = as_i64(now_ms(&*self.clock));
            let json = self
                .read(move |c| {
                    c.query_row(
                        "SELECT fields FROM correlation WHERE key = ?1 AND expires > ?2",
                        params![key, now],
                        |r| r.get::<_, String>(0),
                    )
                    .optional()
                })
                .await?;
            json.map(|j| {
                serde_json::from_str(&j)
                    .map_err(|e| StoreError::Unavailable(format!("stored fields: {e}")))
            })
            .transpose()
        })
    }

    fn lookup<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Lookup, StoreError>> {
        let k = key.to_string();
        Box::pin(async move {
            let now = as_i64(now_ms(&*self.clock));
            let delivered = self
                .read(move |c| {
                    let mut q = c.prepare(
                        "SELECT rcpt, expires FROM delivered WHERE mail = ?1 AND expires > ?2",
                    )?;
                    q.query_map(params![k, now], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
                    })?
                    .collect::<rusqlite::Result<_>>()
                })
                .await?;
            Ok(Lookup {
                delivered,
                correlation: self.get(key).await?,
            })
        })
    }

    fn stats(&self) -> BoxFuture<'_, Result<Stats, StoreError>> {
        Box::pin(async move {
            let now = as_i64(now_ms(&*self.clock));
            let (d, c) = self
                .read(move |c| {
                    let n = |t: &str| {
                        c.query_row(
                            &format!("SELECT count(*) FROM {t} WHERE expires > ?1"),
                            params![now],
                            |r| r.get::<_, i64>(0),
                        )
                    };
                    Ok((n("delivered")? as u64, n("correlation")? as u64))
                })
                .await?;
            Ok(Stats {
                backend: "sqlite".into(),
                location: self.path.display().to_string(),
                delivery_records: d,
                correlation_records: c,
                max_records: self.limits.max_records as u64,
                delivery_ttl_secs: self.limits.delivery_ttl.as_secs(),
            })
        })
    }
}
