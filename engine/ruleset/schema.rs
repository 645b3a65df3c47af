//! Phases as data: which fields each phase's rules may read and which actions they may take.
//!
//! Adding a phase (the reverse direction, reports) means adding a [`PhaseDef`] row, the
//! fields it reads and an input type that serves them; the loader, compiler, explain output
//! and README tables pick it up from here.

use crate::dsl::Ty;

/// Phase bit masks.
pub const ADDRESS: u16 = 1;
pub const RECIPIENT: u16 = 2;
pub const MESSAGE: u16 = 4;
pub const RESPONSE: u16 = 8;
pub const TRANSACTION: u16 = 16;
/// The CPM → e-mail direction (`engine/cpm_to_mail`).
pub const CPM_ADDRESS: u16 = 32;
pub const CPM_MESSAGE: u16 = 64;
pub const CPM_RESPONSE: u16 = 128;
const CPM: u16 = CPM_ADDRESS | CPM_MESSAGE | CPM_RESPONSE;
/// Reports across the border (`engine/reports`): an IMDN from CPM → DSN/MDN mail, and a
/// DSN/MDN mail → IMDN.
pub const CPM_REPORT: u16 = 256;
pub const MAIL_REPORT: u16 = 512;
const REPORTS: u16 = CPM_REPORT | MAIL_REPORT;

const ENV: u16 = RECIPIENT | MESSAGE | RESPONSE | TRANSACTION;
const RCPT: u16 = RECIPIENT | MESSAGE | RESPONSE;
const MAIL: u16 = MESSAGE | RESPONSE | TRANSACTION;

/// One phase of the rule engine.
pub struct PhaseDef {
    pub name: &'static str,
    pub bit: u16,
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
    Address,
    SipReply,
    Encoding,
    EnvelopeFrom,
    Notify,
    ReportToken,
    DsnAction,
    DsnStatus,
    Diagnostic,
    MdnDisposition,
    ImdnStatus,
}

