//! MSRP framing (RFC 4975 §7, §9) without I/O: frame types, the wire renderer, an
//! incremental parser and the chunker.
//!
//! # Framing
//!
//! ```text
//! MSRP <tid> SEND                      <- start line (request) or `MSRP <tid> 200 OK`
//! To-Path: msrp://b:2855/x;tcp         <- To-Path and From-Path first, then other headers
//! From-Path: msrp://a:2855/y;tcp
//! Message-ID: m1
//! Byte-Range: 1-5/5
//! Content-Type: text/plain             <- last header before the body
//!                                      <- blank line: a body follows
//! hello                                <- body: any octets, CRLF and hyphens included
//! -------<tid>$                        <- end-line, after a CRLF that is not body
//! ```
//!
//! A frame without a body (every response, most REPORTs) has the end-line right after
//! its last header. The end-line carries the continuation flag: `+` more chunks follow,
//! `$` last chunk, `#` the sender aborted the message (§7.1).
//!
//! # Parsing
//!
//! [`Parser`] buffers what the transport hands it and yields whole [`Frame`]s. "Not yet
//! complete" is `Ok(None)`, never an error. The parser learns the transaction id from
//! the start line, then searches only for `CRLF "-------" tid flag CRLF`, so a body full
//! of CRLFs and hyphens (even other transactions' end-lines) does not confuse it. The
//! search resumes where the previous one stopped, so a body arriving in small reads is
//! scanned once. [`Limits`] bound the header block and the body; exceeding either is an
//! error, after which the byte stream cannot be re-synchronised and the connection
//! should be closed.
//!
//! # Chunking
//!
//! [`Chunks`] splits one message (a [`Bytes`], sliced, never copied) into SEND requests:
//! one `Message-ID`, a fresh random transaction id per chunk, 1-based in-order
//! `Byte-Range: start-end/total`, flag `+` on all but the last chunk. A transaction id
//! whose end-line delimiter would occur in the chunk's content is replaced (§7.1).

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::ids::Ids;
use crate::render::body::Body;

/// The seven hyphens every end-line starts with.
const END_HYPHENS: &[u8] = b"-------";
/// Longest transaction id / Message-ID the parser accepts. RFC 4975 `ident` allows 32
/// characters; peers in the field sometimes use a few more, so the parser is lenient.
pub const MAX_IDENT_LEN: usize = 64;

/// The continuation flag at the end of a request (RFC 4975 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flag {
    /// `+`: more chunks of this message follow.
    More,
    /// `$`: this chunk ends the message.
    End,
    /// `#`: the sender aborted the message; no more chunks follow.
    Abort,
}

impl Flag {
    /// The flag character on the wire.
    pub fn as_byte(self) -> u8 {
        match self {
            Flag::More => b'+',
            Flag::End => b'$',
            Flag::Abort => b'#',
        }
    }

    fn from_byte(b: u8) -> Option<Flag> {
        match b {
            b'+' => Some(Flag::More),
            b'$' => Some(Flag::End),
            b'#' => Some(Flag::Abort),
            _ => None,
        }
    }
}

/// A request method. AUTH (RFC 4976, relays) is not modelled; it parses as `Other`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Send,
    Report,
    /// Any other method token (`1*UPALPHA`).
    Other(String),
}

impl Method {
    pub fn as_str(&self) -> &str {
        match self {
            Method::Send => "SEND",
            Method::Report => "REPORT",
            Method::Other(m) => m,
        }
    }
}

/// `Byte-Range: start-end/total`, 1-based and inclusive; `None` is `*` (unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ByteRange {
    pub start: u64,
    pub end: Option<u64>,
    pub total: Option<u64>,
}

impl fmt::Display for ByteRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-", self.start)?;
        match self.end {
            Some(e) => write!(f, "{e}")?,
            None => f.write_str("*")?,
        }
        match self.total {
            Some(t) => write!(f, "/{t}"),
            None => f.write_str("/*"),
        }
    }
}

impl ByteRange {
    fn parse(v: &str) -> Option<ByteRange> {
        let (start, rest) = v.split_once('-')?;
        let (end, total) = rest.split_once('/')?;
        let num = |s: &str| -> Option<Option<u64>> {
            if s == "*" {
                Some(None)
            } else if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
                s.parse().ok().map(Some)
            } else {
                None
            }
        };
        let start = num(start)??;
        Some(ByteRange {
            start,
            end: num(end)?,
            total: num(total)?,
        })
    }
}

/// `Failure-Report` values (RFC 4975 §7.1.2). Absent means `yes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReport {
    Yes,
    No,
    /// Only negative responses and REPORTs are wanted.
    Partial,
}

impl FailureReport {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReport::Yes => "yes",
            FailureReport::No => "no",
            FailureReport::Partial => "partial",
        }
    }
}

/// The `Status:` header of a REPORT: `namespace SP code [SP text]`; namespace `000`
/// means the code is an MSRP/SIP-style status code.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Status {
    pub namespace: u16,
    pub code: u16,
    pub reason: Option<String>,
}

impl Status {
    fn parse(v: &str) -> Option<Status> {
        let mut it = v.splitn(3, ' ');
        let namespace = three_digits(it.next()?)?;
        let code = three_digits(it.next()?)?;
        let reason = it.next().map(str::to_owned).filter(|r| !r.is_empty());
        Some(Status {
            namespace,
            code,
            reason,
        })
    }
}

/// An MSRP request (SEND, REPORT or another method).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub tid: String,
    pub method: Method,
    /// `To-Path` URIs, first = next hop.
    pub to_path: Vec<String>,
    /// `From-Path` URIs, first = previous hop.
    pub from_path: Vec<String>,
    pub message_id: Option<String>,
    pub byte_range: Option<ByteRange>,
    pub success_report: Option<bool>,
    pub failure_report: Option<FailureReport>,
    /// `Status` (REPORT only).
    pub status: Option<Status>,
    pub content_type: Option<String>,
    /// Every other header, in wire order, rendered before `Content-Type`.
    pub headers: Vec<(String, String)>,
    /// `None`: no body (no blank line on the wire). `Some` may be empty.
    pub body: Option<Bytes>,
    pub flag: Flag,
}

/// An MSRP response. Responses have no body and always end with `$`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub tid: String,
    pub status: u16,
    pub comment: Option<String>,
    pub to_path: Vec<String>,
    pub from_path: Vec<String>,
    pub headers: Vec<(String, String)>,
}

/// One parsed MSRP frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Request(Request),
    Response(Response),
}

impl Request {
    /// A request with the mandatory fields and nothing else.
    pub fn new(tid: impl Into<String>, method: Method, to: Vec<String>, from: Vec<String>) -> Self {
        Request {
            tid: tid.into(),
            method,
            to_path: to,
            from_path: from,
            message_id: None,
            byte_range: None,
            success_report: None,
            failure_report: None,
            status: None,
            content_type: None,
            headers: Vec::new(),
            body: None,
            flag: Flag::End,
        }
    }

