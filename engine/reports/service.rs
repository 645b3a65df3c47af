//! The report loop's state and I/O: correlation records in the shared [`Store`], the
//! "at most once" guard, and the hand-off of the reports the phases decided.
//!
//! Shared by the SMTP gateway (which records what it sent to CPM and receives DSN/MDN
//! mails for `b+<token>` addresses) and the SIP UAS (which records the mails it sent for
//! CPM users and receives IMDNs).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::Clock;
use crate::store::{Fields, Store, StoreError};

use super::records::{MailedRecord, SentRecord, mailed_key, sent_key};

/// What the report loop needs.
pub struct Reports {
    pub store: Arc<dyn Store>,
    /// Where DSNs and MDNs go (`host:port`).
    pub smarthost: Option<String>,
    /// Our name: Reporting-MTA, Reporting-UA, EHLO.
    pub hostname: String,
    /// How long a correlation record lives.
    pub ttl: Duration,
    /// The time of report documents and of the rules that map them.
    pub clock: Arc<dyn Clock>,
    /// Reports being sent now (key `record|what`): a copy of a report that arrives while
    /// the first is on its way waits for it, then finds it sent (or tries itself if the
    /// first failed) — so no copy is answered 2xx before the report was handed over.
    in_flight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Whether a report was sent by this call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Once<E> {
    Sent,
    /// Sent before (or being sent now by another copy of the same report).
    Duplicate,
    Failed(E),
}

impl Reports {
    pub fn new(
        store: Arc<dyn Store>,
        smarthost: Option<String>,
        hostname: String,
        ttl: Duration,
        clock: Arc<dyn Clock>,
    ) -> Reports {
        Reports {
            store,
            smarthost,
            hostname,
            ttl,
            clock,
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// Keeps the record of a message sent to CPM (durable when this returns).
    pub async fn keep_sent(&self, rec: &SentRecord) -> Result<(), StoreError> {
        self.store.put(&rec.key(), &rec.to_fields(), self.ttl).await
    }

    /// Keeps the record of a mail sent for a CPM message.
    pub async fn keep_mailed(&self, rec: &MailedRecord) -> Result<(), StoreError> {
        self.store.put(&rec.key(), &rec.to_fields(), self.ttl).await
    }

    /// The record of the message with this imdn.Message-ID. A report can overtake the
    /// record (the IMDN can arrive before iwf has stored the 200 that preceded it): one
    /// that is not there yet is looked up again after `patience`.
    pub async fn sent(
        &self,
        imdn_message_id: &str,
        patience: Duration,
    ) -> Result<Option<Fields>, StoreError> {
        self.find(&sent_key(imdn_message_id), patience).await
    }

    /// The record of the mail sent with the return path `b+<token>@…`.
    pub async fn mailed(
        &self,
        token: &str,
        patience: Duration,
    ) -> Result<Option<Fields>, StoreError> {
        self.find(&mailed_key(token), patience).await
    }

    async fn find(&self, key: &str, patience: Duration) -> Result<Option<Fields>, StoreError> {
        if let Some(f) = self.store.get(key).await? {
            return Ok(Some(f));
        }
        if patience.is_zero() {
            return Ok(None);
        }
        tokio::time::sleep(patience).await;
        self.store.get(key).await
    }

    /// Runs `send` unless the report `what` about `record` was sent already (by this
    /// instance or another one sharing the store), and remembers that it was sent.
    pub async fn once<E, Fut>(&self, record: &str, what: &str, send: Fut) -> Once<E>
    where
        Fut: std::future::Future<Output = Result<(), E>>,
        E: From<StoreError>,
    {
        let id = format!("{record}|{what}");
        let marker = format!("sent:{record}:{what}");
        let gate = {
            let Ok(mut g) = self.in_flight.lock() else {
                return Once::Failed(E::from(StoreError::Unavailable("lock poisoned".into())));
            };
            g.entry(id.clone()).or_default().clone()
        };
        let result = {
            let _turn = gate.lock().await;
            self.once_across_instances(record, what, &marker, send)
                .await
        };
        if let Ok(mut g) = self.in_flight.lock()
            && g.get(&id).is_some_and(|a| Arc::strong_count(a) <= 2)
        {
            g.remove(&id);
        }
        drop(gate);
        result
    }
}

/// How long one instance may hold a report it is sending (longer than a SIP transaction
/// plus a smarthost hand-off); after that another may send it.
const CLAIM_TTL: Duration = Duration::from_secs(120);
/// How long a copy waits for another instance to finish sending the same report.
const CLAIM_WAIT: Duration = Duration::from_secs(10);

impl Reports {
    /// The store's part of [`Reports::once`]: sent before → duplicate; else one instance of
    /// all sharing the store claims the report and sends it, the others wait for its
    /// "sent" marker (and answer "try later" if it does not come in time).
    async fn once_across_instances<E, Fut>(
        &self,
        record: &str,
        what: &str,
        marker: &str,
        send: Fut,
    ) -> Once<E>
    where
        Fut: std::future::Future<Output = Result<(), E>>,
        E: From<StoreError>,
    {
        match self.store.get(marker).await {
            Ok(Some(_)) => return Once::Duplicate,
            Err(e) => return Once::Failed(E::from(e)),
            Ok(None) => {}
        }
        let claim = format!("sending:{record}:{what}");
        match self.store.claim(&claim, CLAIM_TTL).await {
            Err(e) => return Once::Failed(E::from(e)),
            Ok(false) => {
                let step = Duration::from_millis(250);
                let mut waited = Duration::ZERO;
                while waited < CLAIM_WAIT {
                    tokio::time::sleep(step).await;
                    waited += step;
                    match self.store.get(marker).await {
                        Ok(Some(_)) => return Once::Duplicate,
                        Err(e) => return Once::Failed(E::from(e)),
                        Ok(None) => {}
                    }
                }
                return Once::Failed(E::from(StoreError::Unavailable(
                    "another instance is still sending this report".into(),
                )));
            }
            Ok(true) => {}
        }
        let sent = send.await;
        if sent.is_ok() {
            let mut f = Fields::new();
            f.insert("sent".into(), "1".into());
            if let Err(e) = self.store.put(marker, &f, self.ttl).await {
                // Sent, but not remembered: a later copy could send it again.
                tracing::warn!(record, what, "report sent, marker not kept: {e}");
            }
        }
        if let Err(e) = self.store.release(&claim).await {
            tracing::debug!(record, what, "report claim not released (it expires): {e}");
        }
        match sent {
            Ok(()) => Once::Sent,
            Err(e) => Once::Failed(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Limits, MemoryStore};

    #[tokio::test]
    async fn a_report_is_sent_once() {
        let r = Reports::new(
            Arc::new(MemoryStore::new(Limits::default(), crate::clock::system())),
            None,
            "iwf.example.net".into(),
            Duration::from_secs(60),
            crate::clock::system(),
        );
        let mut sends = 0;
        for _ in 0..3 {
            let out: Once<StoreError> = r
                .once("imdn:x", "dsn:a@b", async {
                    sends += 1;
                    Ok(())
                })
                .await;
            assert!(matches!(out, Once::Sent | Once::Duplicate));
        }
        assert_eq!(sends, 1);
        // A failed send is not remembered: the next copy tries again.
        let out: Once<StoreError> = r
            .once("imdn:y", "mdn", async {
                Err(StoreError::Unavailable("smarthost down".into()))
            })
            .await;
        assert!(matches!(out, Once::Failed(_)));
        let out: Once<StoreError> = r.once("imdn:y", "mdn", async { Ok(()) }).await;
        assert_eq!(out, Once::Sent);
    }

    /// Two instances sharing one store get the same report at the same time: one sends
    /// it, the other waits for it and answers only once it was handed over. On tokio's
    /// paused clock: the send's 300 ms and the waiter's polling pass without real waits.
    #[tokio::test(start_paused = true)]
    async fn two_instances_send_a_report_once() {
        let clock: Arc<dyn Clock> = Arc::new(crate::clock::TokioClock::starting_at(
            crate::ids::fixed_now(),
        ));
        let store: Arc<dyn crate::store::Store> =
            Arc::new(MemoryStore::new(Limits::default(), clock.clone()));
        let a = Reports::new(
            store.clone(),
            None,
            "a".into(),
            Duration::from_secs(60),
            clock.clone(),
        );
        let b = Reports::new(
            store,
            None,
            "b".into(),
            Duration::from_secs(60),
            clock.clone(),
        );
        let sends = std::sync::atomic::AtomicUsize::new(0);
        let send = || async {
            sends.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok::<(), StoreError>(())
        };
        let started = clock.instant();
        let (x, y) = tokio::join!(
            a.once("imdn:z", "dsn:r", send()),
            b.once("imdn:z", "dsn:r", send())
        );
        assert_eq!(sends.load(std::sync::atomic::Ordering::SeqCst), 1);
        let mut got = [x, y];
        got.sort_by_key(|o| matches!(o, Once::Duplicate));
        assert_eq!(got, [Once::Sent, Once::Duplicate]);
        // The copy was answered only after the first was handed over.
        assert!(clock.instant() - started >= Duration::from_millis(300));
    }
}