impl Action {
    pub const ALL: [Action; 31] = [
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
        Action::Address,
        Action::SipReply,
        Action::Encoding,
        Action::EnvelopeFrom,
        Action::Notify,
        Action::ReportToken,
        Action::DsnAction,
        Action::DsnStatus,
        Action::Diagnostic,
        Action::MdnDisposition,
        Action::ImdnStatus,
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
            Action::Address => "address",
            Action::SipReply => "sip_reply",
            Action::Encoding => "encoding",
            Action::EnvelopeFrom => "envelope_from",
            Action::Notify => "notify",
            Action::ReportToken => "report_token",
            Action::DsnAction => "dsn_action",
            Action::DsnStatus => "dsn_status",
            Action::Diagnostic => "diagnostic",
            Action::MdnDisposition => "mdn_disposition",
            Action::ImdnStatus => "imdn_status",
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
            Action::Encoding => Some(&["7bit", "8bit", "quoted-printable", "base64"]),
            Action::DsnAction => Some(&["delivered", "failed", "relayed", "delayed", "expanded"]),
            // RFC 5438 §10 (the schema): which status each notification may carry.
            Action::ImdnStatus => Some(&[
                "delivery delivered",
                "delivery failed",
                "delivery forbidden",
                "delivery error",
                "display displayed",
                "display forbidden",
                "display error",
                "processing processed",
                "processing stored",
                "processing forbidden",
                "processing error",
            ]),
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
            Action::Address => "the e-mail address that stands for this CPM address",
            Action::SipReply => {
                "answer the SIP request with this final response, e.g. `404 Not Found`"
            }
            Action::Encoding => {
                "Content-Transfer-Encoding of the mail body: `7bit`, `8bit`, `quoted-printable` or `base64`"
            }
            Action::EnvelopeFrom => "the reverse-path of MAIL FROM (\"\" for <>)",
            Action::Notify => "NOTIFY= of RCPT TO when the next hop offers DSN, e.g. `FAILURE`",
            Action::ReportToken => {
                "accept the recipient as iwf's own report address (b+<token>): the mail is a DSN/MDN for the message of that token, mapped by the mail_report phase"
            }
            Action::DsnAction => {
                "send a DSN (RFC 3464) to the original reverse-path with this Action: `delivered`, `failed`, `relayed`, `delayed` or `expanded`"
            }
            Action::DsnStatus => "the DSN's Status: (RFC 3463 code, e.g. `2.0.0`)",
            Action::Diagnostic => "the DSN's Diagnostic-Code: text (e.g. the SIP status)",
            Action::MdnDisposition => {
                "send an MDN (RFC 3798) to the Disposition-Notification-To address with this Disposition:, e.g. `manual-action/MDN-sent-automatically; displayed`"
            }
            Action::ImdnStatus => {
                "send an IMDN (RFC 5438) to the CPM sender: notification and status, e.g. `delivery delivered`, `display displayed`"
            }
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
        actions: &[
            Action::Uri,
            Action::Reject,
            Action::Mailbox,
            Action::ReportToken,
            Action::Stop,
        ],
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
    PhaseDef {
        name: "cpm_address",
        bit: CPM_ADDRESS,
        doc: "a CPM address (SIP/tel URI of a SIP request, CPIM or history list) → the e-mail address that stands for it",
        actions: &[Action::Address, Action::SipReply, Action::Stop],
    },
    PhaseDef {
        name: "cpm_message",
        bit: CPM_MESSAGE,
        doc: "SIP MESSAGE (text/plain, CPIM, RFC 5365 history) → the RFC 5322 mail and its envelope, or a SIP refusal",
        actions: &[
            Action::SetHeader,
            Action::AppendHeader,
            Action::RemoveHeader,
            Action::Encoding,
            Action::EnvelopeFrom,
            Action::Notify,
            Action::SipReply,
            Action::Stop,
        ],
    },
    PhaseDef {
        name: "cpm_response",
        bit: CPM_RESPONSE,
        doc: "the smarthost's SMTP outcome → the SIP final response to the MESSAGE",
        actions: &[Action::SipReply, Action::SetHeader, Action::Stop],
    },
    PhaseDef {
        name: "cpm_report",
        bit: CPM_REPORT,
        doc: "an IMDN from CPM (RFC 5438) for a message iwf sent → the DSN (RFC 3464) or MDN (RFC 3798) mail owed to the e-mail sender, or nothing",
        actions: &[
            Action::DsnAction,
            Action::DsnStatus,
            Action::Diagnostic,
            Action::MdnDisposition,
            Action::Stop,
        ],
    },
    PhaseDef {
        name: "mail_report",
        bit: MAIL_REPORT,
        doc: "a DSN or MDN mail for a message iwf sent as mail → the IMDN owed to the CPM sender, or nothing",
        actions: &[
            Action::ImdnStatus,
            Action::RequestUri,
            Action::SetHeader,
            Action::Stop,
        ],
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
    CpmNow,
    CpmUri,
    CpmScheme,
    CpmUser,
    CpmHost,
    CpmName,
    CpmRole,
    SipMethod,
    SipRequestUri,
    SipFromUri,
    SipFromName,
    SipToUri,
    SipCallId,
    SipDate,
    SipPriority,
    SipExpires,
    SipContentType,
    SipBodySize,
    SipSubject,
    SipTransport,
    SipSource,
    CpimPresent,
    CpimFromUri,
    CpimFromName,
    CpimTo,
    CpimDatetime,
    CpimSubject,
    CpimMessageId,
    CpimDispositions,
    ContentType,
    ContentCharset,
    ContentText,
    ContentSize,
    HistoryTo,
    HistoryCc,
    HistoryBcc,
    HistoryCount,
    TargetAddress,
    FromAddress,
    FromName,
    Token,
    NextHopSmtputf8,
    NextHop8bitmime,
    NextHopDsn,
    ThreadInReplyTo,
    ThreadReferences,
    SmtpCode,
    SmtpStatus,
    SmtpText,
    SmtpStage,
    SmtpFailure,
    ContentError,
    ImdnKind,
    ImdnStatus,
    ImdnMessageId,
    ImdnRecipientUri,
    ReportType,
    ReportAction,
    ReportStatus,
    ReportDisposition,
    ReportRecipient,
    OriginalRecipient,
    OriginalMailFrom,
    OriginalNotify,
    OriginalRet,
    OriginalDnt,
    OriginalDispositions,
    OriginalSipStatus,
    OriginalSenderUri,
    OriginalRecipientUri,
    OriginalImdnRoute,
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
    SipRequestHeader,
    CpimHeader,
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
pub static FIELDS: &[(&str, F, T, u16, &str)] = &[
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
        ENV | ADDRESS | REPORTS,
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
    (
        "now",
        F::CpmNow,
        T::Int,
        CPM,
        "the current time, Unix seconds",
    ),
    (
        "cpm.uri",
        F::CpmUri,
        T::Str,
        CPM_ADDRESS,
        "the CPM address being mapped (the URI inside any <>)",
    ),
    (
        "cpm.scheme",
        F::CpmScheme,
        T::Str,
        CPM_ADDRESS,
        "its scheme, lower case: sip, sips, tel, im",
    ),
    (
        "cpm.user",
        F::CpmUser,
        T::Str,
        CPM_ADDRESS,
        "its user part (sip) or number (tel), percent-decoded, parameters removed",
    ),
    (
        "cpm.host",
        F::CpmHost,
        T::Str,
        CPM_ADDRESS,
        "its host, lower case (absent for tel)",
    ),
    (
        "cpm.name",
        F::CpmName,
        T::Str,
        CPM_ADDRESS,
        "its display name, when it came with one",
    ),
    (
        "cpm.role",
        F::CpmRole,
        T::Str,
        CPM_ADDRESS,
        "where it came from: target (Request-URI), from, to, cc, bcc",
    ),
    (
        "sip.method",
        F::SipMethod,
        T::Str,
        CPM_MESSAGE,
        "method of the SIP request",
    ),
    (
        "sip.request_uri",
        F::SipRequestUri,
        T::Str,
        CPM_MESSAGE,
        "its Request-URI",
    ),
    (
        "sip.from_uri",
        F::SipFromUri,
        T::Str,
        CPM_MESSAGE,
        "URI of the SIP From header",
    ),
    (
        "sip.from_name",
        F::SipFromName,
        T::Str,
        CPM_MESSAGE,
        "display name of the SIP From header",
    ),
    (
        "sip.to_uri",
        F::SipToUri,
        T::Str,
        CPM_MESSAGE,
        "URI of the SIP To header",
    ),
    ("sip.call_id", F::SipCallId, T::Str, CPM_MESSAGE, "Call-ID"),
    (
        "sip.date",
        F::SipDate,
        T::Int,
        CPM_MESSAGE,
        "SIP Date as Unix seconds; absent when missing or unparsable",
    ),
    (
        "sip.priority",
        F::SipPriority,
        T::Str,
        CPM_MESSAGE,
        "SIP Priority, lower case (RFC 3261 §20.26)",
    ),
    (
        "sip.expires",
        F::SipExpires,
        T::Int,
        CPM_MESSAGE,
        "SIP Expires, seconds",
    ),
    (
        "sip.content_type",
        F::SipContentType,
        T::Str,
        CPM_MESSAGE,
        "type/subtype of the SIP body, lower case",
    ),
    (
        "sip.body_size",
        F::SipBodySize,
        T::Int,
        CPM_MESSAGE,
        "bytes of the SIP body",
    ),
    (
        "sip.subject",
        F::SipSubject,
        T::Str,
        CPM_MESSAGE,
        "SIP Subject",
    ),
    (
        "sip.transport",
        F::SipTransport,
        T::Str,
        CPM_MESSAGE,
        "transport the request came over: UDP, TCP, TLS",
    ),
    (
        "sip.source",
        F::SipSource,
        T::Str,
        CPM_MESSAGE,
        "sent-by of the top Via (host or host:port)",
    ),
    (
        "cpim.present",
        F::CpimPresent,
        T::Bool,
        CPM_MESSAGE,
        "the body is message/cpim (RFC 3862)",
    ),
    (
        "cpim.from_uri",
        F::CpimFromUri,
        T::Str,
        CPM_MESSAGE,
        "URI of CPIM From",
    ),
    (
        "cpim.from_name",
        F::CpimFromName,
        T::Str,
        CPM_MESSAGE,
        "display name of CPIM From",
    ),
    (
        "cpim.to",
        F::CpimTo,
        T::StrList,
        CPM_MESSAGE,
        "URIs of CPIM To",
    ),
    (
        "cpim.datetime",
        F::CpimDatetime,
        T::Int,
        CPM_MESSAGE,
        "CPIM DateTime as Unix seconds",
    ),
    (
        "cpim.subject",
        F::CpimSubject,
        T::Str,
        CPM_MESSAGE,
        "CPIM Subject",
    ),
    (
        "cpim.message_id",
        F::CpimMessageId,
        T::Str,
        CPM_MESSAGE,
        "imdn.Message-ID (RFC 5438)",
    ),
    (
        "cpim.dispositions",
        F::CpimDispositions,
        T::StrList,
        CPM_MESSAGE,
        "imdn.Disposition-Notification values, lower case",
    ),
    (
        "content.type",
        F::ContentType,
        T::Str,
        CPM_MESSAGE,
        "type/subtype of the content (the CPIM inner entity, else the SIP body), lower case",
    ),
    (
        "content.charset",
        F::ContentCharset,
        T::Str,
        CPM_MESSAGE,
        "its charset parameter, lower case",
    ),
    (
        "content.text",
        F::ContentText,
        T::Str,
        CPM_MESSAGE,
        "the content as text when it is text/* in UTF-8 or US-ASCII",
    ),
    (
        "content.size",
        F::ContentSize,
        T::Int,
        CPM_MESSAGE,
        "bytes of the content",
    ),
    (
        "history.to",
        F::HistoryTo,
        T::StrList,
        CPM_MESSAGE,
        "mail addresses of the RFC 5365 recipient-list-history entries with copyControl to",
    ),
    (
        "history.cc",
        F::HistoryCc,
        T::StrList,
        CPM_MESSAGE,
        "... with copyControl cc",
    ),
    (
        "history.bcc",
        F::HistoryBcc,
        T::StrList,
        CPM_MESSAGE,
        "... with copyControl bcc (never written into the mail)",
    ),
    (
        "history.count",
        F::HistoryCount,
        T::Int,
        CPM_MESSAGE,
        "entries in the history list, mapped or not",
    ),
    (
        "target.address",
        F::TargetAddress,
        T::Str,
        CPM_MESSAGE | CPM_RESPONSE,
        "the mail address the Request-URI maps to (the RCPT TO)",
    ),
    (
        "from.address",
        F::FromAddress,
        T::Str,
        CPM_MESSAGE,
        "the mail address the sender maps to (CPIM From, else SIP From)",
    ),
    (
        "from.name",
        F::FromName,
        T::Str,
        CPM_MESSAGE,
        "the sender's display name (CPIM From, else SIP From)",
    ),
    (
        "token",
        F::Token,
        T::Str,
        CPM_MESSAGE,
        "a fresh random token for this request (Message-ID, ENVID, bounce address)",
    ),
    (
        "next_hop.smtputf8",
        F::NextHopSmtputf8,
        T::Bool,
        CPM_MESSAGE,
        "the smarthost offers SMTPUTF8 (RFC 6531)",
    ),
    (
        "next_hop.eightbitmime",
        F::NextHop8bitmime,
        T::Bool,
        CPM_MESSAGE,
        "the smarthost offers 8BITMIME (RFC 6152)",
    ),
    (
        "next_hop.dsn",
        F::NextHopDsn,
        T::Bool,
        CPM_MESSAGE,
        "the smarthost offers DSN (RFC 3461)",
    ),
    (
        "thread.in_reply_to",
        F::ThreadInReplyTo,
        T::Str,
        CPM_MESSAGE,
        "Message-ID (no <>) of the mail this conversation started from, when known",
    ),
    (
        "thread.references",
        F::ThreadReferences,
        T::Str,
        CPM_MESSAGE,
        "References of that mail plus its Message-ID, each in <>, when known",
    ),
    (
        "smtp.code",
        F::SmtpCode,
        T::Int,
        CPM_RESPONSE,
        "the smarthost's reply code (to DATA, or to the command that failed); absent on a failure",
    ),
    (
        "smtp.status",
        F::SmtpStatus,
        T::Str,
        CPM_RESPONSE,
        "its enhanced status code (RFC 3463), e.g. 5.1.1",
    ),
    ("smtp.text", F::SmtpText, T::Str, CPM_RESPONSE, "its text"),
    (
        "smtp.stage",
        F::SmtpStage,
        T::Str,
        CPM_RESPONSE,
        "which step answered: connect, ehlo, starttls, mail, rcpt, data",
    ),
    (
        "smtp.failure",
        F::SmtpFailure,
        T::Str,
        CPM_RESPONSE,
        "timeout, connect or protocol; absent when a reply came",
    ),
    (
        "content.error",
        F::ContentError,
        T::Str,
        CPM_MESSAGE,
        "why the body cannot be taken: empty, unsupported or malformed; absent when it can",
    ),
    (
        "imdn.kind",
        F::ImdnKind,
        T::Str,
        CPM_REPORT,
        "the IMDN's notification: delivery, display or processing (RFC 5438 §7.2)",
    ),
    (
        "imdn.status",
        F::ImdnStatus,
        T::Str,
        CPM_REPORT,
        "its status: delivered, failed, forbidden, error, displayed, processed, stored",
    ),
    (
        "imdn.message_id",
        F::ImdnMessageId,
        T::Str,
        CPM_REPORT,
        "<message-id> of the IMDN: the imdn.Message-ID of the message iwf sent",
    ),
    (
        "imdn.recipient_uri",
        F::ImdnRecipientUri,
        T::Str,
        CPM_REPORT,
        "<recipient-uri> of the IMDN, when given",
    ),
    (
        "report.type",
        F::ReportType,
        T::Str,
        MAIL_REPORT,
        "delivery-status (DSN, RFC 3464) or disposition-notification (MDN, RFC 3798)",
    ),
    (
        "report.action",
        F::ReportAction,
        T::Str,
        MAIL_REPORT,
        "DSN Action: of the recipient (delivered, failed, relayed, expanded, delayed), lower case",
    ),
    (
        "report.status",
        F::ReportStatus,
        T::Str,
        MAIL_REPORT,
        "DSN Status: of the recipient (RFC 3463), e.g. 5.1.1",
    ),
    (
        "report.disposition",
        F::ReportDisposition,
        T::Str,
        MAIL_REPORT,
        "MDN disposition type (displayed, deleted, dispatched, processed, denied, failed), lower case",
    ),
    (
        "report.recipient",
        F::ReportRecipient,
        T::Str,
        MAIL_REPORT,
        "Final-Recipient: address of the report",
    ),
    (
        "original.recipient",
        F::OriginalRecipient,
        T::Str,
        REPORTS,
        "the original message's recipient on the other side: the RCPT TO of the mail (cpm_report) or the mail address the MESSAGE went to (mail_report)",
    ),
    (
        "original.mail_from",
        F::OriginalMailFrom,
        T::Str,
        CPM_REPORT,
        "reverse-path of the original mail (where a DSN goes)",
    ),
    (
        "original.notify",
        F::OriginalNotify,
        T::StrList,
        CPM_REPORT,
        "NOTIFY= of the original recipient (SUCCESS, FAILURE, DELAY, NEVER); empty when absent",
    ),
    (
        "original.ret",
        F::OriginalRet,
        T::Str,
        CPM_REPORT,
        "RET= of the original mail: FULL or HDRS",
    ),
    (
        "original.dnt",
        F::OriginalDnt,
        T::Str,
        CPM_REPORT,
        "the Disposition-Notification-To address of the original mail, when display was requested",
    ),
    (
        "original.dispositions",
        F::OriginalDispositions,
        T::StrList,
        REPORTS,
        "the IMDN dispositions the original message requested (positive-delivery, negative-delivery, display, processing)",
    ),
    (
        "original.sip_status",
        F::OriginalSipStatus,
        T::Int,
        REPORTS,
        "the SIP final status of the original message (the one iwf got, or the one it answered); absent while unknown",
    ),
    (
        "original.sender_uri",
        F::OriginalSenderUri,
        T::Str,
        MAIL_REPORT,
        "the CPM sender of the original MESSAGE (SIP From URI)",
    ),
    (
        "original.recipient_uri",
        F::OriginalRecipientUri,
        T::Str,
        MAIL_REPORT,
        "the URI the original MESSAGE was sent to (its Request-URI)",
    ),
    (
        "original.imdn_route",
        F::OriginalImdnRoute,
        T::Str,
        MAIL_REPORT,
        "the top IMDN-Record-Route URI of the original MESSAGE, when it had one (RFC 5438 §9)",
    ),
];

/// name, id, result type, phases, whether the argument is a header name, doc
pub static FIELD_FNS: &[(&str, Fn, T, u16, &str)] = &[
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
    (
        "sip.header",
        Fn::SipRequestHeader,
        T::Str,
        CPM_MESSAGE,
        "first value of a header of the incoming SIP request",
    ),
    (
        "cpim.header",
        Fn::CpimHeader,
        T::Str,
        CPM_MESSAGE,
        "first value of a CPIM header (name as written, e.g. `imdn.Message-ID`)",
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
