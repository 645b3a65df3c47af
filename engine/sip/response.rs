//! From a SIP response to an [`Outcome`], and the 3xx Contact list (no I/O).

use rsipstack::sip::Response;

use crate::mail_to_cpm::outcome::{FailureKind, Layer, Outcome};
use crate::mail_to_cpm::plan::Mode;

/// Headers that only carry transaction plumbing; every other response header is
/// handed to the response rules (Contact, Retry-After, Accept, Warning, Reason, ...).
const PLUMBING: [&str; 9] = [
    "via",
    "from",
    "to",
    "call-id",
    "cseq",
    "content-length",
    "max-forwards",
    "record-route",
    "route",
];

/// The header rsipstack's locally generated responses are marked with (see
/// `client::LocalMarker`): Timer F's 408 and the 503 of a failed stream write.
pub(crate) const LOCAL_MARKER: &str = "X-Iwf-Local-Response";

/// The most characters of a peer's reason phrase or header value the rules get.
pub const MAX_PEER_TEXT: usize = 256;

/// A peer's text as the rules (and through them, SMTP replies) get it: control characters
/// as `?`, at most [`MAX_PEER_TEXT`] characters (then `...`). A peer cannot make a rule fail
/// or a reply line grow past its limit (RFC 5321 §4.5.3.1.5).
pub fn clean_peer_text(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(MAX_PEER_TEXT)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().nth(MAX_PEER_TEXT).is_some() {
        out.push_str("...");
    }
    out
}

/// Why a received response is not a response at all (RFC 3261 §18.1.2: such a message is
/// discarded), or `None` when it is one: a status code outside 100-699, or a
/// Content-Length that is not a number or promises more body than arrived (§18.3, §20.14).
pub fn malformed(resp: &Response) -> Option<String> {
    let code = resp.status_code.code();
    if !(100..=699).contains(&code) {
        return Some(format!("status code {code} outside 100-699"));
    }
    let lengths: Vec<&str> = resp
        .headers
        .iter()
        .filter(|h| h.name().eq_ignore_ascii_case("content-length") || h.name() == "l")
        .map(|h| h.value().trim())
        .collect();
    if lengths.len() > 1 && lengths.iter().any(|l| *l != lengths[0]) {
        return Some("conflicting Content-Length headers".into());
    }
    if let Some(l) = lengths.first() {
        let declared = (!l.is_empty() && l.len() <= 19 && l.bytes().all(|b| b.is_ascii_digit()))
            .then(|| l.parse::<usize>().ok())
            .flatten();
        match declared {
            None => {
                return Some(format!(
                    "Content-Length `{}` is not a length",
                    clean_peer_text(l)
                ));
            }
            Some(n) if n > resp.body.len() => {
                return Some(format!(
                    "Content-Length {n} but {} octets of body",
                    resp.body.len()
                ));
            }
            Some(_) => {}
        }
    }
    None
}

/// Status code and reason phrase as received (the reason cleaned, [`clean_peer_text`]).
pub fn status_of(resp: &Response) -> (u16, String) {
    let reason = match &resp.wire_reason {
        Some(r) => clean_peer_text(r),
        // rsipstack keeps an unknown code's reason phrase in the status code itself
        // (`StatusCode::Other`): the peer's text too (fuzz: sip_response).
        None => clean_peer_text(resp.status_code.text()),
    };
    (resp.status_code.code(), reason)
}

/// All non-plumbing headers, in order, as (name, value); values cleaned ([`clean_peer_text`]).
pub fn reported_headers(resp: &Response) -> Vec<(String, String)> {
    resp.headers
        .iter()
        .filter(|h| {
            let n = h.name();
            !PLUMBING.iter().any(|p| n.eq_ignore_ascii_case(p))
                && !n.eq_ignore_ascii_case(LOCAL_MARKER)
        })
        .map(|h| (h.name().to_string(), clean_peer_text(h.value().trim())))
        .collect()
}

/// A final response as the response phase sees it.
pub fn final_outcome(resp: &Response, mode: Mode) -> Outcome {
    let (status, reason) = status_of(resp);
    Outcome::Final {
        protocol: Layer::Sip,
        status,
        reason,
        headers: reported_headers(resp),
        mode,
    }
}

