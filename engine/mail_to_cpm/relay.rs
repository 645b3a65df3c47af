//! The mail → CPM direction's mail side: recipients a `mailbox` rule sends on as mail
//! (postmaster), and the DSN a positive reply promises, both through the smarthost.

use chrono::{DateTime, Utc};

use crate::smtp::envelope::Envelope;
use crate::smtp::replies;
use crate::smtp::reply::Reply;

/// Where mail goes out.
pub struct Smarthost<'a> {
    /// `host:port`; without one, relayed recipients get 451 and a transaction whose
    /// recipients partly failed for good is answered with the first permanent failure
    /// instead of 250 + DSN.
    pub address: Option<&'a str>,
    /// Our name in DSNs (Reporting-MTA) and in EHLO to the smarthost.
    pub hostname: &'a str,
}

impl Smarthost<'_> {
    /// Relays the mail as it is to the mailboxes the `mailbox` rules named, in one
    /// transaction; one reply per relayed recipient (`(envelope index, mailbox)`).
    pub async fn relay(
        &self,
        envelope: &Envelope,
        relayed: &[(usize, String)],
        raw: &[u8],
    ) -> Vec<(usize, Reply)> {
        let each = |reply: &dyn Fn(&str) -> Reply| -> Vec<(usize, Reply)> {
            relayed
                .iter()
                .map(|(i, _)| (*i, reply(&envelope.rcpts[*i].address)))
                .collect()
        };
        let Some(smarthost) = self.address else {
            tracing::error!("a rule relays a recipient as mail, but no smarthost is configured");
            return each(&replies::relay_without_smarthost);
        };
        let mut to: Vec<&str> = relayed.iter().map(|(_, m)| m.as_str()).collect();
        to.sort_unstable();
        to.dedup();
        let from = envelope.mail_from.address.as_str();
        match crate::smtp_client::smarthost::send(smarthost, self.hostname, from, &to, raw.to_vec())
            .await
        {
            Ok(()) => {
                tracing::info!(smarthost = %smarthost, to = ?to, "relayed as mail");
                each(&replies::relayed)
            }
            Err(e) if e.is_permanent() => {
                tracing::warn!(smarthost = %smarthost, "relay refused: {e}");
                each(&|rcpt| replies::relay_refused(rcpt, &e))
            }
            Err(e) => {
                tracing::warn!(smarthost = %smarthost, "relay failed: {e}");
                each(&|rcpt| replies::relay_failed(rcpt, &e))
            }
        }
    }

    /// Sends the DSN a positive transaction reply promises; the reply stands only if the
    /// smarthost took it (nothing is acknowledged that would then be lost).
    ///
    /// `failures_owed`: the transaction rules asked for a DSN of the permanent failures;
    /// `relayed[i]`: recipient `i` is owed an `Action: relayed` report.
    #[allow(clippy::too_many_arguments)]
    pub async fn hand_off_dsn(
        &self,
        envelope: &Envelope,
        per_recipient: &[Reply],
        relayed: &[bool],
        failures_owed: bool,
        raw: &[u8],
        reply: Reply,
        now: DateTime<Utc>,
    ) -> Reply {
        let failed: Vec<crate::reports::dsn::Failed> = envelope
            .rcpts
            .iter()
            .zip(per_recipient)
            .filter(|(r, rep)| {
                failures_owed && rep.is_permanent() && crate::reports::dsn::wanted(envelope, r)
            })
            .map(|(rcpt, reply)| crate::reports::dsn::Failed { rcpt, reply })
            .collect();
        let relays: Vec<crate::reports::dsn::Failed> = envelope
            .rcpts
            .iter()
            .zip(per_recipient)
            .zip(relayed)
            .filter(|(_, owed)| **owed)
            .map(|((rcpt, reply), _)| crate::reports::dsn::Failed { rcpt, reply })
            .collect();
        if (failed.is_empty() && relays.is_empty()) || !reply.is_positive() {
            return reply;
        }
        let Some(smarthost) = self.address else {
            if let Some(first) = failed.first() {
                let first = first.reply.clone();
                tracing::warn!(reply = %first, "no smarthost for the DSN: answering with the permanent failure instead");
                return first;
            }
            tracing::warn!("no smarthost: the relayed DSN NOTIFY=SUCCESS asked for is not sent");
            return reply;
        };
        let dsn =
            crate::reports::dsn::build_report(self.hostname, envelope, &failed, &relays, raw, now);
        match crate::reports::dsn::send(smarthost, self.hostname, &envelope.mail_from.address, dsn)
            .await
        {
            Ok(()) => {
                tracing::info!(smarthost = %smarthost, failed = failed.len(), relayed = relays.len(), "DSN handed to the smarthost");
                reply
            }
            // A relayed-only report is a courtesy (RFC 3461 §5.2.2): the mail stays delivered.
            Err(e) if failed.is_empty() => {
                tracing::warn!(smarthost = %smarthost, "relayed DSN not handed off: {e}");
                reply
            }
            Err(e) => {
                tracing::warn!(smarthost = %smarthost, "DSN hand-off failed: {e}");
                replies::dsn_not_handed_off()
            }
        }
    }
}
