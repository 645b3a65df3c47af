//! A real CPM user agent: baresip (Debian `baresip`), a text-only phone. It answers a
//! `text/plain` MESSAGE with 200, a `message/cpim` one with 415 (`Accept: text/plain`) and
//! an INVITE for an MSRP session with 488. What a deployment meets first, each observed on
//! the wire before it was fixed:
//!
//! - a one-line mail naming three recipients is delivered as text (its optional RFC 5365
//!   list does not push it into an MSRP session the phone refuses);
//! - the phone's 415 to CPIM is learnt once: the next mail goes as text at once (one 415 per
//!   peer, not per mail: counted in iwf's metrics);
//! - a 20 KB text mail refused as an MSRP session (488) falls back to one MESSAGE over TCP;
//! - NOTIFY=SUCCESS where no IMDN can come gets a `relayed` DSN at the smarthost.
//!
//! baresip runs headless with its stdin on a pipe; the phone is a directory entry of a copy
//! of the shipped rules (`phone@cpm.example.net` → `sip:phone@127.0.0.1:<port>;transport=tcp`).

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use super::harness::{
    Iwf, IwfOptions, PYTHON, Proc, Sink, free_port, listening, require, rules_dir, smtplib,
    wait_until,
};

/// baresip on 127.0.0.1:`port` (UDP and TCP), account `sip:phone@127.0.0.1`.
struct Baresip {
    proc: Proc,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Baresip {
    /// Starts baresip on a free port ([`super::harness::baresip_port`]: its SIP/TLS
    /// transport takes the next one); should one be taken meanwhile, baresip exits with
    /// "Address already in use" and is started again on another port (at most three tries).
    fn start() -> Baresip {
        let mut tries = 0;
        loop {
            tries += 1;
            match Self::try_start() {
                Ok(b) => return b,
                Err(out) if tries < 3 && out.contains("Address already in use") => continue,
                Err(out) => panic!("baresip did not start: {out}"),
            }
        }
    }

    fn try_start() -> Result<Baresip, String> {
        let dir = tempfile::tempdir().unwrap();
        let port = super::harness::baresip_port();
        std::fs::write(
            dir.path().join("config"),
            format!(
                "sip_listen 127.0.0.1:{port}\nmodule_path /usr/lib/baresip/modules\n\
                 module stdio.so\nmodule g711.so\nmodule_app account.so\n\
                 module_app contact.so\nmodule_app menu.so\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("accounts"),
            "<sip:phone@127.0.0.1>;regint=0\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("contacts"), "").unwrap();
        // stdin stays an open pipe (held by the child handle) so baresip runs headless
        let child = Command::new("baresip")
            .arg("-f")
            .arg(dir.path())
            .args(["-n", "127.0.0.1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("baresip starts");
        let mut proc = Proc::adopt("baresip", child);
        if wait_until(Duration::from_secs(10), || {
            (listening(false, port) && proc.output().contains("baresip is ready")).then_some(())
        })
        .is_none()
        {
            proc.kill();
            return Err(proc.output());
        }
        Ok(Baresip {
            proc,
            port,
            _dir: dir,
        })
    }
}

/// A copy of the shipped rules whose directory knows the phone.
fn rules_with_phone(port: u16) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&rules_dir(), dir.path());
    let table = dir.path().join("tables/directory.yaml");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(table)
        .unwrap();
    writeln!(
        f,
        "phone@cpm.example.net: \"sip:phone@127.0.0.1:{port};transport=tcp\""
    )
    .unwrap();
    dir
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// The value of one Prometheus sample (`name{labels}` as written), 0 when absent.
fn metric(port: u16, sample: &str) -> f64 {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return 0.0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn send(iwf: &Iwf, rcpt_params: &[&str], data: &str) -> (u16, String) {
    let r = smtplib(
        iwf.smtp,
        json!({"ehlo": "client.iwf.test", "transactions": [{
            "mail_from": "alice@mail.example.org",
            "rcpts": [["phone@cpm.example.net", rcpt_params]],
            "data": data,
        }]}),
        Duration::from_secs(40),
    );
    let t = &r.transactions[0];
    assert!(t.rcpts[0].is(250, "2.1.5"), "{r:?}");
    t.data
        .clone()
        .map(|d| (d.0, d.1))
        .expect("a reply to the data")
}

#[test]
fn a_text_only_phone_gets_text_once_learnt_and_long_mail_as_one_message() {
    if !require(&["baresip", PYTHON]) {
        return;
    }
    let phone = Baresip::start();
    let rules = rules_with_phone(phone.port);
    let sink = Sink::start();
    let metrics = free_port(false);
    let config = format!(
        "smarthost: 127.0.0.1:{}\nmetrics_listen: 127.0.0.1:{metrics}\n",
        sink.port
    );
    let iwf = Iwf::start(IwfOptions {
        config: &config,
        rules: Some(rules.path()),
        ..IwfOptions::default()
    });
    let ctx = |what: &str| {
        format!(
            "{what}\niwf:\n{}\nbaresip:\n{}",
            iwf.proc.output(),
            phone.proc.output()
        )
    };
    let status_415 = "iwf_sip_requests_total{mode=\"pager\",method=\"MESSAGE\",status=\"415\"}";

    // 1. one line, three recipients in To/Cc: a MESSAGE (the phone takes no MSRP session);
    //    it asks for a negative-delivery IMDN, so CPIM first: 415, then text: 200.
    let (code, text) = send(
        &iwf,
        &[],
        "From: Alice <alice@mail.example.org>\nTo: phone@cpm.example.net, +15551234567@cpm.example.net\n\
         Cc: carol@mail.example.org\nSubject: lunch\n\nLunch at noon?\n",
    );
    assert_eq!(code, 250, "{text}\n{}", ctx("three recipients"));
    assert!(
        wait_until(Duration::from_secs(5), || phone
            .proc
            .output()
            .contains("\"Lunch at noon?\"")
            .then_some(()))
        .is_some(),
        "{}",
        ctx("the phone shows the text")
    );
    assert_eq!(metric(metrics, status_415), 1.0, "{}", ctx("one 415"));

    // 2. the next mail to the same phone goes as text at once: still one 415 in all
    let (code, text) = send(
        &iwf,
        &[],
        "From: alice@mail.example.org\nTo: phone@cpm.example.net\nSubject: again\n\nSecond note\n",
    );
    assert_eq!(code, 250, "{text}\n{}", ctx("second mail"));
    assert_eq!(metric(metrics, status_415), 1.0, "{}", ctx("no second 415"));
    assert_eq!(
        metric(metrics, "iwf_peer_learned_total{what=\"no-cpim\"}"),
        1.0,
        "{}",
        ctx("learnt once")
    );

    // 3. 20 KB of text: an INVITE for MSRP, refused (488), then one MESSAGE over TCP
    let long: String = (0..280)
        .map(|i| format!("line {i:03} of a long text for a phone without MSRP sessions.\n"))
        .collect();
    let (code, text) = send(
        &iwf,
        &[],
        &format!(
            "From: alice@mail.example.org\nTo: phone@cpm.example.net\nSubject: long\n\n{long}"
        ),
    );
    assert_eq!(code, 250, "{text}\n{}", ctx("20 KB text"));
    assert_eq!(
        metric(
            metrics,
            "iwf_sip_requests_total{mode=\"large\",method=\"INVITE\",status=\"488\"}"
        ),
        1.0,
        "{}",
        ctx("the INVITE was refused once")
    );
    assert_eq!(
        metric(metrics, "iwf_peer_learned_total{what=\"no-msrp\"}"),
        1.0,
        "{}",
        ctx("no MSRP learnt")
    );

    // 4. NOTIFY=SUCCESS, and no IMDN can come from a text-only phone: a relayed DSN
    let (code, text) = send(
        &iwf,
        &[
            "NOTIFY=SUCCESS,FAILURE",
            "ORCPT=rfc822;phone@cpm.example.net",
        ],
        "From: alice@mail.example.org\nTo: phone@cpm.example.net\nSubject: tell me\n\
         Message-ID: <relayed-1@mail.example.org>\n\nDid it arrive?\n",
    );
    assert_eq!(code, 250, "{text}\n{}", ctx("NOTIFY=SUCCESS"));
    let dsn = wait_until(Duration::from_secs(10), || {
        sink.mails()
            .into_iter()
            .find(|m| m.contains("Action: relayed"))
    });
    let dsn = dsn.unwrap_or_else(|| panic!("{}", ctx("no relayed DSN at the smarthost")));
    for want in [
        "X-Envelope-From: <>",
        "X-Envelope-To: alice@mail.example.org",
        "report-type=\"delivery-status\"",
        "Final-Recipient: rfc822;phone@cpm.example.net",
        "Original-Recipient: rfc822;phone@cpm.example.net",
        "Status: 2.0.0",
    ] {
        assert!(dsn.contains(want), "missing {want} in\n{dsn}");
    }
    assert!(!dsn.contains("Action: failed"), "{dsn}");
}
