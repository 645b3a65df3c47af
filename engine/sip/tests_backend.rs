//! The rsipstack back end against the answerer (and raw sockets) on 127.0.0.1.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedReceiver;

use super::answerer::{Answerer, AnswererConfig, ReceivedRequest, Reply};
use super::auth;
use super::config::{Credentials, SipConfig, Timers};
use super::next_hop::Transport;
use super::{RsipBackend, SipBackend};
use crate::mail_to_cpm::outcome::{FailureKind, Layer, Outcome};
use crate::mail_to_cpm::plan::{Content, Delivery, Mode};

/// Every test ends within this, whatever happens.
const BOUND: Duration = Duration::from_secs(20);

pub(super) fn delivery(uri: &str) -> Delivery {
    Delivery {
        recipient: "+15551234567@cpm.example.net".into(),
        mode: Mode::Pager,
        request_uri: uri.into(),
        headers: vec![
            (
                "From".into(),
                "\"Alice\" <sip:alice@iwf.example.net>".into(),
            ),
            ("Subject".into(), "Lunch?".into()),
        ],
        content: Content {
            content_type: "text/plain;charset=UTF-8".into(),
            body: bytes::Bytes::from_static(b"Meet at 12:30?").into(),
        },
        cpim_inner: None,
        imdn_message_id: None,
        imdn_dispositions: Vec::new(),
        success_report: false,
    }
}

pub(super) fn timers(t1_ms: u64) -> Timers {
    Timers {
        t1: Duration::from_millis(t1_ms),
        ..Timers::default()
    }
}

pub(super) async fn backend(config: SipConfig) -> RsipBackend {
    RsipBackend::start(config, crate::clock::system(), crate::ids::random())
        .await
        .expect("backend starts")
}

fn status_of(o: &Outcome) -> Option<u16> {
    match o {
        Outcome::Final { status, .. } => Some(*status),
        _ => None,
    }
}

fn header<'a>(o: &'a Outcome, name: &str) -> Option<&'a str> {
    match o {
        Outcome::Final { headers, .. } => headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str()),
        _ => None,
    }
}

fn drain(rx: &mut UnboundedReceiver<ReceivedRequest>) -> Vec<ReceivedRequest> {
    let mut v = vec![];
    while let Ok(r) = rx.try_recv() {
        v.push(r);
    }
    v
}

async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(BOUND, f)
        .await
        .expect("test exceeded its time bound")
}

#[tokio::test]
async fn final_statuses_reach_the_outcome_over_udp_and_tcp() {
    bounded(async {
        let be = backend(SipConfig::default()).await;
        for transport in [Transport::Udp, Transport::Tcp] {
            for code in [200u16, 202, 404, 408, 486, 503] {
                let (ans, mut rx) = Answerer::start(AnswererConfig::status(code)).await.unwrap();
                let uri = ans.uri("bob", transport).unwrap();
                let outcome = be.send_message(&delivery(&uri)).await;
                match &outcome {
                    Outcome::Final {
                        protocol,
                        status,
                        reason,
                        mode,
                        ..
                    } => {
                        assert_eq!(*protocol, Layer::Sip);
                        assert_eq!(*status, code, "{transport} {code}");
                        assert_eq!(reason, super::answerer::reason_phrase(code));
                        assert_eq!(*mode, Mode::Pager);
                    }
                    o => panic!("{transport} {code}: {o:?}"),
                }
                assert_eq!(header(&outcome, "Server"), Some("iwf-answerer"));
                let got = drain(&mut rx);
                assert_eq!(got.len(), 1, "{transport} {code}: {got:?}");
                let r = &got[0];
                assert_eq!(r.transport, transport);
                assert_eq!(r.method, "MESSAGE");
                // rsipstack writes `transport=UDP`; URI parameters compare
                // case-insensitively (RFC 3261 §19.1.4).
                assert!(
                    r.request_uri.eq_ignore_ascii_case(&uri),
                    "{}",
                    r.request_uri
                );
                assert_eq!(r.body, b"Meet at 12:30?");
                assert_eq!(r.header("Subject"), Some("Lunch?"));
                assert_eq!(r.header("Content-Type"), Some("text/plain;charset=UTF-8"));
                assert_eq!(r.header("CSeq"), Some("1 MESSAGE"));
                assert!(r.header("Contact").is_none(), "RFC 3428: no Contact");
                let via = r.header("Via").unwrap();
                assert!(
                    via.starts_with(&format!("SIP/2.0/{} 127.0.0.1:", transport.via_name())),
                    "{via}"
                );
                assert!(via.contains(";branch=z9hG4bK"), "{via}");
                let from = r.header("From").unwrap();
                assert!(from.starts_with("\"Alice\" <sip:alice@iwf.example.net>;tag="));
                assert_eq!(r.header("To"), Some(format!("<{uri}>").as_str()));
            }
        }
    })
    .await;
}

