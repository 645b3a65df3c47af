//! The dry run behind `iwf map`, the self-tests and the snapshot tests: a mail and an
//! envelope through the same plan, dispatch and answer steps as `iwf serve`, dispatched to
//! a [`Recorder`] that renders the requests as they would be sent instead of sending them.

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::clock::FixedClock;
use crate::ids::Ids;
use crate::mail_to_cpm::mail::Mail;
use crate::mail_to_cpm::outcome::Outcome;
use crate::mail_to_cpm::phases::{Fired, RcptDecision};
use crate::mail_to_cpm::plan::{self, Delivery, Mode, PlanContext, Route, Stamp};
use crate::render::sip;
use crate::ruleset::RuleSet;
use crate::smtp::envelope::{Client, Envelope, MailFrom, Rcpt};
use crate::smtp::reply::Reply;
use futures::future::BoxFuture;

use super::answer::{self, Answer};
use super::dispatch::{Backend, Dispatch, Dispatched};

/// One planned request, rendered.
#[derive(Debug, Clone, Serialize)]
pub struct RenderedDelivery {
    pub recipient: String,
    pub mode: Mode,
    /// The SIP request (MESSAGE, or the INVITE of large mode) in wire format.
    pub request: String,
    /// For large mode: the MSRP SEND chunks.
    pub msrp: Vec<String>,
    /// Recipients this request also covers (exploder strategy).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub covers: Vec<String>,
    #[serde(skip)]
    pub delivery: Delivery,
}

#[derive(Debug, Clone, Serialize)]
pub struct Rejection {
    pub recipient: String,
    pub reply: String,
}

/// A recipient relayed as mail to a mailbox through the smarthost (the `mailbox` action).
#[derive(Debug, Clone, Serialize)]
pub struct Relayed {
    pub recipient: String,
    pub mailbox: String,
}

/// A recipient that is iwf's own report address (`b+<token>`): the mail is a DSN/MDN, mapped
/// by the `mail_report` phase against the correlation record of that token
/// (`iwf map --record`).
#[derive(Debug, Clone, Serialize)]
pub struct ReportAddress {
    pub recipient: String,
    pub token: String,
}

/// The result of a dry run.
#[derive(Debug, Clone, Serialize)]
pub struct DryRun {
    pub deliveries: Vec<RenderedDelivery>,
    pub rejections: Vec<Rejection>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub relayed: Vec<Relayed>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reports: Vec<ReportAddress>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub explain: Vec<Fired>,
    /// What the transaction would be answered if every request got `200 OK`.
    #[serde(skip)]
    pub answer: Answer,
}

/// Options of a dry run.
pub struct Options<'a> {
    /// What follows `MAIL FROM:`; `None`: the mail's From: address.
    pub mail_from: Option<MailFrom>,
    /// What follows each `RCPT TO:`; empty: the mail's To/Cc addresses.
    pub rcpts: Vec<Rcpt>,
    pub client: Client,
    pub now: DateTime<Utc>,
    /// Seconds between MAIL FROM and mapping (for BY arithmetic).
    pub elapsed: i64,
    pub ids: &'a dyn Ids,
    pub explain: bool,
    /// MSRP chunk size for the rendered SEND requests.
    pub chunk_size: usize,
}

/// The envelope a mail implies when none is given: From → MAIL FROM, To/Cc → RCPT TO.
pub fn implied_envelope(raw: &[u8]) -> (MailFrom, Vec<Rcpt>) {
    let Ok(m) = Mail::parse(raw) else {
        return (MailFrom::default(), Vec::new());
    };
    let from = m
        .mailboxes("From")
        .into_iter()
        .next()
        .map(|b| b.address)
        .unwrap_or_default();
    let mut rcpts: Vec<Rcpt> = Vec::new();
    for b in m.mailboxes("To").into_iter().chain(m.mailboxes("Cc")) {
        if !rcpts
            .iter()
            .any(|r| r.address.eq_ignore_ascii_case(&b.address))
        {
            rcpts.push(Rcpt {
                address: b.address,
                notify: Vec::new(),
                orcpt: None,
            });
        }
    }
    (
        MailFrom {
            address: from,
            ..MailFrom::default()
        },
        rcpts,
    )
}

