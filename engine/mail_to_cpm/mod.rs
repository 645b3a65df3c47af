//! Mail → CPM: the [`Gateway`] the SMTP/LMTP front end calls, as three steps.
//!
//! ```text
//! RCPT TO      plan::route                 (pure: phases address, recipient)
//! end of DATA  plan::plan                  (pure: envelope + mail + one rule-set generation
//!                                           → a Route per recipient, a Delivery per request)
//!              dispatch::Dispatch::one     (async: Backend::send, phase response,
//!                                           plan::retry for another form, once per form)
//!              relay::Smarthost            (async: `mailbox` recipients, the DSN)
//!              answer::answer              (pure: phase transaction → per-recipient replies,
//!                                           the DATA reply, DSN owed, records to keep)
//! ```
//!
//! `iwf serve` dispatches to [`dispatch::Network`]; `iwf map`, the self-tests and the
//! snapshots ([`dryrun`]) run the same plan and dispatch code against a back end that
//! records the rendered requests instead of sending them.
//!
//! A retried transaction (the sender got a 4xx, or lost our 250) does not deliver twice:
//! every delivered recipient is recorded in the [`Store`] (keyed by the mail's identity,
//! [`crate::store::mail_identity`]) before the reply is sent. 250 only after a SIP 2xx.

pub(crate) mod answer;
pub(crate) mod dispatch;
pub mod dryrun;
pub(crate) mod facts;
pub mod large;
pub mod mail;
pub mod outcome;
pub mod peer_memory;
pub mod phases;
pub mod plan;
pub(crate) mod relay;

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::clock::Clock;
use crate::ids::Ids;
use crate::mail_to_cpm::mail::Mail;
use crate::mail_to_cpm::phases::RcptDecision;
use crate::reports::records::{MailFacts, SentRecord};
use crate::ruleset::RuleSet;
use crate::sip::SipBackend;
use crate::smtp::envelope::{Envelope, Rcpt};
use crate::smtp::reply::Reply;
use crate::smtp::{DataReplies, MailHandler, Protocol, replies};
use crate::store::StoreError;
use futures::future::BoxFuture;
use plan::{Delivery, PlanContext, Route, TransactionPlan};

pub use crate::store::{MemoryStore, Store};
use dispatch::{Dispatch, Dispatched, Network};
use relay::Smarthost;

/// The gateway's dependencies.
pub struct Gateway {
    pub rules: Arc<ArcSwap<RuleSet>>,
    pub sip: Arc<dyn SipBackend>,
    pub ids: Arc<dyn Ids>,
    pub clock: Arc<dyn Clock>,
    pub store: Arc<dyn Store>,
    /// What CPM peers refused lately (the response rules' `learn:`), read by the message
    /// rules as `peer.*`.
    pub peers: Arc<crate::mail_to_cpm::peer_memory::PeerMemory>,
    pub protocol: Protocol,
    pub large: crate::mail_to_cpm::large::LargeConfig,
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
        let decision = plan::route(&rules, envelope, rcpt, self.clock.now(), None);
        let address = rcpt.address.clone();
        Box::pin(async move {
            match decision {
                RcptDecision::Accept { .. } | RcptDecision::Mailbox { .. } => Ok(()),
                RcptDecision::Report { .. } if self.reports.is_some() => Ok(()),
                RcptDecision::Report { .. } => Err(replies::reports_not_taken(&address)),
                RcptDecision::Reject(r) => {
                    crate::ops::metrics::rcpt_refused(self.protocol, &r);
                    Err(r)
                }
            }
        })
    }

    fn data(&self, envelope: Envelope, message: Vec<u8>) -> BoxFuture<'_, DataReplies> {
        // Counted, timed and logged as one transaction (engine/ops/logging.rs).
        Box::pin(crate::ops::logging::in_transaction(
            self.protocol,
            self.clock.clone(),
            self.deliver(envelope, message),
        ))
    }
}

/// What one delivery's dispatch came to, with its records.
struct Sent {
    dispatched: Dispatched,
    /// `Some` after a positive reply: the recipients recorded as delivered, or why not.
    recorded: Option<Result<Vec<String>, StoreError>>,
}

