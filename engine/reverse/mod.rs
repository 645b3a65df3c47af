//! CPM → e-mail: iwf's SIP UAS answers MESSAGE (pager mode) and delivers it as an RFC 5322
//! mail to the smarthost (mapping reference §5.1; RFC 3428 §7; RFC 4356 §2.1.3.2).
//!
//! ```text
//! SIP request ─► request::Incoming ─► content (text/plain, message/cpim, multipart + RFC 5365 history)
//!   cpm_address phase: Request-URI → RCPT TO (unmapped: 404), sender, history entries
//!   cpm_message phase: facts → mail headers, encoding, envelope (or a SIP refusal)
//!   render: the one mail-header encoder (no CR/LF, folding, RFC 2047 unless SMTPUTF8) + body
//! smtp_client: EHLO (caps) ─► plan again with the caps ─► MAIL/RCPT/DATA, bounded in time
//!   cpm_response phase: the smarthost's reply (or failure) → the SIP final response
//! ```
//!
//! The SIP final response is sent only after the smarthost's reply to DATA; iwf keeps no
//! spool in this direction (the smarthost's queue is the durable one).
//!
//! | file | what |
//! |---|---|
//! | [`request`] | the incoming request (from rsipstack or wire text) |
//! | [`content`] | the body: CPIM, multipart, resource-lists |
//! | [`phases`] | the states of `cpm_address`, `cpm_message`, `cpm_response` |
//! | [`render`] | mail headers and body encodings |
//! | [`uas`] | the request handler on iwf's SIP listeners, and the dry run |
//! | [`threads`] | mail Message-ID ↔ CPM conversation |

pub mod content;
pub mod large;
pub mod phases;
pub mod render;
pub mod request;
pub mod selftest;
pub mod sink;
pub mod threads;
pub mod uas;

use chrono::{DateTime, Utc};

use crate::dsl::Value;
use crate::mapper::run::Fired;
use crate::ruleset::RuleSet;
use crate::ruleset::schema::F;
use crate::smtp_client::{Caps, Envelope};

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

/// The mail a MESSAGE becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailPlan {
    pub envelope: Envelope,
    pub message: Vec<u8>,
    /// The mail's Message-ID (no <>), for the thread store.
    pub message_id: Option<String>,
    /// Conversation-ID of the request, for the thread store.
    pub conversation: Option<String>,
}

/// Everything a mapping needs besides the rules and the request.
pub struct Ctx<'a> {
    pub now: DateTime<Utc>,
    /// Fresh per request; the same in both plans of one request.
    pub token: String,
    pub explain: bool,
    pub threads: Option<&'a dyn ThreadStore>,
}

/// The result of [`plan`], with the rules that fired.
#[derive(Debug)]
pub struct Planned {
    pub result: Result<MailPlan, SipAnswer>,
    pub explain: Vec<Fired>,
}

