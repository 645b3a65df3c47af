//! The gateway: the [`MailHandler`] the SMTP/LMTP front end calls. At RCPT time it runs the
//! recipient rules; at end of DATA it maps the mail, sends every delivery concurrently,
//! maps each outcome with the response rules (retrying once in another form when a rule
//! asks), and answers only once every outcome is known — 250 only after a SIP 2xx.
//!
//! A retried transaction (the sender got a 4xx) does not deliver twice: recipients already
//! delivered are recorded in a [`DeliveredStore`] keyed by the mail's identity.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use chrono::Utc;

use crate::envelope::{Envelope, Rcpt};
use crate::ids::Ids;
use crate::mapper::{self, RcptDecision, ResponseDecision};
use crate::outcome::{FailureKind, Outcome};
use crate::plan::{Delivery, Mode};
use crate::reply::Reply;
use crate::ruleset::RuleSet;
use crate::sip::SipBackend;
use crate::smtp::{BoxFuture, DataReplies, MailHandler, Protocol};

/// Remembers which recipients of which mail were delivered (idempotency across retries).
pub trait DeliveredStore: Send + Sync {
    fn was_delivered(&self, mail_key: &str, rcpt: &str) -> bool;
    fn record(&self, mail_key: &str, rcpt: &str);
}

/// The embedded, in-memory store (one machine).
#[derive(Default)]
pub struct MemoryStore(Mutex<HashSet<(String, String)>>);

impl DeliveredStore for MemoryStore {
    fn was_delivered(&self, mail_key: &str, rcpt: &str) -> bool {
        self.0
            .lock()
            .map(|s| s.contains(&(mail_key.to_string(), rcpt.to_ascii_lowercase())))
            .unwrap_or(false)
    }
    fn record(&self, mail_key: &str, rcpt: &str) {
        if let Ok(mut s) = self.0.lock() {
            s.insert((mail_key.to_string(), rcpt.to_ascii_lowercase()));
        }
    }
}

/// The gateway's dependencies.
pub struct Gateway {
    pub rules: Arc<ArcSwap<RuleSet>>,
    pub sip: Arc<dyn SipBackend>,
    pub ids: Arc<dyn Ids>,
    pub store: Arc<dyn DeliveredStore>,
    pub protocol: Protocol,
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

/// The identity of a mail for idempotency: its Message-ID, else a hash of its content.
fn mail_key(raw: &[u8]) -> String {
    if let Ok(m) = crate::mail::Mail::parse(raw)
        && let Some(id) = m.message_id()
    {
        return format!("id:{id}");
    }
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    raw.hash(&mut h);
    format!("hash:{:016x}:{}", h.finish(), raw.len())
}

impl Gateway {
    async fn deliver(&self, envelope: Envelope, raw: Vec<u8>) -> DataReplies {
        // One rule-set generation maps the whole transaction.
        let rules = self.rules.load_full();
        let now = Utc::now();
        let key = mail_key(&raw);
        let mut replies: Vec<Option<Reply>> = vec![None; envelope.rcpts.len()];
        let mut accepted = Vec::new();
        let mut index_of = Vec::new();
        for (i, r) in envelope.rcpts.iter().enumerate() {
            if self.store.was_delivered(&key, &r.address) {
                replies[i] = Some(Reply::new(
                    250,
                    "2.0.0",
                    format!("<{}>: already delivered to CPM", r.address),
                ));
                continue;
            }
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
            if reply.is_positive() {
                self.store.record(&key, &d.recipient);
            }
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
        let per_recipient: Vec<Reply> = replies
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Reply::new(451, "4.3.0", "recipient not processed")))
            .collect();
        let (transaction, dsn) = mapper::aggregate(&rules, &envelope, &per_recipient, now, None);
        if dsn {
            tracing::warn!(
                "a DSN for permanently failed recipients is owed; DSN generation is not implemented yet"
            );
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
                Mode::Large => Outcome::Failure {
                    kind: FailureKind::Transport,
                    detail: "Large Message Mode (INVITE + MSRP) is not available in this build"
                        .into(),
                    mode: Mode::Large,
                },
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
                        "large" => delivery.mode = Mode::Large,
                        _ => {
                            // Plain text: unwrap the CPIM document's inner text entity.
                            if let Some(text) = inner_text(&delivery.content.body) {
                                delivery.content.content_type = "text/plain;charset=UTF-8".into();
                                delivery.content.body = text;
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