#[tokio::test]
async fn outbound_proxy_carries_tel_uris() {
    bounded(async {
        let (ans, mut rx) = Answerer::start(AnswererConfig::status(200)).await.unwrap();
        for transport in [Transport::Udp, Transport::Tcp] {
            let proxy = format!(
                "sip:{};transport={}",
                match transport {
                    Transport::Udp => ans.udp_addr().unwrap(),
                    _ => ans.tcp_addr().unwrap(),
                },
                transport.via_name().to_ascii_lowercase()
            );
            let be = backend(SipConfig {
                outbound_proxy: Some(proxy),
                ..SipConfig::default()
            })
            .await;
            be.connect_proxy().await.unwrap();
            let outcome = be.send_message(&delivery("tel:+15551234567")).await;
            assert_eq!(status_of(&outcome), Some(200), "{outcome:?}");
            let got = drain(&mut rx);
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].request_uri, "tel:+15551234567");
            assert_eq!(got[0].header("To"), Some("<tel:+15551234567>"));
        }
    })
    .await;
}

#[tokio::test]
async fn tel_uri_without_proxy_is_a_transport_failure() {
    bounded(async {
        let be = backend(SipConfig::default()).await;
        match be.send_message(&delivery("tel:+15551234567")).await {
            Outcome::Failure { kind, detail, mode } => {
                assert_eq!(kind, FailureKind::Transport);
                assert_eq!(mode, Mode::Pager);
                assert!(detail.contains("outbound proxy"), "{detail}");
            }
            o => panic!("{o:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn no_answer_is_timer_f_with_timer_e_retransmissions() {
    bounded(async {
        // A raw socket counts every datagram, retransmissions included.
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let counter = tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            let mut at = vec![];
            let start = Instant::now();
            while let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf)).await
            {
                at.push(start.elapsed());
            }
            at
        });
        let be = backend(SipConfig {
            timers: timers(10),
            ..SipConfig::default()
        })
        .await;
        let start = Instant::now();
        let outcome = be
            .send_message(&delivery(&format!("sip:bob@{addr};transport=udp")))
            .await;
        let took = start.elapsed();
        match &outcome {
            Outcome::Failure { kind, detail, .. } => {
                assert_eq!(*kind, FailureKind::Timeout, "{detail}");
                assert!(detail.contains("Timer F"), "{detail}");
            }
            o => panic!("{o:?}"),
        }
        assert!(took >= Duration::from_millis(600), "{took:?}");
        assert!(took < Duration::from_millis(1500), "{took:?}");
        let sends = counter.await.unwrap();
        // E: 10, 20, 40, 80, 160, 320 ms → sends at 0, 10, 30, 70, 150, 310, 630 ms.
        assert!((5..=8).contains(&sends.len()), "{sends:?}");
    })
    .await;
}

#[tokio::test]
async fn silent_answerer_times_out_over_tcp_without_retransmitting() {
    bounded(async {
        let (ans, mut rx) = Answerer::start(AnswererConfig::silent()).await.unwrap();
        let be = backend(SipConfig {
            timers: timers(10),
            ..SipConfig::default()
        })
        .await;
        let outcome = be
            .send_message(&delivery(&ans.uri("bob", Transport::Tcp).unwrap()))
            .await;
        assert!(
            matches!(
                outcome,
                Outcome::Failure {
                    kind: FailureKind::Timeout,
                    ..
                }
            ),
            "{outcome:?}"
        );
        assert_eq!(drain(&mut rx).len(), 1);
    })
    .await;
}

