//! # iwf — e-mail ⇄ CPM interworking function
//!
//! A built-in ESMTP/LMTP server receives mail; a rule engine maps each mail to SIP requests
//! (pager mode MESSAGE, or INVITE + MSRP in Large Message Mode); a SIP back end sends them;
//! the outcome becomes the SMTP reply — 250 only after a SIP 2xx.
//!
//! ## Data flow
//!
//! ```text
//! smtp (session, limits) ─► envelope + raw mail
//!        │ RCPT TO          mapper::resolve_recipient   (phases: address, recipient)
//!        │ end of DATA      mail (mail-parser) ─► mapper::plan_mail (phase: message)
//!        ▼                                   ─► plan::Delivery per recipient
//! sip / msrp back ends ─► outcome::Outcome ─► mapper::respond (phase: response)
//!                                         ─► mapper::aggregate (phase: transaction) ─► reply
//! ```
//!
//! The other direction ([`reverse`], CPM → e-mail): the SIP sockets also answer MESSAGE to
//! mail users; phases `cpm_address`, `cpm_message`, `cpm_response` turn it into a mail that
//! [`smtp_client`] hands to the smarthost, and the smarthost's reply into the SIP answer
//! (202 only after its 250).
//!
//! Every mapping decision is a rule in `rules/` ([`ruleset`], compiled from the [`dsl`]);
//! Rust provides the mechanisms: parsing ([`envelope`], [`mail`]), rendering ([`render`]:
//! SIP on rsipstack's types, CPIM, resource-lists, with one header [`render::encoder`]
//! that refuses CR/LF), and the protocol front and back ends.
//!
//! ```
//! use iwf::{mail_to_cpm::dryrun, ids, ruleset, envelope::Rcpt};
//! let rules = ruleset::load(std::path::Path::new("rules"), 1).unwrap();
//! let ids = ids::SequentialIds::new();
//! let run = dryrun::run(&rules, b"From: a@mail.example.org\r\nTo: +15551234567@cpm.example.net\r\n\r\nhi\r\n",
//!     &dryrun::Options { mail_from: None, rcpts: vec![], client: Default::default(),
//!         now: ids::fixed_now(), elapsed: 0, ids: &ids, explain: false, chunk_size: 2048 });
//! assert!(run.deliveries[0].request.starts_with("MESSAGE tel:+15551234567 SIP/2.0\r\n"));
//! ```

pub mod clock;
pub mod config;
pub mod demo;
pub mod dsl;
pub mod dsn;
pub mod envelope;
pub mod ids;
pub mod large;
pub mod logging;
pub mod mail;
pub mod mail_to_cpm;
pub mod mapper;
pub mod metrics;
pub mod msrp;
pub mod outcome;
pub mod peer_memory;
pub mod plan;
pub mod reload;
pub mod render;
pub mod reply;
pub mod reports;
pub mod reverse;
pub mod ruleset;
pub mod selftest;
pub mod server;
pub mod shutdown;
pub mod sip;
pub mod smarthost;
pub mod smtp;
pub mod smtp_client;
pub mod store;
pub mod tls;
