//! The UAS on iwf's SIP listeners: answers OPTIONS, refuses methods it does not take (405),
//! and turns MESSAGE into a mail for the smarthost, answering only after the smarthost's
//! reply to DATA. Also the dry run behind `iwf map --sip`.
//!
//! Retransmissions: rsipstack ends a non-INVITE server transaction as soon as it answers,
//! so a UDP retransmission arriving later would look like a new request. The UAS keeps the
//! answer per transaction (top Via branch, Call-ID, CSeq) for 64·T1 (RFC 3261 §17.2.2,
//! Timer J) and sends it again instead of sending the mail twice; a retransmission that
//! arrives while the mail is still on its way is absorbed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono::Utc;
use rsipstack::sip;
use serde::Serialize;
use tokio::sync::Semaphore;

use super::{Ctx, Incoming, SipAnswer, ThreadStore, accept, complete, plan, respond};
use crate::clock::Clock;
use crate::ids::Ids;
use crate::ruleset::RuleSet;
use crate::ruleset::run::Fired;
use crate::smtp_client::{self, Caps};

/// How the UAS runs.
#[derive(Debug, Clone)]
pub struct UasConfig {
    /// `host:port` of the smarthost.
    pub smarthost: Option<String>,
    /// Our name in EHLO.
    pub helo: String,
    /// Longest wait for the smarthost, from connecting to its reply to DATA (inside Timer F).
    pub smtp_timeout: Duration,
    /// MESSAGEs in delivery at once; beyond, 503 with Retry-After.
    pub max_in_flight: usize,
    /// How long an answer is kept for retransmissions (Timer J = 64·T1).
    pub answer_cache: Duration,
    /// Large Message Mode: longest silence of the MSRP sender in the middle of a message;
    /// then the message fails (failure REPORT, no mail). RFC 4975's 30 s transaction
    /// timeout by default.
    pub msrp_idle: Duration,
}

impl Default for UasConfig {
    fn default() -> Self {
        UasConfig {
            smarthost: None,
            helo: "localhost".into(),
            smtp_timeout: Duration::from_secs(20),
            max_in_flight: 512,
            answer_cache: Duration::from_secs(32),
            msrp_idle: Duration::from_secs(30),
        }
    }
}

/// The request handler.
pub struct Uas {
    pub rules: Arc<ArcSwap<RuleSet>>,
    pub ids: Arc<dyn Ids>,
    /// Wall time of the rules (`cpm_now`), Date: of the mails; the answer cache and the
    /// MSRP session deadlines run on its monotonic time.
    pub clock: Arc<dyn Clock>,
    pub threads: Arc<dyn ThreadStore>,
    pub config: UasConfig,
    in_flight: Semaphore,
    answers: Mutex<HashMap<String, (tokio::time::Instant, Option<SipAnswer>)>>,
    /// Large Message Mode sessions in progress.
    pub sessions: super::large::Sessions,
    /// The report loop: records of mails that owe IMDNs, and IMDNs that owe DSN/MDN mails.
    /// Without it no record is kept and an IMDN is answered 200 and dropped.
    pub reports: Option<Arc<crate::reports::Reports>>,
}

impl Uas {
    pub fn new(
        rules: Arc<ArcSwap<RuleSet>>,
        ids: Arc<dyn Ids>,
        clock: Arc<dyn Clock>,
        threads: Arc<dyn ThreadStore>,
        config: UasConfig,
    ) -> Uas {
        Uas {
            rules,
            ids,
            clock,
            threads,
            in_flight: Semaphore::new(config.max_in_flight.max(1)),
            config,
            answers: Mutex::new(HashMap::new()),
            sessions: Default::default(),
            reports: None,
        }
    }

    /// The same UAS, taking part in the report loop.
    pub fn with_reports(mut self, reports: Arc<crate::reports::Reports>) -> Uas {
        self.reports = Some(reports);
        self
    }

    /// Answers one request (ACK gets nothing: `None`).
    pub async fn handle(&self, inc: Incoming) -> Option<SipAnswer> {
        let rules = self.rules.load_full();
        let method = inc.method.to_ascii_uppercase();
        if method == "BYE" {
            return Some(self.sessions.bye(inc.header("Call-ID").unwrap_or("")).await);
        }
        if method != "MESSAGE" {
            return answer_other(&rules, &method);
        }
        let Ok(_permit) = self.in_flight.try_acquire() else {
            return Some(
                SipAnswer::new(503, "Service Unavailable").with_header("Retry-After", "5"),
            );
        };
        Some(self.message(&rules, &inc).await)
    }

