//! The states the three CPM → e-mail phases run on: `cpm_address`, `cpm_message` and
//! `cpm_response` (fields and actions declared in [`crate::ruleset::schema`]).

use std::collections::HashMap;

use crate::dsl::Value;
use crate::dsl::eval::Input;
use crate::ruleset::RuleSet;
use crate::ruleset::run::{self, ActionError, Fired, PhaseState, RunError};
use crate::ruleset::schema::{Action, F, FIELDS, Fn};
use crate::smtp_client::SmtpOutcome;

use super::SipAnswer;
use super::request::uri_parts;

fn field_of(slot: u16) -> Option<F> {
    FIELDS.get(slot as usize).map(|f| f.1)
}

fn answer_of(v: &Value) -> Result<SipAnswer, ActionError> {
    let text = v.to_string();
    SipAnswer::parse(&text).map_err(|_| {
        ActionError::unexpected("`sip_reply`", "a final SIP status line (200-699)", &text)
    })
}

/// Text of a header value an action produced: strings and integers; absent → `None`.
fn header_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::List(items) => Some(
            items
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        ),
        other => Some(other.to_string()),
    }
}

// ---------------------------------------------------------------------------------------
// cpm_address

/// What the `cpm_address` phase decided for one CPM address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressDecision {
    Address(String),
    Refuse(SipAnswer),
    Unmapped,
}

struct AddressState<'a> {
    uri: &'a str,
    scheme: String,
    user: Option<String>,
    host: Option<String>,
    name: Option<&'a str>,
    role: &'a str,
    now: i64,
    address: Option<String>,
    refuse: Option<SipAnswer>,
}

impl Input for AddressState<'_> {
    fn field(&self, slot: u16) -> Value {
        match field_of(slot) {
            Some(F::CpmUri) => Value::str(self.uri),
            Some(F::CpmScheme) => Value::str(self.scheme.as_str()),
            Some(F::CpmUser) => Value::opt_str(self.user.as_deref()),
            Some(F::CpmHost) => Value::opt_str(self.host.as_deref()),
            Some(F::CpmName) => Value::opt_str(self.name),
            Some(F::CpmRole) => Value::str(self.role),
            Some(F::CpmNow) => Value::Int(self.now),
            _ => Value::Null,
        }
    }
    fn field_fn(&self, _: u16, _: &str) -> Value {
        Value::Null
    }
}

impl PhaseState for AddressState<'_> {
    fn apply(&mut self, action: Action, _: Option<&str>, value: Value) -> Result<(), ActionError> {
        match action {
            Action::Address if !value.is_null() => self.address = Some(value.to_string()),
            Action::SipReply => self.refuse = Some(answer_of(&value)?),
            _ => {}
        }
        Ok(())
    }
    fn done(&self) -> bool {
        self.address.is_some() || self.refuse.is_some()
    }
}

/// Maps a CPM address (`role`: target, from, to, cc, bcc) to a mail address.
pub fn map_address(
    rules: &RuleSet,
    uri: &str,
    name: Option<&str>,
    role: &str,
    now: i64,
    explain: Option<&mut Vec<Fired>>,
) -> Result<AddressDecision, RunError> {
    let (scheme, user, host) = uri_parts(uri);
    let mut st = AddressState {
        uri,
        scheme,
        user,
        host,
        name,
        role,
        now,
        address: None,
        refuse: None,
    };
    run::run(
        "cpm_address",
        rules.rules("cpm_address"),
        &mut st,
        rules.step_limit,
        explain,
    )?;
    Ok(match (st.refuse, st.address) {
        (Some(r), _) => AddressDecision::Refuse(r),
        (None, Some(a)) => AddressDecision::Address(a),
        (None, None) => AddressDecision::Unmapped,
    })
}

// ---------------------------------------------------------------------------------------
// cpm_message

/// The facts of one MESSAGE, computed by the caller.
#[derive(Debug, Default)]
pub struct MessageFacts {
    pub values: HashMap<u16, Value>,
    pub sip_headers: Vec<(String, String)>,
    pub cpim_headers: Vec<(String, String)>,
}

impl MessageFacts {
    pub fn set(&mut self, f: F, v: Value) {
        self.values.insert(f as u16, v);
    }
}

/// What the `cpm_message` phase produced.
#[derive(Debug, Default)]
pub struct MessageDecision {
    /// Mail headers in order.
    pub headers: Vec<(String, String)>,
    pub encoding: Option<String>,
    pub envelope_from: Option<String>,
    pub notify: Option<String>,
    pub refuse: Option<SipAnswer>,
}

struct MessageState<'a> {
    facts: &'a MessageFacts,
    out: MessageDecision,
}

fn find_header<'h>(list: &'h [(String, String)], name: &str) -> Option<&'h str> {
    list.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

