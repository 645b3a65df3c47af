//! The gateway in one process, over real sockets on 127.0.0.1: SMTP client → iwf (rules +
//! rsipstack) → iwf's SIP answerer, and a smarthost for DSNs. Checks the one-reply-per-
//! transaction rules of DESIGN §3.6: 250 only after 2xx, 4xx with delivered recipients
//! recorded (the retry reaches only the rest), 250 + DSN for permanent failures, LMTP
//! replies per recipient.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::future::BoxFuture;
use iwf::ids::RandomIds;
use iwf::mail_to_cpm::{Gateway, MemoryStore};
use iwf::sip::{Answerer, AnswererConfig, ReceivedRequest, RsipBackend, SipConfig};
use iwf::smtp::envelope::{Envelope, Rcpt};
use iwf::smtp::reply::Reply;
use iwf::smtp::{self, DataReplies, MailHandler, Protocol, SmtpConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A smarthost that keeps what it receives.
#[derive(Default)]
struct Smarthost(Mutex<Vec<(Envelope, Vec<u8>)>>);

impl MailHandler for Smarthost {
    fn rcpt(&self, _: &Envelope, _: &Rcpt) -> BoxFuture<'_, Result<(), Reply>> {
        Box::pin(async { Ok(()) })
    }
    fn data(&self, envelope: Envelope, message: Vec<u8>) -> BoxFuture<'_, DataReplies> {
        let reply = Reply::new(250, "2.0.0", "queued");
        let out = DataReplies::all(&envelope, reply);
        self.0.lock().unwrap().push((envelope, message));
        Box::pin(async move { out })
    }
}

struct Harness {
    smtp: SocketAddr,
    lmtp: SocketAddr,
    seen: Arc<Mutex<Vec<ReceivedRequest>>>,
    smarthost: Arc<Smarthost>,
    reports: Arc<iwf::reports::Reports>,
    rules: Arc<ArcSwap<iwf::ruleset::RuleSet>>,
    _answerer: Answerer,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Starts everything; `status` decides the SIP answer from the Request-URI user, and may
/// change over time (the closure sees how many requests that URI got so far).
async fn start(status: impl Fn(&str, usize) -> u16 + Send + Sync + 'static) -> Harness {
    let seen: Arc<Mutex<Vec<ReceivedRequest>>> = Arc::default();
    let counts: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let seen_in = seen.clone();
    let policy = move |req: &ReceivedRequest| {
        if req.method != "MESSAGE" {
            return iwf::sip::answerer::default_reply(200, req);
        }
        let mut c = counts.lock().unwrap();
        let n = c.entry(req.request_uri.clone()).or_insert(0);
        *n += 1;
        let code = status(&req.request_uri, *n);
        if (200..300).contains(&code) {
            seen_in.lock().unwrap().push(req.clone());
        }
        iwf::sip::Reply::status(code)
    };
    let (answerer, _rx) = Answerer::start(AnswererConfig {
        udp: Some("127.0.0.1:0".parse().unwrap()),
        ..AnswererConfig::with_policy(policy)
    })
    .await
    .unwrap();
    let proxy = format!("sip:{};transport=udp", answerer.udp_addr().unwrap());
    let backend = RsipBackend::start(
        SipConfig {
            outbound_proxy: Some(proxy),
            ..SipConfig::default()
        },
        iwf::clock::system(),
        iwf::ids::random(),
    )
    .await
    .unwrap();
    let rules = iwf::ruleset::load(Path::new("rules"), 1).unwrap();
    let rules = Arc::new(ArcSwap::from_pointee(rules));
    let smarthost = Arc::new(Smarthost::default());
    let sh_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sh_addr = sh_listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stop = Arc::new(tokio::sync::Notify::new());
    tokio::spawn({
        let stop = stop.clone();
        async move {
            let _ = stop_rx.await;
            stop.notify_waiters();
        }
    });
    tokio::spawn({
        let stop = stop.clone();
        let sh = smarthost.clone();
        async move {
            smtp::serve(
                sh_listener,
                Protocol::Smtp,
                SmtpConfig::default(),
                sh,
                stop.notified_owned(),
            )
            .await;
        }
    });
    let store = Arc::new(MemoryStore::default());
    let sip: Arc<dyn iwf::sip::SipBackend> = Arc::new(backend);
    let reports = Arc::new(iwf::reports::Reports::new(
        store.clone(),
        Some(sh_addr.to_string()),
        "iwf.example.net".into(),
        std::time::Duration::from_secs(3600),
        iwf::clock::system(),
    ));
    let mut addrs = Vec::new();
    for protocol in [Protocol::Smtp, Protocol::Lmtp] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.push(listener.local_addr().unwrap());
        let gw = Arc::new(Gateway {
            peers: Arc::new(Default::default()),
            rules: rules.clone(),
            sip: sip.clone(),
            ids: Arc::new(RandomIds),
            clock: iwf::clock::system(),
            store: store.clone(),
            protocol,
            large: iwf::mail_to_cpm::large::LargeConfig::default(),
            smarthost: Some(sh_addr.to_string()),
            hostname: "iwf.example.net".into(),
            reports: Some(reports.clone()),
        });
        let stop = stop.clone();
        tokio::spawn(async move {
            smtp::serve(
                listener,
                protocol,
                SmtpConfig::default(),
                gw,
                stop.notified_owned(),
            )
            .await;
        });
    }
    Harness {
        smtp: addrs[0],
        lmtp: addrs[1],
        seen,
        smarthost,
        reports,
        rules,
        _answerer: answerer,
        _stop: stop_tx,
    }
}