    pub(crate) async fn message(&self, rules: &RuleSet, inc: &Incoming) -> SipAnswer {
        let ctx = Ctx {
            now: self.clock.now(),
            token: self.ids.token(),
            explain: false,
            threads: Some(&*self.threads),
        };
        let content = super::content::parse(inc.header("Content-Type"), &inc.body, &accept(rules));
        // An IMDN (RFC 5438 §7.1.2) is a report about a message iwf sent, not a message
        // for a mail user: it goes to the report loop.
        if let Ok(c) = &content
            && crate::reports::is_imdn(c)
        {
            return match &self.reports {
                Some(r) => crate::reports::imdn_from_cpm(r, rules, &*self.ids, &c.bytes).await,
                None => {
                    tracing::info!(uri = %inc.request_uri, "IMDN without the report loop: answered 200 and dropped");
                    SipAnswer::new(200, "OK")
                }
            };
        }
        // Refusals that need no smarthost come first (and cost no connection).
        let (target, record) = match plan(rules, inc, &Caps::default(), &ctx).result {
            Ok(p) => {
                let record = match (&self.reports, &content) {
                    (Some(_), Ok(c)) => c.cpim.as_deref().and_then(|cpim| {
                        crate::reports::records::MailedRecord::of(
                            inc,
                            cpim,
                            &ctx.token,
                            &p.envelope.rcpt,
                            p.message_id.as_deref(),
                        )
                    }),
                    _ => None,
                };
                (p.envelope.rcpt, record)
            }
            Err(a) => {
                tracing::info!(status = a.status, uri = %inc.request_uri, "MESSAGE refused");
                return a;
            }
        };
        // The record the reports about this mail will need, kept before the mail leaves (a
        // DSN can come back within milliseconds).
        if let (Some(reports), Some(rec)) = (&self.reports, &record)
            && let Err(e) = reports.keep_mailed(rec).await
        {
            tracing::warn!(uri = %inc.request_uri, "MESSAGE not taken, its report record cannot be kept: {e}");
            return SipAnswer::new(503, "Service Unavailable").with_header("Retry-After", "30");
        }
        let mut planned = None;
        let outcome = smtp_client::deliver(
            self.config.smarthost.as_deref(),
            &self.config.helo,
            self.config.smtp_timeout,
            |caps| {
                let p = plan(rules, inc, caps, &ctx).result?;
                let env = p.envelope.clone();
                let msg = p.message.clone();
                planned = Some(p);
                Ok((env, msg))
            },
        )
        .await;
        let outcome = match outcome {
            Ok(o) => o,
            Err(a) => return a,
        };
        let answer = respond(rules, &outcome, Some(&target), self.clock.now(), None);
        // Not taken: a late DSN about it (the smarthost may have queued it after all) must
        // not become a negative IMDN (RFC 5438 §12.1.3.1).
        if answer.status / 100 != 2
            && let (Some(reports), Some(mut rec)) = (&self.reports, record)
        {
            rec.sip_status = Some(answer.status);
            if let Err(e) = reports.keep_mailed(&rec).await {
                tracing::warn!("report record not updated: {e}");
            }
        }
        tracing::info!(
            rcpt = %target,
            smtp = %outcome,
            status = answer.status,
            "MESSAGE to mail"
        );
        if answer.status / 100 == 2
            && let Some(p) = planned
            && let (Some(conv), Some(id)) = (p.conversation, p.message_id)
        {
            let references = self
                .threads
                .lookup(&conv)
                .map(|t| {
                    if t.references.is_empty() {
                        format!("<{}>", t.message_id)
                    } else {
                        format!("{} <{}>", t.references, t.message_id)
                    }
                })
                .unwrap_or_default();
            self.threads.remember(
                &conv,
                super::Thread {
                    message_id: id,
                    references,
                },
            );
        }
        answer
    }

