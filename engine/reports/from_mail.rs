//! A DSN or MDN mail for iwf's `b+<token>` address → the IMDN owed to the CPM sender of
//! the message that mail was made from (mapping reference §5.3; RFC 5438 §7.2.1).
//!
//! [`plan`] is pure (the mail, the correlation record, the rules, an id and the clock in;
//! the IMDN MESSAGE out); [`inbound_mail`] correlates, sends and answers the SMTP side:
//! 250 once the IMDN got a 2xx, 451 when it may work later, and 250 for everything that
//! must not bounce (uncorrelated, not a report, nothing asked, refused by CPM): never a
//! report about a report (RFC 3461 §6.2, RFC 5321 §4.5.5).

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::ids::Ids;
use crate::mail_to_cpm::plan::{Content, Delivery, Mode};
use crate::ruleset::RuleSet;
use crate::ruleset::run::Fired;
use crate::sip::SipBackend;
use crate::smtp::envelope::{Envelope, Rcpt};
use crate::smtp::reply::Reply;

use super::documents;
use super::phases::{self, MailReportFacts};
use super::records::{MailedRecord, mailed_key};
use super::service::{Once, Reports};

const DIRECTION: &str = "mail_to_imdn";

/// One report block of a DSN (per recipient) or an MDN, as the phase reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportBlock {
    /// delivery-status or disposition-notification.
    pub report_type: String,
    pub action: Option<String>,
    pub status: Option<String>,
    pub disposition: Option<String>,
    pub final_recipient: Option<String>,
    pub original_recipient: Option<String>,
}

/// What a report mail becomes.
#[derive(Debug)]
pub enum ImdnPlan {
    /// Not a `multipart/report` iwf can read (why).
    NotAReport(String),
    /// A report, but no IMDN is owed for it (no rule set `imdn_status`).
    Nothing,
    /// Send this IMDN; `what` is its notification (one IMDN per notification per message).
    Send {
        what: String,
        delivery: Box<Delivery>,
    },
    /// The rules failed (logged; the report is kept for a retry).
    RuleError(String),
}

/// The block of a report that is about `rcpt` (the address the mail went to), else the
/// first one.
pub fn block_for<'b>(blocks: &'b [ReportBlock], rcpt: &str) -> Option<&'b ReportBlock> {
    let strip = |a: &str| a.trim().trim_matches(['<', '>']).to_ascii_lowercase();
    let want = strip(rcpt);
    blocks
        .iter()
        .find(|b| {
            [&b.final_recipient, &b.original_recipient]
                .into_iter()
                .flatten()
                .any(|a| strip(a) == want)
        })
        .or_else(|| blocks.first())
}

/// Maps a report mail about the mail of `rec` to the IMDN owed, if any.
pub fn plan(
    rules: &RuleSet,
    rec: &MailedRecord,
    rcpt: &str,
    raw: &[u8],
    ids: &dyn Ids,
    now: DateTime<Utc>,
    explain: Option<&mut Vec<Fired>>,
) -> ImdnPlan {
    let blocks = match documents::report_blocks(raw) {
        Ok(b) => b,
        Err(why) => return ImdnPlan::NotAReport(why.to_string()),
    };
    let Some(block) = block_for(&blocks, &rec.mail_rcpt) else {
        return ImdnPlan::NotAReport("a report without a recipient block".into());
    };
    let facts = MailReportFacts {
        report_type: &block.report_type,
        action: block.action.as_deref(),
        status: block.status.as_deref(),
        disposition: block.disposition.as_deref(),
        recipient: block.final_recipient.as_deref(),
        now: now.timestamp(),
    };
    let d = match phases::map_mail_report(rules, facts, rec, explain) {
        Ok(d) => d,
        Err(e) => return ImdnPlan::RuleError(e.to_string()),
    };
    let Some((kind, status)) = d.imdn else {
        return ImdnPlan::Nothing;
    };
    let body = match documents::imdn_document(rec, &kind, &status, &ids.token(), now) {
        Ok(b) => b,
        Err(e) => return ImdnPlan::RuleError(format!("the IMDN cannot be written: {e}")),
    };
    ImdnPlan::Send {
        what: kind,
        delivery: Box::new(Delivery {
            recipient: rcpt.to_string(),
            mode: Mode::Pager,
            request_uri: d.request_uri.unwrap_or_else(|| rec.sip_from_uri.clone()),
            headers: d.headers,
            content: Content {
                content_type: "message/cpim".into(),
                body: body.into(),
            },
            // No IMDN for an IMDN (RFC 5438 §7.2.1).
            cpim_inner: None,
            imdn_message_id: None,
            imdn_dispositions: Vec::new(),
            success_report: false,
        }),
    }
}

/// How a report mail ended, and so the reply to it.
#[derive(Debug, Clone)]
pub enum Verdict {
    Uncorrelated,
    DamagedRecord,
    StoreUnavailable(String),
    NotAsked,
    NotAReport(String),
    RuleError,
    Sent,
    Duplicate,
    /// The IMDN could not go now: the reply CPM's outcome mapped to.
    Temporary(Reply),
    /// CPM refused the IMDN for good.
    Permanent(Reply),
}

