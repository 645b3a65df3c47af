//! An IMDN from CPM about a message iwf sent for a mail → the DSN and/or MDN owed to the
//! e-mail side (mapping reference §5.2, §3.3).
//!
//! [`plan`] is pure (IMDN, record, rules, clock → the report mails); [`imdn_from_cpm`]
//! correlates, hands the mails to the smarthost and answers the IMDN: 200 only after the
//! smarthost took every report owed; 200 too for an IMDN that correlates with nothing or
//! owes nothing (logged, counted, dropped); 503 with Retry-After when the smarthost or the
//! store cannot take it now.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::cpm_to_mail::SipAnswer;
use crate::ruleset::RuleSet;
use crate::ruleset::run::{Fired, RunError};

use super::documents;
use super::imdn::Imdn;
use super::phases::{self, ImdnFacts};
use super::records::{SentRecipient, SentRecord, sent_key};
use super::service::{Once, Reports};

const DIRECTION: &str = "imdn_to_mail";

/// A report mail to hand to the smarthost (`MAIL FROM:<>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportMail {
    /// `dsn:<recipient>` or `mdn:<recipient>`: one of each per recipient per message.
    pub what: String,
    pub to: String,
    pub message: Vec<u8>,
}

/// The recipient of `rec` an IMDN speaks of: the one whose URI is its `<recipient-uri>`
/// (or `<original-recipient-uri>`), else the message's own recipient.
pub fn recipient_for<'r>(rec: &'r SentRecord, imdn: &Imdn) -> &'r SentRecipient {
    let norm = |u: &str| {
        percent_encoding::percent_decode_str(u.trim().trim_matches(['<', '>']))
            .decode_utf8_lossy()
            .to_ascii_lowercase()
    };
    let named: Vec<String> = [&imdn.recipient_uri, &imdn.original_recipient_uri]
        .into_iter()
        .flatten()
        .map(|u| norm(u))
        .collect();
    rec.recipients
        .iter()
        .find(|r| {
            !r.uri.is_empty() && named.contains(&norm(&r.uri))
                || named
                    .iter()
                    .any(|n| n.contains(&r.address.to_ascii_lowercase()))
        })
        .unwrap_or(&rec.recipients[0])
}

/// What an IMDN about the message of `rec` becomes.
pub fn plan(
    rules: &RuleSet,
    imdn: &Imdn,
    rec: &SentRecord,
    reporting: &str,
    ids: &dyn crate::ids::Ids,
    now: DateTime<Utc>,
    explain: Option<&mut Vec<Fired>>,
) -> Result<Vec<ReportMail>, RunError> {
    let message_id = || format!("{}@{reporting}", ids.token());
    let rcpt = recipient_for(rec, imdn);
    let facts = ImdnFacts {
        kind: imdn.notification.kind.as_str(),
        status: imdn.notification.status.as_str(),
        message_id: &imdn.message_id,
        recipient_uri: imdn.recipient_uri.as_deref(),
        now: now.timestamp(),
    };
    let d = phases::map_cpm_report(rules, facts, rec, rcpt, explain)?;
    let mut out = Vec::new();
    if let Some(action) = &d.dsn_action
        && !rec.mail_from.is_empty()
    {
        out.push(ReportMail {
            what: format!("dsn:{}", rcpt.address.to_ascii_lowercase()),
            to: rec.mail_from.clone(),
            message: documents::dsn(
                reporting,
                rec,
                rcpt,
                action,
                d.dsn_status.as_deref().unwrap_or(if action == "failed" {
                    "5.0.0"
                } else {
                    "2.0.0"
                }),
                d.diagnostic.as_deref(),
                &message_id(),
                now,
            ),
        });
    }
    if let (Some(disposition), Some(dnt)) = (&d.mdn_disposition, &rec.dnt) {
        out.push(ReportMail {
            what: format!("mdn:{}", rcpt.address.to_ascii_lowercase()),
            to: dnt.clone(),
            message: documents::mdn(reporting, rec, rcpt, disposition, &message_id(), now),
        });
    }
    Ok(out)
}

