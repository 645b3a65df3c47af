//! The rsipstack back end against SIPp (a real peer) as UAS, over UDP and TCP.
//!
//! Each case starts `sipp -sf tests/peers/sipp/<scenario> -i 127.0.0.1 -p <free port>
//! -t u1|t1 -m 1 -nostdin -trace_msg -message_file <tmp>`, waits until SIPp listens, sends
//! one MESSAGE, checks the outcome, then checks in SIPp's message trace that it received
//! that MESSAGE. SIPp is stopped by its pid (and killed on drop) whatever happens. Without
//! `sipp` on PATH (Debian `sip-tester`) the tests print a note and pass.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use super::config::SipConfig;
use super::next_hop::Transport;
use super::tests_backend::{backend, delivery, timers};
use super::{RsipBackend, SipBackend};
use crate::mail_to_cpm::outcome::{FailureKind, Outcome};

fn sipp_available() -> bool {
    std::process::Command::new("sipp")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers/sipp")
        .join(name)
}

fn free_port(transport: Transport) -> u16 {
    match transport {
        Transport::Udp => std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map(|a| a.port()),
        _ => std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map(|a| a.port()),
    }
    .expect("a free port")
}

/// Whether something listens on 127.0.0.1:`port` (read from /proc, so the probe cannot
/// take the port from SIPp).
fn listening(transport: Transport, port: u16) -> bool {
    let (file, state) = match transport {
        Transport::Udp => ("/proc/net/udp", "07"),
        _ => ("/proc/net/tcp", "0A"),
    };
    let want = format!("0100007F:{port:04X}");
    std::fs::read_to_string(file)
        .map(|t| {
            t.lines().skip(1).any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3 && f[1] == want && f[3] == state
            })
        })
        .unwrap_or(false)
}

