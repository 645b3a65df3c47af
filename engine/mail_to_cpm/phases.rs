//! The mapper: runs the rule phases over one mail and turns their decisions into
//! deliveries and replies. Every decision is a rule's; this module only assembles what
//! the rules chose (CPIM document, RFC 5365 list, multipart body) and applies fail-safe
//! defaults when no rule decided (a temporary failure, so nothing is lost).
//!
//! ```text
//! RCPT TO ──address──► uri ──recipient──► accept(uri) | reject(reply)
//! DATA ──parse──► MailFacts ──message (per recipient)──► Delivery | reject(reply)
//! SIP outcome ──response──► reply | retry(large|text)
//! replies of all recipients ──transaction──► one DATA reply (+ DSN)
//! ```

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::facts;
pub use super::facts::{Facts, MailFacts};
use crate::dsl::{Input, Value};
use crate::ids::Ids;
use crate::mail_to_cpm::mail::{Mail, MailError};
use crate::mail_to_cpm::outcome::Outcome;
use crate::mail_to_cpm::plan::{Content, Delivery, Mode, RecipientList, RetryForm, Stamp};
use crate::render::{cpim, resource_lists, sip};
use crate::ruleset::RuleSet;
use crate::ruleset::run;
pub use crate::ruleset::run::{ActionError, Fault, Fired, RunError};
use crate::ruleset::schema::{Action, F, FIELD_FNS, FIELDS, Fn};
use crate::smtp::envelope::{Envelope, Rcpt};
use crate::smtp::reply::Reply;

fn field_of(slot: u16) -> Option<F> {
    FIELDS.get(slot as usize).map(|f| f.1)
}
fn fn_of(slot: u16) -> Option<Fn> {
    FIELD_FNS.get(slot as usize).map(|f| f.1)
}

/// Text of a value as a list of words (a list, or a comma-separated string).
fn words(v: &Value) -> Vec<String> {
    match v {
        Value::List(items) => items
            .iter()
            .filter(|i| !i.is_null())
            .map(|i| i.to_string().trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        Value::Null => Vec::new(),
        other => other
            .to_string()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
    }
}

/// A reply a rule rendered. The rule's own text was checked when it loaded, so a control
/// character here came in through a value of the mail (or of a peer): that is the mail's
/// fault, a permanent refusal (`554 5.6.0`), not a local error the sender should retry.
fn reply_of(v: &Value) -> Result<Reply, ActionError> {
    let text = v.to_string();
    Reply::parse(&text).map_err(|e| match e {
        crate::smtp::reply::ReplyError::ControlCharacter => ActionError::Content(
            "a value of the message would put a control character into the reply".into(),
        ),
        _ => ActionError::unexpected("an SMTP reply", "`NNN x.y.z text`", &text),
    })
}

// ---------------------------------------------------------------------------------------
// address phase

struct AddressState<'a> {
    address: &'a str,
    name: Option<&'a str>,
    role: &'a str,
    now: i64,
    uri: Option<String>,
    /// `addr.address`, `addr.local`, `addr.domain`, made once: every rule reads them.
    parts: [std::cell::OnceCell<Value>; 3],
}

impl Input for AddressState<'_> {
    fn field(&self, slot: u16) -> Value {
        let part = |i: usize, make: fn(&str) -> Value| {
            self.parts[i].get_or_init(|| make(self.address)).clone()
        };
        match field_of(slot) {
            Some(F::AddrAddress) => part(0, |a| Value::str(a)),
            Some(F::AddrLocal) => part(1, |a| Value::str(facts::split(a).0)),
            Some(F::AddrDomain) => part(2, |a| Value::str(facts::split(a).1.to_ascii_lowercase())),
            Some(F::AddrName) => Value::opt_str(self.name),
            Some(F::AddrRole) => Value::str(self.role),
            Some(F::Now) => Value::Int(self.now),
            _ => Value::Null,
        }
    }
    fn field_fn(&self, _: u16, _: &str) -> Value {
        Value::Null
    }
}

impl run::PhaseState for AddressState<'_> {
    fn apply(&mut self, action: Action, _: Option<&str>, value: Value) -> Result<(), ActionError> {
        if action == Action::Uri && !value.is_null() {
            self.uri = Some(value.to_string());
        }
        Ok(())
    }
    fn done(&self) -> bool {
        self.uri.is_some()
    }
}

/// Maps an e-mail address to a URI with the address phase.
pub fn address_uri(
    rules: &RuleSet,
    address: &str,
    name: Option<&str>,
    role: &str,
    now: DateTime<Utc>,
    explain: Option<&mut Vec<Fired>>,
) -> Result<Option<String>, RunError> {
    let mut st = AddressState {
        address,
        name,
        role,
        now: now.timestamp(),
        uri: None,
        parts: Default::default(),
    };
    run::run(
        "address",
        rules.rules("address"),
        &mut st,
        rules.step_limit,
        explain,
    )?;
    Ok(st.uri)
}

// ---------------------------------------------------------------------------------------
// recipient phase

/// The RCPT-time decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum RcptDecision {
    Accept {
        uri: String,
    },
    /// Not a CPM recipient: the mail is relayed as it is to this mail address through the
    /// smarthost (the `mailbox` action; postmaster, RFC 5321 §4.5.1).
    Mailbox {
        address: String,
    },
    /// iwf's own report address (`b+<token>`, the `report_token` action): the mail is a
    /// DSN/MDN for the message of that token (engine/reports).
    Report {
        token: String,
    },
    Reject(Reply),
}

struct RecipientState<'a, 'x> {
    facts: Facts<'a, 'x>,
    uri: Option<String>,
    mailbox: Option<String>,
    report: Option<String>,
    reject: Option<Reply>,
}

impl Input for RecipientState<'_, '_> {
    fn field(&self, slot: u16) -> Value {
        field_of(slot)
            .map(|f| self.facts.field(f))
            .unwrap_or_default()
    }
    fn field_fn(&self, _: u16, _: &str) -> Value {
        Value::Null
    }
}

