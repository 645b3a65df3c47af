//! Large Message Mode, receiving side (RFC 4975 §8: iwf is the passive endpoint).
//!
//! An INVITE to a mail user with an MSRP SDP offer is answered 200 with our own `a=path`
//! (a listener of its own per session); the sender connects and SENDs the chunks; each is
//! answered 200 and reassembled by Message-ID and Byte-Range, **except the chunk that
//! completes the message**: its response waits for the smarthost. The complete message is
//! mapped and delivered like a MESSAGE body (the same phases; `sip.transport` is `MSRP`),
//! then that chunk gets 200 (with a success REPORT when `Success-Report: yes`) or the
//! mapped refusal (RFC 4975 §7.1.2: the transaction response is the failure report). BYE
//! ends the session; a session abandoned before its message is complete sends no mail.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use rsipstack::sip;
use rsipstack::transaction::transaction::Transaction;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use super::{Incoming, SipAnswer, uas::Uas};
use crate::msrp::ReceivedMessage;
use crate::msrp::codec::{
    ByteRange, FailureReport, Frame, Limits, Method, Parser, Request, Status, random_ident,
};
use crate::msrp::receiver::{Absorbed, Reassembler};
use crate::render::sdp::{msrp_path, parse_answer};

/// Longest session: INVITE to the complete message.
const SESSION_CAP: Duration = Duration::from_secs(120);
/// After the message: how long to wait for the BYE.
const BYE_WAIT: Duration = Duration::from_secs(30);

/// Sessions in progress: Call-ID → the signal its BYE gives.
#[derive(Default)]
pub struct Sessions(Mutex<HashMap<String, oneshot::Sender<()>>>);

impl Sessions {
    fn insert(&self, call_id: &str, bye: oneshot::Sender<()>) {
        if let Ok(mut g) = self.0.lock() {
            g.insert(call_id.to_string(), bye);
        }
    }

    /// A BYE: 200 for a session we know (and it ends), else 481.
    pub fn bye(&self, call_id: &str) -> SipAnswer {
        let found = self.0.lock().ok().and_then(|mut g| g.remove(call_id));
        match found {
            Some(signal) => {
                let _ = signal.send(());
                SipAnswer::new(200, "OK")
            }
            None => SipAnswer::new(481, "Call/Transaction Does Not Exist"),
        }
    }

    fn forget(&self, call_id: &str) {
        if let Ok(mut g) = self.0.lock() {
            g.remove(call_id);
        }
    }
}

