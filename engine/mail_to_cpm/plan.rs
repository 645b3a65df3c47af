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

    /// The `mode:` action's word.
    pub fn parse(word: &str) -> Option<Mode> {
        match word {
            "pager" => Some(Mode::Pager),
            "large" => Some(Mode::Large),
            _ => None,
        }
    }
}

/// How a mail with several recipients names them to each (the `recipient_list` action).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecipientList {
    /// No list: the request names only its recipient.
    None,
    /// RFC 5365 history list (To/Cc of the mail) with the request.
    History,
    /// One request to an exploder (RFC 5365 §5) that fans out to every recipient.
    Exploder,
}

impl RecipientList {
    pub fn as_str(self) -> &'static str {
        match self {
            RecipientList::None => "none",
            RecipientList::History => "history",
            RecipientList::Exploder => "exploder",
        }
    }

    pub fn parse(word: &str) -> Option<RecipientList> {
        [
            RecipientList::None,
            RecipientList::History,
            RecipientList::Exploder,
        ]
        .into_iter()
        .find(|l| l.as_str() == word)
    }
}

/// The other form a response rule asks a delivery to be retried in (the `retry` action).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RetryForm {
    /// Large Message Mode (INVITE + MSRP), the text wrapped in CPIM when it was not.
    Large,
    /// Plain text: the CPIM document's inner text alone, without IMDN.
    Text,
    /// Planned again from the mail: the message rules see what the peer memory learnt.
    Pager,
}

impl RetryForm {
    pub const ALL: [RetryForm; 3] = [RetryForm::Large, RetryForm::Text, RetryForm::Pager];

    pub fn as_str(self) -> &'static str {
        match self {
            RetryForm::Large => "large",
            RetryForm::Text => "text",
            RetryForm::Pager => "pager",
        }
    }

    pub fn parse(word: &str) -> Option<RetryForm> {
        Self::ALL.into_iter().find(|f| f.as_str() == word)
    }
}

impl std::fmt::Display for RetryForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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
    /// When `content` is (or carries, in a list body) a CPIM document: the body of its
    /// inner entity (the pager text, or in large mode the mail's MIME body). A `text`
    /// retry sends it alone; it is the plan's, never cut out of the rendered bytes.
    pub cpim_inner: Option<bytes::Bytes>,
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
    /// Shared pieces, so that large mode streams it into MSRP chunks without another
    /// copy: in large mode the CPIM head we wrote, then the mail's body as received.
    pub body: crate::render::body::Body,
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

// ---------------------------------------------------------------------------------------
// The plan step of mail → CPM: pure (envelope, mail, one rule-set generation, the clock's
// reading, an id source and what the peer memory knows in; the plan out).

use chrono::{DateTime, Utc};

use crate::ids::Ids;
use crate::mail_to_cpm::mail::{Mail, MailError};
use crate::mail_to_cpm::peer_memory::PeerCaps;
use crate::mail_to_cpm::phases::{self, Fired, MailSummary, Planned, RcptDecision};
use crate::ruleset::RuleSet;
use crate::smtp::envelope::{Envelope, Rcpt};
use crate::smtp::reply::Reply;

/// Where one envelope recipient goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// An earlier attempt of this transaction delivered it (the store says so).
    AlreadyDelivered,
    /// Sent to CPM as `deliveries[i]`.
    Cpm(usize),
    /// Covered by the exploder request `deliveries[i]`: shares its outcome.
    Covered(usize),
    /// Relayed as it is to this mailbox through the smarthost (the `mailbox` action).
    Mailbox(String),
    /// iwf's own report address: the mail is a DSN/MDN for the message of this token.
    Report(String),
    /// Refused with this reply.
    Refused(Reply),
}

/// What the plan step decided for one SMTP transaction.
#[derive(Debug, Clone, Default)]
pub struct TransactionPlan {
    /// One route per envelope recipient, in RCPT order.
    pub routes: Vec<Route>,
    /// The requests to send.
    pub deliveries: Vec<Delivery>,
    /// The rules that fired (when asked for).
    pub explain: Vec<Fired>,
    /// What a report record keeps of the mail (none when it did not parse, or when no
    /// request asks for IMDN).
    pub about: Option<MailSummary>,
}

impl TransactionPlan {
    /// The envelope recipients a delivery serves: its own and those it covers.
    pub fn served_by(&self, delivery: usize) -> impl Iterator<Item = usize> + '_ {
        self.routes.iter().enumerate().filter_map(move |(i, r)| {
            matches!(r, Route::Cpm(d) | Route::Covered(d) if *d == delivery).then_some(i)
        })
    }
}

/// What the plan step reads besides the mail and the rules.
pub struct PlanContext<'a> {
    pub now: DateTime<Utc>,
    pub ids: &'a dyn Ids,
    /// What the peer memory knows of each CPM peer (`peer.*` in the message rules).
    pub peers: &'a dyn PeerCaps,
    /// Record the rules that fire.
    pub explain: bool,
}