impl run::PhaseState for RecipientState<'_, '_> {
    fn apply(&mut self, action: Action, _: Option<&str>, value: Value) -> Result<(), ActionError> {
        match action {
            Action::Uri if !value.is_null() => self.uri = Some(value.to_string()),
            Action::Reject => self.reject = Some(reply_of(&value)?),
            Action::Mailbox if !value.is_null() => {
                let address = value.to_string();
                if !crate::smtp::envelope::is_mailbox(&address) {
                    return Err(ActionError::unexpected(
                        "`mailbox`",
                        "a mail address",
                        &address,
                    ));
                }
                self.mailbox = Some(address);
            }
            Action::ReportToken if !value.is_null() => {
                let token = value.to_string();
                if token.is_empty()
                    || token.len() > 64
                    || !token
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    return Err(ActionError::unexpected(
                        "`report_token`",
                        "1-64 letters, digits, - or _",
                        &token,
                    ));
                }
                self.report = Some(token);
            }
            _ => {}
        }
        Ok(())
    }
    fn done(&self) -> bool {
        self.reject.is_some()
            || self.uri.is_some()
            || self.mailbox.is_some()
            || self.report.is_some()
    }
}

/// Decides one RCPT TO: the address phase proposes a URI, the recipient phase accepts or
/// rejects. With no decision the recipient is refused (550 5.1.1).
pub fn resolve_recipient(
    rules: &RuleSet,
    envelope: &Envelope,
    rcpt: &Rcpt,
    now: DateTime<Utc>,
    mut explain: Option<&mut Vec<Fired>>,
) -> RcptDecision {
    let proposed = match address_uri(
        rules,
        &rcpt.address,
        None,
        "rcpt",
        now,
        explain.as_deref_mut(),
    ) {
        Ok(u) => u,
        Err(e) => return RcptDecision::Reject(rule_failure(&e)),
    };
    let mut st = RecipientState {
        facts: Facts {
            envelope,
            rcpt: Some(rcpt),
            rcpt_uri: proposed.as_deref(),
            mail: None,
            now,
        },
        uri: None,
        mailbox: None,
        report: None,
        reject: None,
    };
    if let Err(e) = run::run(
        "recipient",
        rules.rules("recipient"),
        &mut st,
        rules.step_limit,
        explain,
    ) {
        return RcptDecision::Reject(rule_failure(&e));
    }
    if st.reject.is_none()
        && let Some(token) = st.report
    {
        return RcptDecision::Report { token };
    }
    match (st.reject, st.uri, st.mailbox) {
        (Some(r), _, _) => RcptDecision::Reject(r),
        (None, Some(uri), _) => RcptDecision::Accept { uri },
        (None, None, Some(address)) => RcptDecision::Mailbox { address },
        (None, None, None) => {
            RcptDecision::Reject(crate::smtp::replies::no_rule_accepted(&rcpt.address))
        }
    }
}

/// A rule failed at run time (step limit, overflow): a temporary local error, logged.
fn rule_failure(e: &RunError) -> Reply {
    if e.fault == Fault::Content {
        crate::ops::metrics::rule_failed(&e.rule, "content");
        tracing::info!(rule = %e.rule, at = %e.at, "mail refused: {}", e.message);
        return crate::smtp::replies::content_refused(&e.message);
    }
    crate::ops::metrics::rule_failed(&e.rule, "local");
    tracing::error!(rule = %e.rule, at = %e.at, "rule evaluation failed: {}", e.message);
    crate::smtp::replies::rule_error(&e.rule)
}

// ---------------------------------------------------------------------------------------
// message phase

/// What the message phase decided so far for one recipient.
#[derive(Debug, Clone)]
pub struct Draft {
    pub request_uri: String,
    pub headers: Vec<(String, String)>,
    pub cpim: Vec<(String, String)>,
    pub mode: Mode,
    pub imdn: Vec<String>,
    pub cpim_body: bool,
    pub text: Option<crate::dsl::Str>,
    pub recipient_list: RecipientList,
    pub exploder: Option<String>,
    pub reject: Option<Reply>,
}

struct MessageState<'a, 'x> {
    facts: Facts<'a, 'x>,
    /// What the peer memory knows of the peer behind this recipient's URI.
    peer: crate::mail_to_cpm::peer_memory::Caps,
    rules: &'a RuleSet,
    draft: Draft,
    /// RFC 5365 history entries (To/Cc mapped by the address phase), computed once per mail.
    history: &'a [resource_lists::Entry],
}

impl Input for MessageState<'_, '_> {
    fn field(&self, slot: u16) -> Value {
        let Some(f) = field_of(slot) else {
            return Value::Null;
        };
        let d = &self.draft;
        match f {
            F::RequestSize => Value::Int(self.request_size() as i64),
            F::PlanMode => Value::str(d.mode.as_str()),
            F::PlanImdn => Value::list_of_str(d.imdn.iter().map(String::as_str)),
            F::PlanRequestUri => Value::str(d.request_uri.as_str()),
            F::PlanBody => Value::str(if d.cpim_body { "cpim" } else { "text" }),
            F::PlanRecipientList => Value::str(d.recipient_list.as_str()),
            F::PeerAcceptsCpim => Value::Bool(self.peer.accepts_cpim),
            F::PeerAcceptsMsrp => Value::Bool(self.peer.accepts_msrp),
            F::PeerMaxBytes => self
                .peer
                .max_bytes
                .map_or(Value::Null, |n| Value::Int(n.min(i64::MAX as u64) as i64)),
            other => self.facts.field(other),
        }
    }
    fn field_fn(&self, slot: u16, arg: &str) -> Value {
        match fn_of(slot) {
            Some(Fn::PlanHeader) => Value::opt_str(
                self.draft
                    .headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(arg))
                    .map(|(_, v)| v.as_str()),
            ),
            Some(f) => self.facts.field_fn(f, arg),
            None => Value::Null,
        }
    }
}

