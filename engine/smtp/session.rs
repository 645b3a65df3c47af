//! One SMTP/LMTP connection: its state, the read → process → flush loop, and dispatch.
//!
//! The session's protocol position is the [`State`] enum (Stalwart's shape): each variant
//! owns what that phase needs, so "RCPT before MAIL" or "DATA without recipients" cannot be
//! represented by mistake. The verbs live in their own files (`ehlo.rs`, `mail.rs`,
//! `rcpt.rs`, `data.rs`) as `impl Session` blocks.
//!
//! Flow: all buffered input is processed first (pipelined commands are answered in order,
//! RFC 2920), replies are collected in one output buffer, and that buffer is flushed when
//! the session needs more input, before STARTTLS, before the handler works on a message,
//! and before closing. Every read has a timeout; the shutdown signal is looked at whenever
//! the session is between commands.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use smtp_proto::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::config::{ESMTP_PARAMETER_ALLOWANCE, SmtpConfig, VrfyPolicy};
use super::data::DataPhase;
use super::line::{Line, LineReader};
use super::replies;
use super::tls::Stream;
use super::{MailHandler, Protocol};
use crate::envelope::{Client, Envelope};
use crate::reply::Reply;

/// How much is read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;
/// How long a closing session waits for the client to close its side.
const LINGER: Duration = Duration::from_secs(2);

/// What all sessions of one listener share.
pub(crate) struct Shared {
    pub config: SmtpConfig,
    /// The listener's session slots: how many are free tells whether it is under stress.
    pub slots: Arc<tokio::sync::Semaphore>,
    pub protocol: Protocol,
    pub handler: Arc<dyn MailHandler>,
    /// Source of transaction ids (for Received: and logs).
    pub ids: AtomicU64,
    /// Listener start, seconds since the epoch: makes ids unique across restarts.
    pub epoch: u64,
}

impl Shared {
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

/// What to do after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    /// Flush, then close the connection.
    Close,
    /// Flush, then run the TLS handshake.
    StartTls,
}

pub(crate) struct Session {
    pub shared: Arc<Shared>,
    stream: Stream,
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
    /// The current wait for input: content (DATA, a BDAT chunk) or not, since when, and
    /// how many octets arrived during it (for the whole-command and DATA budgets).
    pub(super) waiting: Option<(bool, tokio::time::Instant, usize)>,
    shutdown: watch::Receiver<bool>,
}

impl Session {
    pub(crate) fn new(
        shared: Arc<Shared>,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Session {
            shared,
            stream: Stream::Plain(stream),
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: Vec::with_capacity(1024),
            lines: LineReader::default(),
            peer,
            state: State::Fresh,
            hello: None,
            tls: false,
            errors: 0,
            skip: 0,
            waiting: None,
            shutdown,
        }
    }

    /// Runs the session to its end. Never panics on client input; I/O errors end it.
    pub(crate) async fn run(mut self) {
        tracing::debug!(peer = %self.peer, "session start");
        let result = self.serve().await;
        if let Err(e) = result {
            tracing::debug!(peer = %self.peer, error = %e, "session ended by I/O error");
        }
        tracing::debug!(peer = %self.peer, "session end");
    }

