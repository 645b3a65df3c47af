//! Phases as data: which fields each phase's rules may read and which actions they may take.
//!
//! Adding a phase (the reverse direction, reports) means adding a [`PhaseDef`] row, the
//! fields it reads and an input type that serves them; the loader, compiler, explain output
//! and README tables pick it up from here.

use crate::dsl::Ty;

/// Phase bit masks.
pub const ADDRESS: u8 = 1;
pub const RECIPIENT: u8 = 2;
pub const MESSAGE: u8 = 4;
pub const RESPONSE: u8 = 8;
pub const TRANSACTION: u8 = 16;

const ENV: u8 = RECIPIENT | MESSAGE | RESPONSE | TRANSACTION;
const RCPT: u8 = RECIPIENT | MESSAGE | RESPONSE;
const MAIL: u8 = MESSAGE | RESPONSE | TRANSACTION;

/// One phase of the rule engine.
pub struct PhaseDef {
    pub name: &'static str,
    pub bit: u8,
    pub doc: &'static str,
    pub actions: &'static [Action],
}

/// An action a rule may take (a key of the rule mapping).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Uri,
    Reject,
    SetHeader,
    AppendHeader,
    RemoveHeader,
    CpimHeader,
    Mode,
    RequestUri,
    Imdn,
    Body,
    Text,
    RecipientList,
    Exploder,
    Reply,
    Retry,
    Dsn,
    Mailbox,
    Learn,
    Report,
    Stop,
}

impl Action {
    pub const ALL: [Action; 20] = [
        Action::Uri,
        Action::Reject,
        Action::SetHeader,
        Action::AppendHeader,
        Action::RemoveHeader,
        Action::CpimHeader,
        Action::Mode,
        Action::RequestUri,
        Action::Imdn,
        Action::Body,
        Action::Text,
        Action::RecipientList,
        Action::Exploder,
        Action::Reply,
        Action::Retry,
        Action::Dsn,
        Action::Mailbox,
        Action::Learn,
        Action::Report,
        Action::Stop,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Action::Uri => "uri",
            Action::Reject => "reject",
            Action::SetHeader => "set_header",
            Action::AppendHeader => "append_header",
            Action::RemoveHeader => "remove_header",
            Action::CpimHeader => "cpim_header",
            Action::Mode => "mode",
            Action::RequestUri => "request_uri",
            Action::Imdn => "imdn",
            Action::Body => "body",
            Action::Text => "text",
            Action::RecipientList => "recipient_list",
            Action::Exploder => "exploder",
            Action::Reply => "reply",
            Action::Retry => "retry",
            Action::Dsn => "dsn",
            Action::Mailbox => "mailbox",
            Action::Learn => "learn",
            Action::Report => "report",
            Action::Stop => "stop",
        }
    }

    pub fn from_key(k: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.key() == k)
    }

    /// The words a value must be one of, for actions that choose between fixed options.
    pub fn choices(self) -> Option<&'static [&'static str]> {
        match self {
            Action::Mode => Some(&["pager", "large"]),
            Action::Body => Some(&["text", "cpim"]),
            Action::RecipientList => Some(&["none", "history", "exploder"]),
            Action::Retry => Some(&["large", "text", "pager"]),
            Action::Learn => Some(&["no-cpim", "no-msrp", "too-big"]),
            Action::Report => Some(&["relayed"]),
            _ => None,
        }
    }

    pub fn doc(self) -> &'static str {
        match self {
            Action::Uri => {
                "the SIP/tel URI for this address (accepts the recipient in the recipient phase)"
            }
            Action::Reject => {
                "refuse with this SMTP reply, e.g. `550 5.1.1 <${rcpt.address}>: unknown`"
            }
            Action::SetHeader => {
                "map of SIP header → value; replaces earlier values of that header"
            }
            Action::AppendHeader => "map of SIP header → value; adds another instance",
            Action::RemoveHeader => "list of SIP header names to drop",
            Action::CpimHeader => "map of CPIM header → value (message/cpim body)",
            Action::Mode => "`pager` (SIP MESSAGE) or `large` (INVITE + MSRP)",
            Action::RequestUri => "the Request-URI",
            Action::Imdn => "list of IMDN dispositions to request (imdn.Disposition-Notification)",
            Action::Body => "`text` (text/plain body) or `cpim` (message/cpim wrapper)",
            Action::Text => "the text of a pager-mode body (UTF-8)",
            Action::RecipientList => {
                "`none`, `history` (fan-out with RFC 5365 recipient-list-history) or `exploder` (one request with recipient-list)"
            }
            Action::Exploder => {
                "the URI of the RFC 5365 exploder used by `recipient_list: exploder`"
            }
            Action::Reply => "the SMTP reply",
            Action::Retry => {
                "retry the delivery once in another form: `large`, `text`, or `pager` (planned again with what the peer memory now knows)"
            }
            Action::Learn => {
                "remember what this refusal says of the peer behind the Request-URI: `no-cpim`, `no-msrp` or `too-big` (read back as peer.* in the message phase)"
            }
            Action::Report => {
                "`relayed`: a success DSN with Action: relayed is owed for this recipient (RFC 3461 §5.2.2), sent if its NOTIFY has SUCCESS"
            }
            Action::Dsn => "true: send one RFC 3464 DSN for the permanently failed recipients",
            Action::Mailbox => {
                "accept the recipient and relay the mail unchanged to this mail address through the smarthost (postmaster, RFC 5321 §4.5.1)"
            }
            Action::Stop => "true: no later rule of this phase runs",
        }
    }
}

