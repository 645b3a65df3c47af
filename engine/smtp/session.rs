//! One SMTP/LMTP session without I/O: its state, the command dispatch, and the replies.
//!
//! smtp-proto's `ingest` shape: the driver (`conn.rs`) feeds the bytes it read, the
//! [`Session`] answers everything buffered and says what the driver must do next
//! ([`Next`]). The session never touches a socket, a stream or a clock; the connection facts
//! it needs (peer address, the shutdown flag, "TLS is now on") are given to it by the driver.
//! Only the [`MailHandler`](super::MailHandler) calls are awaited here, so [`Session::ingest`]
//! is an `async fn`. Table tests drive it directly (`tests_table.rs`).
//!
//! The session's protocol position is the [`State`] enum (Stalwart's shape): each variant
//! owns what that phase needs, so "RCPT before MAIL" or "DATA without recipients" cannot be
//! represented by mistake. The verbs live in their own files (`ehlo.rs`, `mail.rs`,
//! `rcpt.rs`, `data.rs`) as `impl Session` blocks.
//!
//! Flow: all buffered input is processed first (pipelined commands are answered in order,
//! RFC 2920) and the replies are collected in one output buffer: one [`Batch`] per call,
//! which the driver writes in one go before it calls again (before reading, before STARTTLS,
//! before the handler works on a message, and before closing).

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Buf, Bytes, BytesMut};
use smtp_proto::Request;
use tokio::sync::watch;

use super::config::{ESMTP_PARAMETER_ALLOWANCE, SmtpConfig, VrfyPolicy};
use super::data::DataPhase;
use super::line::{Line, LineReader};
use super::replies;
use super::{MailHandler, Protocol};
use crate::clock::Clock;
use crate::smtp::envelope::{Client, Envelope};
use crate::smtp::reply::Reply;

/// How much input buffer a session starts with (the driver reads up to this much at a time).
pub(crate) const READ_CHUNK: usize = 16 * 1024;

/// What all sessions of one listener share.
pub(crate) struct Shared {
    pub config: SmtpConfig,
    /// The listener's session slots: how many are free tells whether it is under stress.
    pub slots: Arc<tokio::sync::Semaphore>,
    pub protocol: Protocol,
    pub handler: Arc<dyn MailHandler>,
    /// Where the time comes from: `received_at`, the `Received:` date, read deadlines.
    pub clock: Arc<dyn Clock>,
    /// Source of transaction ids (for Received: and logs).
    pub ids: AtomicU64,
    /// Listener start, seconds since the epoch: makes ids unique across restarts.
    pub epoch: u64,
}

impl Shared {
    pub(crate) fn new(
        protocol: Protocol,
        config: SmtpConfig,
        handler: Arc<dyn MailHandler>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Shared {
            slots: Arc::new(tokio::sync::Semaphore::new(config.limits.connections)),
            protocol,
            handler,
            ids: AtomicU64::new(0),
            epoch: clock.now().timestamp().max(0) as u64,
            clock,
            config,
        }
    }

    /// At least three quarters of the session slots are in use: budgets shrink to
    /// [`Limits::stress_timeout`](super::Limits::stress_timeout).
    pub(crate) fn stressed(&self) -> bool {
        let total = self.config.limits.connections;
        let used = total.saturating_sub(self.slots.available_permits());
        used.saturating_mul(4) >= total.saturating_mul(3)
    }

    fn next_id(&self) -> String {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        format!("{:08X}{:06X}", self.epoch & 0xFFFF_FFFF, n)
    }
}

/// Where the session is in the protocol.
pub(crate) enum State {
    /// Connected; no EHLO/HELO/LHLO yet.
    Fresh,
    /// Greeted; no mail transaction.
    Ready,
    /// MAIL accepted; accepted recipients accumulate in the envelope.
    Mail(Transaction),
    /// After 354: message content is arriving.
    Data(Transaction, Box<DataPhase>),
    /// The end of data was seen and the message passed the content checks (our `Received:`
    /// prepended): it goes to the handler once the replies before it are written.
    Complete(Transaction, Vec<u8>),
}

/// One mail transaction (MAIL up to the end of DATA).
pub(crate) struct Transaction {
    pub envelope: Envelope,
    /// Our id for it, in the Received: header and the logs.
    pub id: String,
}

/// What the client said in EHLO/HELO/LHLO.
pub(crate) struct Hello {
    pub host: String,
    /// EHLO or LHLO (extensions may be used), not HELO.
    pub esmtp: bool,
}

/// What to do after a command (inside the session).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    /// Flush, then close the connection.
    Close,
    /// Flush, then run the TLS handshake.
    StartTls,
    /// Flush, then hand the complete message to the handler.
    Deliver,
}

