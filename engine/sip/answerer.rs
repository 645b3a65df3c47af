//! A small SIP answering endpoint for `iwf demo` and tests.
//!
//! It listens on UDP, TCP and/or TLS, reports every request it receives (method, Request-URI,
//! headers, body) on a channel, and answers as its [`Policy`] says: by default every
//! MESSAGE with one status (200 unless told), INVITE with 488 (large mode comes later),
//! ACK with nothing, BYE/CANCEL/OPTIONS with 200.
//!
//! It is written on plain tokio sockets with its own small parser rather than on
//! rsipstack, on purpose: tests of the rsipstack-based client then talk to an independent
//! implementation, and the answerer can do what a well-behaved stack would not (never
//! answer, answer late, send any status and headers). It still behaves as a UAS on UDP:
//! a retransmitted request is not reported again and gets the same response again.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rsipstack::platform::CancellationToken;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;

use super::next_hop::Transport;
use crate::clock::Clock;
use crate::ids::Ids;

/// Largest header section and body accepted.
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 1024 * 1024;
/// How long a UDP transaction is remembered for retransmissions (64·T1 at T1 = 500 ms).
const REMEMBER: Duration = Duration::from_secs(32);

/// One request as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedRequest {
    pub transport: Transport,
    pub peer: SocketAddr,
    pub method: String,
    pub request_uri: String,
    /// Header lines in order, names as written, folded lines joined.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl ReceivedRequest {
    /// The first header of that name (case-insensitive; compact forms are not expanded).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What to do with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Send this final response, after `delay`.
    Respond {
        status: u16,
        reason: String,
        headers: Vec<(String, String)>,
        /// Content type and body.
        body: Option<(String, Vec<u8>)>,
        delay: Duration,
    },
    /// Send nothing.
    Ignore,
}

impl Reply {
    /// `status` with its standard reason phrase, at once, no extra headers.
    pub fn status(status: u16) -> Self {
        Reply::Respond {
            status,
            reason: reason_phrase(status).to_string(),
            headers: vec![],
            body: None,
            delay: Duration::ZERO,
        }
    }

    /// Adds a body of `content_type`.
    pub fn with_body(mut self, content_type: &str, bytes: &[u8]) -> Self {
        if let Reply::Respond { body, .. } = &mut self {
            *body = Some((content_type.to_string(), bytes.to_vec()));
        }
        self
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        if let Reply::Respond { headers, .. } = &mut self {
            headers.push((name.to_string(), value.to_string()));
        }
        self
    }

    /// Answers only after `delay`.
    pub fn after(mut self, d: Duration) -> Self {
        if let Reply::Respond { delay, .. } = &mut self {
            *delay = d;
        }
        self
    }
}

/// Decides the reply for each request.
pub type Policy = Arc<dyn Fn(&ReceivedRequest) -> Reply + Send + Sync>;

/// Where to listen and how to answer.
#[derive(Clone)]
pub struct AnswererConfig {
    /// Default `127.0.0.1:0`.
    pub udp: Option<SocketAddr>,
    /// Default `127.0.0.1:0`.
    pub tcp: Option<SocketAddr>,
    /// Default none.
    pub tls: Option<AnswererTls>,
    pub policy: Policy,
    /// How long UDP transactions are remembered is measured on this clock. Default: the
    /// system clock.
    pub clock: Arc<dyn Clock>,
    /// To tags come from here. Default: random.
    pub ids: Arc<dyn Ids>,
}

/// A TLS listener: address, certificate chain and private key, PEM.
#[derive(Clone)]
pub struct AnswererTls {
    pub addr: SocketAddr,
    pub cert_chain_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

fn tls_acceptor(t: &AnswererTls) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    use crate::tls::TlsConfigError;
    let config =
        crate::tls::server_config_from_pem(&t.cert_chain_pem, &t.key_pem).map_err(|e| match e {
            TlsConfigError::Pem(e) => e,
            e => std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()),
        })?;
    Ok(tokio_rustls::TlsAcceptor::from(config))
}

