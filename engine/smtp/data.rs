//! DATA: the command, the content phase (I/O-free [`DataPhase`]) and the end-of-data reply.
//!
//! Unstuffing and end-of-data detection are smtp-proto's `DataReceiver` (it recognises only
//! `CRLF.CRLF`, so `LF.LF` smuggling does not end a message early). Around it, [`DataPhase`]
//! enforces the message size without buffering past the limit, measures text lines, and
//! notices bare CR / LF, so the handler only ever sees a message within limits with CRLF
//! line ends.

use bytes::Buf;
use smtp_proto::request::receiver::{DataReceiver, DummyDataReceiver};

use super::received;
use super::replies;
use super::session::{Flow, Session, State, Transaction};
use super::{DataReplies, Protocol};

/// The most a declared SIZE= makes us allocate before the octets arrive.
const PREALLOCATE_MAX: usize = 1024 * 1024;

/// Why a complete message is refused at the end of data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContentError {
    /// Over [`Limits::message_size`](super::Limits).
    TooBig,
    /// A text line over [`Limits::text_line`](super::Limits).
    LineTooLong,
    /// A CR not followed by LF, or an LF not preceded by CR.
    BareLineEnd,
}

/// Receives message content after 354, up to and including `CRLF.CRLF`.
pub(crate) struct DataPhase {
    receiver: Receiver,
    message: Vec<u8>,
    max_size: usize,
    /// `message[..scanned]` has been through the line checks.
    scanned: usize,
    lines: LineScan,
}

enum Receiver {
    /// Keeping the (unstuffed) content.
    Keeping(DataReceiver),
    /// Past the size limit: reading to the end of data, keeping nothing.
    Discarding(DummyDataReceiver),
}

/// Line-length and line-end checks over unstuffed content, one byte at a time.
#[derive(Debug, Default)]
struct LineScan {
    /// Longest acceptable line without its CRLF.
    max: usize,
    /// Length of the current line so far.
    len: usize,
    prev_cr: bool,
    too_long: bool,
    bare: bool,
}

impl LineScan {
    fn scan(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.prev_cr {
                self.prev_cr = false;
                if b == b'\n' {
                    self.len = 0;
                    continue;
                }
                self.bare = true;
                self.count(1);
            }
            match b {
                b'\r' => self.prev_cr = true,
                b'\n' => {
                    self.bare = true;
                    self.len = 0;
                }
                _ => self.count(1),
            }
        }
    }

    fn count(&mut self, n: usize) {
        self.len += n;
        if self.len > self.max {
            self.too_long = true;
        }
    }
}

impl DataPhase {
    /// `max_size`: largest message in octets; `max_line`: longest text line, CRLF included;
    /// `size_hint`: the SIZE= the client declared, to allocate once; bounded by `max_size`
    /// and [`PREALLOCATE_MAX`], so a declaration alone cannot reserve much memory.
    pub(crate) fn new(max_size: usize, max_line: usize, size_hint: Option<u64>) -> Self {
        let mut receiver = DataReceiver::new();
        // The CRLF that ended the DATA command starts the content: without it, a message
        // that is empty (".\r\n" at once) or starts with a stuffed dot would not be seen.
        receiver.ingest(&mut b"\r\n".iter(), &mut Vec::new());
        DataPhase {
            receiver: Receiver::Keeping(receiver),
            message: Vec::with_capacity(size_hint.map_or(0, |n| {
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                n.min(max_size).min(PREALLOCATE_MAX)
            })),
            max_size,
            scanned: 0,
            lines: LineScan {
                max: max_line.saturating_sub(2),
                ..LineScan::default()
            },
        }
    }

