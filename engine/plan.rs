//! The delivery plan: what the message phase decided for one recipient.
//!
//! A [`Delivery`] holds everything a rule decided (mode, Request-URI, SIP headers, body)
//! and nothing that belongs to one transmission (Via branch, Call-ID, From tag): those are
//! a [`Stamp`] the SIP back end (or the dry run) supplies when it renders the request.

use serde::Serialize;

/// Pager mode (SIP MESSAGE) or Large Message Mode (INVITE + MSRP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Pager,
    Large,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Pager => "pager",
            Mode::Large => "large",
        }
    }
}

/// One recipient's SIP delivery, as decided by the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The RCPT TO address this delivery serves.
    pub recipient: String,
    pub mode: Mode,
    /// Request-URI (also the SIP To URI unless a rule set To).
    pub request_uri: String,
    /// SIP headers set by the rules, in order, each value already checked by the encoder.
    /// The mechanism adds Via, Call-ID, CSeq, the From tag, Content-Type, Content-Length
    /// (and Contact for INVITE) when rendering.
    pub headers: Vec<(String, String)>,
    /// For pager mode: the MESSAGE body. For large mode: the message sent over MSRP.
    pub content: Content,
    /// The `imdn.Message-ID` put into the CPIM document, when there is one.
    pub imdn_message_id: Option<String>,
    /// The dispositions that CPIM document asks for (`positive-delivery`, `display`, …).
    pub imdn_dispositions: Vec<String>,
    /// MSRP `Success-Report: yes` wanted (DSN NOTIFY=SUCCESS).
    pub success_report: bool,
}

/// A body with its content type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    pub content_type: String,
    /// Shared, so that large mode streams it into MSRP chunks without another copy.
    pub body: bytes::Bytes,
}

/// The per-transmission values the mechanism puts into a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// `SIP/2.0/<transport>` in Via: `UDP`, `TCP` or `TLS`.
    pub transport: String,
    /// `host[:port]` of our Via sent-by and Contact.
    pub sent_by: String,
    /// Via branch, including the `z9hG4bK` magic cookie.
    pub branch: String,
    pub call_id: String,
    pub from_tag: String,
    pub cseq: u32,
}