#[tokio::test]
async fn delayed_answer_over_udp_is_reported_once() {
    bounded(async {
        let (ans, mut rx) = Answerer::start(AnswererConfig::with_policy(|_| {
            Reply::status(200).after(Duration::from_millis(300))
        }))
        .await
        .unwrap();
        let be = backend(SipConfig {
            timers: timers(20),
            ..SipConfig::default()
        })
        .await;
        let outcome = be
            .send_message(&delivery(&ans.uri("bob", Transport::Udp).unwrap()))
            .await;
        assert_eq!(status_of(&outcome), Some(200), "{outcome:?}");
        assert_eq!(
            drain(&mut rx).len(),
            1,
            "retransmissions are not new requests"
        );
    })
    .await;
}

#[tokio::test]
async fn tcp_connection_refused_is_a_transport_failure() {
    bounded(async {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let be = backend(SipConfig::default()).await;
        let start = Instant::now();
        let outcome = be
            .send_message(&delivery(&format!(
                "sip:bob@127.0.0.1:{port};transport=tcp"
            )))
            .await;
        match &outcome {
            Outcome::Failure { kind, detail, .. } => {
                assert_eq!(*kind, FailureKind::Transport, "{detail}");
                assert!(detail.contains("refused"), "{detail}");
            }
            o => panic!("{o:?}"),
        }
        assert!(start.elapsed() < Duration::from_secs(2));
    })
    .await;
}

#[tokio::test]
async fn tcp_connection_closed_by_the_peer_is_a_transport_failure() {
    bounded(async {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            // Read the request, then close without answering.
            if let Ok((mut s, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
            }
        });
        let be = backend(SipConfig::default()).await; // T1 500 ms: Timer F would be 32 s
        let start = Instant::now();
        let outcome = be
            .send_message(&delivery(&format!("sip:bob@{addr};transport=tcp")))
            .await;
        assert!(
            matches!(
                outcome,
                Outcome::Failure {
                    kind: FailureKind::Transport,
                    ..
                }
            ),
            "{outcome:?}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
    })
    .await;
}

#[tokio::test]
async fn redirect_recurses_to_the_contact() {
    bounded(async {
        let (ans, mut rx) = Answerer::start(AnswererConfig::status(200)).await.unwrap();
        let target = ans.uri("new", Transport::Udp).unwrap();
        let (redirector, mut rrx) = Answerer::start(AnswererConfig::with_policy(move |_| {
            Reply::status(302).with_header(
                "Contact",
                &format!("<sip:worse@127.0.0.1:9>;q=0.1, <{target}>;q=0.9"),
            )
        }))
        .await
        .unwrap();
        let be = backend(SipConfig::default()).await;
        let original = redirector.uri("old", Transport::Tcp).unwrap();
        let outcome = be.send_message(&delivery(&original)).await;
        assert_eq!(status_of(&outcome), Some(200), "{outcome:?}");
        let first = drain(&mut rrx);
        let second = drain(&mut rx);
        assert_eq!((first.len(), second.len()), (1, 1));
        assert!(
            second[0]
                .request_uri
                .eq_ignore_ascii_case(&ans.uri("new", Transport::Udp).unwrap())
        );
        assert_eq!(second[0].header("Call-ID"), first[0].header("Call-ID"));
        assert_eq!(second[0].header("From"), first[0].header("From"));
        assert_eq!(
            second[0].header("To"),
            Some(format!("<{original}>").as_str())
        );
        assert_eq!(second[0].header("CSeq"), Some("2 MESSAGE"));
        assert_ne!(second[0].header("Via"), first[0].header("Via"));
    })
    .await;
}

