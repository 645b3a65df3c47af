//! Python smtplib → `iwf serve` → SIPp UAS, over UDP and over TCP: one test per SIP answer
//! (200, 202, 404, 480, 486, 503, 413, a late 200, none at all), each asserting the reply
//! the mail client got to its DATA and, header by header, the MESSAGE SIPp received.
//!
//! The SIPp scenarios are `tests/peers/sipp/message_uas_*.xml` (one file per status code:
//! SIPp checks codes when it loads a scenario).

use std::time::{Duration, Instant};

use serde_json::json;

use super::harness::{
    self, Iwf, IwfOptions, PYTHON, R, SipRequest, Sipp, Transport, require, smtplib,
};

/// T1 = 50 ms, so Timer F (64·T1) is 3.2 s.
const FAST_TIMERS: &str = "timers: {t1_ms: 50}\n";

fn mail(id: &str, rcpt: &str) -> String {
    format!(
        "From: Alice Example <alice@mail.example.org>\nTo: {rcpt}\nSubject: Lunch?\n\
         Date: Fri, 21 Nov 2025 14:03:07 +0000\nMessage-ID: <{id}@mail.example.org>\n\
         Importance: high\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n\
         Meet at 12:30?\n"
    )
}

/// One mail to `+15551230001@cpm.example.net` with `BY=3600;R` and the given NOTIFY.
fn transaction(id: &str, notify: &str) -> serde_json::Value {
    let rcpt = "+15551230001@cpm.example.net";
    json!({"mail_from": "alice@mail.example.org", "mail_opts": ["BY=3600;R"],
           "rcpts": [[rcpt, [format!("NOTIFY={notify}")]]], "data": mail(id, rcpt)})
}

struct Run {
    data: R,
    elapsed: Duration,
    /// Every MESSAGE SIPp received (UDP retransmissions included).
    received: Vec<SipRequest>,
    sipp_output: String,
    iwf_output: String,
}

/// Starts SIPp with `scenario`, `iwf serve` pointing at it, sends one mail, and returns the
/// DATA reply and what SIPp received.
fn run(transport: Transport, scenario: &str, sipp_args: &[&str], config: &str) -> Run {
    let sipp = Sipp::start(scenario, transport, None, 1, sipp_args);
    let iwf = Iwf::start(IwfOptions {
        next_hop: Some(sipp.next_hop()),
        config,
        ..IwfOptions::default()
    });
    let start = Instant::now();
    let r = smtplib(
        iwf.smtp,
        json!({"transactions": [transaction(scenario, "NEVER")]}),
        Duration::from_secs(40),
    );
    let elapsed = start.elapsed();
    let t = &r.transactions[0];
    assert!(
        t.mail.is(250, "2.1.0") && t.rcpts[0].is(250, "2.1.5"),
        "{r:?}"
    );
    let received = sipp.wait_requests(1, Duration::from_secs(5));
    Run {
        data: t.data.clone().expect("a reply to the data"),
        elapsed,
        received,
        sipp_output: sipp.proc.output(),
        iwf_output: iwf.proc.output(),
    }
}

/// The one MESSAGE (retransmissions have the same Via branch) with the headers the rules
/// make of [`mail`].
fn assert_message(run: &Run, transport: Transport) -> SipRequest {
    let ctx = || format!("sipp:\n{}\niwf:\n{}", run.sipp_output, run.iwf_output);
    assert!(!run.received.is_empty(), "SIPp received nothing\n{}", ctx());
    let branch = |r: &SipRequest| r.h("Via").to_string();
    assert!(
        run.received
            .iter()
            .filter(|r| r.method == "MESSAGE")
            .all(|r| branch(r) == branch(&run.received[0])),
        "more than one MESSAGE transaction: {:#?}",
        run.received
    );
    let m = run.received[0].clone();
    assert_eq!(m.method, "MESSAGE");
    assert_eq!(m.request_uri, "tel:+15551230001");
    let via = format!(
        "SIP/2.0/{} 127.0.0.1:",
        transport.name().to_ascii_uppercase()
    );
    assert!(m.h("Via").starts_with(&via), "{}", m.h("Via"));
    assert!(m.h("Via").contains(";branch=z9hG4bK"), "{}", m.h("Via"));
    assert_eq!(m.h("Max-Forwards"), "70");
    let from = m.h("From");
    assert!(
        from.starts_with("\"Alice Example\" <sip:alice%40mail.example.org@iwf.example.net>;tag="),
        "{from}"
    );
    assert_eq!(m.h("To"), "<tel:+15551230001>");
    assert_eq!(m.h("CSeq"), "1 MESSAGE");
    assert!(!m.h("Call-ID").is_empty());
    assert_eq!(m.h("Date"), "Fri, 21 Nov 2025 14:03:07 GMT");
    let expires: u32 = m.h("Expires").parse().expect("Expires is a number");
    assert!(
        (3590..=3600).contains(&expires),
        "BY=3600;R -> Expires {expires}"
    );
    assert_eq!(m.h("Priority"), "urgent", "Importance: high");
    assert_eq!(m.h("Subject"), "Lunch?");
    assert_eq!(
        m.h("Accept-Contact"),
        "*;+g.3gpp.icsi-ref=\"urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.msg\""
    );
    assert_eq!(m.header("Contact"), None, "RFC 3428: no Contact in MESSAGE");
    // NOTIFY=NEVER: no IMDN, so the text itself, not CPIM
    assert_eq!(m.h("Content-Type"), "text/plain;charset=UTF-8");
    assert_eq!(m.h("Content-Length"), "14");
    assert_eq!(m.body_text(), "Meet at 12:30?");
    m
}

