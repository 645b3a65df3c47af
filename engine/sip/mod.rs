//! The SIP back end: sends the pager-mode MESSAGE of a [`Delivery`] and reports its final
//! [`Outcome`], plus a small SIP answering endpoint for `iwf demo` and tests.
//!
//! # Layout
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | the [`SipBackend`] trait the rest of iwf uses |
//! | [`config`] | [`SipConfig`]: sockets, advertised host, outbound proxy, T1/T2/T4, credentials, TLS |
//! | [`client`] | [`RsipBackend`], the implementation on rsipstack's transport and INVITE transactions (its docs say how rsipstack is driven) |
//! | [`transaction`] | the MESSAGE client transaction (RFC 3261 §17.1.2) as a state machine without I/O |
//! | [`next_hop`] | outbound proxy or RFC 3263 (NAPTR/SRV/A) resolution, DNS behind a trait |
//! | [`auth`] | digest (RFC 2617, MD5, `qop=auth`) for 401/407 |
//! | [`response`] | response → `Outcome`, 3xx Contact lists |
//! | [`stamp`] | Via branch, Call-ID, From tag, CSeq |
//! | [`answerer`] | the demo/test UAS on plain tokio sockets (UDP, TCP, TLS) |
//!
//! # What one `send_message` does
//!
//! 1. Route: the outbound proxy if configured, else the Request-URI's host by RFC 3263. A
//!    `tel:` Request-URI without proxy is `Failure{Transport}`.
//! 2. Connect: the UDP socket, or a (reused) TCP/TLS connection; refused → next target,
//!    none left → `Failure{Transport}`.
//! 3. Render the MESSAGE with [`render_message`](crate::render::sip::render_message) and a
//!    fresh [`Stamp`](crate::mail_to_cpm::plan::Stamp); run a non-INVITE client transaction (RFC 3261
//!    §17.1.2: Timer E retransmits on UDP, Timer F = 64·T1 ends it) on
//!    [`transaction::NonInviteClient`].
//! 4. 1xx are ignored. A 3xx recurses to its best untried Contact (highest `q`, at most
//!    [`client::MAX_REDIRECTS`] hops, same Call-ID and From tag, CSeq + 1); unresolved, the
//!    last 3xx is reported. A 401/407 with credentials configured is answered once with
//!    `Authorization`/`Proxy-Authorization`; without, it is reported.
//! 5. Any other final response → `Outcome::Final{protocol: Sip, ..}` with the response's
//!    non-plumbing headers (Contact, Retry-After, Accept, Warning, ...). No final response
//!    within Timer F → `Failure{Timeout}`; connection refused/reset/closed →
//!    `Failure{Transport}`. The whole delivery, follow-ups included, ends within one Timer F.
//!
//! Large mode: [`SipBackend::send_invite`] goes through the same routing, redirect and
//! digest steps with an INVITE (rsipstack's INVITE client transaction: Timer A retransmits
//! on UDP, Timer B ends it, non-2xx and 2xx are ACKed by the transaction layer) and returns
//! the 2xx's SDP answer and a [`Session`] that sends the BYE. The MSRP part is not here.
//!
//! # Operating notes
//!
//! * Filter rsipstack's logs to `rsipstack=warn`: at INFO it logs every raw message
//!   (DESIGN.md §4). The back end itself logs at DEBUG only.
//! * Measured here (release, 2 cores, closed loop with 100 outstanding against a SIPp
//!   UAS): ~18k MESSAGE/s over UDP, ~21k/s over TCP, no failures in 50k each; SIPp's UAS
//!   is the limit at that rate (`tests_sipp::sipp_throughput`).

use crate::mail_to_cpm::outcome::Outcome;
use crate::mail_to_cpm::plan::Delivery;

pub mod answerer;
pub(crate) mod auth;
pub(crate) mod client;
pub(crate) mod config;
pub(crate) mod next_hop;
pub mod response;
pub(crate) mod stamp;
pub mod transaction;

#[cfg(test)]
mod tests_backend;
#[cfg(test)]
mod tests_sipp;

pub use answerer::{Answerer, AnswererConfig, ReceivedRequest, Reply};
pub use client::{InviteSession, RsipBackend, SipError};
pub use config::{Credentials, SipConfig, Timers, TlsClient};

/// A boxed, sendable future borrowing for `'a`.
pub(crate) use futures::future::BoxFuture;

/// What the rest of iwf needs from the SIP side.
pub trait SipBackend: Send + Sync + 'static {
    /// Sends the pager-mode MESSAGE for `delivery` and waits for its final outcome (never
    /// longer than Timer F).
    fn send_message<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, Outcome>;

    /// Large mode: sends the INVITE for `delivery` with `sdp_offer` and our `contact` URI,
    /// and waits for its final response (Timer B = 64·T1 until a provisional response;
    /// after one, until the final response or Timer C). A 2xx is ACKed and its dialog
    /// returned for the BYE. The default says the back end has no INVITE support.
    fn send_invite<'a>(
        &'a self,
        delivery: &'a Delivery,
        sdp_offer: Vec<u8>,
        contact: &'a str,
    ) -> BoxFuture<'a, InviteOutcome> {
        let _ = (sdp_offer, contact);
        Box::pin(async move {
            InviteOutcome {
                outcome: Outcome::Failure {
                    kind: crate::mail_to_cpm::outcome::FailureKind::Transport,
                    detail: "this SIP back end does not send INVITE".into(),
                    mode: delivery.mode,
                },
                answer: None,
                session: None,
            }
        })
    }
}

/// What an INVITE came to.
pub struct InviteOutcome {
    /// The final response (a 2xx included) or the failure.
    pub outcome: Outcome,
    /// The body of the 2xx: the SDP answer.
    pub answer: Option<Vec<u8>>,
    /// The dialog a 2xx established (already ACKed); end it with [`Session::bye`].
    pub session: Option<Box<dyn Session>>,
}

impl std::fmt::Debug for InviteOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InviteOutcome")
            .field("outcome", &self.outcome)
            .field(
                "answer",
                &self.answer.as_ref().map(|a| String::from_utf8_lossy(a)),
            )
            .field(
                "session",
                &self.session.as_ref().map(|s| s.call_id().to_string()),
            )
            .finish()
    }
}

/// An established INVITE dialog.
pub trait Session: Send + Sync {
    fn call_id(&self) -> &str;
    /// Sends BYE in the dialog and waits for its final outcome (at most Timer F).
    fn bye(&self) -> BoxFuture<'_, Outcome>;
}
