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

pub mod dryrun;
pub mod from_cpm;
pub mod from_mail;
mod glue;
pub mod phases;
pub mod records;
pub mod service;

pub use from_cpm::imdn_from_cpm;
pub use from_mail::inbound_mail;
pub use glue::is_imdn;
pub use service::Reports;