/// Answers an IMDN (the CPIM document's inner entity is `xml`) after handing over the
/// reports it owes.
pub async fn imdn_from_cpm(
    reports: &Reports,
    rules: &RuleSet,
    ids: &dyn crate::ids::Ids,
    xml: &[u8],
) -> SipAnswer {
    let imdn = match documents::parse_imdn(xml) {
        Ok(i) => i,
        Err(e) => {
            crate::ops::metrics::report(DIRECTION, "malformed");
            tracing::info!("IMDN refused: {e}");
            return SipAnswer::new(400, "Bad Request (malformed IMDN)");
        }
    };
    let unavailable = |why: String| {
        crate::ops::metrics::report(DIRECTION, "failed");
        tracing::warn!(imdn = %imdn.message_id, "IMDN not handled now: {why}");
        SipAnswer::new(503, "Service Unavailable").with_header("Retry-After", "60")
    };
    let key = sent_key(&imdn.message_id);
    let fields = match reports
        .sent(&imdn.message_id, Duration::from_millis(500))
        .await
    {
        Ok(Some(f)) => f,
        Ok(None) => {
            crate::ops::metrics::report(DIRECTION, "uncorrelated");
            tracing::info!(imdn = %imdn.message_id, "IMDN for no message of ours: answered 200 and dropped");
            return SipAnswer::new(200, "OK");
        }
        Err(e) => return unavailable(e.to_string()),
    };
    let rec = match SentRecord::from_fields(&key, &fields) {
        Ok(r) => r,
        Err(e) => {
            crate::ops::metrics::report(DIRECTION, "malformed");
            tracing::warn!("{e}: IMDN dropped");
            return SipAnswer::new(200, "OK");
        }
    };
    let mails = match plan(
        rules,
        &imdn,
        &rec,
        &reports.hostname,
        ids,
        reports.clock.now(),
        None,
    ) {
        Ok(m) => m,
        Err(e) => return unavailable(format!("rules: {e}")),
    };
    if mails.is_empty() {
        crate::ops::metrics::report(DIRECTION, "not_asked");
        tracing::info!(imdn = %imdn.message_id, kind = imdn.notification.kind.as_str(), status = imdn.notification.status.as_str(), "IMDN owes no mail report");
        return SipAnswer::new(200, "OK");
    }
    let Some(smarthost) = reports.smarthost.clone() else {
        return unavailable("no smarthost configured for the reports".into());
    };
    let mut answer = SipAnswer::new(200, "OK");
    for m in mails {
        let sent = reports
            .once(&key, &m.what, async {
                crate::smtp_client::smarthost::send(
                    &smarthost,
                    &reports.hostname,
                    "",
                    &[&m.to],
                    m.message.clone(),
                )
                .await
                .map_err(HandOff::from)
            })
            .await;
        match sent {
            Once::Sent => {
                crate::ops::metrics::report(DIRECTION, "sent");
                tracing::info!(imdn = %imdn.message_id, what = %m.what, to = %m.to, "IMDN reported by mail");
            }
            Once::Duplicate => crate::ops::metrics::report(DIRECTION, "duplicate"),
            Once::Failed(HandOff::Permanent(e)) => {
                crate::ops::metrics::report(DIRECTION, "failed");
                tracing::warn!(imdn = %imdn.message_id, what = %m.what, "report refused by the smarthost, dropped: {e}");
            }
            Once::Failed(HandOff::Temporary(e)) => answer = unavailable(e),
        }
    }
    answer
}

enum HandOff {
    Temporary(String),
    Permanent(String),
}

impl From<crate::store::StoreError> for HandOff {
    fn from(e: crate::store::StoreError) -> Self {
        HandOff::Temporary(e.to_string())
    }
}

impl From<crate::smtp_client::smarthost::SendError> for HandOff {
    fn from(e: crate::smtp_client::smarthost::SendError) -> Self {
        if e.is_permanent() {
            HandOff::Permanent(e.to_string())
        } else {
            HandOff::Temporary(e.to_string())
        }
    }
}
