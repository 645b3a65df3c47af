//! Metrics in the Prometheus text format, served over HTTP (`metrics_listen`).
//!
//! Recording goes through the `metrics` facade: every call below is a no-op until
//! [`install`] sets the Prometheus recorder, so `iwf check`, `iwf map`, the self-tests and
//! the unit tests pay nothing. The HTTP side is a tiny responder of our own on a listener
//! we bind ourselves (so `127.0.0.1:0` works and the bound address can be printed), which
//! answers `GET /metrics` (and `GET /`) with [`PrometheusHandle::render`].
//!
//! # Names
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | `iwf_smtp_sessions_total` | counter | `protocol` | SMTP/LMTP sessions accepted |
//! | `iwf_smtp_sessions_active` | gauge | `protocol` | sessions open now |
//! | `iwf_smtp_connections_refused_total` | counter | `protocol`, `reason` (`limit`, `per_ip`) | connections answered 421 at connect |
//! | `iwf_recipients_refused_total` | counter | `protocol`, `code` | RCPT TO refused by the rules |
//! | `iwf_mails_received_total` | counter | `protocol` | messages that reached the end of DATA |
//! | `iwf_mails_accepted_total` | counter | `protocol`, `code` | end-of-DATA replies 2xx |
//! | `iwf_mails_refused_total` | counter | `protocol`, `code` | end-of-DATA replies 4xx/5xx |
//! | `iwf_transactions_active` | gauge | `protocol` | messages between end of DATA and reply |
//! | `iwf_smtp_transaction_seconds` | histogram | `protocol` | end of DATA → reply |
//! | `iwf_sip_requests_total` | counter | `mode`, `method`, `status` | SIP requests by final status (`200`, `404`, ... or `timeout`, `transport`) |
//! | `iwf_sip_request_seconds` | histogram | `mode`, `method` | request sent → final response (or failure) |
//! | `iwf_rule_hits_total` | counter | `phase`, `rule` | rules that fired (in serving rule sets) |
//! | `iwf_reloads_total` | counter | `result` (`ok`, `failed`) | rule reloads |
//! | `iwf_rules_generation` | gauge | | generation of the rule set serving now |
//! | `iwf_rules_reload_problems` | gauge | | diagnostics and self-test failures of the last reload (0 after a good one) |
//! | `iwf_rules_last_reload_timestamp_seconds` | gauge | | Unix time of the last good (re)load |
//! | `iwf_rule_errors_total` | counter | `rule`, `kind` (`content`, `local`) | rule evaluations that failed (554 5.6.0 / 451 4.3.0) |
//! | `iwf_peer_learned_total` | counter | `what` (`no-cpim`, `no-msrp`, `too-big`) | refusals the peer memory learnt from |
//! | `iwf_peers_remembered` | gauge | | CPM peers with remembered refusals |
//!
//! LMTP counts each message once, by its transaction reply; per-recipient LMTP replies are
//! in the transaction log line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ::metrics::{
    Counter, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::clock::Clock;
use crate::mail_to_cpm::outcome::Outcome;
use crate::mail_to_cpm::plan::Delivery;
use crate::ops::shutdown::Shutdown;
use crate::ruleset::{RuleSet, schema};
use crate::sip::{InviteOutcome, SipBackend};
use crate::smtp::Protocol;
use crate::smtp::reply::Reply;
use futures::future::BoxFuture;

/// Histogram buckets in seconds: 1 ms up to SIP Timer F (32 s) and past it.
const BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 32.0, 60.0,
];

/// Why metrics could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics recorder: {0}")]
    Build(#[from] metrics_exporter_prometheus::BuildError),
    #[error("a metrics recorder is already installed in this process")]
    AlreadyInstalled,
    #[error("metrics listener {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Installs the Prometheus recorder as the process's `metrics` recorder and describes
/// every metric. Call once, before the rule set is loaded (rule-hit counters register
/// with the recorder in place when a rule set is attached, see [`count_rule_hits`]).
pub fn install() -> Result<PrometheusHandle, MetricsError> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)?
        .build_recorder();
    let handle = recorder.handle();
    ::metrics::set_global_recorder(recorder).map_err(|_| MetricsError::AlreadyInstalled)?;
    describe();
    Ok(handle)
}

