//! A report mail arriving by SMTP: `multipart/report` (RFC 3462) with
//! `report-type=delivery-status` (a DSN, RFC 3464 §2) or `report-type=disposition-notification`
//! (an MDN, RFC 3798 §3), read with mail-parser into plain fields.
//!
//! Tolerant of what MTAs and MUAs write: folded fields, any case, RFC 5322 comments in the
//! structured fields, `rfc822;` address types with or without space, missing optional
//! fields, a missing `report-type` (taken from the status part), `message/global-*` (RFC 6533)
//! variants. Bounded: at most [`MAX_RECIPIENTS`] per-recipient blocks are kept, every field
//! value is cut at [`MAX_VALUE`] octets, and no value holds a control character (CR, LF,
//! ...): unfolding joins lines, anything else becomes a space.

use mail_parser::{ContentType, MessageParser, MimeHeaders, PartType};

/// Per-recipient blocks kept; more are counted in [`DeliveryStatus::recipient_blocks`].
pub const MAX_RECIPIENTS: usize = 1000;
/// Field values are cut at this many octets (RFC 5322 §2.1.1 line limit).
pub const MAX_VALUE: usize = 998;
/// Fields read per group (the per-message group or a recipient block).
const MAX_FIELDS: usize = 64;

/// A parsed report mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailReport {
    pub report: Report,
    /// The Message-ID of the returned original (third part, `message/rfc822` or
    /// `text/rfc822-headers`), without angle brackets.
    pub original_message_id: Option<String>,
    /// The media type of the third part, lower case, when there is one.
    pub returned: Option<String>,
}

/// The machine-readable part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// `message/delivery-status` (RFC 3464).
    Delivery(DeliveryStatus),
    /// `message/disposition-notification` (RFC 3798).
    Disposition(DispositionNotification),
}

/// A typed value: `rfc822; alice@example.org`, `dns; mta.example.org`, `smtp; 550 ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Typed {
    /// The type, lower case (`rfc822`, `dns`, `smtp`, `x-...`); empty when none was written.
    pub kind: String,
    /// The value, trimmed.
    pub value: String,
}

/// RFC 3464 §2.2 per-message fields and §2.3 per-recipient blocks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeliveryStatus {
    pub original_envelope_id: Option<String>,
    pub reporting_mta: Option<Typed>,
    /// RFC 3464 §2.2.3 (RFC 4356 §2.1.4 gateways write it).
    pub dsn_gateway: Option<Typed>,
    pub arrival_date: Option<String>,
    /// The per-recipient blocks, at most [`MAX_RECIPIENTS`].
    pub recipients: Vec<RecipientStatus>,
    /// Per-recipient blocks in the report, including those not kept.
    pub recipient_blocks: usize,
}

/// One per-recipient block (RFC 3464 §2.3). Fields the report left out are `None`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecipientStatus {
    pub original_recipient: Option<Typed>,
    pub final_recipient: Option<Typed>,
    /// `failed`, `delayed`, `delivered`, `relayed`, `expanded` (lower case, comments removed;
    /// other words are kept as written, lower case).
    pub action: Option<String>,
    /// The status code (`5.1.1`), comments removed.
    pub status: Option<String>,
    pub diagnostic_code: Option<Typed>,
    pub remote_mta: Option<Typed>,
}

/// RFC 3798 §3.2 fields.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DispositionNotification {
    /// `Reporting-UA:` as written (`host; product`).
    pub reporting_ua: Option<String>,
    pub mdn_gateway: Option<Typed>,
    pub original_recipient: Option<Typed>,
    pub final_recipient: Option<Typed>,
    /// Without angle brackets.
    pub original_message_id: Option<String>,
    pub disposition: Option<Disposition>,
}

