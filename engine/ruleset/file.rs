//! The on-disk YAML shapes of rule files and self-tests (deserialized with spans).

use indexmap::IndexMap;
use serde::Deserialize;
use serde_saphyr::Spanned;

/// A rule file: one phase and its rules.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    pub phase: Spanned<String>,
    #[serde(default)]
    pub description: Option<String>,
    pub rules: Vec<RawRule>,
}

/// One rule as written. Every action is an optional key; the phase decides which are allowed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub name: Spanned<String>,
    #[serde(default)]
    pub cite: Option<Spanned<String>>,
    #[serde(default)]
    pub note: Option<String>,
    #[serde(default)]
    pub when: Option<Spanned<String>>,
    #[serde(default)]
    pub uri: Option<Spanned<String>>,
    #[serde(default)]
    pub reject: Option<Spanned<String>>,
    #[serde(default)]
    pub set_header: Option<IndexMap<String, Spanned<String>>>,
    #[serde(default)]
    pub append_header: Option<IndexMap<String, Spanned<String>>>,
    #[serde(default)]
    pub remove_header: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub cpim_header: Option<IndexMap<String, Spanned<String>>>,
    #[serde(default)]
    pub mode: Option<Spanned<String>>,
    #[serde(default)]
    pub request_uri: Option<Spanned<String>>,
    #[serde(default)]
    pub imdn: Option<Spanned<String>>,
    #[serde(default)]
    pub body: Option<Spanned<String>>,
    #[serde(default)]
    pub text: Option<Spanned<String>>,
    #[serde(default)]
    pub recipient_list: Option<Spanned<String>>,
    #[serde(default)]
    pub exploder: Option<Spanned<String>>,
    #[serde(default)]
    pub reply: Option<Spanned<String>>,
    #[serde(default)]
    pub retry: Option<Spanned<String>>,
    #[serde(default)]
    pub dsn: Option<Spanned<String>>,
    #[serde(default)]
    pub mailbox: Option<Spanned<String>>,
    #[serde(default)]
    pub learn: Option<Spanned<String>>,
    #[serde(default)]
    pub report: Option<Spanned<String>>,
    #[serde(default)]
    pub stop: Option<Spanned<bool>>,
    #[serde(default)]
    pub address: Option<Spanned<String>>,
    #[serde(default)]
    pub sip_reply: Option<Spanned<String>>,
    #[serde(default)]
    pub encoding: Option<Spanned<String>>,
    #[serde(default)]
    pub envelope_from: Option<Spanned<String>>,
    #[serde(default)]
    pub notify: Option<Spanned<String>>,
    #[serde(default)]
    pub report_token: Option<Spanned<String>>,
    #[serde(default)]
    pub dsn_action: Option<Spanned<String>>,
    #[serde(default)]
    pub dsn_status: Option<Spanned<String>>,
    #[serde(default)]
    pub diagnostic: Option<Spanned<String>>,
    #[serde(default)]
    pub mdn_disposition: Option<Spanned<String>>,
    #[serde(default)]
    pub imdn_status: Option<Spanned<String>>,
}

/// One self-test case (a file under `tests/` holds a list of them).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfTest {
    pub name: String,
    /// The raw mail (headers, blank line, body). Required unless only `response` is tested.
    #[serde(default)]
    pub mail: Option<String>,
    /// What follows `MAIL FROM:`; default: the From: header.
    #[serde(default)]
    pub mail_from: Option<String>,
    /// What follows `RCPT TO:`, one per recipient; default: To/Cc addresses.
    #[serde(default)]
    pub rcpt: Vec<String>,
    #[serde(default)]
    pub authenticated: bool,
    /// Fixed clock, RFC 3339; default 2025-11-21T14:03:07Z.
    #[serde(default)]
    pub now: Option<String>,
    /// Seconds since MAIL FROM at mapping time (for BY arithmetic).
    #[serde(default)]
    pub elapsed: Option<i64>,
    /// Expected result per recipient address.
    #[serde(default)]
    pub expect: IndexMap<String, Expect>,
    /// Response-phase cases: outcome → expected reply.
    #[serde(default)]
    pub response: Vec<ResponseCase>,
    /// CPM → e-mail: a SIP request in wire format (LF line ends are fine) …
    #[serde(default)]
    pub sip: Option<String>,
    /// … and what it must become (for a smarthost offering 8BITMIME and DSN).
    #[serde(default)]
    pub sip_expect: Option<SipExpect>,
    /// CPM → e-mail: smarthost outcome → expected SIP response.
    #[serde(default)]
    pub cpm_response: Vec<CpmResponseCase>,
    /// Reports: an IMDN from CPM → the DSN/MDN owed (phase cpm_report).
    #[serde(default)]
    pub cpm_report: Vec<CpmReportCase>,
    /// Reports: a DSN/MDN mail → the IMDN owed (phase mail_report).
    #[serde(default)]
    pub mail_report: Vec<MailReportCase>,
}