#[tokio::test]
async fn unresolved_redirects_report_the_last_3xx() {
    bounded(async {
        let (ans, mut rx) = Answerer::start(AnswererConfig::with_policy(|r| {
            // Every hop sends to a new user at the same answerer.
            let n = r.request_uri.len();
            Reply::status(301).with_header(
                "Contact",
                &format!(
                    "<{}>",
                    r.request_uri.replacen("sip:", &format!("sip:u{n}"), 1)
                ),
            )
        }))
        .await
        .unwrap();
        let be = backend(SipConfig::default()).await;
        let outcome = be
            .send_message(&delivery(&ans.uri("a", Transport::Udp).unwrap()))
            .await;
        assert_eq!(status_of(&outcome), Some(301), "{outcome:?}");
        assert!(header(&outcome, "Contact").is_some());
        // the original + 3 redirects
        assert_eq!(drain(&mut rx).len(), 4);
    })
    .await;
}

fn challenge_policy(code: u16, password: &'static str) -> AnswererConfig {
    let (challenge, answer) = if code == 401 {
        ("WWW-Authenticate", "Authorization")
    } else {
        ("Proxy-Authenticate", "Proxy-Authorization")
    };
    AnswererConfig::with_policy(move |r| match r.header(answer) {
        None => Reply::status(code).with_header(
            challenge,
            r#"Digest realm="iwf.test", nonce="abc123", qop="auth", opaque="xyz""#,
        ),
        Some(a) if auth::verify(a, password, &r.method) => Reply::status(200),
        Some(_) => Reply::status(403),
    })
}

fn creds(password: &str) -> Option<Credentials> {
    Some(Credentials {
        username: "iwf".into(),
        password: password.into(),
        realm: None,
    })
}

#[tokio::test]
async fn digest_challenges_are_answered_once() {
    bounded(async {
        for code in [401u16, 407] {
            let (ans, mut rx) = Answerer::start(challenge_policy(code, "secret"))
                .await
                .unwrap();
            let uri = ans.uri("bob", Transport::Udp).unwrap();

            let be = backend(SipConfig {
                credentials: creds("secret"),
                ..SipConfig::default()
            })
            .await;
            let outcome = be.send_message(&delivery(&uri)).await;
            assert_eq!(status_of(&outcome), Some(200), "{code}: {outcome:?}");
            let got = drain(&mut rx);
            assert_eq!(got.len(), 2);
            assert_eq!(got[1].header("CSeq"), Some("2 MESSAGE"));
            assert_eq!(got[1].header("Call-ID"), got[0].header("Call-ID"));

            // wrong password: the retry is refused and reported, no second retry
            let be = backend(SipConfig {
                credentials: creds("wrong"),
                ..SipConfig::default()
            })
            .await;
            let outcome = be.send_message(&delivery(&uri)).await;
            assert_eq!(status_of(&outcome), Some(403), "{code}: {outcome:?}");
            assert_eq!(drain(&mut rx).len(), 2);

            // no credentials: the challenge is the outcome
            let be = backend(SipConfig::default()).await;
            let outcome = be.send_message(&delivery(&uri)).await;
            assert_eq!(status_of(&outcome), Some(code), "{outcome:?}");
            assert!(
                header(&outcome, "WWW-Authenticate")
                    .or(header(&outcome, "Proxy-Authenticate"))
                    .is_some()
            );
            assert_eq!(drain(&mut rx).len(), 1);
        }
    })
    .await;
}

#[tokio::test]
async fn concurrent_tcp_deliveries_share_one_connection() {
    bounded(async {
        let (ans, mut rx) = Answerer::start(AnswererConfig::status(200)).await.unwrap();
        let be: Arc<dyn SipBackend> = Arc::new(backend(SipConfig::default()).await);
        let uri = ans.uri("bob", Transport::Tcp).unwrap();
        let mut tasks = vec![];
        for _ in 0..200 {
            let (be, d) = (be.clone(), delivery(&uri));
            tasks.push(tokio::spawn(async move { be.send_message(&d).await }));
        }
        for t in tasks {
            assert_eq!(status_of(&t.await.unwrap()), Some(200));
        }
        let got = drain(&mut rx);
        assert_eq!(got.len(), 200);
        let peers: std::collections::HashSet<_> = got.iter().map(|r| r.peer).collect();
        assert_eq!(peers.len(), 1, "{peers:?}");
    })
    .await;
}

