//! EHLO, HELO and LHLO: who the client is, and which extensions we offer.

use std::borrow::Cow;

use super::Protocol;
use super::config::SmtpConfig;
use super::replies;
use super::session::{Flow, Hello, Session, State};

/// Which greeting command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verb {
    Ehlo,
    Helo,
    Lhlo,
}

/// The extension keywords, in the order they are listed (mapping-reference §6).
pub(crate) fn keywords(config: &SmtpConfig, tls_active: bool) -> Vec<String> {
    let mut k = vec![
        "PIPELINING".to_string(),
        format!("SIZE {}", config.limits.message_size),
        "8BITMIME".to_string(),
        "SMTPUTF8".to_string(),
        "ENHANCEDSTATUSCODES".to_string(),
        "DSN".to_string(),
        match config.deliver_by_min {
            Some(min) => format!("DELIVERBY {min}"),
            None => "DELIVERBY".to_string(),
        },
    ];
    if config.tls.is_some() && !tls_active {
        k.push("STARTTLS".to_string());
    }
    k
}

impl Session {
    /// EHLO/HELO (SMTP) or LHLO (LMTP). Starts afresh: any transaction is dropped
    /// (RFC 5321 §4.1.4).
    pub(super) fn hello(&mut self, verb: Verb, host: Cow<'_, str>) -> Flow {
        let protocol = self.shared.protocol;
        let fits = match protocol {
            Protocol::Smtp => verb != Verb::Lhlo,
            Protocol::Lmtp => verb == Verb::Lhlo,
        };
        if !fits {
            return self.reply(replies::wrong_hello(protocol));
        }
        self.state = State::Ready;
        self.hello = Some(Hello {
            host: host.into_owned(),
            esmtp: verb != Verb::Helo,
        });
        let name = &self.config().hostname;
        let reply = match verb {
            Verb::Helo => replies::helo(name),
            Verb::Ehlo | Verb::Lhlo => replies::ehlo(name, &keywords(self.config(), self.tls)),
        };
        self.reply(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_follow_the_config() {
        let mut config = SmtpConfig::default();
        assert_eq!(
            keywords(&config, false),
            [
                "PIPELINING",
                "SIZE 10485760",
                "8BITMIME",
                "SMTPUTF8",
                "ENHANCEDSTATUSCODES",
                "DSN",
                "DELIVERBY"
            ]
        );
        config.deliver_by_min = Some(60);
        config.tls = Some(
            super::super::tls_config_from_pem(
                include_bytes!("testdata/cert.pem"),
                include_bytes!("testdata/key.pem"),
            )
            .unwrap(),
        );
        let k = keywords(&config, false);
        assert!(k.contains(&"DELIVERBY 60".to_string()));
        assert_eq!(k.last().unwrap(), "STARTTLS");
        assert!(!keywords(&config, true).contains(&"STARTTLS".to_string()));
    }
}
