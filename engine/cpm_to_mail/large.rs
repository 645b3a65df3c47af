//! Large Message Mode, receiving side (RFC 4975 §8: iwf is the passive endpoint).
//!
//! An INVITE to a mail user with an MSRP SDP offer is answered 200 with our own `a=path`
//! (a listener of its own per session); the sender connects and SENDs the chunks; each is
//! answered 200 and reassembled by Message-ID and Byte-Range, **except the chunk that
//! completes the message**: its response waits for the smarthost. The complete message is
//! mapped and delivered like a MESSAGE body (the same phases; `sip.transport` is `MSRP`),
//! then that chunk gets 200 (with a success REPORT when `Success-Report: yes`) or the
//! mapped refusal (RFC 4975 §7.1.2: the transaction response is the failure report). BYE
//! ends the session.
//!
//! A session abandoned before its message is complete sends no mail, and the sender gets a
//! failure REPORT (`Status: 000 408`, the octets received as Byte-Range) unless it said
//! `Failure-Report: no`: when its BYE comes first (the REPORT goes before the 200 to the
//! BYE), or when it falls silent mid-message for `msrp_idle`. A REPORT needs the MSRP
//! connection; when the sender closed it, there is none to send, and the SIP dialog waits
//! for the sender's BYE (200). A CANCEL after the 200 to the INVITE is answered 200 by the
//! transaction layer and changes nothing (RFC 3261 §9.2).

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
use crate::clock::Clock;
use crate::ids::Ids;
use crate::msrp::ReceivedMessage;
use crate::msrp::codec::{
    ByteRange, FailureReport, Frame, Limits, Method, Parser, Request, Status,
};
use crate::msrp::receiver::{Absorbed, Reassembler, reason, success_report};
use crate::render::sdp::{msrp_path, parse_answer};

/// Longest session: INVITE to the complete message.
const SESSION_CAP: Duration = Duration::from_secs(120);
/// After the message: how long to wait for the BYE.
const BYE_WAIT: Duration = Duration::from_secs(30);

/// A BYE's signal to its session: the session answers on `done` once it has sent what it
/// owes the sender on the MSRP connection (the failure REPORTs), so the 200 to the BYE
/// follows them.
type ByeSignal = oneshot::Sender<()>;

/// Sessions in progress: Call-ID → the signal its BYE gives.
#[derive(Default)]
pub struct Sessions(Mutex<HashMap<String, oneshot::Sender<ByeSignal>>>);

/// Longest wait of a BYE for its session to send its failure REPORTs.
const BYE_REPORT_WAIT: Duration = Duration::from_secs(2);

impl Sessions {
    fn insert(&self, call_id: &str, bye: oneshot::Sender<ByeSignal>) {
        if let Ok(mut g) = self.0.lock() {
            g.insert(call_id.to_string(), bye);
        }
    }

