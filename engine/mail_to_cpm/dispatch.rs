//! The dispatch step of mail → CPM: sends each planned request through a [`Backend`], maps
//! its outcome with the response rules, and — when a response rule asks for another form —
//! sends the form [`plan::retry`] builds from the plan, once per form.
//!
//! `iwf serve` dispatches to [`Network`] (SIP MESSAGE, or INVITE + MSRP); `iwf map`, the
//! self-tests and the snapshots dispatch to [`super::dryrun::Recorder`], which renders the
//! request and answers what it is told. Everything else is the same code.

use crate::clock::Clock;
use crate::ids::Ids;
use crate::mail_to_cpm::outcome::Outcome;
use crate::mail_to_cpm::peer_memory::{Learned, PeerMemory};
use crate::mail_to_cpm::phases::{self, ResponseDecision};
use crate::mail_to_cpm::plan::{self, Delivery, Mode, RetryForm};
use crate::ruleset::RuleSet;
use crate::sip::SipBackend;
use crate::smtp::envelope::{Envelope, Rcpt};
use crate::smtp::reply::Reply;
use futures::future::BoxFuture;

/// Where requests go.
pub trait Backend: Send + Sync {
    /// Sends one form of a delivery and waits for its final outcome.
    fn send<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, Outcome>;
}

/// The network: pager mode through the SIP back end, large mode as INVITE + MSRP.
pub struct Network<'a> {
    pub sip: &'a dyn SipBackend,
    pub large: &'a crate::mail_to_cpm::large::LargeConfig,
    /// For large mode's MSRP session: its deadlines, ids and SDP session id.
    pub clock: &'a std::sync::Arc<dyn Clock>,
    pub ids: &'a std::sync::Arc<dyn Ids>,
}

impl Backend for Network<'_> {
    fn send<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, Outcome> {
        match delivery.mode {
            Mode::Pager => self.sip.send_message(delivery),
            Mode::Large => Box::pin(crate::mail_to_cpm::large::deliver(
                self.sip, delivery, self.large, self.clock, self.ids,
            )),
        }
    }
}

/// What became of one planned delivery.
#[derive(Debug, Clone)]
pub struct Dispatched {
    /// The reply the response rules mapped the last outcome to.
    pub reply: Reply,
    /// A `relayed` DSN is owed (`report: relayed`).
    pub relayed: bool,
    /// The form that got the last final response, with its status (`None`: no final
    /// response at all — a timeout or transport failure).
    pub answered: Option<(Delivery, u16)>,
}

/// One transaction's dispatch: what every delivery of it shares.
pub struct Dispatch<'a> {
    pub rules: &'a RuleSet,
    pub envelope: &'a Envelope,
    pub raw: &'a bytes::Bytes,
    pub backend: &'a dyn Backend,
    pub clock: &'a dyn Clock,
    pub ids: &'a dyn Ids,
    /// Learns from refusals (`learn:`) and answers the replanning's `peer.*`; `None` in a
    /// dry run (nothing is known, nothing learnt).
    pub peers: Option<&'a PeerMemory>,
}

impl Dispatch<'_> {
    /// Sends `planned` and maps its outcome; retries once per form when a rule asks.
    pub async fn one(&self, planned: &Delivery) -> Dispatched {
        let rcpt = self
            .envelope
            .rcpts
            .iter()
            .find(|r| r.address == planned.recipient)
            .cloned()
            .unwrap_or_default();
        let mut delivery = planned.clone();
        let mut retried: Vec<RetryForm> = Vec::new();
        let mut outcome = self.backend.send(&delivery).await;
        loop {
            let input = phases::ResponseInput {
                envelope: self.envelope,
                rcpt: &rcpt,
                uri: Some(&delivery.request_uri),
                outcome: &outcome,
                cpim_body: delivery.content.content_type == "message/cpim",
                retried: &retried,
                imdn_requested: delivery.imdn_message_id.is_some(),
                now: self.clock.now(),
            };
            let (decision, notes) = phases::respond_noting(self.rules, &input, None);
            if let (Some(memory), Some(what)) = (
                self.peers,
                notes
                    .learn
                    .as_deref()
                    .and_then(|w| Learned::from_word(w, delivery.content.body.len() as u64)),
            ) {
                memory.learn(&delivery.request_uri, what, self.clock.instant());
            }
            let form = match decision {
                ResponseDecision::Reply(reply) => {
                    let answered = match &outcome {
                        Outcome::Final { status, .. } => Some((delivery, *status)),
                        Outcome::Failure { .. } => None,
                    };
                    return Dispatched {
                        reply,
                        relayed: notes.relayed,
                        answered,
                    };
                }
                ResponseDecision::Retry(form) => form,
            };
            retried.push(form);
            // Without a new form, the same outcome is mapped again (that retry is spent).
            if let Some(next) =
                plan::retry(form, &delivery, || self.replan(&rcpt, &planned.request_uri))
            {
                delivery = next;
                outcome = self.backend.send(&delivery).await;
            }
        }
    }

    /// The delivery the rules plan for this recipient now (what the peer memory learnt
    /// included).
    fn replan(&self, rcpt: &Rcpt, uri: &str) -> Option<Delivery> {
        let accepted = [(rcpt.clone(), uri.to_string())];
        let snapshot = self.peers.map(|m| m.at(self.clock.instant()));
        let peers: &dyn crate::mail_to_cpm::peer_memory::PeerCaps = match &snapshot {
            Some(s) => s,
            None => &crate::mail_to_cpm::peer_memory::Unknown,
        };
        let mail = phases::plan_mail(
            self.rules,
            self.envelope,
            &accepted,
            crate::mail_to_cpm::mail::Mail::parse_shared(self.raw),
            self.ids,
            peers,
            self.clock.now(),
            false,
        );
        mail.planned.into_iter().find_map(|p| match p {
            phases::Planned::Deliver(d) => Some(d),
            _ => None,
        })
    }
}