    /// Whether this transaction was seen: `Some(Some(answer))` to resend, `Some(None)` while
    /// it is being handled, `None` for a new one (now marked as being handled).
    fn seen(&self, key: &str) -> Option<Option<SipAnswer>> {
        let mut g = self.answers.lock().ok()?;
        let now = self.clock.instant();
        let keep = self.config.answer_cache;
        if g.len() > 1024 {
            g.retain(|_, (t, a)| a.is_none() || now.duration_since(*t) < keep);
        }
        match g.get(key) {
            Some((t, a)) if a.is_none() || now.duration_since(*t) < keep => Some(a.clone()),
            _ => {
                g.insert(key.to_string(), (now, None));
                None
            }
        }
    }

    fn answered(&self, key: &str, a: &SipAnswer) {
        if let Ok(mut g) = self.answers.lock() {
            g.insert(key.to_string(), (self.clock.instant(), Some(a.clone())));
        }
    }
}

/// The answer to a request other than MESSAGE (`None` for ACK).
pub fn answer_other(rules: &RuleSet, method: &str) -> Option<SipAnswer> {
    match method.to_ascii_uppercase().as_str() {
        "ACK" => None,
        // INVITEs are answered at once (large.rs); rsipstack answers a CANCEL that matches
        // an INVITE transaction itself (200, no effect: RFC 3261 §9.2). One that reaches us
        // matches no transaction: 481.
        "CANCEL" | "BYE" => Some(SipAnswer::new(481, "Call/Transaction Does Not Exist")),
        "OPTIONS" => Some(
            SipAnswer::new(200, "OK")
                .with_header("Allow", super::ALLOW)
                .with_header("Accept", &accept(rules).join(", ")),
        ),
        _ => Some(complete(SipAnswer::new(405, "Method Not Allowed"), rules)),
    }
}

/// The transaction key of RFC 3261 §17.2.3 (branch, sent-by, method) plus Call-ID and CSeq.
fn transaction_key(inc: &Incoming) -> String {
    let via = inc.header("Via").unwrap_or("");
    format!(
        "{}|{}|{}|{}",
        via,
        inc.header("Call-ID").unwrap_or(""),
        inc.header("CSeq").unwrap_or(""),
        inc.method
    )
}

