//! A small MSRP receiving endpoint: the `iwf demo` peer and the test double that checks
//! content byte for byte.
//!
//! [`Receiver::bind`] listens on a TCP address (e.g. `127.0.0.1:0`), accepts any number
//! of connections, answers every SEND with `200 OK` (none when `Failure-Report: no`,
//! only errors when `partial`, RFC 4975 §7.1.2), never answers a REPORT, and answers
//! other methods with `501`. Chunks are reassembled per connection by `Message-ID` and
//! `Byte-Range` in a `Reassembler` (no I/O, unit-tested below); each complete message
//! goes to the channel returned by `bind`, and, when the sender asked with
//! `Success-Report: yes`, a `REPORT` with `Status: 000 200 OK` goes back.
//!
//! [`Fault`] makes the endpoint misbehave for tests: answer a fixed status, go silent
//! after N chunks, or drop the connection mid-message.
//!
//! Shutdown is explicit ([`Receiver::shutdown`]) and also happens on drop: the accept
//! loop and every connection task stop.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use super::codec::{
    ByteRange, FailureReport, Flag, Frame, Limits, Method, Parser, Request, Status,
};

/// One reassembled message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub message_id: String,
    pub content_type: Option<String>,
    pub content: Bytes,
    /// `From-Path` of the last chunk (the sender).
    pub from_path: Vec<String>,
    /// How many SEND chunks carried it.
    pub chunks: usize,
}

/// Test misbehaviour of the endpoint. Chunk counts are per connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Fault {
    /// Behave.
    #[default]
    None,
    /// Answer every SEND with this status (e.g. 403, 413, 415) and keep nothing.
    AnswerStatus(u16),
    /// Answer the first N SEND chunks, then read on silently.
    StopAnsweringAfter(usize),
    /// Answer the first N SEND chunks, then close the connection when chunk N+1 arrives.
    CloseAfter(usize),
}

/// Receiver settings.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    pub limits: Limits,
    /// Largest message (all chunks) accepted; beyond it chunks get `413`.
    pub max_message_bytes: usize,
    /// Messages in progress per connection; a new Message-ID beyond it gets `413`.
    pub max_in_progress: usize,
    pub fault: Fault,
    /// Send a success REPORT when a complete message asked for one.
    pub success_reports: bool,
    /// Transaction ids of the REPORTs it sends. Default: random.
    pub ids: std::sync::Arc<dyn crate::ids::Ids>,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            limits: Limits::default(),
            max_message_bytes: 64 * 1024 * 1024,
            max_in_progress: 16,
            fault: Fault::None,
            success_reports: true,
            ids: crate::ids::random(),
        }
    }
}

/// A running endpoint. Dropping it stops the endpoint too.
#[derive(Debug)]
pub struct Receiver {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Receiver {
    /// Binds `addr` and starts accepting. Complete messages arrive on the returned
    /// channel (bounded; a full channel slows the sending connection down).
    pub async fn bind(
        addr: impl ToSocketAddrs,
        config: ReceiverConfig,
    ) -> io::Result<(Receiver, mpsc::Receiver<ReceivedMessage>)> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, config, tx, stop_rx));
        Ok((
            Receiver {
                addr,
                shutdown: Some(stop_tx),
                task,
            },
            rx,
        ))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `msrp://<addr>/<session_id>;tcp` for this endpoint, for SDP `a=path` and To-Path.
    pub fn uri(&self, session_id: &str) -> String {
        match self.addr {
            SocketAddr::V4(a) => format!("msrp://{}:{}/{session_id};tcp", a.ip(), a.port()),
            SocketAddr::V6(a) => format!("msrp://[{}]:{}/{session_id};tcp", a.ip(), a.port()),
        }
    }

    /// Stops accepting, closes every connection and waits for the tasks to end.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    config: ReceiverConfig,
    tx: mpsc::Sender<ReceivedMessage>,
    mut stop: oneshot::Receiver<()>,
) {
    // Dropping the set (when this loop ends) aborts every connection task.
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tracing::debug!(%peer, "msrp receiver: connection");
                    conns.spawn(serve_connection(stream, config.clone(), tx.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "msrp receiver: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
        }
    }
}

