//! Reports across the protocol border (mapping reference §3.3, §5.2, §5.3):
//!
//! ```text
//! mail → CPM:  gateway sends MESSAGE with imdn.Message-ID ─► records::SentRecord (store)
//!              IMDN MESSAGE from CPM ─► (UAS) correlate ─► phase cpm_report ─► DSN / MDN ─► smarthost ─► 200
//! CPM → mail:  UAS sends mail from b+<token>@iwf ─► records::MailedRecord (store)
//!              DSN / MDN mail for b+<token> ─► (gateway) correlate ─► phase mail_report ─► IMDN MESSAGE ─► 2xx ─► 250
//! ```
//!
//! Uncorrelated reports are accepted and dropped (never a report about a report); each
//! report is sent at most once however often its trigger arrives ([`service::Reports::once`]).
//!
//! | file | what |
//! |---|---|
//! | [`imdn`] | the IMDN XML document (RFC 5438 §7.2.1.1, schema §10): parse, render, and the message/cpim body that carries it |
//! | [`mail_report`] | a `multipart/report` mail (DSN, RFC 3464; MDN, RFC 3798) parsed into plain fields |
//! | [`mdn`] | an MDN mail (RFC 3798 §3); DSNs are built by [`crate::reports::dsn::build_dsn`] |
//! | [`records`] | the correlation records and their store fields |
//! | [`phases`] | the `cpm_report` and `mail_report` phases (pure) |
//! | [`from_cpm`] / [`from_mail`] | an IMDN → DSN/MDN mails; a DSN/MDN mail → an IMDN (plan pure, send async) |
//! | [`service`] | store access, the once-only guard |
//! | `documents` | parsed reports → phase facts; decisions → DSN / MDN / IMDN documents |
//! | [`selftest`] | the `cpm_report:` / `mail_report:` self-test cases |
//! | [`dryrun`] | `iwf map --record`, snapshots |
//!
//! The codecs are pure functions (no I/O, no clock: times are passed in), bounded, and
//! never panic on any input; which report becomes which is decided by the rules.

mod documents;
pub mod dryrun;
pub(crate) mod dsn;
pub(crate) mod from_cpm;
pub(crate) mod from_mail;
pub mod imdn;
pub mod mail_report;
pub(crate) mod mdn;
pub(crate) mod phases;
pub(crate) mod records;
pub(crate) mod selftest;
pub(crate) mod service;

pub use documents::is_imdn;
pub use from_cpm::imdn_from_cpm;
pub use from_mail::inbound_mail;
pub use service::Reports;