impl run::PhaseState for MessageState<'_, '_> {
    fn apply(
        &mut self,
        action: Action,
        header: Option<&str>,
        value: Value,
    ) -> Result<(), ActionError> {
        let d = &mut self.draft;
        // The value's text: a string as it is (no formatting machinery, no copy until one
        // is kept), anything else as it interpolates.
        let word = || -> std::borrow::Cow<'_, str> {
            match &value {
                Value::Str(s) => std::borrow::Cow::Borrowed(&**s),
                other => std::borrow::Cow::Owned(other.to_string()),
            }
        };
        let text = || word().into_owned();
        match action {
            Action::SetHeader | Action::AppendHeader | Action::CpimHeader => {
                let name = header.unwrap_or_default();
                if value.is_null() {
                    return Ok(());
                }
                let v = word();
                crate::render::encoder::check_value(name, &v)
                    .map_err(|e| ActionError::Content(e.to_string()))?;
                let v = v.into_owned();
                let list = if action == Action::CpimHeader {
                    &mut d.cpim
                } else {
                    &mut d.headers
                };
                if action != Action::AppendHeader {
                    list.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
                }
                list.push((name.to_string(), v));
            }
            Action::Mode => {
                let w = word();
                d.mode = Mode::parse(&w)
                    .ok_or_else(|| ActionError::unexpected("mode", "pager or large", &w))?;
            }
            Action::RequestUri if !value.is_null() => d.request_uri = text(),
            Action::Imdn => {
                let w = words(&value);
                if w.iter().any(|x| x == "none") {
                    d.imdn.clear();
                    return Ok(());
                }
                for w in w {
                    if !d.imdn.contains(&w) {
                        d.imdn.push(w);
                    }
                }
            }
            Action::Body => {
                d.cpim_body = match &*word() {
                    "cpim" => true,
                    "text" => false,
                    other => return Err(ActionError::unexpected("body", "text or cpim", other)),
                }
            }
            // A text taken whole from a field (`${mail.text}`) shares its buffer.
            Action::Text => {
                d.text = match value {
                    Value::Null => None,
                    Value::Str(s) => Some(s),
                    other => Some(other.to_string().into()),
                }
            }
            Action::RecipientList => {
                let w = word();
                d.recipient_list = RecipientList::parse(&w).ok_or_else(|| {
                    ActionError::unexpected("recipient_list", "none, history or exploder", &w)
                })?;
            }
            Action::Exploder => d.exploder = (!value.is_null()).then(text),
            Action::Reject => d.reject = Some(reply_of(&value)?),
            _ => {}
        }
        Ok(())
    }
    fn remove_headers(&mut self, names: &[String]) {
        self.draft
            .headers
            .retain(|(n, _)| !names.iter().any(|r| r.eq_ignore_ascii_case(n)));
    }
    fn done(&self) -> bool {
        self.draft.reject.is_some()
    }
}

/// A stamp with realistic lengths, for measuring `request.size` before sending.
fn sizing_stamp() -> Stamp {
    Stamp {
        transport: "TCP".into(),
        sent_by: "iwf.example.net:5060".into(),
        branch: "z9hG4bK0000000000000000".into(),
        call_id: "00000000000000000000000000000000@iwf.example.net".into(),
        from_tag: "0000000000000000".into(),
        cseq: 1,
    }
}

/// [`sizing_stamp`], made once.
static SIZING_STAMP: std::sync::LazyLock<Stamp> = std::sync::LazyLock::new(sizing_stamp);

/// The `imdn.Message-ID` the sizing build gets (the first token of a fresh
/// [`SequentialIds`](crate::ids::SequentialIds); every token has this length).
const SIZING_IMDN_ID: &str = "t000000000000001";

impl MessageState<'_, '_> {
    fn request_size(&self) -> usize {
        match self.pager_request_size() {
            Some(Ok(n)) => n,
            Some(Err(())) => usize::MAX >> 1,
            None => self.built_request_size(),
        }
    }

    /// `request.size` of a pager request without a recipient list (the common case), from
    /// the lengths of its parts: the rule headers, the CPIM headers and the text, none of
    /// them copied. `None` when the request has a list body or is in large mode: those are
    /// measured by building them ([`Self::built_request_size`]).
    fn pager_request_size(&self) -> Option<Result<usize, ()>> {
        let d = &self.draft;
        let list = match d.recipient_list {
            RecipientList::History => self.history.iter().any(|e| e.uri != d.request_uri),
            RecipientList::Exploder => true,
            RecipientList::None => false,
        };
        if d.mode != Mode::Pager || list {
            return None;
        }
        let text_len = d.text.as_deref().map_or(0, str::len);
        let imdn = (!d.imdn.is_empty()).then_some((SIZING_IMDN_ID, d.imdn.as_slice()));
        let (content_type, body_len) = if d.cpim_body || imdn.is_some() {
            let doc = cpim::Cpim {
                headers: &d.cpim,
                imdn,
                inner: &[cpim::TEXT_ENTITY_HEAD],
            };
            match doc.encoded_len() {
                Ok(n) => ("message/cpim", n + text_len),
                Err(_) => return Some(Err(())),
            }
        } else {
            ("text/plain;charset=UTF-8", text_len)
        };
        Some(
            sip::message_len_of(
                &d.request_uri,
                &d.headers,
                content_type,
                body_len,
                &SIZING_STAMP,
            )
            .map_err(|_| ()),
        )
    }