fn describe() {
    describe_counter!("iwf_smtp_sessions_total", "SMTP/LMTP sessions accepted");
    describe_gauge!("iwf_smtp_sessions_active", "SMTP/LMTP sessions open now");
    describe_counter!(
        "iwf_smtp_connections_refused_total",
        "Connections answered 421 at connect (connection limits)"
    );
    describe_counter!(
        "iwf_peer_learned_total",
        "Refusals that taught the peer memory what a CPM peer does not take, by kind"
    );
    describe_gauge!(
        "iwf_peers_remembered",
        "CPM peers (Request-URIs) whose refusals are remembered"
    );
    describe_counter!(
        "iwf_reports_total",
        "Reports across the border by direction (imdn_to_mail: IMDN from CPM -> DSN/MDN; mail_to_imdn: DSN/MDN mail -> IMDN) and result (sent, duplicate, uncorrelated, not_asked, malformed, failed)"
    );
    describe_counter!(
        "iwf_rule_errors_total",
        "Rule evaluations that failed, by rule and kind (content: 554 5.6.0, local: 451 4.3.0)"
    );
    describe_counter!(
        "iwf_recipients_refused_total",
        "RCPT TO refused by the rules, by reply code"
    );
    describe_counter!(
        "iwf_mails_received_total",
        "Messages that reached the end of DATA"
    );
    describe_counter!(
        "iwf_mails_accepted_total",
        "Messages answered 2xx at the end of DATA"
    );
    describe_counter!(
        "iwf_mails_refused_total",
        "Messages answered 4xx/5xx at the end of DATA, by reply code"
    );
    describe_gauge!(
        "iwf_transactions_active",
        "Messages between the end of DATA and their reply"
    );
    describe_histogram!(
        "iwf_smtp_transaction_seconds",
        ::metrics::Unit::Seconds,
        "End of DATA to the reply"
    );
    describe_counter!(
        "iwf_sip_requests_total",
        "SIP requests (MESSAGE, INVITE) by mode and final status or failure"
    );
    describe_histogram!(
        "iwf_sip_request_seconds",
        ::metrics::Unit::Seconds,
        "SIP request sent to final response (redirects and digest retries included)"
    );
    describe_counter!("iwf_rule_hits_total", "Rules that fired, per rule");
    describe_counter!("iwf_reloads_total", "Rule-set reloads by result");
    describe_gauge!("iwf_rules_generation", "Generation of the serving rule set");
    describe_gauge!(
        "iwf_rules_reload_problems",
        "Diagnostics and self-test failures of the last reload attempt"
    );
    describe_gauge!(
        "iwf_rules_last_reload_timestamp_seconds",
        "Unix time of the last successful rule-set (re)load"
    );
}

/// Binds the metrics listener. Separate from [`serve`] so the caller learns the address
/// (and a bind error) before anything else starts.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })
}

/// Serves `GET /metrics` on `listener` until `shutdown`, and runs the recorder's upkeep.
pub async fn serve(listener: TcpListener, handle: PrometheusHandle, shutdown: Shutdown) {
    let handle = Arc::new(handle);
    let upkeep = {
        let handle = handle.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                handle.run_upkeep();
            }
        })
    };
    let stop = shutdown.wait();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => {
                    let handle = handle.clone();
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(Duration::from_secs(10), answer(socket, &handle)).await;
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    upkeep.abort();
}

/// One HTTP/1.x exchange: read the request head, answer, close.
async fn answer(mut socket: TcpStream, handle: &PrometheusHandle) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = socket.read(&mut buf).await?;
        if n == 0 || head.len() + n > 8192 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics" | "/") => ("200 OK", handle.render()),
        ("GET" | "HEAD", _) => ("404 Not Found", "not found; try /metrics\n".into()),
        _ => ("405 Method Not Allowed", "GET only\n".into()),
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        out.extend_from_slice(body.as_bytes());
    }
    socket.write_all(&out).await?;
    socket.shutdown().await
}