/// Runs one mail transaction; returns every reply line after DATA's end.
async fn send(addr: SocketAddr, lmtp: bool, rcpts: &[&str], mail: &str) -> Vec<String> {
    let rcpts: Vec<String> = rcpts.iter().map(|r| format!("<{r}>")).collect();
    let rcpts: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    send_with(addr, lmtp, "<alice@mail.example.org>", &rcpts, mail).await
}

/// [`send`] with MAIL FROM / RCPT TO arguments as written (`<a@b> ENVID=x`).
async fn send_with(
    addr: SocketAddr,
    lmtp: bool,
    mail_from: &str,
    rcpts: &[&str],
    mail: &str,
) -> Vec<String> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    async fn reply(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            tokio::time::timeout(Duration::from_secs(40), r.read_line(&mut line))
                .await
                .expect("reply in time")
                .unwrap();
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] == b' ' {
                return all.trim_end().to_string();
            }
        }
    }
    reply(&mut r).await;
    w.write_all(if lmtp {
        b"LHLO client.example.org\r\n"
    } else {
        b"EHLO client.example.org\r\n"
    })
    .await
    .unwrap();
    reply(&mut r).await;
    w.write_all(format!("MAIL FROM:{mail_from}\r\n").as_bytes())
        .await
        .unwrap();
    assert!(reply(&mut r).await.starts_with("250"));
    for rc in rcpts {
        w.write_all(format!("RCPT TO:{rc}\r\n").as_bytes())
            .await
            .unwrap();
        let rep = reply(&mut r).await;
        assert!(rep.starts_with("250"), "RCPT {rc}: {rep}");
    }
    w.write_all(b"DATA\r\n").await.unwrap();
    assert!(reply(&mut r).await.starts_with("354"));
    w.write_all(mail.replace('\n', "\r\n").as_bytes())
        .await
        .unwrap();
    w.write_all(b".\r\n").await.unwrap();
    let n = if lmtp { rcpts.len() } else { 1 };
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(reply(&mut r).await);
    }
    w.write_all(b"QUIT\r\n").await.unwrap();
    out
}

const MAIL: &str = "From: alice@mail.example.org\nTo: +15550000001@cpm.example.net\nMessage-ID: <m1@mail.example.org>\nSubject: t\n\nhello\n";

