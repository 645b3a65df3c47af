//! The two report phases (fields and actions declared in [`crate::ruleset::schema`]):
//!
//! * `cpm_report`: an IMDN from CPM for a message iwf sent → the DSN and/or MDN owed to the
//!   e-mail side (mapping reference §5.2);
//! * `mail_report`: a DSN or MDN mail for a mail iwf sent → the IMDN owed to the CPM sender
//!   (mapping reference §5.3).
//!
//! Both are pure: the facts come in, a decision comes out; nothing is sent here.

use crate::dsl::Value;
use crate::dsl::eval::Input;
use crate::mapper::run::{self, Fired, PhaseState, RunError};
use crate::ruleset::RuleSet;
use crate::ruleset::schema::{Action, F, FIELDS};

use super::records::{MailedRecord, SentRecipient, SentRecord};

fn field_of(slot: u16) -> Option<F> {
    FIELDS.get(slot as usize).map(|f| f.1)
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// A value that goes into a mail or SIP header line: no control character but HTAB.
fn one_line(action: Action, v: &Value) -> Result<Option<String>, String> {
    let t = text(v);
    if let Some(t) = &t
        && t.chars().any(|c| c.is_control() && c != '\t')
    {
        return Err(format!(
            "`{}` produced a control character: `{}`",
            action.key(),
            t.escape_debug()
        ));
    }
    Ok(t)
}

// ---------------------------------------------------------------------------------------
// cpm_report

/// An IMDN as the `cpm_report` phase sees it.
#[derive(Debug, Clone, Copy)]
pub struct ImdnFacts<'a> {
    /// delivery, display or processing.
    pub kind: &'a str,
    pub status: &'a str,
    pub message_id: &'a str,
    pub recipient_uri: Option<&'a str>,
    pub now: i64,
}

/// What the `cpm_report` phase decided: a DSN, an MDN, both or nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpmReportDecision {
    /// The DSN's Action (delivered, failed, relayed, delayed, expanded).
    pub dsn_action: Option<String>,
    pub dsn_status: Option<String>,
    pub diagnostic: Option<String>,
    /// The MDN's Disposition: value.
    pub mdn_disposition: Option<String>,
}

struct CpmReportState<'a> {
    imdn: ImdnFacts<'a>,
    rec: &'a SentRecord,
    rcpt: &'a SentRecipient,
    out: CpmReportDecision,
}

impl Input for CpmReportState<'_> {
    fn field(&self, slot: u16) -> Value {
        let (i, r) = (&self.imdn, self.rec);
        match field_of(slot) {
            Some(F::ImdnKind) => Value::str(i.kind),
            Some(F::ImdnStatus) => Value::str(i.status),
            Some(F::ImdnMessageId) => Value::str(i.message_id),
            Some(F::ImdnRecipientUri) => Value::opt_str(i.recipient_uri),
            Some(F::OriginalRecipient) => Value::str(self.rcpt.address.as_str()),
            Some(F::OriginalMailFrom) => Value::str(r.mail_from.as_str()),
            Some(F::OriginalNotify) => {
                Value::list_of_str(self.rcpt.notify.iter().map(String::as_str))
            }
            Some(F::OriginalRet) => Value::opt_str(r.ret.as_deref()),
            Some(F::OriginalDnt) => Value::opt_str(r.dnt.as_deref()),
            Some(F::OriginalDispositions) => {
                Value::list_of_str(r.dispositions.iter().map(String::as_str))
            }
            Some(F::OriginalSipStatus) => r
                .sip_status
                .map(|s| Value::Int(s as i64))
                .unwrap_or_default(),
            Some(F::Now) => Value::Int(i.now),
            _ => Value::Null,
        }
    }
    fn field_fn(&self, _: u16, _: &str) -> Value {
        Value::Null
    }
}

impl PhaseState for CpmReportState<'_> {
    fn apply(&mut self, action: Action, _: Option<&str>, value: Value) -> Result<(), String> {
        let out = &mut self.out;
        match action {
            Action::DsnAction => out.dsn_action = text(&value),
            Action::DsnStatus => out.dsn_status = one_line(action, &value)?,
            Action::Diagnostic => out.diagnostic = one_line(action, &value)?,
            Action::MdnDisposition => out.mdn_disposition = one_line(action, &value)?,
            _ => {}
        }
        Ok(())
    }
}

/// Runs `cpm_report` for one IMDN about the message of `rec`, reported for `rcpt`.
pub fn map_cpm_report(
    rules: &RuleSet,
    imdn: ImdnFacts<'_>,
    rec: &SentRecord,
    rcpt: &SentRecipient,
    explain: Option<&mut Vec<Fired>>,
) -> Result<CpmReportDecision, RunError> {
    let mut st = CpmReportState {
        imdn,
        rec,
        rcpt,
        out: CpmReportDecision::default(),
    };
    run::run(
        "cpm_report",
        rules.rules("cpm_report"),
        &mut st,
        rules.step_limit,
        explain,
    )?;
    if let Some(s) = &st.out.dsn_status
        && !is_status_code(s)
    {
        return Err(RunError {
            rule: "cpm_report".into(),
            at: "dsn_status".into(),
            message: format!("`{s}` is not an RFC 3463 status code (class.subject.detail)"),
            permanent: false,
        });
    }
    Ok(st.out)
}

