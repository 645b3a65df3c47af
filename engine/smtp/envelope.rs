//! The SMTP envelope: what MAIL FROM and RCPT TO said, plus who the client is.
//!
//! The SMTP front end fills this in as commands arrive; `iwf map` builds it from
//! `--mail-from` / `--rcpt` strings (exactly what follows `MAIL FROM:` / `RCPT TO:`),
//! parsed by the same smtp-proto parser the server uses.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use smtp_proto::{
    MAIL_BODY_7BIT, MAIL_BODY_8BITMIME, MAIL_BODY_BINARYMIME, MAIL_BY_NOTIFY, MAIL_BY_RETURN,
    MAIL_BY_TRACE, MAIL_RET_FULL, MAIL_RET_HDRS, MAIL_SMTPUTF8, RCPT_NOTIFY_DELAY,
    RCPT_NOTIFY_FAILURE, RCPT_NOTIFY_NEVER, RCPT_NOTIFY_SUCCESS, Request,
};

/// The whole envelope of one mail transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub mail_from: MailFrom,
    pub rcpts: Vec<Rcpt>,
    pub client: Client,
    /// When the transaction started (t0 of RFC 2852 §4 for BY arithmetic).
    pub received_at: DateTime<Utc>,
}

/// MAIL FROM and its ESMTP parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailFrom {
    /// The reverse-path without angle brackets; empty for the null path `<>`.
    pub address: String,
    /// SIZE= (RFC 1870), when given.
    pub size: Option<u64>,
    /// BODY= (RFC 6152): `7BIT`, `8BITMIME` or `BINARYMIME`.
    pub body: Option<&'static str>,
    /// RET= (RFC 3461): `FULL` or `HDRS`.
    pub ret: Option<&'static str>,
    /// ENVID= (RFC 3461), xtext-decoded.
    pub envid: Option<String>,
    /// BY= (RFC 2852).
    pub by: Option<DeliverBy>,
    /// SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
}

/// The DELIVERBY parameter: `BY=<seconds>;<mode>[T]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliverBy {
    pub seconds: i64,
    /// `R` (return if late) or `N` (notify if late).
    pub mode: char,
    pub trace: bool,
}

/// One RCPT TO and its DSN parameters (RFC 3461).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rcpt {
    /// The forward-path without angle brackets.
    pub address: String,
    /// NOTIFY= keywords in upper case (`SUCCESS`, `FAILURE`, `DELAY`, `NEVER`); empty when absent.
    pub notify: Vec<&'static str>,
    /// ORCPT= address (smtp-proto drops the `rfc822;` type).
    pub orcpt: Option<String>,
}

/// Who is talking to us.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Client {
    pub ip: Option<IpAddr>,
    pub helo: String,
    pub authenticated: bool,
    /// Whether the session is protected by TLS.
    pub tls: bool,
}

/// Why an envelope argument string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot parse `{input}` as {what}: {reason}")]
pub struct EnvelopeError {
    pub input: String,
    pub what: &'static str,
    pub reason: String,
}

/// Whether `s` can stand in an SMTP path as a mailbox: `local@domain`, both non-empty,
/// without spaces, angle brackets or control characters.
pub fn is_mailbox(s: &str) -> bool {
    match s.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !s
                    .chars()
                    .any(|c| c.is_control() || c.is_whitespace() || c == '<' || c == '>')
        }
        None => false,
    }
}

impl MailFrom {
    /// Converts what smtp-proto parsed from a MAIL command.
    pub fn from_proto(m: &smtp_proto::MailFrom<std::borrow::Cow<'_, str>>) -> Self {
        let flags = m.flags;
        let body = if flags & MAIL_BODY_8BITMIME != 0 {
            Some("8BITMIME")
        } else if flags & MAIL_BODY_BINARYMIME != 0 {
            Some("BINARYMIME")
        } else if flags & MAIL_BODY_7BIT != 0 {
            Some("7BIT")
        } else {
            None
        };
        let ret = if flags & MAIL_RET_FULL != 0 {
            Some("FULL")
        } else if flags & MAIL_RET_HDRS != 0 {
            Some("HDRS")
        } else {
            None
        };
        let by = if flags & (MAIL_BY_NOTIFY | MAIL_BY_RETURN) != 0 {
            Some(DeliverBy {
                seconds: m.by,
                mode: if flags & MAIL_BY_RETURN != 0 {
                    'R'
                } else {
                    'N'
                },
                trace: flags & MAIL_BY_TRACE != 0,
            })
        } else {
            None
        };
        MailFrom {
            address: m.address.to_string(),
            size: (m.size > 0).then_some(m.size as u64),
            body,
            ret,
            envid: m.env_id.as_ref().map(|s| s.to_string()),
            by,
            smtputf8: flags & MAIL_SMTPUTF8 != 0,
        }
    }

    /// Parses what follows `MAIL FROM:`, e.g. `<a@mail.example.org> BY=3600;R SIZE=1200`.
    pub fn parse(args: &str) -> Result<Self, EnvelopeError> {
        match parse_command("MAIL FROM:", args, "MAIL FROM arguments")? {
            Request::Mail { from } => Ok(MailFrom::from_proto(&from)),
            _ => Err(err(args, "MAIL FROM arguments", "not a MAIL command")),
        }
    }
}