    fn built_request_size(&self) -> usize {
        let ids = crate::ids::SequentialIds::new();
        // The pager text goes into the body verbatim (text/plain, CPIM, multipart), so it
        // is measured by its length instead of copied twice into a throw-away body.
        let text_len = match self.draft.mode {
            Mode::Pager => self.draft.text.as_deref().map_or(0, str::len),
            Mode::Large => 0,
        };
        match build_delivery_sized(
            self.rules,
            &self.facts,
            &self.draft,
            self.history,
            &ids,
            text_len > 0,
        ) {
            Ok(d) => {
                sip::message_len_plus(&d, &sizing_stamp(), text_len).unwrap_or(usize::MAX >> 1)
            }
            Err(_) => usize::MAX >> 1,
        }
    }
}

/// Why the delivery a draft describes cannot be assembled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// A CPIM header value the mail supplied cannot be encoded.
    #[error("{0}")]
    Cpim(#[from] crate::render::encoder::EncodeError),
    #[error("recipient_list: exploder needs an `exploder:` URI")]
    NoExploder,
    /// The address phase failed while listing the exploder's recipients.
    #[error("{0}")]
    Rule(#[from] RunError),
}

/// Assembles the delivery the draft describes (the mechanism part of the message phase).
fn build_delivery(
    rules: &RuleSet,
    facts: &Facts,
    d: &Draft,
    history: &[resource_lists::Entry],
    ids: &dyn Ids,
) -> Result<Delivery, BuildError> {
    build_delivery_sized(rules, facts, d, history, ids, false)
}

/// [`build_delivery`]; with `without_text`, a pager body leaves the draft's text out
/// (for measuring: its length is added by the caller).
fn build_delivery_sized(
    rules: &RuleSet,
    facts: &Facts,
    d: &Draft,
    history: &[resource_lists::Entry],
    ids: &dyn Ids,
    without_text: bool,
) -> Result<Delivery, BuildError> {
    let text = if without_text {
        ""
    } else {
        d.text.as_deref().unwrap_or("")
    };
    let recipient = facts.rcpt.map(|r| r.address.clone()).unwrap_or_default();
    let imdn_id = (!d.imdn.is_empty()).then(|| ids.token());
    // The inner body is shared: in large mode a slice of the received mail, never copied.
    let (inner_head, inner_body, cpim_needed): (Vec<u8>, Bytes, bool) = match (d.mode, facts.mail) {
        (Mode::Large, Some(m)) => {
            let (head, body) = m.mail.mime_entity_shared();
            (head, body, true)
        }
        (Mode::Large, None) => (cpim::text_entity(""), Bytes::new(), true),
        (Mode::Pager, _) => (
            cpim::TEXT_ENTITY_HEAD.to_vec(),
            Bytes::copy_from_slice(text.as_bytes()),
            d.cpim_body || imdn_id.is_some(),
        ),
    };
    // Large mode carries message/cpim alone (the SDP accept-types), so a history list goes
    // into the CPIM document's own recipient headers: one `To` per to-entry, one `cc` per
    // cc-entry (RFC 3862 §3.3-3.4 allow them repeated; MSRP UAs SHOULD read cc) instead of
    // an RFC 5365 body part. The list never vanishes with the mode.
    let large_history = d.mode == Mode::Large
        && d.recipient_list == RecipientList::History
        && history.iter().any(|e| e.uri != d.request_uri);
    let cpim_headers: std::borrow::Cow<'_, [(String, String)]> = if large_history {
        let mut h: Vec<(String, String)> = d
            .cpim
            .iter()
            .filter(|(n, _)| !n.eq_ignore_ascii_case("To") && !n.eq_ignore_ascii_case("cc"))
            .cloned()
            .collect();
        let at = h
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case("From"))
            .map_or(0, |i| i + 1);
        let entries = history.iter().rev();
        for e in entries {
            let name = if e.copy_control == "cc" { "cc" } else { "To" };
            h.insert(at, (name.to_string(), format!("<{}>", e.uri)));
        }
        std::borrow::Cow::Owned(h)
    } else {
        std::borrow::Cow::Borrowed(&d.cpim)
    };
    let (content_type, body) = if cpim_needed {
        let doc = cpim::Cpim {
            headers: &cpim_headers,
            imdn: imdn_id.as_deref().map(|id| (id, d.imdn.as_slice())),
            inner: &[&inner_head],
        }
        .render_with_tail(inner_body.clone())?;
        ("message/cpim".to_string(), doc)
    } else {
        (
            "text/plain;charset=UTF-8".to_string(),
            inner_body.clone().into(),
        )
    };
    let mut headers = d.headers.clone();
    let mut request_uri = d.request_uri.clone();
    let list: Option<(Vec<resource_lists::Entry>, &str)> = match d.recipient_list {
        RecipientList::History => {
            // No list when To+Cc name only this recipient (CR Table 2).
            let others = history.iter().any(|e| e.uri != d.request_uri);
            (others && d.mode == Mode::Pager).then(|| {
                (
                    history.to_vec(),
                    "recipient-list-history; handling=optional",
                )
            })
        }
        RecipientList::Exploder => {
            let exploder = d.exploder.clone().ok_or(BuildError::NoExploder)?;
            // RFC 5365 §5: the request goes to the exploder, addressed to it.
            headers.retain(|(n, _)| !n.eq_ignore_ascii_case("To"));
            headers.push(("To".into(), format!("<{exploder}>")));
            request_uri = exploder;
            headers.push(("Require".into(), "recipient-list-message".into()));
            let entries = exploder_entries(rules, facts)?;
            Some((entries, "recipient-list"))
        }
        RecipientList::None => None,
    };
    let content = match list {
        Some((entries, disposition)) if d.mode == Mode::Pager => {
            let xml = resource_lists::render(&entries);
            let boundary = format!("iwf-{}", ids.token());
            let (ct, body) = resource_lists::multipart(
                &[
                    (vec![("Content-Type".into(), content_type)], body.to_vec()),
                    (
                        vec![
                            (
                                "Content-Type".into(),
                                "application/resource-lists+xml".into(),
                            ),
                            ("Content-Disposition".into(), disposition.into()),
                        ],
                        xml.into_bytes(),
                    ),
                ],
                &boundary,
            );
            Content {
                content_type: ct,
                body: body.into(),
            }
        }
        _ => Content { content_type, body },
    };
    Ok(Delivery {
        recipient,
        mode: d.mode,
        request_uri,
        headers,
        content,
        cpim_inner: cpim_needed.then_some(inner_body),
        imdn_dispositions: if imdn_id.is_some() {
            d.imdn.clone()
        } else {
            Vec::new()
        },
        imdn_message_id: imdn_id,
        success_report: facts.rcpt.is_some_and(|r| r.notify.contains(&"SUCCESS")),
    })
}