/// The RCPT-time decision for one recipient (phases `address` and `recipient`).
pub fn route(
    rules: &RuleSet,
    envelope: &Envelope,
    rcpt: &Rcpt,
    now: DateTime<Utc>,
    explain: Option<&mut Vec<Fired>>,
) -> RcptDecision {
    phases::resolve_recipient(rules, envelope, rcpt, now, explain)
}

/// Plans a whole transaction at the end of DATA: every recipient is routed again by this
/// one rule-set generation (even if a reload came in since RCPT), those `done` says an
/// earlier attempt delivered are left out, and the message phase plans the requests.
/// `mail` is the one parse of the message ([`Mail::parse_shared`]) the gateway also takes the
/// store key from.
pub fn plan(
    rules: &RuleSet,
    envelope: &Envelope,
    mail: Result<Mail<'_>, MailError>,
    done: &[bool],
    ctx: &PlanContext,
) -> TransactionPlan {
    let mut explain = Vec::new();
    let decisions = envelope
        .rcpts
        .iter()
        .enumerate()
        .map(|(i, r)| {
            if done.get(i).copied().unwrap_or(false) {
                None
            } else {
                Some(route(
                    rules,
                    envelope,
                    r,
                    ctx.now,
                    ctx.explain.then_some(&mut explain),
                ))
            }
        })
        .collect();
    let mut plan = plan_decided(rules, envelope, mail, decisions, ctx);
    explain.append(&mut plan.explain);
    plan.explain = explain;
    plan
}

/// Plans the requests for recipients already routed (`None`: delivered before): the
/// message phase for those accepted for CPM.
pub fn plan_decided(
    rules: &RuleSet,
    envelope: &Envelope,
    mail: Result<Mail<'_>, MailError>,
    decisions: Vec<Option<RcptDecision>>,
    ctx: &PlanContext,
) -> TransactionPlan {
    let mut accepted = Vec::new();
    let mut at = Vec::new();
    let mut routes: Vec<Route> = decisions
        .into_iter()
        .enumerate()
        .map(|(i, d)| match d {
            None => Route::AlreadyDelivered,
            Some(RcptDecision::Accept { uri }) => {
                accepted.push((envelope.rcpts[i].clone(), uri));
                at.push(i);
                Route::Cpm(usize::MAX)
            }
            Some(RcptDecision::Mailbox { address }) => Route::Mailbox(address),
            Some(RcptDecision::Report { token }) => Route::Report(token),
            Some(RcptDecision::Reject(reply)) => Route::Refused(reply),
        })
        .collect();
    let mail = phases::plan_mail(
        rules,
        envelope,
        &accepted,
        mail,
        ctx.ids,
        ctx.peers,
        ctx.now,
        ctx.explain,
    );
    let mut deliveries = Vec::new();
    // accepted index → delivery index, for the recipients an exploder request covers
    let mut delivery_of = vec![None; accepted.len()];
    for (n, planned) in mail.planned.into_iter().enumerate() {
        let i = at[n];
        routes[i] = match planned {
            Planned::Deliver(d) => {
                delivery_of[n] = Some(deliveries.len());
                deliveries.push(d);
                Route::Cpm(deliveries.len() - 1)
            }
            Planned::Covered(k) => match delivery_of.get(k).copied().flatten() {
                Some(d) => Route::Covered(d),
                None => Route::Refused(crate::smtp::replies::not_processed()),
            },
            Planned::Refused(reply) => Route::Refused(reply),
        };
    }
    TransactionPlan {
        routes,
        deliveries,
        explain: mail.explain,
        about: mail.about,
    }
}

/// The delivery a `retry` asks for, built from the planned one (never from its rendered
/// bytes); `None` when there is no such form. `replan` plans the recipient again from the
/// mail (for [`RetryForm::Pager`]: the message rules then see what the peer memory just
/// learnt).
pub fn retry(
    form: RetryForm,
    planned: &Delivery,
    replan: impl FnOnce() -> Option<Delivery>,
) -> Option<Delivery> {
    match form {
        RetryForm::Large => {
            let mut next = planned.clone();
            next.mode = Mode::Large;
            if next.content.content_type != "message/cpim" {
                wrap_in_cpim(&mut next);
            }
            Some(next)
        }
        RetryForm::Pager => replan().filter(|d| d.mode == Mode::Pager),
        RetryForm::Text => {
            let mut next = planned.clone();
            match planned.cpim_inner.clone() {
                Some(text) => {
                    next.content = Content {
                        content_type: "text/plain;charset=UTF-8".into(),
                        body: text.into(),
                    };
                    next.cpim_inner = None;
                    next.imdn_message_id = None;
                    next.imdn_dispositions.clear();
                }
                None => next.mode = Mode::Large,
            }
            Some(next)
        }
    }
}