/// `Disposition: action-mode/sending-mode; type[/modifier,...]` (RFC 3798 §3.2.6), lower case.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disposition {
    /// `manual-action` or `automatic-action`.
    pub action_mode: String,
    /// `mdn-sent-manually` or `mdn-sent-automatically`.
    pub sending_mode: String,
    /// `displayed`, `deleted`, `denied`, `failed`, `dispatched`, `processed`, ...
    pub kind: String,
    /// `error`, `warning`, `superseded`, `expired`, `mailbox-terminated`, ...
    pub modifiers: Vec<String>,
}

/// Why a mail is not taken as a report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailReportError {
    #[error("expected a MIME mail, got something that does not parse")]
    Unparseable,
    #[error("expected multipart/report, got {0}")]
    NotAReport(String),
    #[error("expected report-type delivery-status or disposition-notification, got `{0}`")]
    ReportType(String),
    #[error("expected a {0} part in the multipart/report, got none")]
    MissingPart(&'static str),
}

/// Parses a report mail (RFC 5322 text, CRLF or LF line ends).
pub fn parse(raw: &[u8]) -> Result<MailReport, MailReportError> {
    let msg = parse_mime(raw).ok_or(MailReportError::Unparseable)?;
    let top = msg
        .parts
        .first()
        .map(|p| media_type(p.content_type()))
        .unwrap_or_else(|| "text/plain".into());
    let (report_part, children) = msg
        .parts
        .iter()
        .find_map(|p| match &p.body {
            PartType::Multipart(children) if media_type(p.content_type()) == "multipart/report" => {
                Some((p, children))
            }
            _ => None,
        })
        .ok_or_else(|| MailReportError::NotAReport(short(&top)))?;
    let children: Vec<_> = children
        .iter()
        .filter_map(|&i| msg.parts.get(i as usize))
        .collect();
    let declared = report_part
        .content_type()
        .and_then(|ct| {
            ct.attributes()?
                .iter()
                .find(|a| a.name.eq_ignore_ascii_case("report-type"))
                .map(|a| a.value.trim().to_ascii_lowercase())
        })
        .filter(|t| !t.is_empty());
    const DSN: [&str; 2] = ["message/delivery-status", "message/global-delivery-status"];
    const MDN: [&str; 2] = [
        "message/disposition-notification",
        "message/global-disposition-notification",
    ];
    let find = |types: &[&str]| {
        children
            .iter()
            .position(|p| types.contains(&media_type(p.content_type()).as_str()))
    };
    let (is_dsn, at) = match declared.as_deref() {
        Some("delivery-status") => (
            true,
            find(&DSN).ok_or(MailReportError::MissingPart("message/delivery-status"))?,
        ),
        Some("disposition-notification") => (
            false,
            find(&MDN).ok_or(MailReportError::MissingPart(
                "message/disposition-notification",
            ))?,
        ),
        Some(other) => return Err(MailReportError::ReportType(short(other))),
        None => match (find(&DSN), find(&MDN)) {
            (Some(i), _) => (true, i),
            (None, Some(i)) => (false, i),
            (None, None) => return Err(MailReportError::ReportType(String::new())),
        },
    };
    let status = children[at].contents();
    let report = if is_dsn {
        Report::Delivery(delivery_status(status))
    } else {
        Report::Disposition(disposition_notification(status))
    };
    let returned_part = children.iter().skip(at + 1).find(|p| {
        matches!(
            media_type(p.content_type()).as_str(),
            "message/rfc822" | "message/global" | "text/rfc822-headers" | "message/global-headers"
        )
    });
    let mut returned = None;
    let mut original_message_id = None;
    if let Some(p) = returned_part {
        returned = Some(cut(media_type(p.content_type())
            .chars()
            .filter(|c| !c.is_control())
            .collect()));
        original_message_id = match &p.body {
            PartType::Message(m) => m.message_id().map(str::to_string),
            _ => {
                let mut head = p.contents().to_vec();
                head.extend_from_slice(b"\r\n\r\n");
                parse_mime(&head).and_then(|m| m.message_id().map(str::to_string))
            }
        }
        .map(|id| clean(&id))
        .filter(|id| !id.is_empty());
    }
    Ok(MailReport {
        report,
        original_message_id,
        returned,
    })
}

