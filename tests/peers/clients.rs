//! Real SMTP clients (swaks, Python smtplib) against `iwf demo`, whose in-process CPM
//! endpoint answers every MESSAGE with 200 and prints it: each test asserts the replies the
//! client got and what reached the SIP side.

use std::process::Command;
use std::time::Duration;

use serde_json::json;

use super::harness::{self, Iwf, IwfOptions, PYTHON, R, SipRequest, require, smtplib};

const LIMIT: Duration = Duration::from_secs(30);

fn demo(config: &str) -> Iwf {
    Iwf::start(IwfOptions {
        command: "demo",
        config,
        ..IwfOptions::default()
    })
}

/// The replies in a swaks transcript (`<-  ` and `<** ` lines; continuation lines joined).
fn swaks_replies(transcript: &str) -> Vec<R> {
    let mut out: Vec<R> = Vec::new();
    let mut continuing = false;
    for line in transcript.lines() {
        let Some(reply) = line
            .strip_prefix("<-  ")
            .or_else(|| line.strip_prefix("<** "))
        else {
            continue;
        };
        let code: u16 = reply.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
        let text = reply.get(4..).unwrap_or("").to_string();
        if continuing && let Some(last) = out.last_mut() {
            last.1.push('\n');
            last.1.push_str(&text);
        } else {
            out.push(R(code, text));
        }
        continuing = reply.as_bytes().get(3) == Some(&b'-');
    }
    out
}

/// Waits (bounded) until the demo endpoint printed `n` requests; returns them, with a
/// settling pause so that a duplicate would be seen too.
fn demo_requests(iwf: &Iwf, n: usize) -> Vec<SipRequest> {
    harness::wait_until(Duration::from_secs(10), || {
        (iwf.demo_requests().len() >= n).then_some(())
    });
    std::thread::sleep(Duration::from_millis(200));
    iwf.demo_requests()
}

fn uris(reqs: &[SipRequest]) -> Vec<String> {
    let mut v: Vec<String> = reqs.iter().map(|r| r.request_uri.clone()).collect();
    v.sort();
    v
}

#[test]
fn swaks_pipelines_a_transaction_with_several_recipients() {
    if !require(&["swaks"]) {
        return;
    }
    let iwf = demo("");
    let (status, out) = harness::run(
        "swaks",
        Command::new("swaks")
            .args(["--server", &iwf.smtp.to_string(), "--pipeline"])
            .args(["--ehlo", "swaks.example", "--timeout", "20"])
            .args(["--from", "a@mail.example.org"])
            // a directory user (SIP URI), one with a tel: URI, an unknown one, a relay attempt
            .args([
                "--to",
                "alice@cpm.example.net,bob@cpm.example.net,nobody@cpm.example.net,x@elsewhere.org",
            ])
            // one visible recipient: no RFC 5365 list, so the MESSAGE stays in pager mode
            .args(["--h-To", "alice@cpm.example.net", "--h-Subject", "Grüße"])
            .args(["--add-header", "Content-Type: text/plain; charset=utf-8"])
            .args(["--body", "Grüße aus Köln"]),
        LIMIT,
    );
    assert!(status.success(), "swaks failed:\n{out}");
    // PIPELINING: swaks sent the whole envelope and DATA before reading the MAIL reply.
    let last_cmd = out.find(" -> DATA").expect("DATA sent");
    let first_reply = out.find("<-  250 2.1.0").expect("MAIL accepted");
    assert!(last_cmd < first_reply, "not pipelined:\n{out}");
    let replies = swaks_replies(&out);
    assert!(replies[1].1.contains("PIPELINING"), "{replies:?}");
    let tail: Vec<(u16, &str)> = replies[2..]
        .iter()
        .map(|r| (r.0, r.1.split(' ').next().unwrap_or("")))
        .collect();
    assert_eq!(
        tail,
        [
            (250, "2.1.0"),
            (250, "2.1.5"),
            (250, "2.1.5"),
            (550, "5.1.1"),
            (550, "5.7.1"),
            (354, "Start"),
            (250, "2.0.0"),
            (221, "2.0.0"),
        ],
        "{out}"
    );
    let reqs = demo_requests(&iwf, 2);
    assert_eq!(
        uris(&reqs),
        ["sip:alice@ims.example.net", "tel:+15557654321"],
        "{}",
        iwf.proc.output()
    );
    for r in &reqs {
        assert_eq!(r.method, "MESSAGE");
        assert_eq!(r.h("Subject"), "Grüße");
        assert_eq!(r.h("Content-Type"), "message/cpim");
        assert!(r.body_text().ends_with("\r\n\r\nGrüße aus Köln"), "{r:#?}");
    }
}