impl Input for MessageState<'_> {
    fn field(&self, slot: u16) -> Value {
        self.facts.values.get(&slot).cloned().unwrap_or_default()
    }
    fn field_fn(&self, slot: u16, arg: &str) -> Value {
        let Some(f) = crate::ruleset::schema::Fn::from_slot(slot) else {
            return Value::Null;
        };
        match f {
            Fn::SipRequestHeader => Value::opt_str(find_header(&self.facts.sip_headers, arg)),
            Fn::CpimHeader => Value::opt_str(find_header(&self.facts.cpim_headers, arg)),
            _ => Value::Null,
        }
    }
}

impl PhaseState for MessageState<'_> {
    fn apply(
        &mut self,
        action: Action,
        header: Option<&str>,
        value: Value,
    ) -> Result<(), ActionError> {
        let out = &mut self.out;
        match (action, header) {
            (Action::SetHeader, Some(name)) => {
                let text = header_text(&value);
                match out
                    .headers
                    .iter()
                    .position(|(n, _)| n.eq_ignore_ascii_case(name))
                {
                    Some(i) => match text {
                        Some(t) => {
                            out.headers[i].1 = t;
                            let mut seen = false;
                            out.headers.retain(|(n, _)| {
                                let same = n.eq_ignore_ascii_case(name);
                                let keep = !same || !seen;
                                seen |= same;
                                keep
                            });
                        }
                        None => out.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name)),
                    },
                    None => {
                        if let Some(t) = text {
                            out.headers.push((name.to_string(), t));
                        }
                    }
                }
            }
            (Action::AppendHeader, Some(name)) => {
                if let Some(t) = header_text(&value) {
                    out.headers.push((name.to_string(), t));
                }
            }
            (Action::Encoding, _) => out.encoding = value.as_str().map(str::to_string),
            (Action::EnvelopeFrom, _) => out.envelope_from = header_text(&value),
            (Action::Notify, _) => out.notify = value.as_str().map(str::to_string),
            (Action::SipReply, _) => out.refuse = Some(answer_of(&value)?),
            _ => {}
        }
        Ok(())
    }
    fn remove_headers(&mut self, names: &[String]) {
        self.out
            .headers
            .retain(|(n, _)| !names.iter().any(|r| r.eq_ignore_ascii_case(n)));
    }
    fn done(&self) -> bool {
        self.out.refuse.is_some()
    }
}

/// Runs the `cpm_message` phase.
pub fn map_message(
    rules: &RuleSet,
    facts: &MessageFacts,
    explain: Option<&mut Vec<Fired>>,
) -> Result<MessageDecision, RunError> {
    let mut st = MessageState {
        facts,
        out: MessageDecision::default(),
    };
    run::run(
        "cpm_message",
        rules.rules("cpm_message"),
        &mut st,
        rules.step_limit,
        explain,
    )?;
    Ok(st.out)
}

// ---------------------------------------------------------------------------------------
// cpm_response

struct ResponseState<'a> {
    outcome: &'a SmtpOutcome,
    target: Option<&'a str>,
    now: i64,
    answer: Option<SipAnswer>,
    headers: Vec<(String, String)>,
}

impl Input for ResponseState<'_> {
    fn field(&self, slot: u16) -> Value {
        let o = self.outcome;
        match field_of(slot) {
            Some(F::SmtpCode) => o.code().map(|c| Value::Int(c as i64)).unwrap_or_default(),
            Some(F::SmtpStatus) => Value::opt_str(o.status()),
            Some(F::SmtpText) => Value::str(o.text()),
            Some(F::SmtpStage) => Value::str(o.stage().as_str()),
            Some(F::SmtpFailure) => Value::opt_str(o.failure()),
            Some(F::TargetAddress) => Value::opt_str(self.target),
            Some(F::CpmNow) => Value::Int(self.now),
            _ => Value::Null,
        }
    }
    fn field_fn(&self, _: u16, _: &str) -> Value {
        Value::Null
    }
}

impl PhaseState for ResponseState<'_> {
    fn apply(
        &mut self,
        action: Action,
        header: Option<&str>,
        value: Value,
    ) -> Result<(), ActionError> {
        match (action, header) {
            (Action::SipReply, _) => self.answer = Some(answer_of(&value)?),
            (Action::SetHeader, Some(name)) => {
                self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
                if let Some(t) = header_text(&value) {
                    self.headers.push((name.to_string(), t));
                }
            }
            _ => {}
        }
        Ok(())
    }
    fn done(&self) -> bool {
        false
    }
}

/// Maps the smarthost's outcome to the SIP final response. With no decision: 500.
pub fn map_response(
    rules: &RuleSet,
    outcome: &SmtpOutcome,
    target: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
    explain: Option<&mut Vec<Fired>>,
) -> SipAnswer {
    let mut st = ResponseState {
        outcome,
        target,
        now: now.timestamp(),
        answer: None,
        headers: Vec::new(),
    };
    if let Err(e) = run::run(
        "cpm_response",
        rules.rules("cpm_response"),
        &mut st,
        rules.step_limit,
        explain,
    ) {
        tracing::warn!("{e}");
        return SipAnswer::new(500, "Server Internal Error");
    }
    match st.answer {
        Some(mut a) => {
            a.headers.extend(st.headers);
            a
        }
        None => SipAnswer::new(500, "Server Internal Error"),
    }
}
