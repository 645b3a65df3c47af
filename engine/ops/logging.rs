//! Logs: the tracing subscriber (human-readable or JSON lines, on standard error) and the
//! one line every transaction ends with.
//!
//! # The transaction line
//! The gateway runs each end-of-DATA inside [`in_transaction`], which counts it as active,
//! starts its clock, and opens a per-task collector that the SIP back end feeds with the
//! Call-ID of every request it starts ([`note_call_id`]). The gateway ends with
//! [`finish_transaction`]: one `INFO` event, target `iwf::transaction`, message
//! `transaction`, with these fields:
//!
//! | field | example |
//! |---|---|
//! | `generation` | `7` — the one rule-set generation that mapped the whole transaction |
//! | `message_id` | `<abc@mail.example.org>` (or `-` when the mail has none) |
//! | `from` | `alice@mail.example.org` |
//! | `rcpts` | `+15551234567@cpm.example.net,+15551234568@cpm.example.net` |
//! | `rcpt_replies` | `250,550` — the reply code per recipient (what LMTP sends) |
//! | `call_ids` | every SIP Call-ID used, comma-separated (a retry in another form is a new one) |
//! | `outcome` | `delivered` (2xx), `deferred` (4xx), `refused` (5xx), `mixed` (LMTP with several classes) |
//! | `reply` | `250 2.0.0 delivered to CPM` — the transaction reply |
//! | `took_ms` | end of DATA → reply |
//!
//! The collector is a tokio task-local rather than a parameter so the SIP back end's
//! signature stays as it is; outside a transaction (tests, dry runs) it is absent and
//! [`note_call_id`] does nothing.

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;

use tokio::time::Instant;

use crate::clock::Clock;
use crate::smtp::Protocol;
use crate::smtp::envelope::Envelope;
use crate::smtp::reply::Reply;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One human-readable line per event (tracing's default format).
    #[default]
    Text,
    /// One JSON object per line, fields at the top level.
    Json,
}

/// A `log_format` value that is neither `text` nor `json`: what arrived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a log format (text or json)")]
pub struct UnknownLogFormat(pub String);

impl std::str::FromStr for LogFormat {
    type Err = UnknownLogFormat;
    fn from_str(s: &str) -> Result<Self, UnknownLogFormat> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(UnknownLogFormat(s.to_string())),
        }
    }
}

/// The filter: `RUST_LOG` if set, else `info`; rsipstack is held at `warn` unless
/// `RUST_LOG` names it (at INFO it logs every raw SIP message, DESIGN.md §4).
pub fn filter_directives(rust_log: Option<&str>) -> String {
    match rust_log {
        Some(s) if !s.trim().is_empty() => {
            if s.contains("rsipstack") {
                s.to_string()
            } else {
                format!("{s},rsipstack=warn")
            }
        }
        _ => "info,rsipstack=warn".to_string(),
    }
}

/// Installs the process's tracing subscriber (once; a second call does nothing).
pub fn init(format: LogFormat) {
    let directives = filter_directives(std::env::var("RUST_LOG").ok().as_deref());
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rsipstack=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: journald and files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}

/// What one transaction collects while it runs.
struct Context {
    clock: Arc<dyn Clock>,
    start: Instant,
    call_ids: Vec<String>,
}

tokio::task_local! {
    static TRANSACTION: RefCell<Context>;
}

/// Runs one end-of-DATA `fut` as a transaction: counted in `iwf_mails_received_total` and
/// `iwf_transactions_active`, timed, and with a Call-ID collector for
/// [`finish_transaction`]. The latency is measured on `clock`.
pub async fn in_transaction<F: Future>(
    protocol: Protocol,
    clock: Arc<dyn Clock>,
    fut: F,
) -> F::Output {
    let _active = crate::ops::metrics::mail_received(protocol);
    let cx = RefCell::new(Context {
        start: clock.instant(),
        clock,
        call_ids: Vec::new(),
    });
    TRANSACTION.scope(cx, fut).await
}

/// Records the Call-ID of a SIP request the current transaction starts (called by the
/// SIP back end; does nothing outside [`in_transaction`]).
pub fn note_call_id(call_id: &str) {
    let _ = TRANSACTION.try_with(|cx| {
        let mut cx = cx.borrow_mut();
        if !cx.call_ids.iter().any(|c| c == call_id) {
            cx.call_ids.push(call_id.to_string());
        }
    });
}