    /// Appends the exact wire form to `out`.
    pub fn render(&self, out: &mut BytesMut) {
        out.reserve(256 + self.body.as_ref().map_or(0, Bytes::len));
        put_all(out, &[b"MSRP ", self.tid.as_bytes(), b" "]);
        put_all(out, &[self.method.as_str().as_bytes(), b"\r\n"]);
        put_paths(out, &self.to_path, &self.from_path);
        if let Some(id) = &self.message_id {
            put_header(out, "Message-ID", id);
        }
        if let Some(br) = &self.byte_range {
            put_header(out, "Byte-Range", &br.to_string());
        }
        if let Some(sr) = self.success_report {
            put_header(out, "Success-Report", if sr { "yes" } else { "no" });
        }
        if let Some(fr) = self.failure_report {
            put_header(out, "Failure-Report", fr.as_str());
        }
        if let Some(st) = &self.status {
            let mut v = format!("{:03} {:03}", st.namespace, st.code);
            if let Some(r) = &st.reason {
                v.push(' ');
                v.push_str(r);
            }
            put_header(out, "Status", &v);
        }
        for (n, v) in &self.headers {
            put_header(out, n, v);
        }
        if let Some(ct) = &self.content_type {
            put_header(out, "Content-Type", ct);
        }
        if let Some(body) = &self.body {
            out.put_slice(b"\r\n");
            out.put_slice(body);
            out.put_slice(b"\r\n");
        }
        put_end_line(out, &self.tid, self.flag);
    }

    /// The wire form as a fresh buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.render(&mut out);
        out.freeze()
    }

    /// The response this endpoint sends for this request: To-Path = the previous hop
    /// (first From-Path URI), From-Path = us (first To-Path URI) (RFC 4975 §7.2).
    pub fn response(&self, status: u16, comment: &str) -> Response {
        Response {
            tid: self.tid.clone(),
            status,
            comment: (!comment.is_empty()).then(|| comment.to_owned()),
            to_path: self.from_path.iter().take(1).cloned().collect(),
            from_path: self.to_path.iter().take(1).cloned().collect(),
            headers: Vec::new(),
        }
    }
}

impl Response {
    /// Appends the exact wire form to `out`.
    pub fn render(&self, out: &mut BytesMut) {
        put_all(out, &[b"MSRP ", self.tid.as_bytes()]);
        out.put_slice(format!(" {:03}", self.status).as_bytes());
        if let Some(c) = &self.comment {
            put_all(out, &[b" ", c.as_bytes()]);
        }
        out.put_slice(b"\r\n");
        put_paths(out, &self.to_path, &self.from_path);
        for (n, v) in &self.headers {
            put_header(out, n, v);
        }
        put_end_line(out, &self.tid, Flag::End);
    }

    /// The wire form as a fresh buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.render(&mut out);
        out.freeze()
    }
}

impl Frame {
    /// Appends the exact wire form to `out`.
    pub fn render(&self, out: &mut BytesMut) {
        match self {
            Frame::Request(r) => r.render(out),
            Frame::Response(r) => r.render(out),
        }
    }

    pub fn tid(&self) -> &str {
        match self {
            Frame::Request(r) => &r.tid,
            Frame::Response(r) => &r.tid,
        }
    }
}

fn put_all(out: &mut BytesMut, parts: &[&[u8]]) {
    for p in parts {
        out.put_slice(p);
    }
}

fn put_header(out: &mut BytesMut, name: &str, value: &str) {
    put_all(out, &[name.as_bytes(), b": ", value.as_bytes(), b"\r\n"]);
}

fn put_paths(out: &mut BytesMut, to: &[String], from: &[String]) {
    put_header(out, "To-Path", &to.join(" "));
    put_header(out, "From-Path", &from.join(" "));
}

fn put_end_line(out: &mut BytesMut, tid: &str, flag: Flag) {
    put_all(out, &[END_HYPHENS, tid.as_bytes()]);
    out.put_u8(flag.as_byte());
    out.put_slice(b"\r\n");
}

// ---------------------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------------------

/// Bounds on what the parser buffers for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Start line plus headers plus the blank line.
    pub max_header_bytes: usize,
    /// Body octets of one chunk.
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 16 * 1024,
            max_body_bytes: 4 * 1024 * 1024,
        }
    }
}

