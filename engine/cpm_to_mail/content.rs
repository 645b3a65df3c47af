//! The body of an incoming MESSAGE: `text/plain` (or any single entity), `message/cpim`
//! (RFC 3862) and `multipart/mixed` with an RFC 5365 `recipient-list-history` part.
//! Every size is bounded; anything that does not parse is [`ContentError::Malformed`].

use mail_parser::{MessageParser, MimeHeaders, PartType};
use quick_xml::events::Event;

use super::request::{find, media_type, name_addr, param};

/// At most this many CPIM header lines (RFC 3862 sets no limit; a MESSAGE is small).
pub const MAX_CPIM_HEADERS: usize = 64;
/// History entries kept; the count goes on (for the rules' refusal) but nothing more is kept.
pub const MAX_HISTORY_KEPT: usize = 1000;

/// What the body holds.
#[derive(Debug, Clone, Default)]
pub struct Content {
    /// The CPIM message headers as written (`imdn.Message-ID` keeps its prefix), when the
    /// message is message/cpim.
    pub cpim: Option<Vec<(String, String)>>,
    /// RFC 5365 history entries: URI, display name, copyControl (to, cc, bcc).
    pub history: Vec<(String, Option<String>, String)>,
    /// Entries in the history list, including those not kept.
    pub history_count: usize,
    /// The content: its full Content-Type value, `type/subtype` (lower case), charset and
    /// decoded bytes (transfer encoding of the inner entity removed).
    pub content_type: String,
    pub media_type: String,
    pub charset: Option<String>,
    pub bytes: Vec<u8>,
    /// The content as UTF-8 text (text/* in UTF-8, US-ASCII or a charset mail-parser knows).
    pub text: Option<String>,
    /// The header fields of the entity a CPIM message encapsulates (`Content-Type`,
    /// `Content-Disposition`, ...), unfolded, names and values trimmed, at most
    /// [`MAX_CPIM_HEADERS`]; empty when the body is not message/cpim. An IMDN is told apart
    /// by these (RFC 5438 §7.1.2, [`crate::reports::imdn::is_imdn`]).
    pub inner_headers: Vec<(String, String)>,
}

/// The prefix a CPIM document binds to the IMDN namespace with `NS:` (RFC 3862 §3.3.1,
/// RFC 5438 §6.2): `imdn` unless it says otherwise.
pub fn imdn_prefix(cpim: &[(String, String)]) -> String {
    cpim.iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("NS"))
        .find_map(|(_, ns)| {
            let (p, urn) = ns.trim().split_once(' ')?;
            urn.trim()
                .trim_matches(['<', '>'])
                .eq_ignore_ascii_case("urn:ietf:params:imdn")
                .then(|| p.trim().to_string())
        })
        .unwrap_or_else(|| "imdn".into())
}

/// Why a body cannot be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    /// No body at all.
    #[error("no body")]
    Empty,
    /// A type this direction does not take.
    #[error("content type `{0}` not taken")]
    Unsupported(String),
    /// The body claims a type it does not follow.
    #[error("{0}")]
    Malformed(Malformed),
}

/// What a body that claims a type does not follow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("malformed CPIM: {0}")]
    Cpim(CpimError),
    #[error("malformed multipart: {0}")]
    Multipart(MultipartError),
}

/// A message/cpim body that is not RFC 3862 §3 (headers, blank line, MIME entity).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpimError {
    #[error("no blank line after the headers")]
    NoBlankLine,
    #[error("headers are not UTF-8")]
    NotUtf8,
    /// The line (its first 40 characters).
    #[error("header line without a colon: `{0}`")]
    NoColon(String),
    /// The name (its first 40 characters).
    #[error("bad header name `{0}`")]
    BadName(String),
    #[error("control character in header `{0}`")]
    ControlCharacter(String),
    /// More than [`MAX_CPIM_HEADERS`].
    #[error("too many headers")]
    TooManyHeaders,
    #[error("no message headers")]
    NoHeaders,
    #[error("From and To are required (RFC 3862 §3.2)")]
    NoFromOrTo,
    /// `From` or `To` whose value is not a name-addr with a URI.
    #[error("`{0}` is not a name-addr")]
    NotNameAddr(String),
    #[error("{0}")]
    Entity(EntityError),
}

