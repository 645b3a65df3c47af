//! An incoming SIP request as the reverse direction sees it: method, Request-URI, headers
//! (compact forms expanded) and body, from rsipstack's parsed request or from wire text
//! (`iwf map --sip`).

use rsipstack::sip;

/// Why wire text is not a SIP request (`iwf map --sip`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("no blank line after the SIP headers")]
    NoBlankLine,
    #[error("SIP headers are not UTF-8")]
    NotUtf8,
    #[error("continuation line before any header")]
    LeadingContinuation,
    #[error("empty request")]
    Empty,
    /// Not `METHOD URI VERSION`: the line.
    #[error("bad request line `{0}`")]
    RequestLine(String),
    /// A version other than SIP/2.0: the line.
    #[error("not a SIP/2.0 request line: `{0}`")]
    Version(String),
    #[error("bad method `{0}`")]
    Method(String),
    /// A header line without a colon.
    #[error("bad header line `{0}`")]
    HeaderLine(String),
    #[error("bad Content-Length")]
    ContentLength,
    #[error("Content-Length {content_length} but only {body} body bytes")]
    ShortBody { content_length: usize, body: usize },
}

/// One SIP request received by iwf's UAS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub method: String,
    pub request_uri: String,
    /// Header name (full form) and value, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// UDP, TCP, TLS (or `-` in a dry run).
    pub transport: String,
}

/// RFC 3261 §7.3.3 compact forms.
fn full_name(name: &str) -> &str {
    match name {
        "f" | "F" => "From",
        "t" | "T" => "To",
        "i" | "I" => "Call-ID",
        "c" | "C" => "Content-Type",
        "l" | "L" => "Content-Length",
        "s" | "S" => "Subject",
        "v" | "V" => "Via",
        "m" | "M" => "Contact",
        "e" | "E" => "Content-Encoding",
        "k" | "K" => "Supported",
        other => other,
    }
}

impl Incoming {
    /// From rsipstack's request.
    pub fn from_request(req: &sip::Request, transport: &str) -> Incoming {
        let headers = req
            .headers
            .iter()
            .filter_map(|h| {
                let line = h.to_string();
                let (n, v) = line.split_once(':')?;
                Some((full_name(n.trim()).to_string(), v.trim().to_string()))
            })
            .collect();
        // rsip keeps the user part as received but percent-encodes it again when written
        // (`%40` becomes `%2540`): put the received form back.
        let mut request_uri = req.uri.to_string();
        if let Some(auth) = &req.uri.auth {
            let raw = match &auth.password {
                Some(p) => format!("{}:{p}", auth.user),
                None => auth.user.clone(),
            };
            request_uri = request_uri.replacen(&auth.to_string(), &raw, 1);
        }
        Incoming {
            method: req.method.to_string(),
            request_uri,
            headers,
            body: req.body.clone(),
            transport: transport.to_string(),
        }
    }

    /// Parses a request in wire format (CRLF or LF line ends in the head; the body is the
    /// rest, cut to Content-Length when one is given).
    pub fn parse(wire: &[u8]) -> Result<Incoming, RequestError> {
        let (head, body) = split_head(wire).ok_or(RequestError::NoBlankLine)?;
        let head = std::str::from_utf8(head).map_err(|_| RequestError::NotUtf8)?;
        let mut lines: Vec<String> = Vec::new();
        for line in head.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.starts_with([' ', '\t']) {
                // RFC 3261 §7.3.1 folding.
                let last = lines.last_mut().ok_or(RequestError::LeadingContinuation)?;
                last.push(' ');
                last.push_str(line.trim());
            } else {
                lines.push(line.to_string());
            }
        }
        let mut it = lines.into_iter();
        let start = it.next().ok_or(RequestError::Empty)?;
        let mut parts = start.split_whitespace();
        let (Some(method), Some(uri), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(RequestError::RequestLine(start.clone()));
        };
        if !version.eq_ignore_ascii_case("SIP/2.0") {
            return Err(RequestError::Version(start.clone()));
        }
        if !method.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(RequestError::Method(method.to_string()));
        }
        let mut headers = Vec::new();
        for l in it.filter(|l| !l.is_empty()) {
            let Some((n, v)) = l.split_once(':') else {
                return Err(RequestError::HeaderLine(l));
            };
            headers.push((full_name(n.trim()).to_string(), v.trim().to_string()));
        }
        let mut inc = Incoming {
            method: method.to_string(),
            request_uri: uri.to_string(),
            headers,
            body: body.to_vec(),
            transport: "-".into(),
        };
        if let Some(len) = inc.header("Content-Length") {
            let len: usize = len.parse().map_err(|_| RequestError::ContentLength)?;
            if len > inc.body.len() {
                return Err(RequestError::ShortBody {
                    content_length: len,
                    body: inc.body.len(),
                });
            }
            inc.body.truncate(len);
        }
        Ok(inc)
    }

    /// First value of a header (case-insensitive name, compact forms expanded).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = full_name(name);
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `type/subtype` of the body, lower case.
    pub fn content_type(&self) -> Option<String> {
        self.header("Content-Type").map(media_type)
    }
}

