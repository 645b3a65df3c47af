//! The sending side of Large Message Mode: a thin async MSRP client.
//!
//! [`connect`] opens the connection to the answer's `a=path` (`msrp://` plain TCP,
//! `msrps://` TLS with the given connector); [`Client`] works over any
//! `AsyncRead + AsyncWrite + Unpin` stream, so tests can also use in-memory pipes.
//!
//! [`Client::send`] sends one message as chunks (see [`Chunks`]) stop-and-wait: write a
//! chunk, wait up to [`ClientConfig::response_timeout`] for its transaction response,
//! then the next. While it waits it also handles what the peer sends unprompted:
//!
//! * `REPORT` for our Message-ID: `Status: 000 200` is delivery evidence
//!   ([`SendOutcome::Delivered::success_report`]); any other status ends the send as
//!   [`SendOutcome::Rejected`]. REPORTs are never answered (RFC 4975 §7.1.2).
//! * `SEND` from the peer (we offered `sendonly`): an empty one, which peers use to bind
//!   the connection, gets `200`; one with content gets `403`; `Failure-Report` is
//!   honoured. Other methods get `501`.
//! * Responses for other transactions (e.g. to an abort) are ignored.
//!
//! When the send fails between chunks (error response, timeout, negative REPORT) the
//! client aborts the message with an empty SEND ending in `#` for the remaining range
//! (§7.1), without waiting for its answer. Only the chunk being written is copied into
//! the write buffer; the content itself is a [`Bytes`] sliced per chunk.
//!
//! After the last `200`, if `Success-Report: yes` was asked and no REPORT arrived yet,
//! the client waits up to [`ClientConfig::report_timeout`] for it.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_rustls::TlsConnector;

use super::codec::{
    ChunkTemplate, Chunks, FailureReport, Flag, Frame, Limits, Method, MsrpUri, Parser, Request,
    UriError,
};
use crate::clock::Clock;
use crate::ids::Ids;
use crate::mail_to_cpm::outcome::{FailureKind, Layer, Outcome};
use crate::mail_to_cpm::plan::Mode;
use crate::render::body::Body;

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Octets of content per SEND (minimum 1).
    pub chunk_size: usize,
    /// How long to wait for each chunk's transaction response after writing it; also
    /// bounds each write.
    pub response_timeout: Duration,
    /// How long to wait after the last 200 for a requested success REPORT.
    pub report_timeout: Duration,
    /// Parser limits for what the peer sends.
    pub limits: Limits,
    /// Response and report deadlines are taken on this clock. Default: the system clock.
    pub clock: Arc<dyn Clock>,
    /// Message-IDs and transaction ids come from here. Default: random.
    pub ids: Arc<dyn Ids>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            chunk_size: 2048,
            response_timeout: Duration::from_secs(30),
            report_timeout: Duration::from_secs(5),
            limits: Limits {
                max_header_bytes: 16 * 1024,
                max_body_bytes: 1024 * 1024,
            },
            clock: crate::clock::system(),
            ids: crate::ids::random(),
        }
    }
}

/// One message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// The peer's `a=path` URIs.
    pub to_path: Vec<String>,
    /// Our own `a=path` URI.
    pub from_path: Vec<String>,
    /// `None`: a random one.
    pub message_id: Option<String>,
    pub content_type: String,
    /// Ask for a success REPORT (`Success-Report: yes`).
    pub success_report: bool,
    /// `No` and `Partial` mean no 200 is expected, so the client does not wait for one.
    pub failure_report: FailureReport,
}

impl OutgoingMessage {
    /// A message with `Failure-Report: yes` (header omitted) and no success report.
    pub fn new(
        to: impl Into<String>,
        from: impl Into<String>,
        content_type: impl Into<String>,
    ) -> Self {
        OutgoingMessage {
            to_path: vec![to.into()],
            from_path: vec![from.into()],
            message_id: None,
            content_type: content_type.into(),
            success_report: false,
            failure_report: FailureReport::Yes,
        }
    }
}

/// How a send ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// Every chunk was answered 200 (or, without Failure-Report yes, written).
    Delivered {
        /// A REPORT with `Status: 000 200` arrived for the message.
        success_report: bool,
        chunks: usize,
    },
    /// A transaction response >= 300, or a negative REPORT.
    Rejected { status: u16, text: String },
    /// No response (or a write blocked) within the configured timeout.
    Timeout,
    /// The peer closed or reset the connection, or sent unparseable data.
    ConnectionLost { detail: String },
    /// The connection could not be opened (see [`connect`]).
    ConnectRefused { detail: String },
}