/// A stamp for dry runs, from the identifier source.
pub fn stamp(ids: &dyn Ids, rules: &RuleSet) -> Stamp {
    let host = rules.setting_str("iwf_domain", "iwf.example.net");
    Stamp {
        transport: "TCP".into(),
        sent_by: format!("{host}:5060"),
        branch: format!("z9hG4bK{}", ids.token()),
        call_id: format!("{}@{host}", ids.token()),
        from_tag: ids.token(),
        cseq: 1,
    }
}

/// Runs the mail → CPM pipeline over one mail without the network: the RCPT step for each
/// recipient, [`plan::plan_decided`], [`Dispatch`] to a [`Recorder`] (which renders each
/// request and answers 200), and [`answer::answer`].
pub fn run(rules: &RuleSet, raw: &[u8], opts: &Options) -> DryRun {
    let (implied_from, implied_rcpts) = implied_envelope(raw);
    let mail_from = opts.mail_from.clone().unwrap_or(implied_from);
    let rcpts = if opts.rcpts.is_empty() {
        implied_rcpts
    } else {
        opts.rcpts.clone()
    };
    let received_at = opts.now - chrono::Duration::seconds(opts.elapsed);
    let mut envelope = Envelope {
        mail_from,
        rcpts: Vec::new(),
        client: opts.client.clone(),
        received_at,
    };
    let mut explain: Vec<Fired> = Vec::new();
    let mut rejections = Vec::new();
    let mut decisions = Vec::new();
    // The RCPT step: a refused recipient never enters the envelope.
    for r in rcpts {
        match plan::route(
            rules,
            &envelope,
            &r,
            opts.now,
            opts.explain.then_some(&mut explain),
        ) {
            RcptDecision::Reject(reply) => rejections.push(Rejection {
                recipient: r.address.clone(),
                reply: reply.to_string(),
            }),
            accepted => {
                envelope.rcpts.push(r);
                decisions.push(Some(accepted));
            }
        }
    }
    let ctx = PlanContext {
        now: opts.now,
        ids: opts.ids,
        peers: &crate::mail_to_cpm::peer_memory::Unknown,
        explain: opts.explain,
    };
    // The network path shares the received buffer; a dry run copies its input once.
    let raw = &bytes::Bytes::copy_from_slice(raw);
    let plan = plan::plan_decided(
        rules,
        &envelope,
        crate::mail_to_cpm::mail::Mail::parse_shared(raw),
        decisions,
        &ctx,
    );
    explain.extend(plan.explain.iter().cloned());
    let recorder = Recorder {
        rules,
        ids: opts.ids,
        chunk_size: opts.chunk_size,
        sent: Mutex::new(Vec::new()),
    };
    let clock = FixedClock(opts.now);
    let dispatch = Dispatch {
        rules,
        envelope: &envelope,
        raw,
        backend: &recorder,
        clock: &clock,
        ids: opts.ids,
        peers: None,
    };
    // One after the other: the requests are rendered in plan order (ids in sequence).
    let mut first_sent = Vec::new();
    let dispatched: Vec<Dispatched> = futures::executor::block_on(async {
        let mut out = Vec::new();
        for d in &plan.deliveries {
            first_sent.push(recorder.count());
            out.push(dispatch.one(d).await);
        }
        out
    });
    let answer = answer::answer(rules, &envelope, &plan, &[], &dispatched, opts.now);
    let mut sent: Vec<Option<_>> = recorder
        .sent
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(Some)
        .collect();
    let mut relayed = Vec::new();
    let mut reports = Vec::new();
    let mut deliveries: Vec<RenderedDelivery> = Vec::new();
    let mut delivery_at = vec![None; plan.deliveries.len()];
    for (i, route) in plan.routes.iter().enumerate() {
        let recipient = envelope.rcpts[i].address.clone();
        match route {
            Route::Cpm(k) => {
                // The plan's form: the first request its dispatch sent.
                match first_sent.get(*k).and_then(|&at| sent.get_mut(at)?.take()) {
                    Some(Ok(rendered)) => {
                        delivery_at[*k] = Some(deliveries.len());
                        deliveries.push(*rendered);
                    }
                    Some(Err(reply)) => rejections.push(Rejection {
                        recipient,
                        reply: reply.to_string(),
                    }),
                    None => {}
                }
            }
            Route::Refused(reply) => rejections.push(Rejection {
                recipient,
                reply: reply.to_string(),
            }),
            Route::Mailbox(mailbox) => relayed.push(Relayed {
                recipient,
                mailbox: mailbox.clone(),
            }),
            Route::Report(token) => reports.push(ReportAddress {
                recipient,
                token: token.clone(),
            }),
            Route::Covered(_) | Route::AlreadyDelivered => {}
        }
    }
    for (i, route) in plan.routes.iter().enumerate() {
        if let Route::Covered(k) = route
            && let Some(d) = delivery_at[*k].and_then(|at| deliveries.get_mut(at))
        {
            d.covers.push(envelope.rcpts[i].address.clone());
        }
    }
    DryRun {
        deliveries,
        rejections,
        relayed,
        reports,
        explain,
        answer,
    }
}