/// Why the byte stream is not valid MSRP. After any of these the parser stays failed:
/// framing is lost and the connection should be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("start line is not `MSRP <tid> <method>` or `MSRP <tid> <code> [comment]`: {0:?}")]
    BadStartLine(String),
    #[error("transaction id {0:?} is not an RFC 4975 ident")]
    BadTransactionId(String),
    #[error("header block exceeds {limit} octets")]
    HeadersTooLarge { limit: usize },
    #[error("chunk body exceeds {limit} octets")]
    BodyTooLarge { limit: usize },
    #[error("header line is not `Name: value` in UTF-8: {0:?}")]
    BadHeaderLine(String),
    #[error("header {name} has an invalid value {value:?}")]
    BadHeaderValue { name: &'static str, value: String },
    #[error("header {0} appears twice")]
    DuplicateHeader(&'static str),
    #[error("required header {0} is missing")]
    MissingHeader(&'static str),
    #[error("a response carries a body")]
    BodyInResponse,
    #[error("the parser failed earlier: {0}")]
    Failed(Box<ParseError>),
}

/// Where the parser is in the current frame.
#[derive(Debug)]
enum State {
    /// Waiting for a complete start line.
    StartLine,
    /// Start line parsed; collecting header lines. `scanned` = offset up to which
    /// complete header lines were already consumed.
    Headers {
        head: Head,
        scanned: usize,
    },
    /// Blank line seen; searching for the end-line from `search_from`.
    Body {
        head: Head,
        body_start: usize,
        search_from: usize,
    },
    Failed(ParseError),
}

/// What the start line and header lines have told so far.
#[derive(Debug)]
struct Head {
    tid: String,
    kind: Kind,
    fields: Fields,
}

#[derive(Debug)]
enum Kind {
    Request(Method),
    Response {
        status: u16,
        comment: Option<String>,
    },
}

#[derive(Debug, Default)]
struct Fields {
    to_path: Option<Vec<String>>,
    from_path: Option<Vec<String>>,
    message_id: Option<String>,
    byte_range: Option<ByteRange>,
    success_report: Option<bool>,
    failure_report: Option<FailureReport>,
    status: Option<Status>,
    content_type: Option<String>,
    headers: Vec<(String, String)>,
}

/// Incremental MSRP frame parser. Feed it bytes as they arrive; it returns frames as
/// they complete. See the [module docs](self).
#[derive(Debug)]
pub struct Parser {
    buf: BytesMut,
    limits: Limits,
    state: State,
    /// Where the search for the next header-block CRLF resumes, so a line trickling in
    /// byte by byte is scanned once.
    line_search: usize,
}

impl Default for Parser {
    fn default() -> Self {
        Parser::new(Limits::default())
    }
}

impl Parser {
    pub fn new(limits: Limits) -> Self {
        Parser {
            buf: BytesMut::new(),
            limits,
            state: State::StartLine,
            line_search: 0,
        }
    }

    /// Appends `data` and returns the next complete frame, if any. Call
    /// [`next_frame`](Self::next_frame) until it returns `Ok(None)` to drain frames that
    /// arrived in the same read.
    pub fn feed(&mut self, data: &[u8]) -> Result<Option<Frame>, ParseError> {
        self.buf.extend_from_slice(data);
        self.next_frame()
    }

    /// Bytes buffered but not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Returns the next complete frame from what was fed, `Ok(None)` if more bytes are
    /// needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, ParseError> {
        loop {
            let state = std::mem::replace(&mut self.state, State::StartLine);
            let step = match state {
                State::Failed(e) => {
                    let err = match &e {
                        ParseError::Failed(_) => e.clone(),
                        other => ParseError::Failed(Box::new(other.clone())),
                    };
                    self.state = State::Failed(e);
                    return Err(err);
                }
                State::StartLine => self.start_line(),
                State::Headers { head, scanned } => self.headers(head, scanned),
                State::Body {
                    head,
                    body_start,
                    search_from,
                } => self.body(head, body_start, search_from),
            };
            match step {
                Ok(Step::Continue(next)) => self.state = next,
                Ok(Step::NeedMore(next)) => {
                    self.state = next;
                    return Ok(None);
                }
                Ok(Step::Done(frame)) => {
                    self.state = State::StartLine;
                    self.line_search = 0;
                    return Ok(Some(frame));
                }
                Err(e) => {
                    self.state = State::Failed(e.clone());
                    self.buf.clear();
                    return Err(e);
                }
            }
        }
    }

    fn start_line(&mut self) -> Result<Step, ParseError> {
        // Tolerate CRLFs between frames (keep-alive padding some peers send).
        while self.buf.starts_with(b"\r\n") {
            self.buf.advance(2);
            self.line_search = 0;
        }
        let Some(eol) = find(&self.buf, b"\r\n", self.line_search) else {
            self.line_search = self.buf.len().saturating_sub(1);
            if self.buf.len() > self.limits.max_header_bytes {
                return Err(ParseError::HeadersTooLarge {
                    limit: self.limits.max_header_bytes,
                });
            }
            return Ok(Step::NeedMore(State::StartLine));
        };
        let line = &self.buf[..eol];
        let head = parse_start_line(line)?;
        self.line_search = eol + 2;
        Ok(Step::Continue(State::Headers {
            head,
            scanned: eol + 2,
        }))
    }

    fn headers(&mut self, mut head: Head, mut scanned: usize) -> Result<Step, ParseError> {
        loop {
            let Some(eol) = find(&self.buf, b"\r\n", self.line_search.max(scanned)) else {
                self.line_search = self.buf.len().saturating_sub(1);
                if self.buf.len() > self.limits.max_header_bytes {
                    return Err(ParseError::HeadersTooLarge {
                        limit: self.limits.max_header_bytes,
                    });
                }
                return Ok(Step::NeedMore(State::Headers { head, scanned }));
            };
            if eol + 2 > self.limits.max_header_bytes {
                return Err(ParseError::HeadersTooLarge {
                    limit: self.limits.max_header_bytes,
                });
            }
            let line = &self.buf[scanned..eol];
            if line.is_empty() {
                if matches!(head.kind, Kind::Response { .. }) {
                    return Err(ParseError::BodyInResponse);
                }
                // The blank line's CRLF may double as the CRLF before the end-line of
                // an empty body; searching from it accepts that lenient form too.
                return Ok(Step::Continue(State::Body {
                    head,
                    body_start: eol + 2,
                    search_from: eol,
                }));
            }
            if let Some(flag) = end_line_flag(line, &head.tid) {
                let total = eol + 2;
                let frame = finish(head, None, flag)?;
                self.buf.advance(total);
                return Ok(Step::Done(frame));
            }
            let interpret = matches!(head.kind, Kind::Request(_));
            head.fields.add(line, interpret)?;
            scanned = eol + 2;
            self.line_search = scanned;
        }
    }

    fn body(
        &mut self,
        head: Head,
        body_start: usize,
        search_from: usize,
    ) -> Result<Step, ParseError> {
        // Delimiter: CRLF "-------" tid, then flag CRLF.
        let tid = head.tid.as_bytes();
        let delim_len = 2 + END_HYPHENS.len() + tid.len();
        let mut from = search_from;
        loop {
            let Some(pos) = find_end_delim(&self.buf, tid, from) else {
                // Not found: the next search only needs to revisit a delimiter's length.
                let next = self
                    .buf
                    .len()
                    .saturating_sub(delim_len - 1)
                    .max(search_from);
                let body_len = self.buf.len().saturating_sub(body_start);
                if body_len > self.limits.max_body_bytes.saturating_add(delim_len + 2) {
                    return Err(ParseError::BodyTooLarge {
                        limit: self.limits.max_body_bytes,
                    });
                }
                return Ok(Step::NeedMore(State::Body {
                    head,
                    body_start,
                    search_from: next,
                }));
            };
            let after = pos + delim_len;
            // Need flag + CRLF to decide.
            let (Some(&f), Some(&cr), Some(&lf)) = (
                self.buf.get(after),
                self.buf.get(after + 1),
                self.buf.get(after + 2),
            ) else {
                return Ok(Step::NeedMore(State::Body {
                    head,
                    body_start,
                    search_from: pos,
                }));
            };
            match Flag::from_byte(f) {
                Some(flag) if cr == b'\r' && lf == b'\n' => {
                    let body_end = pos.max(body_start);
                    if body_end - body_start > self.limits.max_body_bytes {
                        return Err(ParseError::BodyTooLarge {
                            limit: self.limits.max_body_bytes,
                        });
                    }
                    let mut frame_bytes = self.buf.split_to(after + 3);
                    frame_bytes.truncate(body_end);
                    frame_bytes.advance(body_start);
                    let frame = finish(head, Some(frame_bytes.freeze()), flag)?;
                    return Ok(Step::Done(frame));
                }
                // Looked like an end-line but is body content ("-------tidX...").
                _ => from = pos + 1,
            }
        }
    }
}

enum Step {
    Continue(State),
    NeedMore(State),
    Done(Frame),
}

/// Position of `CRLF "-------" tid` at or after `from`.
fn find_end_delim(buf: &[u8], tid: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    loop {
        let pos = find(buf, b"\r\n-------", at)?;
        let t = pos + 9;
        match buf.get(t..t + tid.len()) {
            Some(s) if s == tid => return Some(pos),
            Some(_) => at = pos + 1,
            // Too short to compare yet: report it so the caller waits.
            None if tid.starts_with(buf.get(t..).unwrap_or_default()) => return Some(pos),
            None => at = pos + 1,
        }
    }
}

/// If `line` is `"-------" tid flag`, the flag.
fn end_line_flag(line: &[u8], tid: &str) -> Option<Flag> {
    let rest = line
        .strip_prefix(END_HYPHENS)?
        .strip_prefix(tid.as_bytes())?;
    match rest {
        [f] => Flag::from_byte(*f),
        _ => None,
    }
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let tail = hay.get(from..)?;
    if needle.is_empty() || tail.len() < needle.len() {
        return None;
    }
    // First-byte scan then compare: fast enough for chunk-sized bodies.
    let first = needle[0];
    let mut i = 0;
    while i + needle.len() <= tail.len() {
        match tail[i..tail.len() - needle.len() + 1]
            .iter()
            .position(|&b| b == first)
        {
            None => return None,
            Some(p) => {
                let at = i + p;
                if &tail[at..at + needle.len()] == needle {
                    return Some(from + at);
                }
                i = at + 1;
            }
        }
    }
    None
}

fn parse_start_line(line: &[u8]) -> Result<Head, ParseError> {
    let bad = || ParseError::BadStartLine(String::from_utf8_lossy(line).into_owned());
    let text = std::str::from_utf8(line).map_err(|_| bad())?;
    let rest = text.strip_prefix("MSRP ").ok_or_else(bad)?;
    let (tid, rest) = rest.split_once(' ').ok_or_else(bad)?;
    if !is_ident(tid) {
        return Err(ParseError::BadTransactionId(tid.to_owned()));
    }
    let (word, comment) = match rest.split_once(' ') {
        Some((w, c)) => (w, Some(c)),
        None => (rest, None),
    };
    let kind = if let Some(status) = three_digits(word) {
        Kind::Response {
            status,
            comment: comment.filter(|c| !c.is_empty()).map(str::to_owned),
        }
    } else if !word.is_empty() && word.bytes().all(|b| b.is_ascii_uppercase()) && comment.is_none()
    {
        Kind::Request(match word {
            "SEND" => Method::Send,
            "REPORT" => Method::Report,
            other => Method::Other(other.to_owned()),
        })
    } else {
        return Err(bad());
    };
    Ok(Head {
        tid: tid.to_owned(),
        kind,
        fields: Fields::default(),
    })
}

fn three_digits(s: &str) -> Option<u16> {
    (s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// RFC 4975 `ident = ALPHANUM 3*31ident-char`, with the length relaxed to
/// 1..=[`MAX_IDENT_LEN`].
pub fn is_ident(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_IDENT_LEN
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'+' | b'%' | b'='))
}

fn is_token_char(c: u8) -> bool {
    matches!(c, 0x21 | 0x23..=0x27 | 0x2A..=0x2B | 0x2D..=0x2E | 0x30..=0x39 | 0x41..=0x5A | 0x5E..=0x7E)
}

impl Fields {
    /// Adds one header line. With `interpret` false (responses) only the paths are
    /// parsed; everything else is kept verbatim in `headers`.
    fn add(&mut self, line: &[u8], interpret: bool) -> Result<(), ParseError> {
        let bad = || ParseError::BadHeaderLine(String::from_utf8_lossy(line).into_owned());
        let text = std::str::from_utf8(line).map_err(|_| bad())?;
        let (name, value) = text.split_once(':').ok_or_else(bad)?;
        if name.is_empty()
            || !name.bytes().all(is_token_char)
            || !name.as_bytes()[0].is_ascii_alphabetic()
        {
            return Err(bad());
        }
        if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return Err(bad());
        }
        let value = value.trim_matches([' ', '\t']);
        macro_rules! once {
            ($field:ident, $name:literal, $parsed:expr) => {{
                if self.$field.is_some() {
                    return Err(ParseError::DuplicateHeader($name));
                }
                let parsed = $parsed.ok_or_else(|| ParseError::BadHeaderValue {
                    name: $name,
                    value: value.to_owned(),
                })?;
                self.$field = Some(parsed);
            }};
        }
        let lower = name.to_ascii_lowercase();
        if !interpret && lower != "to-path" && lower != "from-path" {
            self.headers.push((name.to_owned(), value.to_owned()));
            return Ok(());
        }
        match lower.as_str() {
            "to-path" => once!(to_path, "To-Path", parse_path(value)),
            "from-path" => once!(from_path, "From-Path", parse_path(value)),
            "message-id" => once!(
                message_id,
                "Message-ID",
                is_ident(value).then(|| value.to_owned())
            ),
            "byte-range" => once!(byte_range, "Byte-Range", ByteRange::parse(value)),
            "success-report" => once!(
                success_report,
                "Success-Report",
                match value {
                    "yes" => Some(true),
                    "no" => Some(false),
                    _ => None,
                }
            ),
            "failure-report" => once!(
                failure_report,
                "Failure-Report",
                match value {
                    "yes" => Some(FailureReport::Yes),
                    "no" => Some(FailureReport::No),
                    "partial" => Some(FailureReport::Partial),
                    _ => None,
                }
            ),
            "status" => once!(status, "Status", Status::parse(value)),
            "content-type" => once!(
                content_type,
                "Content-Type",
                value.contains('/').then(|| value.to_owned())
            ),
            _ => self.headers.push((name.to_owned(), value.to_owned())),
        }
        Ok(())
    }
}