impl SendOutcome {
    /// The outcome in the terms of the response phase (mapping-reference §3.1).
    pub fn into_outcome(self) -> Outcome {
        let failure = |kind, detail| Outcome::Failure {
            kind,
            detail,
            mode: Mode::Large,
        };
        match self {
            SendOutcome::Delivered { .. } => Outcome::Final {
                protocol: Layer::Msrp,
                status: 200,
                reason: "OK".into(),
                headers: Vec::new(),
                mode: Mode::Large,
            },
            SendOutcome::Rejected { status, text } => Outcome::Final {
                protocol: Layer::Msrp,
                status,
                reason: text,
                headers: Vec::new(),
                mode: Mode::Large,
            },
            SendOutcome::Timeout => {
                failure(FailureKind::MsrpLost, "no MSRP response in time".into())
            }
            SendOutcome::ConnectionLost { detail } => failure(FailureKind::MsrpLost, detail),
            SendOutcome::ConnectRefused { detail } => failure(FailureKind::MsrpConnect, detail),
        }
    }
}

/// Why [`connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    BadUri(#[from] UriError),
    #[error("msrps URI but no TLS connector configured")]
    TlsRequired,
    #[error("invalid TLS server name {0:?}")]
    BadServerName(String),
    #[error("connect to {addr} failed: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("connect to {0} timed out")]
    Timeout(String),
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls { addr: String, source: io::Error },
}

impl From<ConnectError> for SendOutcome {
    fn from(e: ConnectError) -> Self {
        SendOutcome::ConnectRefused {
            detail: e.to_string(),
        }
    }
}

/// A connection opened by [`connect`]: plain TCP or TLS ([`crate::tls::MaybeTls`]).
pub type MsrpStream = crate::tls::MaybeTls;