/// The `protocol` label.
pub fn protocol_label(p: Protocol) -> &'static str {
    match p {
        Protocol::Smtp => "smtp",
        Protocol::Lmtp => "lmtp",
    }
}

/// Counts a new session and keeps it in `iwf_smtp_sessions_active` until dropped.
pub fn session_started(p: Protocol) -> ActiveGuard {
    let protocol = protocol_label(p);
    counter!("iwf_smtp_sessions_total", "protocol" => protocol).increment(1);
    ActiveGuard::new("iwf_smtp_sessions_active", protocol)
}

/// A connection refused at connect time (`reason`: `limit` or `per_ip`).
pub fn connection_refused(p: Protocol, reason: &'static str) {
    counter!("iwf_smtp_connections_refused_total", "protocol" => protocol_label(p), "reason" => reason)
        .increment(1);
}

/// A rule whose evaluation failed: `kind` is `content` (the mail or the peer cannot be
/// converted: a permanent refusal) or `local` (iwf's own fault: a temporary one).
pub fn rule_failed(rule: &str, kind: &'static str) {
    counter!("iwf_rule_errors_total", "rule" => rule.to_string(), "kind" => kind).increment(1);
}

/// A response rule taught the peer memory something (`what`: no-cpim, no-msrp, too-big);
/// `remembered` peers are in it now.
pub fn peer_learned(what: &'static str, remembered: usize) {
    counter!("iwf_peer_learned_total", "what" => what).increment(1);
    gauge!("iwf_peers_remembered").set(remembered as f64);
}

/// A report that arrived from one side: `direction` imdn_to_mail or mail_to_imdn; `result`
/// sent, duplicate, uncorrelated, not_asked, malformed or failed.
pub fn report(direction: &'static str, result: &'static str) {
    counter!("iwf_reports_total", "direction" => direction, "result" => result).increment(1);
}

/// A recipient the rules refused at RCPT time.
pub fn rcpt_refused(p: Protocol, reply: &Reply) {
    counter!("iwf_recipients_refused_total", "protocol" => protocol_label(p), "code" => reply.code.to_string())
        .increment(1);
}

/// A message reached the end of DATA; it stays in `iwf_transactions_active` until the
/// guard is dropped.
pub fn mail_received(p: Protocol) -> ActiveGuard {
    let protocol = protocol_label(p);
    counter!("iwf_mails_received_total", "protocol" => protocol).increment(1);
    ActiveGuard::new("iwf_transactions_active", protocol)
}

/// The end-of-DATA reply of a message and how long it took.
pub fn mail_answered(p: Protocol, reply: &Reply, took: Duration) {
    let protocol = protocol_label(p);
    let name = if reply.is_positive() {
        "iwf_mails_accepted_total"
    } else {
        "iwf_mails_refused_total"
    };
    counter!(name, "protocol" => protocol, "code" => reply.code.to_string()).increment(1);
    histogram!("iwf_smtp_transaction_seconds", "protocol" => protocol).record(took.as_secs_f64());
}

/// A successful (re)load at `now`: generation `generation` serves from now on.
pub fn reload_succeeded(generation: u64, initial: bool, now: chrono::DateTime<chrono::Utc>) {
    if !initial {
        counter!("iwf_reloads_total", "result" => "ok").increment(1);
    }
    gauge!("iwf_rules_generation").set(generation as f64);
    gauge!("iwf_rules_reload_problems").set(0.0);
    let now = now.timestamp_micros() as f64 / 1e6;
    gauge!("iwf_rules_last_reload_timestamp_seconds").set(now);
}

