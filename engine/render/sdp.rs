//! SDP for Large Message Mode: the offer the IWF puts in its INVITE and the parts of
//! the answer it needs (RFC 4975 §8, RFC 4566 syntax; mapping-reference §2).
//!
//! The offer has one `m=message` line whose port is the port of `a=path` and a `c=`
//! with the path's host, as RFC 4975 §8.1 asks; [`SdpOffer::render`] writes exactly the
//! mapping-reference example. [`parse_answer`] reads the first `m=message` section of
//! the answer: its port (`0` = media rejected), transport, connection address
//! (media-level `c=` over session-level) and the `a=path`, `a=accept-types`,
//! `a=accept-wrapped-types`, `a=max-size` and `a=setup` attributes. Other media lines
//! and attributes are skipped.

use std::fmt::Write as _;
use std::net::IpAddr;

/// The SDP offer for an MSRP session where the IWF sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpOffer {
    /// `o=` session id and version.
    pub session_id: u64,
    /// Our address: `o=` and `c=`; must be the host of `session_path`.
    pub host: IpAddr,
    /// m-line port; must be the port of `session_path`.
    pub port: u16,
    /// Our MSRP URI (`a=path`), e.g. from [`msrp_path`].
    pub session_path: String,
    /// `a=accept-types`; empty renders `*`.
    pub accept_types: Vec<String>,
    /// `a=accept-wrapped-types`; empty leaves the line out.
    pub accept_wrapped_types: Vec<String>,
    /// `a=max-size` in octets.
    pub max_size: Option<u64>,
    /// `a=sendonly`.
    pub sendonly: bool,
    /// `a=setup:active` (RFC 6135: we open the connection).
    pub setup_active: bool,
    /// `TCP/TLS/MSRP` (msrps) instead of `TCP/MSRP`.
    pub tls: bool,
}

/// `msrp://host:port/session;tcp` (`msrps` with TLS; IPv6 hosts bracketed).
pub fn msrp_path(host: IpAddr, port: u16, session: &str, tls: bool) -> String {
    let scheme = if tls { "msrps" } else { "msrp" };
    match host {
        IpAddr::V4(h) => format!("{scheme}://{h}:{port}/{session};tcp"),
        IpAddr::V6(h) => format!("{scheme}://[{h}]:{port}/{session};tcp"),
    }
}

impl SdpOffer {
    /// The offer body, CRLF line ends, in the order of the mapping-reference example.
    pub fn render(&self) -> String {
        let ip = match self.host {
            IpAddr::V4(_) => "IP4",
            IpAddr::V6(_) => "IP6",
        };
        let proto = if self.tls { "TCP/TLS/MSRP" } else { "TCP/MSRP" };
        let mut s = String::with_capacity(320);
        let mut line = |l: std::fmt::Arguments<'_>| {
            let _ = s.write_fmt(l);
            s.push_str("\r\n");
        };
        line(format_args!("v=0"));
        line(format_args!(
            "o=iwf {0} {0} IN {ip} {1}",
            self.session_id, self.host
        ));
        line(format_args!("s=-"));
        line(format_args!("c=IN {ip} {}", self.host));
        line(format_args!("t=0 0"));
        line(format_args!("m=message {} {proto} *", self.port));
        if self.sendonly {
            line(format_args!("a=sendonly"));
        }
        let accept = if self.accept_types.is_empty() {
            "*".to_owned()
        } else {
            self.accept_types.join(" ")
        };
        line(format_args!("a=accept-types:{accept}"));
        if !self.accept_wrapped_types.is_empty() {
            line(format_args!(
                "a=accept-wrapped-types:{}",
                self.accept_wrapped_types.join(" ")
            ));
        }
        line(format_args!("a=path:{}", self.session_path));
        if let Some(max) = self.max_size {
            line(format_args!("a=max-size:{max}"));
        }
        if self.setup_active {
            line(format_args!("a=setup:active"));
        }
        s
    }
}

/// What the IWF needs from the SDP answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SdpAnswer {
    /// Connection address: the message section's `c=`, else the session's.
    pub connection: Option<String>,
    /// m-line port; `0` means the media was rejected.
    pub port: u16,
    /// m-line transport, e.g. `TCP/MSRP` or `TCP/TLS/MSRP`.
    pub proto: String,
    /// `a=path` URIs in order; the first is where to connect.
    pub paths: Vec<String>,
    pub accept_types: Vec<String>,
    pub accept_wrapped_types: Vec<String>,
    pub max_size: Option<u64>,
    /// `a=setup` value, if any.
    pub setup: Option<String>,
}

