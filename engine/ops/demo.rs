//! The `iwf demo` CPM endpoint: a SIP answerer that takes MESSAGE and INVITE (answering
//! with an SDP whose `a=path` points at an in-process MSRP receiver) and prints every
//! request and every MSRP message it receives, so a newcomer sees both modes.

use std::sync::Arc;

use crate::msrp::{Receiver, ReceiverConfig};
use crate::sip::{Answerer, AnswererConfig, ReceivedRequest, Reply, answerer::default_reply};

/// The running demo endpoint; dropping it stops it.
pub struct DemoEndpoint {
    pub answerer: Answerer,
    pub msrp: Arc<Receiver>,
    /// Outbound-proxy URI that reaches the answerer.
    pub uri: String,
}

/// The SDP answer of the demo endpoint (RFC 4975 §8: we are the passive side).
pub fn sdp_answer(msrp_uri: &str, host: &str, port: u16) -> String {
    format!(
        "v=0\r\no=demo 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n\
         m=message {port} TCP/MSRP *\r\na=recvonly\r\na=accept-types:message/cpim text/plain\r\n\
         a=path:{msrp_uri}\r\n"
    )
}

/// Why the demo endpoint did not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The MSRP receiver could not bind.
    #[error(transparent)]
    Msrp(std::io::Error),
    /// The SIP answerer could not start.
    #[error(transparent)]
    Sip(std::io::Error),
    #[error("demo endpoint has no UDP address")]
    NoUdpAddress,
}

pub async fn start() -> Result<DemoEndpoint, DemoError> {
    let (receiver, mut messages) = Receiver::bind(
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        ReceiverConfig::default(),
    )
    .await
    .map_err(DemoError::Msrp)?;
    let msrp_addr = receiver.local_addr();
    let msrp_uri = receiver.uri("demo");
    let answer = sdp_answer(&msrp_uri, &msrp_addr.ip().to_string(), msrp_addr.port());
    // The 2xx to INVITE needs a Contact (the dialog's remote target for ACK and BYE); the
    // answerer's address is known once it is bound.
    let contact: Arc<std::sync::OnceLock<String>> = Arc::new(std::sync::OnceLock::new());
    let contact_in_policy = contact.clone();
    let policy = move |req: &ReceivedRequest| -> Reply {
        if req.method == "INVITE" {
            let c = contact_in_policy
                .get()
                .cloned()
                .unwrap_or_else(|| "<sip:demo@127.0.0.1>".into());
            Reply::status(200)
                .with_header("Contact", &c)
                .with_body("application/sdp", answer.as_bytes())
        } else {
            default_reply(200, req)
        }
    };
    let (answerer, mut received) = Answerer::start(AnswererConfig {
        udp: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
        ..AnswererConfig::with_policy(policy)
    })
    .await
    .map_err(DemoError::Sip)?;
    let uri = answerer
        .udp_addr()
        .map(|a| format!("sip:{a};transport=udp"))
        .ok_or(DemoError::NoUdpAddress)?;
    if let Some(a) = answerer.udp_addr() {
        let _ = contact.set(format!("<sip:demo@{a}>"));
    }
    tokio::spawn(async move {
        while let Some(req) = received.recv().await {
            if req.method == "ACK" {
                continue;
            }
            let mut text = format!(
                "\n--- SIP request received by the demo CPM endpoint ---\n{} {} SIP/2.0\n",
                req.method, req.request_uri
            );
            for (n, v) in &req.headers {
                text.push_str(&format!("{n}: {v}\n"));
            }
            text.push('\n');
            text.push_str(&String::from_utf8_lossy(&req.body));
            text.push_str("\n---\n");
            print_whole(&text);
        }
    });
    tokio::spawn(async move {
        while let Some(m) = messages.recv().await {
            print_whole(&format!(
                "\n--- MSRP message received by the demo CPM endpoint ({} bytes in {} chunk(s), Message-ID {}) ---\nContent-Type: {}\n\n{}\n---\n",
                m.content.len(),
                m.chunks,
                m.message_id,
                m.content_type.as_deref().unwrap_or("-"),
                String::from_utf8_lossy(&m.content)
            ));
        }
    });
    Ok(DemoEndpoint {
        answerer,
        msrp: Arc::new(receiver),
        uri,
    })
}

/// Writes `text` to stdout in one piece: `println!` of a long text goes out through stdout's
/// line buffer in several writes, between which another thread's output (or, on a shared
/// terminal, a log line on stderr) could land.
fn print_whole(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}
