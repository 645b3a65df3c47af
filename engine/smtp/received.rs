//! The `Received:` trace header we prepend to every message (RFC 5321 §4.4).
//!
//! ```text
//! Received: from <helo> ([<ip>])
//!   by <hostname> with <protocol> id <id>;
//!   <RFC 5322 date>
//! ```
//! Continuation lines start with a tab. The client's IP is written as an address literal
//! (`[192.0.2.1]`, `[IPv6:2001:db8::1]`), the TCP-info of RFC 5321's `Extended-Domain`. The protocol name is from the IANA "Mail
//! Transmission Types" registry (RFC 3848, RFC 6531 §4.3). The HELO argument is the only
//! client-chosen text in it and is reduced to printable ASCII without comment delimiters, so
//! a client cannot inject a line break, fold, or close the comment.

use std::net::IpAddr;

use chrono::{DateTime, Utc};

use super::Protocol;

/// What goes into one Received: header.
pub(crate) struct Trace<'a> {
    pub helo: &'a str,
    pub ip: Option<IpAddr>,
    pub hostname: &'a str,
    /// From [`with_protocol`].
    pub with: &'static str,
    pub id: &'a str,
    pub date: DateTime<Utc>,
}

/// The header, folded, CRLF-terminated.
pub(crate) fn header(t: &Trace<'_>) -> String {
    let helo = sanitize(t.helo);
    let ip = match t.ip {
        Some(IpAddr::V4(ip)) => format!(" ([{ip}])"),
        Some(IpAddr::V6(ip)) => format!(" ([IPv6:{ip}])"),
        None => String::new(),
    };
    format!(
        "Received: from {helo}{ip}\r\n\tby {host} with {with} id {id};\r\n\t{date}\r\n",
        host = sanitize(t.hostname),
        with = t.with,
        id = sanitize(t.id),
        date = t.date.to_rfc2822(),
    )
}

/// The `with` keyword: SMTP (after HELO), ESMTP, LMTP, with S for TLS and A for an
/// authenticated client, and the UTF8 prefix for an SMTPUTF8 transaction.
pub(crate) fn with_protocol(
    protocol: Protocol,
    esmtp: bool,
    tls: bool,
    authenticated: bool,
    smtputf8: bool,
) -> &'static str {
    // Index: utf8 * 4 + tls * 2 + auth, see RFC 3848 and RFC 6531 §4.3.
    const ESMTP: [&str; 8] = [
        "ESMTP",
        "ESMTPA",
        "ESMTPS",
        "ESMTPSA",
        "UTF8SMTP",
        "UTF8SMTPA",
        "UTF8SMTPS",
        "UTF8SMTPSA",
    ];
    const LMTP: [&str; 8] = [
        "LMTP",
        "LMTPA",
        "LMTPS",
        "LMTPSA",
        "UTF8LMTP",
        "UTF8LMTPA",
        "UTF8LMTPS",
        "UTF8LMTPSA",
    ];
    let i = usize::from(smtputf8) * 4 + usize::from(tls) * 2 + usize::from(authenticated);
    match protocol {
        Protocol::Lmtp => LMTP[i],
        Protocol::Smtp if !esmtp => "SMTP",
        Protocol::Smtp => ESMTP[i],
    }
}

/// Printable ASCII only, no whitespace and no `(`, `)`, `\` (they would end or escape the
/// comment); anything else becomes `?`. At most 255 characters (a domain's maximum).
fn sanitize(s: &str) -> String {
    let out: String = s
        .chars()
        .take(255)
        .map(|c| {
            if c.is_ascii_graphic() && !matches!(c, '(' | ')' | '\\' | ';') {
                c
            } else {
                '?'
            }
        })
        .collect();
    if out.is_empty() {
        "unknown".to_string()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn trace(helo: &str, ip: Option<IpAddr>) -> String {
        header(&Trace {
            helo,
            ip,
            hostname: "iwf.example.net",
            with: "ESMTPS",
            id: "0000ABCD000001",
            date: Utc.with_ymd_and_hms(2024, 3, 5, 10, 52, 37).unwrap(),
        })
    }

    #[test]
    fn folded_header() {
        assert_eq!(
            trace("mail.example.org", Some("192.0.2.1".parse().unwrap())),
            "Received: from mail.example.org ([192.0.2.1])\r\n\
             \tby iwf.example.net with ESMTPS id 0000ABCD000001;\r\n\
             \tTue, 5 Mar 2024 10:52:37 +0000\r\n"
        );
        assert!(
            trace("[IPv6:::1]", Some("::1".parse().unwrap()))
                .starts_with("Received: from [IPv6:::1] ([IPv6:::1])\r\n")
        );
    }

    #[test]
    fn helo_cannot_inject() {
        for evil in [
            "a\r\nX-Evil: 1",
            "a\nb",
            "a) by forged (",
            "a;b",
            "\u{7f}\u{0}",
            "ünïcode",
            "",
        ] {
            let h = trace(evil, None);
            // exactly three lines, the header name once, no stray CR/LF
            assert_eq!(h.matches("\r\n").count(), 3, "{h:?}");
            assert_eq!(h.matches('\n').count(), 3, "{h:?}");
            assert_eq!(h.matches('\r').count(), 3, "{h:?}");
            assert!(!h[15..].contains('('), "{h:?}");
            assert!(!h.contains("X-Evil: "), "{h:?}");
        }
        assert!(trace(&"x".repeat(5000), None).len() < 400);
    }

    #[test]
    fn protocol_names() {
        use Protocol::*;
        assert_eq!(with_protocol(Smtp, false, false, false, false), "SMTP");
        assert_eq!(with_protocol(Smtp, true, false, false, false), "ESMTP");
        assert_eq!(with_protocol(Smtp, true, true, false, false), "ESMTPS");
        assert_eq!(with_protocol(Smtp, true, true, true, false), "ESMTPSA");
        assert_eq!(with_protocol(Smtp, true, false, false, true), "UTF8SMTP");
        assert_eq!(with_protocol(Lmtp, true, false, false, false), "LMTP");
        assert_eq!(with_protocol(Lmtp, true, true, false, true), "UTF8LMTPS");
    }
}