async fn next_report(rx: &mut UnboundedReceiver<ReceivedRequest>) -> ReceivedRequest {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a request within 5 s")
        .expect("answerer running")
}

const SDP_OFFER: &[u8] =
    b"v=0\r\no=iwf 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=message 2855 TCP/MSRP *\r\na=path:msrp://127.0.0.1:2855/s1;tcp\r\n";
const SDP_ANSWER: &[u8] =
    b"v=0\r\no=ans 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=message 2856 TCP/MSRP *\r\na=path:msrp://127.0.0.1:2856/a1;tcp\r\n";

#[tokio::test]
async fn invite_gets_the_answer_is_acked_and_ends_with_bye() {
    bounded(async {
        let (ans, mut rx) =
            Answerer::start(AnswererConfig::with_policy(|r| match r.method.as_str() {
                "INVITE" => Reply::status(200)
                    .with_header("Contact", &format!("<{}>", r.request_uri))
                    .with_header("Record-Route", &format!("<{};lr>", r.request_uri))
                    .with_body("application/sdp", SDP_ANSWER),
                "ACK" => Reply::Ignore,
                _ => Reply::status(200),
            }))
            .await
            .unwrap();
        // The answerer record-routes itself: ACK and BYE follow that route set.
        let be = backend(SipConfig::default()).await;
        for transport in [Transport::Udp, Transport::Tcp] {
            let uri = ans.uri("bob", transport).unwrap();
            let mut d = delivery(&uri);
            d.mode = Mode::Large;
            let got = be
                .send_invite(&d, SDP_OFFER.to_vec(), "sip:iwf@127.0.0.1")
                .await;
            match &got.outcome {
                Outcome::Final { status, mode, .. } => {
                    assert_eq!((*status, *mode), (200, Mode::Large), "{got:?}");
                }
                o => panic!("{o:?}"),
            }
            assert_eq!(got.answer.as_deref(), Some(SDP_ANSWER));
            let invite = next_report(&mut rx).await;
            assert_eq!(invite.method, "INVITE");
            assert_eq!(invite.header("Contact"), Some("<sip:iwf@127.0.0.1>"));
            assert_eq!(invite.header("Content-Type"), Some("application/sdp"));
            assert_eq!(invite.body, SDP_OFFER);
            let ack = next_report(&mut rx).await;
            assert_eq!(ack.method, "ACK", "{transport}");
            assert_eq!(ack.header("CSeq"), Some("1 ACK"));
            assert_eq!(ack.header("Call-ID"), invite.header("Call-ID"));
            assert!(ack.header("To").unwrap().contains(";tag="));

            let session = got.session.expect("a dialog");
            assert_eq!(Some(session.call_id()), invite.header("Call-ID"));
            let bye = session.bye().await;
            assert!(matches!(bye, Outcome::Final { status: 200, .. }), "{bye:?}");
            let r = next_report(&mut rx).await;
            assert_eq!(r.method, "BYE");
            assert!(
                r.request_uri.eq_ignore_ascii_case(&uri),
                "{}",
                r.request_uri
            );
            assert_eq!(r.header("CSeq"), Some("2 BYE"));
            let route = r.header("Route").unwrap();
            assert!(
                route.eq_ignore_ascii_case(&format!("<{uri};lr>")),
                "{route}"
            );
            assert_eq!(r.header("From"), invite.header("From"));
            assert_eq!(r.header("To"), ack.header("To"));
        }
    })
    .await;
}