/// Exploder list: every envelope recipient, copyControl from where the mail names it.
fn exploder_entries(
    rules: &RuleSet,
    facts: &Facts,
) -> Result<Vec<resource_lists::Entry>, RunError> {
    let mut out = Vec::new();
    for r in &facts.envelope.rcpts {
        let role = match facts.mail {
            Some(m)
                if m.to()
                    .iter()
                    .any(|b| b.address.eq_ignore_ascii_case(&r.address)) =>
            {
                "to"
            }
            Some(m)
                if m.cc()
                    .iter()
                    .any(|b| b.address.eq_ignore_ascii_case(&r.address)) =>
            {
                "cc"
            }
            _ => "bcc",
        };
        if let Some(uri) = address_uri(rules, &r.address, None, "rcpt", facts.now, None)? {
            out.push(resource_lists::Entry {
                uri,
                copy_control: role,
            });
        }
    }
    Ok(out)
}

/// The RFC 5365 history list: To then Cc mailboxes of the mail, mapped by the address phase.
/// Bcc and envelope-only recipients are never listed (RFC 4356 §2.1.3.3).
fn history_entries(
    rules: &RuleSet,
    mail: &MailFacts,
    now: DateTime<Utc>,
) -> Result<Vec<resource_lists::Entry>, RunError> {
    let mut out: Vec<resource_lists::Entry> = Vec::new();
    for (boxes, role) in [(mail.to(), "to"), (mail.cc(), "cc")] {
        for b in boxes {
            if let Some(uri) = address_uri(rules, &b.address, b.name.as_deref(), role, now, None)?
                && !out.iter().any(|e| e.uri == uri)
            {
                out.push(resource_lists::Entry {
                    uri,
                    copy_control: role,
                });
            }
        }
    }
    Ok(out)
}

/// What the message phase decided for one accepted recipient.
#[derive(Debug, Clone)]
pub enum Planned {
    Deliver(Delivery),
    /// Covered by the exploder delivery planned for the accepted recipient at this index:
    /// it shares that delivery's outcome.
    Covered(usize),
    /// Refused by the message phase (or because the mail cannot be mapped).
    Refused(Reply),
}

/// The result of mapping one mail: one [`Planned`] per accepted recipient, in order.
#[derive(Debug, Clone, Default)]
pub struct MailPlan {
    pub planned: Vec<Planned>,
    pub explain: Vec<Fired>,
    /// What a later report needs of the mail (none when it did not parse, or when no
    /// request asks for IMDN).
    pub about: Option<MailSummary>,
}

/// The mail's facts a report record keeps, taken from the plan's one parse.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailSummary {
    pub message_id: Option<String>,
    pub subject: Option<String>,
    /// The first Disposition-Notification-To address.
    pub dnt: Option<String>,
}

/// Maps a mail for its accepted recipients: `accepted` pairs each RCPT with the URI the
/// recipient phase chose.
// The inputs are the plan's whole world (no ambient state): bundling them would only
// rename the list.
#[allow(clippy::too_many_arguments)]
pub fn plan_mail(
    rules: &RuleSet,
    envelope: &Envelope,
    accepted: &[(Rcpt, String)],
    mail: Result<Mail<'_>, MailError>,
    ids: &dyn Ids,
    peers: &dyn crate::mail_to_cpm::peer_memory::PeerCaps,
    now: DateTime<Utc>,
    explain: bool,
) -> MailPlan {
    let mut plan = MailPlan::default();
    let mail = match mail {
        Ok(m) => MailFacts::new(m),
        Err(e) => {
            let reply = crate::smtp::replies::unparsable_message(&e);
            plan.planned = vec![Planned::Refused(reply); accepted.len()];
            return plan;
        }
    };
    let mut fired = explain.then(Vec::new);
    let mut mail = mail;
    let author = mail
        .from()
        .first()
        .map(|b| (b.address.clone(), b.name.clone()))
        .or_else(|| {
            (!envelope.mail_from.address.is_empty())
                .then(|| (envelope.mail_from.address.clone(), None))
        });
    if let Some((addr, name)) = author {
        match address_uri(rules, &addr, name.as_deref(), "from", now, fired.as_mut()) {
            Ok(u) => mail.from_uri = u,
            Err(e) => {
                plan.planned = vec![Planned::Refused(rule_failure(&e)); accepted.len()];
                return plan;
            }
        }
    }
    let history = match history_entries(rules, &mail, now) {
        Ok(h) => h,
        Err(e) => {
            plan.planned = vec![Planned::Refused(rule_failure(&e)); accepted.len()];
            return plan;
        }
    };
    let mut exploder_index: Option<usize> = None;
    for (rcpt, uri) in accepted {
        let mut st = MessageState {
            facts: Facts {
                envelope,
                rcpt: Some(rcpt),
                rcpt_uri: Some(uri),
                mail: Some(&mail),
                now,
            },
            peer: peers.caps(uri),
            rules,
            draft: Draft {
                request_uri: uri.clone(),
                headers: Vec::new(),
                cpim: Vec::new(),
                mode: Mode::Pager,
                imdn: Vec::new(),
                cpim_body: false,
                text: None,
                recipient_list: RecipientList::None,
                exploder: None,
                reject: None,
            },
            history: &history,
        };
        let planned = if let Err(e) = run::run(
            "message",
            rules.rules("message"),
            &mut st,
            rules.step_limit,
            fired.as_mut(),
        ) {
            Planned::Refused(rule_failure(&e))
        } else if let Some(r) = st.draft.reject.take() {
            Planned::Refused(r)
        } else if st.draft.recipient_list == RecipientList::Exploder
            && let Some(i) = exploder_index
        {
            Planned::Covered(i)
        } else {
            match build_delivery(rules, &st.facts, &st.draft, &history, ids) {
                Ok(d) => {
                    if st.draft.recipient_list == RecipientList::Exploder {
                        exploder_index = Some(plan.planned.len());
                    }
                    Planned::Deliver(d)
                }
                Err(e) => {
                    tracing::error!(recipient = %rcpt.address, "cannot build the request: {e}");
                    Planned::Refused(crate::smtp::replies::unconvertible(&rcpt.address, &e))
                }
            }
        };
        plan.planned.push(planned);
    }
    plan.explain = fired.unwrap_or_default();
    // Only a request that asks for IMDN gets a report record: the summary is made for
    // those alone (Disposition-Notification-To is parsed when a rule or this reads it).
    let reported = plan
        .planned
        .iter()
        .any(|p| matches!(p, Planned::Deliver(d) if d.imdn_message_id.is_some()));
    if reported {
        plan.about = Some(MailSummary {
            message_id: mail.mail.message_id(),
            subject: mail.subject().map(str::to_string),
            dnt: mail.dnt().first().map(|b| b.address.clone()),
        });
    }
    plan
}

