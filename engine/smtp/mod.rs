//! The ESMTP / LMTP front end: the mail side of the gateway.
//!
//! # What it does
//! [`serve`] accepts TCP connections and runs one session per connection. A session
//! speaks ESMTP (RFC 5321) or LMTP (RFC 2033), checks sequencing, parameters and limits,
//! and hands the two decisions that need the rules and the SIP side to a [`MailHandler`]:
//! whether to accept one recipient ([`MailHandler::rcpt`]) and what to answer for a whole
//! message ([`MailHandler::data`]). The SMTP layer knows nothing about SIP: the handler's
//! [`Reply`] values are written as they are (250 only after a SIP 2xx is the handler's
//! rule, DESIGN §3.5).
//!
//! # Layout
//! | file | what |
//! |---|---|
//! | `server.rs` | listener loop, connection limits (total and per client IP), shutdown and drain |
//! | `session.rs` | one session without I/O: the `State` enum, dispatch, replies; bytes in, replies and what to do next out (smtp-proto's `ingest` shape) |
//! | `conn.rs` | the driver around a session: the socket, read deadlines, one write per reply batch, STARTTLS handshake, shutdown, lingering close |
//! | `ehlo.rs`, `mail.rs`, `rcpt.rs`, `data.rs` | one file per verb or phase (`impl Session`); `data.rs` also holds the I/O-free DATA receiver |
//! | `params.rs` | I/O-free bounded checks of MAIL/RCPT parameter values on the raw line |
//! | `line.rs` | I/O-free command-line framing: CRLF only, bare CR/LF and over-long lines refused |
//! | `received.rs` | the `Received:` trace header we prepend (RFC 5321 §4.4) |
//! | `replies.rs` | every `NNN x.y.z text` this layer produces — the only place replies are written |
//! | `config.rs` | [`SmtpConfig`] and [`Limits`] with their defaults |
//! | `tls.rs` | loading a rustls server configuration from PEM; the plain-or-TLS stream |
//!
//! Parsing of commands and their parameters is smtp-proto's (`Request::parse` on one complete
//! line), after the raw parameter values were checked against the RFC grammars here
//! (`params`: smtp-proto's number parsers saturate). End-of-data detection and unstuffing are
//! our own (`data`: only `CRLF.CRLF` ends DATA). Everything around them — framing, limits,
//! what to reply — is here, and none of it needs a socket: the session itself is fed bytes
//! and answers with replies (`session.rs`, driven by `conn.rs`), so verb sequencing has
//! table tests (`tests_table.rs`) beside those of `line`, `data`, `params`, `received` and
//! the parameter checks in `mail` and `rcpt`; `tests.rs` drives the real listener.
//!
//! # Extensions (EHLO / LHLO keywords)
//! PIPELINING, SIZE n, 8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES, DSN, DELIVERBY \[min\], and
//! STARTTLS when [`SmtpConfig::tls`] is set and the session is not yet protected (see
//! `spec/mapping-reference.md` §6 for why each). No AUTH, CHUNKING, BINARYMIME, VRFY, EXPN or
//! ETRN. MAIL/RCPT parameters of extensions we do not advertise get `555 5.5.4`. A `BDAT`
//! anyway has its chunk read and thrown away before `502 5.5.1`, so its octets are never
//! taken for commands; a chunk size we cannot read past (not a number, or over the message
//! size limit) gets `421 4.7.0` and the connection is closed.
//!
//! # Decisions worth knowing
//! * **Bare CR or LF** in a command line → `500 5.5.2` (RFC 5321 §2.3.8: never guess a line
//!   end). In message content they make the whole message fail with `554 5.6.0` at the end of
//!   DATA: the SMTP-smuggling family of attacks lives exactly there, and a message that reaches
//!   the rules always has CRLF line ends.
//! * **Text lines over the limit** (RFC 5321 §4.5.3.1.6: 1000 octets with CRLF) → `554 5.6.0`
//!   after the end of data. 552/5.3.4 means "too big", which a sender may fix by splitting; a
//!   too-long line is a content-format fault ("media error", RFC 3463 X.6.0), and 554 is one of
//!   the replies RFC 5321 §4.3.2 allows after DATA.
//! * **Message too big mid-DATA** → we keep reading to the end of data, buffering nothing past
//!   the limit (smtp-proto's discarding receiver takes over), then reply `552 5.3.4`.
//! * **Command line limit**: 512 octets (RFC 5321 §4.5.3.1.4), plus an allowance for
//!   MAIL/RCPT parameters after EHLO/LHLO (RFC 5321 §4.5.3.1.4 lets extensions raise it;
//!   DSN's ORCPT alone may be 500 octets, RFC 3461 §4.2).
//! * **Timeouts** are inactivity timeouts for each read, as RFC 5321 §4.5.3.2 defines them:
//!   `command_timeout` while waiting for a command, `data_timeout` while message content
//!   arrives — and budgets, since a client trickling a byte at a time never trips those: a
//!   whole command line must arrive within `command_timeout`, a whole message within
//!   `data_timeout` plus one second per `min_data_rate` octets. When three quarters of the
//!   slots are in use (stress, Postfix's term) both budgets shrink to `stress_timeout`, and
//!   a new connection finding every slot taken waits up to `connect_wait` for one before its
//!   `421 4.3.2`. Expiry → `421 4.4.2` and close.
//! * **Enhanced status codes** are on every reply except the greeting, EHLO/LHLO/HELO and 354
//!   (RFC 2034 §3).
//! * **Shutdown**: see [`serve`]. A session between commands gets `421 4.3.2` and is closed
//!   (right away if it is waiting for input, RFC 5321 §3.8); a transaction whose message is
//!   arriving or inside [`MailHandler::data`] finishes, gets its real reply, then 421.
//!
//! # Example
//! ```no_run
//! use std::sync::Arc;
//! use iwf::smtp::envelope::{Envelope, Rcpt};
//! use iwf::smtp::reply::Reply;
//! use futures::future::BoxFuture;
//! use iwf::smtp::{DataReplies, MailHandler, Protocol, SmtpConfig, serve};
//!
//! struct AcceptAll;
//! impl MailHandler for AcceptAll {
//!     fn rcpt(&self, _: &Envelope, _: &Rcpt) -> BoxFuture<'_, Result<(), Reply>> {
//!         Box::pin(async { Ok(()) })
//!     }
//!     fn data(&self, env: Envelope, _msg: Vec<u8>) -> BoxFuture<'_, DataReplies> {
//!         Box::pin(async move { DataReplies::all(&env, Reply::new(250, "2.0.0", "OK")) })
//!     }
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:2525").await?;
//! let config = SmtpConfig { hostname: "iwf.example.net".into(), ..SmtpConfig::default() };
//! let report = serve(listener, Protocol::Smtp, config, Arc::new(AcceptAll), async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await;
//! println!("{} sessions cut at the end of the grace period", report.aborted_sessions);
//! # Ok(()) }
//! ```

