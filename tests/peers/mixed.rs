//! Recipients of one mail with different CPM outcomes, through smtplib and `iwf serve` to
//! iwf's in-process answerer (whose policy answers per Request-URI):
//!
//! - LMTP gives one reply per recipient after the data (RFC 2033 §4.2);
//! - over SMTP a temporary failure of one recipient makes the whole transaction 4xx; the
//!   client's retry of the same mail is not delivered again to the recipient that already
//!   has it, only to the one that failed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use iwf::sip::{Answerer, AnswererConfig, ReceivedRequest, Reply};
use serde_json::json;

use super::harness::{Iwf, IwfOptions, PYTHON, R, require, smtplib};

pub(super) struct Cpm {
    rt: tokio::runtime::Runtime,
    answerer: Answerer,
    received: tokio::sync::mpsc::UnboundedReceiver<ReceivedRequest>,
}

impl Cpm {
    pub(super) fn start(policy: impl Fn(&ReceivedRequest) -> Reply + Send + Sync + 'static) -> Cpm {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (answerer, received) = rt
            .block_on(Answerer::start(AnswererConfig {
                tcp: None,
                ..AnswererConfig::with_policy(policy)
            }))
            .expect("the answerer starts");
        Cpm {
            rt,
            answerer,
            received,
        }
    }

    pub(super) fn next_hop(&self) -> String {
        format!("sip:{};transport=udp", self.answerer.udp_addr().unwrap())
    }

    /// MESSAGEs received so far per Request-URI (waits 300 ms for stragglers).
    pub(super) fn counts(&mut self) -> BTreeMap<String, usize> {
        let mut seen = BTreeMap::new();
        let received = &mut self.received;
        self.rt.block_on(async {
            while let Ok(Some(r)) =
                tokio::time::timeout(Duration::from_millis(300), received.recv()).await
            {
                *seen.entry(r.request_uri).or_default() += 1;
            }
        });
        seen
    }
}

impl Drop for Cpm {
    fn drop(&mut self) {
        self.answerer.shutdown();
    }
}

fn mail(id: &str) -> String {
    format!(
        "From: alice@mail.example.org\nTo: +15551230001@cpm.example.net\n\
         Subject: mixed\nMessage-ID: <{id}@mail.example.org>\n\nhello\n"
    )
}

#[test]
fn lmtp_replies_per_recipient() {
    if !require(&[PYTHON]) {
        return;
    }
    let mut cpm = Cpm::start(|r| match r.request_uri.as_str() {
        "tel:+15551230002" => Reply::status(404),
        "tel:+15551230003" => Reply::status(486),
        _ => Reply::status(200),
    });
    let iwf = Iwf::start(IwfOptions {
        next_hop: Some(cpm.next_hop()),
        lmtp: true,
        ..IwfOptions::default()
    });
    let rcpts: Vec<_> = (1..=3)
        .map(|i| json!([format!("+1555123000{i}@cpm.example.net"), ["NOTIFY=NEVER"]]))
        .collect();
    let r = smtplib(
        iwf.lmtp.expect("LMTP listener"),
        json!({"lmtp": true, "ehlo": "mta.example",
               "transactions": [{"mail_from": "alice@mail.example.org", "rcpts": rcpts,
                                 "data": mail("lmtp")}]}),
        Duration::from_secs(30),
    );
    let t = &r.transactions[0];
    let got: Vec<(u16, &str)> = t
        .lmtp_data
        .iter()
        .map(|r| (r.0, r.1.split(' ').next().unwrap_or("")))
        .collect();
    assert_eq!(
        got,
        [(250, "2.0.0"), (550, "5.1.1"), (450, "4.2.0")],
        "{r:?}\n{}",
        iwf.proc.output()
    );
    assert!(t.lmtp_data[1].1.contains("<+15551230002@cpm.example.net>"));
    let counts = cpm.counts();
    assert_eq!(counts.values().sum::<usize>(), 3, "{counts:?}");
}

#[test]
fn smtp_retry_after_a_temporary_failure_delivers_each_recipient_once() {
    if !require(&[PYTHON]) {
        return;
    }
    // +15551230002 is unavailable (480) the first time, then takes the mail.
    let attempts = Arc::new(AtomicUsize::new(0));
    let a = attempts.clone();
    let mut cpm = Cpm::start(move |r| {
        if r.request_uri == "tel:+15551230002" && a.fetch_add(1, Ordering::SeqCst) == 0 {
            Reply::status(480)
        } else {
            Reply::status(200)
        }
    });
    let iwf = Iwf::start(IwfOptions {
        next_hop: Some(cpm.next_hop()),
        ..IwfOptions::default()
    });
    let rcpts: Vec<_> = (1..=2)
        .map(|i| json!([format!("+1555123000{i}@cpm.example.net"), ["NOTIFY=NEVER"]]))
        .collect();
    let transaction =
        json!({"mail_from": "alice@mail.example.org", "rcpts": rcpts, "data": mail("retry")});
    // the client retries the same mail (same Message-ID), as an MTA does after a 4xx
    let replies: Vec<R> = (0..2)
        .map(|_| {
            let r = smtplib(
                iwf.smtp,
                json!({"transactions": [transaction]}),
                Duration::from_secs(30),
            );
            r.transactions[0].data.clone().expect("a reply to the data")
        })
        .collect();
    assert!(
        replies[0].is(450, "4.2.1"),
        "first attempt: {replies:?}\n{}",
        iwf.proc.output()
    );
    // the one reply speaks for both recipients: it names neither (issue: Exim's bounce for
    // one recipient cited the other's reason)
    assert!(!replies[0].1.contains("@cpm.example.net"), "{replies:?}");
    assert!(
        replies[0].1.contains("1 of 2 CPM recipients"),
        "{replies:?}"
    );
    assert!(replies[1].is(250, "2.0.0"), "retry: {replies:?}");
    let counts = cpm.counts();
    assert_eq!(
        counts,
        BTreeMap::from([
            ("tel:+15551230001".to_string(), 1),
            ("tel:+15551230002".to_string(), 2),
        ]),
        "the retry must not deliver +15551230001 again"
    );
}
