//! DATA: the command, the content phase (I/O-free [`DataPhase`]) and the end-of-data reply.
//!
//! End-of-data detection and dot-unstuffing are our own (`EndScan`), not smtp-proto's
//! `DataReceiver`: smtp-proto 0.2.5 sets its "after CR" flag again after `CRLF .` and so
//! takes `CRLF . CR CR LF` for the end of data — the SMTP-smuggling hole (smtpsmuggling.com).
//! Here **only** `CRLF . CRLF` ends a message (the first CRLF may be the DATA command's own);
//! every other variant (`LF . LF`, `CR . CR`, `CRLF . CR CR LF`, `CRLF NUL . CRLF`, ...) is
//! content. Around the scan, [`DataPhase`] enforces the message size without buffering past
//! the limit, measures text lines, and notices bare CR / LF: a message with one is read to
//! its real end and then refused whole (`554 5.6.0`), so the handler only ever sees a
//! message within limits with CRLF line ends, and nothing after a smuggled "end" is ever read
//! as a command.

use bytes::Buf;

use super::received;
use super::replies;
use super::session::{Flow, Session, State, Transaction};
use super::{DataReplies, Protocol};

/// The most a declared SIZE= makes us allocate before the octets arrive.
const PREALLOCATE_MAX: usize = 1024 * 1024;

/// Why a complete message is refused at the end of data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    /// Over [`Limits::message_size`](super::Limits).
    #[error("the message is over the size limit")]
    TooBig,
    /// A text line over [`Limits::text_line`](super::Limits).
    #[error("a text line is over the line limit")]
    LineTooLong,
    /// A CR not followed by LF, or an LF not preceded by CR.
    #[error("a bare CR or LF where only CRLF ends a line")]
    BareLineEnd,
}

/// Where the end-of-data scan is, between two octets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// Just after a CRLF (or the DATA command's CRLF): a `.` here is special.
    LineStart,
    /// Inside a line.
    Mid,
    /// After a CR that is not yet known to be part of a CRLF (not yet emitted).
    Cr,
    /// After `.` at the start of a line (not yet emitted).
    Dot,
    /// After `.` CR at the start of a line: an LF now ends the data.
    DotCr,
}

/// Receives message content after 354, up to and including `CRLF.CRLF`.
pub(crate) struct DataPhase {
    scan: Scan,
    /// The unstuffed content, while within the size limit.
    message: Vec<u8>,
    /// Unstuffed octets seen (kept or not).
    size: usize,
    max_size: usize,
    /// Longest acceptable line without its CRLF.
    max_line: usize,
    /// Length of the current line so far.
    line_len: usize,
    too_long: bool,
    bare: bool,
}

impl DataPhase {
    /// `max_size`: largest message in octets; `max_line`: longest text line, CRLF included;
    /// `size_hint`: the SIZE= the client declared, to allocate once; bounded by `max_size`
    /// and [`PREALLOCATE_MAX`], so a declaration alone cannot reserve much memory.
    pub(crate) fn new(max_size: usize, max_line: usize, size_hint: Option<u64>) -> Self {
        DataPhase {
            scan: Scan::LineStart,
            message: Vec::with_capacity(size_hint.map_or(0, |n| {
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                n.min(max_size).min(PREALLOCATE_MAX)
            })),
            size: 0,
            max_size,
            max_line: max_line.saturating_sub(2),
            line_len: 0,
            too_long: false,
            bare: false,
        }
    }

    /// Appends content octets (no CR or LF among them) to the current line.
    fn text(&mut self, bytes: &[u8]) {
        self.line_len = self.line_len.saturating_add(bytes.len());
        if self.line_len > self.max_line {
            self.too_long = true;
        }
        self.keep(bytes);
    }

    /// A bare CR or LF, kept as content (the message will be refused anyway).
    fn bare(&mut self, octet: u8) {
        self.bare = true;
        self.line_len = 0;
        self.keep(&[octet]);
    }

    fn keep(&mut self, bytes: &[u8]) {
        self.size = self.size.saturating_add(bytes.len());
        if self.size <= self.max_size {
            self.message.extend_from_slice(bytes);
        } else if !self.message.is_empty() || self.message.capacity() > 0 {
            // Past the limit: keep nothing more, and give back what was kept.
            self.message = Vec::new();
        }
    }

