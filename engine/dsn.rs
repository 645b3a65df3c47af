//! Delivery status notifications (RFC 3464) for recipients that failed permanently while
//! others of the same transaction were delivered (DESIGN §3.6): built with mail-builder,
//! handed to the configured smarthost with mail-send *before* the 250 is sent.
//!
//! DSNs go only to a non-null reverse-path and only for recipients whose NOTIFY is absent
//! or includes FAILURE (RFC 3461 §5.2.6); the returned content follows RET (RFC 3461 §4.3:
//! headers only unless RET=FULL).

use chrono::{DateTime, Utc};
use mail_builder::MessageBuilder;
use mail_builder::headers::content_type::ContentType;
use mail_builder::mime::MimePart;

use crate::envelope::{Envelope, Rcpt};
use crate::reply::Reply;

/// A recipient the DSN reports.
pub struct Failed<'a> {
    pub rcpt: &'a Rcpt,
    pub reply: &'a Reply,
}

/// Whether a `relayed` DSN is owed for this recipient (RFC 3461 §5.2.2: NOTIFY has
/// SUCCESS, and the mail was handed into a system that will not report its delivery).
pub fn relayed_wanted(envelope: &Envelope, rcpt: &Rcpt) -> bool {
    !envelope.mail_from.address.is_empty() && rcpt.notify.contains(&"SUCCESS")
}

/// Whether a DSN is owed for this recipient (RFC 3461 §5.2.6).
pub fn wanted(envelope: &Envelope, rcpt: &Rcpt) -> bool {
    !envelope.mail_from.address.is_empty()
        && (rcpt.notify.is_empty() || rcpt.notify.contains(&"FAILURE"))
}

/// Builds the DSN message (RFC 5322 text with CRLF line ends).
pub fn build(
    reporting_mta: &str,
    envelope: &Envelope,
    failed: &[Failed],
    original: &[u8],
    now: DateTime<Utc>,
) -> Vec<u8> {
    build_report(reporting_mta, envelope, failed, &[], original, now)
}

/// Builds one DSN for permanently `failed` recipients and for `relayed` ones (delivered to
/// CPM with no delivery report to come, RFC 3461 §5.2.2: `Action: relayed`, status 2.0.0).
pub fn build_report(
    reporting_mta: &str,
    envelope: &Envelope,
    failed: &[Failed],
    relayed: &[Failed],
    original: &[u8],
    now: DateTime<Utc>,
) -> Vec<u8> {
    let mut status = String::new();
    status.push_str(&format!("Reporting-MTA: dns; {reporting_mta}\r\n"));
    status.push_str(&format!("DSN-Gateway: dns; {reporting_mta}\r\n"));
    if let Some(envid) = &envelope.mail_from.envid {
        status.push_str(&format!("Original-Envelope-Id: {}\r\n", one_line(envid)));
    }
    status.push_str(&format!(
        "Arrival-Date: {}\r\n",
        envelope.received_at.format("%a, %d %b %Y %H:%M:%S +0000")
    ));
    let mut text = String::from("This is the CPM interworking gateway.\r\n\r\n");
    if !failed.is_empty() {
        text.push_str("The message could not be delivered to the following CPM recipient(s):\r\n");
    }
    let entries = failed
        .iter()
        .map(|f| (f, "failed"))
        .chain(relayed.iter().map(|f| (f, "relayed")));
    let mut relayed_said = false;
    for (f, action) in entries {
        if action == "relayed" && !relayed_said {
            relayed_said = true;
            text.push_str(
                "\r\nThe message was handed to the CPM service for the following recipient(s);\r\n\
                 the CPM service will not report its delivery:\r\n",
            );
        }
        status.push_str("\r\n");
        if let Some(orcpt) = &f.rcpt.orcpt {
            status.push_str(&format!(
                "Original-Recipient: rfc822;{}\r\n",
                one_line(orcpt)
            ));
        }
        status.push_str(&format!(
            "Final-Recipient: rfc822;{}\r\n",
            one_line(&f.rcpt.address)
        ));
        status.push_str(&format!("Action: {action}\r\n"));
        status.push_str(&format!(
            "Status: {}\r\n",
            f.reply
                .status
                .clone()
                .unwrap_or_else(|| format!("{}.0.0", f.reply.code / 100))
        ));
        status.push_str(&format!(
            "Diagnostic-Code: smtp; {}\r\n",
            one_line(&f.reply.to_string())
        ));
        text.push_str(&format!("  <{}>: {}\r\n", f.rcpt.address, f.reply));
    }
    let returned = if envelope.mail_from.ret == Some("FULL") {
        MimePart::new("message/rfc822", original.to_vec())
    } else {
        let end = original
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|p| p + 4)
            .unwrap_or(original.len());
        MimePart::new("text/rfc822-headers", original[..end].to_vec())
    };
    let report = MimePart::new(
        ContentType::new("multipart/report").attribute("report-type", "delivery-status"),
        vec![
            MimePart::new("text/plain", text),
            // RFC 3464 §2.1: the status fields are plain US-ASCII lines, kept readable.
            MimePart::new("message/delivery-status", status.into_bytes()).transfer_encoding("7bit"),
            returned,
        ],
    );
    let daemon = format!("MAILER-DAEMON@{reporting_mta}");
    MessageBuilder::new()
        .from(("Mail Delivery System", daemon.as_str()))
        .to(envelope.mail_from.address.clone())
        .subject(if failed.is_empty() {
            "Delivery Status Notification (Relay)"
        } else {
            "Delivery Status Notification (Failure)"
        })
        .header(
            "Auto-Submitted",
            mail_builder::headers::raw::Raw::new("auto-replied"),
        )
        .date(now.timestamp())
        .body(report)
        .write_to_vec()
        .unwrap_or_default()
}

