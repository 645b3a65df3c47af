//! Listener configuration: identity, TLS, policy switches and limits, with their defaults.

use std::sync::Arc;
use std::time::Duration;

/// Everything a listener needs besides the socket and the handler.
#[derive(Clone)]
pub struct SmtpConfig {
    /// Our name in the greeting, the EHLO reply and `Received: ... by <hostname>`.
    /// Default `localhost`; set it to the host's FQDN.
    pub hostname: String,
    /// Offer STARTTLS (RFC 3207) with this rustls configuration. Default: none (no STARTTLS).
    /// Build one with [`tls_config_from_pem`](super::tls_config_from_pem).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Refuse MAIL with `530 5.7.0` until STARTTLS succeeded. Default false.
    pub require_tls: bool,
    /// The smallest BY= time in `R` mode we accept, advertised as `DELIVERBY <min>`
    /// (RFC 2852 §3). `None` (default) advertises plain `DELIVERBY`.
    pub deliver_by_min: Option<u32>,
    /// How VRFY is answered. Default [`VrfyPolicy::Disabled`] (`502 5.5.1`).
    pub vrfy: VrfyPolicy,
    /// After the shutdown signal: how long [`serve`](super::serve) waits for sessions to
    /// finish (a message inside the SIP transaction keeps its session alive) before it
    /// aborts what is left. Default 60 s: SIP Timer F is 32 s.
    pub shutdown_grace: Duration,
    pub limits: Limits,
}

/// How VRFY (RFC 5321 §3.5.3) is answered. Neither discloses anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VrfyPolicy {
    /// `502 5.5.1`: command not implemented.
    Disabled,
    /// `252 2.5.0`: cannot verify, but will take a message and try.
    CannotVerify,
}

/// Limits, each with the reply a client gets when it breaks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest command line, CRLF included (RFC 5321 §4.5.3.1.4: 512). After EHLO/LHLO,
    /// MAIL and RCPT lines may be [`ESMTP_PARAMETER_ALLOWANCE`] octets longer for their
    /// parameters. Over it: `500 5.5.6`.
    pub command_line: usize,
    /// Longest text line of message content, CRLF included, not counting a stuffed dot
    /// (RFC 5321 §4.5.3.1.6: 1000). Over it: `554 5.6.0` after the end of data.
    pub text_line: usize,
    /// Largest message in octets (after unstuffing, without our Received: header);
    /// advertised as `SIZE`. Over it: `552 5.3.4` at MAIL (declared SIZE=) or after the end
    /// of data. Default 10 MiB. RFC 5321 §4.5.3.1.7 wants at least 64 KiB.
    pub message_size: usize,
    /// Accepted recipients per transaction (RFC 5321 §4.5.3.1.8: at least 100).
    /// Past it: `452 4.5.3`.
    pub recipients: usize,
    /// Concurrent sessions per listener. When full: `421 4.3.2` and close.
    pub connections: usize,
    /// Concurrent sessions per client IP. When full: `421 4.7.0` and close. Note that a
    /// relay in front of the gateway (e.g. a local Postfix) is one IP for all its mail.
    pub connections_per_ip: usize,
    /// Waiting for a command (RFC 5321 §4.5.3.2.7: 5 min): both the longest silence and
    /// the whole time one command line may take to arrive, so a client that trickles a
    /// byte at a time cannot hold a session longer. Then `421 4.4.2` and close.
    pub command_timeout: Duration,
    /// Inactivity while message content arrives (RFC 5321 §4.5.3.2.5 asks 3 min per
    /// block; we are more lenient). Then `421 4.4.2` and close. The whole content must
    /// also arrive within `data_timeout` plus one second per [`Limits::min_data_rate`]
    /// octets received (Postfix's `smtpd_min_data_rate`).
    pub data_timeout: Duration,
    /// Octets per second the content of a message must average (see `data_timeout`);
    /// default 500, as Postfix. 0 turns the rate budget off.
    pub min_data_rate: usize,
    /// Under stress — at least three quarters of [`Limits::connections`] in use — the
    /// budgets for a command line and for the base of the DATA budget shrink to this
    /// (Postfix's `${stress?10}{300}`): slow and idle clients make room. Default 10 s.
    pub stress_timeout: Duration,
    /// When every session slot is taken, how long a new connection waits for one (as in
    /// a listen queue) before it gets `421 4.3.2`. Default 5 s. The connections waiting
    /// count against their address's [`Limits::connections_per_ip`].
    pub connect_wait: Duration,
    /// Protocol errors (5.5.x replies: unknown command, syntax, sequence, line too long,
    /// bare CR/LF) tolerated in one session; the next one is answered `421 4.7.0` and the
    /// session closed.
    pub bad_commands: usize,
}

/// Extra octets a MAIL or RCPT line may have after EHLO/LHLO, for its parameters:
/// SIZE (RFC 1870), BODY, SMTPUTF8, RET, ENVID (100 as xtext, RFC 3461), BY (RFC 2852),
/// NOTIFY and ORCPT (500, RFC 3461 §4.2), with room to spare.
pub const ESMTP_PARAMETER_ALLOWANCE: usize = 1024;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            command_line: 512,
            text_line: 1000,
            message_size: 10 * 1024 * 1024,
            recipients: 100,
            connections: 1000,
            connections_per_ip: 50,
            command_timeout: Duration::from_secs(5 * 60),
            data_timeout: Duration::from_secs(10 * 60),
            min_data_rate: 500,
            stress_timeout: Duration::from_secs(10),
            connect_wait: Duration::from_secs(5),
            bad_commands: 20,
        }
    }
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            hostname: "localhost".to_string(),
            tls: None,
            require_tls: false,
            deliver_by_min: None,
            vrfy: VrfyPolicy::Disabled,
            shutdown_grace: Duration::from_secs(60),
            limits: Limits::default(),
        }
    }
}

impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("hostname", &self.hostname)
            .field("tls", &self.tls.is_some())
            .field("require_tls", &self.require_tls)
            .field("deliver_by_min", &self.deliver_by_min)
            .field("vrfy", &self.vrfy)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("limits", &self.limits)
            .finish()
    }
}