/// Answers an INVITE and runs its MSRP session to the end.
pub async fn invite(uas: Arc<Uas>, mut tx: Transaction, inc: Incoming) {
    let rules = uas.rules.load_full();
    let refuse = |a: SipAnswer| super::complete(a, &rules);
    let local = tx
        .connection
        .as_ref()
        .and_then(|c| c.get_addr().get_socketaddr().ok())
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 5060)));
    let prepared = async {
        super::target(&rules, &inc)?;
        if inc.content_type().as_deref() != Some("application/sdp") {
            return Err(SipAnswer::new(415, "Unsupported Media Type")
                .with_header("Accept", "application/sdp"));
        }
        let offer = parse_answer(&String::from_utf8_lossy(&inc.body))
            .map_err(|_| SipAnswer::new(488, "Not Acceptable Here"))?;
        if offer.is_rejected() || !offer.proto.eq_ignore_ascii_case("TCP/MSRP") {
            return Err(SipAnswer::new(488, "Not Acceptable Here"));
        }
        let listener = TcpListener::bind((local.ip(), 0))
            .await
            .map_err(|_| SipAnswer::new(500, "Server Internal Error"))?;
        Ok(listener)
    };
    let listener = match prepared.await {
        Ok(l) => l,
        Err(a) => {
            let a = refuse(a);
            super::uas::tag_to(&mut tx);
            let _ = tx
                .reply_with(sip::StatusCode::from(a.status), headers(&a), None)
                .await;
            return;
        }
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let session = random_ident();
    let path = msrp_path(local.ip(), port, &session, false);
    let max = rules
        .setting("cpm_max_large_body")
        .and_then(crate::dsl::Value::as_int)
        .unwrap_or(10 << 20)
        .max(0) as usize;
    let sdp = answer_sdp(local.ip(), port, &path, max);
    let transport = if inc.transport.eq_ignore_ascii_case("UDP") {
        String::new()
    } else {
        format!(";transport={}", inc.transport.to_ascii_lowercase())
    };
    let contact = match local.ip() {
        IpAddr::V6(ip) => format!("<sip:iwf@[{ip}]:{}{transport}>", local.port()),
        IpAddr::V4(ip) => format!("<sip:iwf@{ip}:{}{transport}>", local.port()),
    };
    let call_id = inc.header("Call-ID").unwrap_or("").to_string();
    let (bye_tx, mut bye_rx) = oneshot::channel();
    uas.sessions.insert(&call_id, bye_tx);
    super::uas::tag_to(&mut tx);
    let hs = vec![
        sip::headers::make_header("Contact", contact),
        sip::headers::make_header("Content-Type", "application/sdp".to_string()),
    ];
    if let Err(e) = tx
        .reply_with(sip::StatusCode::OK, hs, Some(sdp.into_bytes()))
        .await
    {
        tracing::debug!("200 to INVITE not sent: {e}");
        uas.sessions.forget(&call_id);
        return;
    }
    // The transaction absorbs the ACK (and INVITE retransmissions) until it ends.
    tokio::spawn(async move { while tx.receive().await.is_some() {} });

    let received = tokio::select! {
        r = tokio::time::timeout(SESSION_CAP, receive(listener, max)) => r.ok().flatten(),
        _ = &mut bye_rx => None,
    };
    let Some((msg, mut stream, last, mut parser, mut reasm)) = received else {
        tracing::info!(
            call_id,
            "large message session ended without a complete message: no mail"
        );
        uas.sessions.forget(&call_id);
        return;
    };
    // The complete message, delivered like a MESSAGE body.
    let mut headers: Vec<(String, String)> = inc
        .headers
        .iter()
        .filter(|(n, _)| !n.eq_ignore_ascii_case("Content-Type"))
        .cloned()
        .collect();
    if let Some(ct) = &msg.content_type {
        headers.push(("Content-Type".into(), ct.clone()));
    }
    let mail = Incoming {
        method: "MESSAGE".into(),
        request_uri: inc.request_uri.clone(),
        headers,
        body: msg.content.to_vec(),
        transport: "MSRP".into(),
    };
    let answer = uas.message(&rules, &mail).await;
    let status = msrp_status(answer.status);
    let mut out = BytesMut::new();
    let wanted = match last.failure_report.unwrap_or(FailureReport::Yes) {
        FailureReport::Yes => true,
        FailureReport::No => false,
        FailureReport::Partial => status >= 300,
    };
    if wanted {
        last.response(status, reason(status)).render(&mut out);
    }
    if status == 200 && last.success_report == Some(true) {
        report(&last, &msg).render(&mut out);
    }
    tracing::info!(
        call_id,
        bytes = msg.content.len(),
        status = answer.status,
        "large message to mail"
    );
    if !out.is_empty() {
        let _ = stream.write_all(&out).await;
    }
    // Later SENDs in the session are refused (one message per session here); wait for BYE.
    let mut buf = vec![0u8; 16 * 1024];
    let _ = tokio::time::timeout(BYE_WAIT, async {
        loop {
            tokio::select! {
                _ = &mut bye_rx => return,
                n = stream.read(&mut buf) => {
                    let Ok(n) = n else { return };
                    if n == 0 { return }
                    let mut data = buf.get(..n).unwrap_or_default();
                    while let Ok(Some(Frame::Request(req))) = parser.feed(data) {
                        data = &[];
                        if req.method == Method::Send {
                            let _ = reasm.absorb(&req);
                            let mut o = BytesMut::new();
                            req.response(403, reason(403)).render(&mut o);
                            let _ = stream.write_all(&o).await;
                        }
                    }
                }
            }
        }
    })
    .await;
    uas.sessions.forget(&call_id);
}

