//! The facts every phase reads: envelope, recipient, mail, clock. Derived values are
//! computed once per mail and shared by every phase and recipient.

use std::cell::{OnceCell, RefCell};

use chrono::{DateTime, Utc};

use crate::dsl::{Str, Value};
use crate::mail_to_cpm::mail::{Mail, Mailbox};
use crate::ruleset::schema::{F, Fn};
use crate::smtp::envelope::{Envelope, Rcpt};

/// What is known of the mail, computed lazily once.
pub struct MailFacts<'x> {
    pub mail: Mail<'x>,
    from: OnceCell<Vec<Mailbox>>,
    to: OnceCell<Vec<Mailbox>>,
    cc: OnceCell<Vec<Mailbox>>,
    /// Shared with every `mail.text` value the rules read (no copy per reference).
    text: OnceCell<Option<Str>>,
    dnt: OnceCell<Vec<Mailbox>>,
    date_iso: OnceCell<Option<String>>,
    subject: OnceCell<Option<String>>,
    /// Values of `mail.*` fields and field functions, computed once per mail: rules of every
    /// recipient read the same mail, often the same header several times.
    values: RefCell<Vec<(u16, Value)>>,
    calls: RefCell<Vec<(Fn, String, Value)>>,
    /// The author's URI, set by the mapper from the address phase.
    pub from_uri: Option<String>,
}

impl<'x> MailFacts<'x> {
    pub fn new(mail: Mail<'x>) -> Self {
        MailFacts {
            mail,
            from: OnceCell::new(),
            to: OnceCell::new(),
            cc: OnceCell::new(),
            text: OnceCell::new(),
            dnt: OnceCell::new(),
            date_iso: OnceCell::new(),
            subject: OnceCell::new(),
            values: RefCell::new(Vec::new()),
            calls: RefCell::new(Vec::new()),
            from_uri: None,
        }
    }

    pub fn from(&self) -> &[Mailbox] {
        self.from.get_or_init(|| self.mail.mailboxes("From"))
    }
    pub fn to(&self) -> &[Mailbox] {
        self.to.get_or_init(|| self.mail.mailboxes("To"))
    }
    pub fn cc(&self) -> &[Mailbox] {
        self.cc.get_or_init(|| self.mail.mailboxes("Cc"))
    }
    pub fn text(&self) -> Option<&str> {
        self.text_shared().map(|t| &**t)
    }
    fn text_shared(&self) -> Option<&Str> {
        self.text.get_or_init(|| self.mail.text_shared()).as_ref()
    }
    pub fn dnt(&self) -> &[Mailbox] {
        self.dnt
            .get_or_init(|| self.mail.mailboxes("Disposition-Notification-To"))
    }
    /// Date: as Unix seconds.
    pub fn date(&self) -> Option<i64> {
        self.mail.date_parsed().map(|d| d.to_timestamp())
    }
    /// Date: as RFC 3339 with the original offset (made when a rule reads it).
    pub fn date_iso(&self) -> Option<&str> {
        self.date_iso
            .get_or_init(|| self.mail.date_parsed().map(|d| d.to_rfc3339()))
            .as_deref()
    }
    pub fn subject(&self) -> Option<&str> {
        self.subject.get_or_init(|| self.mail.subject()).as_deref()
    }
}

fn addresses(boxes: &[Mailbox]) -> Value {
    Value::list_of_str(boxes.iter().map(|m| m.address.as_str()))
}

/// Envelope, recipient and mail, as one field source.
pub struct Facts<'a, 'x> {
    pub envelope: &'a Envelope,
    pub rcpt: Option<&'a Rcpt>,
    /// The URI the address/recipient phases gave this recipient.
    pub rcpt_uri: Option<&'a str>,
    pub mail: Option<&'a MailFacts<'x>>,
    pub now: DateTime<Utc>,
}

impl Facts<'_, '_> {
    pub fn field(&self, f: F) -> Value {
        // Envelope and client facts are the same for every recipient of a mail: with a
        // mail, they are made once and shared through its cache.
        if let Some(m) = self.mail
            && matches!(
                f,
                F::EnvMailFrom
                    | F::EnvBody
                    | F::EnvRet
                    | F::EnvEnvid
                    | F::EnvByMode
                    | F::EnvRcpts
                    | F::ClientIp
                    | F::ClientHelo
            )
        {
            if let Some((_, v)) = m.values.borrow().iter().find(|(k, _)| *k == f as u16) {
                return v.clone();
            }
            let v = self.envelope_field(f);
            m.values.borrow_mut().push((f as u16, v.clone()));
            return v;
        }
        self.envelope_field(f)
    }