/// mail-parser, with its one known panic turned into "does not parse": 0.11.9 has a
/// `debug_assert!` ("Invalid part ID, could not find multipart", parsers/message.rs:485)
/// that some malformed nested multiparts reach (found by the `mail_report_parse` fuzz
/// target). Release builds compile it out and stop at that part; builds with debug
/// assertions (tests, fuzzing) would panic, so the call is unwound here.
fn parse_mime(raw: &[u8]) -> Option<mail_parser::Message<'_>> {
    std::panic::catch_unwind(|| MessageParser::new().parse(raw))
        .ok()
        .flatten()
}

fn media_type(ct: Option<&ContentType>) -> String {
    match ct {
        Some(ct) => match ct.subtype() {
            Some(s) => format!("{}/{}", ct.ctype(), s),
            None => ct.ctype().to_string(),
        }
        .to_ascii_lowercase(),
        None => "text/plain".into(),
    }
}

/// The groups of fields (RFC 3464 §2.1: the per-message group, then one per recipient,
/// separated by blank lines), unfolded, names lower case. The group count is bounded by
/// `max_groups`; the number of groups seen is returned with them.
fn groups(body: &[u8], max_groups: usize) -> (Vec<Vec<(String, String)>>, usize) {
    let text = String::from_utf8_lossy(body);
    let mut out: Vec<Vec<(String, String)>> = Vec::new();
    let mut seen = 0usize;
    let mut current: Vec<(String, String)> = Vec::new();
    let mut open = false;
    let mut close = |current: &mut Vec<(String, String)>, open: &mut bool| {
        if *open {
            seen += 1;
            if out.len() < max_groups {
                out.push(std::mem::take(current));
            }
            current.clear();
            *open = false;
        }
    };
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            close(&mut current, &mut open);
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = current.last_mut() {
                push_value(v, " ");
                push_value(v, line.trim());
            }
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
            continue;
        }
        open = true;
        if current.len() < MAX_FIELDS {
            let mut v = String::new();
            push_value(&mut v, value.trim());
            current.push((name.to_ascii_lowercase(), v));
        }
    }
    close(&mut current, &mut open);
    (out, seen)
}

/// Appends to a field value: controls become spaces; stops at [`MAX_VALUE`] octets.
fn push_value(v: &mut String, s: &str) {
    for c in s.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if v.len() + c.len_utf8() > MAX_VALUE {
            return;
        }
        v.push(c);
    }
}

fn delivery_status(body: &[u8]) -> DeliveryStatus {
    let (groups, seen) = groups(body, MAX_RECIPIENTS + 1);
    let mut ds = DeliveryStatus::default();
    let mut groups = groups.into_iter();
    if let Some(first) = groups.next() {
        for (n, v) in first {
            match n.as_str() {
                "original-envelope-id" => set(&mut ds.original_envelope_id, v.trim()),
                "reporting-mta" => set_typed(&mut ds.reporting_mta, &v),
                "dsn-gateway" => set_typed(&mut ds.dsn_gateway, &v),
                "arrival-date" => set(&mut ds.arrival_date, v.trim()),
                _ => {}
            }
        }
    }
    for g in groups {
        let mut r = RecipientStatus::default();
        for (n, v) in g {
            match n.as_str() {
                "original-recipient" => set_typed(&mut r.original_recipient, &v),
                "final-recipient" => set_typed(&mut r.final_recipient, &v),
                "action" => set(&mut r.action, &first_word(&v)),
                "status" => set(&mut r.status, &first_word(&v)),
                "diagnostic-code" if r.diagnostic_code.is_none() => {
                    r.diagnostic_code = Some(typed(&v, false));
                }
                "remote-mta" => set_typed(&mut r.remote_mta, &v),
                _ => {}
            }
        }
        ds.recipients.push(r);
    }
    ds.recipient_blocks = seen.saturating_sub(1);
    ds
}

