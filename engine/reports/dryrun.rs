//! Dry runs of the report loop (`iwf map --sip IMDN --record FILE`, `iwf map REPORT-MAIL
//! --record FILE`), the snapshots and the fuzz targets: the same pure plans the server
//! runs ([`super::from_cpm::plan`], [`super::from_mail::plan`]), with the correlation record
//! given as a fixture instead of read from the store.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::ids::Ids;
use crate::ruleset::RuleSet;
use crate::ruleset::run::Fired;
use crate::store::Fields;

use super::from_mail::{ImdnPlan, Verdict};
use super::records::{MailedRecord, SentRecord, mailed_key, sent_key};

/// What a report would become.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ReportDryRun {
    /// The mails (DSN / MDN) or the IMDN MESSAGE that would be sent, in wire form, each
    /// after a `MAIL FROM` / `RCPT TO` line pair for mails.
    pub sent: Vec<String>,
    /// The answer to the report: a SIP response (IMDN) or an SMTP reply (DSN/MDN mail),
    /// assuming the smarthost / the CPM side takes what is sent.
    pub answer: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub explain: Vec<Fired>,
}

/// A `--record` fixture that is not a correlation record.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("not JSON: {0}")]
    Json(serde_json::Error),
    /// JSON, but not an object of string fields.
    #[error("not a record (an object of string fields): {0}")]
    Shape(serde_json::Error),
}

/// Reads a correlation record fixture: the record's fields as a JSON object, or what
/// `iwf store get KEY` prints (`{"correlation": {...}}`).
pub fn read_record(text: &str) -> Result<Fields, RecordError> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(RecordError::Json)?;
    let obj = match v.get("correlation") {
        Some(c) if c.is_object() => c,
        _ => &v,
    };
    serde_json::from_value(obj.clone()).map_err(RecordError::Shape)
}

/// An IMDN (the XML of its CPIM document) about the message of `record`.
pub fn imdn(
    rules: &RuleSet,
    xml: &[u8],
    record: Option<&Fields>,
    reporting: &str,
    ids: &dyn Ids,
    now: DateTime<Utc>,
    explain: bool,
) -> ReportDryRun {
    let mut out = ReportDryRun::default();
    let imdn = match super::documents::parse_imdn(xml) {
        Ok(i) => i,
        Err(e) => {
            out.answer = format!("(malformed IMDN: {e})\r\nSIP/2.0 400 Bad Request\r\n");
            return out;
        }
    };
    let key = sent_key(&imdn.message_id);
    let Some(fields) = record else {
        out.answer = format!(
            "(IMDN about `{}`: without its correlation record `{key}` (--record FILE) it correlates with nothing and is dropped)\r\nSIP/2.0 200 OK\r\n",
            imdn.message_id
        );
        return out;
    };
    let rec = match SentRecord::from_fields(&key, fields) {
        Ok(r) => r,
        Err(e) => {
            out.answer = format!("({e}: dropped)\r\nSIP/2.0 200 OK\r\n");
            return out;
        }
    };
    let mut fired = Vec::new();
    match super::from_cpm::plan(
        rules,
        &imdn,
        &rec,
        reporting,
        ids,
        now,
        explain.then_some(&mut fired),
    ) {
        Ok(mails) => {
            for m in &mails {
                out.sent.push(format!(
                    "MAIL FROM:<> RCPT TO:<{}>  ({})\r\n{}",
                    m.to,
                    m.what,
                    String::from_utf8_lossy(&m.message)
                ));
            }
            out.answer = if mails.is_empty() {
                "(no mail report owed)\r\nSIP/2.0 200 OK\r\n".into()
            } else {
                "(after the smarthost's 250)\r\nSIP/2.0 200 OK\r\n".into()
            };
        }
        Err(e) => {
            out.answer = format!("(rules failed: {e})\r\nSIP/2.0 503 Service Unavailable\r\n")
        }
    }
    out.explain = fired;
    out
}

/// A DSN/MDN mail for the report address `rcpt` (token `token`) about the mail of `record`.
#[allow(clippy::too_many_arguments)]
pub fn mail_report(
    rules: &RuleSet,
    raw: &[u8],
    rcpt: &str,
    token: &str,
    record: Option<&Fields>,
    ids: &dyn Ids,
    now: DateTime<Utc>,
    explain: bool,
) -> ReportDryRun {
    let mut out = ReportDryRun::default();
    let key = mailed_key(token);
    let said = |v: Verdict, why: Option<String>| {
        let r = v.reply(rcpt);
        match why {
            Some(w) => format!("({w})\r\n{r}\r\n"),
            None => format!("{r}\r\n"),
        }
    };
    let Some(fields) = record else {
        out.answer = said(
            Verdict::Uncorrelated,
            Some(format!(
                "report for token `{token}`: without its correlation record `{key}` (--record FILE) it correlates with nothing"
            )),
        );
        return out;
    };
    let rec = match MailedRecord::from_fields(&key, fields) {
        Ok(r) => r,
        Err(e) => {
            out.answer = said(Verdict::DamagedRecord, Some(e.to_string()));
            return out;
        }
    };
    let mut fired = Vec::new();
    out.answer = match super::from_mail::plan(
        rules,
        &rec,
        rcpt,
        raw,
        ids,
        now,
        explain.then_some(&mut fired),
    ) {
        ImdnPlan::Send { delivery, .. } => {
            let stamp = crate::mail_to_cpm::dryrun::stamp(ids, rules);
            match crate::render::sip::render_message(&delivery, &stamp) {
                Ok(req) => {
                    out.sent
                        .push(String::from_utf8_lossy(&req.to_bytes()).into_owned());
                    said(Verdict::Sent, Some("after the IMDN's 2xx".into()))
                }
                Err(e) => said(
                    Verdict::RuleError,
                    Some(format!("the IMDN cannot be rendered: {e}")),
                ),
            }
        }
        ImdnPlan::Nothing => said(Verdict::NotAsked, None),
        ImdnPlan::NotAReport(why) => said(Verdict::NotAReport(why), None),
        ImdnPlan::RuleError(e) => said(Verdict::RuleError, Some(format!("rules failed: {e}"))),
    };
    out.explain = fired;
    out
}
