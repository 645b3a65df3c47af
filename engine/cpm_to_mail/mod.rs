//! CPM → e-mail: iwf's SIP UAS answers MESSAGE (pager mode) and delivers it as an RFC 5322
//! mail to the smarthost (mapping reference §5.1; RFC 3428 §7; RFC 4356 §2.1.3.2).
//!
//! ```text
//! plan (pure)      SIP request ─► request::Incoming ─► content (text/plain, message/cpim,
//!                  multipart + RFC 5365 history)
//!                  cpm_address phase: Request-URI → RCPT TO (unmapped: 404), sender, history
//!                  cpm_message phase: facts → mail headers, encoding, envelope (or a refusal)
//!                  render: the one mail-header encoder (no CR/LF, folding, RFC 2047 unless
//!                  SMTPUTF8) + body
//! dispatch (uas)   smtp_client: EHLO (caps) ─► plan again with the caps ─► MAIL/RCPT/DATA,
//!                  bounded in time
//! answer (pure)    cpm_response phase: the smarthost's reply (or failure) → the SIP final
//!                  response
//! ```
//!
//! The SIP final response is sent only after the smarthost's reply to DATA; iwf keeps no
//! spool in this direction (the smarthost's queue is the durable one).
//!
//! | file | what |
//! |---|---|
//! | [`plan`] | request → mail + envelope, or the SIP refusal (phases `cpm_address`, `cpm_message`) |
//! | [`answer`] | the smarthost's outcome → the SIP final response (phase `cpm_response`) |
//! | [`request`] | the incoming request (from rsipstack or wire text) |
//! | [`content`] | the body: CPIM, multipart, resource-lists |
//! | [`phases`] | the states of `cpm_address`, `cpm_message`, `cpm_response` |
//! | [`render`] | mail headers and body encodings |
//! | [`uas`] | the request handler on iwf's SIP listeners (the dispatch step), and the dry run |
//! | [`large`] | Large Message Mode in: INVITE answered, MSRP session received |
//! | [`threads`] | mail Message-ID ↔ CPM conversation |

pub(crate) mod answer;
pub(crate) mod content;
pub(crate) mod large;
pub(crate) mod phases;
pub mod plan;
pub(crate) mod render;
pub(crate) mod request;
pub(crate) mod selftest;
pub(crate) mod sink;
pub(crate) mod threads;
pub mod uas;

use crate::dsl::Value;
use crate::ruleset::RuleSet;

pub use answer::respond;
pub use plan::{Ctx, MailPlan, Planned, plan, target};
pub use request::Incoming;
pub use threads::{MemoryThreads, Thread, ThreadStore};
pub use uas::{Uas, UasConfig};

/// The methods this UAS takes (RFC 3261 §20.5 Allow).
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, MESSAGE, OPTIONS";

/// A `sip_reply` value that is not `NNN Reason phrase` with a final status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// The value as written (trimmed).
    #[error("`{0}` does not start with a final SIP status (200-699)")]
    NotFinal(String),
    #[error("control character in the reason phrase")]
    ControlCharacter,
}

/// A SIP final response: status, reason phrase, extra headers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SipAnswer {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
}

impl SipAnswer {
    pub fn new(status: u16, reason: &str) -> SipAnswer {
        SipAnswer {
            status,
            reason: reason.to_string(),
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> SipAnswer {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// `NNN Reason phrase` with NNN a final status (200–699).
    pub fn parse(s: &str) -> Result<SipAnswer, AnswerError> {
        let s = s.trim();
        let (code, reason) = s.split_once(' ').unwrap_or((s, ""));
        let status: u16 = code
            .parse()
            .ok()
            .filter(|c| (200..700).contains(c) && code.len() == 3)
            .ok_or_else(|| AnswerError::NotFinal(s.to_string()))?;
        if reason.chars().any(char::is_control) {
            return Err(AnswerError::ControlCharacter);
        }
        Ok(SipAnswer::new(status, reason.trim()))
    }

    /// The status line and headers, as the response would carry them.
    pub fn summary(&self) -> String {
        let mut s = format!("SIP/2.0 {} {}\r\n", self.status, self.reason);
        for (n, v) in &self.headers {
            s.push_str(&format!("{n}: {v}\r\n"));
        }
        s
    }
}

/// The SIP body types the rules take (`config.cpm_accept`).
pub fn accept(rules: &RuleSet) -> Vec<String> {
    match rules.setting("cpm_accept") {
        Some(Value::List(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        _ => vec!["text/plain".into(), "message/cpim".into()],
    }
}

/// Adds what RFC 3261 requires with some statuses: Allow with 405 (§21.4.6), Accept with
/// 415 (§21.4.13).
pub fn complete(mut a: SipAnswer, rules: &RuleSet) -> SipAnswer {
    let has = |a: &SipAnswer, n: &str| a.headers.iter().any(|(h, _)| h.eq_ignore_ascii_case(n));
    if a.status == 405 && !has(&a, "Allow") {
        a.headers.push(("Allow".into(), ALLOW.into()));
    }
    if a.status == 415 && !has(&a, "Accept") {
        a.headers.push(("Accept".into(), accept(rules).join(", ")));
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_answers_parse_or_say_why_not() {
        assert_eq!(
            SipAnswer::parse(" 486 Busy Here "),
            Ok(SipAnswer::new(486, "Busy Here"))
        );
        let cases = [
            (
                "180 Ringing",
                AnswerError::NotFinal("180 Ringing".into()),
                "`180 Ringing` does not start with a final SIP status (200-699)",
            ),
            (
                "603 No\u{7}",
                AnswerError::ControlCharacter,
                "control character in the reason phrase",
            ),
        ];
        for (s, want, text) in cases {
            let got = SipAnswer::parse(s).unwrap_err();
            assert_eq!(got, want, "{s}");
            assert_eq!(got.to_string(), text, "{s}");
        }
    }
}