    async fn serve(&mut self) -> std::io::Result<()> {
        let greeting = replies::greeting(&self.shared.config.hostname, self.shared.protocol);
        self.queue(&greeting);
        loop {
            match self.process_input().await {
                Flow::Continue => {}
                Flow::Close => return self.close().await,
                Flow::StartTls => {
                    self.flush().await?;
                    self.start_tls().await?;
                    continue;
                }
            }
            // Everything buffered is answered: wait for more.
            self.flush().await?;
            let in_data = matches!(self.state, State::Data(..)) || self.skip > 0;
            if !in_data && self.shutting_down() {
                self.queue(&replies::shutting_down(&self.shared.config.hostname));
                return self.close().await;
            }
            let deadline = self.read_deadline(in_data);
            self.rbuf.reserve(READ_CHUNK);
            let read = tokio::select! {
                read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.rbuf)) => Some(read),
                () = wait_for_shutdown(&mut self.shutdown), if !in_data => None,
            };
            let Some(read) = read else {
                self.queue(&replies::shutting_down(&self.shared.config.hostname));
                return self.close().await;
            };
            match read {
                Err(_elapsed) => {
                    tracing::info!(peer = %self.peer, in_data, "timeout");
                    self.queue(&replies::timeout(&self.shared.config.hostname));
                    return self.close().await;
                }
                Ok(Ok(0)) => return Ok(()),
                Ok(Ok(n)) => {
                    if let Some((_, _, got)) = &mut self.waiting {
                        *got = got.saturating_add(n);
                    }
                }
                Ok(Err(e)) => return Err(e),
            }
        }
    }

    /// When the next read gives up: the longest silence allowed, or the end of the budget
    /// of the whole command line / message content, whichever comes first.
    ///
    /// A command line's budget is [`Limits::command_timeout`](super::Limits) from when the
    /// session began waiting for it; content's is `data_timeout` plus one second per
    /// `min_data_rate` octets received. Under stress both bases shrink to `stress_timeout`.
    fn read_deadline(&mut self, in_data: bool) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        let limits = &self.shared.config.limits;
        // A new wait starts when the kind of input changes, or (for commands) when no
        // part of a command line is pending.
        let continuing = matches!(self.waiting, Some((kind, ..)) if kind == in_data)
            && (in_data || !self.rbuf.is_empty());
        if !continuing {
            self.waiting = Some((in_data, now, 0));
        }
        let (_, since, got) = self.waiting.unwrap_or((in_data, now, 0));
        let stressed = self.shared.stressed();
        let (silence, base) = if in_data {
            let base = if stressed {
                limits.stress_timeout
            } else {
                limits.data_timeout
            };
            (limits.data_timeout, base)
        } else {
            let base = if stressed {
                limits.stress_timeout
            } else {
                limits.command_timeout
            };
            (limits.command_timeout, base)
        };
        let earned = if in_data && limits.min_data_rate > 0 {
            Duration::from_secs((got / limits.min_data_rate) as u64)
        } else {
            Duration::ZERO
        };
        (now + silence).min(since + base + earned)
    }

    /// Processes everything buffered; returns `Continue` when more input is needed.
    async fn process_input(&mut self) -> Flow {
        loop {
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
                match self.data_input().await {
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

    /// The handshake after `220 Ready to start TLS`. Whatever the client sent after the
    /// STARTTLS line, before the handshake, is thrown away (RFC 3207 §4.2; the
    /// CVE-2011-0411 command injection), and the session starts afresh (§4.2: forget
    /// EHLO and everything learnt before).
    async fn start_tls(&mut self) -> std::io::Result<()> {
        let Some(config) = self.shared.config.tls.clone() else {
            return Err(std::io::Error::other(
                "STARTTLS without a TLS configuration",
            ));
        };
        self.rbuf.clear();
        self.lines = LineReader::default();
        let timeout = self.shared.config.limits.command_timeout;
        match tokio::time::timeout(timeout, self.stream.start_tls(config)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(std::io::Error::other("TLS handshake timed out")),
        }
        self.tls = true;
        self.hello = None;
        self.state = State::Fresh;
        tracing::debug!(peer = %self.peer, "TLS started");
        Ok(())
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

    /// Writes what is queued, within the command timeout (a client that does not read
    /// cannot hold the session forever).
    pub(crate) async fn flush(&mut self) -> std::io::Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let timeout = self.shared.config.limits.command_timeout;
        let write = async {
            self.stream.write_all(&self.wbuf).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(timeout, write).await {
            Ok(result) => result?,
            Err(_) => return Err(std::io::Error::other("write timed out")),
        }
        self.wbuf.clear();
        Ok(())
    }

    /// Flushes the last replies and closes: our side first, then a short wait for the
    /// client's, so unread input does not turn into a reset that eats our last reply.
    async fn close(&mut self) -> std::io::Result<()> {
        self.flush().await?;
        let _ = self.stream.shutdown().await;
        let mut sink = [0u8; 4096];
        let drain = async {
            while let Ok(n) = self.stream.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
        Ok(())
    }

    fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
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

async fn wait_for_shutdown(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|down| *down).await.is_err() {
        // The server is gone without signalling: nothing will ever come.
        std::future::pending::<()>().await;
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