/// `2.0.0`, `5.1.1`, … (RFC 3463 §2: class 2, 4 or 5; subject and detail up to 3 digits).
pub fn is_status_code(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && matches!(parts[0], "2" | "4" | "5")
        && parts[1..]
            .iter()
            .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
}

// ---------------------------------------------------------------------------------------
// mail_report

/// A DSN recipient block or an MDN as the `mail_report` phase sees it.
#[derive(Debug, Clone, Copy, Default)]
pub struct MailReportFacts<'a> {
    /// delivery-status or disposition-notification.
    pub report_type: &'a str,
    /// DSN Action, lower case.
    pub action: Option<&'a str>,
    pub status: Option<&'a str>,
    /// MDN disposition type, lower case.
    pub disposition: Option<&'a str>,
    /// Final-Recipient address.
    pub recipient: Option<&'a str>,
    pub now: i64,
}

/// What the `mail_report` phase decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailReportDecision {
    /// (notification, status): `("delivery", "delivered")`, …
    pub imdn: Option<(String, String)>,
    pub request_uri: Option<String>,
    /// SIP headers of the IMDN MESSAGE, in order.
    pub headers: Vec<(String, String)>,
}

struct MailReportState<'a> {
    report: MailReportFacts<'a>,
    rec: &'a MailedRecord,
    out: MailReportDecision,
}

impl Input for MailReportState<'_> {
    fn field(&self, slot: u16) -> Value {
        let (m, r) = (&self.report, self.rec);
        match field_of(slot) {
            Some(F::ReportType) => Value::str(m.report_type),
            Some(F::ReportAction) => Value::opt_str(m.action),
            Some(F::ReportStatus) => Value::opt_str(m.status),
            Some(F::ReportDisposition) => Value::opt_str(m.disposition),
            Some(F::ReportRecipient) => Value::opt_str(m.recipient),
            Some(F::OriginalRecipient) => Value::str(r.mail_rcpt.as_str()),
            Some(F::OriginalDispositions) => {
                Value::list_of_str(r.dispositions.iter().map(String::as_str))
            }
            Some(F::OriginalSipStatus) => r
                .sip_status
                .map(|s| Value::Int(s as i64))
                .unwrap_or_default(),
            Some(F::OriginalSenderUri) => Value::str(r.sip_from_uri.as_str()),
            Some(F::OriginalRecipientUri) => Value::str(r.recipient_uri.as_str()),
            Some(F::OriginalImdnRoute) => Value::opt_str(r.imdn_route.as_deref()),
            Some(F::Now) => Value::Int(m.now),
            _ => Value::Null,
        }
    }
    fn field_fn(&self, _: u16, _: &str) -> Value {
        Value::Null
    }
}

impl PhaseState for MailReportState<'_> {
    fn apply(&mut self, action: Action, header: Option<&str>, value: Value) -> Result<(), String> {
        let out = &mut self.out;
        match (action, header) {
            (Action::ImdnStatus, _) => {
                out.imdn = text(&value).and_then(|v| {
                    let (k, s) = v.split_once(' ')?;
                    Some((k.to_string(), s.to_string()))
                })
            }
            (Action::RequestUri, _) => out.request_uri = one_line(action, &value)?,
            (Action::SetHeader, Some(name)) => {
                out.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
                if let Some(t) = one_line(action, &value)? {
                    out.headers.push((name.to_string(), t));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Runs `mail_report` for one report about the mail of `rec`.
pub fn map_mail_report(
    rules: &RuleSet,
    report: MailReportFacts<'_>,
    rec: &MailedRecord,
    explain: Option<&mut Vec<Fired>>,
) -> Result<MailReportDecision, RunError> {
    let mut st = MailReportState {
        report,
        rec,
        out: MailReportDecision::default(),
    };
    run::run(
        "mail_report",
        rules.rules("mail_report"),
        &mut st,
        rules.step_limit,
        explain,
    )?;
    Ok(st.out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes() {
        for ok in ["2.0.0", "5.1.1", "4.4.7", "5.123.999"] {
            assert!(is_status_code(ok), "{ok}");
        }
        for bad in [
            "",
            "2.0",
            "3.0.0",
            "2.0.0.0",
            "2.a.0",
            "2..0",
            "2.0.1000",
            "2.0.0\r\n",
        ] {
            assert!(!is_status_code(bad), "{bad:?}");
        }
    }
}