fn parse_path(v: &str) -> Option<Vec<String>> {
    let uris: Vec<String> = v
        .split([' ', '\t'])
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    (!uris.is_empty()).then_some(uris)
}

fn finish(head: Head, body: Option<Bytes>, flag: Flag) -> Result<Frame, ParseError> {
    let f = head.fields;
    let to_path = f.to_path.ok_or(ParseError::MissingHeader("To-Path"))?;
    let from_path = f.from_path.ok_or(ParseError::MissingHeader("From-Path"))?;
    Ok(match head.kind {
        Kind::Request(method) => Frame::Request(Request {
            tid: head.tid,
            method,
            to_path,
            from_path,
            message_id: f.message_id,
            byte_range: f.byte_range,
            success_report: f.success_report,
            failure_report: f.failure_report,
            status: f.status,
            content_type: f.content_type,
            headers: f.headers,
            body,
            flag,
        }),
        Kind::Response { status, comment } => Frame::Response(Response {
            tid: head.tid,
            status,
            comment,
            to_path,
            from_path,
            headers: f.headers,
        }),
    })
}

// ---------------------------------------------------------------------------------------
// Chunking
// ---------------------------------------------------------------------------------------

/// The headers every chunk of one message carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkTemplate {
    pub to_path: Vec<String>,
    pub from_path: Vec<String>,
    pub message_id: String,
    pub content_type: String,
    /// `None` leaves the header out (= `no`).
    pub success_report: Option<bool>,
    /// `None` leaves the header out (= `yes`).
    pub failure_report: Option<FailureReport>,
}

impl ChunkTemplate {
    fn request(&self, tid: String, range: ByteRange, body: Bytes, flag: Flag) -> Request {
        Request {
            message_id: Some(self.message_id.clone()),
            byte_range: Some(range),
            success_report: self.success_report,
            failure_report: self.failure_report,
            content_type: Some(self.content_type.clone()),
            body: Some(body),
            flag,
            ..Request::new(
                tid,
                Method::Send,
                self.to_path.clone(),
                self.from_path.clone(),
            )
        }
    }

    /// An empty-bodied SEND that aborts the message after `sent` octets (flag `#`,
    /// `Byte-Range: sent+1-*/total`). Used when the sender gives up between chunks.
    pub fn abort(&self, tid: String, sent: u64, total: u64) -> Request {
        let range = ByteRange {
            start: sent + 1,
            end: None,
            total: Some(total),
        };
        self.request(tid, range, Bytes::new(), Flag::Abort)
    }
}

/// Iterator of SEND requests carrying one message in chunks. Created by [`Chunks::new`].
pub struct Chunks<F = fn() -> String> {
    template: ChunkTemplate,
    content: Body,
    chunk_size: usize,
    offset: usize,
    done: bool,
    next_tid: F,
}

impl Chunks {
    /// Splits `content` into chunks of at most `chunk_size` octets (minimum 1), each
    /// with a transaction id from `ids` ([`Ids::ident`]). Empty content yields one SEND
    /// with an empty body and `Byte-Range: 1-0/0`.
    pub fn new(
        template: ChunkTemplate,
        content: impl Into<Body>,
        chunk_size: usize,
        ids: &dyn Ids,
    ) -> Chunks<impl FnMut() -> String + Send + '_> {
        Chunks::with_tid_source(template, content, chunk_size, move || ids.ident())
    }
}

impl<F: FnMut() -> String> Chunks<F> {
    /// Like [`Chunks::new`] with transaction ids from `next_tid` (tests use this to
    /// force a collision). The source must eventually yield an id whose end-line does not
    /// occur in the chunk.
    pub fn with_tid_source(
        template: ChunkTemplate,
        content: impl Into<Body>,
        chunk_size: usize,
        next_tid: F,
    ) -> Self {
        Chunks {
            template,
            content: content.into(),
            chunk_size: chunk_size.max(1),
            offset: 0,
            done: false,
            next_tid,
        }
    }

    /// The template the chunks are built from.
    pub fn template(&self) -> &ChunkTemplate {
        &self.template
    }