/// What the connection does with one incoming request.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    /// Send this status (unless Failure-Report forbids it) and go on.
    Answer(u16),
    /// Say nothing.
    Silent,
    /// Drop the connection.
    Close,
}

async fn serve_connection(
    mut stream: TcpStream,
    config: ReceiverConfig,
    tx: mpsc::Sender<ReceivedMessage>,
) {
    let _ = stream.set_nodelay(true);
    let mut parser = Parser::new(config.limits);
    let mut reassembler = Reassembler::new(config.max_message_bytes, config.max_in_progress);
    let mut sends = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = BytesMut::new();
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut data = buf.get(..n).unwrap_or_default();
        loop {
            let frame = match parser.feed(data) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "msrp receiver: unparseable input, closing");
                    return;
                }
            };
            data = &[];
            let Frame::Request(req) = frame else { continue };
            let mut complete = None;
            let action = match &req.method {
                Method::Report => Action::Silent,
                Method::Other(_) => Action::Answer(501),
                Method::Send => {
                    sends += 1;
                    match config.fault {
                        Fault::AnswerStatus(code) => Action::Answer(code),
                        Fault::CloseAfter(n) if sends > n => Action::Close,
                        fault => {
                            let status = match reassembler.absorb(&req) {
                                Absorbed::Complete(m) => {
                                    complete = Some(m);
                                    200
                                }
                                Absorbed::Partial | Absorbed::Aborted => 200,
                                Absorbed::Refused(code) => code,
                            };
                            match fault {
                                Fault::StopAnsweringAfter(n) if sends > n => Action::Silent,
                                _ => Action::Answer(status),
                            }
                        }
                    }
                }
            };
            out.clear();
            match action {
                Action::Close => return,
                Action::Silent => {}
                Action::Answer(status) => {
                    let wanted = match req.failure_report.unwrap_or(FailureReport::Yes) {
                        FailureReport::Yes => true,
                        FailureReport::No => false,
                        FailureReport::Partial => status >= 300,
                    };
                    if wanted {
                        req.response(status, reason(status)).render(&mut out);
                    }
                }
            }
            if let Some(msg) = complete {
                if config.success_reports && req.success_report == Some(true) {
                    success_report(&*config.ids, &req, &msg).render(&mut out);
                }
                if !out.is_empty() && stream.write_all(&out).await.is_err() {
                    return;
                }
                out.clear();
                let _ = tx.send(msg).await;
            }
            if !out.is_empty() && stream.write_all(&out).await.is_err() {
                return;
            }
        }
    }
}

/// `REPORT` with `Status: 000 200 OK` for a complete message (RFC 4975 §7.1.2).
pub(crate) fn success_report(
    ids: &dyn crate::ids::Ids,
    last_chunk: &Request,
    msg: &ReceivedMessage,
) -> Request {
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
            ids.ident(),
            Method::Report,
            last_chunk.from_path.iter().take(1).cloned().collect(),
            last_chunk.to_path.iter().take(1).cloned().collect(),
        )
    }
}

/// Reason phrases from the RFC 4975 §15 registry.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Unintelligible",
        403 => "Action-not-allowed",
        408 => "Transaction-did-not-complete-in-allotted-time",
        413 => "Stop-sending-message",
        415 => "MIME-not-understood",
        423 => "Parameter-out-of-bounds",
        481 => "Session-does-not-exist",
        501 => "Request-method-not-understood",
        506 => "Session-already-in-use",
        _ => "",
    }
}

// ---------------------------------------------------------------------------------------
// Reassembly (no I/O)
// ---------------------------------------------------------------------------------------

/// What one SEND chunk did to the reassembly.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Absorbed {
    /// Stored; more to come.
    Partial,
    /// The message is complete.
    Complete(ReceivedMessage),
    /// The sender aborted (`#`); what was stored is dropped.
    Aborted,
    /// Refused with this status; the message in progress is dropped.
    Refused(u16),
}

#[derive(Debug)]
struct Partial {
    content_type: Option<String>,
    buf: Vec<u8>,
    received: u64,
    total: Option<u64>,
    saw_end: bool,
    chunks: usize,
}