#[tokio::test]
async fn refused_invite_is_acked_and_has_no_session() {
    bounded(async {
        let (ans, mut rx) = Answerer::start(AnswererConfig::status(200)).await.unwrap(); // INVITE → 488
        let be = backend(SipConfig::default()).await;
        for transport in [Transport::Udp, Transport::Tcp] {
            let mut d = delivery(&ans.uri("bob", transport).unwrap());
            d.mode = Mode::Large;
            let got = be
                .send_invite(&d, SDP_OFFER.to_vec(), "sip:iwf@127.0.0.1")
                .await;
            assert!(
                matches!(
                    got.outcome,
                    Outcome::Final {
                        status: 488,
                        mode: Mode::Large,
                        ..
                    }
                ),
                "{got:?}"
            );
            assert!(got.session.is_none() && got.answer.is_none());
            let invite = next_report(&mut rx).await;
            let ack = next_report(&mut rx).await;
            assert_eq!(
                (invite.method.as_str(), ack.method.as_str()),
                ("INVITE", "ACK")
            );
            // the ACK of a non-2xx belongs to the INVITE transaction: same branch
            assert_eq!(ack.header("Via"), invite.header("Via"));
        }
    })
    .await;
}

#[tokio::test]
async fn silent_invite_ends_with_timer_b() {
    bounded(async {
        let (ans, _rx) = Answerer::start(AnswererConfig::silent()).await.unwrap();
        let be = backend(SipConfig {
            timers: timers(10),
            ..SipConfig::default()
        })
        .await;
        let got = be
            .send_invite(
                &delivery(&ans.uri("bob", Transport::Udp).unwrap()),
                SDP_OFFER.to_vec(),
                "sip:iwf@127.0.0.1",
            )
            .await;
        match got.outcome {
            Outcome::Failure { kind, detail, .. } => {
                assert_eq!(kind, FailureKind::Timeout);
                assert!(detail.contains("Timer B"), "{detail}");
            }
            o => panic!("{o:?}"),
        }
    })
    .await;
}

/// A CA and a leaf for `localhost` / 127.0.0.1 made with the openssl CLI, or `None`.
fn test_pki(dir: &std::path::Path) -> Option<(Vec<u8>, Vec<u8>, Vec<u8>)> {
    let run = |args: &[&str]| {
        std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .ok()?;
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ok = run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=iwf test CA",
            "-days",
            "2",
        ],
    ]
    .concat())
        && run(&[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "leaf.key",
                "-out",
                "leaf.csr",
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat())
        && run(&[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
    if !ok {
        return None;
    }
    let read = |f: &str| std::fs::read(dir.join(f)).ok();
    Some((read("ca.pem")?, read("leaf.pem")?, read("leaf.key")?))
}

#[tokio::test]
async fn tls_next_hop_with_a_configured_ca() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let Some((ca, cert, key)) = test_pki(dir.path()) else {
            eprintln!("note: openssl not usable; TLS test skipped");
            return;
        };
        let mut config = AnswererConfig::status(202);
        config.tls = Some(super::answerer::AnswererTls {
            addr: "127.0.0.1:0".parse().unwrap(),
            cert_chain_pem: cert,
            key_pem: key,
        });
        let (ans, mut rx) = Answerer::start(config).await.unwrap();
        let uri = ans.uri("bob", Transport::Tls).unwrap();

        let be = backend(SipConfig {
            tls: Some(super::config::TlsClient {
                ca_pem: Some(ca),
                ..Default::default()
            }),
            ..SipConfig::default()
        })
        .await;
        let outcome = be.send_message(&delivery(&uri)).await;
        assert_eq!(status_of(&outcome), Some(202), "{outcome:?}");
        let r = next_report(&mut rx).await;
        assert_eq!(r.transport, Transport::Tls);
        assert!(r.header("Via").unwrap().starts_with("SIP/2.0/TLS "));

        // Without the CA the certificate does not verify: a transport failure.
        let be = backend(SipConfig {
            tls: Some(super::config::TlsClient::default()),
            ..SipConfig::default()
        })
        .await;
        let outcome = be.send_message(&delivery(&uri)).await;
        assert!(
            matches!(
                outcome,
                Outcome::Failure {
                    kind: FailureKind::Transport,
                    ..
                }
            ),
            "{outcome:?}"
        );
        // And without TLS configured at all the next hop is refused up front.
        let be = backend(SipConfig::default()).await;
        match be.send_message(&delivery(&uri)).await {
            Outcome::Failure { kind, detail, .. } => {
                assert_eq!(kind, FailureKind::Transport);
                assert!(detail.contains("not configured"), "{detail}");
            }
            o => panic!("{o:?}"),
        }
    })
    .await;
}