/// The dry run's back end: renders each request as it would go on the wire and answers
/// `200 OK`.
pub struct Recorder<'a> {
    rules: &'a RuleSet,
    ids: &'a dyn Ids,
    chunk_size: usize,
    /// Each request sent, in order, or the reply when it cannot be rendered.
    sent: Mutex<Vec<Result<Box<RenderedDelivery>, Reply>>>,
}

impl Recorder<'_> {
    fn count(&self) -> usize {
        self.sent.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Backend for Recorder<'_> {
    fn send<'a>(&'a self, d: &'a Delivery) -> BoxFuture<'a, Outcome> {
        let rendered = render_delivery(d, self.rules, self.ids, self.chunk_size)
            .map(Box::new)
            .map_err(|e| crate::smtp::replies::unrenderable(&d.recipient, &e));
        self.sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(rendered);
        Box::pin(std::future::ready(Outcome::Final {
            protocol: crate::mail_to_cpm::outcome::Layer::Sip,
            status: 200,
            reason: "OK".into(),
            headers: Vec::new(),
            mode: d.mode,
        }))
    }
}

/// Why a planned request cannot be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("{0}")]
    Sip(#[from] sip::RenderError),
    #[error("setting iwf_address: {0}")]
    Address(#[from] std::net::AddrParseError),
}

fn render_delivery(
    d: &Delivery,
    rules: &RuleSet,
    ids: &dyn Ids,
    chunk_size: usize,
) -> Result<RenderedDelivery, RenderError> {
    let st = stamp(ids, rules);
    let (request, msrp) = match d.mode {
        Mode::Pager => (sip::render_message(d, &st)?, Vec::new()),
        Mode::Large => large::render(d, &st, rules, ids, chunk_size)?,
    };
    Ok(RenderedDelivery {
        recipient: d.recipient.clone(),
        mode: d.mode,
        request: String::from_utf8_lossy(&request.to_bytes()).into_owned(),
        msrp,
        covers: Vec::new(),
        delivery: d.clone(),
    })
}

/// Large mode in a dry run: the INVITE with its SDP offer and the MSRP SEND chunks that
/// would follow an answer.
mod large {
    use super::*;

    pub fn render(
        d: &Delivery,
        st: &Stamp,
        rules: &RuleSet,
        ids: &dyn Ids,
        chunk_size: usize,
    ) -> Result<(rsipstack::sip::Request, Vec<String>), RenderError> {
        let host: std::net::IpAddr = rules.setting_str("iwf_address", "192.0.2.10").parse()?;
        let session = ids.token();
        let local_path = crate::render::sdp::msrp_path(host, 2855, &session, false);
        let sdp = crate::render::sdp::SdpOffer {
            session_id: 2890844526,
            host,
            port: 2855,
            session_path: local_path.clone(),
            accept_types: vec!["message/cpim".into()],
            accept_wrapped_types: vec!["*".into()],
            max_size: Some(10 << 20),
            sendonly: true,
            setup_active: true,
            tls: false,
        }
        .render();
        let contact = format!("sip:{}", st.sent_by);
        let invite = sip::render_invite(d, st, sdp.into_bytes(), &contact)?;
        let peer_path = "msrp://198.51.100.7:2855/peer;tcp";
        let template = crate::msrp::codec::ChunkTemplate {
            to_path: vec![peer_path.to_string()],
            from_path: vec![local_path],
            message_id: ids.token(),
            content_type: d.content.content_type.clone(),
            success_report: Some(d.success_report),
            failure_report: Some(crate::msrp::codec::FailureReport::Yes),
        };
        let chunks = crate::msrp::codec::Chunks::with_tid_source(
            template,
            d.content.body.clone(),
            chunk_size,
            || ids.token(),
        )
        .map(|r| String::from_utf8_lossy(&r.to_bytes()).into_owned())
        .collect();
        Ok((invite, chunks))
    }
}
