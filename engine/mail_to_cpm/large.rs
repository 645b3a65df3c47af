//! Large Message Mode delivery (mapping reference §2): INVITE with an SDP offer, then, as
//! the active side (RFC 4975 §5.4), connect to the answer's `a=path`, send the CPIM
//! document in MSRP chunks, wait for every 200, and end the session with BYE. The outcome
//! is what the response rules map: the INVITE's final response when it fails, the MSRP
//! transaction's status or failure otherwise. The whole session is capped (LMM cap,
//! mapping reference §7 Q10).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::ids::Ids;

use crate::mail_to_cpm::outcome::{FailureKind, Layer, Outcome};
use crate::mail_to_cpm::plan::{Delivery, Mode};
use crate::msrp::{self, ClientConfig, OutgoingMessage};
use crate::render::sdp::{SdpOffer, msrp_path, parse_answer};
use crate::sip::SipBackend;

/// Settings of large-mode delivery.
#[derive(Debug, Clone)]
pub struct LargeConfig {
    /// Our address for the SDP `c=` line and `a=path`.
    pub host: IpAddr,
    /// The port in our `a=path` and m-line (we connect out; nothing listens there).
    pub port: u16,
    /// Octets per MSRP SEND.
    pub chunk_size: usize,
    /// Per-chunk response timeout (RFC 4975: 30 s with Failure-Report yes).
    pub response_timeout: Duration,
    /// Whole-session cap.
    pub session_cap: Duration,
    /// `a=max-size` we announce.
    pub max_size: u64,
    /// MSRP over TLS (RFC 4975 §6, `msrps:`): when set, our path is `msrps:`, the m-line
    /// `TCP/TLS/MSRP`, and the connection to the answer's path is TLS-verified with it.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// A TLS client configuration trusting the CA certificates in `ca_pem` (and nothing else).
pub use crate::tls::client_config_from_ca_pem as tls_client_config;

impl Default for LargeConfig {
    fn default() -> Self {
        LargeConfig {
            host: IpAddr::from([127, 0, 0, 1]),
            port: 2855,
            chunk_size: 2048,
            response_timeout: Duration::from_secs(30),
            session_cap: Duration::from_secs(120),
            max_size: 10 << 20,
            tls: None,
        }
    }
}

fn final_sip(status: u16, reason: &str) -> Outcome {
    Outcome::Final {
        protocol: Layer::Sip,
        status,
        reason: reason.into(),
        headers: Vec::new(),
        mode: Mode::Large,
    }
}

/// Delivers `d` in large mode and returns its outcome.
pub async fn deliver(
    sip: &dyn SipBackend,
    d: &Delivery,
    cfg: &LargeConfig,
    clock: &Arc<dyn Clock>,
    ids: &Arc<dyn Ids>,
) -> Outcome {
    let uncapped = deliver_uncapped(sip, d, cfg, clock, ids);
    match tokio::time::timeout(cfg.session_cap, uncapped).await {
        Ok(o) => o,
        Err(_) => Outcome::Failure {
            kind: FailureKind::SessionCap,
            detail: format!(
                "large-mode session exceeded {} s",
                cfg.session_cap.as_secs()
            ),
            mode: Mode::Large,
        },
    }
}

async fn deliver_uncapped(
    sip: &dyn SipBackend,
    d: &Delivery,
    cfg: &LargeConfig,
    clock: &Arc<dyn Clock>,
    ids: &Arc<dyn Ids>,
) -> Outcome {
    let session = ids.ident();
    let tls = cfg.tls.clone().map(tokio_rustls::TlsConnector::from);
    let local_path = msrp_path(cfg.host, cfg.port, &session, tls.is_some());
    let offer = SdpOffer {
        session_id: ids.bits() >> 32,
        host: cfg.host,
        port: cfg.port,
        session_path: local_path.clone(),
        accept_types: vec!["message/cpim".into()],
        accept_wrapped_types: vec!["*".into()],
        max_size: Some(cfg.max_size),
        sendonly: true,
        setup_active: true,
        tls: tls.is_some(),
    };
    let contact = format!("sip:iwf@{}", cfg.host);
    let inv = sip
        .send_invite(d, offer.render().into_bytes(), &contact)
        .await;
    let ok = matches!(inv.outcome, Outcome::Final { status, .. } if (200..300).contains(&status));
    if !ok {
        return inv.outcome;
    }
    let sess = inv.session;
    let outcome = async {
        let Some(answer) = inv.answer else {
            return final_sip(488, "2xx without an SDP answer");
        };
        let answer = match parse_answer(&String::from_utf8_lossy(&answer)) {
            Ok(a) => a,
            Err(e) => return final_sip(488, &format!("unusable SDP answer: {e}")),
        };
        if answer.is_rejected() {
            return final_sip(488, "message stream refused (port 0)");
        }
        let Some(to_path) = answer.next_hop().map(str::to_string) else {
            return final_sip(488, "SDP answer without a=path");
        };
        let stream = match msrp::connect(&to_path, tls.as_ref(), cfg.response_timeout).await {
            Ok(s) => s,
            Err(e) => return msrp::SendOutcome::from(e).into_outcome(),
        };
        let mut client = msrp::Client::new(
            stream,
            ClientConfig {
                chunk_size: cfg.chunk_size.max(1),
                response_timeout: cfg.response_timeout,
                clock: clock.clone(),
                ids: ids.clone(),
                ..ClientConfig::default()
            },
        );
        let mut msg = OutgoingMessage::new(to_path, local_path, d.content.content_type.clone());
        msg.success_report = d.success_report;
        client
            .send(&msg, d.content.body.clone())
            .await
            .into_outcome()
    }
    .await;
    if let Some(s) = sess {
        let _ = s.bye().await;
    }
    outcome
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;
    use crate::mail_to_cpm::plan::Content;
    use crate::msrp::{Receiver, ReceiverConfig};
    use crate::sip::{Answerer, AnswererConfig, ReceivedRequest, Reply, RsipBackend, SipConfig};

    const CERT: &[u8] = include_bytes!("../smtp/testdata/cert.pem");
    const KEY: &[u8] = include_bytes!("../smtp/testdata/key.pem");

    /// A TLS front for the plain MSRP receiver: what an `msrps:` peer looks like on the wire.
    async fn tls_front(backend: std::net::SocketAddr) -> std::net::SocketAddr {
        let acceptor =
            tokio_rustls::TlsAcceptor::from(crate::smtp::tls_config_from_pem(CERT, KEY).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        addr
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn msrp_over_tls_delivers_the_whole_message() {
        let (receiver, mut messages) = Receiver::bind(
            std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            ReceiverConfig::default(),
        )
        .await
        .unwrap();
        let front = tls_front(receiver.local_addr()).await;
        let answer = format!(
            "v=0\r\no=peer 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=message {} TCP/TLS/MSRP *\r\na=accept-types:message/cpim\r\n\
             a=path:msrps://127.0.0.1:{}/peer;tcp\r\n",
            front.port(),
            front.port()
        );
        let offers: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = offers.clone();
        let (answerer, _rx) = Answerer::start(AnswererConfig {
            udp: Some("127.0.0.1:0".parse().unwrap()),
            ..AnswererConfig::with_policy(move |req: &ReceivedRequest| match req.method.as_str() {
                "INVITE" => {
                    seen.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&req.body).into_owned());
                    Reply::status(200)
                        .with_header("Contact", "<sip:peer@127.0.0.1>")
                        .with_body("application/sdp", answer.as_bytes())
                }
                _ => crate::sip::answerer::default_reply(200, req),
            })
        })
        .await
        .unwrap();
        let backend = RsipBackend::start(
            SipConfig {
                outbound_proxy: Some(format!(
                    "sip:{};transport=udp",
                    answerer.udp_addr().unwrap()
                )),
                ..SipConfig::default()
            },
            crate::clock::system(),
            crate::ids::random(),
        )
        .await
        .unwrap();
        let body: Vec<u8> = (0..30_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let delivery = Delivery {
            recipient: "+15551234567@cpm.example.net".into(),
            mode: Mode::Large,
            request_uri: "tel:+15551234567".into(),
            headers: vec![("From".into(), "<sip:a@iwf.example.net>".into())],
            content: Content {
                content_type: "message/cpim".into(),
                body: body.clone().into(),
            },
            cpim_inner: None,
            imdn_message_id: None,
            imdn_dispositions: Vec::new(),
            success_report: false,
        };
        let cfg = LargeConfig {
            tls: Some(tls_client_config(CERT).unwrap()),
            response_timeout: Duration::from_secs(5),
            ..LargeConfig::default()
        };
        let outcome = deliver(
            &backend,
            &delivery,
            &cfg,
            &crate::clock::system(),
            &crate::ids::random(),
        )
        .await;
        assert!(
            matches!(
                outcome,
                Outcome::Final {
                    protocol: Layer::Msrp,
                    status: 200,
                    ..
                }
            ),
            "{outcome:?}"
        );
        let got = tokio::time::timeout(Duration::from_secs(5), messages.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got.content[..], &body[..], "byte for byte through TLS");
        let offer = offers.lock().unwrap()[0].clone();
        assert!(offer.contains("m=message 2855 TCP/TLS/MSRP *"), "{offer}");
        assert!(offer.contains("a=path:msrps://127.0.0.1:2855/"), "{offer}");
    }

    #[tokio::test]
    async fn an_msrps_path_without_tls_configured_is_a_clear_failure() {
        let stream =
            crate::msrp::connect("msrps://127.0.0.1:9/x;tcp", None, Duration::from_secs(1)).await;
        let outcome = crate::msrp::SendOutcome::from(stream.err().unwrap()).into_outcome();
        assert!(
            matches!(
                outcome,
                Outcome::Failure {
                    kind: FailureKind::MsrpConnect,
                    ..
                }
            ),
            "{outcome:?}"
        );
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        assert!(tls_client_config(b"not a certificate").is_err());
    }
}
