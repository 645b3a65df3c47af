//! The gateway: the [`MailHandler`] the SMTP/LMTP front end calls. At RCPT time it runs the
//! recipient rules; at end of DATA it maps the mail, sends every delivery concurrently,
//! maps each outcome with the response rules (retrying once in another form when a rule
//! asks), and answers only once every outcome is known — 250 only after a SIP 2xx.
//!
//! A retried transaction (the sender got a 4xx, or lost our 250) does not deliver twice:
//! every delivered recipient is recorded in the [`Store`] (keyed by the mail's identity,
//! [`crate::store::mail_identity`]) before the reply is sent.

use std::sync::Arc;

use arc_swap::ArcSwap;
use chrono::Utc;

use crate::envelope::{Envelope, Rcpt};
use crate::ids::Ids;
use crate::mapper::{self, RcptDecision, ResponseDecision};
use crate::plan::{Delivery, Mode};
use crate::reply::Reply;
use crate::ruleset::RuleSet;
use crate::sip::SipBackend;
use crate::smtp::{BoxFuture, DataReplies, MailHandler, Protocol};

pub use crate::store::{MemoryStore, Store};

/// The gateway's dependencies.
pub struct Gateway {
    pub rules: Arc<ArcSwap<RuleSet>>,
    pub sip: Arc<dyn SipBackend>,
    pub ids: Arc<dyn Ids>,
    pub store: Arc<dyn Store>,
    pub protocol: Protocol,
    pub large: crate::large::LargeConfig,
    /// Where DSNs go (`host:port`); without one, a transaction whose recipients partly
    /// failed for good is answered with the first permanent failure instead of 250 + DSN.
    pub smarthost: Option<String>,
    /// Our name in DSNs (Reporting-MTA) and in EHLO to the smarthost.
    pub hostname: String,
}

impl MailHandler for Gateway {
    fn rcpt(&self, envelope: &Envelope, rcpt: &Rcpt) -> BoxFuture<'_, Result<(), Reply>> {
        let rules = self.rules.load_full();
        let decision = mapper::resolve_recipient(&rules, envelope, rcpt, Utc::now(), None);
        Box::pin(async move {
            match decision {
                RcptDecision::Accept { .. } => Ok(()),
                RcptDecision::Reject(r) => {
                    crate::metrics::rcpt_refused(self.protocol, &r);
                    Err(r)
                }
            }
        })
    }

    fn data(&self, envelope: Envelope, message: Vec<u8>) -> BoxFuture<'_, DataReplies> {
        // Counted, timed and logged as one transaction (engine/logging.rs).
        Box::pin(crate::logging::in_transaction(
            self.protocol,
            self.deliver(envelope, message),
        ))
    }
}