/// Reassembles chunked messages by Message-ID and Byte-Range.
#[derive(Debug)]
pub(crate) struct Reassembler {
    partial: HashMap<String, Partial>,
    max_message_bytes: usize,
    max_in_progress: usize,
}

impl Reassembler {
    pub(crate) fn new(max_message_bytes: usize, max_in_progress: usize) -> Self {
        Reassembler {
            partial: HashMap::new(),
            max_message_bytes,
            max_in_progress,
        }
    }

    pub(crate) fn absorb(&mut self, req: &Request) -> Absorbed {
        let body: &[u8] = req.body.as_deref().unwrap_or_default();
        let Some(id) = req.message_id.clone() else {
            return Absorbed::Refused(400);
        };
        let len = body.len() as u64;
        // No Byte-Range = the whole message in this one chunk (RFC 4975 §7.1.1).
        let range = req.byte_range.unwrap_or(ByteRange {
            start: 1,
            end: Some(len),
            total: Some(len),
        });
        let Some(offset) = range.start.checked_sub(1) else {
            self.partial.remove(&id);
            return Absorbed::Refused(400);
        };
        let Some(chunk_end) = offset.checked_add(len) else {
            self.partial.remove(&id);
            return Absorbed::Refused(400);
        };
        if req.flag == Flag::Abort {
            self.partial.remove(&id);
            return Absorbed::Aborted;
        }
        if !self.partial.contains_key(&id) && self.partial.len() >= self.max_in_progress {
            return Absorbed::Refused(413);
        }
        let max = self.max_message_bytes as u64;
        let too_big = range.total.is_some_and(|t| t > max) || chunk_end > max;
        let beyond_total = range.total.is_some_and(|t| chunk_end > t);
        if too_big || beyond_total {
            self.partial.remove(&id);
            return Absorbed::Refused(if too_big { 413 } else { 400 });
        }
        let p = self.partial.entry(id.clone()).or_insert_with(|| Partial {
            content_type: None,
            buf: Vec::new(),
            received: 0,
            total: None,
            saw_end: false,
            chunks: 0,
        });
        if req.content_type.is_some() {
            p.content_type.clone_from(&req.content_type);
        }
        if range.total.is_some() {
            p.total = range.total;
        }
        // chunk_end <= max_message_bytes (a usize), so these conversions are exact.
        let (start, end) = (offset as usize, chunk_end as usize);
        if p.buf.len() < end {
            p.buf.resize(end, 0);
        }
        if let Some(dst) = p.buf.get_mut(start..end) {
            dst.copy_from_slice(body);
        }
        p.received += len;
        p.chunks += 1;
        if req.flag == Flag::End {
            p.saw_end = true;
            if p.total.is_none() {
                p.total = Some(chunk_end);
            }
        }
        let complete = p.saw_end && p.total.is_some_and(|t| p.received >= t);
        if !complete {
            return Absorbed::Partial;
        }
        let Some(mut p) = self.partial.remove(&id) else {
            return Absorbed::Partial;
        };
        if let Some(t) = p.total {
            p.buf.truncate(t as usize);
        }
        Absorbed::Complete(ReceivedMessage {
            message_id: id,
            content_type: p.content_type,
            content: Bytes::from(p.buf),
            from_path: req.from_path.clone(),
            chunks: p.chunks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msrp::codec::{ChunkTemplate, Chunks};

    fn send(
        id: Option<&str>,
        range: Option<(u64, Option<u64>, Option<u64>)>,
        body: &str,
        flag: Flag,
    ) -> Request {
        Request {
            message_id: id.map(str::to_owned),
            byte_range: range.map(|(start, end, total)| ByteRange { start, end, total }),
            content_type: Some("text/plain".into()),
            body: Some(Bytes::copy_from_slice(body.as_bytes())),
            flag,
            ..Request::new(
                "t1234",
                Method::Send,
                vec!["msrp://a:1/x;tcp".into()],
                vec!["msrp://b:2/y;tcp".into()],
            )
        }
    }

    fn content(a: &Absorbed) -> Option<&[u8]> {
        match a {
            Absorbed::Complete(m) => Some(&m.content),
            _ => None,
        }
    }

    #[test]
    fn reassembly_table() {
        use Flag::*;
        type Step = (
            Option<&'static str>,
            Option<(u64, Option<u64>, Option<u64>)>,
            &'static str,
            Flag,
        );
        // (name, chunks, what the last chunk yields: Ok(content) or Err(status or 0 = partial/aborted))
        let cases: &[(&str, &[Step], Result<&str, u16>)] = &[
            (
                "single",
                &[(Some("m1"), Some((1, Some(5), Some(5))), "hello", End)],
                Ok("hello"),
            ),
            (
                "no byte-range",
                &[(Some("m1"), None, "hello", End)],
                Ok("hello"),
            ),
            (
                "two in order",
                &[
                    (Some("m1"), Some((1, Some(3), Some(5))), "hel", More),
                    (Some("m1"), Some((4, Some(5), Some(5))), "lo", End),
                ],
                Ok("hello"),
            ),
            (
                "§5.1 interrupted",
                &[
                    (Some("m1"), Some((1, None, Some(8))), "abcd", More),
                    (Some("m1"), Some((5, Some(8), Some(8))), "EFGH", End),
                ],
                Ok("abcdEFGH"),
            ),
            (
                "unknown total",
                &[
                    (Some("m1"), Some((1, None, None)), "ab", More),
                    (Some("m1"), Some((3, None, None)), "cd", End),
                ],
                Ok("abcd"),
            ),
            (
                "out of order",
                &[
                    (Some("m1"), Some((4, Some(5), Some(5))), "lo", End),
                    (Some("m1"), Some((1, Some(3), Some(5))), "hel", More),
                ],
                Ok("hello"),
            ),
            (
                "empty message",
                &[(Some("m1"), Some((1, Some(0), Some(0))), "", End)],
                Ok(""),
            ),
            ("missing message-id", &[(None, None, "x", End)], Err(400)),
            (
                "range start 0",
                &[(Some("m1"), Some((0, Some(1), Some(1))), "x", End)],
                Err(400),
            ),
            (
                "beyond total",
                &[(Some("m1"), Some((1, Some(9), Some(3))), "xxxxxxxxx", End)],
                Err(400),
            ),
            (
                "too big",
                &[(Some("m1"), Some((1, Some(1), Some(1 << 40))), "x", More)],
                Err(413),
            ),
            (
                "huge start",
                &[(Some("m1"), Some((u64::MAX, None, None)), "xx", End)],
                Err(400),
            ),
            (
                "aborted",
                &[
                    (Some("m1"), Some((1, Some(3), Some(5))), "hel", More),
                    (Some("m1"), Some((4, None, Some(5))), "", Abort),
                ],
                Err(0),
            ),
            (
                "waits for missing bytes",
                &[(Some("m1"), Some((4, Some(5), Some(5))), "lo", End)],
                Err(0),
            ),
        ];
        for (name, steps, want) in cases {
            let mut r = Reassembler::new(1 << 20, 4);
            let mut last = Absorbed::Partial;
            for (id, range, body, flag) in steps.iter() {
                last = r.absorb(&send(*id, *range, body, *flag));
            }
            match want {
                Ok(c) => assert_eq!(content(&last), Some(c.as_bytes()), "{name}: {last:?}"),
                Err(0) => assert!(
                    matches!(last, Absorbed::Partial | Absorbed::Aborted),
                    "{name}: {last:?}"
                ),
                Err(code) => assert_eq!(last, Absorbed::Refused(*code), "{name}"),
            }
        }
    }

    #[test]
    fn interleaved_messages_and_in_progress_cap() {
        let mut r = Reassembler::new(1 << 20, 2);
        assert_eq!(
            r.absorb(&send(
                Some("a"),
                Some((1, Some(1), Some(2))),
                "A",
                Flag::More
            )),
            Absorbed::Partial
        );
        assert_eq!(
            r.absorb(&send(
                Some("b"),
                Some((1, Some(1), Some(2))),
                "B",
                Flag::More
            )),
            Absorbed::Partial
        );
        assert_eq!(
            r.absorb(&send(
                Some("c"),
                Some((1, Some(1), Some(2))),
                "C",
                Flag::More
            )),
            Absorbed::Refused(413)
        );
        assert_eq!(
            content(&r.absorb(&send(
                Some("b"),
                Some((2, Some(2), Some(2))),
                "b",
                Flag::End
            ))),
            Some(&b"Bb"[..])
        );
        assert_eq!(
            content(&r.absorb(&send(
                Some("a"),
                Some((2, Some(2), Some(2))),
                "a",
                Flag::End
            ))),
            Some(&b"Aa"[..])
        );
    }

    #[test]
    fn chunker_output_reassembles() {
        let content = Bytes::from(
            (0..100_000u32)
                .map(|i| (i * 7 % 256) as u8)
                .collect::<Vec<_>>(),
        );
        let template = ChunkTemplate {
            to_path: vec!["msrp://a:1/x;tcp".into()],
            from_path: vec!["msrp://b:2/y;tcp".into()],
            message_id: "mid1".into(),
            content_type: "message/cpim".into(),
            success_report: None,
            failure_report: None,
        };
        let mut r = Reassembler::new(1 << 20, 4);
        let mut got = None;
        for c in Chunks::new(template, content.clone(), 2048, &crate::ids::RandomIds) {
            if let Absorbed::Complete(m) = r.absorb(&c) {
                got = Some(m);
            }
        }
        let m = got.expect("complete");
        assert_eq!(m.content, content);
        assert_eq!(m.chunks, 49);
        assert_eq!(m.content_type.as_deref(), Some("message/cpim"));
    }

    #[test]
    fn success_report_shape() {
        let req = send(Some("m1"), None, "hello", Flag::End);
        let msg = ReceivedMessage {
            message_id: "m1".into(),
            content_type: None,
            content: Bytes::from_static(b"hello"),
            from_path: req.from_path.clone(),
            chunks: 1,
        };
        let rep = success_report(&crate::ids::RandomIds, &req, &msg);
        let wire = String::from_utf8(rep.to_bytes().to_vec()).expect("utf8");
        let tail = wire.split_once("\r\n").expect("start line").1;
        assert_eq!(
            tail,
            format!(
                "To-Path: msrp://b:2/y;tcp\r\nFrom-Path: msrp://a:1/x;tcp\r\nMessage-ID: m1\r\nByte-Range: 1-5/5\r\nStatus: 000 200 OK\r\n-------{}$\r\n",
                rep.tid
            )
        );
    }

    /// Over a real socket: Failure-Report decides whether a 200 goes back; REPORTs and
    /// responses are never answered; other methods get 501.
    #[tokio::test]
    async fn answers_honour_failure_report() {
        let run = async {
            let (rx, mut inbox) = Receiver::bind("127.0.0.1:0", ReceiverConfig::default())
                .await
                .expect("bind");
            let mut s = TcpStream::connect(rx.local_addr()).await.expect("connect");
            let with = |tid: &str, fr: Option<FailureReport>, method: Method| Request {
                tid: tid.into(),
                failure_report: fr,
                method,
                ..send(Some(tid), None, "x", Flag::End)
            };
            let mut wire = BytesMut::new();
            with("nope1", Some(FailureReport::No), Method::Send).render(&mut wire);
            with("part1", Some(FailureReport::Partial), Method::Send).render(&mut wire);
            with("rep01", None, Method::Report).render(&mut wire);
            with("auth1", None, Method::Other("AUTH".into())).render(&mut wire);
            with("yes01", Some(FailureReport::Yes), Method::Send).render(&mut wire);
            s.write_all(&wire).await.expect("write");
            let mut parser = Parser::default();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while got.len() < 2 {
                let n = s.read(&mut buf).await.expect("read");
                assert!(n > 0, "closed early");
                let mut data = &buf[..n];
                while let Some(Frame::Response(r)) = parser.feed(data).expect("valid") {
                    got.push((r.tid, r.status));
                    data = &[];
                }
            }
            assert_eq!(
                got,
                [("auth1".to_string(), 501), ("yes01".to_string(), 200)]
            );
            // Three SENDs with Message-ID = tid and no Byte-Range: three messages.
            for _ in 0..3 {
                assert_eq!(&inbox.recv().await.expect("message").content[..], b"x");
            }
            rx.shutdown().await;
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), run)
            .await
            .expect("bounded");
    }
}
