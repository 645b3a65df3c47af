//! Tests against real peers: the real `iwf` binary (`iwf serve` / `iwf demo`) on 127.0.0.1
//! with SIPp as the CPM side, swaks and Python smtplib as mail clients, a private Postfix
//! as the relaying MTA in front, and many parallel raw SMTP sessions.
//!
//! Every test bounds every wait, kills what it starts (the [`harness::Proc`] guard), uses
//! only loopback, and prints "skipped: X not installed" and passes when a peer is missing
//! (`.ci/run` installs them all, and checks they are there, so in CI they run).
//!
//! | module | peers |
//! |---|---|
//! | [`clients`] | swaks, smtplib → `iwf demo` (its in-process endpoint answers 200) |
//! | [`sip_outcomes`] | smtplib → `iwf serve` → SIPp UAS over UDP and TCP, one status each |
//! | [`postfix`] | smtplib → Postfix → `iwf serve` → SIPp; bounces read by an aiosmtpd sink |
//! | [`exim`] | smtplib → a private Exim (several recipients per transaction, DSN on) → `iwf serve` → in-process answerer; bounces at an aiosmtpd sink |
//! | [`mixed`] | smtplib over SMTP and LMTP → `iwf serve` → in-process answerer, per-recipient answers |
//! | [`cpm_to_mail`] | SIPp UAC, baresip (direct and through Kamailio), a Python MSRP sender → `iwf serve` → scripted aiosmtpd smarthost (250/4xx/5xx/silent) or a Postfix mailbox |
//! | [`baresip`] | smtplib → `iwf serve` → baresip, a real text-only SIP UA (415 to CPIM, 488 to MSRP); DSNs at an aiosmtpd sink |
//! | [`concurrency`] | 64 raw SMTP sessions → `iwf serve` → SIPp or the in-process answerer |
//! | [`store`] | raw SMTP and Postfix → `iwf serve` (SQLite / redis-server) → in-process answerer; kill -9 |
//! | [`reports`] | smtplib → `iwf serve` (SQLite) → SIPp sending IMDNs back → DSN/MDN through a Postfix mailbox; SIPp UAC → iwf → Postfix (its own DSN back to iwf) and smtplib DSN/MDN → iwf → SIPp receiving the IMDNs; kill -9; a Python UAS whose IMDN overtakes its 200 |
//! | [`fault_matrix`] | smtplib → Postfix → `iwf serve` → a misbehaving SIP peer per row (bench/fault_matrix.sh, small) |

mod baresip;
mod clients;
mod concurrency;
mod cpm_to_mail;
mod exim;
mod fault_matrix;
mod harness;
mod mixed;
mod postfix;
mod reports;
mod sip_outcomes;
mod store;