/// A raw UDP peer that answers every request with `answers` in turn (each a status line
/// plus extra header lines and a body, after the request's Via/From/To/Call-ID/CSeq).
async fn scripted_udp_peer(answers: Vec<String>) -> std::net::SocketAddr {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        let Ok(Ok((n, from))) =
            tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf)).await
        else {
            return;
        };
        let req = String::from_utf8_lossy(&buf[..n]).into_owned();
        let copied: String = req
            .split("\r\n")
            .filter(|l| {
                let l = l.to_ascii_lowercase();
                ["via:", "from:", "to:", "call-id:", "cseq:"]
                    .iter()
                    .any(|p| l.starts_with(p))
            })
            .map(|l| format!("{l}\r\n"))
            .collect();
        for answer in answers {
            let (start, rest) = answer.split_once("\r\n").unwrap_or((&answer, ""));
            let wire = format!("{start}\r\n{copied}{rest}");
            let _ = sock.send_to(wire.as_bytes(), from).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    addr
}

/// RFC 3261 §18.1.2: a response that does not parse is no response. A 200 whose
/// Content-Length promises 10^20 octets, or a status code of 2000, is discarded: the
/// transaction ends in Timer F (a 4xx for the sender), never in a 2xx or a 5xx; and a good
/// final response after the garbage still counts.
#[tokio::test]
async fn malformed_responses_are_discarded() {
    bounded(async {
        let cases: Vec<(Vec<String>, Option<u16>)> = vec![
            (
                vec!["SIP/2.0 200 OK\r\nContent-Length: 100000000000000000000\r\n\r\n".into()],
                None,
            ),
            (
                vec!["SIP/2.0 200 OK\r\nContent-Length: 50\r\n\r\nshort".into()],
                None,
            ),
            (
                vec!["SIP/2.0 2000 OK\r\nContent-Length: 0\r\n\r\n".into()],
                None,
            ),
            (
                vec!["SIP/2.0 099 Odd\r\nContent-Length: 0\r\n\r\n".into()],
                None,
            ),
            (
                vec![
                    "SIP/2.0 2000 OK\r\nContent-Length: 0\r\n\r\n".into(),
                    "SIP/2.0 486 Busy Here\r\nContent-Length: 0\r\n\r\n".into(),
                ],
                Some(486),
            ),
        ];
        for (answers, want) in cases {
            let first = answers[0].lines().next().unwrap_or_default().to_string();
            let addr = scripted_udp_peer(answers).await;
            let be = backend(SipConfig {
                timers: timers(10),
                ..SipConfig::default()
            })
            .await;
            let outcome = be
                .send_message(&delivery(&format!("sip:bob@{addr};transport=udp")))
                .await;
            match want {
                Some(code) => assert_eq!(status_of(&outcome), Some(code), "{first}: {outcome:?}"),
                None => assert!(
                    matches!(
                        outcome,
                        Outcome::Failure {
                            kind: FailureKind::Timeout,
                            ..
                        }
                    ),
                    "{first}: {outcome:?}"
                ),
            }
        }
    })
    .await;
}