/// Every phase, in the order a mail meets them.
pub static PHASES: &[PhaseDef] = &[
    PhaseDef {
        name: "address",
        bit: ADDRESS,
        doc: "an e-mail address (RCPT, From, To/Cc entries) → the SIP/tel URI that stands for it",
        actions: &[Action::Uri, Action::Stop],
    },
    PhaseDef {
        name: "recipient",
        bit: RECIPIENT,
        doc: "RCPT TO → accept with a target URI or reject, decided at RCPT time",
        actions: &[Action::Uri, Action::Reject, Action::Mailbox, Action::Stop],
    },
    PhaseDef {
        name: "message",
        bit: MESSAGE,
        doc: "mail + envelope → the delivery plan for one recipient",
        actions: &[
            Action::SetHeader,
            Action::AppendHeader,
            Action::RemoveHeader,
            Action::CpimHeader,
            Action::Mode,
            Action::RequestUri,
            Action::Imdn,
            Action::Body,
            Action::Text,
            Action::RecipientList,
            Action::Exploder,
            Action::Reject,
            Action::Stop,
        ],
    },
    PhaseDef {
        name: "response",
        bit: RESPONSE,
        doc: "SIP/MSRP final outcome or transport failure → SMTP reply (or a retry in another form)",
        actions: &[
            Action::Reply,
            Action::Retry,
            Action::Learn,
            Action::Report,
            Action::Stop,
        ],
    },
    PhaseDef {
        name: "transaction",
        bit: TRANSACTION,
        doc: "the per-recipient replies of one SMTP transaction → its one DATA reply (and a DSN)",
        actions: &[Action::Reply, Action::Dsn, Action::Stop],
    },
];

pub fn phase(name: &str) -> Option<&'static PhaseDef> {
    PHASES.iter().find(|p| p.name == name)
}

/// Field identifiers; the slot of a field is its discriminant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum F {
    EnvMailFrom,
    EnvSize,
    EnvBody,
    EnvRet,
    EnvEnvid,
    EnvBy,
    EnvByMode,
    EnvByTrace,
    EnvByRemaining,
    EnvSmtputf8,
    EnvRcpts,
    ClientIp,
    ClientHelo,
    ClientAuthenticated,
    ClientTls,
    Now,
    RcptAddress,
    RcptLocal,
    RcptDomain,
    RcptNotify,
    RcptOrcpt,
    RcptUri,
    MailFrom,
    MailFromName,
    MailFromUri,
    MailTo,
    MailCc,
    MailBcc,
    MailDnt,
    MailSubject,
    MailDate,
    MailDateIso,
    MailMessageId,
    MailSize,
    MailText,
    MailContentType,
    MailAttachments,
    MailReceivedCount,
    RequestSize,
    PlanMode,
    PlanImdn,
    PlanRequestUri,
    PlanBody,
    PlanImdnRequested,
    PeerAcceptsCpim,
    PeerAcceptsMsrp,
    PeerMaxBytes,
    PlanRecipientList,
    SipStatus,
    SipReason,
    SipProtocol,
    Failure,
    FailureDetail,
    Mode,
    Retried,
    ResultsTotal,
    ResultsDelivered,
    ResultsTemporary,
    ResultsPermanent,
    ResultsFirstTemporary,
    ResultsFirstPermanent,
    ResultsFirstTemporaryCode,
    ResultsFirstPermanentCode,
    AddrAddress,
    AddrLocal,
    AddrDomain,
    AddrName,
    AddrRole,
}