fn status_case(transport: Transport, code: u16, reply: (u16, &str)) {
    if !require(&["sipp", PYTHON]) {
        return;
    }
    let scenario = format!("message_uas_{code}.xml");
    let run = run(transport, &scenario, &[], "");
    assert!(
        run.data.is(reply.0, reply.1),
        "SIP {code} over {transport:?}: got {:?}, want {reply:?}\n{}",
        run.data,
        run.iwf_output
    );
    if code >= 300 {
        assert!(
            run.data.1.contains("<+15551230001@cpm.example.net>: "),
            "a failure names the recipient: {:?}",
            run.data
        );
        assert!(
            run.data.1.contains(&format!("SIP {code}")),
            "{:?}",
            run.data
        );
    } else {
        assert_eq!(run.data.1, "2.0.0 delivered to 1 CPM recipient(s)");
    }
    assert_message(&run, transport);
}

macro_rules! over_udp_and_tcp {
    ($($name:ident => $f:expr;)*) => {$(
        mod $name {
            use super::*;
            #[test]
            fn udp() {
                ($f)(Transport::Udp)
            }
            #[test]
            fn tcp() {
                ($f)(Transport::Tcp)
            }
        }
    )*};
}

over_udp_and_tcp! {
    sip_200_is_250 => |t| status_case(t, 200, (250, "2.0.0"));
    sip_202_is_250 => |t| status_case(t, 202, (250, "2.0.0"));
    sip_404_is_550_5_1_1 => |t| status_case(t, 404, (550, "5.1.1"));
    sip_480_is_450_4_2_1 => |t| status_case(t, 480, (450, "4.2.1"));
    sip_486_is_450_4_2_0 => |t| status_case(t, 486, (450, "4.2.0"));
    sip_503_is_451_4_3_2 => |t: Transport| {
        status_case(t, 503, (451, "4.3.2"));
    };
    sip_413_is_never_250 => sip_413;
    late_200_within_timer_f_is_250 => late_answer;
    no_answer_is_451_4_4_1_at_timer_f => no_answer;
    cpim_message_with_imdn_request => cpim;
}

/// 503 carries `Retry-After: 120`; the reply says so in its text.
#[test]
fn sip_503_retry_after_in_reply_text() {
    if !require(&["sipp", PYTHON]) {
        return;
    }
    let run = run(Transport::Udp, "message_uas_503.xml", &[], "");
    assert!(run.data.1.contains("retry after 120"), "{:?}", run.data);
}

/// 413 to the MESSAGE: the response rules retry in Large Message Mode (mapping reference
/// §3.1). SIPp's MESSAGE scenario does not answer the INVITE that follows, so the retry
/// ends at Timer B over UDP (3.2 s with T1 = 50 ms) or with the closed connection over
/// TCP: never a 250. SIPp saw the one MESSAGE with the headers the rules define.
fn sip_413(t: Transport) {
    if !require(&["sipp", PYTHON]) {
        return;
    }
    let run = run(t, "message_uas_413.xml", &[], FAST_TIMERS);
    assert!(
        matches!(run.data.0, 400..=599),
        "413 must not be {:?}\n{}",
        run.data,
        run.iwf_output
    );
    // UDP: the INVITE goes unanswered until Timer B; TCP: SIPp closes the connection.
    let expected = match t {
        Transport::Udp => "4.4.1",
        Transport::Tcp => "4.4.2",
    };
    assert!(
        run.data.is(451, expected),
        "{:?}\n{}",
        run.data,
        run.iwf_output
    );
    assert!(
        run.received.iter().any(|r| r.method == "INVITE"),
        "the large-mode retry reached SIPp: {:#?}",
        run.received
    );
    assert_message(&run, t);
}

/// SIPp answers 200 after 1 s; with T1 = 50 ms the UDP MESSAGE is retransmitted meanwhile
/// (Timer E), and the answer still comes within Timer F (3.2 s): 250, and one transaction.
fn late_answer(t: Transport) {
    if !require(&["sipp", PYTHON]) {
        return;
    }
    let run = run(t, "message_uas_delay.xml", &["-d", "1000"], FAST_TIMERS);
    assert!(
        run.data.is(250, "2.0.0"),
        "{:?}\n{}",
        run.data,
        run.iwf_output
    );
    assert!(
        run.elapsed >= Duration::from_millis(1000),
        "{:?}",
        run.elapsed
    );
    assert!(
        run.elapsed < Duration::from_millis(3200),
        "{:?}",
        run.elapsed
    );
    assert_message(&run, t);
    if t == Transport::Udp {
        assert!(run.received.len() > 1, "Timer E retransmits over UDP");
    } else {
        assert_eq!(run.received.len(), 1, "no retransmission over TCP");
    }
}