type Received = (ReceivedMessage, TcpStream, Request, Parser, Reassembler);

/// Accepts the sender's connection and answers its chunks until one message is complete;
/// returns it with the connection and the completing chunk, still unanswered.
async fn receive(listener: TcpListener, max: usize) -> Option<Received> {
    let (mut stream, _) = listener.accept().await.ok()?;
    drop(listener);
    let _ = stream.set_nodelay(true);
    let mut parser = Parser::new(Limits::default());
    let mut reasm = Reassembler::new(max, 4);
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = BytesMut::new();
    loop {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        let mut data = buf.get(..n).unwrap_or_default();
        loop {
            let frame = match parser.feed(data) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!("MSRP from the sender does not parse: {e}");
                    return None;
                }
            };
            data = &[];
            let Frame::Request(req) = frame else { continue };
            out.clear();
            let status = match &req.method {
                Method::Report => continue,
                Method::Other(_) => 501,
                Method::Send => match reasm.absorb(&req) {
                    Absorbed::Complete(m) => {
                        if !out.is_empty() {
                            let _ = stream.write_all(&out).await;
                        }
                        return Some((m, stream, req, parser, reasm));
                    }
                    Absorbed::Partial | Absorbed::Aborted => 200,
                    Absorbed::Refused(code) => code,
                },
            };
            let wanted = match req.failure_report.unwrap_or(FailureReport::Yes) {
                FailureReport::Yes => true,
                FailureReport::No => false,
                FailureReport::Partial => status >= 300,
            };
            if wanted {
                req.response(status, reason(status)).render(&mut out);
                stream.write_all(&out).await.ok()?;
            }
        }
    }
}

/// The SIP answer the mail got → the MSRP status of the completing chunk (RFC 4975 §10).
fn msrp_status(sip: u16) -> u16 {
    match sip {
        200..=299 => 200,
        413 => 413,
        415 => 415,
        403 | 404 => 403,
        408 | 480 | 503 | 504 => 408,
        _ => 400,
    }
}

/// `REPORT` with `Status: 000 200 OK` for the delivered message (RFC 4975 §7.1.2).
fn report(last: &Request, msg: &ReceivedMessage) -> Request {
    let total = msg.content.len() as u64;
    Request {
        message_id: Some(msg.message_id.clone()),
        byte_range: Some(ByteRange {
            start: 1,
            end: Some(total),
            total: Some(total),
        }),
        status: Some(Status {
            namespace: 0,
            code: 200,
            reason: Some("OK".into()),
        }),
        ..Request::new(
            random_ident(),
            Method::Report,
            last.from_path.iter().take(1).cloned().collect(),
            last.to_path.iter().take(1).cloned().collect(),
        )
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Unintelligible",
        403 => "Action-not-allowed",
        408 => "Transaction-did-not-complete-in-allotted-time",
        413 => "Stop-sending-message",
        415 => "MIME-not-understood",
        501 => "Request-method-not-understood",
        _ => "",
    }
}

/// Our SDP answer: passive, receive only (RFC 4975 §8.1, RFC 6135).
fn answer_sdp(ip: IpAddr, port: u16, path: &str, max: usize) -> String {
    let (fam, ip) = match ip {
        IpAddr::V4(a) => ("IP4", a.to_string()),
        IpAddr::V6(a) => ("IP6", a.to_string()),
    };
    let id = rand::random::<u32>();
    format!(
        "v=0\r\no=iwf {id} {id} IN {fam} {ip}\r\ns=-\r\nc=IN {fam} {ip}\r\nt=0 0\r\n\
         m=message {port} TCP/MSRP *\r\na=recvonly\r\na=accept-types:message/cpim text/plain\r\n\
         a=accept-wrapped-types:*\r\na=max-size:{max}\r\na=setup:passive\r\na=path:{path}\r\n"
    )
}

fn headers(a: &SipAnswer) -> Vec<sip::Header> {
    a.headers
        .iter()
        .filter_map(|(n, v)| crate::render::encoder::header(n, v).ok())
        .map(|(n, v)| sip::headers::make_header(&n, v))
        .collect()
}