impl Verdict {
    /// The SMTP reply for the report address `rcpt`: 451 only where a retry can help;
    /// everything else is 250 (a report is never bounced).
    pub fn reply(&self, rcpt: &str) -> Reply {
        crate::smtp::replies::report_verdict(self, rcpt)
    }

    /// The `result` label of `iwf_reports_total`.
    fn metric(&self) -> &'static str {
        match self {
            Verdict::Uncorrelated => "uncorrelated",
            Verdict::DamagedRecord | Verdict::NotAReport(_) => "malformed",
            Verdict::NotAsked => "not_asked",
            Verdict::Sent => "sent",
            Verdict::Duplicate => "duplicate",
            Verdict::StoreUnavailable(_)
            | Verdict::RuleError
            | Verdict::Temporary(_)
            | Verdict::Permanent(_) => "failed",
        }
    }
}

/// Why an IMDN did not go.
enum NotSent {
    Temporary(Reply),
    Permanent(Reply),
}

impl From<crate::store::StoreError> for NotSent {
    fn from(e: crate::store::StoreError) -> Self {
        NotSent::Temporary(crate::smtp::replies::report_state_error(&e))
    }
}

/// Handles a mail for the report address `b+<token>`: the reply for that recipient.
#[allow(clippy::too_many_arguments)]
pub async fn inbound_mail(
    reports: &Reports,
    rules: &RuleSet,
    sip: &dyn SipBackend,
    ids: &dyn Ids,
    envelope: &Envelope,
    rcpt: &Rcpt,
    token: &str,
    raw: &[u8],
) -> Reply {
    let verdict = handle(reports, rules, sip, ids, envelope, rcpt, token, raw).await;
    crate::ops::metrics::report(DIRECTION, verdict.metric());
    match &verdict {
        Verdict::Sent => tracing::info!(token, "report sent to CPM as an IMDN"),
        Verdict::Permanent(r) => {
            tracing::warn!(token, reply = %r, "IMDN refused by CPM: report dropped")
        }
        Verdict::Temporary(r) => tracing::info!(token, reply = %r, "IMDN not delivered now"),
        Verdict::Duplicate => {}
        other => {
            tracing::info!(token, from = %envelope.mail_from.address, "report for a b+ address: {other:?}")
        }
    }
    verdict.reply(&rcpt.address)
}

#[allow(clippy::too_many_arguments)]
async fn handle(
    reports: &Reports,
    rules: &RuleSet,
    sip: &dyn SipBackend,
    ids: &dyn Ids,
    envelope: &Envelope,
    rcpt: &Rcpt,
    token: &str,
    raw: &[u8],
) -> Verdict {
    let key = mailed_key(token);
    let fields = match reports.mailed(token, Duration::from_millis(500)).await {
        Ok(Some(f)) => f,
        Ok(None) => return Verdict::Uncorrelated,
        Err(e) => return Verdict::StoreUnavailable(e.to_string()),
    };
    let rec = match MailedRecord::from_fields(&key, &fields) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("{e}");
            return Verdict::DamagedRecord;
        }
    };
    let (what, delivery) = match plan(
        rules,
        &rec,
        &rcpt.address,
        raw,
        ids,
        reports.clock.now(),
        None,
    ) {
        ImdnPlan::Send { what, delivery } => (what, delivery),
        ImdnPlan::Nothing => return Verdict::NotAsked,
        ImdnPlan::NotAReport(why) => return Verdict::NotAReport(why),
        ImdnPlan::RuleError(e) => {
            tracing::warn!(token, "report not mapped: {e}");
            return Verdict::RuleError;
        }
    };
    let uri = delivery.request_uri.clone();
    let sent = reports
        .once(&key, &what, async {
            let outcome = sip.send_message(&delivery).await;
            // No retry in another form for an IMDN: every form counts as tried.
            let spent = crate::mail_to_cpm::plan::RetryForm::ALL;
            let input = crate::mail_to_cpm::phases::ResponseInput {
                envelope,
                rcpt,
                uri: Some(&uri),
                outcome: &outcome,
                cpim_body: true,
                retried: &spent,
                imdn_requested: false,
                now: reports.clock.now(),
            };
            match crate::mail_to_cpm::phases::respond(rules, &input, None) {
                crate::mail_to_cpm::phases::ResponseDecision::Reply(r) if r.is_positive() => Ok(()),
                crate::mail_to_cpm::phases::ResponseDecision::Reply(r) if r.code / 100 == 4 => {
                    Err(NotSent::Temporary(r))
                }
                crate::mail_to_cpm::phases::ResponseDecision::Reply(r) => {
                    Err(NotSent::Permanent(r))
                }
                crate::mail_to_cpm::phases::ResponseDecision::Retry(form) => Err(
                    NotSent::Permanent(crate::smtp::replies::imdn_retry_asked(&form)),
                ),
            }
        })
        .await;
    match sent {
        Once::Sent => Verdict::Sent,
        Once::Duplicate => Verdict::Duplicate,
        Once::Failed(NotSent::Temporary(r)) => Verdict::Temporary(r),
        Once::Failed(NotSent::Permanent(r)) => Verdict::Permanent(r),
    }
}
