//! SIP request rendering on rsipstack's message types.
//!
//! A [`Delivery`] plus a [`Stamp`] becomes an `rsipstack::sip::Request`; its `to_bytes()`
//! is what goes on the wire and what `iwf map` prints. Header order follows RFC 3261 §7.3.1
//! practice: Via, Max-Forwards, From, To, Call-ID, CSeq first, then the rule headers, then
//! Content-Type and Content-Length.

use std::borrow::Cow;

use rsipstack::sip::{self, Headers, Method, Request, Uri, Version, headers::make_header};

use crate::mail_to_cpm::plan::{Delivery, Stamp};
use crate::render::encoder::{self, EncodeError};

/// Why a delivery could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("Request-URI `{0}` is not a valid SIP/tel URI")]
    BadUri(String),
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

/// Headers the mechanism owns; a rule that sets one of them is overridden.
const MECHANISM_HEADERS: [&str; 6] = [
    "via",
    "call-id",
    "cseq",
    "content-length",
    "content-type",
    "contact",
];

/// Header order: these first, in this order, when the rules set them.
const LEADING: [&str; 2] = ["max-forwards", "from"];

/// Renders the SIP MESSAGE (pager mode) carrying `delivery.content`.
pub fn render_message(delivery: &Delivery, stamp: &Stamp) -> Result<Request, RenderError> {
    render(
        Method::Message,
        delivery,
        stamp,
        &delivery.content.content_type,
        delivery.content.body.to_vec(),
        None,
    )
}

/// Renders the INVITE (large mode) carrying the SDP offer `sdp`; `contact` is our Contact URI.
pub fn render_invite(
    delivery: &Delivery,
    stamp: &Stamp,
    sdp: Vec<u8>,
    contact: &str,
) -> Result<Request, RenderError> {
    render(
        Method::Invite,
        delivery,
        stamp,
        "application/sdp",
        sdp,
        Some(contact),
    )
}

/// The serialized size of the MESSAGE for `delivery` (request line + headers + body),
/// computed from the header lines without building the request: what the pager-mode
/// size rule (`request.size`) measures on every mail.
pub fn message_len(delivery: &Delivery, stamp: &Stamp) -> Result<usize, RenderError> {
    message_len_plus(delivery, stamp, 0)
}

/// [`message_len`] of the delivery with `extra` more body octets (a body measured
/// without some verbatim part of it).
pub fn message_len_plus(
    delivery: &Delivery,
    stamp: &Stamp,
    extra: usize,
) -> Result<usize, RenderError> {
    message_len_of(
        &delivery.request_uri,
        &delivery.headers,
        &delivery.content.content_type,
        delivery.content.body.len() + extra,
        stamp,
    )
}

/// [`message_len`] from the parts of a delivery that decide it (Request-URI, rule headers,
/// content type, body length), for measuring a request whose body was never built.
pub fn message_len_of(
    request_uri: &str,
    headers: &[(String, String)],
    content_type: &str,
    body_len: usize,
    stamp: &Stamp,
) -> Result<usize, RenderError> {
    let lines = header_lines(
        &Method::Message,
        request_uri,
        headers,
        stamp,
        content_type,
        body_len,
        None,
    )?;
    let request_line = "MESSAGE ".len() + request_uri.len() + " SIP/2.0\r\n".len();
    let headers: usize = lines.iter().map(|(n, v)| n.len() + 2 + v.len() + 2).sum();
    Ok(request_line + headers + 2 + body_len)
}

fn render(
    method: Method,
    delivery: &Delivery,
    stamp: &Stamp,
    content_type: &str,
    body: Vec<u8>,
    contact: Option<&str>,
) -> Result<Request, RenderError> {
    let mut uri = Uri::try_from(delivery.request_uri.as_str())
        .map_err(|_| RenderError::BadUri(delivery.request_uri.clone()))?;
    // rsip keeps the user part as written but percent-encodes it when writing: decode it
    // here, or `sip:alice%40mail.example.org@…` would go out as `alice%2540…`.
    if let Some(auth) = uri.auth.as_mut()
        && let Ok(user) = percent_encoding::percent_decode_str(&auth.user).decode_utf8()
    {
        auth.user = user.into_owned();
    }
    let lines = header_lines(
        &method,
        &delivery.request_uri,
        &delivery.headers,
        stamp,
        content_type,
        body.len(),
        contact,
    )?;
    let headers: Headers = lines
        .into_iter()
        .map(|(n, v)| make_header(n, v.into_owned()))
        .collect::<Vec<sip::Header>>()
        .into();
    Ok(Request {
        method,
        uri,
        version: Version::V2,
        headers,
        body,
    })
}

/// The pieces joined, in one allocation of the right size.
fn concat(parts: &[&str]) -> String {
    let mut out = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        out.push_str(p);
    }
    out
}