    /// Feeds input; returns how many octets were consumed and whether the end of data was
    /// seen. Input after the end of data is left unconsumed (pipelined commands).
    pub(crate) fn ingest(&mut self, input: &[u8]) -> (usize, bool) {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.scan {
                Scan::Mid | Scan::LineStart if b != b'\r' && b != b'\n' => {
                    if self.scan == Scan::LineStart && b == b'.' {
                        self.scan = Scan::Dot;
                        i += 1;
                        continue;
                    }
                    // The run of plain text up to the next CR or LF, in one go.
                    let run = memchr::memchr2(b'\r', b'\n', &input[i..]).unwrap_or(input.len() - i);
                    self.text(&input[i..i + run]);
                    self.scan = Scan::Mid;
                    i += run;
                }
                Scan::Mid | Scan::LineStart => {
                    if b == b'\r' {
                        self.scan = Scan::Cr;
                    } else {
                        self.bare(b'\n');
                        self.scan = Scan::Mid;
                    }
                    i += 1;
                }
                Scan::Cr => {
                    match b {
                        b'\n' => {
                            self.line_len = 0;
                            self.keep(b"\r\n");
                            self.scan = Scan::LineStart;
                        }
                        // The first CR was bare; this one may still start a CRLF.
                        b'\r' => self.bare(b'\r'),
                        _ => {
                            self.bare(b'\r');
                            self.scan = Scan::Mid;
                            continue;
                        }
                    }
                    i += 1;
                }
                Scan::Dot => {
                    if b == b'\r' {
                        self.scan = Scan::DotCr;
                        i += 1;
                    } else {
                        // A stuffed dot (RFC 5321 §4.5.2): dropped; the octet is content.
                        self.scan = Scan::Mid;
                    }
                }
                Scan::DotCr => {
                    if b == b'\n' {
                        return (i + 1, true);
                    }
                    // `CRLF . CR` + not LF: the dot was stuffing, the CR is bare (the
                    // `Cr` state emits it when it sees this octet).
                    self.scan = Scan::Cr;
                }
            }
        }
        (input.len(), false)
    }

    /// The complete message, or why it is refused. Call after `ingest` returned `done`.
    pub(crate) fn finish(mut self) -> Result<Vec<u8>, ContentError> {
        if self.size > self.max_size {
            return Err(ContentError::TooBig);
        }
        if self.bare {
            return Err(ContentError::BareLineEnd);
        }
        if self.too_long {
            return Err(ContentError::LineTooLong);
        }
        Ok(std::mem::take(&mut self.message))
    }
}

impl Session {
    /// The DATA command.
    pub(super) fn data_command(&mut self) -> Flow {
        match &self.state {
            State::Fresh => self.reply(replies::need_hello(self.shared.protocol)),
            State::Ready => self.reply(replies::need_mail("DATA")),
            State::Mail(tx) if tx.envelope.rcpts.is_empty() => {
                self.reply(replies::no_valid_recipients(self.shared.protocol))
            }
            State::Mail(_) => {
                let State::Mail(tx) = std::mem::replace(&mut self.state, State::Ready) else {
                    unreachable!("matched above")
                };
                let limits = &self.shared.config.limits;
                let hint = tx.envelope.mail_from.size;
                let phase = DataPhase::new(limits.message_size, limits.text_line, hint);
                self.state = State::Data(tx, Box::new(phase));
                // Every message gets its own DATA budget (see `conn::Connection::read_deadline`).
                self.new_content = true;
                self.reply(replies::start_data())
            }
            State::Data(..) | State::Complete(..) => {
                unreachable!("no commands are read during DATA")
            }
        }
    }

    /// Feeds buffered input to the content phase; at the end of data, answers a refused
    /// message at once and makes an accepted one [`State::Complete`] (`Deliver`: the driver
    /// writes the replies before it, then [`Session::deliver`] hands it over).
    pub(super) fn data_input(&mut self) -> Option<Flow> {
        let State::Data(_, phase) = &mut self.state else {
            return None;
        };
        let (used, done) = phase.ingest(&self.rbuf);
        self.rbuf.advance(used);
        if !done {
            return None;
        }
        let State::Data(tx, phase) = std::mem::replace(&mut self.state, State::Ready) else {
            unreachable!("matched above")
        };
        Some(self.end_of_data(tx, *phase))
    }

    fn end_of_data(&mut self, tx: Transaction, phase: DataPhase) -> Flow {
        let limits = &self.shared.config.limits;
        let refused = match phase.finish() {
            Err(ContentError::TooBig) => replies::message_too_big(limits.message_size),
            Err(ContentError::LineTooLong) => replies::text_line_too_long(limits.text_line),
            Err(ContentError::BareLineEnd) => replies::bare_line_end_in_data(),
            Ok(body) => {
                let header = received::header(&received::Trace {
                    helo: &tx.envelope.client.helo,
                    ip: tx.envelope.client.ip,
                    hostname: &self.shared.config.hostname,
                    with: received::with_protocol(
                        self.shared.protocol,
                        self.hello.as_ref().is_some_and(|h| h.esmtp),
                        tx.envelope.client.tls,
                        tx.envelope.client.authenticated,
                        tx.envelope.mail_from.smtputf8,
                    ),
                    id: &tx.id,
                    date: self.shared.clock.now(),
                });
                // Prepend in place: a big message is not held twice while it is copied.
                let mut message = body;
                message.splice(0..0, header.bytes());
                // Nothing may wait in our output buffer while the handler works: the
                // driver writes it first.
                self.state = State::Complete(tx, message);
                return Flow::Deliver;
            }
        };
        tracing::info!(id = %tx.id, reply = %refused, "message refused");
        let count = tx.envelope.rcpts.len();
        self.data_replies(count, DataReplies::all(&tx.envelope, refused))
    }

