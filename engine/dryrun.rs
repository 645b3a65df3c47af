//! The dry run behind `iwf map`, the self-tests and the snapshot tests: a mail and an
//! envelope through every phase, with the requests rendered as they would be sent.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::envelope::{Client, Envelope, MailFrom, Rcpt};
use crate::ids::Ids;
use crate::mail::Mail;
use crate::mapper::{self, Fired, RcptDecision};
use crate::plan::{Delivery, Mode, Stamp};
use crate::render::sip;
use crate::reply::Reply;
use crate::ruleset::RuleSet;

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
    let mut relayed = Vec::new();
    let mut reports = Vec::new();
    let mut accepted = Vec::new();
    for r in rcpts {
        match mapper::resolve_recipient(
            rules,
            &envelope,
            &r,
            opts.now,
            opts.explain.then_some(&mut explain),
        ) {
            RcptDecision::Accept { uri } => {
                envelope.rcpts.push(r.clone());
                accepted.push((r, uri));
            }
            RcptDecision::Mailbox { address } => relayed.push(Relayed {
                recipient: r.address.clone(),
                mailbox: address,
            }),
            RcptDecision::Report { token } => reports.push(ReportAddress {
                recipient: r.address.clone(),
                token,
            }),
            RcptDecision::Reject(reply) => rejections.push(Rejection {
                recipient: r.address.clone(),
                reply: reply.to_string(),
            }),
        }
    }
    let plan = mapper::plan_mail(
        rules,
        &envelope,
        &accepted,
        raw,
        opts.ids,
        &crate::peer_memory::Unknown,
        opts.now,
        opts.explain,
    );
    explain.extend(plan.explain);
    for (rcpt, reply) in plan.rejections {
        rejections.push(Rejection {
            recipient: rcpt,
            reply: reply.to_string(),
        });
    }
    let mut deliveries: Vec<RenderedDelivery> = Vec::new();
    for d in plan.deliveries {
        match render_delivery(&d, rules, opts) {
            Ok(rd) => deliveries.push(rd),
            Err(e) => rejections.push(Rejection {
                recipient: d.recipient.clone(),
                reply: Reply::new(
                    554,
                    "5.6.0",
                    format!("<{}>: cannot render the request: {e}", d.recipient),
                )
                .to_string(),
            }),
        }
    }
    for (rcpt, idx) in plan.covered {
        if let Some(d) = deliveries.get_mut(idx) {
            d.covers.push(rcpt);
        }
    }
    DryRun {
        deliveries,
        rejections,
        relayed,
        reports,
        explain,
    }
}

fn render_delivery(
    d: &Delivery,
    rules: &RuleSet,
    opts: &Options,
) -> Result<RenderedDelivery, String> {
    let st = stamp(opts.ids, rules);
    let (request, msrp) = match d.mode {
        Mode::Pager => (
            sip::render_message(d, &st).map_err(|e| e.to_string())?,
            Vec::new(),
        ),
        Mode::Large => large::render(d, &st, rules, opts)?,
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
        opts: &Options,
    ) -> Result<(rsipstack::sip::Request, Vec<String>), String> {
        let host: std::net::IpAddr = rules
            .setting_str("iwf_address", "192.0.2.10")
            .parse()
            .map_err(|e| format!("setting iwf_address: {e}"))?;
        let session = opts.ids.token();
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
        let invite =
            sip::render_invite(d, st, sdp.into_bytes(), &contact).map_err(|e| e.to_string())?;
        let peer_path = "msrp://198.51.100.7:2855/peer;tcp";
        let template = crate::msrp::codec::ChunkTemplate {
            to_path: vec![peer_path.to_string()],
            from_path: vec![local_path],
            message_id: opts.ids.token(),
            content_type: d.content.content_type.clone(),
            success_report: Some(d.success_report),
            failure_report: Some(crate::msrp::codec::FailureReport::Yes),
        };
        let chunks = crate::msrp::codec::Chunks::with_tid_source(
            template,
            d.content.body.clone(),
            opts.chunk_size,
            || opts.ids.token(),
        )
        .map(|r| String::from_utf8_lossy(&r.to_bytes()).into_owned())
        .collect();
        Ok((invite, chunks))
    }
}