/// The MIME entity a CPIM message encapsulates, when it is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntityError {
    #[error("the encapsulated entity has no blank line")]
    NoBlankLine,
    #[error("encapsulated headers are not UTF-8")]
    NotUtf8,
    #[error("the encapsulated entity has no Content-Type")]
    NoContentType,
    #[error("the encapsulated entity does not parse")]
    Unparseable,
    #[error("empty encapsulated entity")]
    Empty,
    #[error("the encapsulated entity is not a single part")]
    NotSinglePart,
}

/// A multipart/mixed body that is not RFC 5365 §4.2's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MultipartError {
    #[error("no boundary")]
    NoBoundary,
    #[error("does not parse")]
    Unparseable,
    #[error("nested multipart/mixed")]
    Nested,
    #[error("{0}")]
    History(HistoryError),
}

/// A `recipient-list-history` part that is not RFC 4826 resource-lists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// quick-xml's words for the attribute.
    #[error("bad attribute: {0}")]
    BadAttribute(String),
    #[error("entry without uri")]
    EntryWithoutUri,
    /// quick-xml's words for the document.
    #[error("resource-lists XML: {0}")]
    Xml(String),
}

/// Parses the SIP body with its Content-Type. `accept` lists the SIP body types taken.
pub fn parse(
    content_type: Option<&str>,
    body: &[u8],
    accept: &[String],
) -> Result<Content, ContentError> {
    if body.is_empty() {
        return Err(ContentError::Empty);
    }
    let ct = content_type.unwrap_or("text/plain");
    let mt = media_type(ct);
    if !accept.iter().any(|a| a.eq_ignore_ascii_case(&mt)) {
        return Err(ContentError::Unsupported(mt));
    }
    match mt.as_str() {
        "message/cpim" => cpim(body),
        "multipart/mixed" => multipart(ct, body, accept),
        _ => Ok(entity(ct, body.to_vec(), None)),
    }
}

/// A leaf entity with its Content-Type and already decoded bytes.
fn entity(ct: &str, bytes: Vec<u8>, text: Option<String>) -> Content {
    let mt = media_type(ct);
    let charset = param(ct, "charset").map(|c| c.to_ascii_lowercase());
    let text = text.or_else(|| {
        if !mt.starts_with("text/") {
            return None;
        }
        match charset.as_deref() {
            None | Some("utf-8") | Some("us-ascii") => String::from_utf8(bytes.clone()).ok(),
            Some(cs) => mail_parser::decoders::charsets::map::charset_decoder(cs.as_bytes())
                .map(|dec| dec(&bytes)),
        }
    });
    Content {
        content_type: ct.trim().to_string(),
        media_type: mt,
        charset,
        bytes,
        text,
        ..Content::default()
    }
}

/// RFC 3862 §3: CPIM message headers, a blank line, the encapsulated MIME entity.
fn cpim(body: &[u8]) -> Result<Content, ContentError> {
    let bad = |e: CpimError| ContentError::Malformed(Malformed::Cpim(e));
    let (head, rest) = split_blank(body).ok_or_else(|| bad(CpimError::NoBlankLine))?;
    let head = std::str::from_utf8(head).map_err(|_| bad(CpimError::NotUtf8))?;
    let mut headers = Vec::new();
    for line in head.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let (n, v) = line
            .split_once(':')
            .ok_or_else(|| bad(CpimError::NoColon(short(line))))?;
        let n = n.trim();
        if n.is_empty()
            || !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
        {
            return Err(bad(CpimError::BadName(short(n))));
        }
        // A bare CR (or any other control character) inside a value would end a mail
        // header line: refused here, and refused again by the mail encoder.
        if v.chars().any(|c| c.is_control() && c != '\t') {
            return Err(bad(CpimError::ControlCharacter(n.to_string())));
        }
        headers.push((n.to_string(), v.trim().to_string()));
        if headers.len() > MAX_CPIM_HEADERS {
            return Err(bad(CpimError::TooManyHeaders));
        }
    }
    if headers.is_empty() {
        return Err(bad(CpimError::NoHeaders));
    }
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("From"))
        || !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("To"))
    {
        return Err(bad(CpimError::NoFromOrTo));
    }
    for (n, v) in &headers {
        if (n.eq_ignore_ascii_case("From") || n.eq_ignore_ascii_case("To"))
            && !name_addr(v).is_some_and(|(_, uri)| uri.contains(':'))
        {
            return Err(bad(CpimError::NotNameAddr(n.clone())));
        }
    }
    let mut c = inner_entity(rest).map_err(|e| bad(CpimError::Entity(e)))?;
    c.cpim = Some(headers);
    c.inner_headers = entity_headers(rest);
    Ok(c)
}