#[test]
fn swaks_oversized_message_is_refused_with_552_and_not_sent() {
    if !require(&["swaks"]) {
        return;
    }
    let iwf = demo("limits: {message_size: 65536}\n");
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body.txt");
    std::fs::write(
        &body,
        "0123456789abcdef012345678901234567890123456789\n".repeat(2000),
    )
    .unwrap();
    let (_, out) = harness::run(
        "swaks",
        Command::new("swaks")
            .args(["--server", &iwf.smtp.to_string(), "--timeout", "20"])
            .args([
                "--from",
                "a@mail.example.org",
                "--to",
                "alice@cpm.example.net",
            ])
            .arg("--body")
            .arg(format!("@{}", body.display())),
        LIMIT,
    );
    let replies = swaks_replies(&out);
    assert!(replies[1].1.contains("SIZE 65536"), "{replies:?}");
    let data = replies.iter().rev().nth(1).expect("a reply to the data");
    assert!(data.is(552, "5.3.4"), "{out}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(iwf.demo_requests().is_empty(), "{}", iwf.proc.output());
}

/// DSN (RFC 3461) and DELIVERBY (RFC 2852) parameters as smtplib sends them, and what they
/// become: IMDN requests in CPIM, and Expires.
#[test]
fn smtplib_dsn_and_deliverby_parameters() {
    if !require(&[PYTHON]) {
        return;
    }
    let iwf = demo("");
    let mail = |id: &str, to: &str| {
        format!(
            "From: Alice Example <alice@mail.example.org>\nTo: {to}\nSubject: Lunch?\n\
             Date: Fri, 21 Nov 2025 14:03:07 +0000\nMessage-ID: <{id}@mail.example.org>\n\
             Importance: high\n\nMeet at 12:30?\n"
        )
    };
    let r = smtplib(
        iwf.smtp,
        json!({"transactions": [
            {"mail_from": "alice@mail.example.org",
             "mail_opts": ["RET=HDRS", "ENVID=QQ314159", "BY=3600;R"],
             "rcpts": [["+15551230001@cpm.example.net",
                        ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;+15551230001@cpm.example.net"]]],
             "data": mail("dsn1", "+15551230001@cpm.example.net")},
            {"mail_from": "alice@mail.example.org", "mail_opts": ["RET=FULL", "BY=120;N"],
             "rcpts": [["+15551230002@cpm.example.net", ["NOTIFY=NEVER"]]],
             "data": mail("dsn2", "+15551230002@cpm.example.net")},
            // a zero R deadline cannot be met (RFC 2852 §4)
            {"mail_from": "alice@mail.example.org", "mail_opts": ["BY=0;R"],
             "rcpts": [["+15551230003@cpm.example.net", []]]},
            // NEVER with anything else is a syntax error (RFC 3461 §4.1)
            {"mail_from": "alice@mail.example.org",
             "rcpts": [["+15551230004@cpm.example.net", ["NOTIFY=NEVER,SUCCESS"]],
                       ["+15551230005@cpm.example.net", ["NOTIFY=FAILURE,NEVER"]]]},
        ]}),
        LIMIT,
    );
    for ext in ["DSN", "DELIVERBY", "PIPELINING", "8BITMIME", "SMTPUTF8"] {
        assert!(r.ehlo.2.iter().any(|e| e == ext), "{ext}: {:?}", r.ehlo);
    }
    let t = &r.transactions;
    assert!(
        t[0].mail.is(250, "2.1.0") && t[0].rcpts[0].is(250, "2.1.5"),
        "{t:?}"
    );
    assert!(t[0].data.as_ref().unwrap().is(250, "2.0.0"), "{t:?}");
    assert!(t[1].data.as_ref().unwrap().is(250, "2.0.0"), "{t:?}");
    assert!(t[2].mail.is(501, "5.5.4"), "{t:?}");
    assert!(t[3].rcpts[0].is(501, "5.5.4"), "{t:?}");
    assert!(t[3].rcpts[1].is(501, ""), "{t:?}");
    assert_eq!(r.quit.as_ref().map(|q| q.0), Some(221));

    let reqs = demo_requests(&iwf, 2);
    assert_eq!(reqs.len(), 2, "{}", iwf.proc.output());
    let first = &reqs[0];
    assert_eq!(first.request_uri, "tel:+15551230001");
    let expires: u32 = first.h("Expires").parse().unwrap();
    assert!(
        (3590..=3600).contains(&expires),
        "BY=3600;R -> Expires {expires}"
    );
    assert_eq!(first.h("Priority"), "urgent");
    assert_eq!(first.h("Content-Type"), "message/cpim");
    let cpim = first.body_text();
    assert!(
        cpim.contains("imdn.Disposition-Notification: positive-delivery, negative-delivery\r\n"),
        "{cpim}"
    );
    let second = &reqs[1];
    assert_eq!(second.request_uri, "tel:+15551230002");
    assert_eq!(second.header("Expires"), None, "BY=..;N asks no Expires");
    // NOTIFY=NEVER: no IMDN requested, so plain text without CPIM
    assert_eq!(second.h("Content-Type"), "text/plain;charset=UTF-8");
    assert_eq!(second.body_text(), "Meet at 12:30?");
}

/// 8-bit mail (BODY=8BITMIME, ISO-8859-1) is transcoded to UTF-8; SMTPUTF8 mail with a
/// UTF-8 sender address and header is delivered with the address percent-encoded.
#[test]
fn smtplib_8bitmime_and_smtputf8() {
    if !require(&[PYTHON]) {
        return;
    }
    let iwf = demo("");
    let latin1: Vec<u8> = [
        &b"From: alice@mail.example.org\r\nTo: +15551230011@cpm.example.net\r\n"[..],
        b"Subject: latin-1\r\nMIME-Version: 1.0\r\n",
        b"Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
        b"Gr\xfc\xdfe aus K\xf6ln\r\n",
    ]
    .concat();
    let r = smtplib(
        iwf.smtp,
        json!({"transactions": [
            {"mail_from": "alice@mail.example.org", "mail_opts": ["BODY=8BITMIME"],
             "rcpts": [["+15551230011@cpm.example.net", ["NOTIFY=NEVER"]]],
             "data_hex": latin1.iter().map(|b| format!("{b:02x}")).collect::<String>()},
            {"mail_from": "jürgen@mail.example.org", "mail_opts": ["SMTPUTF8", "BODY=8BITMIME"],
             "rcpts": [["+15551230012@cpm.example.net", ["NOTIFY=NEVER"]]],
             "data": "From: Jürgen Groß <jürgen@mail.example.org>\nTo: +15551230012@cpm.example.net\n\
                      Subject: Grüße 🌍\nMIME-Version: 1.0\n\
                      Content-Type: text/plain; charset=utf-8\n\nGrüße 🌍\n"},
        ]}),
        LIMIT,
    );
    for t in &r.transactions {
        assert!(
            t.mail.is(250, "") && t.data.as_ref().unwrap().is(250, "2.0.0"),
            "{r:?}"
        );
    }
    let reqs = demo_requests(&iwf, 2);
    assert_eq!(reqs.len(), 2, "{}", iwf.proc.output());
    assert_eq!(reqs[0].h("Subject"), "latin-1");
    assert_eq!(reqs[0].h("Content-Type"), "text/plain;charset=UTF-8");
    assert_eq!(reqs[0].body_text(), "Grüße aus Köln");
    let utf8 = &reqs[1];
    assert_eq!(utf8.request_uri, "tel:+15551230012");
    assert_eq!(utf8.h("Subject"), "Grüße 🌍");
    assert!(
        utf8.h("From").starts_with(
            "\"Jürgen Groß\" <sip:j%C3%BCrgen%40mail.example.org@iwf.example.net>;tag="
        ),
        "{}",
        utf8.h("From")
    );
    assert_eq!(utf8.body_text(), "Grüße 🌍");
}

/// Limits: a declared SIZE over the limit (552 at MAIL), too many recipients (452 from the
/// fourth), an over-long text line (554 5.6.0), an oversized message without SIZE (552 after
/// the data), an over-long command line (500 5.5.6). Only the accepted mail reaches SIP.
#[test]
fn smtplib_limit_violations() {
    if !require(&[PYTHON]) {
        return;
    }
    let iwf = demo("limits: {message_size: 65536, recipients: 3}\n");
    let rcpts: Vec<serde_json::Value> = (1..=5)
        .map(|i| json!([format!("+1555123010{i}@cpm.example.net"), ["NOTIFY=NEVER"]]))
        .collect();
    let text = |body: &str| format!("From: alice@mail.example.org\nSubject: limits\n\n{body}\n");
    let long_line = "x".repeat(1500);
    let big = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n".repeat(1100);
    let long_local = "a".repeat(2000);
    let one = json!([["+15551230100@cpm.example.net", []]]);
    let r = smtplib(
        iwf.smtp,
        json!({"transactions": [
            {"mail_from": "alice@mail.example.org", "mail_opts": ["SIZE=100000"],
             "rcpts": one, "data": text("never sent")},
            {"mail_from": "alice@mail.example.org", "rcpts": rcpts, "data": text("three of five")},
            {"mail_from": "alice@mail.example.org", "rcpts": one, "data": text(&long_line)},
            {"mail_from": "alice@mail.example.org", "rcpts": one, "data": text(&big)},
            {"mail_from": "alice@mail.example.org",
             "rcpts": [[format!("{long_local}@cpm.example.net"), []]]},
        ]}),
        LIMIT,
    );
    assert!(r.ehlo.1.contains("SIZE 65536"), "{:?}", r.ehlo);
    let t = &r.transactions;
    assert!(t[0].mail.is(552, "5.3.4"), "{:?}", t[0]);
    let codes: Vec<(u16, &str)> = t[1]
        .rcpts
        .iter()
        .map(|r| (r.0, r.1.split(' ').next().unwrap_or("")))
        .collect();
    assert_eq!(
        codes,
        [
            (250, "2.1.5"),
            (250, "2.1.5"),
            (250, "2.1.5"),
            (452, "4.5.3"),
            (452, "4.5.3")
        ]
    );
    assert!(t[1].data.as_ref().unwrap().is(250, "2.0.0"), "{:?}", t[1]);
    assert!(t[2].data.as_ref().unwrap().is(554, "5.6.0"), "{:?}", t[2]);
    assert!(t[3].data.as_ref().unwrap().is(552, "5.3.4"), "{:?}", t[3]);
    assert!(t[4].rcpts[0].is(500, "5.5.6"), "{:?}", t[4]);
    assert_eq!(r.quit.as_ref().map(|q| q.0), Some(221), "{r:?}");
    let reqs = demo_requests(&iwf, 3);
    assert_eq!(
        uris(&reqs),
        ["tel:+15551230101", "tel:+15551230102", "tel:+15551230103"],
        "{}",
        iwf.proc.output()
    );
}