impl Default for AnswererConfig {
    fn default() -> Self {
        Self::status(200)
    }
}

impl AnswererConfig {
    /// Answers MESSAGE with `status`, everything else as the module docs say.
    pub fn status(status: u16) -> Self {
        Self::with_policy(move |r| default_reply(status, r))
    }

    /// Never answers anything (for timeout tests).
    pub fn silent() -> Self {
        Self::with_policy(|_| Reply::Ignore)
    }

    pub fn with_policy(f: impl Fn(&ReceivedRequest) -> Reply + Send + Sync + 'static) -> Self {
        let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        AnswererConfig {
            udp: Some(local),
            tcp: Some(local),
            tls: None,
            policy: Arc::new(f),
            clock: crate::clock::system(),
            ids: Arc::new(crate::ids::RandomIds),
        }
    }
}

/// The reply of [`AnswererConfig::status`]: MESSAGE → `status`, INVITE → 488, ACK → none,
/// BYE/CANCEL/OPTIONS → 200, other methods → 405.
pub fn default_reply(status: u16, req: &ReceivedRequest) -> Reply {
    match req.method.as_str() {
        "MESSAGE" => Reply::status(status),
        "INVITE" => Reply::status(488),
        "ACK" => Reply::Ignore,
        "BYE" | "CANCEL" | "OPTIONS" => Reply::status(200),
        _ => Reply::status(405).with_header("Allow", "MESSAGE, INVITE, ACK, BYE, CANCEL, OPTIONS"),
    }
}

/// A running answerer; dropping it stops it.
pub struct Answerer {
    udp_addr: Option<SocketAddr>,
    tcp_addr: Option<SocketAddr>,
    tls_addr: Option<SocketAddr>,
    cancel: CancellationToken,
}

impl Answerer {
    /// Binds and starts serving; requests are reported on the returned channel.
    pub async fn start(
        config: AnswererConfig,
    ) -> std::io::Result<(Answerer, mpsc::UnboundedReceiver<ReceivedRequest>)> {
        let (report, reports) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let mut udp_addr = None;
        let mut tcp_addr = None;
        if let Some(addr) = config.udp {
            let sock = Arc::new(UdpSocket::bind(addr).await?);
            udp_addr = Some(sock.local_addr()?);
            tokio::spawn(serve_udp(
                sock,
                config.clock.clone(),
                config.ids.clone(),
                config.policy.clone(),
                report.clone(),
                cancel.clone(),
            ));
        }
        if let Some(addr) = config.tcp {
            let listener = TcpListener::bind(addr).await?;
            tcp_addr = Some(listener.local_addr()?);
            tokio::spawn(serve_tcp(
                listener,
                None,
                config.ids.clone(),
                config.policy.clone(),
                report.clone(),
                cancel.clone(),
            ));
        }
        let mut tls_addr = None;
        if let Some(tls) = &config.tls {
            let acceptor = tls_acceptor(tls)?;
            let listener = TcpListener::bind(tls.addr).await?;
            tls_addr = Some(listener.local_addr()?);
            tokio::spawn(serve_tcp(
                listener,
                Some(acceptor),
                config.ids,
                config.policy,
                report,
                cancel.clone(),
            ));
        }
        Ok((
            Answerer {
                udp_addr,
                tcp_addr,
                tls_addr,
                cancel,
            },
            reports,
        ))
    }

    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp_addr
    }

    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// `sip:USER@ADDR;transport=udp|tcp` addressing this answerer.
    pub fn uri(&self, user: &str, transport: Transport) -> Option<String> {
        let addr = match transport {
            Transport::Udp => self.udp_addr?,
            Transport::Tcp => self.tcp_addr?,
            Transport::Tls => self.tls_addr?,
        };
        Some(format!(
            "sip:{user}@{addr};transport={}",
            transport.via_name().to_ascii_lowercase()
        ))
    }

    pub fn shutdown(&self) {
        self.cancel.cancel();
    }
}