use crate::smtp::envelope::{Envelope, Rcpt};
use crate::smtp::reply::Reply;

mod config;
mod conn;
mod data;
mod ehlo;
pub mod envelope;
#[doc(hidden)]
pub mod fuzzing;
mod line;
mod mail;
mod params;
mod rcpt;
mod received;
pub(crate) mod replies;
pub mod reply;
mod server;
mod session;
mod tls;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_table;

pub use config::{ESMTP_PARAMETER_ALLOWANCE, Limits, SmtpConfig, VrfyPolicy};
pub use server::{LISTEN_BACKLOG, ServeReport, bind, serve, serve_with_clock};
pub use tls::{TlsConfigError, tls_config_from_pem, tls_config_from_pem_files};

/// A boxed, sendable future borrowing from the handler (what [`MailHandler`] methods return).
pub(crate) use futures::future::BoxFuture;

/// Which protocol a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// ESMTP (RFC 5321): EHLO or HELO, one reply after DATA.
    Smtp,
    /// LMTP (RFC 2033): LHLO, one reply per accepted recipient after DATA.
    Lmtp,
}

/// What the gateway does with a transaction. Implemented by the gateway (rules + SIP); the
/// SMTP layer knows nothing about SIP.
///
/// Both methods return boxed futures so the trait stays object-safe (`Arc<dyn MailHandler>`)
/// without an async-trait crate. The session awaits them in place: while `rcpt` or `data`
/// runs, that session reads nothing more (pipelined commands wait in its buffer), other
/// sessions are unaffected.
pub trait MailHandler: Send + Sync + 'static {
    /// RCPT time: accept or refuse one recipient (rules decide; may be 550 5.1.1, 550 5.7.1,
    /// 451 4.4.3 ...). `envelope.rcpts` holds the recipients accepted so far.
    /// `Ok(())` is answered `250 2.1.5`; an `Err` reply is written as it is.
    fn rcpt(&self, envelope: &Envelope, rcpt: &Rcpt) -> BoxFuture<'_, Result<(), Reply>>;

    /// End of DATA: the message (dot-unstuffed, CRLF line ends, with our `Received:` header
    /// prepended) for the accepted recipients, `envelope.rcpts`, in RCPT order. Returns one
    /// reply per recipient (LMTP uses them) and the transaction reply (SMTP uses it).
    /// Called only once the whole message arrived within limits.
    fn data(&self, envelope: Envelope, message: Vec<u8>) -> BoxFuture<'_, DataReplies>;
}

/// The outcome of [`MailHandler::data`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataReplies {
    /// One reply per `envelope.rcpts` entry, same order. LMTP writes these; if the handler
    /// returns fewer, the missing ones are answered with `transaction` (extra ones are ignored).
    pub per_recipient: Vec<Reply>,
    /// The single reply to the end of DATA over SMTP.
    pub transaction: Reply,
}

impl DataReplies {
    /// The same reply for every recipient and for the transaction.
    pub fn all(envelope: &Envelope, reply: Reply) -> Self {
        DataReplies {
            per_recipient: vec![reply.clone(); envelope.rcpts.len()],
            transaction: reply,
        }
    }
}