/// The encapsulated MIME entity of a CPIM message (headers with Content-Type, blank line,
/// content), decoded by mail-parser.
fn inner_entity(raw: &[u8]) -> Result<Content, EntityError> {
    let (head, _) = split_blank(raw).ok_or(EntityError::NoBlankLine)?;
    let head = std::str::from_utf8(head).map_err(|_| EntityError::NotUtf8)?;
    let ct = head
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case("Content-Type")
                .then(|| v.trim().to_string())
        })
        .ok_or(EntityError::NoContentType)?;
    let msg = MessageParser::new()
        .parse(raw)
        .ok_or(EntityError::Unparseable)?;
    let part = msg.parts.first().ok_or(EntityError::Empty)?;
    let (bytes, text) = match &part.body {
        PartType::Text(t) | PartType::Html(t) => (t.as_bytes().to_vec(), Some(t.to_string())),
        PartType::Binary(b) | PartType::InlineBinary(b) => (b.to_vec(), None),
        _ => return Err(EntityError::NotSinglePart),
    };
    if text.is_some() && !media_type(&ct).starts_with("text/") {
        return Ok(entity(&ct, bytes, None));
    }
    // mail-parser hands text back in UTF-8 whatever the charset was.
    let ct = if text.is_some() {
        format!("{}; charset=utf-8", media_type(&ct))
    } else {
        ct
    };
    Ok(entity(&ct, bytes, text))
}

/// The header fields of an encapsulated entity (before its blank line), unfolded.
fn entity_headers(raw: &[u8]) -> Vec<(String, String)> {
    let Some((head, _)) = split_blank(raw) else {
        return Vec::new();
    };
    let head = String::from_utf8_lossy(head);
    let mut out: Vec<(String, String)> = Vec::new();
    for line in head.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = out.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
        } else if let Some((n, v)) = line.split_once(':') {
            if out.len() == MAX_CPIM_HEADERS {
                break;
            }
            out.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

/// RFC 5365 §4.2: a multipart/mixed with the message and a `recipient-list-history` part.
fn multipart(ct: &str, body: &[u8], accept: &[String]) -> Result<Content, ContentError> {
    let bad = |e: MultipartError| ContentError::Malformed(Malformed::Multipart(e));
    let boundary = param(ct, "boundary").ok_or_else(|| bad(MultipartError::NoBoundary))?;
    let mut raw =
        format!("Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n").into_bytes();
    raw.extend_from_slice(body);
    let msg = MessageParser::new()
        .parse(&raw[..])
        .ok_or_else(|| bad(MultipartError::Unparseable))?;
    let mut message: Option<Content> = None;
    let mut history: Option<(Vec<_>, usize)> = None;
    for part in msg.parts.iter().skip(1) {
        let pct = part
            .content_type()
            .map(|c| match &c.c_subtype {
                Some(s) => format!("{}/{}", c.c_type, s),
                None => c.c_type.to_string(),
            })
            .unwrap_or_else(|| "text/plain".into())
            .to_ascii_lowercase();
        let disposition = part
            .content_disposition()
            .map(|d| d.c_type.to_ascii_lowercase());
        let raw_part = &raw[part.offset_body as usize..part.offset_end as usize];
        if pct == "application/resource-lists+xml"
            && disposition.as_deref() == Some("recipient-list-history")
        {
            history = Some(resource_list(raw_part).map_err(|e| bad(MultipartError::History(e)))?);
        } else if message.is_none() {
            let full = part
                .headers
                .iter()
                .find(|h| h.name.as_str().eq_ignore_ascii_case("Content-Type"))
                .map(|h| {
                    String::from_utf8_lossy(&raw[h.offset_start as usize..h.offset_end as usize])
                        .trim()
                        .to_string()
                })
                .unwrap_or_else(|| pct.clone());
            if pct == "multipart/mixed" {
                return Err(bad(MultipartError::Nested));
            }
            // Text comes back from mail-parser in UTF-8; a CPIM part is taken as written.
            let (full, body) = if pct == "message/cpim" {
                (full, raw_part.to_vec())
            } else if pct.starts_with("text/") {
                (format!("{pct}; charset=utf-8"), part.contents().to_vec())
            } else {
                (full, part.contents().to_vec())
            };
            message = Some(parse(Some(&full), &body, accept)?);
        }
    }
    let mut c = message.ok_or(ContentError::Empty)?;
    if let Some((list, count)) = history {
        c.history = list;
        c.history_count = count;
    }
    Ok(c)
}

type History = (Vec<(String, Option<String>, String)>, usize);

/// RFC 4826 resource-lists with RFC 5364 copyControl: every `<entry uri= cp:copyControl=>`.
fn resource_list(xml: &[u8]) -> Result<History, HistoryError> {
    let mut reader = quick_xml::Reader::from_reader(xml);
    reader.config_mut().trim_text(true);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut count = 0usize;
    let mut in_name = false;
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) if e.local_name().as_ref() == "entry" => {
                count += 1;
                let mut uri = None;
                let mut copy = "to".to_string();
                for a in e.attributes().flatten() {
                    let v = a
                        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .map_err(|e| HistoryError::BadAttribute(e.to_string()))?
                        .into_owned();
                    match a.key.local_name().as_ref() {
                        "uri" => uri = Some(v),
                        "copyControl" => copy = v.to_ascii_lowercase(),
                        _ => {}
                    }
                }
                let uri = uri.ok_or(HistoryError::EntryWithoutUri)?;
                if out.len() < MAX_HISTORY_KEPT {
                    out.push((uri, None, copy));
                }
            }
            Ok(Event::Start(e)) if e.local_name().as_ref() == "display-name" => in_name = true,
            Ok(Event::End(e)) if e.local_name().as_ref() == "display-name" => in_name = false,
            Ok(Event::Text(t)) if in_name => {
                let kept = out.len() == count;
                if let (Some(last), true) = (out.last_mut(), kept) {
                    last.1 = Some(t.xml10_content().into_owned());
                }
            }
            Ok(Event::Eof) => break,
            Err(e) => return Err(HistoryError::Xml(e.to_string())),
            _ => {}
        }
        buf.clear();
    }
    Ok((out, count))
}