fn internal(e: impl std::fmt::Display) -> SipAnswer {
    tracing::warn!("CPM to mail: {e}");
    SipAnswer::new(500, "Server Internal Error")
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

/// Maps a MESSAGE to the mail and envelope for a next hop with `caps`, or to the SIP
/// response that refuses it.
pub fn plan(rules: &RuleSet, inc: &Incoming, caps: &Caps, ctx: &Ctx) -> Planned {
    let mut explain = Vec::new();
    let result = plan_inner(rules, inc, caps, ctx, ctx.explain.then_some(&mut explain))
        .map_err(|a| complete(a, rules));
    Planned { result, explain }
}

fn plan_inner(
    rules: &RuleSet,
    inc: &Incoming,
    caps: &Caps,
    ctx: &Ctx,
    mut explain: Option<&mut Vec<Fired>>,
) -> Result<MailPlan, SipAnswer> {
    if !inc.method.eq_ignore_ascii_case("MESSAGE") {
        return Err(SipAnswer::new(405, "Method Not Allowed"));
    }
    let now = ctx.now.timestamp();
    let map = |uri: &str, name: Option<&str>, role: &str, ex: Option<&mut Vec<Fired>>| {
        phases::map_address(rules, uri, name, role, now, ex).map_err(internal)
    };
    let target = target_with(rules, inc, now, explain.as_deref_mut())?;
    let mut f = phases::MessageFacts {
        sip_headers: inc.headers.clone(),
        ..Default::default()
    };
    let s = |v: Option<&str>| Value::opt_str(v);
    f.set(F::CpmNow, Value::Int(now));
    f.set(F::SipMethod, Value::str(inc.method.as_str()));
    f.set(F::SipRequestUri, Value::str(inc.request_uri.as_str()));
    let sip_from = inc.header("From").and_then(request::name_addr);
    if let Some((name, uri)) = &sip_from {
        f.set(F::SipFromUri, Value::str(uri.as_str()));
        f.set(F::SipFromName, s(name.as_deref()));
    }
    if let Some((_, uri)) = inc.header("To").and_then(request::name_addr) {
        f.set(F::SipToUri, Value::str(uri));
    }
    f.set(F::SipCallId, s(inc.header("Call-ID")));
    if let Some(d) = inc
        .header("Date")
        .and_then(|d| DateTime::parse_from_rfc2822(d).ok())
    {
        f.set(F::SipDate, Value::Int(d.timestamp()));
    }
    f.set(
        F::SipPriority,
        s(inc
            .header("Priority")
            .map(|p| p.trim().to_ascii_lowercase())
            .as_deref()),
    );
    if let Some(e) = inc
        .header("Expires")
        .and_then(|e| e.trim().parse::<i64>().ok())
    {
        f.set(F::SipExpires, Value::Int(e));
    }
    f.set(F::SipContentType, s(inc.content_type().as_deref()));
    f.set(F::SipBodySize, Value::Int(inc.body.len() as i64));
    f.set(F::SipSubject, s(inc.header("Subject")));
    f.set(F::SipTransport, Value::str(inc.transport.as_str()));
    f.set(
        F::SipSource,
        s(inc
            .header("Via")
            .and_then(|v| v.split_whitespace().nth(1))
            .map(|v| v.split(';').next().unwrap_or(v))),
    );
    f.set(F::TargetAddress, Value::str(target.as_str()));
    f.set(F::Token, Value::str(ctx.token.as_str()));
    f.set(F::NextHopSmtputf8, Value::Bool(caps.smtputf8));
    f.set(F::NextHop8bitmime, Value::Bool(caps.eightbitmime));
    f.set(F::NextHopDsn, Value::Bool(caps.dsn));

    let accepted = accept(rules);
    let content = match content::parse(inc.header("Content-Type"), &inc.body, &accepted) {
        Ok(c) => Some(c),
        Err(e) => {
            let kind = match e {
                content::ContentError::Empty => "empty",
                content::ContentError::Unsupported(_) => "unsupported",
                content::ContentError::Malformed(_) => "malformed",
            };
            f.set(F::ContentError, Value::str(kind));
            tracing::debug!("CPM to mail: body refused: {e}");
            None
        }
    };
    let mut sender = sip_from.clone();
    if let Some(c) = &content {
        f.set(F::ContentType, Value::str(c.media_type.as_str()));
        f.set(F::ContentCharset, s(c.charset.as_deref()));
        f.set(F::ContentText, s(c.text.as_deref()));
        f.set(F::ContentSize, Value::Int(c.bytes.len() as i64));
        f.set(F::CpimPresent, Value::Bool(c.cpim.is_some()));
        if let Some(h) = &c.cpim {
            f.cpim_headers = h.clone();
            cpim_facts(&mut f, h, &mut sender);
        }
        f.set(F::HistoryCount, Value::Int(c.history_count as i64));
        let mut lists: [Vec<String>; 3] = Default::default();
        let max = rules
            .setting("cpm_max_history")
            .and_then(Value::as_int)
            .unwrap_or(100)
            .max(0) as usize;
        if c.history_count <= max {
            for (uri, name, copy) in &c.history {
                let i = match copy.as_str() {
                    "cc" => 1,
                    "bcc" => 2,
                    _ => 0,
                };
                let role = ["to", "cc", "bcc"][i];
                if let phases::AddressDecision::Address(a) =
                    map(uri, name.as_deref(), role, explain.as_deref_mut())?
                {
                    let entry = match name.as_deref().filter(|n| !n.trim().is_empty()) {
                        Some(n) => format!("{} <{a}>", crate::render::encoder::Quoted(n)),
                        None => a,
                    };
                    lists[i].push(entry);
                }
            }
        }
        let [to, cc, bcc] = lists;
        f.set(F::HistoryTo, Value::list_of_str(to));
        f.set(F::HistoryCc, Value::list_of_str(cc));
        f.set(F::HistoryBcc, Value::list_of_str(bcc));
    }
    if let Some((name, uri)) = &sender {
        if let phases::AddressDecision::Address(a) =
            map(uri, name.as_deref(), "from", explain.as_deref_mut())?
        {
            f.set(F::FromAddress, Value::str(a));
        }
        f.set(F::FromName, s(name.as_deref()));
    }
    let conversation = inc.header("Conversation-ID").map(str::to_string);
    if let (Some(store), Some(conv)) = (ctx.threads, conversation.as_deref())
        && let Some(t) = store.lookup(conv)
    {
        f.set(F::ThreadInReplyTo, Value::str(t.message_id.as_str()));
        let refs = if t.references.is_empty() {
            format!("<{}>", t.message_id)
        } else {
            format!("{} <{}>", t.references, t.message_id)
        };
        f.set(F::ThreadReferences, Value::str(refs));
    }

    let d = phases::map_message(rules, &f, explain).map_err(internal)?;
    if let Some(r) = d.refuse {
        return Err(r);
    }
    let Some(c) = content else {
        return Err(internal(
            "no cpm_message rule refused a body that cannot be taken",
        ));
    };
    // SIP Expires counts from the request's Date (RFC 3261 §20.19); RFC 4356 §2.1.3.2
    // carries the expiry as DELIVERBY with R.
    let by = inc
        .header("Expires")
        .and_then(|e| e.trim().parse::<i64>().ok())
        .map(|e| {
            let sent = inc
                .header("Date")
                .and_then(|d| DateTime::parse_from_rfc2822(d).ok())
                .map(|d| d.timestamp())
                .unwrap_or(now);
            e - (now - sent).max(0)
        });
    let mut plan = build_mail(&d, &c, caps, target, conversation, &ctx.token)?;
    plan.envelope.by = by;
    Ok(plan)
}

/// The recipient: the Request-URI mapped by `cpm_address` (no relay: an unmapped one is
/// refused with 404, or what the rules say). `now` is the rules' `cpm_now`.
pub fn target(rules: &RuleSet, inc: &Incoming, now: DateTime<Utc>) -> Result<String, SipAnswer> {
    target_with(rules, inc, now.timestamp(), None)
}

fn target_with(
    rules: &RuleSet,
    inc: &Incoming,
    now: i64,
    explain: Option<&mut Vec<Fired>>,
) -> Result<String, SipAnswer> {
    match phases::map_address(rules, &inc.request_uri, None, "target", now, explain)
        .map_err(internal)?
    {
        phases::AddressDecision::Address(a) => Ok(a),
        phases::AddressDecision::Refuse(r) => Err(r),
        phases::AddressDecision::Unmapped => Err(SipAnswer::new(404, "Not Found")),
    }
}

/// CPIM From/To/DateTime/Subject/imdn.* (RFC 3862 §3.3, RFC 5438 §6), with the namespace
/// prefix of urn:ietf:params:imdn taken from `NS:`.
fn cpim_facts(
    f: &mut phases::MessageFacts,
    h: &[(String, String)],
    sender: &mut Option<(Option<String>, String)>,
) {
    fn get<'h>(h: &'h [(String, String)], n: &str) -> impl Iterator<Item = &'h str> {
        let n = n.to_string();
        h.iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(&n))
            .map(|(_, v)| v.as_str())
    }
    if let Some((name, uri)) = get(h, "From").next().and_then(request::name_addr) {
        f.set(F::CpimFromUri, Value::str(uri.as_str()));
        f.set(F::CpimFromName, Value::opt_str(name.as_deref()));
        *sender = Some((name, uri));
    }
    f.set(
        F::CpimTo,
        Value::list_of_str(get(h, "To").filter_map(request::name_addr).map(|(_, u)| u)),
    );
    if let Some(d) = get(h, "DateTime")
        .next()
        .and_then(|d| DateTime::parse_from_rfc3339(d.trim()).ok())
    {
        f.set(F::CpimDatetime, Value::Int(d.timestamp()));
    }
    // Subject may carry ;lang= (RFC 3862 §3.3.5 writes it as `Subject:;lang=fr value`).
    if let Some(subj) = get(h, "Subject").next() {
        let subj = match subj.strip_prefix(';') {
            Some(rest) => rest.split_once(' ').map(|(_, v)| v).unwrap_or(""),
            None => subj,
        };
        f.set(F::CpimSubject, Value::str(subj.trim()));
    }
    let prefix = content::imdn_prefix(h);
    if let Some(id) = get(h, &format!("{prefix}.Message-ID")).next() {
        f.set(F::CpimMessageId, Value::str(id.trim()));
    }
    f.set(
        F::CpimDispositions,
        Value::list_of_str(
            get(h, &format!("{prefix}.Disposition-Notification"))
                .flat_map(|v| v.split(','))
                .map(|v| v.trim().to_ascii_lowercase())
                .filter(|v| !v.is_empty()),
        ),
    );
}