// ---------------------------------------------------------------------------------------
// response phase

/// What to do after an outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum ResponseDecision {
    Reply(Reply),
    /// Retry once in another form.
    Retry(RetryForm),
}

/// What the response phase noted besides its decision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseNotes {
    /// `learn:` — what the refusal says of the peer (`no-cpim`, `no-msrp`, `too-big`).
    pub learn: Option<String>,
    /// `report: relayed` — a success DSN with Action: relayed is owed.
    pub relayed: bool,
}

struct ResponseState<'a, 'x> {
    facts: Facts<'a, 'x>,
    outcome: &'a Outcome,
    cpim_body: bool,
    retried: &'a [RetryForm],
    imdn_requested: bool,
    reply: Option<Reply>,
    retry: Option<RetryForm>,
    notes: ResponseNotes,
}

impl Input for ResponseState<'_, '_> {
    fn field(&self, slot: u16) -> Value {
        let Some(f) = field_of(slot) else {
            return Value::Null;
        };
        match (f, self.outcome) {
            (F::SipStatus, Outcome::Final { status, .. }) => Value::Int(*status as i64),
            (F::SipReason, Outcome::Final { reason, .. }) => Value::str(reason.as_str()),
            (F::SipProtocol, Outcome::Final { protocol, .. }) => Value::str(match protocol {
                crate::mail_to_cpm::outcome::Layer::Sip => "sip",
                crate::mail_to_cpm::outcome::Layer::Msrp => "msrp",
            }),
            (F::Failure, Outcome::Failure { kind, .. }) => Value::str(kind.as_str()),
            (F::FailureDetail, Outcome::Failure { detail, .. }) => Value::str(detail.as_str()),
            (F::SipStatus | F::SipReason | F::SipProtocol | F::Failure | F::FailureDetail, _) => {
                Value::Null
            }
            (F::Mode | F::PlanMode, o) => Value::str(o.mode().as_str()),
            (F::PlanBody, _) => Value::str(if self.cpim_body { "cpim" } else { "text" }),
            (F::Retried, _) => Value::list_of_str(self.retried.iter().map(|r| r.as_str())),
            (F::PlanImdnRequested, _) => Value::Bool(self.imdn_requested),
            (other, _) => self.facts.field(other),
        }
    }
    fn field_fn(&self, slot: u16, arg: &str) -> Value {
        match (fn_of(slot), self.outcome) {
            (Some(Fn::SipHeader), Outcome::Final { headers, .. }) => Value::opt_str(
                headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(arg))
                    .map(|(_, v)| v.as_str()),
            ),
            (Some(f), _) => self.facts.field_fn(f, arg),
            _ => Value::Null,
        }
    }
}

impl run::PhaseState for ResponseState<'_, '_> {
    fn apply(&mut self, action: Action, _: Option<&str>, value: Value) -> Result<(), ActionError> {
        match action {
            Action::Reply => self.reply = Some(reply_of(&value)?),
            Action::Retry => {
                let w = value.to_string();
                let r = RetryForm::parse(&w)
                    .ok_or_else(|| ActionError::unexpected("retry", "large, text or pager", &w))?;
                if !self.retried.contains(&r) {
                    self.retry = Some(r);
                }
            }
            Action::Learn => self.notes.learn = Some(value.to_string()),
            Action::Report => self.notes.relayed = value.to_string() == "relayed",
            _ => {}
        }
        Ok(())
    }
    fn done(&self) -> bool {
        self.reply.is_some() || self.retry.is_some()
    }
}

/// What the response phase looks at for one recipient.
pub struct ResponseInput<'a> {
    pub envelope: &'a Envelope,
    pub rcpt: &'a Rcpt,
    /// The Request-URI the delivery used.
    pub uri: Option<&'a str>,
    pub outcome: &'a Outcome,
    /// Whether the body was a CPIM document.
    pub cpim_body: bool,
    /// Retries already made (a retry is offered at most once per kind).
    pub retried: &'a [RetryForm],
    /// Whether the request that got this outcome asked for an IMDN.
    pub imdn_requested: bool,
    pub now: DateTime<Utc>,
}

/// Maps a delivery's outcome for one recipient. With no decision: `451 4.3.0`.
pub fn respond(
    rules: &RuleSet,
    input: &ResponseInput,
    explain: Option<&mut Vec<Fired>>,
) -> ResponseDecision {
    respond_noting(rules, input, explain).0
}