struct Sipp {
    child: Child,
    trace: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Sipp {
    async fn start(scenario_file: &str, transport: Transport, extra: &[&str]) -> Sipp {
        let dir = tempfile::tempdir().unwrap();
        let trace = dir.path().join("messages.log");
        let port = free_port(transport);
        let child = Command::new("sipp")
            .arg("-sf")
            .arg(scenario(scenario_file))
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .args([
                "-t",
                if transport == Transport::Udp {
                    "u1"
                } else {
                    "t1"
                },
            ])
            .args(["-m", "1", "-nostdin", "-trace_msg", "-timeout", "15s"])
            .arg("-message_file")
            .arg(&trace)
            .args(extra)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("sipp starts");
        let start = Instant::now();
        while !listening(transport, port) {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "sipp did not listen on {port}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Sipp {
            child,
            trace,
            port,
            _dir: dir,
        }
    }

    fn uri(&self, transport: Transport) -> String {
        format!(
            "sip:service@127.0.0.1:{};transport={}",
            self.port,
            transport.via_name().to_ascii_lowercase()
        )
    }

    /// Waits for SIPp to finish (or kills it) and returns its message trace.
    async fn finish(mut self) -> String {
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
        std::fs::read_to_string(&self.trace).unwrap_or_default()
    }

    /// Stops SIPp at once (by its pid) and returns its message trace.
    async fn stop(mut self) -> String {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        std::fs::read_to_string(&self.trace).unwrap_or_default()
    }
}

/// The MESSAGE as SIPp logged it received.
fn assert_received(trace: &str, transport: Transport, port: u16) {
    let received = format!("{} message received", transport.via_name());
    let Some(at) = trace.find(&received) else {
        panic!("no `{received}` in trace:\n{trace}");
    };
    let msg = &trace[at..];
    // rsipstack writes the transport parameter upper-case; it compares case-insensitively.
    let line = format!("MESSAGE sip:service@127.0.0.1:{port};transport=");
    assert!(msg.contains(&line), "{msg}");
    let via = format!("Via: SIP/2.0/{} 127.0.0.1:", transport.via_name());
    for needle in [
        via.as_str(),
        ";branch=z9hG4bK",
        "Max-Forwards: 70",
        "From: \"Alice\" <sip:alice@iwf.example.net>;tag=",
        "CSeq: 1 MESSAGE",
        "Subject: Lunch?",
        "Content-Type: text/plain;charset=UTF-8",
        "Content-Length: 14",
        "\r\n\r\nMeet at 12:30?",
    ] {
        assert!(msg.contains(needle), "`{needle}` missing in:\n{msg}");
    }
    assert!(!msg.contains("Contact:"), "RFC 3428: no Contact in MESSAGE");
}

fn final_status(o: &Outcome) -> Option<(u16, &str)> {
    match o {
        Outcome::Final { status, reason, .. } => Some((*status, reason.as_str())),
        _ => None,
    }
}

async fn answers(transport: Transport, be: &RsipBackend) {
    let cases: &[(&str, u16, &str)] = &[
        ("message_uas_200.xml", 200, "OK"),
        ("message_uas_202.xml", 202, "Accepted"),
        ("message_uas_404.xml", 404, "Not Found"),
        ("message_uas_413.xml", 413, "Request Entity Too Large"),
        ("message_uas_480.xml", 480, "Temporarily Unavailable"),
        ("message_uas_486.xml", 486, "Busy Here"),
        ("message_uas_503.xml", 503, "Service Unavailable"),
    ];
    for (file, code, reason) in cases {
        let sipp = Sipp::start(file, transport, &[]).await;
        let outcome = be.send_message(&delivery(&sipp.uri(transport))).await;
        assert_eq!(
            final_status(&outcome),
            Some((*code, *reason)),
            "{transport} {file}: {outcome:?}"
        );
        if let Outcome::Final { headers, .. } = &outcome {
            let has = |n: &str, v: &str| headers.iter().any(|(a, b)| a == n && b == v);
            match code {
                503 => assert!(has("Retry-After", "120"), "{headers:?}"),
                413 => assert!(
                    has("Warning", "399 sipp \"too large for pager mode\""),
                    "{headers:?}"
                ),
                _ => {}
            }
        }
        let port = sipp.port;
        let trace = sipp.finish().await;
        assert_received(&trace, transport, port);
    }

    // A late answer is waited for.
    let sipp = Sipp::start("message_uas_delay.xml", transport, &["-d", "300"]).await;
    let start = Instant::now();
    let outcome = be.send_message(&delivery(&sipp.uri(transport))).await;
    assert_eq!(final_status(&outcome), Some((200, "OK")), "{outcome:?}");
    assert!(start.elapsed() >= Duration::from_millis(300));
    let port = sipp.port;
    assert_received(&sipp.finish().await, transport, port);
}

async fn no_answer(transport: Transport) {
    let be = backend(SipConfig {
        timers: timers(10),
        ..SipConfig::default()
    })
    .await;
    let sipp = Sipp::start("message_uas_silent.xml", transport, &["-d", "3000"]).await;
    let start = Instant::now();
    let outcome = be.send_message(&delivery(&sipp.uri(transport))).await;
    assert!(
        matches!(
            outcome,
            Outcome::Failure {
                kind: FailureKind::Timeout,
                ..
            }
        ),
        "{transport}: {outcome:?}"
    );
    // Timer F = 64 × 10 ms, long before SIPp's 3 s pause ends.
    assert!(start.elapsed() < Duration::from_millis(2000));
    let port = sipp.port;
    assert_received(&sipp.stop().await, transport, port);
}

/// RFC 3261 §17.1.2.2 against a real UAS: SIPp answers 200 only after 1.7 s; with T1 = 200 ms
/// the MESSAGE is sent again at 200, 600 and 1400 ms (Timer E doubling), each copy
/// byte for byte the first (same branch, so SIPp takes them as retransmissions of the one
/// transaction), and the late 200 ends the delivery as a 200.
async fn retransmits_until_a_late_answer() {
    let be = backend(SipConfig {
        timers: timers(200),
        ..SipConfig::default()
    })
    .await;
    let sipp = Sipp::start("message_uas_delay.xml", Transport::Udp, &["-d", "1700"]).await;
    let start = Instant::now();
    let outcome = be.send_message(&delivery(&sipp.uri(Transport::Udp))).await;
    assert_eq!(final_status(&outcome), Some((200, "OK")), "{outcome:?}");
    assert!(start.elapsed() >= Duration::from_millis(1700));
    let trace = sipp.finish().await;
    let copies: Vec<&str> = trace
        .split("-----------------------------------------------")
        .filter(|m| m.contains("UDP message received"))
        .filter_map(|m| m.split_once("\n\n").map(|(_, msg)| msg.trim_end()))
        .collect();
    assert!(copies.len() >= 4, "{} copies:\n{trace}", copies.len());
    assert!(copies[0].contains(";branch=z9hG4bK"), "{trace}");
    assert!(
        copies.iter().all(|c| *c == copies[0]),
        "the copies differ:\n{trace}"
    );
}

#[tokio::test]
async fn sipp_uas_over_udp() {
    if !sipp_available() {
        eprintln!("note: sipp not found (Debian package sip-tester); SIPp tests skipped");
        return;
    }
    tokio::time::timeout(Duration::from_secs(120), async {
        let be = backend(SipConfig::default()).await;
        answers(Transport::Udp, &be).await;
        no_answer(Transport::Udp).await;
        retransmits_until_a_late_answer().await;
    })
    .await
    .expect("SIPp UDP cases within their bound");
}

#[tokio::test]
async fn sipp_uas_over_tcp() {
    if !sipp_available() {
        eprintln!("note: sipp not found (Debian package sip-tester); SIPp tests skipped");
        return;
    }
    tokio::time::timeout(Duration::from_secs(120), async {
        let be = backend(SipConfig::default()).await;
        answers(Transport::Tcp, &be).await;
        no_answer(Transport::Tcp).await;
    })
    .await
    .expect("SIPp TCP cases within their bound");
}

/// Closed-loop throughput against a SIPp UAS (no message trace), 100 MESSAGEs
/// outstanding. Run: `cargo test --release --lib sipp_throughput -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "measurement, not a check"]
async fn sipp_throughput() {
    if !sipp_available() {
        eprintln!("note: sipp not found; skipped");
        return;
    }
    const TOTAL: usize = 50_000;
    const OUTSTANDING: usize = 100;
    for transport in [Transport::Udp, Transport::Tcp] {
        let port = free_port(transport);
        let mut child = Command::new("sipp")
            .arg("-sf")
            .arg(scenario("message_uas_200.xml"))
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .args([
                "-t",
                if transport == Transport::Udp {
                    "u1"
                } else {
                    "t1"
                },
            ])
            .args(["-nostdin", "-timeout", "120s", "-max_socket", "1000"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("sipp starts");
        while !listening(transport, port) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let be = std::sync::Arc::new(backend(SipConfig::default()).await);
        let uri = format!(
            "sip:service@127.0.0.1:{port};transport={}",
            transport.via_name().to_ascii_lowercase()
        );
        // warm-up (opens the TCP connection)
        assert_eq!(
            final_status(&be.send_message(&delivery(&uri)).await),
            Some((200, "OK"))
        );
        let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let start = Instant::now();
        let mut workers = vec![];
        for _ in 0..OUTSTANDING {
            let (be, next, d) = (be.clone(), next.clone(), delivery(&uri));
            workers.push(tokio::spawn(async move {
                let mut fails = 0usize;
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < TOTAL {
                    if final_status(&be.send_message(&d).await).map(|s| s.0) != Some(200) {
                        fails += 1;
                    }
                }
                fails
            }));
        }
        let mut fails = 0;
        for w in workers {
            fails += w.await.unwrap();
        }
        let took = start.elapsed();
        eprintln!(
            "{transport}: {TOTAL} MESSAGEs in {took:?} = {:.0}/s, {fails} not 200",
            TOTAL as f64 / took.as_secs_f64()
        );
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}