fn disposition_notification(body: &[u8]) -> DispositionNotification {
    // The MDN fields are one group (RFC 3798 §3.1); a stray blank line is tolerated.
    let (groups, _) = groups(body, 8);
    let mut d = DispositionNotification::default();
    for (n, v) in groups.into_iter().flatten() {
        match n.as_str() {
            "reporting-ua" => set(&mut d.reporting_ua, v.trim()),
            "mdn-gateway" => set_typed(&mut d.mdn_gateway, &v),
            "original-recipient" => set_typed(&mut d.original_recipient, &v),
            "final-recipient" => set_typed(&mut d.final_recipient, &v),
            "original-message-id" => set(&mut d.original_message_id, &clean(&v)),
            "disposition" if d.disposition.is_none() => {
                d.disposition = Some(disposition(&v));
            }
            _ => {}
        }
    }
    d
}

/// RFC 3798 §3.2.6: `action-mode "/" sending-mode ";" disposition-type ["/" modifier *("," modifier)]`.
fn disposition(v: &str) -> Disposition {
    let v = uncomment(v).to_ascii_lowercase();
    let (modes, kind) = v.split_once(';').unwrap_or(("", v.as_str()));
    let (action_mode, sending_mode) = modes.split_once('/').unwrap_or((modes, ""));
    let (kind, modifiers) = kind.split_once('/').unwrap_or((kind, ""));
    Disposition {
        action_mode: action_mode.trim().to_string(),
        sending_mode: sending_mode.trim().to_string(),
        kind: kind.trim().to_string(),
        modifiers: modifiers
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .take(16)
            .map(str::to_string)
            .collect(),
    }
}

fn set(slot: &mut Option<String>, v: &str) {
    if slot.is_none() && !v.is_empty() {
        *slot = Some(v.to_string());
    }
}

fn set_typed(slot: &mut Option<Typed>, v: &str) {
    if slot.is_none() {
        let t = typed(v, true);
        if !t.value.is_empty() || !t.kind.is_empty() {
            *slot = Some(t);
        }
    }
}

/// `type ; value`; comments removed when `structured` (addresses, MTA names), kept in
/// diagnostic text.
fn typed(v: &str, structured: bool) -> Typed {
    let v = if structured {
        uncomment(v)
    } else {
        v.to_string()
    };
    match v.split_once(';') {
        Some((kind, value)) => Typed {
            kind: kind.trim().to_ascii_lowercase(),
            value: value.trim().to_string(),
        },
        None => Typed {
            kind: String::new(),
            value: v.trim().to_string(),
        },
    }
}

