//! The answer step of mail → CPM: pure. The outcome of every route (the dispatched
//! deliveries, the relayed and report recipients) becomes one reply per recipient (LMTP),
//! the one DATA reply (phase `transaction`), and what is owed besides: the DSN of the
//! permanent failures, `relayed` DSNs, the delivery records to keep.

use chrono::{DateTime, Utc};

use crate::envelope::Envelope;
use crate::mapper;
use crate::plan::{Route, TransactionPlan};
use crate::reply::Reply;
use crate::ruleset::RuleSet;
use crate::smtp::replies;

use super::dispatch::Dispatched;

/// The answer to one SMTP transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// One reply per envelope recipient (what LMTP sends).
    pub per_recipient: Vec<Reply>,
    /// The DATA reply.
    pub transaction: Reply,
    /// The transaction rules ask for a DSN of the permanent failures.
    pub dsn_owed: bool,
    /// `relayed[i]`: recipient `i` is owed an `Action: relayed` DSN (a rule said
    /// `report: relayed` and its NOTIFY asked for SUCCESS).
    pub relayed: Vec<bool>,
}

/// Answers the transaction. `side[i]` is the reply of a recipient routed to a mailbox or
/// the report address (their work is done beside the CPM deliveries); `dispatched[k]` is
/// what became of `plan.deliveries[k]`.
pub fn answer(
    rules: &RuleSet,
    envelope: &Envelope,
    plan: &TransactionPlan,
    side: &[Option<Reply>],
    dispatched: &[Dispatched],
    now: DateTime<Utc>,
) -> Answer {
    let n = envelope.rcpts.len();
    let mut relayed = vec![false; n];
    let per_recipient: Vec<Reply> = (0..n)
        .map(|i| {
            let reply = match plan.routes.get(i) {
                Some(Route::AlreadyDelivered) => {
                    Some(replies::already_delivered(&envelope.rcpts[i].address))
                }
                Some(Route::Refused(r)) => Some(r.clone()),
                Some(Route::Cpm(k)) => dispatched.get(*k).map(|d| {
                    relayed[i] = d.relayed
                        && d.reply.is_positive()
                        && crate::dsn::relayed_wanted(envelope, &envelope.rcpts[i]);
                    d.reply.clone()
                }),
                Some(Route::Covered(k)) => dispatched.get(*k).map(|d| d.reply.clone()),
                Some(Route::Mailbox(_) | Route::Report(_)) => side.get(i).cloned().flatten(),
                None => None,
            };
            reply.unwrap_or_else(replies::not_processed)
        })
        .collect();
    let (mut transaction, dsn_owed) = mapper::aggregate(rules, envelope, &per_recipient, now, None);
    // A report mail (DSN/MDN to b+<token>) has only report recipients: its DATA reply is
    // what became of the report, not the count of CPM recipients.
    let only_reports = !plan.routes.is_empty()
        && plan.routes.len() == n
        && plan.routes.iter().all(|r| matches!(r, Route::Report(_)));
    if only_reports
        && let Some(first) = per_recipient.first()
        && per_recipient
            .iter()
            .all(|r| r.code / 100 == first.code / 100)
    {
        transaction = first.clone();
    }
    Answer {
        per_recipient,
        transaction,
        dsn_owed,
        relayed,
    }
}

impl Answer {
    /// The recipients delivered by this attempt whose record is not kept yet (`done`: by
    /// an earlier attempt; `recorded`: as each delivery succeeded).
    pub fn delivered_now(
        &self,
        envelope: &Envelope,
        done: &[bool],
        recorded: &[String],
    ) -> Vec<String> {
        envelope
            .rcpts
            .iter()
            .zip(&self.per_recipient)
            .enumerate()
            .filter(|(i, (r, reply))| {
                reply.is_positive()
                    && !done.get(*i).copied().unwrap_or(false)
                    && !recorded.contains(&r.address)
            })
            .map(|(_, (r, _))| r.address.clone())
            .collect()
    }

    /// The delivery records could not be kept: nothing delivered by this attempt may be
    /// acknowledged (a retry would deliver it again unknowingly), so it becomes 451.
    pub fn unrecorded(&mut self, done: &[bool]) {
        self.transaction = replies::delivery_state_not_recorded();
        for (i, reply) in self.per_recipient.iter_mut().enumerate() {
            if reply.is_positive() && !done.get(i).copied().unwrap_or(false) {
                *reply = self.transaction.clone();
            }
        }
    }
}