fn one_line(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).collect()
}

/// Hands a DSN to the smarthost (`host:port`): `MAIL FROM:<>` (RFC 3461 §6.2), one RCPT.
pub async fn send(smarthost: &str, helo: &str, to: &str, dsn: Vec<u8>) -> Result<(), String> {
    crate::smarthost::send(smarthost, helo, "", &[to], dsn)
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::MailFrom;

    #[test]
    fn rfc3464_layout() {
        let env = Envelope {
            mail_from: MailFrom::parse("<a@mail.example.org> ENVID=QQ314159 RET=HDRS").unwrap(),
            rcpts: vec![],
            client: Default::default(),
            received_at: crate::ids::fixed_now(),
        };
        let rcpt = Rcpt::parse("<+15551234567@cpm.example.net> ORCPT=rfc822;x@y.org").unwrap();
        let reply =
            Reply::parse("550 5.1.1 <+15551234567@cpm.example.net>: CPM user unknown (SIP 404)")
                .unwrap();
        let dsn = build(
            "iwf.example.net",
            &env,
            &[Failed {
                rcpt: &rcpt,
                reply: &reply,
            }],
            b"Subject: hi\r\nFrom: a@mail.example.org\r\n\r\nbody that is not returned\r\n",
            crate::ids::fixed_now(),
        );
        let text = String::from_utf8(dsn).unwrap();
        for want in [
            "multipart/report",
            "report-type=\"delivery-status\"",
            "Reporting-MTA: dns; iwf.example.net",
            "Original-Envelope-Id: QQ314159",
            "Original-Recipient: rfc822;x@y.org",
            "Final-Recipient: rfc822;+15551234567@cpm.example.net",
            "Action: failed",
            "Status: 5.1.1",
            "Diagnostic-Code: smtp; 550 5.1.1",
            "text/rfc822-headers",
            "Auto-Submitted: auto-replied",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
        assert!(!text.contains("body that is not returned"));
    }

    #[test]
    fn only_where_notify_asks() {
        let env = Envelope {
            mail_from: MailFrom::parse("<a@b.org>").unwrap(),
            rcpts: vec![],
            client: Default::default(),
            received_at: crate::ids::fixed_now(),
        };
        assert!(wanted(&env, &Rcpt::parse("<x@y>").unwrap()));
        assert!(wanted(
            &env,
            &Rcpt::parse("<x@y> NOTIFY=FAILURE,DELAY").unwrap()
        ));
        assert!(!wanted(&env, &Rcpt::parse("<x@y> NOTIFY=SUCCESS").unwrap()));
        assert!(!wanted(&env, &Rcpt::parse("<x@y> NOTIFY=NEVER").unwrap()));
        let null = Envelope {
            mail_from: MailFrom::parse("<>").unwrap(),
            ..env
        };
        assert!(!wanted(&null, &Rcpt::parse("<x@y>").unwrap()));
    }
}