/// Field functions (one string literal argument, usually a header name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Fn {
    MailHeader,
    MailHeaders,
    MailRawHeader,
    MailHeaderCount,
    PlanHeader,
    SipHeader,
}

/// Static types of fields, in a form usable in a const table.
#[derive(Debug, Clone, Copy)]
pub enum T {
    Bool,
    Int,
    Str,
    StrList,
}

impl T {
    pub fn ty(self) -> Ty {
        match self {
            T::Bool => Ty::Bool,
            T::Int => Ty::Int,
            T::Str => Ty::Str,
            T::StrList => Ty::List(Box::new(Ty::Str)),
        }
    }
}

/// name, id, type, phases, doc
pub static FIELDS: &[(&str, F, T, u8, &str)] = &[
    (
        "envelope.mail_from",
        F::EnvMailFrom,
        T::Str,
        ENV,
        "reverse-path of MAIL FROM; \"\" for the null path <>",
    ),
    (
        "envelope.size",
        F::EnvSize,
        T::Int,
        ENV,
        "SIZE= of MAIL FROM (RFC 1870)",
    ),
    (
        "envelope.body",
        F::EnvBody,
        T::Str,
        ENV,
        "BODY= of MAIL FROM: 7BIT, 8BITMIME, BINARYMIME",
    ),
    (
        "envelope.ret",
        F::EnvRet,
        T::Str,
        ENV,
        "RET= (RFC 3461): FULL or HDRS",
    ),
    (
        "envelope.envid",
        F::EnvEnvid,
        T::Str,
        ENV,
        "ENVID= (RFC 3461)",
    ),
    (
        "envelope.by",
        F::EnvBy,
        T::Int,
        ENV,
        "BY= seconds as sent (RFC 2852)",
    ),
    (
        "envelope.by_mode",
        F::EnvByMode,
        T::Str,
        ENV,
        "BY mode: R (return) or N (notify)",
    ),
    (
        "envelope.by_trace",
        F::EnvByTrace,
        T::Bool,
        ENV,
        "BY trace flag T",
    ),
    (
        "envelope.by_remaining",
        F::EnvByRemaining,
        T::Int,
        ENV,
        "BY seconds minus the time since MAIL FROM",
    ),
    (
        "envelope.smtputf8",
        F::EnvSmtputf8,
        T::Bool,
        ENV,
        "SMTPUTF8 given (RFC 6531)",
    ),
    (
        "envelope.rcpts",
        F::EnvRcpts,
        T::StrList,
        ENV,
        "every accepted RCPT TO address",
    ),
    (
        "client.ip",
        F::ClientIp,
        T::Str,
        ENV,
        "the SMTP client's IP address",
    ),
    (
        "client.helo",
        F::ClientHelo,
        T::Str,
        ENV,
        "the EHLO/HELO/LHLO name",
    ),
    (
        "client.authenticated",
        F::ClientAuthenticated,
        T::Bool,
        ENV,
        "the client authenticated (SMTP AUTH)",
    ),
    (
        "client.tls",
        F::ClientTls,
        T::Bool,
        ENV,
        "the session is protected by TLS",
    ),
    (
        "now",
        F::Now,
        T::Int,
        ENV | ADDRESS,
        "the current time, Unix seconds",
    ),
    (
        "rcpt.address",
        F::RcptAddress,
        T::Str,
        RCPT,
        "this RCPT TO address",
    ),
    ("rcpt.local", F::RcptLocal, T::Str, RCPT, "its local part"),
    (
        "rcpt.domain",
        F::RcptDomain,
        T::Str,
        RCPT,
        "its domain, lower case",
    ),
    (
        "rcpt.notify",
        F::RcptNotify,
        T::StrList,
        RCPT,
        "NOTIFY= keywords (SUCCESS, FAILURE, DELAY, NEVER); empty when absent",
    ),
    ("rcpt.orcpt", F::RcptOrcpt, T::Str, RCPT, "ORCPT= address"),
    (
        "rcpt.uri",
        F::RcptUri,
        T::Str,
        RCPT,
        "the URI the address phase gave this recipient (recipient phase) or the accepted target (later)",
    ),
    (
        "mail.from",
        F::MailFrom,
        T::StrList,
        MAIL,
        "addresses of the From: header",
    ),
    (
        "mail.from_name",
        F::MailFromName,
        T::Str,
        MAIL,
        "display name of the first From: mailbox, RFC 2047-decoded",
    ),
    (
        "mail.from_uri",
        F::MailFromUri,
        T::Str,
        MAIL,
        "the URI the address phase gives the author (first From: mailbox, else MAIL FROM)",
    ),
    ("mail.to", F::MailTo, T::StrList, MAIL, "addresses of To:"),
    ("mail.cc", F::MailCc, T::StrList, MAIL, "addresses of Cc:"),
    (
        "mail.bcc",
        F::MailBcc,
        T::StrList,
        MAIL,
        "addresses of Bcc:",
    ),
    (
        "mail.dnt",
        F::MailDnt,
        T::StrList,
        MAIL,
        "addresses of Disposition-Notification-To: (RFC 3798)",
    ),
    (
        "mail.subject",
        F::MailSubject,
        T::Str,
        MAIL,
        "Subject:, RFC 2047-decoded",
    ),
    (
        "mail.date",
        F::MailDate,
        T::Int,
        MAIL,
        "Date: as Unix seconds; absent when missing or unparsable",
    ),
    (
        "mail.date_iso",
        F::MailDateIso,
        T::Str,
        MAIL,
        "Date: in RFC 3339 with its original offset",
    ),
    (
        "mail.message_id",
        F::MailMessageId,
        T::Str,
        MAIL,
        "Message-ID: without angle brackets",
    ),
    (
        "mail.size",
        F::MailSize,
        T::Int,
        MAIL,
        "size of the mail in bytes",
    ),
    (
        "mail.text",
        F::MailText,
        T::Str,
        MAIL,
        "the text/plain content in UTF-8 (from multipart/alternative, QP, base64, legacy charsets); absent when the mail is not plain text",
    ),
    (
        "mail.content_type",
        F::MailContentType,
        T::Str,
        MAIL,
        "type/subtype of the top-level entity, lower case",
    ),
    (
        "mail.attachments",
        F::MailAttachments,
        T::Int,
        MAIL,
        "number of attachments and non-text parts",
    ),
    (
        "mail.received_count",
        F::MailReceivedCount,
        T::Int,
        MAIL,
        "number of Received: headers (hop count)",
    ),
    (
        "request.size",
        F::RequestSize,
        T::Int,
        MESSAGE,
        "bytes of the SIP MESSAGE as built so far (request line + headers + body)",
    ),
    (
        "plan.mode",
        F::PlanMode,
        T::Str,
        MESSAGE | RESPONSE,
        "pager or large, as decided so far",
    ),
    (
        "plan.imdn",
        F::PlanImdn,
        T::StrList,
        MESSAGE,
        "IMDN dispositions requested so far",
    ),
    (
        "plan.request_uri",
        F::PlanRequestUri,
        T::Str,
        MESSAGE,
        "Request-URI so far",
    ),
    (
        "plan.body",
        F::PlanBody,
        T::Str,
        MESSAGE | RESPONSE,
        "text or cpim",
    ),
    (
        "plan.imdn_requested",
        F::PlanImdnRequested,
        T::Bool,
        RESPONSE,
        "whether the request that got this outcome asked for an IMDN",
    ),
    (
        "peer.accepts_cpim",
        F::PeerAcceptsCpim,
        T::Bool,
        MESSAGE,
        "false while the peer memory holds a recent `learn: no-cpim` for this Request-URI",
    ),
    (
        "peer.accepts_msrp",
        F::PeerAcceptsMsrp,
        T::Bool,
        MESSAGE,
        "false while the peer memory holds a recent `learn: no-msrp` for this Request-URI",
    ),
    (
        "peer.max_bytes",
        F::PeerMaxBytes,
        T::Int,
        MESSAGE,
        "the smallest request size the peer recently refused as too big (null: none)",
    ),
    (
        "plan.recipient_list",
        F::PlanRecipientList,
        T::Str,
        MESSAGE,
        "none, history or exploder",
    ),
    (
        "sip.status",
        F::SipStatus,
        T::Int,
        RESPONSE,
        "final status code; absent on a transport failure or timeout",
    ),
    (
        "sip.reason",
        F::SipReason,
        T::Str,
        RESPONSE,
        "reason phrase of the final response",
    ),
    (
        "sip.protocol",
        F::SipProtocol,
        T::Str,
        RESPONSE,
        "which protocol answered: sip or msrp",
    ),
    (
        "failure",
        F::Failure,
        T::Str,
        RESPONSE,
        "timeout, transport, msrp-connect, msrp-lost, deadline, session-cap; absent when a response came",
    ),
    (
        "failure_detail",
        F::FailureDetail,
        T::Str,
        RESPONSE,
        "what went wrong, in words",
    ),
    (
        "mode",
        F::Mode,
        T::Str,
        RESPONSE,
        "the mode of the attempt that produced this outcome: pager or large",
    ),
    (
        "retried",
        F::Retried,
        T::StrList,
        RESPONSE,
        "the retries already made for this recipient (large, text)",
    ),
    (
        "results.total",
        F::ResultsTotal,
        T::Int,
        TRANSACTION,
        "recipients in the transaction",
    ),
    (
        "results.delivered",
        F::ResultsDelivered,
        T::Int,
        TRANSACTION,
        "recipients whose reply is 2xx",
    ),
    (
        "results.temporary",
        F::ResultsTemporary,
        T::Int,
        TRANSACTION,
        "recipients whose reply is 4xx",
    ),
    (
        "results.permanent",
        F::ResultsPermanent,
        T::Int,
        TRANSACTION,
        "recipients whose reply is 5xx",
    ),
    (
        "results.first_temporary",
        F::ResultsFirstTemporary,
        T::Str,
        TRANSACTION,
        "the first 4xx reply",
    ),
    (
        "results.first_permanent",
        F::ResultsFirstPermanent,
        T::Str,
        TRANSACTION,
        "the first 5xx reply",
    ),
    (
        "results.first_temporary_code",
        F::ResultsFirstTemporaryCode,
        T::Str,
        TRANSACTION,
        "code and enhanced status of the first 4xx reply, without its text (`451 4.2.1`)",
    ),
    (
        "results.first_permanent_code",
        F::ResultsFirstPermanentCode,
        T::Str,
        TRANSACTION,
        "code and enhanced status of the first 5xx reply, without its text (`550 5.1.1`)",
    ),
    (
        "addr.address",
        F::AddrAddress,
        T::Str,
        ADDRESS,
        "the e-mail address being mapped",
    ),
    (
        "addr.local",
        F::AddrLocal,
        T::Str,
        ADDRESS,
        "its local part",
    ),
    (
        "addr.domain",
        F::AddrDomain,
        T::Str,
        ADDRESS,
        "its domain, lower case",
    ),
    (
        "addr.name",
        F::AddrName,
        T::Str,
        ADDRESS,
        "its display name, when it came from a header",
    ),
    (
        "addr.role",
        F::AddrRole,
        T::Str,
        ADDRESS,
        "where it came from: rcpt, from, to, cc",
    ),
];

