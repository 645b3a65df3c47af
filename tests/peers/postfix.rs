//! A real MTA in front of the gateway: a private Postfix instance
//! (`tests/peers/postfix-relay.sh`, everything under a temporary directory, loopback only)
//! relays `cpm.example.net` to `iwf serve`, which sends to SIPp.
//!
//! - A temporary SIP failure (480 → `450 4.2.1`) makes Postfix defer the mail and retry;
//!   once the CPM side answers 200 the mail is delivered, exactly once.
//! - A permanent failure (404 → `550 5.1.1`) makes Postfix bounce the mail to its sender,
//!   whose domain `bounce.test` Postfix routes to an aiosmtpd sink where the test reads it.
//!
//! Postfix's retry timers are shortened (2 s, at most 8 s); each test takes ~10–20 s. Postfix
//! needs root: as another user the tests say "skipped".

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use super::harness::{
    self, Iwf, IwfOptions, PYTHON, Sink, SipRequest, Sipp, Transport, asset, free_port, require,
    smtplib, wait_until,
};

/// The private Postfix instance; stopped (by its own master pid file) when dropped.
struct Postfix {
    dir: PathBuf,
    port: u16,
    env: Vec<(&'static str, String)>,
    _tmp: tempfile::TempDir,
}

impl Postfix {
    fn start(gateway_port: u16, bounce_port: u16) -> Postfix {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("postfix");
        let port = free_port(false);
        let env = vec![
            ("PF_DIR", dir.display().to_string()),
            ("PF_PORT", port.to_string()),
            ("GW_PORT", gateway_port.to_string()),
            ("GW_PROTO", "smtp".to_string()),
            ("BOUNCE_PORT", bounce_port.to_string()),
            ("RETRY", "2s".to_string()),
            ("RETRY_MAX", "8s".to_string()),
        ];
        let pf = Postfix {
            dir,
            port,
            env,
            _tmp: tmp,
        };
        let (status, out) = pf.script("start");
        assert!(
            status.success(),
            "postfix did not start:\n{out}\n{}",
            pf.log()
        );
        pf
    }

    fn script(&self, verb: &str) -> (std::process::ExitStatus, String) {
        let mut cmd = Command::new("bash");
        cmd.arg(asset("postfix-relay.sh")).arg(verb);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        harness::run("postfix-relay.sh", &mut cmd, Duration::from_secs(90))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("maillog")).unwrap_or_default()
    }

    /// Waits until the mail log has a line with all of `needles`; returns that line.
    fn wait_log(&self, needles: &[&str], limit: Duration) -> Option<String> {
        wait_until(limit, || {
            self.log()
                .lines()
                .find(|l| needles.iter().all(|n| l.contains(n)))
                .map(str::to_string)
        })
    }

    fn queue(&self) -> String {
        self.script("queue").1
    }

    fn addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = self.script("stop");
    }
}

fn available() -> bool {
    if !require(&["sipp", PYTHON, "/usr/sbin/postfix", "/usr/sbin/postqueue"]) {
        return false;
    }
    if !harness::is_root() {
        eprintln!("skipped: the Postfix relay test needs root (Postfix runs its daemons as root)");
        return false;
    }
    if std::process::Command::new(PYTHON)
        .args(["-c", "import aiosmtpd"])
        .status()
        .map(|s| !s.success())
        .unwrap_or(true)
    {
        eprintln!("skipped: python3-aiosmtpd not installed");
        return false;
    }
    true
}

/// Submits one mail to Postfix from `alice@bounce.test` (bounces go to the sink).
fn submit(postfix: &Postfix, id: &str, rcpt: &str) {
    let r = smtplib(
        postfix.addr(),
        json!({"ehlo": "client.iwf.test", "transactions": [{
        "mail_from": "alice@bounce.test",
        "rcpts": [[rcpt, []]],
        "data": format!(
            "From: Alice <alice@bounce.test>\nTo: {rcpt}\nSubject: via postfix\n\
             Message-ID: <{id}@bounce.test>\nMIME-Version: 1.0\n\
             Content-Type: text/plain; charset=utf-8\n\nrelayed by Postfix\n"
        )}]}),
        Duration::from_secs(30),
    );
    let data = r.transactions[0].data.as_ref();
    assert!(
        data.is_some_and(|d| d.0 == 250),
        "Postfix did not queue the mail: {r:?}"
    );
}

