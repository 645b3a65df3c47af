//! The MDN mail iwf sends for a `displayed` IMDN (RFC 3798 §3, mapping-reference §5.2),
//! built with mail-builder like the DSNs of [`crate::reports::dsn`].

use chrono::{DateTime, Utc};
use mail_builder::MessageBuilder;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::raw::Raw;
use mail_builder::mime::MimePart;

/// Everything an MDN says, as plain fields. Control characters in any of them are dropped.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MdnInput {
    /// `From:` — the mapped CPM user (`+15551234567@cpm.example.net`).
    pub from: String,
    /// Display name for `From:`, if any.
    pub from_name: Option<String>,
    /// `To:` — the Disposition-Notification-To address of the original mail.
    pub to: String,
    /// `Subject:` (e.g. `Read: <original subject>`); empty gives `Disposition notification`.
    pub subject: String,
    /// The host written in `Reporting-UA: <host>; CPM-IWF`.
    pub reporting_ua: String,
    /// The original mail's Message-ID (with or without angle brackets): `In-Reply-To:`,
    /// `References:` and `Original-Message-ID:`.
    pub original_message_id: String,
    /// `Original-Recipient: rfc822;<addr>`, when the original mail's ORCPT is known.
    pub original_recipient: Option<String>,
    /// `Final-Recipient: rfc822;<addr>` — the recipient the report is about.
    pub final_recipient: String,
    /// The whole `Disposition:` value (`manual-action/MDN-sent-automatically; displayed`).
    pub disposition: String,
    /// The human-readable first part.
    pub text: String,
    /// The original's header section, returned as `text/rfc822-headers` when given.
    pub original_headers: Option<Vec<u8>>,
    /// The MDN's own Message-ID (without brackets); mail-builder makes one when absent.
    pub message_id: Option<String>,
    /// The MDN's `Date:`.
    pub date: DateTime<Utc>,
}

/// Builds the MDN (RFC 5322 text with CRLF line ends): `multipart/report;
/// report-type=disposition-notification` with the text, the `message/disposition-notification`
/// fields (RFC 3798 §3.1, §3.2) and, when given, the original's headers;
/// `Auto-Submitted: auto-replied` (RFC 3834: never an MDN for this MDN).
pub fn build(input: &MdnInput) -> Vec<u8> {
    let id = bare_id(&input.original_message_id);
    let mut fields = String::new();
    fields.push_str(&format!(
        "Reporting-UA: {}; CPM-IWF\r\n",
        one_line(&input.reporting_ua)
    ));
    if let Some(o) = &input.original_recipient {
        fields.push_str(&format!("Original-Recipient: rfc822;{}\r\n", one_line(o)));
    }
    fields.push_str(&format!(
        "Final-Recipient: rfc822;{}\r\n",
        one_line(&input.final_recipient)
    ));
    if !id.is_empty() {
        fields.push_str(&format!("Original-Message-ID: <{id}>\r\n"));
    }
    fields.push_str(&format!(
        "Disposition: {}\r\n",
        one_line(&input.disposition)
    ));
    let encoding = if fields.is_ascii() { "7bit" } else { "8bit" };
    let mut parts = vec![
        MimePart::new("text/plain", input.text.clone()),
        MimePart::new("message/disposition-notification", fields.into_bytes())
            .transfer_encoding(encoding),
    ];
    if let Some(h) = &input.original_headers {
        parts.push(MimePart::new("text/rfc822-headers", h.clone()));
    }
    let report = MimePart::new(
        ContentType::new("multipart/report").attribute("report-type", "disposition-notification"),
        parts,
    );
    let from = one_line(&input.from);
    let subject = match one_line(&input.subject) {
        s if s.trim().is_empty() => "Disposition notification".to_string(),
        s => s,
    };
    let mut b = match &input.from_name {
        Some(name) => MessageBuilder::new().from((one_line(name), from)),
        None => MessageBuilder::new().from(from),
    }
    .to(one_line(&input.to))
    .subject(subject)
    .header("Auto-Submitted", Raw::new("auto-replied"))
    .date(input.date.timestamp());
    if !id.is_empty() {
        b = b.in_reply_to(id.clone()).references(id);
    }
    if let Some(mid) = &input.message_id {
        b = b.message_id(bare_id(mid));
    }
    b.body(report).write_to_vec().unwrap_or_default()
}

fn one_line(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).collect()
}