impl Drop for Answerer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// UDP: per branch, the response sent (None while a delayed answer is pending).
type Remembered = Arc<Mutex<HashMap<String, (tokio::time::Instant, Option<Vec<u8>>)>>>;

async fn serve_udp(
    sock: Arc<UdpSocket>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn Ids>,
    policy: Policy,
    report: mpsc::UnboundedSender<ReceivedRequest>,
    cancel: CancellationToken,
) {
    let remembered: Remembered = Arc::new(Mutex::new(HashMap::new()));
    let mut buf = vec![0u8; 65536];
    loop {
        let (len, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(_) => continue,
            },
        };
        let Some(req) = parse_datagram(&buf[..len], peer) else {
            continue;
        };
        let key = format!("{} {}", req.method, top_branch(&req).unwrap_or_default());
        {
            let mut seen = lock(&remembered);
            let now = clock.instant();
            seen.retain(|_, (at, _)| now.duration_since(*at) < REMEMBER);
            if let Some((_, sent)) = seen.get(&key) {
                if let Some(bytes) = sent {
                    let _ = sock.try_send_to(bytes, peer);
                }
                continue;
            }
            seen.insert(key.clone(), (now, None));
        }
        let reply = policy(&req);
        let _ = report.send(req.clone());
        let Reply::Respond {
            status,
            reason,
            headers,
            body,
            delay,
        } = reply
        else {
            continue;
        };
        let bytes = response_bytes(&*ids, &req, status, &reason, &headers, body.as_ref());
        let (sock, remembered, cancel) = (sock.clone(), remembered.clone(), cancel.clone());
        let send = async move {
            if !delay.is_zero() {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            let _ = sock.send_to(&bytes, peer).await;
            if let Some(e) = lock(&remembered).get_mut(&key) {
                e.1 = Some(bytes);
            }
        };
        if delay.is_zero() {
            send.await;
        } else {
            tokio::spawn(send);
        }
    }
}

async fn serve_tcp(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    ids: Arc<dyn Ids>,
    policy: Policy,
    report: mpsc::UnboundedSender<ReceivedRequest>,
    cancel: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => continue,
            },
        };
        let (ids, policy, report, cancel) =
            (ids.clone(), policy.clone(), report.clone(), cancel.clone());
        match &tls {
            None => {
                tokio::spawn(serve_stream(
                    stream,
                    Transport::Tcp,
                    peer,
                    ids,
                    policy,
                    report,
                    cancel,
                ));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(Duration::from_secs(5), acceptor.accept(stream));
                    if let Ok(Ok(tls)) = handshake.await {
                        serve_stream(tls, Transport::Tls, peer, ids, policy, report, cancel).await;
                    }
                });
            }
        }
    }
}

