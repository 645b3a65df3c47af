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
use crate::ruleset::RuleSet;
use crate::ruleset::run::{self, ActionError, Fault, Fired, PhaseState, RunError};
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
fn one_line(action: Action, v: &Value) -> Result<Option<String>, ActionError> {
    let t = text(v);
    if let Some(t) = &t
        && t.chars().any(|c| c.is_control() && c != '\t')
    {
        return Err(ActionError::unexpected(
            format!("`{}`", action.key()),
            "one line without control characters",
            t,
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
    fn apply(&mut self, action: Action, _: Option<&str>, value: Value) -> Result<(), ActionError> {
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
            fault: Fault::Rule,
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
    fn apply(
        &mut self,
        action: Action,
        header: Option<&str>,
        value: Value,
    ) -> Result<(), ActionError> {
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
    use crate::reports::records::SentRecipient;

    fn shipped() -> RuleSet {
        crate::ruleset::load(std::path::Path::new("rules"), 1).expect("shipped rules load")
    }

    fn sent(notify: &[&str], dnt: bool, mail_from: &str, status: Option<u16>) -> SentRecord {
        SentRecord {
            imdn_message_id: "m1".into(),
            mail_from: mail_from.into(),
            dnt: dnt.then(|| "alice@mail.example.org".to_string()),
            dispositions: vec!["positive-delivery".into(), "display".into()],
            recipients: vec![SentRecipient {
                address: "+15551234567@cpm.example.net".into(),
                notify: notify.iter().map(|n| n.to_string()).collect(),
                uri: "tel:+15551234567".into(),
                ..Default::default()
            }],
            sip_status: status,
            ..Default::default()
        }
    }

    /// Mapping reference §5.2, row by row, with the shipped rules.
    #[test]
    #[allow(clippy::type_complexity)]
    fn section_5_2_imdn_to_mail_report() {
        let rules = shipped();
        let alice = "alice@mail.example.org";
        // (kind, status, NOTIFY, DNT, reverse-path, SIP status) -> (DSN action+status, MDN?)
        let rows: &[(
            &str,
            &str,
            &[&str],
            bool,
            &str,
            Option<u16>,
            Option<(&str, &str)>,
            bool,
        )] = &[
            (
                "delivery",
                "delivered",
                &["SUCCESS", "FAILURE"],
                false,
                alice,
                Some(200),
                Some(("delivered", "2.0.0")),
                false,
            ),
            (
                "delivery",
                "delivered",
                &["FAILURE"],
                false,
                alice,
                Some(200),
                None,
                false,
            ),
            (
                "delivery",
                "delivered",
                &[],
                false,
                alice,
                Some(200),
                None,
                false,
            ),
            (
                "delivery",
                "delivered",
                &["SUCCESS"],
                false,
                "",
                Some(200),
                None,
                false,
            ),
            (
                "delivery",
                "failed",
                &["FAILURE"],
                false,
                alice,
                Some(200),
                Some(("failed", "5.0.0")),
                false,
            ),
            (
                "delivery",
                "failed",
                &[],
                false,
                alice,
                Some(202),
                Some(("failed", "5.0.0")),
                false,
            ),
            (
                "delivery",
                "failed",
                &["SUCCESS"],
                false,
                alice,
                Some(200),
                None,
                false,
            ),
            (
                "delivery",
                "failed",
                &["NEVER"],
                false,
                alice,
                Some(200),
                None,
                false,
            ),
            (
                "delivery",
                "failed",
                &["FAILURE"],
                false,
                alice,
                Some(480),
                None,
                false,
            ),
            (
                "delivery",
                "failed",
                &["FAILURE"],
                false,
                alice,
                None,
                Some(("failed", "5.0.0")),
                false,
            ),
            (
                "delivery",
                "forbidden",
                &["SUCCESS"],
                false,
                alice,
                Some(200),
                Some(("relayed", "2.0.0")),
                false,
            ),
            (
                "delivery",
                "error",
                &["SUCCESS", "FAILURE"],
                false,
                alice,
                Some(200),
                Some(("relayed", "2.0.0")),
                false,
            ),
            (
                "delivery",
                "forbidden",
                &["FAILURE"],
                false,
                alice,
                Some(200),
                None,
                false,
            ),
            (
                "display",
                "displayed",
                &["SUCCESS"],
                true,
                alice,
                Some(200),
                None,
                true,
            ),
            (
                "display",
                "displayed",
                &["SUCCESS"],
                false,
                alice,
                Some(200),
                None,
                false,
            ),
            (
                "display",
                "forbidden",
                &[],
                true,
                alice,
                Some(200),
                None,
                false,
            ),
            ("display", "error", &[], true, alice, Some(200), None, false),
            (
                "processing",
                "processed",
                &["SUCCESS"],
                true,
                alice,
                Some(200),
                None,
                false,
            ),
        ];
        for (kind, status, notify, dnt, from, sip, dsn, mdn) in rows {
            let rec = sent(notify, *dnt, from, *sip);
            let d = map_cpm_report(
                &rules,
                ImdnFacts {
                    kind,
                    status,
                    message_id: "m1",
                    recipient_uri: None,
                    now: 0,
                },
                &rec,
                &rec.recipients[0],
                None,
            )
            .unwrap();
            let got = d.dsn_action.as_deref().zip(d.dsn_status.as_deref());
            assert_eq!(
                got, *dsn,
                "{kind} {status} NOTIFY={notify:?} from={from:?} sip={sip:?}"
            );
            assert_eq!(
                d.mdn_disposition.is_some(),
                *mdn,
                "{kind} {status} dnt={dnt}"
            );
            if *mdn {
                assert_eq!(
                    d.mdn_disposition.as_deref(),
                    Some("manual-action/MDN-sent-automatically; displayed")
                );
            }
        }
    }

    fn mailed(dispositions: &[&str], status: Option<u16>, route: Option<&str>) -> MailedRecord {
        MailedRecord {
            token: "tok".into(),
            imdn_message_id: "Zq81mK0pR2".into(),
            datetime: "2025-11-21T14:03:07Z".into(),
            dispositions: dispositions.iter().map(|d| d.to_string()).collect(),
            sender_uri: "sip:+15551234567@ims.example.net".into(),
            imdn_route: route.map(str::to_string),
            sip_from_uri: "sip:+15551234567@ims.example.net".into(),
            recipient_uri: "sip:alice%40mail.example.org@iwf.example.net".into(),
            mail_rcpt: "alice@mail.example.org".into(),
            sip_status: status,
            ..Default::default()
        }
    }

    /// Mapping reference §5.3, row by row, with the shipped rules.
    #[test]
    #[allow(clippy::type_complexity)]
    fn section_5_3_mail_report_to_imdn() {
        let rules = shipped();
        let all = [
            "positive-delivery",
            "negative-delivery",
            "display",
            "processing",
        ];
        let dsn = "delivery-status";
        let mdn = "disposition-notification";
        // (type, action/disposition, asked, SIP status answered) -> IMDN
        let rows: &[(&str, &str, &[&str], Option<u16>, Option<&str>)] = &[
            (
                dsn,
                "delivered",
                &all,
                Some(202),
                Some("delivery delivered"),
            ),
            (
                dsn,
                "delivered",
                &["negative-delivery", "display"],
                Some(202),
                None,
            ),
            (dsn, "failed", &all, Some(202), Some("delivery failed")),
            (dsn, "failed", &all, None, Some("delivery failed")),
            (dsn, "failed", &all, Some(408), None),
            (dsn, "failed", &["positive-delivery"], Some(202), None),
            (dsn, "relayed", &all, Some(202), None),
            (dsn, "expanded", &all, Some(202), None),
            (dsn, "delayed", &all, Some(202), Some("processing stored")),
            (
                dsn,
                "delayed",
                &["positive-delivery", "negative-delivery"],
                Some(202),
                None,
            ),
            (mdn, "displayed", &all, Some(202), Some("display displayed")),
            (mdn, "displayed", &["positive-delivery"], Some(202), None),
            (mdn, "denied", &all, Some(202), Some("display forbidden")),
            (mdn, "failed", &all, Some(202), Some("display error")),
            (mdn, "deleted", &all, Some(202), None),
            (mdn, "dispatched", &all, Some(202), None),
            (mdn, "processed", &all, Some(202), None),
        ];
        for (ty, what, asked, status, want) in rows {
            let rec = mailed(asked, *status, None);
            let facts = MailReportFacts {
                report_type: ty,
                action: (*ty == dsn).then_some(*what),
                disposition: (*ty == mdn).then_some(*what),
                ..Default::default()
            };
            let d = map_mail_report(&rules, facts, &rec, None).unwrap();
            let got = d.imdn.as_ref().map(|(k, s)| format!("{k} {s}"));
            assert_eq!(
                got.as_deref(),
                *want,
                "{ty} {what} asked={asked:?} sip={status:?}"
            );
            assert_eq!(
                d.request_uri.as_deref(),
                Some("sip:+15551234567@ims.example.net")
            );
            let h = |n: &str| {
                d.headers
                    .iter()
                    .find(|(k, _)| k == n)
                    .map(|(_, v)| v.as_str())
            };
            assert_eq!(
                h("From"),
                Some("<sip:alice%40mail.example.org@iwf.example.net>")
            );
            assert_eq!(h("To"), Some("<sip:+15551234567@ims.example.net>"));
        }
        // RFC 5438 §9: with IMDN-Record-Route the IMDN goes to its top entry.
        let rec = mailed(&all, Some(202), Some("sip:imdn-as@ims.example.net"));
        let d = map_mail_report(
            &rules,
            MailReportFacts {
                report_type: dsn,
                action: Some("delivered"),
                ..Default::default()
            },
            &rec,
            None,
        )
        .unwrap();
        assert_eq!(
            d.request_uri.as_deref(),
            Some("sip:imdn-as@ims.example.net")
        );
    }

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