/// The first word of a structured field, comments removed, lower case (`Action`, `Status`).
fn first_word(v: &str) -> String {
    uncomment(v)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// RFC 5322 §3.2.2 comments removed (nested, with quoted pairs; quoted strings kept).
fn uncomment(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut depth = 0usize;
    let mut quoted = false;
    let mut escaped = false;
    for c in v.chars() {
        if escaped {
            escaped = false;
            if depth == 0 {
                out.push(c);
            }
            continue;
        }
        match c {
            '\\' if quoted || depth > 0 => {
                escaped = true;
                if depth == 0 {
                    out.push(c);
                }
            }
            '"' if depth == 0 => {
                quoted = !quoted;
                out.push(c);
            }
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// A message identifier without comments, white space and angle brackets.
fn clean(v: &str) -> String {
    let v = uncomment(v);
    let v = v.trim();
    let v = v.strip_prefix('<').unwrap_or(v);
    let v = v.strip_suffix('>').unwrap_or(v);
    cut(v.trim().chars().filter(|c| !c.is_control()).collect())
}

/// At most [`MAX_VALUE`] octets, cut at a character boundary.
fn cut(mut s: String) -> String {
    if s.len() > MAX_VALUE {
        let mut end = MAX_VALUE;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

fn short(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/reports")
                .join(name),
        )
        .unwrap()
    }

    fn dsn(raw: &[u8]) -> (DeliveryStatus, MailReport) {
        let r = parse(raw).unwrap_or_else(|e| panic!("{e}"));
        match &r.report {
            Report::Delivery(d) => (d.clone(), r),
            other => panic!("not a DSN: {other:?}"),
        }
    }

    fn mdn(raw: &[u8]) -> (DispositionNotification, MailReport) {
        let r = parse(raw).unwrap_or_else(|e| panic!("{e}"));
        match &r.report {
            Report::Disposition(d) => (d.clone(), r),
            other => panic!("not an MDN: {other:?}"),
        }
    }

    fn t(kind: &str, value: &str) -> Option<Typed> {
        Some(Typed {
            kind: kind.into(),
            value: value.into(),
        })
    }

    /// (fixture, ENVID, Reporting-MTA, [(final, original, action, status, diagnostic kind)],
    /// returned Message-ID)
    #[test]
    fn delivery_status_fixtures() {
        type Row<'a> = (
            &'a str,
            Option<&'a str>,
            &'a str,
            &'a [(&'a str, Option<&'a str>, &'a str, &'a str, Option<&'a str>)],
            Option<&'a str>,
        );
        let table: &[Row] = &[
            (
                "postfix-failed.eml",
                Some("QQ314159"),
                "mta.iwf.test",
                &[(
                    "nobody@cpm.example.net",
                    Some("nobody@cpm.example.net"),
                    "failed",
                    "5.1.1",
                    Some("smtp"),
                )],
                Some("orig-fail-1@bounce.test"),
            ),
            (
                "postfix-relayed.eml",
                Some("ENV-OK-2"),
                "mta.iwf.test",
                // Postfix wrote the ORCPT `+1555...` un-xtext-encoded, as it came in.
                &[(
                    "+15551234567@cpm.example.net",
                    Some("?551234567@cpm.example.net"),
                    "relayed",
                    "2.0.0",
                    Some("smtp"),
                )],
                Some("orig-ok-1@bounce.test"),
            ),
            (
                "rfc3464-a1.eml",
                None,
                "cs.utk.edu",
                &[(
                    "louisl@larry.slip.umd.edu",
                    Some("louisl@larry.slip.umd.edu"),
                    "failed",
                    "4.0.0",
                    Some("smtp"),
                )],
                None,
            ),
            (
                "rfc3464-a2.eml",
                None,
                "cs.utk.edu",
                &[
                    (
                        "arathib@vnet.ibm.com",
                        Some("arathib@vnet.IBM.COM"),
                        "failed",
                        "5.0.0",
                        Some("smtp"),
                    ),
                    (
                        "johnh@hpnjld.njd.hp.com",
                        Some("johnh@hpnjld.njd.hp.com"),
                        "delayed",
                        "4.0.0",
                        None,
                    ),
                    (
                        "wsnell@sdcc13.ucsd.edu",
                        Some("wsnell@sdcc13.ucsd.edu"),
                        "failed",
                        "5.0.0",
                        Some("smtp"),
                    ),
                ],
                Some("199407081321.AA23489@CS.UTK.EDU"),
            ),
            (
                "exim-failed.eml",
                None,
                "mail.example.org",
                &[("bob@cpm.example.net", None, "failed", "5.0.0", Some("smtp"))],
                Some("E1t9zzz-000Abc-1A@mail.example.org"),
            ),
            (
                "mms-dsn-gateway.eml",
                Some("mms-7788"),
                "mmsc.example.net",
                &[
                    (
                        "+15551234567/TYPE=PLMN@mmsc.example.net",
                        Some("+15551234567/TYPE=PLMN@mmsc.example.net"),
                        "delivered",
                        "2.0.0",
                        Some("x-mms"),
                    ),
                    (
                        "+15557654321/TYPE=PLMN@mmsc.example.net",
                        None,
                        "failed",
                        "5.4.7",
                        None,
                    ),
                ],
                Some("msg-42@iwf.example.net"),
            ),
            (
                "no-recipients.eml",
                Some("lonely"),
                "mta.example.org",
                &[],
                None,
            ),
        ];
        for (name, envid, mta, rcpts, orig) in table {
            let (d, r) = dsn(&fixture(name));
            assert_eq!(d.original_envelope_id.as_deref(), *envid, "{name}");
            assert_eq!(d.reporting_mta, t("dns", mta), "{name}");
            assert_eq!(d.recipients.len(), rcpts.len(), "{name}: {d:?}");
            assert_eq!(d.recipient_blocks, rcpts.len(), "{name}");
            for (got, (fin, orcpt, action, status, diag)) in d.recipients.iter().zip(rcpts.iter()) {
                assert_eq!(got.final_recipient, t("rfc822", fin), "{name}");
                assert_eq!(
                    got.original_recipient.as_ref().map(|t| t.value.as_str()),
                    *orcpt,
                    "{name}"
                );
                assert_eq!(got.action.as_deref(), Some(*action), "{name}");
                assert_eq!(got.status.as_deref(), Some(*status), "{name}");
                assert_eq!(
                    got.diagnostic_code.as_ref().map(|t| t.kind.as_str()),
                    *diag,
                    "{name}"
                );
            }
            assert_eq!(r.original_message_id.as_deref(), *orig, "{name}");
        }
        // details
        let (d, r) = dsn(&fixture("postfix-failed.eml"));
        assert_eq!(
            d.arrival_date.as_deref(),
            Some("Tue,  1 Dec 2026 05:39:14 +0000 (UTC)")
        );
        assert_eq!(
            d.recipients[0].diagnostic_code.as_ref().unwrap().value,
            "550 5.1.1 <nobody@cpm.example.net>: CPM user unknown (SIP 404)"
        );
        assert_eq!(d.recipients[0].remote_mta, t("dns", "127.0.0.1"));
        assert_eq!(r.returned.as_deref(), Some("text/rfc822-headers"));
        let (d, r) = dsn(&fixture("mms-dsn-gateway.eml"));
        assert_eq!(d.dsn_gateway, t("dns", "mm3.mmsc.example.net"));
        assert_eq!(r.returned.as_deref(), Some("message/rfc822"));
    }

    #[test]
    fn disposition_fixtures() {
        // (fixture, action mode, sending mode, type, modifiers, final recipient, original id)
        type Row<'a> = (
            &'a str,
            &'a str,
            &'a str,
            &'a str,
            &'a [&'a str],
            &'a str,
            &'a str,
        );
        let table: &[Row] = &[
            (
                "rfc3798-displayed.eml",
                "manual-action",
                "mdn-sent-manually",
                "displayed",
                &[],
                "Joe_Recipient@example.com",
                "199509192301.23456@example.org",
            ),
            (
                "mdn-denied.eml",
                "manual-action",
                "mdn-sent-manually",
                "denied",
                &[],
                "alice@mail.example.org",
                "b7k2m9@iwf.example.net",
            ),
            (
                "mdn-deleted.eml",
                "automatic-action",
                "mdn-sent-automatically",
                "deleted",
                &["expired"],
                "alice@mail.example.org",
                "b7k2m9@iwf.example.net",
            ),
            (
                "mdn-failed.eml",
                "automatic-action",
                "mdn-sent-automatically",
                "failed",
                &["error"],
                "bob@mail.example.org",
                "c0ffee@iwf.example.net",
            ),
        ];
        for (name, am, sm, kind, mods, fin, id) in table {
            let (d, _) = mdn(&fixture(name));
            let disp = d.disposition.clone().unwrap();
            assert_eq!(
                (
                    disp.action_mode.as_str(),
                    disp.sending_mode.as_str(),
                    disp.kind.as_str()
                ),
                (*am, *sm, *kind),
                "{name}"
            );
            assert_eq!(disp.modifiers, mods.to_vec(), "{name}");
            assert_eq!(d.final_recipient, t("rfc822", fin), "{name}");
            assert_eq!(d.original_message_id.as_deref(), Some(*id), "{name}");
            assert!(d.reporting_ua.is_some(), "{name}");
        }
        let (d, r) = mdn(&fixture("rfc3798-displayed.eml"));
        assert_eq!(
            d.original_recipient,
            t("rfc822", "Joe_Recipient@example.com")
        );
        assert_eq!(
            d.reporting_ua.as_deref(),
            Some("joes-pc.cs.example.com; Foomail 97.1")
        );
        // the RFC example returns a placeholder without a Message-ID
        assert_eq!(r.original_message_id, None);
        assert_eq!(r.returned.as_deref(), Some("message/rfc822"));
        let (_, r) = mdn(&fixture("mdn-failed.eml"));
        assert_eq!(
            r.original_message_id.as_deref(),
            Some("c0ffee@iwf.example.net")
        );
        assert_eq!(r.returned.as_deref(), Some("text/rfc822-headers"));
        let (_, r) = mdn(&fixture("mdn-denied.eml"));
        assert_eq!(r.returned, None);
    }

    #[test]
    fn not_reports() {
        let cases: &[(&[u8], &str)] = &[
            (b"From: a@b\r\nSubject: hi\r\n\r\nhello\r\n", "got text/plain"),
            (
                b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\nhi\r\n--x--\r\n",
                "got multipart/mixed",
            ),
            (
                b"Content-Type: multipart/report; report-type=feedback-report; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\nhi\r\n--x\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\n--x--\r\n",
                "`feedback-report`",
            ),
            (
                b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\nhi\r\n--x--\r\n",
                "message/delivery-status part",
            ),
            (
                b"Content-Type: multipart/report; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\nhi\r\n--x--\r\n",
                "got ``",
            ),
        ];
        for (raw, want) in cases {
            let err = parse(raw).expect_err(&String::from_utf8_lossy(raw));
            assert!(err.to_string().contains(want), "{err}");
        }
    }

    fn wrap(report_type: &str, part_type: &str, fields: &str) -> Vec<u8> {
        format!(
            "From: MAILER-DAEMON@x\r\nContent-Type: multipart/report; report-type={report_type}; boundary=\"b\"\r\n\r\n\
             --b\r\nContent-Type: text/plain\r\n\r\nreport\r\n--b\r\nContent-Type: {part_type}\r\n\r\n{fields}\r\n--b--\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn tolerant_field_syntax() {
        let raw = wrap(
            "Delivery-Status",
            "Message/Delivery-Status",
            "reporting-mta: DNS;mx.example.org (Exim 4.96)\r\nORIGINAL-ENVELOPE-ID: e1\r\n\r\n\
             FINAL-RECIPIENT: RFC822;\r\n  folded@example.org\r\naction: Failed (permanent)\r\n\
             status: 5.2.2 (mailbox full)\r\ndiagnostic-code: X-Postfix; the (text) stays\r\n\
             X-Unknown: kept out\r\n\r\n\r\n\
             Final-Recipient: rfc822;\"q (not a comment)\"@example.org\r\nAction: delayed\r\nStatus: 4.4.7\r\n",
        );
        let (d, _) = dsn(&raw);
        assert_eq!(d.reporting_mta, t("dns", "mx.example.org"));
        assert_eq!(d.original_envelope_id.as_deref(), Some("e1"));
        assert_eq!(d.recipients.len(), 2);
        let r = &d.recipients[0];
        assert_eq!(r.final_recipient, t("rfc822", "folded@example.org"));
        assert_eq!(r.action.as_deref(), Some("failed"));
        assert_eq!(r.status.as_deref(), Some("5.2.2"));
        assert_eq!(r.diagnostic_code, t("x-postfix", "the (text) stays"));
        assert_eq!(
            d.recipients[1].final_recipient,
            t("rfc822", "\"q (not a comment)\"@example.org")
        );
        assert_eq!(d.recipients[1].action.as_deref(), Some("delayed"));
        // LF line ends, report-type missing, MDN with comments and modifiers
        let raw = "Content-Type: multipart/report; boundary=b\n\n--b\nContent-Type: text/plain\n\nx\n--b\n\
                   Content-Type: message/disposition-notification\n\nReporting-UA: h; ua\n\
                   Final-Recipient: rfc822; u@h\nOriginal-Message-ID: (c) <id@h> (c)\n\
                   Disposition: Automatic-Action/MDN-Sent-Automatically (auto); Displayed/Warning, Error\n--b--\n";
        let (d, _) = mdn(raw.as_bytes());
        let disp = d.disposition.unwrap();
        assert_eq!(disp.action_mode, "automatic-action");
        assert_eq!(disp.kind, "displayed");
        assert_eq!(disp.modifiers, vec!["warning", "error"]);
        assert_eq!(d.original_message_id.as_deref(), Some("id@h"));
    }

    #[test]
    fn bounded() {
        let mut fields = String::from("Reporting-MTA: dns; a\r\n");
        for i in 0..1500 {
            fields.push_str(&format!(
                "\r\nFinal-Recipient: rfc822;r{i}@x\r\nAction: failed\r\nStatus: 5.0.0\r\n"
            ));
        }
        fields.push_str("\r\nFinal-Recipient: rfc822;");
        fields.push_str(&"z".repeat(5000));
        fields.push_str("\r\n");
        for _ in 0..200 {
            fields.push_str(" continued\r\n");
        }
        let (d, _) = dsn(&wrap("delivery-status", "message/delivery-status", &fields));
        assert_eq!(d.recipients.len(), MAX_RECIPIENTS);
        assert_eq!(d.recipient_blocks, 1501);
        assert_eq!(d.recipients[999].final_recipient, t("rfc822", "r999@x"));
        // control characters never survive into a value
        let (d, _) = dsn(&wrap(
            "delivery-status",
            "message/delivery-status",
            "Reporting-MTA: dns; a\rb\x00c\r\n\r\nFinal-Recipient: rfc822;x\r\n\ty\x0bz\r\nAction: failed\r\n",
        ));
        assert_eq!(d.reporting_mta, t("dns", "a b c"));
        assert_eq!(d.recipients[0].final_recipient, t("rfc822", "x y z"));
        let long = format!("Reporting-MTA: dns; {}\r\n", "m".repeat(3000));
        let (d, _) = dsn(&wrap("delivery-status", "message/delivery-status", &long));
        assert!(d.reporting_mta.unwrap().value.len() <= MAX_VALUE);
    }

    /// A fuzz finding (mail_report_parse): a nested multipart that reaches mail-parser
    /// 0.11.9's debug assertion. Parsed or refused, never a panic.
    #[test]
    fn mail_parser_debug_assertion_is_not_a_panic() {
        let raw = fixture("regress-mailparser-debug-assert.bin");
        let _ = parse(&raw);
    }

    /// A fuzz finding (mail_report_parse): a long Message-ID of multi-byte characters was
    /// cut at 998 characters, not octets.
    #[test]
    fn long_multibyte_values_are_cut_in_octets() {
        let raw = fixture("regress-long-multibyte-id.bin");
        if let Ok(r) = parse(&raw) {
            for v in [&r.original_message_id, &r.returned].into_iter().flatten() {
                assert!(v.len() <= MAX_VALUE);
            }
        }
        let id = "é".repeat(900);
        let raw = wrap(
            "disposition-notification",
            "message/disposition-notification",
            &format!("Original-Message-ID: <{id}>\r\nDisposition: a/b; displayed"),
        );
        let (d, _) = mdn(&raw);
        let got = d.original_message_id.unwrap();
        assert!(got.len() <= MAX_VALUE && got.len() > 900, "{}", got.len());
        assert!(got.chars().all(|c| c == 'é'));
    }
}