impl SdpAnswer {
    /// The answerer refused the message stream (m-line port 0).
    pub fn is_rejected(&self) -> bool {
        self.port == 0
    }

    /// The URI to connect to and put in To-Path: the first `a=path` URI.
    pub fn next_hop(&self) -> Option<&str> {
        self.paths.first().map(String::as_str)
    }
}

/// Why an answer is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("SDP line is not `<letter>=<value>`: {0:?}")]
    BadLine(String),
    #[error("no m=message line in the answer")]
    NoMessageMedia,
    #[error("m=message line is malformed: {0:?}")]
    BadMediaLine(String),
    #[error("m=message accepted (port {0}) but no a=path")]
    MissingPath(u16),
    #[error("a={0} has an invalid value {1:?}")]
    BadAttribute(&'static str, String),
}

/// Parses an SDP answer (CRLF or LF line ends). See the module docs.
pub fn parse_answer(sdp: &str) -> Result<SdpAnswer, SdpError> {
    let mut session_c: Option<String> = None;
    let mut media_c: Option<String> = None;
    let mut answer: Option<SdpAnswer> = None;
    // Whether the lines being read belong to the first m=message section.
    let mut in_message = false;
    // Before the first m= line: session-level.
    let mut in_session = true;
    for raw in sdp.split('\n') {
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let (kind, value) = match line.as_bytes() {
            [k, b'=', ..] if k.is_ascii_lowercase() => (*k, line.get(2..).unwrap_or_default()),
            _ => return Err(SdpError::BadLine(line.to_owned())),
        };
        match kind {
            b'm' => {
                in_session = false;
                let is_message = value.split(' ').next() == Some("message");
                in_message = is_message && answer.is_none();
                if in_message {
                    answer = Some(parse_m_line(value)?);
                }
            }
            b'c' if in_session => session_c = Some(connection_address(value)?),
            b'c' if in_message => media_c = Some(connection_address(value)?),
            b'a' if in_message => {
                if let Some(a) = answer.as_mut() {
                    attribute(a, value)?;
                }
            }
            _ => {}
        }
    }
    let mut a = answer.ok_or(SdpError::NoMessageMedia)?;
    a.connection = media_c.or(session_c);
    if !a.is_rejected() && a.paths.is_empty() {
        return Err(SdpError::MissingPath(a.port));
    }
    Ok(a)
}

/// `message <port>[/<n>] <proto> <fmt> ...`
fn parse_m_line(value: &str) -> Result<SdpAnswer, SdpError> {
    let bad = || SdpError::BadMediaLine(value.to_owned());
    let mut it = value.split_whitespace();
    let _media = it.next();
    let port = it.next().ok_or_else(bad)?;
    let port = port.split('/').next().unwrap_or_default();
    let port: u16 = port.parse().map_err(|_| bad())?;
    let proto = it.next().ok_or_else(bad)?;
    if it.next().is_none() {
        return Err(bad());
    }
    Ok(SdpAnswer {
        port,
        proto: proto.to_owned(),
        ..SdpAnswer::default()
    })
}

/// `IN IP4 <addr>` → `<addr>` (TTL/count suffixes dropped).
fn connection_address(value: &str) -> Result<String, SdpError> {
    let parts: Vec<&str> = value.split_whitespace().collect();
    match parts.as_slice() {
        ["IN", "IP4" | "IP6", addr] => Ok(addr.split('/').next().unwrap_or_default().to_owned()),
        _ => Err(SdpError::BadLine(format!("c={value}"))),
    }
}