fn split_head(wire: &[u8]) -> Option<(&[u8], &[u8])> {
    if let Some(p) = find(wire, b"\r\n\r\n") {
        return Some((&wire[..p], &wire[p + 4..]));
    }
    find(wire, b"\n\n").map(|p| (&wire[..p], &wire[p + 2..]))
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `type/subtype` of a Content-Type value, lower case, parameters dropped.
pub fn media_type(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// A parameter of a Content-Type (or similar) value, unquoted.
pub fn param(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

/// Splits a name-addr / addr-spec header value (From, To, CPIM From/To) into the display
/// name and the URI. Header parameters (`;tag=`) after `>` are dropped; without `<>` they
/// are cut at the first `;` (RFC 3261 §20.10).
pub fn name_addr(value: &str) -> Option<(Option<String>, String)> {
    let value = value.trim();
    if let Some(lt) = value.find('<') {
        let gt = value[lt..].find('>')? + lt;
        let uri = value[lt + 1..gt].trim().to_string();
        let name = value[..lt].trim();
        let name = if let Some(q) = name.strip_prefix('"') {
            let q = q.strip_suffix('"').unwrap_or(q);
            unescape(q)
        } else {
            name.to_string()
        };
        if uri.is_empty() {
            return None;
        }
        Some(((!name.is_empty()).then_some(name), uri))
    } else {
        let uri = value.split(';').next().unwrap_or("").trim().to_string();
        (!uri.is_empty()).then_some((None, uri))
    }
}

fn unescape(q: &str) -> String {
    let mut out = String::with_capacity(q.len());
    let mut esc = false;
    for c in q.chars() {
        if esc {
            out.push(c);
            esc = false;
        } else if c == '\\' {
            esc = true;
        } else {
            out.push(c);
        }
    }
    out
}

/// Scheme, user (percent-decoded, parameters removed) and host (lower case) of a SIP/SIPS/
/// tel/im URI.
pub fn uri_parts(uri: &str) -> (String, Option<String>, Option<String>) {
    let Some((scheme, rest)) = uri.split_once(':') else {
        return (String::new(), None, None);
    };
    let scheme = scheme.to_ascii_lowercase();
    let rest = rest.split(['?']).next().unwrap_or("");
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .ok()
            .map(|c| c.into_owned())
    };
    match scheme.as_str() {
        "tel" => {
            let number = rest.split(';').next().unwrap_or("");
            (scheme, decode(number), None)
        }
        _ => {
            let (user, hostport) = match rest.rfind('@') {
                Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
                None => (None, rest),
            };
            let user = user
                .map(|u| u.split(';').next().unwrap_or(""))
                .and_then(decode);
            let host = hostport.split(';').next().unwrap_or("");
            let host = if let Some(h) = host.strip_prefix('[') {
                h.split(']').next().unwrap_or("")
            } else {
                host.split(':').next().unwrap_or("")
            };
            (scheme, user, Some(host.to_ascii_lowercase()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wire_text_with_compact_forms() {
        let inc = Incoming::parse(
            b"MESSAGE sip:a%40b.org@iwf.example.net SIP/2.0\nf: \"B\" <tel:+1555>;tag=1\ni: x\nc: text/plain\nl: 2\n\nhi!",
        )
        .unwrap();
        assert_eq!(inc.method, "MESSAGE");
        assert_eq!(inc.header("From"), Some("\"B\" <tel:+1555>;tag=1"));
        assert_eq!(inc.body, b"hi");
        assert_eq!(
            name_addr(inc.header("From").unwrap()),
            Some((Some("B".into()), "tel:+1555".into()))
        );
    }

    #[test]
    fn refuses_what_is_not_a_request() {
        let cases: &[(&[u8], RequestError, &str)] = &[
            (
                b"MESSAGE x SIP/2.0\r\n",
                RequestError::NoBlankLine,
                "no blank line after the SIP headers",
            ),
            (
                b"MESSAGE x\r\n\r\n",
                RequestError::RequestLine("MESSAGE x".into()),
                "bad request line `MESSAGE x`",
            ),
            (
                b"MESSAGE x SIP/3.0\r\n\r\n",
                RequestError::Version("MESSAGE x SIP/3.0".into()),
                "not a SIP/2.0 request line: `MESSAGE x SIP/3.0`",
            ),
            (
                b"MESSAGE x SIP/2.0\r\nno colon\r\n\r\n",
                RequestError::HeaderLine("no colon".into()),
                "bad header line `no colon`",
            ),
            (
                b"MESSAGE x SIP/2.0\r\nl: 9\r\n\r\nab",
                RequestError::ShortBody {
                    content_length: 9,
                    body: 2,
                },
                "Content-Length 9 but only 2 body bytes",
            ),
        ];
        for (wire, want, text) in cases {
            let got = Incoming::parse(wire).unwrap_err();
            assert_eq!(&got, want);
            assert_eq!(got.to_string(), *text);
        }
    }

    #[test]
    fn request_uri_as_received() {
        let wire = "MESSAGE sip:alice%40mail.example.org@iwf.example.net SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK1\r\nFrom: <sip:bob%40x.org@iwf.example.net>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: c\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n";
        let req = sip::Request::try_from(wire.as_bytes()).unwrap();
        let inc = Incoming::from_request(&req, "UDP");
        assert_eq!(
            inc.request_uri,
            "sip:alice%40mail.example.org@iwf.example.net"
        );
        assert_eq!(
            inc.header("From"),
            Some("<sip:bob%40x.org@iwf.example.net>;tag=1")
        );
    }

    #[test]
    fn uri_parts_decode_users() {
        assert_eq!(
            uri_parts("sip:alice%40mail.example.org@IWF.example.net;transport=tcp"),
            (
                "sip".into(),
                Some("alice@mail.example.org".into()),
                Some("iwf.example.net".into())
            )
        );
        assert_eq!(
            uri_parts("tel:+15551234567;phone-context=x"),
            ("tel".into(), Some("+15551234567".into()), None)
        );
        assert_eq!(
            uri_parts("sip:[::1]:5060"),
            ("sip".into(), None, Some("::1".into()))
        );
    }
}