async fn serve_stream<S>(
    stream: S,
    transport: Transport,
    peer: SocketAddr,
    ids: Arc<dyn Ids>,
    policy: Policy,
    report: mpsc::UnboundedSender<ReceivedRequest>,
    cancel: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut rd, wr) = tokio::io::split(stream);
    let wr = Arc::new(tokio::sync::Mutex::new(wr));
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 16384];
    loop {
        // Take every complete message out of the buffer.
        loop {
            match frame(&buf, true) {
                Frame::Need => break,
                Frame::Bad => return,
                Frame::Skip(n) => {
                    buf.drain(..n);
                }
                Frame::Message { head, body, total } => {
                    let req =
                        parse_head(&buf[..head]).map(|(method, uri, headers)| ReceivedRequest {
                            transport,
                            peer,
                            method,
                            request_uri: uri,
                            headers,
                            body: buf[head + 4..head + 4 + body].to_vec(),
                        });
                    buf.drain(..total);
                    let Some(req) = req else { continue };
                    let reply = policy(&req);
                    let _ = report.send(req.clone());
                    if let Reply::Respond {
                        status,
                        reason,
                        headers,
                        body,
                        delay,
                    } = reply
                    {
                        let bytes =
                            response_bytes(&*ids, &req, status, &reason, &headers, body.as_ref());
                        let wr = wr.clone();
                        let cancel = cancel.clone();
                        tokio::spawn(async move {
                            tokio::select! {
                                _ = cancel.cancelled() => {}
                                _ = tokio::time::sleep(delay) => {
                                    let _ = wr.lock().await.write_all(&bytes).await;
                                }
                            }
                        });
                    }
                }
            }
        }
        let n = tokio::select! {
            _ = cancel.cancelled() => return,
            r = rd.read(&mut chunk) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
        };
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Result of looking for one message at the start of a stream buffer.
#[derive(Debug, PartialEq, Eq)]
enum Frame {
    Need,
    Bad,
    /// Leading CRLF keep-alives to drop.
    Skip(usize),
    /// `head` = length of the header section (without the blank line), `body` = body
    /// length, `total` = bytes the message takes.
    Message {
        head: usize,
        body: usize,
        total: usize,
    },
}

fn frame(buf: &[u8], stream: bool) -> Frame {
    let lead = buf
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count();
    if lead > 0 {
        return Frame::Skip(lead);
    }
    let Some(head) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD {
            Frame::Bad
        } else {
            Frame::Need
        };
    };
    if head > MAX_HEAD {
        return Frame::Bad;
    }
    let text = String::from_utf8_lossy(&buf[..head]);
    let declared = text.split("\r\n").skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        let n = n.trim();
        (n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("l"))
            .then(|| v.trim().parse::<usize>().ok())
    });
    let available = buf.len() - head - 4;
    let body = match declared {
        Some(Some(n)) if n <= MAX_BODY => n,
        Some(_) => return Frame::Bad,
        None if stream => 0,
        None => available,
    };
    if available < body {
        return if stream { Frame::Need } else { Frame::Bad };
    }
    Frame::Message {
        head,
        body,
        total: head + 4 + body,
    }
}

fn parse_datagram(data: &[u8], peer: SocketAddr) -> Option<ReceivedRequest> {
    let lead = data
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count();
    let data = &data[lead..];
    let Frame::Message { head, body, .. } = frame(data, false) else {
        return None;
    };
    let (method, request_uri, headers) = parse_head(&data[..head])?;
    Some(ReceivedRequest {
        transport: Transport::Udp,
        peer,
        method,
        request_uri,
        headers,
        body: data[head + 4..head + 4 + body].to_vec(),
    })
}

/// Request line and header lines; `None` for a response or a malformed request line.
/// Method, Request-URI, header lines.
type Head = (String, String, Vec<(String, String)>);

fn parse_head(head: &[u8]) -> Option<Head> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?;
    let uri = first.next()?;
    if first.next()? != "SIP/2.0" || method.is_empty() || method.starts_with("SIP/") {
        return None;
    }
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = headers.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        let (n, v) = line.split_once(':')?;
        headers.push((n.trim().to_string(), v.trim().to_string()));
    }
    Some((method.to_string(), uri.to_string(), headers))
}

fn top_branch(req: &ReceivedRequest) -> Option<String> {
    let via = req
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("via") || n.eq_ignore_ascii_case("v"))?
        .1
        .as_str();
    let first = via.split(',').next()?;
    first.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("branch")
            .then(|| v.trim().to_string())
    })
}

