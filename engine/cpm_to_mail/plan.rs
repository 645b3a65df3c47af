//! The plan step of CPM → mail: pure. A SIP MESSAGE (and the smarthost's capabilities,
//! once EHLO told them) becomes the mail and its envelope, or the SIP response that refuses
//! it (phases `cpm_address`, `cpm_message`).

use chrono::{DateTime, Utc};

use super::{Incoming, SipAnswer, ThreadStore, accept, complete, content, phases, render, request};
use crate::dsl::Value;
use crate::ruleset::RuleSet;
use crate::ruleset::run::Fired;
use crate::ruleset::schema::F;
use crate::smtp_client::{Caps, Envelope};

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
