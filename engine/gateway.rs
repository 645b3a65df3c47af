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
    /// What CPM peers refused lately (the response rules' `learn:`), read by the message
    /// rules as `peer.*`.
    pub peers: Arc<crate::peer_memory::PeerMemory>,
    pub protocol: Protocol,
    pub large: crate::large::LargeConfig,
    /// Where DSNs go (`host:port`); without one, a transaction whose recipients partly
    /// failed for good is answered with the first permanent failure instead of 250 + DSN.
    pub smarthost: Option<String>,
    /// Our name in DSNs (Reporting-MTA) and in EHLO to the smarthost.
    pub hostname: String,
    /// The report loop (engine/reports): records of the messages that asked for IMDNs, and
    /// DSN/MDN mails for `b+<token>` addresses. Without it no record is kept and report
    /// addresses are refused like any unknown recipient.
    pub reports: Option<Arc<crate::reports::Reports>>,
}

impl MailHandler for Gateway {
    fn rcpt(&self, envelope: &Envelope, rcpt: &Rcpt) -> BoxFuture<'_, Result<(), Reply>> {
        let rules = self.rules.load_full();
        let decision = mapper::resolve_recipient(&rules, envelope, rcpt, Utc::now(), None);
        let address = rcpt.address.clone();
        Box::pin(async move {
            match decision {
                RcptDecision::Accept { .. } | RcptDecision::Mailbox { .. } => Ok(()),
                RcptDecision::Report { .. } if self.reports.is_some() => Ok(()),
                RcptDecision::Report { .. } => Err(Reply::new(
                    550,
                    "5.1.1",
                    format!("<{address}>: reports are not taken here"),
                )),
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
            crate::clock::system(),
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
        let mut to_mailbox: Vec<(usize, String)> = Vec::new();
        let mut to_reports: Vec<(usize, String)> = Vec::new();
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
                RcptDecision::Mailbox { address } => to_mailbox.push((i, address)),
                RcptDecision::Report { token } => to_reports.push((i, token)),
                RcptDecision::Reject(reply) => replies[i] = Some(reply),
            }
        }
        if !to_mailbox.is_empty() {
            for (i, reply) in self.relay(&envelope, &to_mailbox, &raw).await {
                replies[i] = Some(reply);
            }
        }
        // A report mail (DSN/MDN to b+<token>) has only report recipients: its DATA reply
        // is what became of the report, not the count of CPM recipients.
        let only_reports = !to_reports.is_empty() && to_reports.len() == envelope.rcpts.len();
        for (i, token) in to_reports {
            let reply = match &self.reports {
                Some(reports) => {
                    crate::reports::inbound_mail(
                        reports,
                        &rules,
                        &*self.sip,
                        &*self.ids,
                        &envelope,
                        &envelope.rcpts[i],
                        &token,
                        &raw,
                    )
                    .await
                }
                None => Reply::new(451, "4.3.0", "reports are not taken now"),
            };
            replies[i] = Some(reply);
        }
        let peers = self.peers.at(tokio::time::Instant::now());
        let plan = mapper::plan_mail(
            &rules, &envelope, &accepted, &raw, &*self.ids, &peers, now, false,
        );
        // What a later IMDN needs to know about this mail (only when one was asked for).
        let asked =
            self.reports.is_some() && plan.deliveries.iter().any(|d| d.imdn_message_id.is_some());
        let about = asked.then(|| crate::reports::records::MailFacts::of(&envelope, &raw));
        let position = |addr: &str| envelope.rcpts.iter().position(|r| r.address == addr);
        for (addr, reply) in &plan.rejections {
            if let Some(i) = position(addr) {
                replies[i] = Some(reply.clone());
            }
        }
        let sends = plan.deliveries.iter().enumerate().map(|(n, d)| {
            let rules = rules.clone();
            let envelope = &envelope;
            let raw = &raw;
            let key = &key;
            let mut who = vec![d.recipient.clone()];
            who.extend(
                plan.covered
                    .iter()
                    .filter(|(_, idx)| *idx == n)
                    .map(|(a, _)| a.clone()),
            );
            let about = about.as_ref();
            async move {
                // The report record goes to the store as the request leaves (an IMDN can
                // overtake the 200), written concurrently with the SIP transaction.
                let pending = match (&self.reports, about) {
                    (Some(_), Some(about)) if d.imdn_message_id.is_some() => Some(
                        crate::reports::records::SentRecord::of(about, envelope, d, &who, None),
                    ),
                    _ => None,
                };
                let keep_pending = async {
                    match (&self.reports, &pending) {
                        (Some(reports), Some(rec)) => reports.keep_sent(rec).await,
                        _ => Ok(()),
                    }
                };
                let (pending_kept, (reply, relayed, sent)) =
                    tokio::join!(keep_pending, self.deliver_one(&rules, envelope, raw, d));
                // A record without a status stands for "accepted": after a 2xx nothing more
                // is written when the record of the request that got it is already kept (one
                // store write per mail). Written again with the status after a failure (no
                // negative report may follow the SMTP refusal), or when the form that got
                // the answer carried another imdn.Message-ID (planned again) or the first
                // write failed — then with the delivery record, before the 250.
                let report_record = async {
                    let (Some(reports), Some(about)) = (&self.reports, about) else {
                        return Ok(());
                    };
                    let same_id = |delivery: &Delivery| {
                        pending.as_ref().is_some_and(|p| {
                            Some(&p.imdn_message_id) == delivery.imdn_message_id.as_ref()
                        })
                    };
                    match &sent {
                        Some((delivery, _))
                            if reply.is_positive() && same_id(delivery) && pending_kept.is_ok() =>
                        {
                            Ok(())
                        }
                        Some((delivery, status)) if delivery.imdn_message_id.is_some() => {
                            let rec = crate::reports::records::SentRecord::of(
                                about,
                                envelope,
                                delivery,
                                &who,
                                (!reply.is_positive()).then_some(*status),
                            );
                            reports.keep_sent(&rec).await
                        }
                        _ => match pending {
                            Some(mut rec) if !reply.is_positive() => {
                                // No final response at all: counted as 408 (RFC 3261 §8.1.3.1).
                                rec.sip_status = Some(sent.as_ref().map_or(408, |(_, s)| *s));
                                reports.keep_sent(&rec).await
                            }
                            _ => Ok(()),
                        },
                    }
                };
                // Recorded as soon as the CPM side has it, not when the whole transaction is
                // done: a crash while other recipients are still pending then cannot make
                // the retry deliver this one again.
                let recorded = if reply.is_positive() {
                    let (kept, reported) =
                        tokio::join!(self.store.record_delivered(key, &who), report_record);
                    Some(kept.and(reported).map(|()| who))
                } else {
                    if let Err(e) = report_record.await {
                        tracing::warn!("report record not updated: {e}");
                    }
                    None
                };
                (reply, relayed, recorded)
            }
        });
        let results = futures::future::join_all(sends).await;
        // Recipients owed a `relayed` DSN (report: relayed, and NOTIFY asks for SUCCESS).
        let mut relayed = vec![false; envelope.rcpts.len()];
        let mut recorded: Vec<String> = Vec::new();
        let mut record_failed = None;
        for (d, (reply, report_relayed, rec)) in plan.deliveries.iter().zip(results) {
            match rec {
                Some(Ok(who)) => recorded.extend(who),
                Some(Err(e)) => record_failed = Some(e),
                None => {}
            }
            if let Some(i) = position(&d.recipient) {
                relayed[i] = report_relayed
                    && reply.is_positive()
                    && crate::dsn::relayed_wanted(&envelope, &envelope.rcpts[i]);
                replies[i] = Some(reply);
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
        if only_reports
            && let Some(first) = per_recipient.first()
            && per_recipient
                .iter()
                .all(|r| r.code / 100 == first.code / 100)
        {
            transaction = first.clone();
        }
        // Every recipient delivered now is recorded (durably) before any reply: a retry
        // after a 4xx, or after a 250 the sender never saw, then reaches only the rest.
        let delivered_now: Vec<String> = envelope
            .rcpts
            .iter()
            .zip(&per_recipient)
            .zip(&done)
            .filter(|((r, reply), before)| {
                reply.is_positive() && !**before && !recorded.contains(&r.address)
            })
            .map(|((r, _), _)| r.address.clone())
            .collect();
        let kept = match record_failed {
            Some(e) => Err(e),
            None => self.store.record_delivered(&key, &delivered_now).await,
        };
        if let Err(e) = kept {
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
        // LMTP: the MTA in front reports per recipient itself.
        if self.protocol == Protocol::Smtp {
            transaction = self
                .hand_off_dsn(&envelope, &per_recipient, &relayed, dsn, &raw, transaction)
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

    /// Relays the mail as it is to the mailboxes the `mailbox` rules named (postmaster),
    /// through the smarthost, in one transaction; one reply per relayed recipient.
    async fn relay(
        &self,
        envelope: &Envelope,
        relayed: &[(usize, String)],
        raw: &[u8],
    ) -> Vec<(usize, Reply)> {
        let reply = |code: u16, status: &str, text: String| {
            relayed
                .iter()
                .map(|(i, _)| {
                    let r = &envelope.rcpts[*i].address;
                    (*i, Reply::new(code, status, format!("<{r}>: {text}")))
                })
                .collect()
        };
        let Some(smarthost) = &self.smarthost else {
            tracing::error!("a rule relays a recipient as mail, but no smarthost is configured");
            return reply(
                451,
                "4.3.5",
                "no smarthost configured to relay this recipient".into(),
            );
        };
        let mut to: Vec<&str> = relayed.iter().map(|(_, m)| m.as_str()).collect();
        to.sort_unstable();
        to.dedup();
        let from = envelope.mail_from.address.as_str();
        match crate::smarthost::send(smarthost, &self.hostname, from, &to, raw.to_vec()).await {
            Ok(()) => {
                tracing::info!(smarthost = %smarthost, to = ?to, "relayed as mail");
                reply(250, "2.0.0", "relayed as mail through the smarthost".into())
            }
            Err(e) if e.is_permanent() => {
                tracing::warn!(smarthost = %smarthost, "relay refused: {e}");
                reply(
                    550,
                    "5.0.0",
                    format!("relay refused by the smarthost ({e})"),
                )
            }
            Err(e) => {
                tracing::warn!(smarthost = %smarthost, "relay failed: {e}");
                reply(
                    451,
                    "4.4.0",
                    format!("relay through the smarthost failed ({e})"),
                )
            }
        }
    }

    /// Sends the DSN a positive transaction reply promises; the reply stands only if the
    /// smarthost took it (nothing is acknowledged that would then be lost).
    ///
    /// `failures_owed`: the transaction rules asked for a DSN of the permanent failures;
    /// `relayed[i]`: recipient `i` is owed an `Action: relayed` report.
    async fn hand_off_dsn(
        &self,
        envelope: &Envelope,
        replies: &[Reply],
        relayed: &[bool],
        failures_owed: bool,
        raw: &[u8],
        reply: Reply,
    ) -> Reply {
        let failed: Vec<crate::dsn::Failed> = envelope
            .rcpts
            .iter()
            .zip(replies)
            .filter(|(r, rep)| {
                failures_owed && rep.is_permanent() && crate::dsn::wanted(envelope, r)
            })
            .map(|(rcpt, reply)| crate::dsn::Failed { rcpt, reply })
            .collect();
        let relays: Vec<crate::dsn::Failed> = envelope
            .rcpts
            .iter()
            .zip(replies)
            .zip(relayed)
            .filter(|(_, owed)| **owed)
            .map(|((rcpt, reply), _)| crate::dsn::Failed { rcpt, reply })
            .collect();
        if (failed.is_empty() && relays.is_empty()) || !reply.is_positive() {
            return reply;
        }
        let Some(smarthost) = &self.smarthost else {
            if let Some(first) = failed.first() {
                let first = first.reply.clone();
                tracing::warn!(reply = %first, "no smarthost for the DSN: answering with the permanent failure instead");
                return first;
            }
            tracing::warn!("no smarthost: the relayed DSN NOTIFY=SUCCESS asked for is not sent");
            return reply;
        };
        let dsn =
            crate::dsn::build_report(&self.hostname, envelope, &failed, &relays, raw, Utc::now());
        match crate::dsn::send(smarthost, &self.hostname, &envelope.mail_from.address, dsn).await {
            Ok(()) => {
                tracing::info!(smarthost = %smarthost, failed = failed.len(), relayed = relays.len(), "DSN handed to the smarthost");
                reply
            }
            // A relayed-only report is a courtesy (RFC 3461 §5.2.2): the mail stays delivered.
            Err(e) if failed.is_empty() => {
                tracing::warn!(smarthost = %smarthost, "relayed DSN not handed off: {e}");
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
    /// Returns the recipient's reply, whether a `relayed` DSN is owed for it, and the form
    /// that got the last final SIP response with its status.
    async fn deliver_one(
        &self,
        rules: &RuleSet,
        envelope: &Envelope,
        raw: &[u8],
        d: &Delivery,
    ) -> (Reply, bool, Option<(Delivery, u16)>) {
        let rcpt = envelope
            .rcpts
            .iter()
            .find(|r| r.address == d.recipient)
            .cloned()
            .unwrap_or_default();
        let mut delivery = d.clone();
        let mut retried: Vec<String> = Vec::new();
        let mut outcome = self.send(&delivery).await;
        loop {
            let cpim = delivery.content.content_type == "message/cpim";
            let input = mapper::ResponseInput {
                envelope,
                rcpt: &rcpt,
                uri: Some(&delivery.request_uri),
                outcome: &outcome,
                cpim_body: cpim,
                retried: &retried,
                imdn_requested: delivery.imdn_message_id.is_some(),
                now: Utc::now(),
            };
            let (decision, notes) = mapper::respond_noting(rules, &input, None);
            if let Some(what) = notes.learn.as_deref().and_then(|w| {
                crate::peer_memory::Learned::from_word(w, delivery.content.body.len() as u64)
            }) {
                self.peers
                    .learn(&delivery.request_uri, what, tokio::time::Instant::now());
            }
            let kind = match decision {
                ResponseDecision::Reply(r) => {
                    let sent = match &outcome {
                        crate::outcome::Outcome::Final { status, .. } => Some((delivery, *status)),
                        crate::outcome::Outcome::Failure { .. } => None,
                    };
                    return (r, notes.relayed, sent);
                }
                ResponseDecision::Retry(kind) => kind,
            };
            retried.push(kind.clone());
            let next = match kind.as_str() {
                "large" => {
                    let mut next = delivery.clone();
                    next.mode = Mode::Large;
                    if next.content.content_type != "message/cpim" {
                        wrap_in_cpim(&mut next);
                    }
                    Some(next)
                }
                // Planned again from the mail: the message rules now see what the peer
                // memory just learnt (e.g. no MSRP) and may choose pager mode.
                "pager" => self.replan(rules, envelope, &rcpt, &d.request_uri, raw),
                _ => {
                    // Plain text: unwrap the CPIM document's inner text entity.
                    let mut next = delivery.clone();
                    if let Some(text) = inner_text(&next.content.body) {
                        next.content.content_type = "text/plain;charset=UTF-8".into();
                        next.content.body = text.into();
                        next.imdn_message_id = None;
                        next.imdn_dispositions.clear();
                    } else {
                        next.mode = Mode::Large;
                    }
                    Some(next)
                }
            };
            // Without a new form, the same outcome is mapped again (that retry is spent).
            if let Some(next) = next {
                delivery = next;
                outcome = self.send(&delivery).await;
            }
        }
    }

    async fn send(&self, delivery: &Delivery) -> crate::outcome::Outcome {
        match delivery.mode {
            Mode::Pager => self.sip.send_message(delivery).await,
            Mode::Large => crate::large::deliver(&*self.sip, delivery, &self.large).await,
        }
    }

    /// The pager-mode delivery the rules plan for this recipient now, if they choose one.
    fn replan(
        &self,
        rules: &RuleSet,
        envelope: &Envelope,
        rcpt: &Rcpt,
        uri: &str,
        raw: &[u8],
    ) -> Option<Delivery> {
        let peers = self.peers.at(tokio::time::Instant::now());
        let accepted = [(rcpt.clone(), uri.to_string())];
        let plan = mapper::plan_mail(
            rules,
            envelope,
            &accepted,
            raw,
            &*self.ids,
            &peers,
            Utc::now(),
            false,
        );
        plan.deliveries
            .into_iter()
            .next()
            .filter(|d| d.mode == Mode::Pager)
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