/// Headers the mechanism writes itself (the content's MIME headers).
const MIME_HEADERS: &[&str] = &["mime-version", "content-type", "content-transfer-encoding"];

fn build_mail(
    d: &phases::MessageDecision,
    c: &content::Content,
    caps: &Caps,
    target: String,
    conversation: Option<String>,
    token: &str,
) -> Result<MailPlan, SipAnswer> {
    let utf8 = caps.smtputf8;
    let mut out = String::new();
    let mut needs_utf8 = false;
    for (n, v) in &d.headers {
        if MIME_HEADERS.contains(&n.to_ascii_lowercase().as_str()) {
            continue;
        }
        let line = render::header(n, v, utf8).map_err(|e| {
            tracing::info!("CPM to mail: header refused: {e}");
            SipAnswer::new(400, "Bad Request")
        })?;
        needs_utf8 |= !line.is_ascii();
        out.push_str(&line);
    }
    for required in ["From", "Date"] {
        if !d
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(required))
        {
            return Err(internal(format!(
                "the rules wrote no {required}: header (RFC 5322 §3.6)"
            )));
        }
    }
    let is_text = c.text.is_some();
    let (ctype, bytes) = match &c.text {
        Some(t) => (
            format!("{}; charset=utf-8", c.media_type),
            render::crlf(t.as_bytes()),
        ),
        None => (c.content_type.clone(), c.bytes.clone()),
    };
    let wanted = d
        .encoding
        .as_deref()
        .and_then(render::Encoding::parse)
        .unwrap_or(if is_text {
            render::Encoding::QuotedPrintable
        } else {
            render::Encoding::Base64
        });
    let wanted = if is_text {
        wanted
    } else {
        render::Encoding::Base64
    };
    let wanted = if wanted == render::Encoding::EightBit && !caps.eightbitmime {
        render::Encoding::QuotedPrintable
    } else {
        wanted
    };
    let (enc, body) = render::body(&bytes, wanted);
    out.push_str("MIME-Version: 1.0\r\n");
    out.push_str(&render::header("Content-Type", &ctype, false).map_err(|e| {
        tracing::info!("CPM to mail: {e}");
        SipAnswer::new(400, "Bad Request")
    })?);
    out.push_str(&format!(
        "Content-Transfer-Encoding: {}\r\n\r\n",
        enc.as_str()
    ));
    let mut message = out.into_bytes();
    message.extend_from_slice(&body);
    let message_id = d
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("Message-ID"))
        .map(|(_, v)| v.trim().trim_matches(['<', '>']).to_string());
    let envelope_from = d.envelope_from.clone().unwrap_or_default();
    let rcpt_utf8 = !target.is_ascii() || !envelope_from.is_ascii();
    Ok(MailPlan {
        envelope: Envelope {
            mail_from: envelope_from,
            rcpt: target,
            eight_bit: enc == render::Encoding::EightBit,
            smtputf8: needs_utf8 || rcpt_utf8,
            envid: Some(token.to_string()),
            notify: d.notify.clone(),
            by: None,
        },
        message,
        message_id,
        conversation,
    })
}

/// Maps the smarthost's outcome to the SIP final response.
pub fn respond(
    rules: &RuleSet,
    outcome: &crate::smtp_client::SmtpOutcome,
    target: Option<&str>,
    now: DateTime<Utc>,
    explain: Option<&mut Vec<Fired>>,
) -> SipAnswer {
    complete(
        phases::map_response(rules, outcome, target, now, explain),
        rules,
    )
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
