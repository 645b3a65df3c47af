//! Codecs for the reports that cross the protocol border (issue 11): pure functions, no I/O,
//! no clock (times are passed in), bounded, never panicking on any input.
//!
//! - [`imdn`]: the IMDN XML document (RFC 5438 §7.2.1.1, schema §10) — parse, render — and
//!   the message/cpim body that carries it (§7.2.1).
//! - [`mail_report`]: a `multipart/report` mail arriving by SMTP — DSN (RFC 3464) or MDN
//!   (RFC 3798) — parsed into plain fields.
//! - [`mdn`]: an MDN mail (RFC 3798 §3) built for a `displayed` IMDN. DSNs are built by
//!   [`crate::dsn::build_dsn`].
//!
//! Which report becomes which is decided by the rules; these modules only read and write.

pub mod imdn;
pub mod mail_report;
pub mod mdn;