/// name, id, result type, phases, whether the argument is a header name, doc
pub static FIELD_FNS: &[(&str, Fn, T, u8, &str)] = &[
    (
        "mail.header",
        Fn::MailHeader,
        T::Str,
        MAIL,
        "first value of a mail header, RFC 2047-decoded, unfolded",
    ),
    (
        "mail.headers",
        Fn::MailHeaders,
        T::StrList,
        MAIL,
        "every value of a mail header, decoded",
    ),
    (
        "mail.raw_header",
        Fn::MailRawHeader,
        T::Str,
        MAIL,
        "first value of a mail header as received (unfolded, not decoded)",
    ),
    (
        "mail.header_count",
        Fn::MailHeaderCount,
        T::Int,
        MAIL,
        "how many times a mail header occurs",
    ),
    (
        "plan.header",
        Fn::PlanHeader,
        T::Str,
        MESSAGE,
        "the SIP header set so far",
    ),
    (
        "sip.header",
        Fn::SipHeader,
        T::Str,
        RESPONSE,
        "a header of the final SIP response",
    ),
];

impl F {
    pub fn from_slot(slot: u16) -> Option<F> {
        FIELDS.iter().map(|f| f.1).find(|f| *f as u16 == slot)
    }
}

impl Fn {
    pub fn from_slot(slot: u16) -> Option<Fn> {
        FIELD_FNS.iter().map(|f| f.1).find(|f| *f as u16 == slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_table_order() {
        for (i, f) in FIELDS.iter().enumerate() {
            assert_eq!(f.1 as usize, i, "{}", f.0);
        }
        for (i, f) in FIELD_FNS.iter().enumerate() {
            assert_eq!(f.1 as usize, i, "{}", f.0);
        }
    }
}