fn bare_id(s: &str) -> String {
    let s = one_line(s);
    let t = s.trim();
    let t = t.strip_prefix('<').unwrap_or(t);
    let t = t.strip_suffix('>').unwrap_or(t);
    t.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reports::mail_report::{self, Report, Typed};

    fn input() -> MdnInput {
        MdnInput {
            from: "+15551234567@cpm.example.net".into(),
            from_name: Some("+15551234567".into()),
            to: "alice@mail.example.org".into(),
            subject: "Read: photo".into(),
            reporting_ua: "iwf.example.net".into(),
            original_message_id: "<orig-1@mail.example.org>".into(),
            original_recipient: Some("+15551234567@cpm.example.net".into()),
            final_recipient: "+15551234567@cpm.example.net".into(),
            disposition: "manual-action/MDN-sent-automatically; displayed".into(),
            text: "The message was displayed on the CPM user's device.\r\n".into(),
            original_headers: Some(b"From: alice@mail.example.org\r\nSubject: photo\r\nMessage-ID: <orig-1@mail.example.org>\r\n\r\n".to_vec()),
            message_id: Some("mdn-77@iwf.example.net".into()),
            date: crate::ids::fixed_now(),
        }
    }

    #[test]
    fn rfc3798_layout() {
        let mail = String::from_utf8(build(&input())).unwrap();
        for want in [
            "From: \"+15551234567\" <+15551234567@cpm.example.net>\r\n",
            "To: <alice@mail.example.org>\r\n",
            "Subject: Read: photo\r\n",
            "Auto-Submitted: auto-replied\r\n",
            "In-Reply-To: <orig-1@mail.example.org>\r\n",
            "References: <orig-1@mail.example.org>\r\n",
            "Message-ID: <mdn-77@iwf.example.net>\r\n",
            "report-type=\"disposition-notification\"",
            "Content-Type: message/disposition-notification\r\n",
            "Reporting-UA: iwf.example.net; CPM-IWF\r\n",
            "Original-Recipient: rfc822;+15551234567@cpm.example.net\r\n",
            "Final-Recipient: rfc822;+15551234567@cpm.example.net\r\n",
            "Original-Message-ID: <orig-1@mail.example.org>\r\n",
            "Disposition: manual-action/MDN-sent-automatically; displayed\r\n",
            "Content-Type: text/rfc822-headers",
        ] {
            assert!(mail.contains(want), "missing {want:?} in\n{mail}");
        }
        assert!(!mail.contains("\n\n") && !mail.replace("\r\n", "").contains('\n'));
    }

    #[test]
    fn reads_back_as_an_mdn() {
        // (disposition written, type read, modifiers read, headers returned)
        let table: &[(&str, &str, &[&str], bool)] = &[
            (
                "manual-action/MDN-sent-automatically; displayed",
                "displayed",
                &[],
                true,
            ),
            (
                "automatic-action/MDN-sent-automatically; deleted",
                "deleted",
                &[],
                false,
            ),
            (
                "manual-action/MDN-sent-manually; denied",
                "denied",
                &[],
                true,
            ),
            (
                "automatic-action/MDN-sent-automatically; failed/error",
                "failed",
                &["error"],
                false,
            ),
        ];
        for (disp, kind, mods, headers) in table {
            let mut i = input();
            i.disposition = disp.to_string();
            if !headers {
                i.original_headers = None;
                i.original_recipient = None;
            }
            let r = mail_report::parse(&build(&i)).unwrap();
            let Report::Disposition(d) = r.report else {
                panic!("not an MDN")
            };
            let got = d.disposition.unwrap();
            assert_eq!(got.kind, *kind);
            assert_eq!(got.modifiers, mods.to_vec());
            assert_eq!(
                d.original_message_id.as_deref(),
                Some("orig-1@mail.example.org")
            );
            assert_eq!(
                d.final_recipient,
                Some(Typed {
                    kind: "rfc822".into(),
                    value: "+15551234567@cpm.example.net".into()
                })
            );
            assert_eq!(d.original_recipient.is_some(), *headers);
            assert_eq!(
                r.original_message_id.as_deref(),
                headers.then_some("orig-1@mail.example.org")
            );
        }
    }

    #[test]
    fn injection_is_dropped() {
        let mut i = input();
        i.disposition = "manual-action/MDN-sent-automatically; displayed\r\nBcc: x@evil".into();
        i.subject = "a\r\nBcc: y@evil".into();
        i.to = "alice@mail.example.org\r\nBcc: z@evil".into();
        let mail = String::from_utf8(build(&i)).unwrap();
        assert!(!mail.contains("\r\nBcc:"), "{mail}");
    }
}