/// What the driver does after writing a [`Batch`]'s replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Everything buffered is answered: read more. `content`: message content is awaited
    /// (DATA, or a BDAT chunk being thrown away), so the data deadline applies and a
    /// shutdown waits for the transaction; otherwise a command line (command deadline; a
    /// shutdown closes the session).
    Read { content: bool },
    /// A message is complete: call [`Session::process`] again without reading; the
    /// handler gets it then (nothing may wait in the output while it works).
    Deliver,
    /// Run the TLS handshake, then tell the session ([`Session::tls_started`]).
    StartTls,
    /// Close the connection.
    Close,
}

/// The replies of one call, and what to do next. The replies are valid until the next call:
/// the driver writes them all (one write per batch, PIPELINING) before it calls again.
#[derive(Debug)]
pub(crate) struct Batch<'a> {
    pub replies: &'a [u8],
    pub next: Next,
    /// A `354` went out: the content that follows gets a budget of its own.
    pub new_content: bool,
}

/// One SMTP/LMTP session: protocol state, buffered input, queued replies.
pub(crate) struct Session {
    pub shared: Arc<Shared>,
    pub rbuf: BytesMut,
    wbuf: Vec<u8>,
    lines: LineReader,
    pub peer: SocketAddr,
    pub state: State,
    pub hello: Option<Hello>,
    pub tls: bool,
    errors: usize,
    /// Octets of a BDAT chunk still to be thrown away (CHUNKING is not offered).
    skip: u64,
    /// A `354` went out during this call.
    pub(super) new_content: bool,
    /// Set by the server when it shuts down; looked at before every command.
    shutdown: watch::Receiver<bool>,
}

impl Session {
    pub(crate) fn new(
        shared: Arc<Shared>,
        peer: SocketAddr,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Session {
            shared,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: Vec::with_capacity(1024),
            lines: LineReader::default(),
            peer,
            state: State::Fresh,
            hello: None,
            tls: false,
            errors: 0,
            skip: 0,
            new_content: false,
            shutdown,
        }
    }

