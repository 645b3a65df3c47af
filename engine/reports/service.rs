//! The report loop's state and I/O: correlation records in the shared [`Store`], the
//! "at most once" guard, and the hand-off of the reports the phases decided.
//!
//! Shared by the SMTP gateway (which records what it sent to CPM and receives DSN/MDN
//! mails for `b+<token>` addresses) and the SIP UAS (which records the mails it sent for
//! CPM users and receives IMDNs).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    ) -> Reports {
        Reports {
            store,
            smarthost,
            hostname,
            ttl,
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
            match self.store.get(&marker).await {
                Ok(Some(_)) => Once::Duplicate,
                Err(e) => Once::Failed(E::from(e)),
                Ok(None) => match send.await {
                    Err(e) => Once::Failed(e),
                    Ok(()) => {
                        let mut f = Fields::new();
                        f.insert("sent".into(), "1".into());
                        if let Err(e) = self.store.put(&marker, &f, self.ttl).await {
                            // Sent, but not remembered: a later copy could send it again.
                            tracing::warn!(record, what, "report sent, marker not kept: {e}");
                        }
                        Once::Sent
                    }
                },
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Limits, MemoryStore};

    #[tokio::test]
    async fn a_report_is_sent_once() {
        let r = Reports::new(
            Arc::new(MemoryStore::new(Limits::default())),
            None,
            "iwf.example.net".into(),
            Duration::from_secs(60),
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
}
