//! Large Message Mode delivery (mapping reference §2): INVITE with an SDP offer, then, as
//! the active side (RFC 4975 §5.4), connect to the answer's `a=path`, send the CPIM
//! document in MSRP chunks, wait for every 200, and end the session with BYE. The outcome
//! is what the response rules map: the INVITE's final response when it fails, the MSRP
//! transaction's status or failure otherwise. The whole session is capped (LMM cap,
//! mapping reference §7 Q10).

use std::net::IpAddr;
use std::time::Duration;

use crate::msrp::{self, ClientConfig, OutgoingMessage};
use crate::outcome::{FailureKind, Outcome, Protocol};
use crate::plan::{Delivery, Mode};
use crate::render::sdp::{SdpOffer, msrp_path, parse_answer};
use crate::sip::SipBackend;

/// Settings of large-mode delivery.
#[derive(Debug, Clone)]
pub struct LargeConfig {
    /// Our address for the SDP `c=` line and `a=path`.
    pub host: IpAddr,
    /// The port in our `a=path` and m-line (we connect out; nothing listens there).
    pub port: u16,
    /// Octets per MSRP SEND.
    pub chunk_size: usize,
    /// Per-chunk response timeout (RFC 4975: 30 s with Failure-Report yes).
    pub response_timeout: Duration,
    /// Whole-session cap.
    pub session_cap: Duration,
    /// `a=max-size` we announce.
    pub max_size: u64,
}

impl Default for LargeConfig {
    fn default() -> Self {
        LargeConfig {
            host: IpAddr::from([127, 0, 0, 1]),
            port: 2855,
            chunk_size: 2048,
            response_timeout: Duration::from_secs(30),
            session_cap: Duration::from_secs(120),
            max_size: 10 << 20,
        }
    }
}

fn final_sip(status: u16, reason: &str) -> Outcome {
    Outcome::Final {
        protocol: Protocol::Sip,
        status,
        reason: reason.into(),
        headers: Vec::new(),
        mode: Mode::Large,
    }
}

/// Delivers `d` in large mode and returns its outcome.
pub async fn deliver(sip: &dyn SipBackend, d: &Delivery, cfg: &LargeConfig) -> Outcome {
    match tokio::time::timeout(cfg.session_cap, deliver_uncapped(sip, d, cfg)).await {
        Ok(o) => o,
        Err(_) => Outcome::Failure {
            kind: FailureKind::SessionCap,
            detail: format!(
                "large-mode session exceeded {} s",
                cfg.session_cap.as_secs()
            ),
            mode: Mode::Large,
        },
    }
}

async fn deliver_uncapped(sip: &dyn SipBackend, d: &Delivery, cfg: &LargeConfig) -> Outcome {
    let session = msrp::codec::random_ident();
    let local_path = msrp_path(cfg.host, cfg.port, &session, false);
    let offer = SdpOffer {
        session_id: rand::random::<u32>() as u64,
        host: cfg.host,
        port: cfg.port,
        session_path: local_path.clone(),
        accept_types: vec!["message/cpim".into()],
        accept_wrapped_types: vec!["*".into()],
        max_size: Some(cfg.max_size),
        sendonly: true,
        setup_active: true,
        tls: false,
    };
    let contact = format!("sip:iwf@{}", cfg.host);
    let inv = sip
        .send_invite(d, offer.render().into_bytes(), &contact)
        .await;
    let ok = matches!(inv.outcome, Outcome::Final { status, .. } if (200..300).contains(&status));
    if !ok {
        return inv.outcome;
    }
    let sess = inv.session;
    let outcome = async {
        let Some(answer) = inv.answer else {
            return final_sip(488, "2xx without an SDP answer");
        };
        let answer = match parse_answer(&String::from_utf8_lossy(&answer)) {
            Ok(a) => a,
            Err(e) => return final_sip(488, &format!("unusable SDP answer: {e}")),
        };
        if answer.is_rejected() {
            return final_sip(488, "message stream refused (port 0)");
        }
        let Some(to_path) = answer.next_hop().map(str::to_string) else {
            return final_sip(488, "SDP answer without a=path");
        };
        let stream = match msrp::connect(&to_path, None, cfg.response_timeout).await {
            Ok(s) => s,
            Err(e) => return msrp::SendOutcome::from(e).into_outcome(),
        };
        let mut client = msrp::Client::new(
            stream,
            ClientConfig {
                chunk_size: cfg.chunk_size.max(1),
                response_timeout: cfg.response_timeout,
                ..ClientConfig::default()
            },
        );
        let mut msg = OutgoingMessage::new(to_path, local_path, d.content.content_type.clone());
        msg.success_report = d.success_report;
        client
            .send(&msg, d.content.body.clone())
            .await
            .into_outcome()
    }
    .await;
    if let Some(s) = sess {
        let _ = s.bye().await;
    }
    outcome
}
