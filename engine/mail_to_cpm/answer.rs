//! The answer step of mail → CPM: pure. The outcome of every route (the dispatched
//! deliveries, the relayed and report recipients) becomes one reply per recipient (LMTP),
//! the one DATA reply (phase `transaction`), and what is owed besides: the DSN of the
//! permanent failures, `relayed` DSNs, the delivery records to keep.

use chrono::{DateTime, Utc};

use crate::mail_to_cpm::phases;
use crate::mail_to_cpm::plan::{Route, TransactionPlan};
use crate::ruleset::RuleSet;
use crate::smtp::envelope::Envelope;
use crate::smtp::replies;
use crate::smtp::reply::Reply;

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
                        && crate::reports::dsn::relayed_wanted(envelope, &envelope.rcpts[i]);
                    d.reply.clone()
                }),
                Some(Route::Covered(k)) => dispatched.get(*k).map(|d| d.reply.clone()),
                Some(Route::Mailbox(_) | Route::Report(_)) => side.get(i).cloned().flatten(),
                None => None,
            };
            reply.unwrap_or_else(replies::not_processed)
        })
        .collect();
    let (mut transaction, dsn_owed) = phases::aggregate(rules, envelope, &per_recipient, now, None);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail_to_cpm::plan::Route;
    use crate::smtp::envelope::{Client, MailFrom, Rcpt};

    fn rules() -> RuleSet {
        crate::ruleset::load(std::path::Path::new("rules"), 1)
            .unwrap_or_else(|d| panic!("{}", crate::ruleset::diag::render_all(&d)))
    }

    fn envelope(rcpts: &[&str]) -> Envelope {
        Envelope {
            mail_from: MailFrom::parse("<alice@mail.example.org>").unwrap(),
            rcpts: rcpts
                .iter()
                .map(|r| Rcpt::parse(&format!("<{r}> NOTIFY=SUCCESS,FAILURE")).unwrap())
                .collect(),
            client: Client::default(),
            received_at: crate::ids::fixed_now(),
        }
    }

    fn sent(reply: &str, relayed: bool) -> Dispatched {
        Dispatched {
            reply: Reply::parse(reply).unwrap(),
            relayed,
            answered: None,
        }
    }

    /// Every route gets its reply: delivered before, refused, dispatched, covered by an
    /// exploder request, relayed; a route nothing answered is a 451, never a 250.
    #[test]
    fn every_route_gets_its_reply() {
        let env = envelope(&[
            "a@cpm.example.net",
            "b@cpm.example.net",
            "c@cpm.example.net",
            "d@cpm.example.net",
            "e@cpm.example.net",
            "f@cpm.example.net",
        ]);
        let plan = TransactionPlan {
            routes: vec![
                Route::AlreadyDelivered,
                Route::Refused(Reply::parse("550 5.1.1 <b@cpm.example.net>: unknown").unwrap()),
                Route::Cpm(0),
                Route::Covered(0),
                Route::Mailbox("postmaster@mail.example.org".into()),
                Route::Cpm(1),
            ],
            deliveries: Vec::new(),
            explain: Vec::new(),
            about: None,
        };
        let side = vec![
            None,
            None,
            None,
            None,
            Some(Reply::parse("250 2.0.0 relayed").unwrap()),
            None,
        ];
        // deliveries[1] was never dispatched.
        let dispatched = [sent("250 2.0.0 <c@cpm.example.net>: delivered", true)];
        let a = answer(
            &rules(),
            &env,
            &plan,
            &side,
            &dispatched,
            crate::ids::fixed_now(),
        );
        let got: Vec<String> = a.per_recipient.iter().map(|r| r.to_string()).collect();
        assert_eq!(
            got,
            [
                "250 2.0.0 <a@cpm.example.net>: already delivered to CPM",
                "550 5.1.1 <b@cpm.example.net>: unknown",
                "250 2.0.0 <c@cpm.example.net>: delivered",
                "250 2.0.0 <c@cpm.example.net>: delivered",
                "250 2.0.0 relayed",
                "451 4.3.0 recipient not processed",
            ]
        );
        // Relayed is owed to the request's own recipient (NOTIFY=SUCCESS), once.
        assert_eq!(a.relayed, [false, false, true, false, false, false]);
        assert_eq!(
            a.delivered_now(
                &env,
                &[true, false, false, false, false, false],
                &["c@cpm.example.net".into()]
            ),
            ["d@cpm.example.net", "e@cpm.example.net"]
        );
        let mut a = a;
        a.unrecorded(&[true, false, false, false, false, false]);
        assert!(
            a.per_recipient[0].is_positive(),
            "delivered by an earlier attempt"
        );
        assert!(a.per_recipient[2..5].iter().all(|r| r.code == 451));
        assert_eq!(a.transaction.code, 451);
    }

    /// A mail to report addresses only is answered with what became of the report.
    #[test]
    fn a_report_mail_is_answered_with_the_report_reply() {
        let env = envelope(&["b+tok1@iwf.example.net", "b+tok2@iwf.example.net"]);
        let plan = TransactionPlan {
            routes: vec![Route::Report("tok1".into()), Route::Report("tok2".into())],
            ..TransactionPlan::default()
        };
        let side = vec![
            Some(Reply::parse("250 2.0.0 <b+tok1@iwf.example.net>: report delivered").unwrap()),
            Some(Reply::parse("250 2.0.0 <b+tok2@iwf.example.net>: report dropped").unwrap()),
        ];
        let a = answer(&rules(), &env, &plan, &side, &[], crate::ids::fixed_now());
        assert_eq!(
            a.transaction.to_string(),
            "250 2.0.0 <b+tok1@iwf.example.net>: report delivered"
        );
    }
}