    /// Feeds input; returns how many octets were consumed and whether the end of data was
    /// seen. Input after the end of data is left unconsumed (pipelined commands).
    pub(crate) fn ingest(&mut self, input: &[u8]) -> (usize, bool) {
        let mut rest = input;
        loop {
            match &mut self.receiver {
                Receiver::Keeping(receiver) => {
                    // Unstuffing only shrinks, so feeding at most `room` octets can never
                    // grow the buffer past max_size + 2. The +2: one octet over the limit
                    // proves "too big" only once the CR of a final CRLF (which the receiver
                    // may still take back at the end) cannot be the one octet.
                    let cap = self.max_size.saturating_add(2);
                    let room = cap.saturating_sub(self.message.len());
                    let chunk = &rest[..rest.len().min(room)];
                    let mut iter = chunk.iter();
                    let done = receiver.ingest(&mut iter, &mut self.message);
                    let used = chunk.len() - iter.as_slice().len();
                    rest = &rest[used..];
                    if done {
                        self.scan(true);
                        return (input.len() - rest.len(), true);
                    }
                    if self.message.len() >= cap {
                        let dummy = DummyDataReceiver::new_data(receiver);
                        self.receiver = Receiver::Discarding(dummy);
                        self.message = Vec::new();
                        self.scanned = 0;
                        continue;
                    }
                    self.scan(false);
                    if rest.is_empty() {
                        return (input.len(), false);
                    }
                }
                Receiver::Discarding(receiver) => {
                    let mut iter = rest.iter();
                    let done = receiver.ingest(&mut iter);
                    let left = iter.as_slice().len();
                    return (input.len() - left, done);
                }
            }
        }
    }

    /// Runs the line checks over what arrived since the last call. A trailing CR is left
    /// for later unless `done`: it may be the start of a CRLF split across reads.
    fn scan(&mut self, done: bool) {
        let mut end = self.message.len();
        if !done && self.message.last() == Some(&b'\r') {
            end -= 1;
        }
        if end > self.scanned {
            self.lines.scan(&self.message[self.scanned..end]);
            self.scanned = end;
        }
    }

    /// The complete message, or why it is refused. Call after `ingest` returned `done`.
    pub(crate) fn finish(mut self) -> Result<Vec<u8>, ContentError> {
        if matches!(self.receiver, Receiver::Discarding(_)) || self.message.len() > self.max_size {
            return Err(ContentError::TooBig);
        }
        if self.lines.prev_cr {
            self.lines.bare = true;
        }
        if self.lines.bare {
            return Err(ContentError::BareLineEnd);
        }
        if self.lines.too_long {
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
                self.reply(replies::start_data())
            }
            State::Data(..) => unreachable!("no commands are read during DATA"),
        }
    }

    /// Feeds buffered input to the content phase; at the end of data, answers it.
    pub(super) async fn data_input(&mut self) -> Option<Flow> {
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
        Some(self.end_of_data(tx, *phase).await)
    }

    async fn end_of_data(&mut self, tx: Transaction, phase: DataPhase) -> Flow {
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
                    date: chrono::Utc::now(),
                });
                // Prepend in place: a big message is not held twice while it is copied.
                let mut message = body;
                message.splice(0..0, header.bytes());
                // Nothing may wait in our output buffer while the handler works.
                if self.flush().await.is_err() {
                    return Flow::Close;
                }
                tracing::debug!(id = %tx.id, size = message.len(), rcpts = tx.envelope.rcpts.len(), "message complete");
                let handler = self.shared.handler.clone();
                let count = tx.envelope.rcpts.len();
                let replies = handler.data(tx.envelope, message).await;
                tracing::info!(id = %tx.id, reply = %replies.transaction, "end of data");
                return self.data_replies(count, replies);
            }
        };
        tracing::info!(id = %tx.id, reply = %refused, "message refused");
        let count = tx.envelope.rcpts.len();
        self.data_replies(count, DataReplies::all(&tx.envelope, refused))
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

    #[test]
    fn smuggled_ends_do_not_end_the_message_and_are_refused() {
        for chunks in [
            &[&b"a\n.\nMAIL FROM:<x@y>\r\n.\r\n"[..]][..],
            &[&b"a\r.\rMAIL\r\n.\r\n"[..]][..],
            &[&b"a\n.\r\nMAIL\r\n.\r\n"[..]][..],
        ] {
            let (got, rest) = run(chunks, 1000, 1000);
            assert_eq!(got, Err(ContentError::BareLineEnd), "{chunks:?}");
            assert!(rest.is_empty());
        }
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