fn user(uri: &str) -> &str {
    uri.trim_start_matches("tel:")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_delivered_is_250_after_the_2xx() {
    let h = start(|_, _| 200).await;
    let r = send(
        h.smtp,
        false,
        &[
            "+15550000001@cpm.example.net",
            "+15550000002@cpm.example.net",
        ],
        MAIL,
    )
    .await;
    assert!(r[0].starts_with("250 2.0.0"), "{r:?}");
    let seen = h.seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "one MESSAGE per recipient");
    assert!(seen.iter().all(|m| m.method == "MESSAGE"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_failure_is_4xx_and_the_retry_reaches_only_the_rest() {
    // +15550000002 is busy (486) the first time, then accepts.
    let h = start(|uri, n| {
        if user(uri) == "+15550000002" && n == 1 {
            486
        } else {
            200
        }
    })
    .await;
    let rcpts = [
        "+15550000001@cpm.example.net",
        "+15550000002@cpm.example.net",
    ];
    let first = send(h.smtp, false, &rcpts, MAIL).await;
    assert!(first[0].starts_with("450 4.2.0"), "{first:?}");
    let second = send(h.smtp, false, &rcpts, MAIL).await;
    assert!(second[0].starts_with("250"), "{second:?}");
    let seen = h.seen.lock().unwrap();
    let mut users: Vec<&str> = seen.iter().map(|m| user(&m.request_uri)).collect();
    users.sort();
    assert_eq!(
        users,
        vec!["+15550000001", "+15550000002"],
        "each recipient delivered exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failure_beside_a_success_is_250_plus_a_dsn() {
    let h = start(|uri, _| {
        if user(uri) == "+15550000002" {
            404
        } else {
            200
        }
    })
    .await;
    let r = send(
        h.smtp,
        false,
        &[
            "+15550000001@cpm.example.net",
            "+15550000002@cpm.example.net",
        ],
        MAIL,
    )
    .await;
    assert!(r[0].starts_with("250"), "{r:?}");
    let dsns = h.smarthost.0.lock().unwrap();
    assert_eq!(dsns.len(), 1, "one DSN, handed off before the 250");
    let (env, msg) = &dsns[0];
    assert_eq!(env.mail_from.address, "", "DSNs use the null reverse-path");
    assert_eq!(env.rcpts[0].address, "alice@mail.example.org");
    let text = String::from_utf8_lossy(msg);
    assert!(
        text.contains("Final-Recipient: rfc822;+15550000002@cpm.example.net"),
        "{text}"
    );
    assert!(text.contains("Status: 5.1.1"));
    assert!(
        !text.contains("rfc822;+15550000001@"),
        "the delivered recipient is not reported"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_permanent_is_the_mapped_5xx() {
    let h = start(|_, _| 404).await;
    let r = send(h.smtp, false, &["+15550000001@cpm.example.net"], MAIL).await;
    assert!(r[0].starts_with("550 5.1.1"), "{r:?}");
    assert!(h.smarthost.0.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lmtp_replies_per_recipient() {
    let h = start(|uri, _| match user(uri) {
        "+15550000002" => 480,
        _ => 200,
    })
    .await;
    let r = send(
        h.lmtp,
        true,
        &[
            "+15550000001@cpm.example.net",
            "+15550000002@cpm.example.net",
        ],
        MAIL,
    )
    .await;
    assert!(r[0].starts_with("250"), "{r:?}");
    assert!(r[1].starts_with("450 4.2.1"), "{r:?}");
}

/// The IMDN XML a CPM device sends for the message with `imdn.Message-ID` `id`.
fn imdn_xml(id: &str, kind: &str, status: &str) -> Vec<u8> {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<imdn xmlns=\"urn:ietf:params:xml:ns:imdn\">\n  <message-id>{id}</message-id>\n  <datetime>2025-11-21T14:03:07Z</datetime>\n  <recipient-uri>tel:+15550000001</recipient-uri>\n  <{kind}-notification><status><{status}/></status></{kind}-notification>\n</imdn>\n"
    )
    .into_bytes()
}

/// Issue 11, mail → CPM → mail in one process: the MESSAGE asks for the reports the mail
/// asked for, its record is kept once the 2xx came, and the IMDNs that come back become a
/// DSN (delivered, with ENVID and ORCPT) and an MDN — each once, however often it comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imdns_come_back_as_one_dsn_and_one_mdn() {
    let h = start(|_, _| 200).await;
    let mail = "From: Alice <alice@mail.example.org>\nTo: +15550000001@cpm.example.net\nMessage-ID: <r1@mail.example.org>\nSubject: lunch\nDisposition-Notification-To: alice@mail.example.org\n\nhello\n";
    let r = send_with(
        h.smtp,
        false,
        "<alice@mail.example.org> ENVID=QQ314159 RET=HDRS",
        &["<+15550000001@cpm.example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;+2B15550000001@cpm.example.net"],
        mail,
    )
    .await;
    assert!(r[0].starts_with("250"), "{r:?}");
    let req = h.seen.lock().unwrap()[0].clone();
    let body = String::from_utf8_lossy(&req.body).into_owned();
    assert!(
        body.contains(
            "imdn.Disposition-Notification: positive-delivery, negative-delivery, display"
        ),
        "{body}"
    );
    let id = body
        .lines()
        .find_map(|l| l.strip_prefix("imdn.Message-ID: "))
        .unwrap()
        .trim()
        .to_string();
    let rules = h.rules.load_full();
    let ids = iwf::ids::SequentialIds::new();
    // The same IMDN 200 times, 50 at once (retransmissions, a looping peer): one DSN.
    let xml = imdn_xml(&id, "delivery", "delivered");
    for _ in 0..4 {
        let copies = (0..50).map(|_| iwf::reports::imdn_from_cpm(&h.reports, &rules, &ids, &xml));
        for a in futures::future::join_all(copies).await {
            assert_eq!(a.status, 200);
        }
    }
    let a = iwf::reports::imdn_from_cpm(
        &h.reports,
        &rules,
        &ids,
        &imdn_xml(&id, "display", "displayed"),
    )
    .await;
    assert_eq!(a.status, 200);
    let got = h.smarthost.0.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "one DSN and one MDN");
    let (env, dsn) = &got[0];
    assert_eq!(env.mail_from.address, "", "reports go from the null path");
    assert_eq!(env.rcpts[0].address, "alice@mail.example.org");
    let dsn = String::from_utf8_lossy(dsn);
    for want in [
        "report-type=\"delivery-status\"",
        "Original-Envelope-Id: QQ314159",
        "Original-Recipient: rfc822;+15550000001@cpm.example.net",
        "Final-Recipient: rfc822;+15550000001@cpm.example.net",
        "Action: delivered",
        "Status: 2.0.0",
        "text/rfc822-headers",
    ] {
        assert!(dsn.contains(want), "{want} missing in\n{dsn}");
    }
    let mdn = String::from_utf8_lossy(&got[1].1);
    for want in [
        "report-type=\"disposition-notification\"",
        "Original-Message-ID: <r1@mail.example.org>",
        "Disposition: manual-action/MDN-sent-automatically; displayed",
    ] {
        assert!(mdn.contains(want), "{want} missing in\n{mdn}");
    }
    // An IMDN about nothing of ours: 200, nothing sent; a malformed one: 400.
    let a = iwf::reports::imdn_from_cpm(
        &h.reports,
        &rules,
        &ids,
        &imdn_xml("unknown1", "delivery", "failed"),
    )
    .await;
    assert_eq!(a.status, 200);
    let a = iwf::reports::imdn_from_cpm(
        &h.reports,
        &rules,
        &ids,
        b"<!DOCTYPE x [<!ENTITY a \"b\">]><imdn/>",
    )
    .await;
    assert_eq!(a.status, 400);
    assert_eq!(h.smarthost.0.lock().unwrap().len(), 2);
}

/// A mail refused by CPM keeps no record: a later IMDN about it sends nothing (no second
/// report after the SMTP refusal, RFC 5438 §12.1.3.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_report_after_a_refusal() {
    let h = start(|_, _| 486).await;
    let r = send_with(
        h.smtp,
        false,
        "<alice@mail.example.org>",
        &["<+15550000001@cpm.example.net> NOTIFY=FAILURE"],
        MAIL,
    )
    .await;
    assert!(r[0].starts_with("450"), "{r:?}");
    assert!(h.seen.lock().unwrap().is_empty());
    assert!(h.smarthost.0.lock().unwrap().is_empty());
}
