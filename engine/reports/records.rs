//! Correlation records: what a report arriving days later needs to know about the message
//! it reports on. Kept in the [`Store`](crate::store::Store) of the durable-state issue as
//! flat string fields (the same on SQLite and Redis), with a time to live.
//!
//! | key | written when | read when |
//! |---|---|---|
//! | `imdn:<imdn.Message-ID>` | iwf sends a MESSAGE / MSRP message asking for an IMDN ([`SentRecord`]) | an IMDN comes back from CPM |
//! | `b:<token>` | iwf sends a mail with the return path `b+<token>@<iwf domain>` for a CPM message that asked for reports ([`MailedRecord`]) | a DSN or MDN mail arrives for that address |
//!
//! A record is written *before* the message leaves (a report can overtake the answer) and
//! written again with the final status once it is known.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::store::Fields;

/// Key of the record of a message sent to CPM with this `imdn.Message-ID`.
pub fn sent_key(imdn_message_id: &str) -> String {
    format!("imdn:{imdn_message_id}")
}

/// Key of the record of a mail sent with the return path `b+<token>@…`.
pub fn mailed_key(token: &str) -> String {
    format!("b:{}", token.to_ascii_lowercase())
}

/// Why a stored record cannot be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("correlation record `{key}`: field `{field}` {problem}")]
pub struct RecordError {
    pub key: String,
    pub field: &'static str,
    pub problem: &'static str,
}

/// One recipient of a mail iwf turned into a CPM message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SentRecipient {
    /// RCPT TO.
    pub address: String,
    /// ORCPT (RFC 3461 §4.2), without the `rfc822;` type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orcpt: Option<String>,
    /// NOTIFY keywords; empty when absent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<String>,
    /// The URI the message went to.
    pub uri: String,
}

/// A mail → CPM message that asked for IMDNs (mapping reference §3.3, §5.2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SentRecord {
    pub imdn_message_id: String,
    /// Reverse-path of the mail ("" for <>).
    pub mail_from: String,
    pub envid: Option<String>,
    /// RET=FULL or HDRS (absent: headers, RFC 3461 §4.3).
    pub ret: Option<String>,
    /// When iwf received the mail (Unix seconds): the DSN's Arrival-Date.
    pub arrival: i64,
    /// Message-ID of the mail (no <>), for the MDN's Original-Message-ID.
    pub message_id: Option<String>,
    pub subject: Option<String>,
    /// The Disposition-Notification-To address, when display was asked.
    pub dnt: Option<String>,
    /// The dispositions asked for in imdn.Disposition-Notification.
    pub dispositions: Vec<String>,
    /// The recipient this message went to first, then those it covers (exploder).
    pub recipients: Vec<SentRecipient>,
    /// What a DSN returns: the whole mail (RET=FULL, when small) or its header section.
    pub returned: Vec<u8>,
    pub returned_full: bool,
    /// The SIP final status the message got; `None` while it is on its way.
    pub sip_status: Option<u16>,
}

/// A CPM message → mail that asked for IMDNs (mapping reference §5.1, §5.3).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailedRecord {
    pub token: String,
    /// imdn.Message-ID of the CPM message.
    pub imdn_message_id: String,
    /// Its CPIM DateTime, as written (the IMDN's `<datetime>`).
    pub datetime: String,
    pub dispositions: Vec<String>,
    /// The CPM sender: CPIM From URI, else SIP From URI (the IMDN's CPIM To).
    pub sender_uri: String,
    /// Where the IMDN goes: the top IMDN-Record-Route, else the SIP From URI.
    pub imdn_route: Option<String>,
    /// The SIP From URI of the message (the IMDN's Request-URI without IMDN-Record-Route).
    pub sip_from_uri: String,
    /// The Request-URI the message was sent to (the IMDN's `<recipient-uri>`).
    pub recipient_uri: String,
    /// imdn.Original-To, when present (`<original-recipient-uri>`, RFC 5438 §7.1.1.3).
    pub original_to: Option<String>,
    /// The mail address it was delivered to.
    pub mail_rcpt: String,
    /// The mail's Message-ID (no <>).
    pub mail_message_id: Option<String>,
    /// The SIP status iwf answered the message with; `None` while the mail is on its way.
    pub sip_status: Option<u16>,
}