    fn envelope_field(&self, f: F) -> Value {
        let env = self.envelope;
        let mf = &env.mail_from;
        match f {
            F::EnvMailFrom => Value::str(mf.address.as_str()),
            F::EnvSize => mf.size.map(|s| Value::Int(s as i64)).unwrap_or_default(),
            F::EnvBody => Value::opt_str(mf.body),
            F::EnvRet => Value::opt_str(mf.ret),
            F::EnvEnvid => Value::opt_str(mf.envid.as_deref()),
            F::EnvBy => mf.by.map(|b| Value::Int(b.seconds)).unwrap_or_default(),
            F::EnvByMode => mf
                .by
                .map(|b| Value::str(b.mode.to_string()))
                .unwrap_or_default(),
            F::EnvByTrace => Value::Bool(mf.by.is_some_and(|b| b.trace)),
            F::EnvByRemaining => mf
                .by
                .map(|b| {
                    let elapsed = (self.now - env.received_at).num_seconds().max(0);
                    Value::Int(b.seconds.saturating_sub(elapsed))
                })
                .unwrap_or_default(),
            F::EnvSmtputf8 => Value::Bool(mf.smtputf8),
            F::EnvRcpts => Value::list_of_str(env.rcpts.iter().map(|r| r.address.as_str())),
            F::ClientIp => Value::opt_str(env.client.ip.map(|i| i.to_string())),
            F::ClientHelo => Value::str(env.client.helo.as_str()),
            F::ClientAuthenticated => Value::Bool(env.client.authenticated),
            F::ClientTls => Value::Bool(env.client.tls),
            F::Now => Value::Int(self.now.timestamp()),
            F::RcptAddress | F::RcptLocal | F::RcptDomain | F::RcptNotify | F::RcptOrcpt => {
                let Some(r) = self.rcpt else {
                    return Value::Null;
                };
                let (local, domain) = split(&r.address);
                match f {
                    F::RcptAddress => Value::str(r.address.as_str()),
                    F::RcptLocal => Value::str(local),
                    F::RcptDomain => Value::str(domain.to_ascii_lowercase()),
                    F::RcptNotify => Value::list_of_str(r.notify.iter().copied()),
                    _ => Value::opt_str(r.orcpt.as_deref()),
                }
            }
            F::RcptUri => Value::opt_str(self.rcpt_uri),
            _ => self.mail_field(f),
        }
    }

    fn mail_field(&self, f: F) -> Value {
        let Some(m) = self.mail else {
            return Value::Null;
        };
        if let Some((_, v)) = m.values.borrow().iter().find(|(k, _)| *k == f as u16) {
            return v.clone();
        }
        let v = Self::compute_mail_field(m, f);
        m.values.borrow_mut().push((f as u16, v.clone()));
        v
    }

    fn compute_mail_field(m: &MailFacts, f: F) -> Value {
        match f {
            F::MailFrom => addresses(m.from()),
            F::MailFromName => Value::opt_str(m.from().first().and_then(|b| b.name.as_deref())),
            F::MailFromUri => Value::opt_str(m.from_uri.as_deref()),
            F::MailTo => addresses(m.to()),
            F::MailCc => addresses(m.cc()),
            F::MailBcc => addresses(&m.mail.mailboxes("Bcc")),
            F::MailDnt => addresses(m.dnt()),
            F::MailSubject => Value::opt_str(m.subject()),
            F::MailDate => m.date().map(Value::Int).unwrap_or_default(),
            F::MailDateIso => Value::opt_str(m.date_iso()),
            F::MailMessageId => Value::opt_str(m.mail.message_id()),
            F::MailSize => Value::Int(m.mail.raw.len() as i64),
            F::MailText => m
                .text_shared()
                .map_or(Value::Null, |t| Value::Str(t.clone())),
            F::MailContentType => Value::str(m.mail.content_type()),
            F::MailAttachments => Value::Int(m.mail.attachments() as i64),
            F::MailReceivedCount => Value::Int(m.mail.header_count("Received") as i64),
            _ => Value::Null,
        }
    }

    pub fn field_fn(&self, f: Fn, arg: &str) -> Value {
        let Some(m) = self.mail else {
            return Value::Null;
        };
        if let Some((.., v)) = m
            .calls
            .borrow()
            .iter()
            .find(|(g, a, _)| *g == f && a == arg)
        {
            return v.clone();
        }
        let v = match f {
            Fn::MailHeader => Value::opt_str(m.mail.header(arg)),
            Fn::MailHeaders => Value::list_of_str(m.mail.headers(arg)),
            Fn::MailRawHeader => Value::opt_str(m.mail.raw_header(arg)),
            Fn::MailHeaderCount => Value::Int(m.mail.header_count(arg) as i64),
            _ => return Value::Null,
        };
        m.calls.borrow_mut().push((f, arg.to_string(), v.clone()));
        v
    }
}

pub fn split(address: &str) -> (&str, &str) {
    match address.rfind('@') {
        Some(at) => (&address[..at], &address[at + 1..]),
        None => (address, ""),
    }
}