impl Gateway {
    async fn deliver(&self, envelope: Envelope, raw: Vec<u8>) -> DataReplies {
        // One rule-set generation maps the whole transaction.
        let rules = self.rules.load_full();
        let now = Utc::now();
        let key = crate::store::mail_identity(&envelope.mail_from.address, &raw);
        let addresses: Vec<String> = envelope.rcpts.iter().map(|r| r.address.clone()).collect();
        // Who has this mail already? A store that cannot say means no delivery now: the
        // sender retries later (and no 250 goes out whose record could not be kept).
        let done = match self.store.delivered(&key, &addresses).await {
            Ok(d) => d,
            Err(e) => return self.store_unavailable(&envelope, &rules, &key, &e),
        };
        let mut replies: Vec<Option<Reply>> = vec![None; envelope.rcpts.len()];
        let mut accepted = Vec::new();
        let mut index_of = Vec::new();
        for (i, r) in envelope.rcpts.iter().enumerate() {
            if done.get(i).copied().unwrap_or(false) {
                replies[i] = Some(Reply::new(
                    250,
                    "2.0.0",
                    format!("<{}>: already delivered to CPM", r.address),
                ));
                continue;
            }
            // Resolved again (RCPT time already did it) on purpose: the whole transaction is
            // then mapped by this one rule-set generation, even if a reload came in between.
            match mapper::resolve_recipient(&rules, &envelope, r, now, None) {
                RcptDecision::Accept { uri } => {
                    accepted.push((r.clone(), uri));
                    index_of.push(i);
                }
                RcptDecision::Reject(reply) => replies[i] = Some(reply),
            }
        }
        let plan = mapper::plan_mail(&rules, &envelope, &accepted, &raw, &*self.ids, now, false);
        let position = |addr: &str| envelope.rcpts.iter().position(|r| r.address == addr);
        for (addr, reply) in &plan.rejections {
            if let Some(i) = position(addr) {
                replies[i] = Some(reply.clone());
            }
        }
        let sends = plan.deliveries.iter().map(|d| {
            let rules = rules.clone();
            let envelope = &envelope;
            async move { self.deliver_one(&rules, envelope, d).await }
        });
        let results = futures_join_all(sends).await;
        for (d, reply) in plan.deliveries.iter().zip(results) {
            if let Some(i) = position(&d.recipient) {
                replies[i] = Some(reply.clone());
            }
        }
        for (addr, idx) in &plan.covered {
            if let (Some(i), Some(r)) = (
                position(addr),
                plan.deliveries
                    .get(*idx)
                    .and_then(|d| position(&d.recipient))
                    .and_then(|j| replies[j].clone()),
            ) {
                replies[i] = Some(r);
            }
        }
        let mut per_recipient: Vec<Reply> = replies
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Reply::new(451, "4.3.0", "recipient not processed")))
            .collect();
        let (mut transaction, dsn) =
            mapper::aggregate(&rules, &envelope, &per_recipient, now, None);
        // Every recipient delivered now is recorded (durably) before any reply: a retry
        // after a 4xx, or after a 250 the sender never saw, then reaches only the rest.
        let delivered_now: Vec<String> = envelope
            .rcpts
            .iter()
            .zip(&per_recipient)
            .zip(&done)
            .filter(|((_, reply), before)| reply.is_positive() && !**before)
            .map(|((r, _), _)| r.address.clone())
            .collect();
        if let Err(e) = self.store.record_delivered(&key, &delivered_now).await {
            tracing::warn!(mail = %key, recipients = delivered_now.len(), "delivered, but the record could not be kept: answering 4xx: {e}");
            transaction = Reply::new(
                451,
                "4.3.0",
                "delivery state could not be recorded; try again later",
            );
            for (reply, before) in per_recipient.iter_mut().zip(&done) {
                if reply.is_positive() && !*before {
                    *reply = transaction.clone();
                }
            }
        }
        if dsn && self.protocol == Protocol::Smtp && transaction.is_positive() {
            transaction = self
                .hand_off_dsn(&envelope, &per_recipient, &raw, transaction)
                .await;
        }
        crate::logging::finish_transaction(&crate::logging::Transaction {
            protocol: self.protocol,
            generation: rules.generation,
            message_id: key.strip_prefix("id:"),
            envelope: &envelope,
            per_recipient: &per_recipient,
            reply: &transaction,
        });
        DataReplies {
            per_recipient,
            transaction,
        }
    }

    /// The answer when the store cannot say who has the mail already: 451 for everyone, so
    /// the sender retries once the store is back (the failure is counted and logged by the
    /// store as `iwf_store_errors_total`).
    fn store_unavailable(
        &self,
        envelope: &Envelope,
        rules: &RuleSet,
        key: &str,
        e: &crate::store::StoreError,
    ) -> DataReplies {
        tracing::warn!(mail = %key, "not delivered, answering 4xx: {e}");
        let reply = Reply::new(451, "4.3.0", "delivery state unavailable; try again later");
        let replies = DataReplies::all(envelope, reply);
        crate::logging::finish_transaction(&crate::logging::Transaction {
            protocol: self.protocol,
            generation: rules.generation,
            message_id: key.strip_prefix("id:"),
            envelope,
            per_recipient: &replies.per_recipient,
            reply: &replies.transaction,
        });
        replies
    }

    /// Sends the DSN a positive transaction reply promises; the reply stands only if the
    /// smarthost took it (nothing is acknowledged that would then be lost).
    async fn hand_off_dsn(
        &self,
        envelope: &Envelope,
        replies: &[Reply],
        raw: &[u8],
        reply: Reply,
    ) -> Reply {
        let failed: Vec<crate::dsn::Failed> = envelope
            .rcpts
            .iter()
            .zip(replies)
            .filter(|(r, rep)| rep.is_permanent() && crate::dsn::wanted(envelope, r))
            .map(|(rcpt, reply)| crate::dsn::Failed { rcpt, reply })
            .collect();
        if failed.is_empty() || !reply.is_positive() {
            return reply;
        }
        let Some(smarthost) = &self.smarthost else {
            let first = failed[0].reply.clone();
            tracing::warn!(reply = %first, "no smarthost for the DSN: answering with the permanent failure instead");
            return first;
        };
        let dsn = crate::dsn::build(&self.hostname, envelope, &failed, raw, Utc::now());
        match crate::dsn::send(smarthost, &self.hostname, &envelope.mail_from.address, dsn).await {
            Ok(()) => {
                tracing::info!(smarthost = %smarthost, failed = failed.len(), "DSN handed to the smarthost");
                reply
            }
            Err(e) => {
                tracing::warn!(smarthost = %smarthost, "DSN hand-off failed: {e}");
                Reply::new(
                    451,
                    "4.3.0",
                    "delivery report could not be handed off; delivered recipients will not receive it twice",
                )
            }
        }
    }

    /// Sends one delivery and maps its outcome; retries once per kind when a rule asks.
    async fn deliver_one(&self, rules: &RuleSet, envelope: &Envelope, d: &Delivery) -> Reply {
        let rcpt = envelope
            .rcpts
            .iter()
            .find(|r| r.address == d.recipient)
            .cloned()
            .unwrap_or_default();
        let mut delivery = d.clone();
        let mut retried: Vec<String> = Vec::new();
        loop {
            let outcome = match delivery.mode {
                Mode::Pager => self.sip.send_message(&delivery).await,
                Mode::Large => crate::large::deliver(&*self.sip, &delivery, &self.large).await,
            };
            let cpim = delivery.content.content_type == "message/cpim";
            let input = mapper::ResponseInput {
                envelope,
                rcpt: &rcpt,
                uri: Some(&delivery.request_uri),
                outcome: &outcome,
                cpim_body: cpim,
                retried: &retried,
                now: Utc::now(),
            };
            match mapper::respond(rules, &input, None) {
                ResponseDecision::Reply(r) => return r,
                ResponseDecision::Retry(kind) => {
                    retried.push(kind.clone());
                    match kind.as_str() {
                        "large" => {
                            delivery.mode = Mode::Large;
                            if delivery.content.content_type != "message/cpim" {
                                wrap_in_cpim(&mut delivery);
                            }
                        }
                        _ => {
                            // Plain text: unwrap the CPIM document's inner text entity.
                            if let Some(text) = inner_text(&delivery.content.body) {
                                delivery.content.content_type = "text/plain;charset=UTF-8".into();
                                delivery.content.body = text.into();
                                delivery.imdn_message_id = None;
                            } else {
                                delivery.mode = Mode::Large;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Large mode carries message/cpim (the SDP offer's accept-types): wrap a plain text body.
fn wrap_in_cpim(d: &mut Delivery) {
    let header = |n: &str| {
        d.headers
            .iter()
            .find(|(h, _)| h.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    let mut headers = Vec::new();
    if let Some(f) = header("From") {
        headers.push(("From".to_string(), f));
    }
    headers.push((
        "To".to_string(),
        header("To").unwrap_or_else(|| format!("<{}>", d.request_uri)),
    ));
    let inner = crate::render::cpim::text_entity(&String::from_utf8_lossy(&d.content.body));
    if let Ok(doc) = (crate::render::cpim::Cpim {
        headers: &headers,
        imdn: None,
        inner: &[&inner],
    })
    .render()
    {
        d.content.content_type = "message/cpim".into();
        d.content.body = doc.into();
    }
}

/// The body of a CPIM document's inner entity.
fn inner_text(cpim: &[u8]) -> Option<Vec<u8>> {
    let find = |hay: &[u8], from: usize| {
        hay[from..]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|p| p + from + 4)
    };
    let after_cpim = find(cpim, 0)?;
    let after_inner = find(cpim, after_cpim)?;
    Some(cpim[after_inner..].to_vec())
}

/// Runs futures concurrently and collects their results in order.
async fn futures_join_all<F: std::future::Future>(
    futs: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let futs: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut out = Vec::with_capacity(futs.len());
    // Poll all together: tokio::join! needs a fixed count, so drive them with a JoinSet-free
    // select loop over pinned futures.
    let mut pending: Vec<Option<std::pin::Pin<Box<F>>>> = futs.into_iter().map(Some).collect();
    let mut results: Vec<Option<F::Output>> = (0..pending.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (i, slot) in pending.iter_mut().enumerate() {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        results[i] = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    for r in results {
        out.extend(r);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn message_id_from_headers_only() {
        use crate::store::mail_identity;
        assert_eq!(
            mail_identity("a@b", b"Message-ID: <a@b>\r\nSubject: x\r\n\r\nbody"),
            "id:a@b"
        );
        let h = mail_identity("s@x", b"Subject: x\r\n\r\nbody");
        assert!(h.starts_with("sha256:") && h.len() == 7 + 64, "{h}");
        assert_ne!(h, mail_identity("t@x", b"Subject: x\r\n\r\nbody"));
        assert_ne!(h, mail_identity("s@x", b"Subject: x\r\n\r\nother body"));
    }
}