/// Opens a connection to the host and port of an MSRP URI (`msrp://host:port/s;tcp`,
/// or `msrps://…` over TLS, which needs `tls`). The whole connect, TLS handshake
/// included, is bounded by `connect_timeout`.
pub async fn connect(
    path_uri: &str,
    tls: Option<&TlsConnector>,
    connect_timeout: Duration,
) -> Result<MsrpStream, ConnectError> {
    let uri = MsrpUri::parse(path_uri)?;
    let tls = match (uri.secure, tls) {
        (true, None) => return Err(ConnectError::TlsRequired),
        (true, Some(c)) => Some(c.clone()),
        (false, _) => None,
    };
    let addr = if uri.host.contains(':') {
        format!("[{}]:{}", uri.host, uri.port)
    } else {
        format!("{}:{}", uri.host, uri.port)
    };
    let work = async {
        let tcp = TcpStream::connect(&addr)
            .await
            .map_err(|source| ConnectError::Connect {
                addr: addr.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let Some(connector) = tls else {
            return Ok(MsrpStream::Plain(tcp));
        };
        let name = rustls::pki_types::ServerName::try_from(uri.host.clone())
            .map_err(|_| ConnectError::BadServerName(uri.host.clone()))?;
        let stream = connector
            .connect(name, tcp)
            .await
            .map_err(|source| ConnectError::Tls {
                addr: addr.clone(),
                source,
            })?;
        Ok(MsrpStream::from(stream))
    };
    timeout(connect_timeout, work)
        .await
        .unwrap_or_else(|_| Err(ConnectError::Timeout(addr.clone())))
}

/// What waiting for a transaction produced.
enum Wait {
    /// The awaited transaction's response.
    Response {
        status: u16,
        text: String,
    },
    /// A REPORT with `Status: 000 200` for our message (only returned when no
    /// transaction response is awaited).
    Reported,
    /// A REPORT with a non-200 status for our message.
    NegativeReport {
        status: u16,
        text: String,
    },
    Timeout,
    Lost(String),
}

/// An MSRP client over one connection. See the [module docs](self).
#[derive(Debug)]
pub struct Client<S> {
    io: S,
    parser: Parser,
    config: ClientConfig,
    out: BytesMut,
    read_buf: Box<[u8]>,
    /// Set when the connection can no longer be used (lost, or a write timed out
    /// mid-frame).
    broken: Option<String>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    pub fn new(io: S, config: ClientConfig) -> Self {
        Client {
            io,
            parser: Parser::new(config.limits),
            config,
            out: BytesMut::new(),
            read_buf: vec![0u8; 16 * 1024].into_boxed_slice(),
            broken: None,
        }
    }

    /// Gives the stream back (e.g. to shut it down).
    pub fn into_inner(self) -> S {
        self.io
    }

    /// Sends `content` as one MSRP message. `content` is sliced per chunk, not copied (a
    /// [`Body`] of two pieces: only a chunk that spans both is assembled).
    pub async fn send(&mut self, msg: &OutgoingMessage, content: impl Into<Body>) -> SendOutcome {
        self.send_body(msg, content.into()).await
    }

    async fn send_body(&mut self, msg: &OutgoingMessage, content: Body) -> SendOutcome {
        if let Some(why) = &self.broken {
            return SendOutcome::ConnectionLost {
                detail: why.clone(),
            };
        }
        let message_id = msg
            .message_id
            .clone()
            .unwrap_or_else(|| self.config.ids.ident());
        let template = ChunkTemplate {
            to_path: msg.to_path.clone(),
            from_path: msg.from_path.clone(),
            message_id: message_id.clone(),
            content_type: msg.content_type.clone(),
            success_report: msg.success_report.then_some(true),
            failure_report: (msg.failure_report != FailureReport::Yes)
                .then_some(msg.failure_report),
        };
        let ids = self.config.ids.clone();
        let mut chunks = Chunks::new(template, content, self.config.chunk_size, &*ids);
        let mut count = 0;
        let mut success_report = false;
        while let Some(chunk) = chunks.next() {
            count += 1;
            let last = chunk.flag == Flag::End;
            if let Err(o) = self.write_request(&chunk).await {
                return o;
            }
            if msg.failure_report != FailureReport::Yes {
                continue;
            }
            let deadline = self.config.clock.instant() + self.config.response_timeout;
            let failed = match self
                .wait(Some(&chunk.tid), &message_id, &mut success_report, deadline)
                .await
            {
                Wait::Response { status, .. } if status < 300 => continue,
                Wait::Reported => continue,
                Wait::Response { status, text } | Wait::NegativeReport { status, text } => {
                    SendOutcome::Rejected { status, text }
                }
                Wait::Timeout => SendOutcome::Timeout,
                Wait::Lost(detail) => return self.lost(detail),
            };
            if !last {
                self.abort(chunks.template(), chunks.sent(), chunks.total())
                    .await;
            }
            return failed;
        }
        if msg.success_report && !success_report {
            let deadline = self.config.clock.instant() + self.config.report_timeout;
            match self
                .wait(None, &message_id, &mut success_report, deadline)
                .await
            {
                Wait::NegativeReport { status, text } => {
                    return SendOutcome::Rejected { status, text };
                }
                // Missing REPORT is not a failure: delivery is just unconfirmed.
                Wait::Reported | Wait::Timeout | Wait::Response { .. } => {}
                Wait::Lost(detail) => {
                    self.broken = Some(detail);
                }
            }
        }
        SendOutcome::Delivered {
            // Evidence only counts when it was asked for.
            success_report: success_report && msg.success_report,
            chunks: count,
        }
    }

    fn lost(&mut self, detail: String) -> SendOutcome {
        self.broken = Some(detail.clone());
        SendOutcome::ConnectionLost { detail }
    }

    /// Renders and writes one request, bounded by the response timeout.
    async fn write_request(&mut self, req: &Request) -> Result<(), SendOutcome> {
        self.out.clear();
        req.render(&mut self.out);
        self.write_out().await
    }

    async fn write_out(&mut self) -> Result<(), SendOutcome> {
        let write = async {
            self.io.write_all(&self.out).await?;
            self.io.flush().await
        };
        match timeout(self.config.response_timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.lost(format!("write failed: {e}"))),
            Err(_) => {
                // Part of a frame may be on the wire: the connection is unusable.
                self.broken = Some("write timed out".into());
                Err(SendOutcome::Timeout)
            }
        }
    }

    /// Gives up on the message after `sent` octets: an empty SEND with flag `#`.
    async fn abort(&mut self, template: &ChunkTemplate, sent: u64, total: u64) {
        let req = template.abort(self.config.ids.ident(), sent, total);
        if self.write_request(&req).await.is_err() {
            tracing::debug!("msrp client: could not send the abort");
        }
    }

    /// Reads frames until the response to `tid` arrives (or, with `tid` None, until a
    /// REPORT for the message settles the success report), the deadline passes or the
    /// connection fails. Unsolicited requests are handled on the way.
    async fn wait(
        &mut self,
        tid: Option<&str>,
        message_id: &str,
        success: &mut bool,
        deadline: Instant,
    ) -> Wait {
        loop {
            let frame = match self.parser.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => match timeout_at(deadline, self.io.read(&mut self.read_buf)).await {
                    Err(_) => return Wait::Timeout,
                    Ok(Ok(0)) => return Wait::Lost("peer closed the connection".into()),
                    Ok(Err(e)) => return Wait::Lost(format!("read failed: {e}")),
                    Ok(Ok(n)) => {
                        let data = self.read_buf.get(..n).unwrap_or_default();
                        match self.parser.feed(data) {
                            Ok(Some(f)) => f,
                            Ok(None) => continue,
                            Err(e) => {
                                return Wait::Lost(format!("unparseable MSRP from peer: {e}"));
                            }
                        }
                    }
                },
                Err(e) => return Wait::Lost(format!("unparseable MSRP from peer: {e}")),
            };
            match frame {
                Frame::Response(r) if Some(r.tid.as_str()) == tid => {
                    return Wait::Response {
                        status: r.status,
                        text: r.comment.unwrap_or_default(),
                    };
                }
                Frame::Response(r) => {
                    tracing::debug!(tid = %r.tid, status = r.status, "msrp client: stray response")
                }
                Frame::Request(req) => match &req.method {
                    Method::Report => {
                        if req.message_id.as_deref() != Some(message_id) {
                            continue;
                        }
                        match req.status {
                            Some(st) if st.namespace == 0 && st.code == 200 => {
                                *success = true;
                                if tid.is_none() {
                                    return Wait::Reported;
                                }
                            }
                            Some(st) => {
                                return Wait::NegativeReport {
                                    status: st.code,
                                    text: st.reason.unwrap_or_default(),
                                };
                            }
                            None => {}
                        }
                    }
                    Method::Send | Method::Other(_) => {
                        if let Err(o) = self.answer_unsolicited(&req).await {
                            return match o {
                                SendOutcome::ConnectionLost { detail } => Wait::Lost(detail),
                                _ => Wait::Timeout,
                            };
                        }
                    }
                },
            }
        }
    }

    /// Answers a request the peer sent us (we are the sending side).
    async fn answer_unsolicited(&mut self, req: &Request) -> Result<(), SendOutcome> {
        let (status, text) = match req.method {
            Method::Send if req.body.as_ref().is_none_or(Bytes::is_empty) => (200, "OK"),
            Method::Send => (403, "Action-not-allowed"),
            _ => (501, "Request-method-not-understood"),
        };
        let wanted = match req.failure_report.unwrap_or(FailureReport::Yes) {
            FailureReport::Yes => true,
            FailureReport::No => false,
            FailureReport::Partial => status >= 300,
        };
        tracing::debug!(
            method = req.method.as_str(),
            status,
            "msrp client: unsolicited request"
        );
        if !wanted {
            return Ok(());
        }
        self.out.clear();
        req.response(status, text).render(&mut self.out);
        self.write_out().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msrp::codec::{ByteRange, Status};
    use crate::msrp::receiver::{Fault, Receiver, ReceiverConfig};
    use tokio::io::DuplexStream;

    const ME: &str = "msrp://192.0.2.10:2855/s8Kf02jqx;tcp";

    /// Content that is hostile to framing: CRLFs, hyphen runs, fake end-lines.
    fn content(len: usize) -> Bytes {
        let mut x: u32 = 0x2545_f491;
        let mut v = Vec::with_capacity(len);
        while v.len() < len {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            match x % 16 {
                0 => v.extend_from_slice(b"\r\n-------"),
                1 => v.extend_from_slice(b"\r\n"),
                _ => v.push(x as u8),
            }
        }
        v.truncate(len);
        Bytes::from(v)
    }

    fn config(chunk_size: usize, response_timeout: Duration) -> ClientConfig {
        ClientConfig {
            chunk_size,
            response_timeout,
            report_timeout: Duration::from_secs(2),
            ..ClientConfig::default()
        }
    }

    async fn start(
        fault: Fault,
    ) -> (
        Receiver,
        tokio::sync::mpsc::Receiver<crate::msrp::ReceivedMessage>,
    ) {
        Receiver::bind(
            "127.0.0.1:0",
            ReceiverConfig {
                fault,
                ..ReceiverConfig::default()
            },
        )
        .await
        .expect("bind")
    }

    /// Bounds every socket test.
    async fn bounded<F: std::future::Future>(f: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(60), f)
            .await
            .expect("test took too long")
    }

    #[tokio::test]
    async fn delivers_byte_for_byte_over_tcp() {
        bounded(async {
            let (peer, mut inbox) = start(Fault::None).await;
            let cases = [
                (5 * 1024, 2048),
                (100 * 1024, 2048),
                (100 * 1024, 10 * 1024),
                (5 * 1024 * 1024, 2048),
                (5 * 1024 * 1024, 10 * 1024),
            ];
            for (len, chunk) in cases {
                let to = peer.uri("rA9xq");
                let stream = connect(&to, None, Duration::from_secs(5))
                    .await
                    .expect("connect");
                let mut client = Client::new(stream, config(chunk, Duration::from_secs(10)));
                let mut msg = OutgoingMessage::new(to, ME, "message/cpim");
                msg.success_report = true;
                let body = content(len);
                let outcome = client.send(&msg, body.clone()).await;
                assert_eq!(
                    outcome,
                    SendOutcome::Delivered {
                        success_report: true,
                        chunks: len.div_ceil(chunk)
                    },
                    "{len} / {chunk}"
                );
                let got = inbox.recv().await.expect("message");
                assert_eq!(got.content.len(), len);
                assert!(got.content == body, "content differs for {len} / {chunk}");
                assert_eq!(got.content_type.as_deref(), Some("message/cpim"));
                assert_eq!(got.from_path, [ME]);
            }
            peer.shutdown().await;
        })
        .await;
    }

    #[tokio::test]
    async fn two_messages_on_one_connection() {
        bounded(async {
            let (peer, mut inbox) = start(Fault::None).await;
            let to = peer.uri("s");
            let mut client = Client::new(
                connect(&to, None, Duration::from_secs(5))
                    .await
                    .expect("connect"),
                config(2048, Duration::from_secs(10)),
            );
            let msg = OutgoingMessage::new(to, ME, "text/plain");
            for len in [3000, 10] {
                let outcome = client.send(&msg, content(len)).await;
                assert!(
                    matches!(
                        outcome,
                        SendOutcome::Delivered {
                            success_report: false,
                            ..
                        }
                    ),
                    "{outcome:?}"
                );
                assert_eq!(inbox.recv().await.expect("message").content, content(len));
            }
            peer.shutdown().await;
        })
        .await;
    }

    #[tokio::test]
    async fn error_response_is_rejected() {
        bounded(async {
            for code in [403, 413, 415, 481] {
                let (peer, mut inbox) = start(Fault::AnswerStatus(code)).await;
                let to = peer.uri("s");
                let mut client = Client::new(
                    connect(&to, None, Duration::from_secs(5))
                        .await
                        .expect("connect"),
                    config(2048, Duration::from_secs(10)),
                );
                let outcome = client
                    .send(&OutgoingMessage::new(to, ME, "message/cpim"), content(5000))
                    .await;
                assert!(
                    matches!(&outcome, SendOutcome::Rejected { status, .. } if *status == code),
                    "{outcome:?}"
                );
                peer.shutdown().await;
                assert!(inbox.recv().await.is_none(), "nothing delivered");
            }
        })
        .await;
    }

    #[tokio::test]
    async fn silent_peer_times_out_quickly() {
        bounded(async {
            let (peer, _inbox) = start(Fault::StopAnsweringAfter(2)).await;
            let to = peer.uri("s");
            let mut client = Client::new(
                connect(&to, None, Duration::from_secs(5))
                    .await
                    .expect("connect"),
                config(2048, Duration::from_millis(200)),
            );
            let started = std::time::Instant::now();
            let outcome = client
                .send(
                    &OutgoingMessage::new(to, ME, "message/cpim"),
                    content(10 * 1024),
                )
                .await;
            assert_eq!(outcome, SendOutcome::Timeout);
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{:?}",
                started.elapsed()
            );
            peer.shutdown().await;
        })
        .await;
    }

    #[tokio::test]
    async fn connection_refused() {
        bounded(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let port = listener.local_addr().expect("addr").port();
            drop(listener);
            let err = connect(
                &format!("msrp://127.0.0.1:{port}/s;tcp"),
                None,
                Duration::from_secs(5),
            )
            .await
            .expect_err("refused");
            assert!(matches!(err, ConnectError::Connect { .. }), "{err}");
            assert!(matches!(
                SendOutcome::from(err),
                SendOutcome::ConnectRefused { .. }
            ));
        })
        .await;
    }

    #[tokio::test]
    async fn connect_rejects_bad_uris_and_msrps_without_tls() {
        let cases = [
            ("http://127.0.0.1:1/s;tcp", "BadUri"),
            ("msrps://127.0.0.1:1/s;tcp", "TlsRequired"),
        ];
        for (uri, want) in cases {
            let err = connect(uri, None, Duration::from_secs(1))
                .await
                .expect_err(uri);
            assert!(format!("{err:?}").starts_with(want), "{uri}: {err:?}");
        }
    }

    #[tokio::test]
    async fn connection_closed_mid_message() {
        bounded(async {
            let (peer, mut inbox) = start(Fault::CloseAfter(2)).await;
            let to = peer.uri("s");
            let mut client = Client::new(
                connect(&to, None, Duration::from_secs(5))
                    .await
                    .expect("connect"),
                config(2048, Duration::from_secs(10)),
            );
            let msg = OutgoingMessage::new(to, ME, "message/cpim");
            let outcome = client.send(&msg, content(10 * 1024)).await;
            assert!(
                matches!(outcome, SendOutcome::ConnectionLost { .. }),
                "{outcome:?}"
            );
            // The client knows its connection is gone.
            let again = client.send(&msg, content(10)).await;
            assert!(
                matches!(again, SendOutcome::ConnectionLost { .. }),
                "{again:?}"
            );
            peer.shutdown().await;
            assert!(inbox.recv().await.is_none());
        })
        .await;
    }

    #[tokio::test]
    async fn failure_report_no_does_not_wait_for_200() {
        bounded(async {
            let (peer, mut inbox) = start(Fault::None).await;
            let to = peer.uri("s");
            let mut client = Client::new(
                connect(&to, None, Duration::from_secs(5))
                    .await
                    .expect("connect"),
                config(2048, Duration::from_secs(10)),
            );
            let mut msg = OutgoingMessage::new(to, ME, "message/cpim");
            msg.failure_report = FailureReport::No;
            let outcome = client.send(&msg, content(9000)).await;
            assert_eq!(
                outcome,
                SendOutcome::Delivered {
                    success_report: false,
                    chunks: 5
                }
            );
            assert_eq!(inbox.recv().await.expect("message").content, content(9000));
            peer.shutdown().await;
        })
        .await;
    }

    // ---- scripted peer over an in-memory pipe ----

    struct Peer {
        io: DuplexStream,
        parser: Parser,
    }

    impl Peer {
        async fn next(&mut self) -> Option<Frame> {
            let mut buf = [0u8; 4096];
            loop {
                if let Some(f) = self.parser.next_frame().expect("client sends valid MSRP") {
                    return Some(f);
                }
                let n = self.io.read(&mut buf).await.ok()?;
                if n == 0 {
                    return None;
                }
                if let Some(f) = self
                    .parser
                    .feed(&buf[..n])
                    .expect("client sends valid MSRP")
                {
                    return Some(f);
                }
            }
        }

        async fn request(&mut self) -> Request {
            match self.next().await {
                Some(Frame::Request(r)) => r,
                other => panic!("expected a request, got {other:?}"),
            }
        }

        async fn response(&mut self) -> crate::msrp::codec::Response {
            match self.next().await {
                Some(Frame::Response(r)) => r,
                other => panic!("expected a response, got {other:?}"),
            }
        }

        async fn write(&mut self, f: impl Into<Frame>) {
            let mut b = BytesMut::new();
            f.into().render(&mut b);
            self.io.write_all(&b).await.expect("write");
        }
    }

    impl From<Request> for Frame {
        fn from(r: Request) -> Frame {
            Frame::Request(r)
        }
    }

    impl From<crate::msrp::codec::Response> for Frame {
        fn from(r: crate::msrp::codec::Response) -> Frame {
            Frame::Response(r)
        }
    }

    fn pipe(cfg: ClientConfig) -> (Client<DuplexStream>, Peer) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        (
            Client::new(a, cfg),
            Peer {
                io: b,
                parser: Parser::default(),
            },
        )
    }

    fn peer_request(method: Method, body: Option<&'static [u8]>) -> Request {
        Request {
            message_id: Some("peer1".into()),
            content_type: body.map(|_| "text/plain".into()),
            body: body.map(Bytes::from_static),
            ..Request::new(
                crate::ids::RandomIds.ident(),
                method,
                vec![ME.into()],
                vec!["msrp://198.51.100.7:2855/rA9xq;tcp".into()],
            )
        }
    }

    #[tokio::test]
    async fn handles_unsolicited_requests_while_waiting() {
        let (mut client, mut peer) = pipe(config(2048, Duration::from_secs(5)));
        let script = tokio::spawn(async move {
            let chunk = peer.request().await;
            assert_eq!(
                chunk.byte_range.map(|b| b.to_string()).as_deref(),
                Some("1-5/5")
            );
            // SEND with content: refused.
            peer.write(peer_request(Method::Send, Some(b"hi"))).await;
            assert_eq!(peer.response().await.status, 403);
            // Empty SEND (connection binding): accepted.
            peer.write(peer_request(Method::Send, None)).await;
            assert_eq!(peer.response().await.status, 200);
            // Unknown method: 501.
            peer.write(peer_request(Method::Other("AUTH".into()), None))
                .await;
            assert_eq!(peer.response().await.status, 501);
            // A REPORT for another message and a stray response: no answer, no effect.
            peer.write(Request {
                status: Some(Status {
                    namespace: 0,
                    code: 200,
                    reason: None,
                }),
                ..peer_request(Method::Report, None)
            })
            .await;
            peer.write(peer_request(Method::Send, None).response(200, "OK"))
                .await;
            // Finally the awaited 200.
            peer.write(chunk.response(200, "OK")).await;
            peer
        });
        let outcome = client
            .send(
                &OutgoingMessage::new("msrp://198.51.100.7:2855/rA9xq;tcp", ME, "text/plain"),
                Bytes::from_static(b"hello"),
            )
            .await;
        assert_eq!(
            outcome,
            SendOutcome::Delivered {
                success_report: false,
                chunks: 1
            }
        );
        let mut peer = script.await.expect("script");
        // The client answered exactly three requests: nothing else is pending.
        drop(client);
        assert!(peer.next().await.is_none());
    }

    #[tokio::test]
    async fn error_response_aborts_the_rest_of_the_message() {
        let (mut client, mut peer) = pipe(config(2048, Duration::from_secs(5)));
        let script = tokio::spawn(async move {
            let first = peer.request().await;
            peer.write(first.response(413, "Stop-sending-message"))
                .await;
            let abort = peer.request().await;
            (first, abort)
        });
        let outcome = client
            .send(
                &OutgoingMessage::new("msrp://198.51.100.7:2855/rA9xq;tcp", ME, "message/cpim"),
                content(4385),
            )
            .await;
        assert_eq!(
            outcome,
            SendOutcome::Rejected {
                status: 413,
                text: "Stop-sending-message".into()
            }
        );
        let (first, abort) = script.await.expect("script");
        assert_eq!(abort.flag, Flag::Abort);
        assert_eq!(abort.message_id, first.message_id);
        assert_ne!(abort.tid, first.tid);
        assert_eq!(
            abort.byte_range,
            Some(ByteRange {
                start: 2049,
                end: None,
                total: Some(4385)
            })
        );
    }

    #[tokio::test]
    async fn negative_report_rejects() {
        let (mut client, mut peer) = pipe(config(2048, Duration::from_secs(5)));
        let script = tokio::spawn(async move {
            let first = peer.request().await;
            let report = Request {
                message_id: first.message_id.clone(),
                status: Some(Status {
                    namespace: 0,
                    code: 415,
                    reason: Some("MIME-not-understood".into()),
                }),
                ..Request::new(
                    crate::ids::RandomIds.ident(),
                    Method::Report,
                    first.from_path.clone(),
                    first.to_path.clone(),
                )
            };
            peer.write(report).await;
            peer.request().await
        });
        let outcome = client
            .send(
                &OutgoingMessage::new("msrp://198.51.100.7:2855/rA9xq;tcp", ME, "message/cpim"),
                content(3000),
            )
            .await;
        assert_eq!(
            outcome,
            SendOutcome::Rejected {
                status: 415,
                text: "MIME-not-understood".into()
            }
        );
        assert_eq!(script.await.expect("script").flag, Flag::Abort);
    }

    #[tokio::test]
    async fn success_report_before_the_last_200_counts() {
        let (mut client, mut peer) = pipe(config(2048, Duration::from_secs(5)));
        let script = tokio::spawn(async move {
            let chunk = peer.request().await;
            let report = Request {
                message_id: chunk.message_id.clone(),
                status: Some(Status {
                    namespace: 0,
                    code: 200,
                    reason: Some("OK".into()),
                }),
                ..Request::new(
                    crate::ids::RandomIds.ident(),
                    Method::Report,
                    chunk.from_path.clone(),
                    chunk.to_path.clone(),
                )
            };
            peer.write(report).await;
            peer.write(chunk.response(200, "OK")).await;
            peer
        });
        let mut msg =
            OutgoingMessage::new("msrp://198.51.100.7:2855/rA9xq;tcp", ME, "message/cpim");
        msg.success_report = true;
        msg.message_id = Some("fixedid1".into());
        let outcome = client.send(&msg, content(100)).await;
        assert_eq!(
            outcome,
            SendOutcome::Delivered {
                success_report: true,
                chunks: 1
            }
        );
        let _peer = script.await.expect("script");
    }

    #[test]
    fn defaults() {
        let c = ClientConfig::default();
        assert_eq!(
            (c.chunk_size, c.response_timeout, c.report_timeout),
            (2048, Duration::from_secs(30), Duration::from_secs(5))
        );
    }

    /// On tokio's paused clock: the response and report timeouts fire without real waits.
    #[tokio::test(start_paused = true)]
    async fn silent_pipe_times_out_and_missing_report_is_not_failure() {
        let (mut client, mut peer) = pipe(config(2048, Duration::from_millis(100)));
        let script = tokio::spawn(async move {
            let _ = peer.request().await;
            peer
        });
        let started = crate::clock::SystemClock.instant();
        let outcome = client
            .send(
                &OutgoingMessage::new("msrp://198.51.100.7:2855/rA9xq;tcp", ME, "message/cpim"),
                content(10),
            )
            .await;
        assert_eq!(outcome, SendOutcome::Timeout);
        assert!(started.elapsed() >= Duration::from_millis(100));
        let _ = script.await.expect("script");

        // A requested success REPORT that never comes: delivered, unconfirmed.
        let (mut client, mut peer) = pipe(ClientConfig {
            report_timeout: Duration::from_millis(100),
            ..config(2048, Duration::from_secs(5))
        });
        let script = tokio::spawn(async move {
            let chunk = peer.request().await;
            peer.write(chunk.response(200, "OK")).await;
            peer
        });
        let mut msg =
            OutgoingMessage::new("msrp://198.51.100.7:2855/rA9xq;tcp", ME, "message/cpim");
        msg.success_report = true;
        let outcome = client.send(&msg, content(10)).await;
        assert_eq!(
            outcome,
            SendOutcome::Delivered {
                success_report: false,
                chunks: 1
            }
        );
        let _ = script.await.expect("script");
    }

    #[test]
    fn outcome_mapping() {
        let cases = [
            (
                SendOutcome::Delivered {
                    success_report: true,
                    chunks: 3,
                },
                "final msrp 200",
            ),
            (
                SendOutcome::Rejected {
                    status: 413,
                    text: "Stop".into(),
                },
                "final msrp 413",
            ),
            (SendOutcome::Timeout, "failure msrp-lost"),
            (
                SendOutcome::ConnectionLost { detail: "x".into() },
                "failure msrp-lost",
            ),
            (
                SendOutcome::ConnectRefused { detail: "x".into() },
                "failure msrp-connect",
            ),
        ];
        for (o, want) in cases {
            let got = match o.clone().into_outcome() {
                Outcome::Final {
                    protocol: Layer::Msrp,
                    status,
                    mode: Mode::Large,
                    ..
                } => format!("final msrp {status}"),
                Outcome::Failure {
                    kind,
                    mode: Mode::Large,
                    ..
                } => format!("failure {}", kind.as_str()),
                other => format!("{other:?}"),
            };
            assert_eq!(got, want, "{o:?}");
        }
    }
}