/// [`respond`], with what the rules noted besides the decision (`learn:`, `report:`).
pub fn respond_noting(
    rules: &RuleSet,
    input: &ResponseInput,
    explain: Option<&mut Vec<Fired>>,
) -> (ResponseDecision, ResponseNotes) {
    let ResponseInput {
        envelope,
        rcpt,
        uri,
        outcome,
        cpim_body,
        retried,
        imdn_requested,
        now,
    } = *input;
    let mut st = ResponseState {
        facts: Facts {
            envelope,
            rcpt: Some(rcpt),
            rcpt_uri: uri,
            mail: None,
            now,
        },
        outcome,
        cpim_body,
        retried,
        imdn_requested,
        reply: None,
        retry: None,
        notes: ResponseNotes::default(),
    };
    if let Err(e) = run::run(
        "response",
        rules.rules("response"),
        &mut st,
        rules.step_limit,
        explain,
    ) {
        return (
            ResponseDecision::Reply(rule_failure(&e)),
            ResponseNotes::default(),
        );
    }
    let decision = match (st.retry, st.reply) {
        (Some(r), _) => ResponseDecision::Retry(r),
        (None, Some(reply)) => ResponseDecision::Reply(reply),
        (None, None) => {
            ResponseDecision::Reply(crate::smtp::replies::no_response_rule(&rcpt.address))
        }
    };
    (decision, st.notes)
}

// ---------------------------------------------------------------------------------------
// transaction phase

struct TransactionState<'a, 'x> {
    facts: Facts<'a, 'x>,
    replies: &'a [Reply],
    reply: Option<Reply>,
    dsn: bool,
}

impl Input for TransactionState<'_, '_> {
    fn field(&self, slot: u16) -> Value {
        let Some(f) = field_of(slot) else {
            return Value::Null;
        };
        let count =
            |c: u16| Value::Int(self.replies.iter().filter(|r| r.code / 100 == c).count() as i64);
        let first = |c: u16| {
            Value::opt_str(
                self.replies
                    .iter()
                    .find(|r| r.code / 100 == c)
                    .map(|r| r.to_string()),
            )
        };
        let first_code = |c: u16| {
            Value::opt_str(self.replies.iter().find(|r| r.code / 100 == c).map(
                |r| match &r.status {
                    Some(s) => format!("{} {s}", r.code),
                    None => r.code.to_string(),
                },
            ))
        };
        match f {
            F::ResultsTotal => Value::Int(self.replies.len() as i64),
            F::ResultsFirstTemporaryCode => first_code(4),
            F::ResultsFirstPermanentCode => first_code(5),
            F::ResultsDelivered => count(2),
            F::ResultsTemporary => count(4),
            F::ResultsPermanent => count(5),
            F::ResultsFirstTemporary => first(4),
            F::ResultsFirstPermanent => first(5),
            other => self.facts.field(other),
        }
    }
    fn field_fn(&self, _: u16, _: &str) -> Value {
        Value::Null
    }
}

impl run::PhaseState for TransactionState<'_, '_> {
    fn apply(&mut self, action: Action, _: Option<&str>, value: Value) -> Result<(), ActionError> {
        match action {
            Action::Reply => self.reply = Some(reply_of(&value)?),
            Action::Dsn => self.dsn = value.is_true(),
            _ => {}
        }
        Ok(())
    }
    fn done(&self) -> bool {
        self.reply.is_some()
    }
}