/// Distinct MESSAGE transactions (a UDP retransmission repeats the Via branch).
fn transactions(reqs: &[SipRequest]) -> usize {
    let mut branches: Vec<&str> = reqs.iter().map(|r| r.h("Via")).collect();
    branches.sort();
    branches.dedup();
    branches.len()
}

fn context(pf: &Postfix, iwf: &Iwf) -> String {
    format!(
        "postfix log:\n{}\nqueue:\n{}\niwf:\n{}",
        pf.log(),
        pf.queue(),
        iwf.proc.output()
    )
}

#[test]
fn postfix_retries_a_temporary_sip_failure_and_delivers_once() {
    if !available() {
        return;
    }
    let sip_port = free_port(true);
    let busy = Sipp::start(
        "message_uas_480.xml",
        Transport::Udp,
        Some(sip_port),
        1,
        &[],
    );
    let iwf = Iwf::start(IwfOptions {
        next_hop: Some(busy.next_hop()),
        config: "timers: {t1_ms: 50}\n",
        ..IwfOptions::default()
    });
    let pf = Postfix::start(iwf.smtp.port(), free_port(false));
    let rcpt = "+15551230001@cpm.example.net";
    submit(&pf, "retry-once", rcpt);

    // First attempt: 480 -> 450 4.2.1 -> Postfix defers.
    let deferred = pf.wait_log(&["status=deferred", "450 4.2.1"], Duration::from_secs(20));
    assert!(deferred.is_some(), "not deferred\n{}", context(&pf, &iwf));
    let first = busy.wait_requests(1, Duration::from_secs(5));
    assert_eq!(transactions(&first), 1, "{first:#?}");

    // The CPM side recovers: SIPp answering 200 on the same port.
    let mut busy = busy;
    busy.proc.wait(Duration::from_secs(5));
    drop(busy);
    let ok = Sipp::start(
        "message_uas_200.xml",
        Transport::Udp,
        Some(sip_port),
        10,
        &[],
    );
    let sent = pf.wait_log(
        &["status=sent", "250 2.0.0 delivered to 1 CPM recipient"],
        Duration::from_secs(40),
    );
    assert!(sent.is_some(), "not delivered\n{}", context(&pf, &iwf));
    // A few queue runs later: nothing left, nothing sent twice.
    std::thread::sleep(Duration::from_secs(3));
    let got = ok.requests();
    assert_eq!(transactions(&got), 1, "delivered once: {got:#?}");
    assert_eq!(got[0].request_uri, "tel:+15551230001");
    assert_eq!(got[0].h("Subject"), "via postfix");
    assert!(
        got[0].body_text().ends_with("relayed by Postfix"),
        "{got:#?}"
    );
    let queue = pf.queue();
    assert!(queue.contains("Mail queue is empty"), "{queue}");
    let log = pf.log();
    assert_eq!(log.matches("status=sent").count(), 1, "{log}");
    assert!(!log.contains("status=bounced"), "{log}");
}

#[test]
fn postfix_bounces_a_permanent_sip_failure() {
    if !available() {
        return;
    }
    let sink = Sink::start();
    let sipp = Sipp::start("message_uas_404.xml", Transport::Tcp, None, 1, &[]);
    let iwf = Iwf::start(IwfOptions {
        next_hop: Some(sipp.next_hop()),
        ..IwfOptions::default()
    });
    let pf = Postfix::start(iwf.smtp.port(), sink.port);
    let rcpt = "+15551230001@cpm.example.net";
    submit(&pf, "bounce-me", rcpt);

    let bounced = pf.wait_log(&["status=bounced", "550 5.1.1"], Duration::from_secs(20));
    assert!(bounced.is_some(), "not bounced\n{}", context(&pf, &iwf));
    let mails = wait_until(Duration::from_secs(20), || {
        let m = sink.mails();
        (!m.is_empty()).then_some(m)
    })
    .unwrap_or_else(|| panic!("no bounce reached the sink\n{}", context(&pf, &iwf)));
    assert_eq!(mails.len(), 1, "{mails:#?}");
    let dsn = &mails[0];
    for needle in [
        "X-Envelope-From: <>",
        "X-Envelope-To: alice@bounce.test",
        "report-type=delivery-status",
        "Reporting-MTA: dns; mta.iwf.test",
        "Final-Recipient: rfc822; +15551230001@cpm.example.net",
        "Action: failed",
        "Status: 5.1.1",
        "Diagnostic-Code: smtp; 550 5.1.1 <+15551230001@cpm.example.net>: CPM user",
        "Message-ID: <bounce-me@bounce.test>",
    ] {
        assert!(
            dsn.contains(needle),
            "`{needle}` missing in the bounce:\n{dsn}"
        );
    }
    let got = sipp.wait_requests(1, Duration::from_secs(5));
    assert_eq!(transactions(&got), 1, "{got:#?}");
    assert!(pf.queue().contains("Mail queue is empty"));
}