    /// Hands a [`State::Complete`] message to the handler and answers with its replies.
    pub(super) async fn deliver(&mut self) -> Flow {
        let State::Complete(tx, message) = std::mem::replace(&mut self.state, State::Ready) else {
            return Flow::Continue;
        };
        tracing::debug!(id = %tx.id, size = message.len(), rcpts = tx.envelope.rcpts.len(), "message complete");
        let handler = self.shared.handler.clone();
        let count = tx.envelope.rcpts.len();
        let replies = handler.data(tx.envelope, message).await;
        tracing::info!(id = %tx.id, reply = %replies.transaction, "end of data");
        self.data_replies(count, replies)
    }

    /// SMTP: the transaction reply. LMTP: one reply per accepted recipient, in RCPT order.
    fn data_replies(&mut self, count: usize, replies: DataReplies) -> Flow {
        match self.shared.protocol {
            Protocol::Smtp => self.reply(replies.transaction),
            Protocol::Lmtp => {
                let DataReplies {
                    per_recipient,
                    transaction,
                } = replies;
                let mut per = per_recipient.into_iter();
                for _ in 0..count {
                    let reply = per.next().unwrap_or_else(|| transaction.clone());
                    if self.reply(reply) == Flow::Close {
                        return Flow::Close;
                    }
                }
                Flow::Continue
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` one by one; returns the result and what was left unconsumed.
    fn run(
        chunks: &[&[u8]],
        max_size: usize,
        max_line: usize,
    ) -> (Result<Vec<u8>, ContentError>, Vec<u8>) {
        let mut phase = DataPhase::new(max_size, max_line, None);
        for (i, chunk) in chunks.iter().enumerate() {
            let (used, done) = phase.ingest(chunk);
            if done {
                let mut rest = chunk[used..].to_vec();
                for c in &chunks[i + 1..] {
                    rest.extend_from_slice(c);
                }
                return (phase.finish(), rest);
            }
            assert_eq!(used, chunk.len(), "everything is consumed before the end");
        }
        panic!("no end of data in {chunks:?}");
    }

    fn ok(chunks: &[&[u8]], want: &[u8]) {
        let (got, _) = run(chunks, 1000, 1000);
        assert_eq!(
            got.map(|m| String::from_utf8_lossy(&m).into_owned()),
            Ok(String::from_utf8_lossy(want).into_owned()),
            "{chunks:?}"
        );
    }

    #[test]
    fn unstuffing_and_end_of_data() {
        ok(&[b".\r\n"], b"");
        ok(&[b"a\r\n.\r\n"], b"a\r\n");
        ok(&[b"..a\r\n.\r\n"], b".a\r\n");
        ok(&[b"a\r\n..\r\n.\r\n"], b"a\r\n.\r\n");
        ok(&[b"a\r", b"\n", b".", b"\r", b"\n"], b"a\r\n");
        ok(&[b"a\r\n.", b"\r\n"], b"a\r\n");
        ok(&[b"a\r\n.\r", b"\n"], b"a\r\n");
        ok(
            &[b"Subject: h\xc3\xa9\r\n\r\n\xff\x00\r\n.\r\n"],
            b"Subject: h\xc3\xa9\r\n\r\n\xff\x00\r\n",
        );
    }

    #[test]
    fn pipelined_input_after_the_end_is_left() {
        let (got, rest) = run(&[b"a\r\n.\r\nQUIT\r\n"], 1000, 1000);
        assert_eq!(got.unwrap(), b"a\r\n");
        assert_eq!(rest, b"QUIT\r\n");
    }

    /// Every end-of-data look-alike of the SMTP-smuggling research, and a few more: none
    /// of them ends the message; the real `CRLF.CRLF` behind the smuggled transaction does,
    /// and the whole thing is one message (refused when it holds a bare CR or LF).
    #[test]
    fn only_crlf_dot_crlf_ends_the_data() {
        let smuggled = b"MAIL FROM:<smuggled@evil.example>\r\nRCPT TO:<alice@cpm.example.net>\r\nDATA\r\nSpoofed\r\n";
        let variants: &[(&[u8], Result<(), ContentError>)] = &[
            (b"\n.\n", Err(ContentError::BareLineEnd)),
            (b"\n.\r", Err(ContentError::BareLineEnd)),
            (b"\r.\n", Err(ContentError::BareLineEnd)),
            (b"\r.\r", Err(ContentError::BareLineEnd)),
            (b"\n.\r\n", Err(ContentError::BareLineEnd)),
            (b"\r.\r\n", Err(ContentError::BareLineEnd)),
            (b"\r\n.\r\r\n", Err(ContentError::BareLineEnd)),
            (b"\r\r\n.\r\r\n", Err(ContentError::BareLineEnd)),
            (b"\r\n.\n", Err(ContentError::BareLineEnd)),
            (b"\r\n.\r", Err(ContentError::BareLineEnd)),
            (b"\r\n\x00.\r\n", Ok(())),
            (b"\r\n .\r\n", Ok(())),
        ];
        for (end, want) in variants {
            let mut input = b"hello".to_vec();
            input.extend_from_slice(end);
            input.extend_from_slice(smuggled);
            input.extend_from_slice(b".\r\nQUIT\r\n");
            // whole, and one octet at a time
            for chunks in [vec![&input[..]], input.chunks(1).collect::<Vec<_>>()] {
                let (got, rest) = run(&chunks, 10_000, 1000);
                assert_eq!(
                    got.as_ref().map(|_| ()),
                    want.as_ref().map(|_| ()),
                    "{:?}",
                    String::from_utf8_lossy(end)
                );
                assert_eq!(rest, b"QUIT\r\n", "{:?}", String::from_utf8_lossy(end));
                if let Ok(m) = got {
                    assert!(
                        m.ends_with(b"Spoofed\r\n"),
                        "the smuggled lines are content"
                    );
                }
            }
        }
    }

    #[test]
    fn a_dot_line_after_a_bare_line_end_is_content() {
        let (got, rest) = run(&[b"a\n.\r\nb\r\n.\r\n"], 1000, 1000);
        assert_eq!(got, Err(ContentError::BareLineEnd));
        assert!(rest.is_empty());
        let (got, _) = run(&[b"a\r\n.\rb\r\n.\r\n"], 1000, 1000);
        assert_eq!(got, Err(ContentError::BareLineEnd));
    }

    #[test]
    fn size_limit_is_exact_and_nothing_is_kept_past_it() {
        // exactly at the limit: "aaaa\r\n" is 6 octets
        assert_eq!(run(&[b"aaaa\r\n.\r\n"], 6, 1000).0.unwrap(), b"aaaa\r\n");
        assert_eq!(
            run(&[b"aaaa\r\n", b".\r\n"], 6, 1000).0.unwrap(),
            b"aaaa\r\n"
        );
        assert_eq!(
            run(&[b"aaaa\r", b"\n.\r", b"\n"], 6, 1000).0.unwrap(),
            b"aaaa\r\n"
        );
        assert_eq!(
            run(&[b"aaaaa\r\n.\r\n"], 6, 1000).0,
            Err(ContentError::TooBig)
        );
        // far over it, in many pieces, with pipelined input after the end
        let mut phase = DataPhase::new(10, 1000, Some(1 << 40));
        for _ in 0..1000 {
            assert_eq!(phase.ingest(b"0123456789\r\n"), (12, false));
            assert!(
                phase.message.len() <= 12,
                "buffered {}",
                phase.message.len()
            );
        }
        assert_eq!(phase.ingest(b".\r\nQUIT\r\n"), (3, true));
        assert_eq!(phase.finish(), Err(ContentError::TooBig));
    }

    #[test]
    fn text_line_limit_counts_unstuffed_octets_without_crlf() {
        let line = |n: usize| format!("{}\r\n.\r\n", "x".repeat(n));
        assert!(run(&[line(998).as_bytes()], 10_000, 1000).0.is_ok());
        assert_eq!(
            run(&[line(999).as_bytes()], 10_000, 1000).0,
            Err(ContentError::LineTooLong)
        );
        // the stuffed dot does not count
        let stuffed = format!(".{}\r\n.\r\n", ".".repeat(998));
        assert_eq!(
            run(&[stuffed.as_bytes()], 10_000, 1000).0.unwrap().len(),
            1000
        );
        // a long line split across reads is still seen
        let long = "y".repeat(1200);
        let (a, b) = long.split_at(600);
        assert_eq!(
            run(&[a.as_bytes(), b.as_bytes(), b"\r\n.\r\n"], 10_000, 1000).0,
            Err(ContentError::LineTooLong)
        );
    }
}