/// Largest mail returned whole in a later DSN (RET=FULL); larger ones return headers only
/// (RFC 3461 §4.3 allows truncation to the headers).
pub const MAX_RETURNED_FULL: usize = 256 * 1024;
/// Longest header section kept.
pub const MAX_RETURNED_HEADERS: usize = 64 * 1024;

/// What a later DSN returns of `raw`: the whole mail for RET=FULL when it is small, else
/// the header section (bounded).
pub fn returned_part(raw: &[u8], ret_full: bool) -> (Vec<u8>, bool) {
    if ret_full && raw.len() <= MAX_RETURNED_FULL {
        return (raw.to_vec(), true);
    }
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .unwrap_or(raw.len())
        .min(MAX_RETURNED_HEADERS);
    (raw[..end].to_vec(), false)
}

/// What a later report needs from the mail itself (parsed once per transaction, only when
/// a delivery asked for an IMDN).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailFacts {
    pub message_id: Option<String>,
    pub subject: Option<String>,
    /// The first Disposition-Notification-To address.
    pub dnt: Option<String>,
    pub arrival: i64,
    pub returned: Vec<u8>,
    pub returned_full: bool,
}

impl MailFacts {
    /// `about` is what the plan kept of the mail's one parse (none: it did not parse).
    pub fn of(
        envelope: &crate::smtp::envelope::Envelope,
        raw: &[u8],
        about: Option<&crate::mail_to_cpm::phases::MailSummary>,
    ) -> MailFacts {
        let (returned, returned_full) = returned_part(raw, envelope.mail_from.ret == Some("FULL"));
        let mut f = MailFacts {
            arrival: envelope.received_at.timestamp(),
            returned,
            returned_full,
            ..MailFacts::default()
        };
        if let Some(a) = about {
            f.message_id = a.message_id.clone();
            f.subject = a.subject.clone();
            f.dnt = a.dnt.clone();
        }
        f
    }
}

impl SentRecord {
    /// The record of `delivery` (which carried an imdn.Message-ID), answered `status` (none
    /// yet while it is on its way), for
    /// the envelope recipients `who` (its own first, then those it covers).
    pub fn of(
        about: &MailFacts,
        envelope: &crate::smtp::envelope::Envelope,
        delivery: &crate::mail_to_cpm::plan::Delivery,
        who: &[String],
        status: Option<u16>,
    ) -> SentRecord {
        let recipients = who
            .iter()
            .map(|w| {
                let r = envelope.rcpts.iter().find(|r| &r.address == w);
                SentRecipient {
                    address: w.clone(),
                    orcpt: r.and_then(|r| r.orcpt.clone()),
                    notify: r
                        .map(|r| r.notify.iter().map(|n| n.to_string()).collect())
                        .unwrap_or_default(),
                    uri: if *w == delivery.recipient {
                        delivery.request_uri.clone()
                    } else {
                        String::new()
                    },
                }
            })
            .collect();
        let display = delivery.imdn_dispositions.iter().any(|d| d == "display");
        SentRecord {
            imdn_message_id: delivery.imdn_message_id.clone().unwrap_or_default(),
            mail_from: envelope.mail_from.address.clone(),
            envid: envelope.mail_from.envid.clone(),
            ret: envelope.mail_from.ret.map(str::to_string),
            arrival: about.arrival,
            message_id: about.message_id.clone(),
            subject: about.subject.clone(),
            dnt: if display { about.dnt.clone() } else { None },
            dispositions: delivery.imdn_dispositions.clone(),
            recipients,
            returned: about.returned.clone(),
            returned_full: about.returned_full,
            sip_status: status,
        }
    }
}