/// SIPp never answers: Timer F (64 × 50 ms) ends the transaction and the client gets
/// 451 4.4.1 about 3.2 s after its data.
fn no_answer(t: Transport) {
    if !require(&["sipp", PYTHON]) {
        return;
    }
    let run = run(t, "message_uas_silent.xml", &["-d", "20000"], FAST_TIMERS);
    assert!(
        run.data.is(451, "4.4.1"),
        "{:?}\n{}",
        run.data,
        run.iwf_output
    );
    assert!(run.data.1.contains("timeout"), "{:?}", run.data);
    assert!(
        run.elapsed >= Duration::from_millis(3000) && run.elapsed < Duration::from_secs(8),
        "Timer F is 3.2 s, reply after {:?}",
        run.elapsed
    );
    assert_message(&run, t);
}

/// The default NOTIFY (none) asks for a negative-delivery IMDN: the text travels in CPIM.
fn cpim(t: Transport) {
    if !require(&["sipp", PYTHON]) {
        return;
    }
    let sipp = Sipp::start("message_uas_200.xml", t, None, 1, &[]);
    let iwf = Iwf::start(IwfOptions {
        next_hop: Some(sipp.next_hop()),
        ..IwfOptions::default()
    });
    let rcpt = "+15551230001@cpm.example.net";
    let r = smtplib(
        iwf.smtp,
        json!({"transactions": [{"mail_from": "alice@mail.example.org",
                                 "rcpts": [[rcpt, ["NOTIFY=SUCCESS,FAILURE"]]],
                                 "data": mail("cpim", rcpt)}]}),
        Duration::from_secs(40),
    );
    assert!(
        r.transactions[0].data.as_ref().unwrap().is(250, "2.0.0"),
        "{r:?}"
    );
    let m = sipp.wait_requests(1, Duration::from_secs(5));
    let m = m.first().expect("SIPp got the MESSAGE");
    assert_eq!(m.h("Content-Type"), "message/cpim");
    assert_eq!(m.header("Expires"), None, "no BY, no Expires");
    let body = m.body_text();
    let (cpim, inner) = body.split_once("\r\n\r\n").expect("CPIM headers");
    let cpim: Vec<&str> = cpim.split("\r\n").collect();
    assert_eq!(
        cpim[..3],
        [
            "From: \"Alice Example\" <sip:alice%40mail.example.org@iwf.example.net>",
            "To: <tel:+15551230001>",
            "DateTime: 2025-11-21T14:03:07Z",
        ]
    );
    assert!(
        cpim.contains(&"NS: imdn <urn:ietf:params:imdn>"),
        "{cpim:?}"
    );
    assert!(
        cpim.iter().any(|l| l.starts_with("imdn.Message-ID: ")),
        "{cpim:?}"
    );
    assert!(
        cpim.contains(&"imdn.Disposition-Notification: positive-delivery, negative-delivery"),
        "{cpim:?}"
    );
    assert_eq!(
        inner,
        "Content-Type: text/plain; charset=UTF-8\r\n\r\nMeet at 12:30?"
    );
    assert_eq!(
        m.h("Content-Length").parse::<usize>().unwrap(),
        m.body.len()
    );
}

/// SIGTERM while a MESSAGE waits for its answer: iwf takes no new session, finishes the
/// transaction in flight (the client gets its 250 once SIPp answers), then exits 0.
#[test]
fn sigterm_drains_the_transaction_in_flight() {
    if !require(&["sipp", PYTHON]) {
        return;
    }
    let sipp = Sipp::start(
        "message_uas_delay.xml",
        Transport::Udp,
        None,
        1,
        &["-d", "2000"],
    );
    let mut iwf = Iwf::start(IwfOptions {
        next_hop: Some(sipp.next_hop()),
        ..IwfOptions::default()
    });
    let addr = iwf.smtp;
    let client = std::thread::spawn(move || {
        smtplib(
            addr,
            json!({"transactions": [transaction("drain", "NEVER")]}),
            Duration::from_secs(30),
        )
    });
    // the MESSAGE is out, its answer 2 s away
    assert_eq!(sipp.wait_requests(1, Duration::from_secs(10)).len(), 1);
    iwf.proc.terminate();
    let refused = harness::wait_until(Duration::from_secs(5), || {
        std::net::TcpStream::connect(addr).is_err().then_some(())
    });
    assert!(refused.is_some(), "still accepting sessions after SIGTERM");
    let r = client.join().expect("the client thread");
    let data = r.transactions[0].data.clone().unwrap();
    assert!(data.is(250, "2.0.0"), "{data:?}\n{}", iwf.proc.output());
    let status = iwf.proc.wait(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "iwf did not exit cleanly after the drain: {status:?}\n{}",
        iwf.proc.output()
    );
}