pub fn failure(kind: FailureKind, detail: impl Into<String>, mode: Mode) -> Outcome {
    Outcome::Failure {
        kind,
        detail: detail.into(),
        mode,
    }
}

/// The URIs of all Contact header values of a 3xx, highest `q` first (ties keep their
/// order), RFC 3261 §8.1.3.4 / §20.10. Only `sip:`, `sips:` and `tel:` URIs are kept; URI
/// headers (`?Subject=...`) are dropped.
pub fn redirect_targets(resp: &Response) -> Vec<String> {
    let values: Vec<&str> = resp
        .headers
        .iter()
        .filter(|h| h.name().eq_ignore_ascii_case("contact"))
        .map(|h| h.value())
        .collect();
    contacts(&values)
}

/// See [`redirect_targets`]; takes the raw header values.
pub fn contacts(values: &[&str]) -> Vec<String> {
    let mut found: Vec<(f32, String)> = Vec::new();
    for value in values {
        for item in split_top_level(value) {
            if let Some(c) = parse_contact(item) {
                found.push(c);
            }
        }
    }
    // stable: equal q keep their order
    found.sort_by(|a, b| b.0.total_cmp(&a.0));
    found.into_iter().map(|(_, uri)| uri).collect()
}

/// The route set of a dialog a 2xx establishes: its Record-Route entries, reversed
/// (RFC 3261 §12.1.2), each as written (`<sip:p1.example.net;lr>`).
pub fn route_set(resp: &Response) -> Vec<String> {
    let mut routes: Vec<String> = resp
        .headers
        .iter()
        .filter(|h| h.name().eq_ignore_ascii_case("record-route"))
        .flat_map(|h| {
            split_top_level(h.value())
                .into_iter()
                .map(|r| r.trim().to_string())
                .filter(|r| !r.is_empty())
                .collect::<Vec<_>>()
        })
        .collect();
    routes.reverse();
    routes
}

/// The first value of header `name` (case-insensitive).
pub fn header_value<'a>(headers: &'a rsipstack::sip::Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.name().eq_ignore_ascii_case(name))
        .map(|h| h.value().trim())
}

