//! The report part of a rule set's self-tests (`cpm_report:` and `mail_report:` cases in
//! `rules/tests/*.yaml`): each case builds the correlation record a report would find and
//! checks what the phase decides.

use chrono::{DateTime, Utc};

use super::phases::{self, ImdnFacts, MailReportFacts};
use super::records::{MailedRecord, SentRecipient, SentRecord};
use crate::ruleset::RuleSet;
use crate::ruleset::file::SelfTest;

/// Runs the report cases of one self-test; returns what differed.
pub fn run(rules: &RuleSet, t: &SelfTest, now: DateTime<Utc>) -> Vec<String> {
    let mut errs = Vec::new();
    for c in &t.cpm_report {
        let Some((kind, status)) = c.imdn.split_once(' ') else {
            errs.push(format!(
                "cpm_report `imdn: {}`: expected `<notification> <status>`",
                c.imdn
            ));
            continue;
        };
        let rcpt = SentRecipient {
            address: "+15551234567@cpm.example.net".into(),
            notify: c.notify.iter().map(|n| n.to_ascii_uppercase()).collect(),
            uri: "tel:+15551234567".into(),
            ..Default::default()
        };
        let rec = SentRecord {
            imdn_message_id: "selftest".into(),
            mail_from: c
                .mail_from
                .clone()
                .unwrap_or_else(|| "sender@mail.example.org".into()),
            dnt: c.dnt.then(|| "sender@mail.example.org".into()),
            recipients: vec![rcpt.clone()],
            sip_status: Some(c.sip_status.unwrap_or(200)),
            arrival: now.timestamp(),
            ..Default::default()
        };
        let facts = ImdnFacts {
            kind,
            status,
            message_id: "selftest",
            recipient_uri: None,
            now: now.timestamp(),
        };
        match phases::map_cpm_report(rules, facts, &rec, &rcpt, None) {
            Err(e) => errs.push(format!("cpm_report {}: {e}", c.imdn)),
            Ok(d) => {
                let dsn = match (&d.dsn_action, &d.dsn_status) {
                    (Some(a), Some(s)) => format!("{a} {s}"),
                    (Some(a), None) => a.clone(),
                    _ => "none".into(),
                };
                if dsn != c.dsn {
                    errs.push(format!(
                        "cpm_report {}: DSN `{dsn}`, expected `{}`",
                        c.imdn, c.dsn
                    ));
                }
                let mdn = d.mdn_disposition.clone().unwrap_or_else(|| "none".into());
                if mdn != c.mdn {
                    errs.push(format!(
                        "cpm_report {}: MDN `{mdn}`, expected `{}`",
                        c.imdn, c.mdn
                    ));
                }
            }
        }
    }
    for c in &t.mail_report {
        let Some((ty, what)) = c.report.split_once(' ') else {
            errs.push(format!(
                "mail_report `report: {}`: expected `<report-type> <action or disposition>`",
                c.report
            ));
            continue;
        };
        let rec = MailedRecord {
            token: "selftest".into(),
            imdn_message_id: "selftest".into(),
            datetime: "2025-11-21T14:03:07Z".into(),
            dispositions: c.asked.clone(),
            sender_uri: "sip:+15551234567@ims.example.net".into(),
            sip_from_uri: "sip:+15551234567@ims.example.net".into(),
            recipient_uri: "sip:alice%40mail.example.org@iwf.example.net".into(),
            mail_rcpt: "alice@mail.example.org".into(),
            sip_status: c.sip_status,
            ..Default::default()
        };
        let dsn = ty == "delivery-status";
        let facts = MailReportFacts {
            report_type: ty,
            action: dsn.then_some(what),
            disposition: (!dsn).then_some(what),
            recipient: Some("alice@mail.example.org"),
            now: now.timestamp(),
            ..Default::default()
        };
        match phases::map_mail_report(rules, facts, &rec, None) {
            Err(e) => errs.push(format!("mail_report {}: {e}", c.report)),
            Ok(d) => {
                let got = d
                    .imdn
                    .map(|(k, s)| format!("{k} {s}"))
                    .unwrap_or_else(|| "none".into());
                if got != c.imdn {
                    errs.push(format!(
                        "mail_report {}: IMDN `{got}`, expected `{}`",
                        c.report, c.imdn
                    ));
                }
            }
        }
    }
    errs
}