impl Gateway {
    async fn deliver(&self, envelope: Envelope, raw: Vec<u8>) -> DataReplies {
        // Shared (not copied): a large-mode request carries the mail's body as a slice of it.
        let raw = bytes::Bytes::from(raw);
        // One rule-set generation maps the whole transaction.
        let rules = self.rules.load_full();
        let now = self.clock.now();
        // One parse of the mail: the store key's Message-ID and the plan both come from it.
        let mail = Mail::parse_shared(&raw);
        let message_id = mail.as_ref().ok().and_then(Mail::message_id);
        let key = crate::store::mail_identity_of(
            &envelope.mail_from.address,
            message_id.as_deref(),
            &raw,
        );
        let addresses: Vec<String> = envelope.rcpts.iter().map(|r| r.address.clone()).collect();
        // Who has this mail already? A store that cannot say means no delivery now: the
        // sender retries later (and no 250 goes out whose record could not be kept).
        let done = match self.store.delivered(&key, &addresses).await {
            Ok(d) => d,
            Err(e) => return self.store_unavailable(&envelope, &rules, &key, &e),
        };
        let peers = self.peers.at(self.clock.instant());
        let plan = plan::plan(
            &rules,
            &envelope,
            mail,
            &done,
            &PlanContext {
                now,
                ids: &*self.ids,
                peers: &peers,
                explain: false,
            },
        );
        let side = self.side_routes(&rules, &envelope, &plan, &raw).await;
        let backend = Network {
            sip: &*self.sip,
            large: &self.large,
            clock: &self.clock,
            ids: &self.ids,
        };
        let dispatch = Dispatch {
            rules: &rules,
            envelope: &envelope,
            raw: &raw,
            backend: &backend,
            clock: &*self.clock,
            ids: &*self.ids,
            peers: Some(&self.peers),
        };
        // What a later IMDN needs to know about this mail (only when one was asked for).
        let asked =
            self.reports.is_some() && plan.deliveries.iter().any(|d| d.imdn_message_id.is_some());
        let about = asked.then(|| MailFacts::of(&envelope, &raw, plan.about.as_ref()));
        let sends = plan.deliveries.iter().enumerate().map(|(k, d)| {
            let who: Vec<String> = plan
                .served_by(k)
                .map(|i| envelope.rcpts[i].address.clone())
                .collect();
            self.send_recorded(&dispatch, &key, d, who, about.as_ref())
        });
        let sent = futures::future::join_all(sends).await;
        let mut recorded: Vec<String> = Vec::new();
        let mut record_failed = None;
        let mut dispatched = Vec::with_capacity(sent.len());
        for s in sent {
            match s.recorded {
                Some(Ok(who)) => recorded.extend(who),
                Some(Err(e)) => record_failed = Some(e),
                None => {}
            }
            dispatched.push(s.dispatched);
        }
        let mut answer = answer::answer(&rules, &envelope, &plan, &side, &dispatched, now);
        // Every recipient delivered now is recorded (durably) before any reply: a retry
        // after a 4xx, or after a 250 the sender never saw, then reaches only the rest.
        let delivered_now = answer.delivered_now(&envelope, &done, &recorded);
        let kept = match record_failed {
            Some(e) => Err(e),
            None => self.store.record_delivered(&key, &delivered_now).await,
        };
        if let Err(e) = kept {
            tracing::warn!(mail = %key, recipients = delivered_now.len(), "delivered, but the record could not be kept: answering 4xx: {e}");
            answer.unrecorded(&done);
        }
        // LMTP: the MTA in front reports per recipient itself.
        let mut transaction = answer.transaction;
        if self.protocol == Protocol::Smtp {
            transaction = self
                .smarthost()
                .hand_off_dsn(
                    &envelope,
                    &answer.per_recipient,
                    &answer.relayed,
                    answer.dsn_owed,
                    &raw,
                    transaction,
                    self.clock.now(),
                )
                .await;
        }
        crate::ops::logging::finish_transaction(&crate::ops::logging::Transaction {
            protocol: self.protocol,
            generation: rules.generation,
            message_id: key.strip_prefix("id:"),
            envelope: &envelope,
            per_recipient: &answer.per_recipient,
            reply: &transaction,
        });
        DataReplies {
            per_recipient: answer.per_recipient,
            transaction,
        }
    }