impl Rcpt {
    /// Converts what smtp-proto parsed from a RCPT command.
    pub fn from_proto(r: &smtp_proto::RcptTo<std::borrow::Cow<'_, str>>) -> Self {
        let mut notify = Vec::new();
        for (bit, word) in [
            (RCPT_NOTIFY_SUCCESS, "SUCCESS"),
            (RCPT_NOTIFY_FAILURE, "FAILURE"),
            (RCPT_NOTIFY_DELAY, "DELAY"),
            (RCPT_NOTIFY_NEVER, "NEVER"),
        ] {
            if r.flags & bit != 0 {
                notify.push(word);
            }
        }
        Rcpt {
            address: r.address.to_string(),
            notify,
            orcpt: r.orcpt.as_ref().map(|s| s.to_string()),
        }
    }

    /// Parses what follows `RCPT TO:`, e.g. `<+15551230001@cpm.example.net> NOTIFY=SUCCESS,FAILURE`.
    pub fn parse(args: &str) -> Result<Self, EnvelopeError> {
        match parse_command("RCPT TO:", args, "RCPT TO arguments")? {
            Request::Rcpt { to } => {
                let mut rcpt = Rcpt::from_proto(&to);
                if rcpt.address.is_empty() && names_postmaster(args.as_bytes()) {
                    rcpt.address = "postmaster".to_string();
                }
                Ok(rcpt)
            }
            _ => Err(err(args, "RCPT TO arguments", "not a RCPT command")),
        }
    }
}

/// smtp-proto turns `<Postmaster>` (no domain, RFC 5321 §4.1.1.3) into an empty address,
/// the same as `<>`; this tells them apart by the command's text.
pub fn names_postmaster(line: &[u8]) -> bool {
    let lower = line.to_ascii_lowercase();
    lower.windows(12).any(|w| w == b"<postmaster>")
}

fn parse_command<'a>(
    verb: &str,
    args: &str,
    what: &'static str,
) -> Result<Request<std::borrow::Cow<'a, str>>, EnvelopeError> {
    if args.contains(['\r', '\n']) {
        return Err(err(args, what, "CR or LF in the arguments"));
    }
    let line = format!("{verb}{args}\r\n");
    let mut iter = line.as_bytes().iter();
    Request::parse(&mut iter)
        .map(|r| r.into_owned_request())
        .map_err(|e| err(args, what, &format!("{e:?}")))
}

fn err(input: &str, what: &'static str, reason: &str) -> EnvelopeError {
    EnvelopeError {
        input: input.to_string(),
        what,
        reason: reason.to_string(),
    }
}

/// smtp-proto borrows from the input line; this makes an owned copy.
trait IntoOwnedRequest {
    fn into_owned_request(self) -> Request<std::borrow::Cow<'static, str>>;
}

impl IntoOwnedRequest for Request<std::borrow::Cow<'_, str>> {
    fn into_owned_request(self) -> Request<std::borrow::Cow<'static, str>> {
        use std::borrow::Cow::Owned;
        match self {
            Request::Mail { from } => {
                let f = from.into_owned();
                Request::Mail {
                    from: smtp_proto::MailFrom {
                        address: Owned(f.address),
                        flags: f.flags,
                        size: f.size,
                        trans_id: f.trans_id.map(Owned),
                        by: f.by,
                        env_id: f.env_id.map(Owned),
                        solicit: f.solicit.map(Owned),
                        mtrk: None,
                        auth: f.auth.map(Owned),
                        hold_for: f.hold_for,
                        hold_until: f.hold_until,
                        mt_priority: f.mt_priority,
                    },
                }
            }
            Request::Rcpt { to } => {
                let t = to.into_owned();
                Request::Rcpt {
                    to: smtp_proto::RcptTo {
                        address: Owned(t.address),
                        orcpt: t.orcpt.map(Owned),
                        rrvs: t.rrvs,
                        flags: t.flags,
                    },
                }
            }
            _ => Request::Quit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mail_from_with_by_and_dsn() {
        let m =
            MailFrom::parse("<a@mail.example.org> BY=3600;RT RET=HDRS ENVID=QQ314159 SIZE=1200")
                .unwrap();
        assert_eq!(m.address, "a@mail.example.org");
        assert_eq!(
            m.by,
            Some(DeliverBy {
                seconds: 3600,
                mode: 'R',
                trace: true
            })
        );
        assert_eq!(m.ret, Some("HDRS"));
        assert_eq!(m.envid.as_deref(), Some("QQ314159"));
        assert_eq!(m.size, Some(1200));
    }

    #[test]
    fn null_reverse_path() {
        assert_eq!(MailFrom::parse("<>").unwrap().address, "");
    }

    #[test]
    fn rcpt_with_notify_and_orcpt() {
        let r = Rcpt::parse(
            "<+15551230001@cpm.example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x@y.org",
        )
        .unwrap();
        assert_eq!(r.address, "+15551230001@cpm.example.net");
        assert_eq!(r.notify, vec!["SUCCESS", "FAILURE"]);
        assert_eq!(r.orcpt.as_deref(), Some("x@y.org"));
    }

    #[test]
    fn crlf_is_refused() {
        assert!(Rcpt::parse("<a@b>\r\nDATA").is_err());
    }
}