    /// The greeting: the first batch of every session.
    pub(crate) fn greet(&mut self) -> Batch<'_> {
        self.begin();
        let greeting = replies::greeting(&self.shared.config.hostname, self.shared.protocol);
        self.queue(&greeting);
        self.batch(Flow::Continue)
    }

    /// Feeds input and answers everything buffered.
    #[allow(
        dead_code,
        reason = "the driver reads straight into `input_buffer`; tests feed bytes"
    )]
    pub(crate) async fn ingest(&mut self, input: &[u8]) -> Batch<'_> {
        self.rbuf.extend_from_slice(input);
        self.process().await
    }

    /// The input buffer, for a driver that reads straight into it (no copy); call
    /// [`Session::process`] after.
    pub(crate) fn input_buffer(&mut self) -> &mut BytesMut {
        self.rbuf.reserve(READ_CHUNK);
        &mut self.rbuf
    }

    /// Part of a command line is buffered (the driver's whole-command budget goes on).
    pub(crate) fn pending_input(&self) -> bool {
        !self.rbuf.is_empty()
    }

    /// Answers everything buffered (and delivers a complete message).
    pub(crate) async fn process(&mut self) -> Batch<'_> {
        self.begin();
        let flow = self.process_input().await;
        if flow == Flow::StartTls {
            // Whatever the client sent after the STARTTLS line, before the handshake, is
            // thrown away (RFC 3207 §4.2; the CVE-2011-0411 command injection).
            self.rbuf.clear();
            self.lines = LineReader::default();
        }
        self.batch(flow)
    }

    /// The TLS handshake after `220 Ready to start TLS` succeeded: the session starts
    /// afresh (RFC 3207 §4.2: forget EHLO and everything learnt before).
    pub(crate) fn tls_started(&mut self) -> Batch<'_> {
        self.begin();
        self.tls = true;
        self.hello = None;
        self.state = State::Fresh;
        tracing::debug!(peer = %self.peer, "TLS started");
        self.batch(Flow::Continue)
    }

    /// The driver's read deadline passed: `421 4.4.2`, then close.
    pub(crate) fn timed_out(&mut self) -> Batch<'_> {
        self.begin();
        self.queue(&replies::timeout(&self.shared.config.hostname));
        self.batch(Flow::Close)
    }

    /// The server shuts down while the session waits for a command: `421 4.3.2`, close.
    pub(crate) fn shut_down(&mut self) -> Batch<'_> {
        self.begin();
        self.queue(&replies::shutting_down(&self.shared.config.hostname));
        self.batch(Flow::Close)
    }

    /// The server is shutting down.
    pub(crate) fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// A call begins: the previous batch was written.
    fn begin(&mut self) {
        self.wbuf.clear();
        self.new_content = false;
    }

    fn batch(&self, flow: Flow) -> Batch<'_> {
        let next = match flow {
            Flow::Continue => Next::Read {
                content: matches!(self.state, State::Data(..)) || self.skip > 0,
            },
            Flow::Close => Next::Close,
            Flow::StartTls => Next::StartTls,
            Flow::Deliver => Next::Deliver,
        };
        Batch {
            replies: &self.wbuf,
            next,
            new_content: self.new_content,
        }
    }

    /// Processes everything buffered; returns `Continue` when more input is needed.
    async fn process_input(&mut self) -> Flow {
        loop {
            if matches!(self.state, State::Complete(..)) {
                let flow = self.deliver().await;
                if flow != Flow::Continue {
                    return flow;
                }
            }
            if self.skip > 0 {
                let n = usize::try_from(self.skip)
                    .unwrap_or(usize::MAX)
                    .min(self.rbuf.len());
                self.rbuf.advance(n);
                self.skip -= n as u64;
                if self.skip > 0 {
                    return Flow::Continue;
                }
                let flow = self.reply(replies::bdat_not_offered());
                if flow != Flow::Continue {
                    return flow;
                }
            }
            if matches!(self.state, State::Data(..)) {
                match self.data_input() {
                    None => return Flow::Continue,
                    Some(Flow::Continue) => continue,
                    Some(flow) => return flow,
                }
            }
            let max = self.command_line_max();
            let flow = match self.lines.next(&mut self.rbuf, max) {
                None => return Flow::Continue,
                Some(Line::TooLong) => self.reply(replies::command_line_too_long()),
                Some(Line::BareLineEnd) => self.reply(replies::bare_line_end_in_command()),
                Some(Line::Command(line)) => self.command(line).await,
            };
            if flow != Flow::Continue {
                return flow;
            }
        }
    }

    /// The framing limit: MAIL/RCPT parameters may make lines longer after EHLO/LHLO; other
    /// commands are held to the base limit in [`Session::command`].
    fn command_line_max(&self) -> usize {
        let base = self.shared.config.limits.command_line;
        if self.hello.as_ref().is_some_and(|h| h.esmtp) {
            base.saturating_add(ESMTP_PARAMETER_ALLOWANCE)
        } else {
            base
        }
    }

    /// One complete command line, CRLF included.
    async fn command(&mut self, line: Bytes) -> Flow {
        if self.shutting_down() {
            self.queue(&replies::shutting_down(&self.shared.config.hostname));
            return Flow::Close;
        }
        let verb = line.get(..4).unwrap_or_default();
        // Before any other check: whatever the rest of the line looks like, a BDAT chunk
        // follows it, and must not be read as commands.
        if verb.eq_ignore_ascii_case(b"BDAT")
            && line.get(4).is_none_or(|&b| b == b' ' || b == b'\r')
        {
            return self.bdat(&line);
        }
        if std::str::from_utf8(&line).is_err() {
            return self.reply(replies::command_not_utf8());
        }
        // Only MAIL and RCPT get the parameter allowance (see `command_line_max`).
        let with_params = verb.eq_ignore_ascii_case(b"MAIL") || verb.eq_ignore_ascii_case(b"RCPT");
        if line.len() > self.shared.config.limits.command_line && !with_params {
            return self.reply(replies::command_line_too_long());
        }
        let request = match Request::parse(&mut line.iter()) {
            Ok(request) => request,
            Err(e) => {
                // smtp-proto refuses some values our bounded checks answer more precisely
                // (a 20-digit SIZE is well formed and too big: 552, RFC 1870).
                if verb.eq_ignore_ascii_case(b"MAIL")
                    && let Err(reply) =
                        super::params::check_mail(&line, self.config().limits.message_size)
                {
                    return self.reply(reply);
                }
                return self.reply(parse_error(e));
            }
        };
        tracing::trace!(peer = %self.peer, verb = request.name(), "command");
        match request {
            Request::Ehlo { host } => self.hello(super::ehlo::Verb::Ehlo, host),
            Request::Helo { host } => self.hello(super::ehlo::Verb::Helo, host),
            Request::Lhlo { host } => self.hello(super::ehlo::Verb::Lhlo, host),
            Request::Mail { from } => self.mail(from, &line),
            Request::Rcpt { to } => self.rcpt(to, &line).await,
            Request::Data => self.data_command(),
            Request::Rset => {
                if matches!(self.state, State::Mail(_)) {
                    self.state = State::Ready;
                }
                self.reply(replies::reset())
            }
            Request::Noop { .. } => self.reply(replies::ok()),
            Request::Help { .. } => self.reply(replies::help()),
            Request::Quit => {
                self.queue(&replies::closing(&self.shared.config.hostname));
                Flow::Close
            }
            Request::StartTls => self.start_tls_command(&line),
            Request::Vrfy { .. } => match self.shared.config.vrfy {
                VrfyPolicy::Disabled => self.reply(replies::not_implemented("VRFY")),
                VrfyPolicy::CannotVerify => self.reply(replies::vrfy_cannot_verify()),
            },
            other @ (Request::Expn { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. }
            | Request::Bdat { .. }
            | Request::Auth { .. }) => self.reply(replies::not_implemented(other.name())),
        }
    }

    /// BDAT (RFC 3030) although CHUNKING is not offered: its chunk follows the line at once,
    /// so it is read and thrown away before the `502`; were it not, its octets would be
    /// parsed as commands. A size we cannot read past ends the session.
    fn bdat(&mut self, line: &[u8]) -> Flow {
        let size = line
            .get(4..)
            .unwrap_or_default()
            .trim_ascii()
            .split(|&b| b == b' ')
            .next()
            .filter(|s| (1..=20).contains(&s.len()) && s.iter().all(u8::is_ascii_digit))
            .and_then(|s| std::str::from_utf8(s).ok()?.parse::<u64>().ok())
            .filter(|&n| n <= self.shared.config.limits.message_size as u64);
        match size {
            Some(0) => self.reply(replies::bdat_not_offered()),
            Some(n) => {
                self.skip = n;
                Flow::Continue
            }
            None => {
                self.queue(&replies::bdat_unframeable(&self.shared.config.hostname));
                Flow::Close
            }
        }
    }

    fn start_tls_command(&mut self, line: &[u8]) -> Flow {
        let Some(_) = &self.shared.config.tls else {
            return self.reply(replies::not_implemented("STARTTLS"));
        };
        if self.tls {
            return self.reply(replies::tls_already_active());
        }
        if line.len() > b"STARTTLS\r\n".len() && !line[8..].trim_ascii().is_empty() {
            return self.reply(replies::no_arguments("STARTTLS"));
        }
        if matches!(self.state, State::Mail(_)) {
            return self.reply(replies::tls_in_transaction());
        }
        self.queue(&replies::start_tls());
        Flow::StartTls
    }

    /// Queues a reply; counts protocol errors and closes the session past the limit.
    pub(crate) fn reply(&mut self, reply: Reply) -> Flow {
        if replies::is_protocol_error(&reply) {
            self.errors += 1;
            if self.errors > self.shared.config.limits.bad_commands {
                tracing::info!(peer = %self.peer, errors = self.errors, "too many errors");
                self.queue(&replies::too_many_errors(&self.shared.config.hostname));
                return Flow::Close;
            }
        }
        self.queue(&reply);
        Flow::Continue
    }

    fn queue(&mut self, reply: &Reply) {
        self.wbuf.extend_from_slice(reply.to_wire().as_bytes());
    }

    /// Who the client is, for a new envelope.
    pub(crate) fn client(&self) -> Client {
        Client {
            ip: Some(self.peer.ip()),
            helo: self
                .hello
                .as_ref()
                .map(|h| h.host.clone())
                .unwrap_or_default(),
            authenticated: false,
            tls: self.tls,
        }
    }

    pub(crate) fn new_id(&self) -> String {
        self.shared.next_id()
    }

    pub(crate) fn config(&self) -> &SmtpConfig {
        &self.shared.config
    }
}

/// smtp-proto's parse errors as replies.
fn parse_error(e: smtp_proto::Error) -> Reply {
    use smtp_proto::Error;
    match e {
        Error::UnknownCommand => replies::unknown_command(),
        Error::InvalidSenderAddress => replies::bad_sender_syntax(),
        Error::InvalidRecipientAddress => replies::bad_recipient_syntax(),
        Error::SyntaxError { syntax } => replies::syntax(syntax),
        Error::InvalidParameter { param } => replies::invalid_parameter(param),
        Error::UnsupportedParameter { param } => {
            replies::unsupported_parameter(&sanitize_param(&param))
        }
        Error::ResponseTooLong => replies::command_line_too_long(),
        Error::NeedsMoreData { .. } | Error::InvalidResponse { .. } => replies::syntax("command"),
    }
}

/// A client-supplied parameter name echoed in a reply: printable ASCII, bounded.
fn sanitize_param(p: &str) -> Cow<'_, str> {
    if p.len() <= 64 && p.bytes().all(|b| b.is_ascii_graphic()) {
        Cow::Borrowed(p)
    } else {
        Cow::Owned(
            p.chars()
                .take(64)
                .map(|c| if c.is_ascii_graphic() { c } else { '?' })
                .collect(),
        )
    }
}