    /// Octets handed out so far.
    pub fn sent(&self) -> u64 {
        self.offset as u64
    }

    /// Total octets of the message.
    pub fn total(&self) -> u64 {
        self.content.len() as u64
    }

    /// A transaction id whose end-line delimiter (`-------tid`) is not in `body`.
    fn tid_for(&mut self, body: &[u8]) -> String {
        loop {
            let tid = (self.next_tid)();
            let mut delim = END_HYPHENS.to_vec();
            delim.extend_from_slice(tid.as_bytes());
            if find(body, &delim, 0).is_none() {
                return tid;
            }
        }
    }
}

impl<F: FnMut() -> String> Iterator for Chunks<F> {
    type Item = Request;

    fn next(&mut self) -> Option<Request> {
        if self.done {
            return None;
        }
        let total = self.content.len();
        let end = (self.offset + self.chunk_size).min(total);
        let body = self.content.slice(self.offset..end);
        let tid = self.tid_for(&body);
        let range = ByteRange {
            start: self.offset as u64 + 1,
            end: Some(end as u64),
            total: Some(total as u64),
        };
        self.offset = end;
        self.done = end == total;
        let flag = if self.done { Flag::End } else { Flag::More };
        Some(self.template.request(tid, range, body, flag))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.done {
            return (0, Some(0));
        }
        let left = (self.content.len() - self.offset)
            .div_ceil(self.chunk_size)
            .max(1);
        (left, Some(left))
    }
}

// ---------------------------------------------------------------------------------------
// URIs
// ---------------------------------------------------------------------------------------

/// An MSRP URI, `msrp[s]://host:port/session;transport` (RFC 4975 §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MsrpUri {
    /// `msrps`: TLS.
    pub secure: bool,
    /// Host without IPv6 brackets.
    pub host: String,
    pub port: u16,
    pub session_id: String,
    /// `tcp` in practice.
    pub transport: String,
}

/// Why a string is not an MSRP URI this module can connect to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an MSRP URI with host, port and transport: {0:?}")]
pub struct UriError(pub String);

impl MsrpUri {
    /// Parses `msrp://host:port/session;tcp` (port required; a missing session id is
    /// allowed and empty).
    pub fn parse(s: &str) -> Result<MsrpUri, UriError> {
        let err = || UriError(s.to_owned());
        let (scheme, rest) = s.split_once("://").ok_or_else(err)?;
        let secure = match scheme.to_ascii_lowercase().as_str() {
            "msrp" => false,
            "msrps" => true,
            _ => return Err(err()),
        };
        let (before_params, params) = rest.split_once(';').ok_or_else(err)?;
        let transport = params.split(';').next().unwrap_or_default();
        if transport.is_empty() || !transport.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(err());
        }
        let (authority, session_id) = before_params.split_once('/').unwrap_or((before_params, ""));
        // Drop userinfo.
        let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, p) = v6.split_once(']').ok_or_else(err)?;
            (h, p.strip_prefix(':').ok_or_else(err)?)
        } else {
            hostport.rsplit_once(':').ok_or_else(err)?
        };
        let port: u16 = port.parse().map_err(|_| err())?;
        if host.is_empty() || port == 0 {
            return Err(err());
        }
        Ok(MsrpUri {
            secure,
            host: host.to_owned(),
            port,
            session_id: session_id.to_owned(),
            transport: transport.to_ascii_lowercase(),
        })
    }
}

impl fmt::Display for MsrpUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.secure { "msrps" } else { "msrp" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)?;
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)?;
        }
        write!(f, "/{};{}", self.session_id, self.transport)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::RandomIds;
    use proptest::prelude::*;

    /// Feeds `wire` split into pieces of `step` bytes; returns every frame.
    fn parse_all(wire: &[u8], step: usize) -> Result<Vec<Frame>, ParseError> {
        let mut p = Parser::default();
        let mut out = Vec::new();
        for piece in wire.chunks(step.max(1)) {
            p.feed(piece)?.into_iter().for_each(|f| out.push(f));
            while let Some(f) = p.next_frame()? {
                out.push(f);
            }
        }
        Ok(out)
    }

    fn render(f: &Frame) -> Vec<u8> {
        let mut b = BytesMut::new();
        f.render(&mut b);
        b.to_vec()
    }

    fn crlf(s: &str) -> Vec<u8> {
        s.replace('\n', "\r\n").into_bytes()
    }

    // RFC 4975 examples (§4, §5.1, §10.1, §10.5) and the mapping-reference §2 exchange.
    // The RFC's Byte-Range counts in §4/§10.1 include the body's trailing CRLF (a known
    // inconsistency); the codec does not check Byte-Range against the body length.
    const RFC4975_S4_SEND: &str = "MSRP a786hjs2 SEND
To-Path: msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp
From-Path: msrp://atlanta.example.com:7654/jshA7weztas;tcp
Message-ID: 87652491
Byte-Range: 1-25/25
Content-Type: text/plain

Hey Bob, are you there?
-------a786hjs2$
";
    const RFC4975_S4_200: &str = "MSRP a786hjs2 200 OK
To-Path: msrp://atlanta.example.com:7654/jshA7weztas;tcp
From-Path: msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp
-------a786hjs2$
";
    const RFC4975_S5_1_FIRST: &str = "MSRP dkei38sd SEND
To-Path: msrp://alice.example.com:7777/iau39soe2843z;tcp
From-Path: msrp://bob.example.com:8888/9di4eae923wzd;tcp
Message-ID: 4564dpWd
Byte-Range: 1-*/8
Content-Type: text/plain

abcd
-------dkei38sd+
";
    const RFC4975_S5_1_SECOND: &str = "MSRP dkei38ia SEND
To-Path: msrp://alice.example.com:7777/iau39soe2843z;tcp
From-Path: msrp://bob.example.com:8888/9di4eae923wzd;tcp
Message-ID: 4564dpWd
Byte-Range: 5-8/8
Content-Type: text/plain

EFGH
-------dkei38ia$
";
    const RFC4975_S10_1_SEND: &str = "MSRP d93kswow SEND
To-Path: msrp://bob.example.com:8888/9di4eae923wzd;tcp
From-Path: msrp://alicepc.example.com:7777/iau39soe2843z;tcp
Message-ID: 12339sdqwer
Byte-Range: 1-16/16
Content-Type: text/plain

Hi, I'm Alice!
-------d93kswow$
";
    const RFC4975_S10_5_SEND: &str = "MSRP d93kswow SEND
To-Path: msrp://bob.example.com:8888/9di4eae923wzd;tcp
From-Path: msrp://alicepc.example.com:7777/iau39soe2843z;tcp
Message-ID: 12339sdqwer
Byte-Range: 1-106/106
Success-Report: yes
Failure-Report: no
Content-Type: text/html

<html><body>
<p>Here is that important link...
<a href=\"http://www.example.com/foobar\">foobar</a>
</p>
</body></html>
-------d93kswow$
";
    const RFC4975_S10_5_REPORT: &str = "MSRP dkei38sd REPORT
To-Path: msrp://alicepc.example.com:7777/iau39soe2843z;tcp
From-Path: msrp://bob.example.com:8888/9di4eae923wzd;tcp
Message-ID: 12339sdqwer
Byte-Range: 1-106/106
Status: 000 200 OK
-------dkei38sd$
";
    const MAPPING_S2_200: &str = "MSRP d93kswow 200 OK