impl MailedRecord {
    /// The record of a MESSAGE that asked for IMDNs (its CPIM `imdn.Disposition-Notification`),
    /// mailed to `mail_rcpt` with the return path of `token`; `None` when it asked for none
    /// or carries no `imdn.Message-ID` (RFC 5438 §6.3: then no IMDN can be sent).
    pub fn of(
        inc: &crate::cpm_to_mail::Incoming,
        cpim: &[(String, String)],
        token: &str,
        mail_rcpt: &str,
        mail_message_id: Option<&str>,
    ) -> Option<MailedRecord> {
        use crate::cpm_to_mail::request::name_addr;
        let get = |n: &str| {
            cpim.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.trim())
        };
        let prefix = crate::cpm_to_mail::content::imdn_prefix(cpim);
        let dispositions: Vec<String> = cpim
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(&format!("{prefix}.Disposition-Notification")))
            .flat_map(|(_, v)| v.split(','))
            .map(|v| v.trim().to_ascii_lowercase())
            .filter(|v| !v.is_empty())
            .collect();
        if dispositions.is_empty() {
            return None;
        }
        let imdn_message_id = get(&format!("{prefix}.Message-ID"))?.to_string();
        let sip_from_uri = inc.header("From").and_then(name_addr)?.1;
        let sender_uri = get("From")
            .and_then(name_addr)
            .map(|(_, u)| u)
            .unwrap_or_else(|| sip_from_uri.clone());
        // RFC 5438 §9: the IMDN follows the IMDN-Record-Route the IM collected, top first.
        let imdn_route = inc
            .header("IMDN-Record-Route")
            .and_then(|v| name_addr(v.split(',').next().unwrap_or(v)))
            .map(|(_, u)| u);
        Some(MailedRecord {
            token: token.to_string(),
            imdn_message_id,
            datetime: get("DateTime").unwrap_or_default().to_string(),
            dispositions,
            sender_uri,
            imdn_route,
            sip_from_uri,
            recipient_uri: inc.request_uri.clone(),
            original_to: get(&format!("{prefix}.Original-To"))
                .and_then(name_addr)
                .map(|(_, u)| u),
            mail_rcpt: mail_rcpt.to_string(),
            mail_message_id: mail_message_id.map(str::to_string),
            sip_status: None,
        })
    }
}

fn put(f: &mut Fields, k: &str, v: impl Into<String>) {
    f.insert(k.to_string(), v.into());
}

fn put_opt(f: &mut Fields, k: &str, v: &Option<String>) {
    if let Some(v) = v {
        put(f, k, v.clone());
    }
}

fn list(v: &[String]) -> String {
    v.join(",")
}

fn unlist(s: Option<&String>) -> Vec<String> {
    s.map(|s| {
        s.split(',')
            .map(str::trim)
            .filter(|w| !w.is_empty())
            .map(String::from)
            .collect()
    })
    .unwrap_or_default()
}

struct Reader<'a> {
    key: &'a str,
    f: &'a Fields,
}

impl Reader<'_> {
    fn req(&self, field: &'static str) -> Result<String, RecordError> {
        self.f.get(field).cloned().ok_or(RecordError {
            key: self.key.to_string(),
            field,
            problem: "is missing",
        })
    }
    fn opt(&self, field: &str) -> Option<String> {
        self.f.get(field).cloned()
    }
    fn status(&self, field: &'static str) -> Result<Option<u16>, RecordError> {
        self.f
            .get(field)
            .map(|s| {
                s.parse::<u16>().map_err(|_| RecordError {
                    key: self.key.to_string(),
                    field,
                    problem: "is not a status code",
                })
            })
            .transpose()
    }
}

impl SentRecord {
    pub fn key(&self) -> String {
        sent_key(&self.imdn_message_id)
    }

