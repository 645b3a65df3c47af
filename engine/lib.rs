//! # iwf — e-mail ⇄ CPM interworking function
//!
//! Two pipelines over shared protocol mechanisms. Each has the same shape: a pure *plan*
//! step (input + one rule-set generation → what to send, or refusals), an async *dispatch*
//! step (send through a back end, retry in another form when a rule says so), and a pure
//! *answer* step (outcomes → the reply owed to the side that is waiting).
//!
//! ```text
//! mail → CPM  (mail_to_cpm/)
//!   smtp::Session ──RCPT──► plan::route              phases address, recipient
//!                 ──DATA──► plan::plan               phase message   → Route per RCPT, Delivery per request
//!                           dispatch::Dispatch::one  Backend::send (Network: SIP MESSAGE | INVITE + MSRP;
//!                                                    dryrun::Recorder for `iwf map`), phase response,
//!                                                    plan::retry builds the other form from the plan
//!                           answer::answer           phase transaction → per-RCPT replies, DATA reply,
//!                                                    DSN owed, records to keep (250 only after a 2xx)
//!
//! CPM → mail  (cpm_to_mail/)
//!   sip listener ──MESSAGE──► plan::plan             phases cpm_address, cpm_message → mail + envelope
//!                             uas (dispatch)         smtp_client to the smarthost (plan again with its caps)
//!                             answer::respond        phase cpm_response → SIP final response
//!                                                    (2xx only after the smarthost's 250)
//!
//! reports across the border  (reports/)
//!   IMDN from CPM ──► from_cpm   phase cpm_report  → DSN / MDN mail   (records in store/)
//!   DSN / MDN mail ──► from_mail phase mail_report → IMDN MESSAGE
//! ```
//!
//! | folder | what |
//! |---|---|
//! | [`mail_to_cpm`] | the gateway (SMTP handler), plan / dispatch / answer, large mode, the dry run, the peer memory |
//! | [`cpm_to_mail`] | the SIP UAS for mail users, its plan and answer, MSRP sessions in, mail threads |
//! | [`reports`] | IMDN ⇄ DSN / MDN: codecs, correlation records, the report phases |
//! | [`smtp`], [`smtp_client`], [`sip`], [`msrp`] | protocol mechanisms: ESMTP/LMTP server (socket-free session + driver), smarthost client, SIP back end and answerer, MSRP codec/client/receiver |
//! | [`dsl`], [`ruleset`] | the rule language; rule files, phases as data, running a phase, self-tests |
//! | [`render`] | header encoder, SIP requests on rsipstack's types, CPIM, resource-lists, SDP |
//! | [`store`] | delivery and correlation records: memory, SQLite, Redis |
//! | [`ops`] | config, serve, reload, metrics, logging, shutdown, the demo endpoint |
//! | [`clock`], [`ids`] | the only sources of time and randomness, injected everywhere |
//! | [`tls`] | one rustls server/client configuration and one plain/TLS stream |
//!
//! Every mapping decision is a rule in `rules/` ([`ruleset`], compiled from the [`dsl`]);
//! Rust provides the mechanisms. Decisions are pure functions of their inputs — the clock's
//! reading and the ids are passed in — and sockets live in thin async layers, so
//! `iwf map` runs the plan, dispatch and answer code of `iwf serve` with a back end that
//! records instead of sending:
//!
//! ```
//! use iwf::{mail_to_cpm::dryrun, ids, ruleset};
//! let rules = ruleset::load(std::path::Path::new("rules"), 1).unwrap();
//! let ids = ids::SequentialIds::new();
//! let run = dryrun::run(&rules, b"From: a@mail.example.org\r\nTo: +15551234567@cpm.example.net\r\n\r\nhi\r\n",
//!     &dryrun::Options { mail_from: None, rcpts: vec![], client: Default::default(),
//!         now: ids::fixed_now(), elapsed: 0, ids: &ids, explain: false, chunk_size: 2048 });
//! assert!(run.deliveries[0].request.starts_with("MESSAGE tel:+15551234567 SIP/2.0\r\n"));
//! ```

pub mod clock;
pub mod cpm_to_mail;
pub mod dsl;
pub mod ids;
pub mod mail_to_cpm;
pub mod msrp;
pub mod ops;
pub mod render;
pub mod reports;
pub mod ruleset;
pub mod sip;
pub mod smtp;
pub mod smtp_client;
pub mod store;
pub mod tls;
