//! The in-memory store: one process, forgotten on restart (`store: memory`, tests).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::Clock;

use super::{BoxFuture, Fields, Limits, Lookup, Stats, Store, StoreError, ms, now_ms, rcpt_key};

/// Records in two maps, each bounded by `limits.max_records`: when one is full, expired
/// records go first, then those that would expire soonest, down to 90% of the bound.
pub struct MemoryStore {
    delivered: Mutex<HashMap<(String, String), u64>>,
    correlation: Mutex<HashMap<String, (Fields, u64)>>,
    limits: Limits,
    clock: Arc<dyn Clock>,
}

impl MemoryStore {
    /// An empty store whose records expire on `clock`.
    pub fn new(limits: Limits, clock: Arc<dyn Clock>) -> Self {
        MemoryStore {
            clock,
            delivered: Mutex::new(HashMap::new()),
            correlation: Mutex::new(HashMap::new()),
            limits: Limits {
                max_records: limits.max_records.max(1),
                ..limits
            },
        }
    }

    /// Delivery records held now (expired ones included until they are dropped).
    pub fn len(&self) -> usize {
        self.delivered.lock().map(|r| r.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn unavailable() -> StoreError {
        StoreError::Unavailable("memory store lock poisoned".into())
    }
}

impl Default for MemoryStore {
    /// Five days, one million records of each kind, on the system clock.
    fn default() -> Self {
        MemoryStore::new(Limits::default(), crate::clock::system())
    }
}

/// Makes room for one more record in `map` (whose values expire at `expires(v)`).
fn make_room<K: Clone + Eq + std::hash::Hash, V>(
    map: &mut HashMap<K, V>,
    max: usize,
    now: u64,
    expires: impl Fn(&V) -> u64,
) {
    if map.len() < max {
        return;
    }
    map.retain(|_, v| expires(v) > now);
    if map.len() < max {
        return;
    }
    let keep = max - max.div_ceil(10);
    let mut by_expiry: Vec<(u64, K)> = map.iter().map(|(k, v)| (expires(v), k.clone())).collect();
    by_expiry.sort_unstable_by_key(|(e, _)| *e);
    for (_, k) in by_expiry.into_iter().take(map.len() - keep) {
        map.remove(&k);
    }
}

impl Store for MemoryStore {
    fn delivered<'a>(
        &'a self,
        mail: &'a str,
        rcpts: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<bool>, StoreError>> {
        Box::pin(async move {
            let r = self.delivered.lock().map_err(|_| Self::unavailable())?;
            let now = now_ms(&*self.clock);
            Ok(rcpts
                .iter()
                .map(|rc| {
                    r.get(&(mail.to_string(), rcpt_key(rc)))
                        .is_some_and(|e| *e > now)
                })
                .collect())
        })
    }

    fn record_delivered<'a>(
        &'a self,
        mail: &'a str,
        rcpts: &'a [String],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut r = self.delivered.lock().map_err(|_| Self::unavailable())?;
            let now = now_ms(&*self.clock);
            let expires = now.saturating_add(ms(self.limits.delivery_ttl));
            for rc in rcpts {
                make_room(&mut r, self.limits.max_records, now, |e| *e);
                r.insert((mail.to_string(), rcpt_key(rc)), expires);
            }
            Ok(())
        })
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        fields: &'a Fields,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut c = self.correlation.lock().map_err(|_| Self::unavailable())?;
            let now = now_ms(&*self.clock);
            if !c.contains_key(key) {
                make_room(&mut c, self.limits.max_records, now, |(_, e)| *e);
            }
            c.insert(
                key.to_string(),
                (fields.clone(), now.saturating_add(ms(ttl))),
            );
            Ok(())
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Fields>, StoreError>> {
        Box::pin(async move {
            let c = self.correlation.lock().map_err(|_| Self::unavailable())?;
            let now = now_ms(&*self.clock);
            Ok(c.get(key).filter(|(_, e)| *e > now).map(|(f, _)| f.clone()))
        })
    }

    fn lookup<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Lookup, StoreError>> {
        Box::pin(async move {
            let now = now_ms(&*self.clock);
            let delivered = {
                let r = self.delivered.lock().map_err(|_| Self::unavailable())?;
                r.iter()
                    .filter(|((m, _), e)| m == key && **e > now)
                    .map(|((_, rc), e)| (rc.clone(), *e))
                    .collect()
            };
            Ok(Lookup {
                delivered,
                correlation: self.get(key).await?,
            })
        })
    }

    fn stats(&self) -> BoxFuture<'_, Result<Stats, StoreError>> {
        Box::pin(async move {
            let now = now_ms(&*self.clock);
            let d = self.delivered.lock().map_err(|_| Self::unavailable())?;
            let c = self.correlation.lock().map_err(|_| Self::unavailable())?;
            Ok(Stats {
                backend: "memory".into(),
                location: "memory".into(),
                delivery_records: d.values().filter(|e| **e > now).count() as u64,
                correlation_records: c.values().filter(|(_, e)| *e > now).count() as u64,
                max_records: self.limits.max_records as u64,
                delivery_ttl_secs: self.limits.delivery_ttl.as_secs(),
            })
        })
    }

    fn claim<'a>(&'a self, key: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut c = self.correlation.lock().map_err(|_| Self::unavailable())?;
            let key = format!("claim:{key}");
            let now = now_ms(&*self.clock);
            if c.get(&key).is_some_and(|(_, e)| *e > now) {
                return Ok(false);
            }
            if !c.contains_key(&key) {
                make_room(&mut c, self.limits.max_records, now, |(_, e)| *e);
            }
            let mut f = Fields::new();
            f.insert("claim".into(), "1".into());
            c.insert(key, (f, now.saturating_add(ms(ttl))));
            Ok(true)
        })
    }

    fn release<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut c = self.correlation.lock().map_err(|_| Self::unavailable())?;
            c.remove(&format!("claim:{key}"));
            Ok(())
        })
    }
}