/// A failed reload with `problems` diagnostics or self-test failures.
pub fn reload_failed(problems: usize) {
    counter!("iwf_reloads_total", "result" => "failed").increment(1);
    gauge!("iwf_rules_reload_problems").set(problems as f64);
}

/// Gives every rule of `rules` its `iwf_rule_hits_total` counter. Done by the reloader
/// once the set passed its self-tests, so self-tests, `iwf check` and dry runs never count
/// as hits. A counter is per (phase, rule name), so it keeps counting across generations.
pub fn count_rule_hits(rules: &mut RuleSet) {
    for (phase, list) in schema::PHASES.iter().zip(rules.phases.iter_mut()) {
        for rule in list {
            rule.hits = Some(rule_hits(phase.name, &rule.name));
        }
    }
}

fn rule_hits(phase: &'static str, rule: &str) -> Counter {
    counter!("iwf_rule_hits_total", "phase" => phase, "rule" => rule.to_string())
}

/// Decrements its gauge when dropped (also when the task holding it is aborted).
pub struct ActiveGuard {
    name: &'static str,
    protocol: &'static str,
}

impl ActiveGuard {
    fn new(name: &'static str, protocol: &'static str) -> Self {
        gauge!(name, "protocol" => protocol).increment(1.0);
        ActiveGuard { name, protocol }
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        gauge!(self.name, "protocol" => self.protocol).decrement(1.0);
    }
}

/// A [`SipBackend`] that counts and times (on the clock) every request of the one it
/// wraps.
pub struct MeteredSip(pub Arc<dyn SipBackend>, pub Arc<dyn Clock>);

impl SipBackend for MeteredSip {
    fn send_message<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let start = self.1.instant();
            let outcome = self.0.send_message(delivery).await;
            sip_request("MESSAGE", &outcome, self.1.instant() - start);
            outcome
        })
    }

    fn send_invite<'a>(
        &'a self,
        delivery: &'a Delivery,
        sdp_offer: Vec<u8>,
        contact: &'a str,
    ) -> BoxFuture<'a, InviteOutcome> {
        Box::pin(async move {
            let start = self.1.instant();
            let out = self.0.send_invite(delivery, sdp_offer, contact).await;
            sip_request("INVITE", &out.outcome, self.1.instant() - start);
            out
        })
    }
}

/// The `status` label of an outcome: the final status code, or the failure kind.
pub fn status_label(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Final { status, .. } => status.to_string(),
        Outcome::Failure { kind, .. } => kind.as_str().to_string(),
    }
}

fn sip_request(method: &'static str, outcome: &Outcome, took: Duration) {
    let mode = outcome.mode().as_str();
    counter!("iwf_sip_requests_total", "mode" => mode, "method" => method, "status" => status_label(outcome))
        .increment(1);
    histogram!("iwf_sip_request_seconds", "mode" => mode, "method" => method)
        .record(took.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail_to_cpm::outcome::FailureKind;
    use crate::mail_to_cpm::plan::Mode;

    #[test]
    fn status_labels() {
        let fin = Outcome::Final {
            protocol: crate::mail_to_cpm::outcome::Layer::Sip,
            status: 404,
            reason: "Not Found".into(),
            headers: vec![],
            mode: Mode::Pager,
        };
        let fail = Outcome::Failure {
            kind: FailureKind::Timeout,
            detail: String::new(),
            mode: Mode::Large,
        };
        assert_eq!(status_label(&fin), "404");
        assert_eq!(status_label(&fail), "timeout");
    }

    #[tokio::test]
    async fn http_answers_metrics_and_404() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        ::metrics::with_local_recorder(&recorder, || {
            counter!("iwf_test_total").increment(3);
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (trigger, shutdown) = crate::ops::shutdown::channel();
        let server = tokio::spawn(serve(listener, handle, shutdown));
        let get = |path: &'static str| async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let ok = get("/metrics").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("iwf_test_total 3"), "{ok}");
        assert!(get("/nope").await.starts_with("HTTP/1.1 404"));
        trigger.fire();
        server.await.unwrap();
    }
}