fn attribute(a: &mut SdpAnswer, value: &str) -> Result<(), SdpError> {
    let (name, val) = value.split_once(':').unwrap_or((value, ""));
    let words = || {
        val.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    match name {
        "path" => a.paths.extend(words()),
        "accept-types" => a.accept_types = words(),
        "accept-wrapped-types" => a.accept_wrapped_types = words(),
        "max-size" => {
            let v = val.trim();
            a.max_size = Some(
                v.parse()
                    .map_err(|_| SdpError::BadAttribute("max-size", v.to_owned()))?,
            );
        }
        "setup" => a.setup = Some(val.trim().to_owned()),
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// mapping-reference §2, the SDP of the INVITE.
    const MAPPING_S2_OFFER: &str = "v=0
o=iwf 2890844526 2890844526 IN IP4 192.0.2.10
s=-
c=IN IP4 192.0.2.10
t=0 0
m=message 2855 TCP/MSRP *
a=sendonly
a=accept-types:message/cpim
a=accept-wrapped-types:*
a=path:msrp://192.0.2.10:2855/s8Kf02jqx;tcp
a=max-size:5242880
";

    fn crlf(s: &str) -> String {
        s.replace('\n', "\r\n")
    }

    fn offer() -> SdpOffer {
        let host: IpAddr = "192.0.2.10".parse().expect("ip");
        SdpOffer {
            session_id: 2890844526,
            host,
            port: 2855,
            session_path: msrp_path(host, 2855, "s8Kf02jqx", false),
            accept_types: vec!["message/cpim".into()],
            accept_wrapped_types: vec!["*".into()],
            max_size: Some(5242880),
            sendonly: true,
            setup_active: false,
            tls: false,
        }
    }

    #[test]
    fn renders_the_mapping_reference_offer_exactly() {
        assert_eq!(offer().render(), crlf(MAPPING_S2_OFFER));
    }

    #[test]
    fn offer_variants() {
        let v6: IpAddr = "2001:db8::a".parse().expect("ip");
        let cases: &[(&str, SdpOffer, &[&str])] = &[
            (
                "tls + setup",
                SdpOffer {
                    tls: true,
                    setup_active: true,
                    session_path: msrp_path(offer().host, 2855, "s8Kf02jqx", true),
                    ..offer()
                },
                &[
                    "m=message 2855 TCP/TLS/MSRP *",
                    "a=path:msrps://192.0.2.10:2855/s8Kf02jqx;tcp",
                    "a=max-size:5242880\r\na=setup:active\r\n",
                ],
            ),
            (
                "ipv6",
                SdpOffer {
                    host: v6,
                    session_path: msrp_path(v6, 2855, "s", false),
                    ..offer()
                },
                &[
                    "o=iwf 2890844526 2890844526 IN IP6 2001:db8::a\r\n",
                    "c=IN IP6 2001:db8::a\r\n",
                    "a=path:msrp://[2001:db8::a]:2855/s;tcp\r\n",
                ],
            ),
            (
                "minimal",
                SdpOffer {
                    accept_types: vec![],
                    accept_wrapped_types: vec![],
                    max_size: None,
                    sendonly: false,
                    ..offer()
                },
                &[
                    "m=message 2855 TCP/MSRP *\r\na=accept-types:*\r\na=path:msrp://192.0.2.10:2855/s8Kf02jqx;tcp\r\n",
                ],
            ),
        ];
        for (name, o, want) in cases {
            let s = o.render();
            for w in *want {
                assert!(s.contains(w), "{name}: {w:?} not in\n{s}");
            }
            if *name == "minimal" {
                assert!(
                    !s.contains("sendonly") && !s.contains("max-size") && !s.contains("wrapped"),
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn our_offer_parses_as_an_answer() {
        let a = parse_answer(&offer().render()).expect("parse");
        assert_eq!(a.next_hop(), Some("msrp://192.0.2.10:2855/s8Kf02jqx;tcp"));
        assert_eq!(a.max_size, Some(5242880));
        assert_eq!(a.accept_wrapped_types, ["*"]);
    }

    #[test]
    fn answers() {
        struct Case {
            name: &'static str,
            sdp: &'static str,
            port: u16,
            conn: Option<&'static str>,
            paths: &'static [&'static str],
            accept: &'static [&'static str],
        }
        let cases = [
            Case {
                name: "mapping §2 answer",
                sdp: "v=0\no=- 1 1 IN IP4 198.51.100.7\ns=-\nc=IN IP4 198.51.100.7\nt=0 0\nm=message 2855 TCP/MSRP *\na=accept-types:message/cpim text/plain\na=path:msrp://198.51.100.7:2855/rA9xq;tcp\n",
                port: 2855,
                conn: Some("198.51.100.7"),
                paths: &["msrp://198.51.100.7:2855/rA9xq;tcp"],
                accept: &["message/cpim", "text/plain"],
            },
            Case {
                name: "kamailio bench peer",
                sdp: "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=message 2855 TCP/MSRP *\r\na=accept-types:*\r\na=path:msrp://127.0.0.1:2855/k0cc175b9c0f1b6a831c399e269772661;tcp\r\n",
                port: 2855,
                conn: Some("127.0.0.1"),
                paths: &["msrp://127.0.0.1:2855/k0cc175b9c0f1b6a831c399e269772661;tcp"],
                accept: &["*"],
            },
            Case {
                name: "relay path, media c=, audio first",
                sdp: "v=0\r\no=- 1 1 IN IP4 203.0.113.1\r\ns=-\r\nc=IN IP4 203.0.113.1\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0\r\nc=IN IP4 192.0.2.99\r\na=path:msrp://wrong:1/x;tcp\r\nm=message 7394 TCP/TLS/MSRP *\r\nc=IN IP4 198.51.100.9\r\na=accept-types: message/cpim\r\na=path:msrps://relay.example.net:7394/r1;tcp msrps://bob.example.net:7777/b2;tcp\r\na=setup:passive\r\nm=message 9 TCP/MSRP *\r\na=path:msrp://second:9/y;tcp\r\n",
                port: 7394,
                conn: Some("198.51.100.9"),
                paths: &[
                    "msrps://relay.example.net:7394/r1;tcp",
                    "msrps://bob.example.net:7777/b2;tcp",
                ],
                accept: &["message/cpim"],
            },
            Case {
                name: "rejected media",
                sdp: "v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nt=0 0\r\nm=message 0 TCP/MSRP *\r\n",
                port: 0,
                conn: None,
                paths: &[],
                accept: &[],
            },
        ];
        for c in cases {
            let a = parse_answer(c.sdp).unwrap_or_else(|e| panic!("{}: {e}", c.name));
            assert_eq!(a.port, c.port, "{}", c.name);
            assert_eq!(a.is_rejected(), c.port == 0, "{}", c.name);
            assert_eq!(a.connection.as_deref(), c.conn, "{}", c.name);
            assert_eq!(a.paths, c.paths, "{}", c.name);
            assert_eq!(a.accept_types, c.accept, "{}", c.name);
        }
        let a = parse_answer(cases_relay()).expect("parse");
        assert_eq!(
            (a.proto.as_str(), a.setup.as_deref()),
            ("TCP/TLS/MSRP", Some("passive"))
        );
    }

    fn cases_relay() -> &'static str {
        "v=0\r\nm=message 7394 TCP/TLS/MSRP *\r\na=path:msrps://r:1/x;tcp\r\na=setup:passive\r\n"
    }

    #[test]
    fn answer_errors() {
        let cases: &[(&str, SdpError)] = &[
            (
                "v=0\r\nm=audio 49170 RTP/AVP 0\r\n",
                SdpError::NoMessageMedia,
            ),
            ("", SdpError::NoMessageMedia),
            (
                "v=0\r\nm=message 2855 TCP/MSRP *\r\na=accept-types:*\r\n",
                SdpError::MissingPath(2855),
            ),
            (
                "m=message x TCP/MSRP *\r\n",
                SdpError::BadMediaLine("message x TCP/MSRP *".into()),
            ),
            (
                "m=message 2855 TCP/MSRP\r\n",
                SdpError::BadMediaLine("message 2855 TCP/MSRP".into()),
            ),
            (
                "m=message 99999 TCP/MSRP *\r\n",
                SdpError::BadMediaLine("message 99999 TCP/MSRP *".into()),
            ),
            ("v=0\r\nnot sdp\r\n", SdpError::BadLine("not sdp".into())),
            ("c=IN X25 foo\r\n", SdpError::BadLine("c=IN X25 foo".into())),
            (
                "m=message 1 TCP/MSRP *\r\na=path:msrp://a:1/x;tcp\r\na=max-size:big\r\n",
                SdpError::BadAttribute("max-size", "big".into()),
            ),
        ];
        for (sdp, want) in cases {
            assert_eq!(parse_answer(sdp).as_ref().err(), Some(want), "{sdp:?}");
        }
    }
}