    pub fn to_fields(&self) -> Fields {
        let mut f = BTreeMap::new();
        put(&mut f, "kind", "sent");
        put(&mut f, "imdn_message_id", self.imdn_message_id.clone());
        put(&mut f, "mail_from", self.mail_from.clone());
        put_opt(&mut f, "envid", &self.envid);
        put_opt(&mut f, "ret", &self.ret);
        put(&mut f, "arrival", self.arrival.to_string());
        put_opt(&mut f, "message_id", &self.message_id);
        put_opt(&mut f, "subject", &self.subject);
        put_opt(&mut f, "dnt", &self.dnt);
        put(&mut f, "dispositions", list(&self.dispositions));
        put(
            &mut f,
            "recipients",
            serde_json::to_string(&self.recipients).unwrap_or_default(),
        );
        put(
            &mut f,
            "returned",
            base64::engine::general_purpose::STANDARD.encode(&self.returned),
        );
        put(&mut f, "returned_full", self.returned_full.to_string());
        if let Some(s) = self.sip_status {
            put(&mut f, "sip_status", s.to_string());
        }
        f
    }

    pub fn from_fields(key: &str, f: &Fields) -> Result<SentRecord, RecordError> {
        let r = Reader { key, f };
        let bad = |field, problem| RecordError {
            key: key.to_string(),
            field,
            problem,
        };
        let recipients: Vec<SentRecipient> = serde_json::from_str(&r.req("recipients")?)
            .map_err(|_| bad("recipients", "is not a JSON list of recipients"))?;
        if recipients.is_empty() {
            return Err(bad("recipients", "is empty"));
        }
        Ok(SentRecord {
            imdn_message_id: r.req("imdn_message_id")?,
            mail_from: r.req("mail_from")?,
            envid: r.opt("envid"),
            ret: r.opt("ret"),
            arrival: r
                .req("arrival")?
                .parse()
                .map_err(|_| bad("arrival", "is not a Unix time"))?,
            message_id: r.opt("message_id"),
            subject: r.opt("subject"),
            dnt: r.opt("dnt"),
            dispositions: unlist(f.get("dispositions")),
            recipients,
            returned: base64::engine::general_purpose::STANDARD
                .decode(r.opt("returned").unwrap_or_default())
                .map_err(|_| bad("returned", "is not base64"))?,
            returned_full: r.opt("returned_full").as_deref() == Some("true"),
            sip_status: r.status("sip_status")?,
        })
    }
}

impl MailedRecord {
    pub fn key(&self) -> String {
        mailed_key(&self.token)
    }

    pub fn to_fields(&self) -> Fields {
        let mut f = BTreeMap::new();
        put(&mut f, "kind", "mailed");
        put(&mut f, "token", self.token.clone());
        put(&mut f, "imdn_message_id", self.imdn_message_id.clone());
        put(&mut f, "datetime", self.datetime.clone());
        put(&mut f, "dispositions", list(&self.dispositions));
        put(&mut f, "sender_uri", self.sender_uri.clone());
        put_opt(&mut f, "imdn_route", &self.imdn_route);
        put(&mut f, "sip_from_uri", self.sip_from_uri.clone());
        put(&mut f, "recipient_uri", self.recipient_uri.clone());
        put_opt(&mut f, "original_to", &self.original_to);
        put(&mut f, "mail_rcpt", self.mail_rcpt.clone());
        put_opt(&mut f, "mail_message_id", &self.mail_message_id);
        if let Some(s) = self.sip_status {
            put(&mut f, "sip_status", s.to_string());
        }
        f
    }