To-Path: msrp://192.0.2.10:2855/s8Kf02jqx;tcp
From-Path: msrp://198.51.100.7:2855/rA9xq;tcp
-------d93kswow$
";

    struct Vector {
        name: &'static str,
        wire: &'static str,
        tid: &'static str,
        flag: Flag,
        body: Option<&'static str>,
        check: fn(&Frame),
    }

    fn req(f: &Frame) -> &Request {
        match f {
            Frame::Request(r) => r,
            Frame::Response(_) => panic!("expected a request"),
        }
    }

    fn resp(f: &Frame) -> &Response {
        match f {
            Frame::Response(r) => r,
            Frame::Request(_) => panic!("expected a response"),
        }
    }

    const VECTORS: &[Vector] = &[
        Vector {
            name: "§4 SEND",
            wire: RFC4975_S4_SEND,
            tid: "a786hjs2",
            flag: Flag::End,
            body: Some("Hey Bob, are you there?"),
            check: |f| {
                let r = req(f);
                assert_eq!(r.method, Method::Send);
                assert_eq!(
                    r.to_path,
                    ["msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp"]
                );
                assert_eq!(r.message_id.as_deref(), Some("87652491"));
                assert_eq!(
                    r.byte_range.map(|b| b.to_string()).as_deref(),
                    Some("1-25/25")
                );
                assert_eq!(r.content_type.as_deref(), Some("text/plain"));
            },
        },
        Vector {
            name: "§4 200",
            wire: RFC4975_S4_200,
            tid: "a786hjs2",
            flag: Flag::End,
            body: None,
            check: |f| {
                let r = resp(f);
                assert_eq!((r.status, r.comment.as_deref()), (200, Some("OK")));
                assert_eq!(
                    r.from_path,
                    ["msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp"]
                );
            },
        },
        Vector {
            name: "§5.1 interrupted first chunk",
            wire: RFC4975_S5_1_FIRST,
            tid: "dkei38sd",
            flag: Flag::More,
            body: Some("abcd"),
            check: |f| {
                let br = req(f).byte_range.expect("byte-range");
                assert_eq!((br.start, br.end, br.total), (1, None, Some(8)));
            },
        },
        Vector {
            name: "§5.1 second chunk",
            wire: RFC4975_S5_1_SECOND,
            tid: "dkei38ia",
            flag: Flag::End,
            body: Some("EFGH"),
            check: |f| {
                let br = req(f).byte_range.expect("byte-range");
                assert_eq!((br.start, br.end, br.total), (5, Some(8), Some(8)));
            },
        },
        Vector {
            name: "§10.1 SEND",
            wire: RFC4975_S10_1_SEND,
            tid: "d93kswow",
            flag: Flag::End,
            body: Some("Hi, I'm Alice!"),
            check: |f| assert_eq!(req(f).message_id.as_deref(), Some("12339sdqwer")),
        },
        Vector {
            name: "§10.5 SEND with reports",
            wire: RFC4975_S10_5_SEND,
            tid: "d93kswow",
            flag: Flag::End,
            body: Some(
                "<html><body>\r\n<p>Here is that important link...\r\n<a href=\"http://www.example.com/foobar\">foobar</a>\r\n</p>\r\n</body></html>",
            ),
            check: |f| {
                let r = req(f);
                assert_eq!(r.success_report, Some(true));
                assert_eq!(r.failure_report, Some(FailureReport::No));
            },
        },
        Vector {
            name: "§10.5 REPORT",
            wire: RFC4975_S10_5_REPORT,
            tid: "dkei38sd",
            flag: Flag::End,
            body: None,
            check: |f| {
                let r = req(f);
                assert_eq!(r.method, Method::Report);
                let st = r.status.clone().expect("status");
                assert_eq!(
                    (st.namespace, st.code, st.reason.as_deref()),
                    (0, 200, Some("OK"))
                );
            },
        },
        Vector {
            name: "mapping §2 200",
            wire: MAPPING_S2_200,
            tid: "d93kswow",
            flag: Flag::End,
            body: None,
            check: |f| assert_eq!(resp(f).to_path, ["msrp://192.0.2.10:2855/s8Kf02jqx;tcp"]),
        },
    ];

    #[test]
    fn rfc_vectors_parse_and_render_exactly() {
        for v in VECTORS {
            let wire = crlf(v.wire);
            for step in [wire.len(), 1, 2, 7, 64] {
                let frames = parse_all(&wire, step).unwrap_or_else(|e| panic!("{}: {e}", v.name));
                assert_eq!(frames.len(), 1, "{} step {step}", v.name);
                let f = &frames[0];
                assert_eq!(f.tid(), v.tid, "{}", v.name);
                if let Frame::Request(r) = f {
                    assert_eq!(r.flag, v.flag, "{}", v.name);
                    assert_eq!(r.body.as_deref(), v.body.map(str::as_bytes), "{}", v.name);
                } else {
                    assert!(v.body.is_none());
                }
                (v.check)(f);
                assert_eq!(
                    render(f),
                    wire,
                    "{}: render is not the exact wire form",
                    v.name
                );
            }
        }
    }

    #[test]
    fn several_frames_in_one_read() {
        let mut wire = crlf(RFC4975_S5_1_FIRST);
        wire.extend(crlf(RFC4975_S5_1_SECOND));
        wire.extend(crlf(RFC4975_S4_200));
        let frames = parse_all(&wire, wire.len()).expect("parse");
        let tids: Vec<_> = frames.iter().map(Frame::tid).collect();
        assert_eq!(tids, ["dkei38sd", "dkei38ia", "a786hjs2"]);
    }

    /// Bodies that contain things resembling an end-line must survive intact.
    #[test]
    fn end_line_lookalikes_in_body() {
        let bodies: &[&[u8]] = &[
            b"",
            b"\r\n",
            b"\r\n\r\n",
            b"-------",
            b"-------tid1234",            // hyphens and tid, no flag
            b"x-------tid1234$\r\n",      // end-line not after a CRLF
            b"x\r\n-------tid1234X\r\n",  // wrong flag character
            b"x\r\n-------tid1234$x",     // flag not followed by CRLF
            b"x\r\n-------tid12345$\r\n", // longer tid sharing a prefix
            b"x\r\n-------other99$\r\n",  // another transaction's end-line
            b"\r\n-------tid123$\r\n",    // shorter tid
            b"----------------\r\n--------\r\n-",
            b"\xff\x00\r\r\n\n-",
        ];
        for body in bodies {
            for flag in [Flag::More, Flag::End, Flag::Abort] {
                let r = Request {
                    body: Some(Bytes::copy_from_slice(body)),
                    content_type: Some("application/octet-stream".into()),
                    flag,
                    ..Request::new(
                        "tid1234",
                        Method::Send,
                        vec!["msrp://a:1/x;tcp".into()],
                        vec!["msrp://b:2/y;tcp".into()],
                    )
                };
                let wire = r.to_bytes();
                for step in [1, 3, wire.len()] {
                    let frames = parse_all(&wire, step).expect("parse");
                    assert_eq!(
                        frames,
                        [Frame::Request(r.clone())],
                        "body {body:?} step {step}"
                    );
                }
            }
        }
    }

    #[test]
    fn lenient_empty_body_without_extra_crlf() {
        let wire = crlf(
            "MSRP abcd SEND\nTo-Path: msrp://a:1/x;tcp\nFrom-Path: msrp://b:2/y;tcp\nContent-Type: text/plain\n\n-------abcd$\n",
        );
        let frames = parse_all(&wire, 1).expect("parse");
        assert_eq!(req(&frames[0]).body.as_deref(), Some(&b""[..]));
    }

    #[test]
    fn padding_crlf_between_frames_is_skipped() {
        let mut wire = b"\r\n\r\n".to_vec();
        wire.extend(crlf(RFC4975_S4_200));
        assert_eq!(parse_all(&wire, 1).expect("parse").len(), 1);
    }

    #[test]
    fn errors() {
        let small = Limits {
            max_header_bytes: 200,
            max_body_bytes: 10,
        };
        let cases: &[(&str, &str, ParseError)] = &[
            (
                "not msrp",
                "HTTP/1.1 200 OK\n",
                ParseError::BadStartLine("HTTP/1.1 200 OK".into()),
            ),
            (
                "no method",
                "MSRP abcd\n",
                ParseError::BadStartLine("MSRP abcd".into()),
            ),
            (
                "lowercase method",
                "MSRP abcd send\n",
                ParseError::BadStartLine("MSRP abcd send".into()),
            ),
            (
                "bad tid",
                "MSRP ab$cd SEND\n",
                ParseError::BadTransactionId("ab$cd".into()),
            ),
            (
                "missing To-Path",
                "MSRP abcd SEND\nFrom-Path: msrp://b:2/y;tcp\n-------abcd$\n",
                ParseError::MissingHeader("To-Path"),
            ),
            (
                "duplicate",
                "MSRP abcd SEND\nTo-Path: msrp://a:1/x;tcp\nTo-Path: msrp://a:1/x;tcp\n",
                ParseError::DuplicateHeader("To-Path"),
            ),
            (
                "bad byte-range",
                "MSRP abcd SEND\nByte-Range: 1-x/3\n",
                ParseError::BadHeaderValue {
                    name: "Byte-Range",
                    value: "1-x/3".into(),
                },
            ),
            (
                "header w/o colon",
                "MSRP abcd SEND\nTo-Path\n",
                ParseError::BadHeaderLine("To-Path".into()),
            ),
            (
                "body in response",
                "MSRP abcd 200 OK\nTo-Path: msrp://a:1/x;tcp\n\n",
                ParseError::BodyInResponse,
            ),
            (
                "headers too large",
                "MSRP abcd SEND\n",
                ParseError::HeadersTooLarge { limit: 200 },
            ),
            (
                "body too large",
                "MSRP abcd SEND\nTo-Path: msrp://a:1/x;tcp\nFrom-Path: msrp://b:2/y;tcp\n\n0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\n-------abcd$\n",
                ParseError::BodyTooLarge { limit: 10 },
            ),
        ];
        for (name, input, want) in cases {
            let mut input = crlf(input);
            if *name == "headers too large" {
                input.extend(b"X-A: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n".repeat(10));
            }
            let mut p = Parser::new(small);
            let got = p.feed(&input).and_then(|_| p.next_frame());
            assert_eq!(got.as_ref().err(), Some(want), "{name}");
            // The parser stays failed.
            assert!(
                matches!(p.feed(b"MSRP"), Err(ParseError::Failed(_))),
                "{name}"
            );
        }
    }

    #[test]
    fn incomplete_input_is_not_an_error() {
        let wire = crlf(RFC4975_S10_5_SEND);
        let mut p = Parser::default();
        assert_eq!(p.feed(&wire[..wire.len() - 1]), Ok(None));
        assert!(p.feed(&wire[wire.len() - 1..]).expect("ok").is_some());
        assert_eq!(p.buffered(), 0);
    }

    fn template() -> ChunkTemplate {
        ChunkTemplate {
            to_path: vec!["msrp://198.51.100.7:2855/rA9xq;tcp".into()],
            from_path: vec!["msrp://192.0.2.10:2855/s8Kf02jqx;tcp".into()],
            message_id: "m4Qe81ZkPq".into(),
            content_type: "message/cpim".into(),
            success_report: Some(true),
            failure_report: Some(FailureReport::Yes),
        }
    }

    #[test]
    fn chunking_table() {
        // (content length, chunk size, expected ranges)
        let cases: &[(usize, usize, &[&str])] = &[
            (
                4385,
                2048,
                &["1-2048/4385", "2049-4096/4385", "4097-4385/4385"],
            ),
            (4096, 2048, &["1-2048/4096", "2049-4096/4096"]),
            (5, 2048, &["1-5/5"]),
            (0, 2048, &["1-0/0"]),
            (3, 1, &["1-1/3", "2-2/3", "3-3/3"]),
        ];
        for (len, size, want) in cases {
            let content = Bytes::from((0..*len).map(|i| (i % 251) as u8).collect::<Vec<_>>());
            let chunks: Vec<Request> =
                Chunks::new(template(), content.clone(), *size, &RandomIds).collect();
            let ranges: Vec<String> = chunks
                .iter()
                .map(|c| c.byte_range.expect("range").to_string())
                .collect();
            assert_eq!(ranges, *want, "len {len} size {size}");
            let mut joined = Vec::new();
            for (i, c) in chunks.iter().enumerate() {
                assert_eq!(c.message_id.as_deref(), Some("m4Qe81ZkPq"));
                assert_eq!(
                    c.flag,
                    if i + 1 == chunks.len() {
                        Flag::End
                    } else {
                        Flag::More
                    }
                );
                assert!(is_ident(&c.tid));
                joined.extend_from_slice(c.body.as_deref().expect("body"));
            }
            assert_eq!(joined, content);
            let mut tids: Vec<_> = chunks.iter().map(|c| c.tid.clone()).collect();
            tids.dedup();
            assert_eq!(tids.len(), chunks.len(), "fresh tid per chunk");
        }
    }

    #[test]
    fn mapping_example_first_chunk_renders_exactly() {
        let content = Bytes::from(vec![b'x'; 4385]);
        let mut tids = ["d93kswow", "a7u1bq2x", "zz99yy88"]
            .into_iter()
            .map(String::from);
        let first =
            Chunks::with_tid_source(template(), content, 2048, || tids.next().expect("tid"))
                .next()
                .expect("chunk");
        let wire = first.to_bytes();
        let head = crlf(
            "MSRP d93kswow SEND
To-Path: msrp://198.51.100.7:2855/rA9xq;tcp
From-Path: msrp://192.0.2.10:2855/s8Kf02jqx;tcp
Message-ID: m4Qe81ZkPq
Byte-Range: 1-2048/4385
Success-Report: yes
Failure-Report: yes
Content-Type: message/cpim

",
        );
        assert_eq!(&wire[..head.len()], &head[..]);
        assert!(wire.ends_with(b"x\r\n-------d93kswow+\r\n"));
        assert_eq!(wire.len(), head.len() + 2048 + 2 + 16 + 2);
    }

    #[test]
    fn chunk_tid_avoids_end_line_in_content() {
        let content = Bytes::from_static(b"hello\r\n-------abcd$\r\nworld");
        let mut tids = ["abcd", "abcd", "efgh"].into_iter().map(String::from);
        let chunks: Vec<_> =
            Chunks::with_tid_source(template(), content, 1024, || tids.next().expect("tid"))
                .collect();
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].tid, "efgh");
        let parsed = parse_all(&chunks[0].to_bytes(), 5).expect("parse");
        assert_eq!(parsed, [Frame::Request(chunks[0].clone())]);
    }

    #[test]
    fn chunks_share_the_content_buffer() {
        let content = Bytes::from(vec![7u8; 10_000]);
        let base = content.as_ptr() as usize;
        for (i, c) in Chunks::new(template(), content.clone(), 2048, &RandomIds).enumerate() {
            let body = c.body.expect("body");
            assert_eq!(
                body.as_ptr() as usize,
                base + i * 2048,
                "chunk {i} is a slice, not a copy"
            );
        }
    }

    #[test]
    fn abort_request() {
        let r = template().abort("abrt1".into(), 2048, 4385);
        let wire = r.to_bytes();
        assert!(
            wire.windows(25)
                .any(|w| w == b"Byte-Range: 2049-*/4385\r\n")
        );
        assert!(wire.ends_with(b"\r\n\r\n\r\n-------abrt1#\r\n"));
    }

    #[test]
    fn response_for_request() {
        let frames = parse_all(&crlf(RFC4975_S4_SEND), 1000).expect("parse");
        let r = req(&frames[0]).response(200, "OK");
        assert_eq!(r.to_bytes(), crlf(RFC4975_S4_200));
    }

    #[test]
    fn uris() {
        let ok: &[(&str, bool, &str, u16, &str)] = &[
            (
                "msrp://198.51.100.7:2855/rA9xq;tcp",
                false,
                "198.51.100.7",
                2855,
                "rA9xq",
            ),
            (
                "msrps://bob.example.com:8888/9di4eae923wzd;tcp",
                true,
                "bob.example.com",
                8888,
                "9di4eae923wzd",
            ),
            (
                "MSRP://[2001:db8::1]:2855/s;tcp;x=y",
                false,
                "2001:db8::1",
                2855,
                "s",
            ),
            ("msrp://user@host:1/;tcp", false, "host", 1, ""),
        ];
        for (s, secure, host, port, session) in ok {
            let u = MsrpUri::parse(s).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                (u.secure, u.host.as_str(), u.port, u.session_id.as_str()),
                (*secure, *host, *port, *session)
            );
        }
        assert_eq!(
            MsrpUri::parse("msrp://[2001:db8::1]:2855/s;tcp")
                .expect("uri")
                .to_string(),
            "msrp://[2001:db8::1]:2855/s;tcp"
        );
        for bad in [
            "",
            "http://a:1/x;tcp",
            "msrp://a/x;tcp",
            "msrp://a:1/x",
            "msrp://:1/x;tcp",
            "msrp://a:0/x;tcp",
            "msrp://a:99999/x;tcp",
            "msrp://[::1/x;tcp",
        ] {
            assert!(MsrpUri::parse(bad).is_err(), "{bad}");
        }
    }

    // ---- property tests ----

    fn ident() -> impl Strategy<Value = String> {
        "[A-Za-z0-9][A-Za-z0-9.+%=-]{3,20}"
    }

    fn uri() -> impl Strategy<Value = String> {
        ("[a-z0-9.]{1,12}", 1u16.., "[A-Za-z0-9]{1,10}")
            .prop_map(|(h, p, s)| format!("msrp://{h}:{p}/{s};tcp"))
    }

    fn text() -> impl Strategy<Value = String> {
        // utf8text without leading/trailing blanks.
        "[!-~ä€]([ -~ä€\t]{0,20}[!-~ä€])?"
    }

    fn ext_headers() -> impl Strategy<Value = Vec<(String, String)>> {
        prop::collection::vec(("X-[A-Za-z0-9-]{1,10}", text()), 0..3)
    }

    fn byte_range() -> impl Strategy<Value = ByteRange> {
        (any::<u64>(), any::<Option<u64>>(), any::<Option<u64>>())
            .prop_map(|(start, end, total)| ByteRange { start, end, total })
    }

    fn request() -> impl Strategy<Value = Request> {
        (
            (
                ident(),
                prop_oneof![
                    Just(Method::Send),
                    Just(Method::Report),
                    "[A-Z]{1,8}".prop_map(Method::Other)
                ],
                prop::collection::vec(uri(), 1..3),
                prop::collection::vec(uri(), 1..3),
                prop::option::of(ident()),
                prop::option::of(byte_range()),
            ),
            (
                any::<Option<bool>>(),
                prop::option::of(prop_oneof![
                    Just(FailureReport::Yes),
                    Just(FailureReport::No),
                    Just(FailureReport::Partial)
                ]),
                prop::option::of((0u16..1000, 0u16..1000, prop::option::of(text())).prop_map(
                    |(namespace, code, reason)| Status {
                        namespace,
                        code,
                        reason,
                    },
                )),
                prop::option::of("[a-z]{1,8}/[a-z+.-]{1,8}(; charset=[a-z0-9-]{1,8})?"),
                ext_headers(),
                prop::option::of(prop::collection::vec(any::<u8>(), 0..300)),
                prop_oneof![Just(Flag::More), Just(Flag::End), Just(Flag::Abort)],
            ),
        )
            .prop_map(
                |((tid, method, to, from, mid, br), (sr, fr, st, ct, headers, body, flag))| {
                    let method = match method {
                        Method::Other(m) if m == "SEND" || m == "REPORT" => {
                            Method::Other("AUTH".into())
                        }
                        m => m,
                    };
                    Request {
                        message_id: mid,
                        byte_range: br,
                        success_report: sr,
                        failure_report: fr,
                        status: st,
                        content_type: ct,
                        headers,
                        body: body.map(Bytes::from),
                        flag,
                        ..Request::new(tid, method, to, from)
                    }
                },
            )
    }

    fn response() -> impl Strategy<Value = Response> {
        (
            ident(),
            0u16..1000,
            prop::option::of(text()),
            prop::collection::vec(uri(), 1..3),
            prop::collection::vec(uri(), 1..3),
            ext_headers(),
        )
            .prop_map(
                |(tid, status, comment, to_path, from_path, headers)| Response {
                    tid,
                    status,
                    comment,
                    to_path,
                    from_path,
                    headers,
                },
            )
    }

    proptest! {
        #[test]
        fn roundtrip_request(r in request(), step in 1usize..64) {
            let mut delim = b"\r\n-------".to_vec();
            delim.extend_from_slice(r.tid.as_bytes());
            let mut padded = b"\r\n".to_vec();
            padded.extend_from_slice(r.body.as_deref().unwrap_or_default());
            prop_assume!(find(&padded, &delim, 0).is_none());
            let wire = r.to_bytes();
            let frames = parse_all(&wire, step).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(frames, vec![Frame::Request(r)]);
        }

        #[test]
        fn roundtrip_response(r in response(), step in 1usize..64) {
            let wire = r.to_bytes();
            let frames = parse_all(&wire, step).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(frames, vec![Frame::Response(r)]);
        }

        #[test]
        fn never_panics(data in prop::collection::vec(any::<u8>(), 0..2000), step in 1usize..100) {
            let _ = parse_all(&data, step);
        }

        #[test]
        fn never_panics_on_msrp_like_input(
            parts in prop::collection::vec(prop_oneof![
                Just(&b"MSRP "[..]), Just(&b"abcd "[..]), Just(&b"SEND"[..]), Just(&b"200 OK"[..]),
                Just(&b"\r\n"[..]), Just(&b"To-Path: msrp://a:1/x;tcp"[..]), Just(&b"From-Path: msrp://b:2/y;tcp"[..]),
                Just(&b"-------abcd"[..]), Just(&b"$"[..]), Just(&b"+"[..]), Just(&b"#"[..]), Just(&b"Byte-Range: 1-*/*"[..]),
                Just(&b":"[..]), Just(&b"\xff"[..]),
            ], 0..60),
            step in 1usize..20,
        ) {
            let data: Vec<u8> = parts.concat();
            let _ = parse_all(&data, step);
        }
    }
}