/// A response to `req`: its Via, From, To (with a tag), Call-ID and CSeq, then `extra`.
fn response_bytes(
    ids: &dyn Ids,
    req: &ReceivedRequest,
    status: u16,
    reason: &str,
    extra: &[(String, String)],
    body: Option<&(String, Vec<u8>)>,
) -> Vec<u8> {
    let mut out = format!("SIP/2.0 {status} {}\r\n", clean(reason));
    let copy = ["via", "v", "from", "f", "to", "t", "call-id", "i", "cseq"];
    for (n, v) in &req.headers {
        let lower = n.to_ascii_lowercase();
        if !copy.contains(&lower.as_str()) {
            continue;
        }
        out.push_str(&format!("{n}: {v}"));
        if (lower == "to" || lower == "t") && !v.to_ascii_lowercase().contains(";tag=") {
            out.push_str(&format!(";tag={}", ids.hex(8)));
        }
        out.push_str("\r\n");
    }
    for (n, v) in extra {
        out.push_str(&format!("{}: {}\r\n", clean(n), clean(v)));
    }
    out.push_str("Server: iwf-answerer\r\n");
    match body {
        Some((ct, b)) => {
            out.push_str(&format!(
                "Content-Type: {}\r\nContent-Length: {}\r\n\r\n",
                clean(ct),
                b.len()
            ));
            let mut bytes = out.into_bytes();
            bytes.extend_from_slice(b);
            bytes
        }
        None => {
            out.push_str("Content-Length: 0\r\n\r\n");
            out.into_bytes()
        }
    }
}

/// No line breaks from a policy reach the wire.
fn clean(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).collect()
}

/// Standard reason phrases (RFC 3261 §21 and later RFCs), or a class default.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        305 => "Use Proxy",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        485 => "Ambiguous",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => match status / 100 {
            1 => "Provisional",
            2 => "Success",
            3 => "Redirection",
            4 => "Client Error",
            5 => "Server Error",
            _ => "Global Failure",
        },
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: &str = "MESSAGE sip:bob@127.0.0.1 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKabc\r\n\
        From: <sip:a@b>;tag=1\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: c@h\r\n\
        CSeq: 1 MESSAGE\r\nSubject: folded\r\n  line\r\nContent-Length: 2\r\n\r\nhi";

    #[test]
    fn frames_stream_messages() {
        let mut two = format!("\r\n{REQ}{REQ}").into_bytes();
        assert_eq!(frame(&two, true), Frame::Skip(2));
        two.drain(..2);
        let Frame::Message { total, body, .. } = frame(&two, true) else {
            panic!()
        };
        assert_eq!((total, body), (REQ.len(), 2));
        assert_eq!(frame(&two[..total - 1], true), Frame::Need);
        assert_eq!(
            frame(b"MESSAGE x SIP/2.0\r\nl: 99999999\r\n\r\n", true),
            Frame::Bad
        );
    }

    #[test]
    fn parses_requests() {
        let peer = "127.0.0.1:9".parse().unwrap();
        let r = parse_datagram(REQ.as_bytes(), peer).unwrap();
        assert_eq!(r.method, "MESSAGE");
        assert_eq!(r.request_uri, "sip:bob@127.0.0.1");
        assert_eq!(r.header("subject"), Some("folded line"));
        assert_eq!(r.body, b"hi");
        assert_eq!(top_branch(&r).as_deref(), Some("z9hG4bKabc"));
        assert!(parse_datagram(b"SIP/2.0 200 OK\r\n\r\n", peer).is_none());
        for junk in [
            &b""[..],
            b"\r\n",
            b"x\r\n\r\n",
            b"A B C\r\nno colon\r\n\r\n",
            &[0xff; 10],
        ] {
            assert!(parse_datagram(junk, peer).is_none());
        }
    }

    #[test]
    fn builds_responses() {
        let peer = "127.0.0.1:9".parse().unwrap();
        let r = parse_datagram(REQ.as_bytes(), peer).unwrap();
        let bytes = response_bytes(
            &crate::ids::RandomIds,
            &r,
            302,
            "Moved\r\nX: y",
            &[("Contact".into(), "<sip:c@d>".into())],
            Some(&("text/plain".into(), b"body".to_vec())),
        );
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with(
            "SIP/2.0 302 MovedX: y\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKabc\r\n"
        ));
        assert!(text.contains("To: <sip:bob@127.0.0.1>;tag="));
        assert!(text.contains("CSeq: 1 MESSAGE\r\nContact: <sip:c@d>\r\n"));
        assert!(text.ends_with("Content-Type: text/plain\r\nContent-Length: 4\r\n\r\nbody"));
    }
}