/// Large mode carries message/cpim (the SDP offer's accept-types): a plain text body goes
/// into a CPIM document with the request's From and To.
fn wrap_in_cpim(d: &mut Delivery) {
    let header = |n: &str| {
        d.headers
            .iter()
            .find(|(h, _)| h.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    let mut headers = Vec::new();
    if let Some(f) = header("From") {
        headers.push(("From".to_string(), f));
    }
    headers.push((
        "To".to_string(),
        header("To").unwrap_or_else(|| format!("<{}>", d.request_uri)),
    ));
    let text = d.content.body.to_bytes();
    let inner = crate::render::cpim::text_entity(&String::from_utf8_lossy(&text));
    if let Ok(doc) = (crate::render::cpim::Cpim {
        headers: &headers,
        imdn: None,
        inner: &[&inner],
    })
    .render()
    {
        d.cpim_inner = Some(text);
        d.content.content_type = "message/cpim".into();
        d.content.body = doc.into();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(content_type: &str, body: &str, inner: Option<&str>) -> Delivery {
        Delivery {
            recipient: "+15551234567@cpm.example.net".into(),
            mode: Mode::Pager,
            request_uri: "tel:+15551234567".into(),
            headers: vec![
                ("From".into(), "<sip:alice@iwf.example.net>".into()),
                ("To".into(), "<tel:+15551234567>".into()),
            ],
            content: Content {
                content_type: content_type.into(),
                body: body.as_bytes().to_vec().into(),
            },
            cpim_inner: inner.map(|t| bytes::Bytes::copy_from_slice(t.as_bytes())),
            imdn_message_id: Some("t000000000000001".into()),
            imdn_dispositions: vec!["positive-delivery".into()],
            success_report: false,
        }
    }

    /// A `text` retry sends the plan's inner text, not bytes cut out of the rendered CPIM
    /// document: a text with blank lines, or a list body around the CPIM document, stays
    /// whole.
    #[test]
    fn a_text_retry_takes_the_planned_text() {
        let text = "line one\r\n\r\nafter a blank line\r\n\r\nand another";
        for content_type in ["message/cpim", "multipart/mixed;boundary=iwf-x"] {
            let d = planned(content_type, "whatever was rendered", Some(text));
            let next = retry(RetryForm::Text, &d, || unreachable!()).unwrap();
            assert_eq!(next.content.content_type, "text/plain;charset=UTF-8");
            assert_eq!(next.content.body.to_vec(), text.as_bytes());
            assert_eq!(next.mode, Mode::Pager);
            assert!(next.imdn_message_id.is_none() && next.imdn_dispositions.is_empty());
        }
        // Plain text already: no text form left but large mode.
        let d = planned("text/plain;charset=UTF-8", text, None);
        let next = retry(RetryForm::Text, &d, || unreachable!()).unwrap();
        assert_eq!(next.mode, Mode::Large);
        assert_eq!(next.content, d.content);
    }

    /// A `large` retry of plain text wraps it in CPIM (the SDP offer's accept-types) with
    /// the request's From and To; a later `text` retry gets the text back whole.
    #[test]
    fn a_large_retry_wraps_plain_text_in_cpim() {
        let d = planned("text/plain;charset=UTF-8", "hello\r\n\r\nworld", None);
        let next = retry(RetryForm::Large, &d, || unreachable!()).unwrap();
        assert_eq!(next.mode, Mode::Large);
        assert_eq!(next.content.content_type, "message/cpim");
        let doc = String::from_utf8_lossy(&next.content.body.to_vec()).into_owned();
        assert!(
            doc.starts_with("From: <sip:alice@iwf.example.net>\r\nTo: <tel:+15551234567>\r\n"),
            "{doc}"
        );
        assert!(doc.ends_with("hello\r\n\r\nworld"), "{doc}");
        let back = retry(RetryForm::Text, &next, || unreachable!()).unwrap();
        assert_eq!(back.content.body.to_vec(), b"hello\r\n\r\nworld");
        // CPIM already: only the mode changes.
        let cpim = planned("message/cpim", "From: x\r\n\r\ndoc", Some("doc"));
        let next = retry(RetryForm::Large, &cpim, || unreachable!()).unwrap();
        assert_eq!((next.mode, &next.content), (Mode::Large, &cpim.content));
    }

    /// A `pager` retry is the recipient planned again, and only a pager-mode plan counts.
    #[test]
    fn a_pager_retry_is_planned_again() {
        let d = planned("message/cpim", "doc", Some("doc"));
        let mut again = planned("text/plain;charset=UTF-8", "new plan", None);
        assert_eq!(
            retry(RetryForm::Pager, &d, || Some(again.clone())),
            Some(again.clone())
        );
        again.mode = Mode::Large;
        assert_eq!(retry(RetryForm::Pager, &d, || Some(again)), None);
        assert_eq!(retry(RetryForm::Pager, &d, || None), None);
    }

    #[test]
    fn words_round_trip() {
        for f in RetryForm::ALL {
            assert_eq!(RetryForm::parse(f.as_str()), Some(f));
        }
        for l in [
            RecipientList::None,
            RecipientList::History,
            RecipientList::Exploder,
        ] {
            assert_eq!(RecipientList::parse(l.as_str()), Some(l));
        }
        for m in [Mode::Pager, Mode::Large] {
            assert_eq!(Mode::parse(m.as_str()), Some(m));
        }
        assert_eq!(RetryForm::parse("LARGE"), None);
        assert_eq!(Mode::parse(""), None);
    }
}