/// RFC 5321 §4.5.1: `postmaster` (unqualified, and at a served domain, in any case) is
/// accepted and reaches the configured mailbox (`postmaster_mailbox`, a rule setting)
/// through the smarthost, here a private Postfix delivering into a Maildir; postmaster at a
/// domain we do not serve is still a relay attempt.
#[test]
fn postmaster_reaches_the_configured_mailbox_through_postfix() {
    if !available() {
        return;
    }
    let sip = free_port(true);
    let pf_port = free_port(false);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("postfix");
    let env = vec![
        ("PF_DIR", dir.display().to_string()),
        ("PF_PORT", pf_port.to_string()),
        ("GW_PORT", free_port(false).to_string()),
        ("BOUNCE_PORT", free_port(false).to_string()),
        ("MAILBOX_DOMAINS", "mail.example.org".to_string()),
    ];
    let pf = Postfix {
        dir: dir.clone(),
        port: pf_port,
        env,
        _tmp: tmp,
    };
    let (status, out) = pf.script("start");
    assert!(
        status.success(),
        "postfix did not start:\n{out}\n{}",
        pf.log()
    );
    let iwf = Iwf::start(IwfOptions {
        next_hop: Some(format!("sip:127.0.0.1:{sip};transport=udp")),
        config: &format!("smarthost: 127.0.0.1:{pf_port}\n"),
        ..IwfOptions::default()
    });
    let r = smtplib(
        iwf.smtp,
        json!({"ehlo": "client.iwf.test", "transactions": [{
            "mail_from": "alice@bounce.test",
            "rcpts": [["postmaster", []], ["PostMaster@cpm.example.net", []], ["postmaster@elsewhere.example", []]],
            "data": "From: Alice <alice@bounce.test>\nTo: postmaster\nSubject: for the postmaster\n\
                     Message-ID: <pm-1@bounce.test>\n\nabuse report\n"
        }]}),
        Duration::from_secs(30),
    );
    let t = &r.transactions[0];
    assert!(t.rcpts[0].is(250, "2.1.5"), "{r:?}");
    assert!(t.rcpts[1].is(250, "2.1.5"), "{r:?}");
    assert!(t.rcpts[2].is(550, "5.7.1"), "{r:?}");
    assert!(
        t.data.as_ref().is_some_and(|d| d.0 == 250),
        "{r:?}\n{}",
        iwf.proc.output()
    );
    let sent = pf.wait_log(
        &["to=<postmaster@mail.example.org>", "status=sent"],
        Duration::from_secs(20),
    );
    assert!(sent.is_some(), "not delivered\n{}", context(&pf, &iwf));
    let maildir = dir.join("mail/all/new");
    let mails: Vec<String> = std::fs::read_dir(&maildir)
        .map(|d| {
            d.flatten()
                .map(|e| String::from_utf8_lossy(&std::fs::read(e.path()).unwrap()).into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        mails.len(),
        1,
        "one copy for both postmaster recipients: {mails:?}"
    );
    assert!(
        mails[0].contains("Subject: for the postmaster"),
        "{}",
        mails[0]
    );
    assert!(mails[0].contains("abuse report"), "{}", mails[0]);
    assert!(
        mails[0].contains("Return-Path: <alice@bounce.test>"),
        "{}",
        mails[0]
    );
}
