//! Handing a mail to the configured smarthost (`host:port`) over SMTP, with mail-send: the
//! DSNs iwf owes, and the recipients a rule relays as mail (`mailbox`, e.g. postmaster).
//! The smarthost's queue is the durable one: a caller answers its own client only after
//! [`send`] returned, and maps [`SendError`] to a reply that loses nothing.

use std::time::Duration;

/// Why the smarthost did not take a mail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("smarthost `{0}` is not host:port")]
    Address(String),
    /// The smarthost answered with a refusal: `code` is its reply code.
    #[error("smarthost refused: {code} {text}")]
    Refused { code: u16, text: String },
    /// Connection, TLS or protocol trouble: nothing was accepted.
    #[error("smarthost unreachable or broken: {0}")]
    Unreachable(String),
}

impl SendError {
    /// A refusal the smarthost says is permanent (5xx).
    pub fn is_permanent(&self) -> bool {
        matches!(self, SendError::Refused { code, .. } if *code >= 500)
    }
}

/// Sends `message` as it is from `from` (may be empty: `MAIL FROM:<>`) to `to`.
pub async fn send(
    smarthost: &str,
    helo: &str,
    from: &str,
    to: &[&str],
    message: Vec<u8>,
) -> Result<(), SendError> {
    let (host, port) = smarthost
        .rsplit_once(':')
        .and_then(|(h, p)| {
            Some((
                h.trim_matches(['[', ']']).to_string(),
                p.parse::<u16>().ok()?,
            ))
        })
        .ok_or_else(|| SendError::Address(smarthost.to_string()))?;
    let builder = mail_send::SmtpClientBuilder::new(host, port)
        .map_err(|e| SendError::Unreachable(e.to_string()))?
        .implicit_tls(false)
        .helo_host(helo)
        .timeout(Duration::from_secs(60));
    let mut client = builder
        .connect_plain()
        .await
        .map_err(|e| SendError::Unreachable(e.to_string()))?;
    let message = mail_send::smtp::message::Message::new(from, to.iter().copied(), message);
    client.send(message).await.map_err(|e| match e {
        mail_send::Error::UnexpectedReply(r) => SendError::Refused {
            code: r.code(),
            text: crate::sip::response::clean_peer_text(r.message()),
        },
        e => SendError::Unreachable(e.to_string()),
    })?;
    let _ = client.quit().await;
    Ok(())
}