    /// A BYE: 200 for a session we know (and it ends, after its failure REPORTs), else 481.
    pub async fn bye(&self, call_id: &str) -> SipAnswer {
        let found = self.0.lock().ok().and_then(|mut g| g.remove(call_id));
        match found {
            Some(signal) => {
                let (done_tx, done_rx) = oneshot::channel();
                if signal.send(done_tx).is_ok() {
                    let _ = tokio::time::timeout(BYE_REPORT_WAIT, done_rx).await;
                }
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
///
/// A CANCEL never reaches this code: the INVITE is answered 200 at once, and rsipstack's
/// INVITE server transaction (kept in the Accepted state of RFC 6026 §7.1 for 64·T1 by the
/// loop below) answers a CANCEL with 200 and changes nothing (RFC 3261 §9.2: "If it has
/// [already sent a final response], the CANCEL request has no effect on the processing of
/// the original request, no effect on any session state"); after that, with 481.
pub async fn invite(uas: Arc<Uas>, mut tx: Transaction, inc: Incoming) {
    let rules = uas.rules.load_full();
    let refuse = |a: SipAnswer| super::complete(a, &rules);
    let local = tx
        .connection
        .as_ref()
        .and_then(|c| c.get_addr().get_socketaddr().ok())
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 5060)));
    let prepared = async {
        super::target(&rules, &inc, uas.clock.now())?;
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
    let session = uas.ids.ident();
    let path = msrp_path(local.ip(), port, &session, false);
    let max = rules
        .setting("cpm_max_large_body")
        .and_then(crate::dsl::Value::as_int)
        .unwrap_or(10 << 20)
        .max(0) as usize;
    let sdp = answer_sdp(local.ip(), port, &path, max, uas.ids.bits() as u32);
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
    // The transaction absorbs the ACK, INVITE retransmissions and CANCELs (200, no effect)
    // until it ends. It must be dropped once terminated (the ACK terminates it): only then
    // does rsipstack move it to its finished transactions, where a later CANCEL finds the
    // 200 and is answered 200; a terminated transaction kept alive answers CANCEL with 481.
    tokio::spawn(async move {
        while tx.receive().await.is_some() {
            if tx.is_terminated() {
                break;
            }
        }
    });

    let ended = run(
        listener,
        max,
        uas.config.msrp_idle,
        &*uas.clock,
        &uas.ids,
        &mut bye_rx,
    )
    .await;
    let (msg, mut conn, last) = match ended {
        Ended::Complete(done) => *done,
        Ended::Bye(conn, done) => {
            // RFC 4975 §7.1.2: a message that will not be delivered gets a failure REPORT
            // unless its sender said `Failure-Report: no`; the connection is still up, so
            // it goes before the 200 to the BYE.
            if let Some(mut c) = conn {
                c.report_failures(408).await;
            }
            tracing::info!(call_id, "BYE before the message was complete: no mail");
            let _ = done.send(());
            return;
        }
        Ended::Idle(mut c) => {
            tracing::info!(
                call_id,
                "MSRP sender silent mid-message: failure REPORT, no mail"
            );
            c.report_failures(408).await;
            c.refuse_until_bye(&mut bye_rx).await;
            uas.sessions.forget(&call_id);
            return;
        }
        Ended::Gone => {
            // The connection is gone: a REPORT travels only on it (RFC 4975 §7.1.2, the
            // reverse of the SEND's path), and as the passive side (`a=setup:passive`)
            // iwf cannot open another. What is left is the SIP level: the dialog stays
            // until the sender's BYE, which gets its 200 (not a 481), or until BYE_WAIT.
            tracing::info!(
                call_id,
                "MSRP connection closed before the message was complete: no mail"
            );
            let _ = tokio::time::timeout(BYE_WAIT, async {
                if let Ok(done) = (&mut bye_rx).await {
                    let _ = done.send(());
                }
            })
            .await;
            uas.sessions.forget(&call_id);
            return;
        }
        Ended::Cap(conn) => {
            tracing::info!(call_id, "large message session over its time cap: no mail");
            if let Some(mut c) = conn {
                c.report_failures(408).await;
            }
            uas.sessions.forget(&call_id);
            return;
        }
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
        success_report(&*uas.ids, &last, &msg).render(&mut out);
    }
    tracing::info!(
        call_id,
        bytes = msg.content.len(),
        status = answer.status,
        "large message to mail"
    );
    if !out.is_empty() {
        let _ = conn.stream.write_all(&out).await;
    }
    // Later SENDs in the session are refused (one message per session here); wait for BYE.
    conn.refuse_until_bye(&mut bye_rx).await;
    uas.sessions.forget(&call_id);
}

/// How the MSRP side of a session ended.
enum Ended {
    /// One message is complete; its completing chunk (the `Request`) is not answered yet.
    Complete(Box<(ReceivedMessage, Conn, Request)>),
    /// The sender's BYE came first (with the connection, when there was one).
    Bye(Option<Conn>, ByeSignal),
    /// The sender was silent mid-message for the idle time; the connection is open.
    Idle(Conn),
    /// The connection closed, or sent what does not parse, before a message was complete.
    Gone,
    /// The session's time cap.
    Cap(Option<Conn>),
}

/// The sender's connection and what is in progress on it.
struct Conn {
    stream: TcpStream,
    parser: Parser,
    reasm: Reassembler,
    /// Messages begun and not finished: Message-ID → (the head of its last chunk, octets
    /// received), for failure REPORTs.
    pending: HashMap<String, (Request, u64)>,
    /// Transaction ids of the REPORTs sent on it.
    ids: Arc<dyn Ids>,
}

impl Conn {
    fn new(stream: TcpStream, max: usize, ids: Arc<dyn Ids>) -> Conn {
        let _ = stream.set_nodelay(true);
        Conn {
            stream,
            parser: Parser::new(Limits::default()),
            reasm: Reassembler::new(max, 4),
            pending: HashMap::new(),
            ids,
        }
    }

    /// Takes `data` and answers its chunks; `Ok(Some)` when a message is complete (its
    /// completing chunk unanswered), `Err` when the connection is no use any more.
    async fn absorb(&mut self, mut data: &[u8]) -> Result<Option<(ReceivedMessage, Request)>, ()> {
        let mut out = BytesMut::new();
        loop {
            let frame = match self.parser.feed(data) {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(None),
                Err(e) => {
                    tracing::debug!("MSRP from the sender does not parse: {e}");
                    return Err(());
                }
            };
            data = &[];
            let Frame::Request(req) = frame else { continue };
            out.clear();
            let status = match &req.method {
                Method::Report => continue,
                Method::Other(_) => 501,
                Method::Send => {
                    let id = req.message_id.clone().unwrap_or_default();
                    let len = req.body.as_ref().map_or(0, |b| b.len()) as u64;
                    match self.reasm.absorb(&req) {
                        Absorbed::Complete(m) => {
                            self.pending.remove(&id);
                            return Ok(Some((m, req)));
                        }
                        Absorbed::Partial => {
                            let got = self.pending.get(&id).map_or(0, |(_, n)| *n) + len;
                            let mut head = req.clone();
                            head.body = None;
                            self.pending.insert(id, (head, got));
                            200
                        }
                        Absorbed::Aborted => {
                            self.pending.remove(&id);
                            200
                        }
                        Absorbed::Refused(code) => {
                            self.pending.remove(&id);
                            code
                        }
                    }
                }
            };
            let wanted = match req.failure_report.unwrap_or(FailureReport::Yes) {
                FailureReport::Yes => true,
                FailureReport::No => false,
                FailureReport::Partial => status >= 300,
            };
            if wanted {
                req.response(status, reason(status)).render(&mut out);
                self.stream.write_all(&out).await.map_err(|_| ())?;
            }
        }
    }

    /// Sends a failure REPORT with `code` for every unfinished message whose sender did not
    /// say `Failure-Report: no` (RFC 4975 §7.1.2; `partial` asks for failures too), and
    /// forgets them. Bounded in time: a sender that does not read is not waited for.
    async fn report_failures(&mut self, code: u16) {
        let mut out = BytesMut::new();
        for (id, (head, got)) in self.pending.drain() {
            if head.failure_report == Some(FailureReport::No) {
                continue;
            }
            failure_report(&*self.ids, &id, &head, got, code).render(&mut out);
        }
        if !out.is_empty() {
            let _ = tokio::time::timeout(BYE_REPORT_WAIT, self.stream.write_all(&out)).await;
        }
    }

    /// After the session's one message: later SENDs get 403 until the BYE (or BYE_WAIT).
    async fn refuse_until_bye(&mut self, bye_rx: &mut oneshot::Receiver<ByeSignal>) {
        let mut buf = vec![0u8; 16 * 1024];
        let _ = tokio::time::timeout(BYE_WAIT, async {
            loop {
                tokio::select! {
                    done = &mut *bye_rx => {
                        if let Ok(done) = done {
                            let _ = done.send(());
                        }
                        return;
                    }
                    n = self.stream.read(&mut buf) => {
                        let Ok(n) = n else { return };
                        if n == 0 { return }
                        let mut data = buf.get(..n).unwrap_or_default();
                        while let Ok(Some(Frame::Request(req))) = self.parser.feed(data) {
                            data = &[];
                            if req.method == Method::Send {
                                let _ = self.reasm.absorb(&req);
                                let mut o = BytesMut::new();
                                req.response(403, reason(403)).render(&mut o);
                                let _ = self.stream.write_all(&o).await;
                            }
                        }
                    }
                }
            }
        })
        .await;
    }
}

/// Accepts the sender's connection and answers its chunks until one message is complete,
/// the BYE comes, the sender falls silent mid-message for `idle`, the connection ends, or
/// the session cap passes. Deadlines are taken on `clock`; REPORT ids come from `ids`.
async fn run(
    listener: TcpListener,
    max: usize,
    idle: Duration,
    clock: &dyn Clock,
    ids: &Arc<dyn Ids>,
    bye_rx: &mut oneshot::Receiver<ByeSignal>,
) -> Ended {
    enum Ev {
        Accepted(Option<TcpStream>),
        Read(std::io::Result<usize>),
        Bye(Option<ByeSignal>),
        Timer,
    }
    let cap = clock.instant() + SESSION_CAP;
    let mut listener = Some(listener);
    let mut conn: Option<Conn> = None;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let idle_at = match &conn {
            Some(c) if !c.pending.is_empty() => (clock.instant() + idle).min(cap),
            _ => cap,
        };
        let ev = match (&mut conn, &listener) {
            (Some(c), _) => tokio::select! {
                n = c.stream.read(&mut buf) => Ev::Read(n),
                b = &mut *bye_rx => Ev::Bye(b.ok()),
                _ = tokio::time::sleep_until(idle_at) => Ev::Timer,
            },
            (None, Some(l)) => tokio::select! {
                a = l.accept() => Ev::Accepted(a.ok().map(|(s, _)| s)),
                b = &mut *bye_rx => Ev::Bye(b.ok()),
                _ = tokio::time::sleep_until(cap) => Ev::Timer,
            },
            (None, None) => return Ended::Gone,
        };
        match ev {
            Ev::Accepted(Some(s)) => {
                listener = None;
                conn = Some(Conn::new(s, max, ids.clone()));
            }
            Ev::Accepted(None) => return Ended::Gone,
            Ev::Bye(Some(done)) => return Ended::Bye(conn, done),
            // The session table dropped us (cannot happen while we run): end quietly.
            Ev::Bye(None) => return Ended::Gone,
            Ev::Timer if clock.instant() >= cap => return Ended::Cap(conn),
            Ev::Timer => match conn {
                Some(c) => return Ended::Idle(c),
                None => return Ended::Cap(None),
            },
            Ev::Read(Ok(0)) | Ev::Read(Err(_)) => return Ended::Gone,
            Ev::Read(Ok(n)) => {
                let Some(c) = conn.as_mut() else {
                    return Ended::Gone;
                };
                match c.absorb(buf.get(..n).unwrap_or_default()).await {
                    Ok(None) => {}
                    Ok(Some((m, last))) => match conn {
                        Some(c) => return Ended::Complete(Box::new((m, c, last))),
                        None => return Ended::Gone,
                    },
                    Err(()) => return Ended::Gone,
                }
            }
        }
    }
}

/// A failure `REPORT` (RFC 4975 §7.1.2): the unfinished message's Message-ID, the octets
/// received as Byte-Range, `Status: 000 <code>`, back along the sender's From-Path.
fn failure_report(ids: &dyn Ids, id: &str, head: &Request, received: u64, code: u16) -> Request {
    Request {
        message_id: Some(id.to_string()),
        byte_range: Some(ByteRange {
            start: 1,
            end: Some(received),
            total: head.byte_range.as_ref().and_then(|b| b.total),
        }),
        status: Some(Status {
            namespace: 0,
            code,
            reason: Some(reason(code).into()),
        }),
        ..Request::new(
            ids.ident(),
            Method::Report,
            head.from_path.clone(),
            head.to_path.iter().take(1).cloned().collect(),
        )
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

/// Our SDP answer: passive, receive only (RFC 4975 §8.1, RFC 6135).
/// `id` is the o= line's session id and version (random).
fn answer_sdp(ip: IpAddr, port: u16, path: &str, max: usize, id: u32) -> String {
    let (fam, ip) = match ip {
        IpAddr::V4(a) => ("IP4", a.to_string()),
        IpAddr::V6(a) => ("IP6", a.to_string()),
    };
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