/// Serves rsipstack's incoming transactions with `uas`.
pub async fn serve(mut incoming: rsipstack::transaction::TransactionReceiver, uas: Arc<Uas>) {
    while let Some(mut tx) = incoming.recv().await {
        let uas = uas.clone();
        tokio::spawn(async move {
            let transport = tx
                .connection
                .as_ref()
                .and_then(|c| c.get_addr().r#type)
                .map(|t| t.to_string().to_ascii_uppercase())
                .unwrap_or_else(|| "UDP".into());
            let inc = Incoming::from_request(&tx.original, &transport);
            if inc.method.eq_ignore_ascii_case("INVITE") {
                super::large::invite(uas, tx, inc).await;
                return;
            }
            let key = transaction_key(&inc);
            let answer = if inc.method.eq_ignore_ascii_case("MESSAGE") {
                match uas.seen(&key) {
                    Some(Some(a)) => Some(a),
                    Some(None) => return,
                    None => {
                        let a = uas.handle(inc).await;
                        if let Some(a) = &a {
                            uas.answered(&key, a);
                        }
                        a
                    }
                }
            } else {
                uas.handle(inc).await
            };
            let Some(a) = answer else { return };
            let mut headers = Vec::new();
            for (n, v) in &a.headers {
                match crate::render::encoder::header(n, v) {
                    Ok((n, v)) => headers.push(sip::headers::make_header(&n, v)),
                    Err(e) => tracing::warn!("response header dropped: {e}"),
                }
            }
            tag_to(&mut tx);
            let status = sip::StatusCode::from(a.status);
            if let Err(e) = tx.reply_with(status, headers, None).await {
                tracing::debug!("SIP response not sent: {e}");
            }
        });
    }
}

/// Adds our To tag as text: rsip would write the To URI again from its typed form,
/// percent-encoding the `%` of `alice%40…` a second time.
pub(crate) fn tag_to(tx: &mut rsipstack::transaction::transaction::Transaction) {
    let tag = rsipstack::transaction::random_text(10);
    for h in tx.original.headers.iter_mut() {
        if let sip::Header::To(to) = h {
            let raw = to.to_string();
            let raw = raw.strip_prefix("To:").unwrap_or(&raw).trim().to_string();
            if !raw.to_ascii_lowercase().contains(";tag=") {
                *h = sip::Header::To(format!("{raw};tag={tag}").into());
            }
        }
    }
}

/// What `iwf map --sip` prints.
#[derive(Debug, Serialize)]
pub struct DryRun {
    /// `MAIL FROM` / `RCPT TO` lines with their parameters, when a mail would be sent.
    pub envelope: Option<Vec<String>>,
    /// The RFC 5322 mail.
    pub mail: Option<String>,
    /// The SIP response that refuses the request, or the one a 250 from the smarthost
    /// would give.
    pub response: String,
    pub explain: Vec<Fired>,
    /// An IMDN (a report about a message iwf sent): what it becomes (engine/reports).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<crate::reports::dryrun::ReportDryRun>,
}

/// Maps a SIP request (wire text) as the UAS would, for a next hop with `caps`, assuming the
/// smarthost answers DATA with 250.
pub fn dry_run(
    rules: &RuleSet,
    wire: &[u8],
    caps: &Caps,
    token: String,
    now: chrono::DateTime<Utc>,
    explain: bool,
) -> DryRun {
    dry_run_with_record(rules, wire, caps, token, now, explain, None)
}

/// [`dry_run`]; an IMDN is mapped against `record`, the correlation record of the message
/// it reports on (as `iwf store get` shows it).
pub fn dry_run_with_record(
    rules: &RuleSet,
    wire: &[u8],
    caps: &Caps,
    token: String,
    now: chrono::DateTime<Utc>,
    explain: bool,
    record: Option<&crate::store::Fields>,
) -> DryRun {
    let inc = match Incoming::parse(wire) {
        Ok(i) => i,
        Err(e) => {
            return DryRun {
                envelope: None,
                mail: None,
                response: format!("(not a SIP request: {e})\r\nSIP/2.0 400 Bad Request\r\n"),
                explain: vec![],
                report: None,
            };
        }
    };
    if inc.method.eq_ignore_ascii_case("INVITE") {
        return DryRun {
            envelope: None,
            mail: None,
            response: match super::target(rules, &inc, now) {
                Ok(t) => format!(
                    "(INVITE: a Large Message Mode session for <{t}>; the dry run does not simulate MSRP)\r\n"
                ),
                Err(a) => super::complete(a, rules).summary(),
            },
            explain: vec![],
            report: None,
        };
    }
    if !inc.method.eq_ignore_ascii_case("MESSAGE") {
        return DryRun {
            envelope: None,
            mail: None,
            response: answer_other(rules, &inc.method)
                .map(|a| a.summary())
                .unwrap_or_else(|| "(no response to ACK)\r\n".into()),
            explain: vec![],
            report: None,
        };
    }
    if let Ok(c) = super::content::parse(inc.header("Content-Type"), &inc.body, &accept(rules))
        && crate::reports::is_imdn(&c)
    {
        let host = rules.setting_str("iwf_domain", "iwf.example.net");
        let ids = crate::ids::SequentialIds::new();
        let report =
            crate::reports::dryrun::imdn(rules, &c.bytes, record, &host, &ids, now, explain);
        return DryRun {
            envelope: None,
            mail: None,
            response: report.answer.clone(),
            explain: vec![],
            report: Some(report),
        };
    }
    let ctx = Ctx {
        now,
        token,
        explain,
        threads: None,
    };
    let planned = plan(rules, &inc, caps, &ctx);
    let mut explain = planned.explain;
    match planned.result {
        Err(a) => DryRun {
            envelope: None,
            mail: None,
            response: a.summary(),
            explain,
            report: None,
        },
        Ok(p) => {
            let e = &p.envelope;
            // The lines the session would send (the same function), and the smarthost
            // assumed to take the mail: 250 to DATA.
            let (lines, ok) = match smtp_client::commands(e, caps, p.message.len()) {
                Ok((mail, rcpt)) => (
                    Some(vec![mail, rcpt]),
                    smtp_client::SmtpOutcome::Reply {
                        stage: smtp_client::Stage::Data,
                        code: 250,
                        status: Some("2.0.0".into()),
                        text: "queued".into(),
                    },
                ),
                Err(refused) => (None, refused),
            };
            let a = respond(rules, &ok, Some(&e.rcpt), now, Some(&mut explain));
            DryRun {
                envelope: lines,
                mail: Some(String::from_utf8_lossy(&p.message).into_owned()),
                response: a.summary(),
                explain,
                report: None,
            }
        }
    }
}