/// What the gateway knows at the end of a transaction.
pub struct Transaction<'a> {
    pub protocol: Protocol,
    pub generation: u64,
    pub message_id: Option<&'a str>,
    pub envelope: &'a Envelope,
    pub per_recipient: &'a [Reply],
    pub reply: &'a Reply,
}

/// Writes the transaction's log line and records its reply and latency metrics.
pub fn finish_transaction(t: &Transaction<'_>) {
    let (took, call_ids) = TRANSACTION
        .try_with(|cx| {
            let cx = cx.borrow();
            (cx.clock.instant() - cx.start, cx.call_ids.join(","))
        })
        .unwrap_or_default();
    crate::ops::metrics::mail_answered(t.protocol, t.reply, took);
    let rcpts = t
        .envelope
        .rcpts
        .iter()
        .map(|r| r.address.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let rcpt_replies = t
        .per_recipient
        .iter()
        .map(|r| r.code.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let outcome = outcome_word(t.protocol, t.per_recipient, t.reply);
    tracing::info!(
        target: "iwf::transaction",
        generation = t.generation,
        message_id = t.message_id.unwrap_or("-"),
        from = %t.envelope.mail_from.address,
        rcpts = %rcpts,
        rcpt_replies = %rcpt_replies,
        call_ids = %call_ids,
        outcome,
        reply = %t.reply,
        took_ms = took.as_millis() as u64,
        "transaction"
    );
}

fn class_word(code: u16) -> &'static str {
    match code / 100 {
        2 => "delivered",
        4 => "deferred",
        _ => "refused",
    }
}

/// `delivered` / `deferred` / `refused` by the transaction reply; LMTP, whose recipients
/// are answered one by one, says `mixed` when they fall into different classes.
fn outcome_word(protocol: Protocol, per_recipient: &[Reply], reply: &Reply) -> &'static str {
    if protocol == Protocol::Lmtp
        && let Some(first) = per_recipient.first()
        && per_recipient
            .iter()
            .any(|r| class_word(r.code) != class_word(first.code))
    {
        return "mixed";
    }
    class_word(reply.code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_keeps_rsipstack_at_warn() {
        assert_eq!(filter_directives(None), "info,rsipstack=warn");
        assert_eq!(filter_directives(Some("")), "info,rsipstack=warn");
        assert_eq!(filter_directives(Some("debug")), "debug,rsipstack=warn");
        assert_eq!(
            filter_directives(Some("info,rsipstack=debug")),
            "info,rsipstack=debug"
        );
    }

    #[test]
    fn outcome_words() {
        let ok = Reply::new(250, "2.0.0", "ok");
        let temp = Reply::new(451, "4.3.0", "later");
        let perm = Reply::new(550, "5.1.1", "no");
        let t = |p, per: &[Reply], r: &Reply| outcome_word(p, per, r);
        assert_eq!(
            t(Protocol::Smtp, std::slice::from_ref(&ok), &ok),
            "delivered"
        );
        assert_eq!(
            t(Protocol::Smtp, std::slice::from_ref(&temp), &temp),
            "deferred"
        );
        assert_eq!(
            t(Protocol::Smtp, &[ok.clone(), perm.clone()], &ok),
            "delivered"
        );
        assert_eq!(t(Protocol::Lmtp, &[ok.clone(), perm.clone()], &ok), "mixed");
        assert_eq!(
            t(Protocol::Lmtp, std::slice::from_ref(&perm), &perm),
            "refused"
        );
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert!("xml".parse::<LogFormat>().is_err());
    }

    #[tokio::test]
    async fn call_ids_are_collected_inside_a_transaction_only() {
        note_call_id("outside@x");
        let ids = in_transaction(Protocol::Smtp, crate::clock::system(), async {
            note_call_id("a@x");
            note_call_id("b@x");
            note_call_id("a@x");
            TRANSACTION.with(|cx| cx.borrow().call_ids.clone())
        })
        .await;
        assert_eq!(ids, ["a@x", "b@x"]);
    }
}