fn split_blank(b: &[u8]) -> Option<(&[u8], &[u8])> {
    // The header block may start with the blank line only when it is empty.
    let crlf = find(b, b"\r\n\r\n").map(|p| (p, 4));
    let lf = find(b, b"\n\n").map(|p| (p, 2));
    let (p, n) = match (crlf, lf) {
        (Some(a), Some(b)) => {
            if a.0 <= b.0 {
                a
            } else {
                b
            }
        }
        (a, b) => a.or(b)?,
    };
    Some((&b[..p], &b[p + n..]))
}

fn short(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_bodies_say_what_is_wrong() {
        let accept = ["message/cpim".to_string(), "multipart/mixed".to_string()];
        let cases: &[(&str, &[u8], ContentError, &str)] = &[
            (
                "message/cpim",
                b"From: <sip:a@b>\r\nTo: <sip:c@d>\r\n",
                ContentError::Malformed(Malformed::Cpim(CpimError::NoBlankLine)),
                "malformed CPIM: no blank line after the headers",
            ),
            (
                "message/cpim",
                b"From: <sip:a@b>\r\n\r\nContent-Type: text/plain\r\n\r\nhi",
                ContentError::Malformed(Malformed::Cpim(CpimError::NoFromOrTo)),
                "malformed CPIM: From and To are required (RFC 3862 §3.2)",
            ),
            (
                "message/cpim",
                b"From: <sip:a@b>\r\nTo: <sip:c@d>\r\n\r\nhi",
                ContentError::Malformed(Malformed::Cpim(CpimError::Entity(
                    EntityError::NoBlankLine,
                ))),
                "malformed CPIM: the encapsulated entity has no blank line",
            ),
            (
                "multipart/mixed",
                b"--x\r\n\r\nhi\r\n--x--\r\n",
                ContentError::Malformed(Malformed::Multipart(MultipartError::NoBoundary)),
                "malformed multipart: no boundary",
            ),
            (
                "text/html",
                b"<p>hi</p>",
                ContentError::Unsupported("text/html".into()),
                "content type `text/html` not taken",
            ),
        ];
        for (ct, body, want, text) in cases {
            let got = parse(Some(ct), body, &accept).unwrap_err();
            assert_eq!(&got, want, "{ct}");
            assert_eq!(got.to_string(), *text, "{ct}");
        }
    }

    #[test]
    fn history_entries_need_a_uri() {
        let xml = br#"<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists"><list><entry/></list></resource-lists>"#;
        assert_eq!(resource_list(xml), Err(HistoryError::EntryWithoutUri));
    }
}