/// Splits on commas outside quoted strings and `<...>`.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut quoted, mut angle, mut escaped) = (false, false, false);
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' if !angle => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn parse_contact(item: &str) -> Option<(f32, String)> {
    let item = item.trim();
    let (uri, params) = match (item.find('<'), item.rfind('>')) {
        (Some(a), Some(b)) if a < b => (&item[a + 1..b], &item[b + 1..]),
        _ => match item.find(';') {
            Some(i) => (&item[..i], &item[i..]),
            None => (item, ""),
        },
    };
    let uri = uri.trim();
    let uri = uri.split('?').next().unwrap_or(uri);
    // A URI has no spaces, controls, quotes or angle brackets (RFC 3986 §2; RFC 3261 §25.1):
    // a Contact with a bare CR inside (`<sips:c@d>\rb.example>`) must not become the next
    // Request-URI (fuzz: sip_response).
    if uri
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '<' | '>' | '"'))
    {
        return None;
    }
    let scheme = uri.split(':').next()?.to_ascii_lowercase();
    if !matches!(scheme.as_str(), "sip" | "sips" | "tel") || uri.len() <= scheme.len() + 1 {
        return None;
    }
    let q = params
        .split(';')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
        .and_then(|(_, v)| v.trim().parse::<f32>().ok())
        .filter(|q| (0.0..=1.0).contains(q))
        .unwrap_or(1.0);
    Some((q, uri.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(raw: &str) -> Response {
        match rsipstack::sip::SipMessage::try_from(raw).unwrap() {
            rsipstack::sip::SipMessage::Response(r) => r,
            _ => panic!("not a response"),
        }
    }

    /// A 503 whose Retry-After carries a 3,000-character comment, or control characters,
    /// reaches the shipped response rules as a clean, bounded value: the reply is the rules'
    /// `451 4.3.2` with every line within 512 octets, not a local rule error.
    #[test]
    fn peer_text_reaches_the_rules_clean_and_bounded() {
        let rules = crate::ruleset::load(std::path::Path::new("rules"), 1).unwrap();
        let rcpt = crate::smtp::envelope::Rcpt {
            address: "+15551234567@cpm.example.net".into(),
            ..Default::default()
        };
        let env = crate::smtp::envelope::Envelope {
            mail_from: Default::default(),
            rcpts: vec![rcpt.clone()],
            client: Default::default(),
            received_at: crate::ids::fixed_now(),
        };
        for retry_after in [
            format!("60 ({})", "x".repeat(3000)),
            "60 (a\u{1}b\u{7f}c\u{1b}[2J)".to_string(),
        ] {
            let raw = format!(
                "SIP/2.0 503 Service Unavailable\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCall-ID: x\r\nCSeq: 1 MESSAGE\r\nRetry-After: {retry_after}\r\nContent-Length: 0\r\n\r\n"
            );
            let outcome = final_outcome(&response(&raw), Mode::Pager);
            let input = crate::mail_to_cpm::phases::ResponseInput {
                envelope: &env,
                rcpt: &rcpt,
                uri: None,
                outcome: &outcome,
                cpim_body: false,
                retried: &[],
                imdn_requested: false,
                now: crate::ids::fixed_now(),
            };
            let crate::mail_to_cpm::phases::ResponseDecision::Reply(reply) =
                crate::mail_to_cpm::phases::respond(&rules, &input, None)
            else {
                panic!("no reply")
            };
            let wire = reply.to_wire();
            assert!(wire.starts_with("451 4.3.2 "), "{wire}");
            assert!(wire.contains("retry after 60 ("), "{wire}");
            assert!(wire.len() <= crate::smtp::reply::MAX_LINE, "{}", wire.len());
            assert!(
                !wire.trim_end_matches("\r\n").chars().any(char::is_control),
                "{wire:?}"
            );
        }
    }

    #[test]
    fn contact_lists_ordered_by_q() {
        assert_eq!(
            contacts(&[
                r#""Bob, Jr." <sip:bob@a.example;transport=tcp>;q=0.5, <sip:x@y>;q=1.0"#,
                "sip:z@w;q=0.7",
                "<tel:+15551234567>",
                "<mailto:nope@example.org>, *, <sip:h@i?Subject=foo>;q=0.1",
            ]),
            vec![
                "sip:x@y",
                "tel:+15551234567",
                "sip:z@w",
                "sip:bob@a.example;transport=tcp",
                "sip:h@i"
            ]
        );
        assert!(contacts(&["", "<>", "sip:", ";q=1"]).is_empty());
    }

    #[test]
    fn route_set_is_record_route_reversed() {
        let r = response(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h:1;branch=z9hG4bK1\r\n\
             From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x@h\r\nCSeq: 1 INVITE\r\n\
             Record-Route: <sip:p3.example;lr>, <sip:p2.example;lr>\r\n\
             Record-Route: <sip:p1.example;lr>\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(
            route_set(&r),
            vec![
                "<sip:p1.example;lr>",
                "<sip:p2.example;lr>",
                "<sip:p3.example;lr>"
            ]
        );
        assert_eq!(header_value(&r.headers, "to"), Some("<sip:c@d>;tag=2"));
    }

    #[test]
    fn outcome_from_response() {
        let r = response(
            "SIP/2.0 302 Gone Elsewhere\r\nVia: SIP/2.0/UDP h:1;branch=z9hG4bK1\r\n\
             From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x@h\r\nCSeq: 1 MESSAGE\r\n\
             Contact: <sip:c@e>;q=0.3, <sip:c@f>\r\nRetry-After: 120\r\n\
             Warning: 399 h \"busy\"\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(redirect_targets(&r), vec!["sip:c@f", "sip:c@e"]);
        match final_outcome(&r, Mode::Pager) {
            Outcome::Final {
                status,
                reason,
                headers,
                ..
            } => {
                assert_eq!(status, 302);
                assert_eq!(reason, "Gone Elsewhere");
                let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
                assert_eq!(names, vec!["Contact", "Retry-After", "Warning"]);
                assert_eq!(headers[1].1, "120");
            }
            o => panic!("{o:?}"),
        }
    }
}