/// A cpm_report self-test: an IMDN about a mail iwf sent to CPM → the mail reports.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpmReportCase {
    /// `<notification> <status>`, e.g. `delivery delivered`, `display displayed`.
    pub imdn: String,
    /// The original recipient's NOTIFY keywords (empty: absent).
    #[serde(default)]
    pub notify: Vec<String>,
    /// The original mail's reverse-path (default `sender@mail.example.org`; "" for <>).
    #[serde(default)]
    pub mail_from: Option<String>,
    /// The mail had a Disposition-Notification-To and display was asked.
    #[serde(default)]
    pub dnt: bool,
    /// The SIP status the message got (default 200).
    #[serde(default)]
    pub sip_status: Option<u16>,
    /// Expected DSN: `<action> <status>`, e.g. `delivered 2.0.0`, or `none`.
    pub dsn: String,
    /// Expected MDN Disposition: value, or `none`.
    pub mdn: String,
}

/// A mail_report self-test: a DSN/MDN mail about a mail iwf sent for CPM → the IMDN.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailReportCase {
    /// `delivery-status <action>` or `disposition-notification <disposition type>`.
    pub report: String,
    /// The dispositions the CPM message asked for.
    #[serde(default)]
    pub asked: Vec<String>,
    /// The SIP status iwf answered the message with (default: none yet, i.e. 202 assumed).
    #[serde(default)]
    pub sip_status: Option<u16>,
    /// Expected IMDN `<notification> <status>`, or `none`.
    pub imdn: String,
}

/// What a CPM → e-mail self-test expects.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipExpect {
    /// The SIP response: a refusal, or 202 after the smarthost's 250.
    #[serde(default)]
    pub status: Option<u16>,
    /// RCPT TO address.
    #[serde(default)]
    pub rcpt: Option<String>,
    /// Mail headers that must be present with exactly these values (unfolded).
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// Mail headers that must be absent.
    #[serde(default)]
    pub absent: Vec<String>,
    /// Text the mail must contain.
    #[serde(default)]
    pub mail_contains: Vec<String>,
}

/// A cpm_response self-test: an SMTP reply (or failure) → the SIP status.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpmResponseCase {
    #[serde(default)]
    pub code: Option<u16>,
    /// Enhanced status, e.g. `5.1.1`.
    #[serde(default)]
    pub status: Option<String>,
    /// `connect`, `ehlo`, `mail`, `rcpt`, `data` (default `data`).
    #[serde(default)]
    pub stage: Option<String>,
    /// `timeout`, `connect`, `protocol` instead of a reply.
    #[serde(default)]
    pub failure: Option<String>,
    /// Expected SIP status.
    pub sip: u16,
    /// Expected Retry-After value, when one must be there.
    #[serde(default)]
    pub retry_after: Option<String>,
}

/// What a self-test expects for one recipient.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub request_uri: Option<String>,
    /// Headers that must be present with exactly these values.
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// Headers that must be absent.
    #[serde(default)]
    pub absent: Vec<String>,
    /// CPIM headers that must be present with these values.
    #[serde(default)]
    pub cpim: IndexMap<String, String>,
    /// Text the body must contain.
    #[serde(default)]
    pub body_contains: Vec<String>,
    /// The reply of a rejection (compared by prefix).
    #[serde(default)]
    pub reject: Option<String>,
}

/// A response-phase self-test.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseCase {
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub failure: Option<String>,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub retried: Vec<crate::mail_to_cpm::plan::RetryForm>,
    /// Whether the request asked for an IMDN (default: when `body` is `cpim`).
    #[serde(default)]
    pub imdn_requested: Option<bool>,
    /// Expected `learn:` note, e.g. `no-cpim`.
    #[serde(default)]
    pub learn: Option<String>,
    /// Expected `report:` note (`relayed`).
    #[serde(default)]
    pub report: Option<String>,
    /// Expected reply (prefix), e.g. `550 5.1.1`.
    #[serde(default)]
    pub reply: Option<String>,
    /// Expected retry instead of a reply.
    #[serde(default)]
    pub retry: Option<crate::mail_to_cpm::plan::RetryForm>,
}