/// The one DATA reply of an SMTP transaction from its per-recipient replies, and whether
/// a DSN for the permanent failures is owed. With no decision: the first reply.
pub fn aggregate(
    rules: &RuleSet,
    envelope: &Envelope,
    replies: &[Reply],
    now: DateTime<Utc>,
    explain: Option<&mut Vec<Fired>>,
) -> (Reply, bool) {
    let mut st = TransactionState {
        facts: Facts {
            envelope,
            rcpt: None,
            rcpt_uri: None,
            mail: None,
            now,
        },
        replies,
        reply: None,
        dsn: false,
    };
    if let Err(e) = run::run(
        "transaction",
        rules.rules("transaction"),
        &mut st,
        rules.step_limit,
        explain,
    ) {
        return (rule_failure(&e), false);
    }
    let reply = st
        .reply
        .or_else(|| replies.first().cloned())
        .unwrap_or_else(crate::smtp::replies::no_recipient_left);
    (reply, st.dsn)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5321 §4.5.1: postmaster, unqualified or at a served domain, in any case, is
    /// accepted and relayed to the configured mailbox; at another domain it is a relay try.
    #[test]
    fn postmaster_is_accepted_and_relayed_to_the_mailbox() {
        let rules = crate::ruleset::load(std::path::Path::new("rules"), 1)
            .unwrap_or_else(|d| panic!("{}", crate::ruleset::diag::render_all(&d)));
        let envelope = Envelope {
            mail_from: crate::smtp::envelope::MailFrom::default(),
            rcpts: vec![],
            client: crate::smtp::envelope::Client::default(),
            received_at: crate::ids::fixed_now(),
        };
        let decide = |args: &str| {
            let rcpt = Rcpt::parse(args).unwrap();
            resolve_recipient(&rules, &envelope, &rcpt, crate::ids::fixed_now(), None)
        };
        let mailbox = RcptDecision::Mailbox {
            address: "postmaster@mail.example.org".into(),
        };
        assert_eq!(decide("<postmaster>"), mailbox);
        assert_eq!(decide("<Postmaster>"), mailbox);
        assert_eq!(decide("<POSTMASTER@CPM.example.net>"), mailbox);
        assert!(
            matches!(decide("<postmaster@elsewhere.example>"), RcptDecision::Reject(r) if r.code == 550)
        );
        assert!(matches!(decide("<>"), RcptDecision::Reject(_)));
    }

    /// With several recipients the one SMTP reply speaks for all of them: it must not name
    /// one (an MTA's bounce for bob would cite alice's reason). One recipient: its own reply.
    #[test]
    fn the_transaction_reply_names_no_single_recipient() {
        let rules = crate::ruleset::load(std::path::Path::new("rules"), 1)
            .unwrap_or_else(|d| panic!("{}", crate::ruleset::diag::render_all(&d)));
        let envelope = Envelope {
            mail_from: crate::smtp::envelope::MailFrom::default(),
            rcpts: vec![],
            client: crate::smtp::envelope::Client::default(),
            received_at: crate::ids::fixed_now(),
        };
        let r = |s: &str| Reply::parse(s).unwrap();
        let ok = r("250 2.0.0 <alice@cpm.example.net>: delivered");
        let busy = r("450 4.2.1 <bob@cpm.example.net>: CPM user busy (SIP 486)");
        let unknown = r("550 5.1.1 <carol@cpm.example.net>: CPM user unknown (SIP 404)");
        let unknown2 = r("550 5.1.1 <dave@cpm.example.net>: CPM user unknown (SIP 404)");
        let cases: Vec<(Vec<Reply>, &str)> = vec![
            (
                vec![busy.clone()],
                "450 4.2.1 <bob@cpm.example.net>: CPM user busy (SIP 486)",
            ),
            (
                vec![ok.clone(), busy.clone()],
                "450 4.2.1 1 of 2 CPM recipients failed temporarily, 1 delivered; a retry reaches only the rest",
            ),
            (
                vec![unknown.clone()],
                "550 5.1.1 <carol@cpm.example.net>: CPM user unknown (SIP 404)",
            ),
            (
                vec![unknown, unknown2],
                "550 5.1.1 all 2 CPM recipients refused (first reason: CPM user unknown (SIP 404))",
            ),
        ];
        for (replies, want) in cases {
            let (got, _) = aggregate(&rules, &envelope, &replies, crate::ids::fixed_now(), None);
            assert_eq!(got.to_string(), want);
        }
    }

    /// A control character that the mail's content carries into a reply a rule echoes
    /// (`Sensitivity`, RFC 2047-encoded) is the mail's fault: `554 5.6.0`, never the
    /// `451 4.3.0` "local error" a sender would retry for days.
    #[test]
    fn a_control_character_from_the_mail_in_a_reply_is_permanent() {
        let rules = crate::ruleset::load(std::path::Path::new("rules"), 1)
            .unwrap_or_else(|d| panic!("{}", crate::ruleset::diag::render_all(&d)));
        let ids = crate::ids::SequentialIds::new();
        for value in [
            "=?utf-8?q?private=01x?=",
            "=?utf-8?q?private=0D=0AX-Evil:_1?=",
        ] {
            let mail = format!(
                "From: a@mail.example.org\r\nTo: +15551234567@cpm.example.net\r\nSensitivity: {value}\r\n\r\nhi\r\n"
            );
            let run = crate::mail_to_cpm::dryrun::run(
                &rules,
                mail.as_bytes(),
                &crate::mail_to_cpm::dryrun::Options {
                    mail_from: None,
                    rcpts: vec![],
                    client: Default::default(),
                    now: crate::ids::fixed_now(),
                    elapsed: 0,
                    ids: &ids,
                    explain: false,
                    chunk_size: 2048,
                },
            );
            assert!(run.deliveries.is_empty(), "{value}");
            let reply = &run.rejections[0].reply;
            assert!(reply.starts_with("554 5.6.0"), "{value}: {reply}");
        }
    }

    /// `request.size` measures the pager text by its length: it must equal the length of
    /// the request built with the text, for every body shape the text can go into.
    #[test]
    fn request_size_is_the_size_of_the_built_request() {
        let rules = crate::ruleset::load(std::path::Path::new("rules"), 1)
            .unwrap_or_else(|d| panic!("{}", crate::ruleset::diag::render_all(&d)));
        let rcpt = Rcpt::parse("<alice@cpm.example.net>").unwrap();
        let envelope = Envelope {
            mail_from: crate::smtp::envelope::MailFrom::default(),
            rcpts: vec![rcpt.clone()],
            client: crate::smtp::envelope::Client::default(),
            received_at: crate::ids::fixed_now(),
        };
        let uri = "sip:alice@ims.example.net".to_string();
        let history = [resource_lists::Entry {
            uri: "sip:bob@ims.example.net".into(),
            copy_control: "to",
        }];
        for (cpim_body, imdn, list, text) in [
            (false, false, "", "hello"),
            (true, false, "", "hello"),
            (true, true, "", "h\u{e9}llo w\u{f6}rld\r\nline two"),
            (false, false, "history", "hello"),
            (true, true, "history", &"x".repeat(99_999)[..]),
        ] {
            let st = MessageState {
                peer: Default::default(),
                facts: Facts {
                    envelope: &envelope,
                    rcpt: Some(&rcpt),
                    rcpt_uri: Some(&uri),
                    mail: None,
                    now: crate::ids::fixed_now(),
                },
                rules: &rules,
                draft: Draft {
                    request_uri: uri.clone(),
                    headers: vec![("Subject".into(), "sizes".into())],
                    cpim: vec![("From".into(), "<sip:a@iwf.example.net>".into())],
                    mode: Mode::Pager,
                    imdn: if imdn {
                        vec!["positive-delivery".into()]
                    } else {
                        vec![]
                    },
                    cpim_body,
                    text: Some(text.into()),
                    recipient_list: RecipientList::parse(list).unwrap_or(RecipientList::None),
                    exploder: None,
                    reject: None,
                },
                history: &history,
            };
            let built = build_delivery(
                &rules,
                &st.facts,
                &st.draft,
                &history,
                &crate::ids::SequentialIds::new(),
            )
            .unwrap();
            assert!(built.content.body.len() >= text.len());
            let want = sip::message_len(&built, &sizing_stamp()).unwrap();
            assert_eq!(st.request_size(), want, "{cpim_body} {imdn} {list:?}");
        }
    }
}