/// RFC 3261 §17.1.3: a response belongs to the MESSAGE transaction whose branch is in its
/// top Via and whose CSeq method is MESSAGE. A 200 for another branch, or with the right
/// branch under a second Via only, or for an INVITE, is not the answer; a 486 in compact
/// form (`v:` with two Via values in one line, `i:`, `f:`, `t:`) is.
#[tokio::test]
async fn responses_match_by_top_via_branch_and_cseq_method() {
    bounded(async {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let peer = tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            let (n, from) = sock.recv_from(&mut buf).await.unwrap();
            let req = String::from_utf8_lossy(&buf[..n]).into_owned();
            let header = |name: &str| {
                req.split("\r\n")
                    .find_map(|l| {
                        let (n, v) = l.split_once(':')?;
                        n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                    })
                    .unwrap()
            };
            let (via, call_id, from_h, to, cseq) = (
                header("via"),
                header("call-id"),
                header("from"),
                header("to"),
                header("cseq"),
            );
            let seq = cseq.split_whitespace().next().unwrap().to_string();
            let other_via = via.replace("branch=z9hG4bK", "branch=z9hG4bKother");
            let answers = [
                format!(
                    "SIP/2.0 200 OK\r\nVia: {other_via}\r\nFrom: {from_h}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq}\r\nContent-Length: 0\r\n\r\n"
                ),
                format!(
                    "SIP/2.0 200 OK\r\nVia: {other_via}\r\nVia: {via}\r\nFrom: {from_h}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq}\r\nContent-Length: 0\r\n\r\n"
                ),
                format!(
                    "SIP/2.0 200 OK\r\nVia: {via}\r\nFrom: {from_h}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {seq} INVITE\r\nContent-Length: 0\r\n\r\n"
                ),
                format!(
                    "SIP/2.0 486 Busy Here\r\nv: {via}, SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bKup\r\nf: {from_h}\r\nt: {to};tag=x\r\ni: {call_id}\r\nCSeq: {cseq}\r\nl: 0\r\n\r\n"
                ),
            ];
            for wire in answers {
                sock.send_to(wire.as_bytes(), from).await.unwrap();
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        });
        let be = backend(SipConfig {
            timers: timers(200),
            ..SipConfig::default()
        })
        .await;
        let outcome = be
            .send_message(&delivery(&format!("sip:bob@{addr};transport=udp")))
            .await;
        assert_eq!(status_of(&outcome), Some(486), "{outcome:?}");
        peer.await.unwrap();
    })
    .await;
}

/// A MESSAGE waiting on a silent UDP peer when the back end is stopped ends at once as a
/// transport failure, not at Timer F 32 s later.
#[tokio::test]
async fn stopping_the_back_end_ends_a_pending_udp_message() {
    bounded(async {
        let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let be = backend(SipConfig::default()).await;
        let d = delivery(&format!("sip:bob@{addr};transport=udp"));
        let stop = async {
            let mut buf = vec![0u8; 65536];
            silent.recv_from(&mut buf).await.unwrap();
            be.shutdown();
        };
        let (outcome, ()) = tokio::join!(be.send_message(&d), stop);
        match &outcome {
            Outcome::Failure { kind, detail, .. } => {
                assert_eq!(*kind, FailureKind::Transport, "{detail}");
                assert!(detail.contains("stopped"), "{detail}");
            }
            o => panic!("{o:?}"),
        }
    })
    .await;
}

/// A TCP peer that accepts and never reads: the MESSAGE's write blocks once the socket
/// buffers are full, and Timer F (64 × 10 ms) still ends the delivery as a timeout. The
/// connection, which may hold part of that request, is not used again: the next MESSAGE to
/// the peer opens a new one.
#[tokio::test]
async fn a_tcp_peer_that_never_reads_times_out_at_timer_f() {
    bounded(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted_tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
        let held = tokio::spawn(async move {
            let mut streams = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                streams.push(stream);
                accepted_tx.send(streams.len()).ok();
            }
        });
        let be = backend(SipConfig {
            timers: timers(10),
            ..SipConfig::default()
        })
        .await;
        let mut big = delivery(&format!("sip:bob@{addr};transport=tcp"));
        big.content.body = bytes::Bytes::from(vec![b'x'; 32 << 20]).into();
        let start = Instant::now();
        let outcome = be.send_message(&big).await;
        let timed_out = |o: &Outcome| {
            matches!(
                o,
                Outcome::Failure {
                    kind: FailureKind::Timeout,
                    ..
                }
            )
        };
        assert!(timed_out(&outcome), "{outcome:?}");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(accepted.recv().await, Some(1));
        let small = delivery(&format!("sip:bob@{addr};transport=tcp"));
        let outcome = be.send_message(&small).await;
        assert!(timed_out(&outcome), "{outcome:?}");
        assert_eq!(
            accepted.try_recv().ok(),
            Some(2),
            "the half-written connection was reused"
        );
        held.abort();
    })
    .await;
}