    pub fn from_fields(key: &str, f: &Fields) -> Result<MailedRecord, RecordError> {
        let r = Reader { key, f };
        Ok(MailedRecord {
            token: r.req("token")?,
            imdn_message_id: r.req("imdn_message_id")?,
            datetime: r.req("datetime")?,
            dispositions: unlist(f.get("dispositions")),
            sender_uri: r.req("sender_uri")?,
            imdn_route: r.opt("imdn_route"),
            sip_from_uri: r.req("sip_from_uri")?,
            recipient_uri: r.req("recipient_uri")?,
            original_to: r.opt("original_to"),
            mail_rcpt: r.req("mail_rcpt")?,
            mail_message_id: r.opt("mail_message_id"),
            sip_status: r.status("sip_status")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent() -> SentRecord {
        SentRecord {
            imdn_message_id: "t000000000000001".into(),
            mail_from: "alice@mail.example.org".into(),
            envid: Some("QQ314159".into()),
            ret: Some("HDRS".into()),
            arrival: 1_763_733_787,
            message_id: Some("m1@mail.example.org".into()),
            subject: Some("Lunch".into()),
            dnt: Some("alice@mail.example.org".into()),
            dispositions: vec!["positive-delivery".into(), "display".into()],
            recipients: vec![SentRecipient {
                address: "+15551234567@cpm.example.net".into(),
                orcpt: Some("+15551234567@cpm.example.net".into()),
                notify: vec!["SUCCESS".into(), "FAILURE".into()],
                uri: "tel:+15551234567".into(),
            }],
            returned: b"Subject: Lunch\r\n\r\n".to_vec(),
            returned_full: false,
            sip_status: Some(200),
        }
    }

    #[test]
    fn records_round_trip_through_fields() {
        let s = sent();
        assert_eq!(
            SentRecord::from_fields(&s.key(), &s.to_fields()).unwrap(),
            s
        );
        let pending = SentRecord {
            sip_status: None,
            envid: None,
            ..sent()
        };
        assert_eq!(
            SentRecord::from_fields("k", &pending.to_fields()).unwrap(),
            pending
        );
        let m = MailedRecord {
            token: "abc".into(),
            imdn_message_id: "Zq81mK0pR2".into(),
            datetime: "2025-11-21T14:03:07Z".into(),
            dispositions: vec!["positive-delivery".into(), "display".into()],
            sender_uri: "sip:+15551234567@ims.example.net".into(),
            imdn_route: None,
            sip_from_uri: "sip:+15551234567@ims.example.net".into(),
            recipient_uri: "sip:alice%40mail.example.org@iwf.example.net".into(),
            original_to: None,
            mail_rcpt: "alice@mail.example.org".into(),
            mail_message_id: Some("abc@iwf.example.net".into()),
            sip_status: Some(202),
        };
        assert_eq!(m.key(), "b:abc");
        assert_eq!(
            MailedRecord::from_fields("b:abc", &m.to_fields()).unwrap(),
            m
        );
    }

    #[test]
    fn damaged_records_say_what_is_wrong() {
        let mut f = sent().to_fields();
        f.remove("mail_from");
        let e = SentRecord::from_fields("imdn:x", &f).unwrap_err();
        assert_eq!(
            e.to_string(),
            "correlation record `imdn:x`: field `mail_from` is missing"
        );
        let mut f = sent().to_fields();
        f.insert("recipients".into(), "[]".into());
        assert!(SentRecord::from_fields("imdn:x", &f).is_err());
        let mut f = sent().to_fields();
        f.insert("sip_status".into(), "2xx".into());
        assert!(SentRecord::from_fields("imdn:x", &f).is_err());
    }

    #[test]
    fn returned_part_follows_ret_and_bounds() {
        let raw = b"Subject: a\r\nFrom: b@c\r\n\r\nbody\r\n";
        assert_eq!(returned_part(raw, true), (raw.to_vec(), true));
        assert_eq!(
            returned_part(raw, false),
            (b"Subject: a\r\nFrom: b@c\r\n\r\n".to_vec(), false)
        );
        let mut big = b"Subject: a\r\n\r\n".to_vec();
        big.resize(MAX_RETURNED_FULL + 1, b'x');
        assert_eq!(returned_part(&big, true).0, b"Subject: a\r\n\r\n".to_vec());
    }
}