    fn smarthost(&self) -> Smarthost<'_> {
        Smarthost {
            address: self.smarthost.as_deref(),
            hostname: &self.hostname,
        }
    }

    /// The recipients beside CPM: `mailbox` ones relayed as mail, report addresses handed
    /// to the report loop. One reply per such recipient, by envelope index.
    async fn side_routes(
        &self,
        rules: &RuleSet,
        envelope: &Envelope,
        plan: &TransactionPlan,
        raw: &[u8],
    ) -> Vec<Option<Reply>> {
        let mut side: Vec<Option<Reply>> = vec![None; envelope.rcpts.len()];
        let mailboxes: Vec<(usize, String)> = plan
            .routes
            .iter()
            .enumerate()
            .filter_map(|(i, r)| match r {
                Route::Mailbox(m) => Some((i, m.clone())),
                _ => None,
            })
            .collect();
        if !mailboxes.is_empty() {
            for (i, reply) in self.smarthost().relay(envelope, &mailboxes, raw).await {
                side[i] = Some(reply);
            }
        }
        for (i, route) in plan.routes.iter().enumerate() {
            let Route::Report(token) = route else {
                continue;
            };
            side[i] = Some(match &self.reports {
                Some(reports) => {
                    crate::reports::inbound_mail(
                        reports,
                        rules,
                        &*self.sip,
                        &*self.ids,
                        envelope,
                        &envelope.rcpts[i],
                        token,
                        raw,
                    )
                    .await
                }
                None => replies::reports_not_taken_now(),
            });
        }
        side
    }

    /// Dispatches one delivery, keeping its records: the report record as the request
    /// leaves (an IMDN can overtake the 200), the delivery record as soon as the CPM side
    /// has it (a crash while other recipients are pending then cannot make the retry
    /// deliver this one again).
    async fn send_recorded(
        &self,
        dispatch: &Dispatch<'_>,
        key: &str,
        d: &Delivery,
        who: Vec<String>,
        about: Option<&MailFacts>,
    ) -> Sent {
        let envelope = dispatch.envelope;
        let pending = match (&self.reports, about) {
            (Some(_), Some(about)) if d.imdn_message_id.is_some() => {
                Some(SentRecord::of(about, envelope, d, &who, None))
            }
            _ => None,
        };
        let keep_pending = async {
            match (&self.reports, &pending) {
                (Some(reports), Some(rec)) => reports.keep_sent(rec).await,
                _ => Ok(()),
            }
        };
        let (pending_kept, dispatched) = tokio::join!(keep_pending, dispatch.one(d));
        let positive = dispatched.reply.is_positive();
        // A record without a status stands for "accepted": after a 2xx nothing more is
        // written when the record of the request that got it is already kept (one store
        // write per mail). Written again with the status after a failure (no negative
        // report may follow the SMTP refusal), or when the form that got the answer
        // carried another imdn.Message-ID (planned again) or the first write failed —
        // then with the delivery record, before the 250.
        let report_record = async {
            let (Some(reports), Some(about)) = (&self.reports, about) else {
                return Ok(());
            };
            let same_id = |delivery: &Delivery| {
                pending
                    .as_ref()
                    .is_some_and(|p| Some(&p.imdn_message_id) == delivery.imdn_message_id.as_ref())
            };
            match &dispatched.answered {
                Some((delivery, _)) if positive && same_id(delivery) && pending_kept.is_ok() => {
                    Ok(())
                }
                Some((delivery, status)) if delivery.imdn_message_id.is_some() => {
                    let rec = SentRecord::of(
                        about,
                        envelope,
                        delivery,
                        &who,
                        (!positive).then_some(*status),
                    );
                    reports.keep_sent(&rec).await
                }
                _ => match pending.clone() {
                    Some(mut rec) if !positive => {
                        // No final response at all: counted as 408 (RFC 3261 §8.1.3.1).
                        rec.sip_status =
                            Some(dispatched.answered.as_ref().map_or(408, |(_, s)| *s));
                        reports.keep_sent(&rec).await
                    }
                    _ => Ok(()),
                },
            }
        };
        let recorded = if positive {
            let (kept, reported) =
                tokio::join!(self.store.record_delivered(key, &who), report_record);
            Some(kept.and(reported).map(|()| who))
        } else {
            if let Err(e) = report_record.await {
                tracing::warn!("report record not updated: {e}");
            }
            None
        };
        Sent {
            dispatched,
            recorded,
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
        e: &StoreError,
    ) -> DataReplies {
        tracing::warn!(mail = %key, "not delivered, answering 4xx: {e}");
        let replies = DataReplies::all(envelope, replies::delivery_state_unavailable());
        crate::ops::logging::finish_transaction(&crate::ops::logging::Transaction {
            protocol: self.protocol,
            generation: rules.generation,
            message_id: key.strip_prefix("id:"),
            envelope,
            per_recipient: &replies.per_recipient,
            reply: &replies.transaction,
        });
        replies
    }
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