/// The method's token as `Display` writes it, without the formatting machinery for the two
/// methods this renderer sends.
fn method_name(method: &Method) -> Cow<'static, str> {
    match method {
        Method::Message => Cow::Borrowed("MESSAGE"),
        Method::Invite => Cow::Borrowed("INVITE"),
        other => Cow::Owned(other.to_string()),
    }
}

/// Every header line of the request, in wire order, each checked by the encoder.
fn header_lines<'a>(
    method: &Method,
    request_uri: &str,
    headers: &'a [(String, String)],
    stamp: &Stamp,
    content_type: &'a str,
    body_len: usize,
    contact: Option<&str>,
) -> Result<Vec<(&'a str, Cow<'a, str>)>, RenderError> {
    let mut lines: Vec<(&'a str, Cow<'a, str>)> = Vec::with_capacity(headers.len() + 8);
    let rule = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    lines.push((
        "Via",
        Cow::Owned(concat(&[
            "SIP/2.0/",
            &stamp.transport,
            " ",
            &stamp.sent_by,
            ";branch=",
            &stamp.branch,
        ])),
    ));
    lines.push((
        "Max-Forwards",
        Cow::Borrowed(rule("max-forwards").unwrap_or("70")),
    ));
    if let Some(from) = rule("from") {
        lines.push((
            "From",
            Cow::Owned(concat(&[from, ";tag=", &stamp.from_tag])),
        ));
    }
    lines.push((
        "To",
        match rule("to") {
            Some(to) => Cow::Borrowed(to),
            None => Cow::Owned(concat(&["<", request_uri, ">"])),
        },
    ));
    lines.push(("Call-ID", Cow::Owned(stamp.call_id.clone())));
    lines.push((
        "CSeq",
        Cow::Owned(concat(&[
            &stamp.cseq.to_string(),
            " ",
            &method_name(method),
        ])),
    ));
    if let Some(c) = contact {
        lines.push(("Contact", Cow::Owned(format!("<{c}>"))));
    }
    for (n, v) in headers {
        let placed = LEADING
            .iter()
            .chain(MECHANISM_HEADERS.iter())
            .chain(std::iter::once(&"to"))
            .any(|m| n.eq_ignore_ascii_case(m));
        if !placed {
            encoder::check_name(n)?;
            lines.push((n.as_str(), Cow::Borrowed(v.as_str())));
        }
    }
    lines.push(("Content-Type", Cow::Borrowed(content_type)));
    lines.push(("Content-Length", Cow::Owned(body_len.to_string())));
    for (n, v) in &lines {
        encoder::check_value(n, v)?;
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail_to_cpm::plan::{Content, Mode};

    fn delivery(headers: Vec<(&str, &str)>) -> Delivery {
        Delivery {
            recipient: "+15551234567@cpm.example.net".into(),
            mode: Mode::Pager,
            request_uri: "tel:+15551234567".into(),
            headers: headers
                .into_iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            content: Content {
                content_type: "text/plain;charset=UTF-8".into(),
                body: bytes::Bytes::from_static(b"hi").into(),
            },
            cpim_inner: None,
            imdn_message_id: None,
            imdn_dispositions: Vec::new(),
            success_report: false,
        }
    }

    fn stamp() -> Stamp {
        Stamp {
            transport: "TCP".into(),
            sent_by: "iwf.example.net:5060".into(),
            branch: "z9hG4bK1".into(),
            call_id: "c1@iwf.example.net".into(),
            from_tag: "t1".into(),
            cseq: 1,
        }
    }

    #[test]
    fn renders_wire_order() {
        let d = delivery(vec![
            ("Subject", "Lunch?"),
            ("From", "<sip:a@iwf.example.net>"),
            ("Max-Forwards", "70"),
        ]);
        let wire = String::from_utf8(render_message(&d, &stamp()).unwrap().to_bytes()).unwrap();
        assert_eq!(
            wire,
            "MESSAGE tel:+15551234567 SIP/2.0\r\n\
             Via: SIP/2.0/TCP iwf.example.net:5060;branch=z9hG4bK1\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:a@iwf.example.net>;tag=t1\r\n\
             To: <tel:+15551234567>\r\n\
             Call-ID: c1@iwf.example.net\r\n\
             CSeq: 1 MESSAGE\r\n\
             Subject: Lunch?\r\n\
             Content-Type: text/plain;charset=UTF-8\r\n\
             Content-Length: 2\r\n\r\nhi"
        );
    }

    #[test]
    fn message_len_is_the_wire_size() {
        let d = delivery(vec![
            ("Subject", "Lunch?"),
            ("From", "<sip:a@iwf.example.net>"),
        ]);
        let wire = render_message(&d, &stamp()).unwrap().to_bytes();
        assert_eq!(message_len(&d, &stamp()).unwrap(), wire.len());
    }

    #[test]
    fn refuses_injected_values() {
        let d = delivery(vec![("Subject", "x\r\nVia: evil")]);
        assert!(matches!(
            render_message(&d, &stamp()),
            Err(RenderError::Encode(_))
        ));
    }
}
