//! The mail as the rules see it: one parse with mail-parser, then typed accessors
//! (decoded headers, address lists, date, the text/plain content in UTF-8, the raw MIME
//! entity for large mode).

use std::borrow::Cow;
use std::sync::LazyLock;

use bytes::Bytes;
use mail_parser::{Address, HeaderValue, Message, MessageParser, MimeHeaders, PartType};

use crate::dsl::Str;

/// The parser configuration: standard headers typed, every other header RFC 2047-decoded
/// text. Other address headers (Disposition-Notification-To) are parsed on demand by
/// [`Mail::mailboxes`].
static PARSER: LazyLock<MessageParser> = LazyLock::new(|| {
    MessageParser::new()
        .with_mime_headers()
        .with_date_headers()
        .with_address_headers()
        .with_message_ids()
        .default_header_text()
});

/// A mail stored with bare LF line ends (a file on disk) as SMTP carries it: CRLF. A mail
/// that already has CRLF line ends is returned as it is.
pub fn crlf_line_ends(raw: Vec<u8>) -> Vec<u8> {
    if raw.windows(2).any(|w| w == b"\r\n") {
        return raw;
    }
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 40);
    for b in raw {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// The Message-ID of a mail from its header section alone (no body parse).
pub fn message_id_only(raw: &[u8]) -> Option<String> {
    MessageParser::new()
        .parse_headers(raw)?
        .message_id()
        .map(|s| s.to_string())
}

/// Why a mail cannot be mapped at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    #[error("the message has no header section")]
    NoHeaders,
}

/// A parsed mail.
pub struct Mail<'x> {
    pub raw: &'x [u8],
    pub msg: Message<'x>,
    /// The shared buffer `raw` is, when parsed with [`Mail::parse_shared`]: large mode then
    /// carries the MIME body as a slice of it rather than a copy.
    shared: Option<&'x Bytes>,
}

/// A mailbox: display name (decoded) and address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    pub name: Option<String>,
    pub address: String,
}

impl<'x> Mail<'x> {
    pub fn parse(raw: &'x [u8]) -> Result<Self, MailError> {
        let msg = PARSER.parse(raw).ok_or(MailError::NoHeaders)?;
        if msg.headers().is_empty() {
            return Err(MailError::NoHeaders);
        }
        Ok(Mail {
            raw,
            msg,
            shared: None,
        })
    }

    /// [`Mail::parse`] of a mail held in a shared buffer, whose pieces can then be handed
    /// out without copying ([`Mail::mime_entity_shared`]).
    pub fn parse_shared(raw: &'x Bytes) -> Result<Self, MailError> {
        let mut mail = Mail::parse(raw)?;
        mail.shared = Some(raw);
        Ok(mail)
    }

    fn find(&self, name: &str) -> impl Iterator<Item = &mail_parser::Header<'x>> {
        self.msg
            .headers()
            .iter()
            .filter(move |h| h.name.as_str().eq_ignore_ascii_case(name))
    }

    /// First value of a header, decoded and unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        self.find(name)
            .next()
            .map(|h| value_text(&h.value, self.raw, h))
    }

    /// Every value of a header, decoded.
    pub fn headers(&self, name: &str) -> Vec<String> {
        self.find(name)
            .map(|h| value_text(&h.value, self.raw, h))
            .collect()
    }

    /// First value as received, unfolded, not decoded.
    pub fn raw_header(&self, name: &str) -> Option<String> {
        self.find(name).next().map(|h| raw_value(self.raw, h))
    }

    pub fn header_count(&self, name: &str) -> usize {
        self.find(name).count()
    }

    /// The mailboxes of an address header (all occurrences, groups flattened).
    pub fn mailboxes(&self, name: &str) -> Vec<Mailbox> {
        let mut out = Vec::new();
        for h in self.find(name) {
            if let HeaderValue::Address(a) = &h.value {
                push_addresses(a, &mut out);
            } else {
                // Not registered as an address header: parse the raw value as one.
                let line = format!("To: {}\r\n\r\n", raw_value(self.raw, h));
                if let Some(m) = PARSER.parse_headers(line.as_bytes())
                    && let Some(a) = m.to()
                {
                    push_addresses(a, &mut out);
                }
            }
        }
        out
    }

    pub fn subject(&self) -> Option<String> {
        self.msg.subject().map(|s| s.to_string())
    }

    /// Date: as Unix seconds and RFC 3339 with the original offset.
    pub fn date(&self) -> Option<(i64, String)> {
        self.date_parsed()
            .map(|d| (d.to_timestamp(), d.to_rfc3339()))
    }

    /// The Date: header when it is a valid date.
    pub fn date_parsed(&self) -> Option<&mail_parser::DateTime> {
        self.msg.date().filter(|d| d.is_valid())
    }

    pub fn message_id(&self) -> Option<String> {
        self.msg.message_id().map(|s| s.to_string())
    }

    /// type/subtype of the top-level entity, lower case.
    pub fn content_type(&self) -> String {
        match self.msg.root_part().content_type() {
            Some(ct) => match &ct.c_subtype {
                Some(sub) => format!("{}/{}", ct.c_type, sub).to_ascii_lowercase(),
                None => ct.c_type.to_ascii_lowercase(),
            },
            None => "text/plain".into(),
        }
    }

    /// Attachments and non-text parts.
    pub fn attachments(&self) -> usize {
        self.msg.attachment_count()
    }

    /// The text content in UTF-8: the text/plain body (from multipart/alternative when
    /// there is one; an HTML-only mail is converted to text), transfer encoding removed,
    /// charset transcoded. Line ends are CRLF. `None` when the mail has no text body.
    pub fn text(&self) -> Option<String> {
        if self.msg.text_body_count() == 0 && self.msg.html_body_count() == 0 {
            return None;
        }
        let t = self.msg.body_text(0)?;
        Some(crlf(t.trim_end_matches(['\r', '\n'])).into_owned())
    }

    /// [`Mail::text`] as a rule value: when the text is the received octets themselves (no
    /// transfer or charset decoding, CRLF line ends) of a mail parsed with
    /// [`Mail::parse_shared`], a slice of it, not a copy; else copied once (not twice).
    pub fn text_shared(&self) -> Option<Str> {
        if self.msg.text_body_count() == 0 && self.msg.html_body_count() == 0 {
            return None;
        }
        let t = self.msg.body_text(0)?;
        let text = crlf(t.trim_end_matches(['\r', '\n']));
        if let (Some(all), Cow::Borrowed(text)) = (self.shared, &text)
            && let Some(shared) = Str::within(all, text)
        {
            return Some(shared);
        }
        Some(Str::from(&*text))
    }

    /// The top-level MIME entity as received: its Content-* headers and raw body, for
    /// carrying the mail intact in large mode.
    pub fn mime_entity(&self) -> Vec<u8> {
        let (mut head, body) = self.mime_entity_parts();
        head.extend_from_slice(body);
        head
    }

    /// [`Mail::mime_entity`] as (Content-* header lines and blank line, raw body), so the
    /// body can be written into a larger document without an intermediate copy.
    pub fn mime_entity_parts(&self) -> (Vec<u8>, &'x [u8]) {
        let root = self.msg.root_part();
        let mut out = Vec::with_capacity(512);
        let mut have_ct = false;
        for h in &root.headers {
            let n = h.name.as_str();
            // Bytes, not `str` slicing: a header name may hold multi-byte characters (fuzz: map).
            if n.len() > 8 && n.as_bytes()[..8].eq_ignore_ascii_case(b"content-") {
                have_ct |= n.eq_ignore_ascii_case("content-type");
                out.extend_from_slice(n.as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(raw_value(self.raw, h).as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
        if !have_ct {
            out.extend_from_slice(b"Content-Type: text/plain; charset=us-ascii\r\n");
        }
        out.extend_from_slice(b"\r\n");
        let start = (root.offset_body as usize).min(self.raw.len());
        let end = (root.offset_end as usize).clamp(start, self.raw.len());
        (out, &self.raw[start..end])
    }

    /// [`Mail::mime_entity_parts`] with the body as [`Bytes`]: a slice of the received mail
    /// when it was parsed with [`Mail::parse_shared`] (no copy), else a copy.
    pub fn mime_entity_shared(&self) -> (Vec<u8>, Bytes) {
        let (head, body) = self.mime_entity_parts();
        let body = match self.shared {
            Some(all) => all.slice_ref(body),
            None => Bytes::copy_from_slice(body),
        };
        (head, body)
    }

    /// Whether any part could not be decoded as declared.
    pub fn has_encoding_problem(&self) -> bool {
        self.msg.parts.iter().any(|p| p.is_encoding_problem)
            || matches!(self.msg.root_part().body, PartType::Binary(_))
                && self.msg.text_body_count() > 0
    }
}

fn push_addresses(a: &Address, out: &mut Vec<Mailbox>) {
    for addr in a.iter() {
        if let Some(address) = &addr.address {
            out.push(Mailbox {
                name: addr
                    .name
                    .as_ref()
                    .map(|n| n.to_string())
                    .filter(|n| !n.trim().is_empty()),
                address: address.to_string(),
            });
        }
    }
}

fn value_text(v: &HeaderValue, raw: &[u8], h: &mail_parser::Header) -> String {
    match v {
        HeaderValue::Text(t) => unfold(t),
        HeaderValue::TextList(l) => l.iter().map(|s| unfold(s)).collect::<Vec<_>>().join(", "),
        HeaderValue::Address(a) => {
            let mut boxes = Vec::new();
            push_addresses(a, &mut boxes);
            boxes
                .iter()
                .map(|m| match &m.name {
                    Some(n) => format!("{n} <{}>", m.address),
                    None => m.address.clone(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        }
        HeaderValue::DateTime(d) => d.to_rfc822(),
        _ => raw_value(raw, h),
    }
}

fn raw_value(raw: &[u8], h: &mail_parser::Header) -> String {
    let start = (h.offset_start as usize).min(raw.len());
    let end = (h.offset_end as usize).clamp(start, raw.len());
    unfold(&String::from_utf8_lossy(&raw[start..end]))
}

/// Unfolds a header value (RFC 5322 §2.2.3) and trims it; any remaining CR/LF becomes a space.
fn unfold(s: &str) -> String {
    let s = s.trim();
    if memchr::memchr2(b'\r', b'\n', s.as_bytes()).is_none() {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut pending_space = false;
    for c in s.chars() {
        if c == '\r' || c == '\n' {
            pending_space = true;
            continue;
        }
        if pending_space {
            if !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            if c == ' ' || c == '\t' {
                continue;
            }
        }
        out.push(c);
    }
    // Trimmed first, so only a line break between spaces can leave an end to trim.
    let end = out.trim_end().len();
    out.truncate(end);
    out
}

/// Normalizes line ends to CRLF.
fn crlf(s: &str) -> std::borrow::Cow<'_, str> {
    let b = s.as_bytes();
    let bare = b.iter().enumerate().any(|(i, &c)| {
        (c == b'\n' && (i == 0 || b[i - 1] != b'\r'))
            || (c == b'\r' && b.get(i + 1) != Some(&b'\n'))
    });
    if !bare {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + s.len() / 32);
    let mut prev = '\0';
    for c in s.chars() {
        if c == '\n' && prev != '\r' {
            out.push('\r');
        }
        if prev == '\r' && c != '\n' {
            out.push('\n');
        }
        out.push(c);
        prev = c;
    }
    if prev == '\r' {
        out.push('\n');
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_headers_and_text() {
        let raw = b"From: =?utf-8?q?J=C3=BCrgen?= <j@mail.example.org>\r\n\
To: a@x.org, \"B\" <b@x.org>\r\n\
Subject: =?iso-8859-1?q?Gr=FC=DFe?=\r\n\x20aus Berlin\r\n\
Disposition-Notification-To: j@mail.example.org\r\n\
Date: Fri, 21 Nov 2025 09:03:07 -0500\r\n\
Content-Type: text/plain; charset=iso-8859-1\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
Sch=F6n\r\n";
        let m = Mail::parse(raw).unwrap();
        assert_eq!(m.mailboxes("From")[0].name.as_deref(), Some("Jürgen"));
        assert_eq!(m.mailboxes("to").len(), 2);
        assert_eq!(
            m.mailboxes("Disposition-Notification-To")[0].address,
            "j@mail.example.org"
        );
        assert_eq!(m.subject().as_deref(), Some("Grüße aus Berlin"));
        assert_eq!(m.date().unwrap().0, 1763733787);
        assert_eq!(m.text().as_deref(), Some("Schön"));
        assert_eq!(m.content_type(), "text/plain");
        assert!(
            String::from_utf8_lossy(&m.mime_entity())
                .starts_with("Content-Type: text/plain; charset=iso-8859-1\r\n")
        );
    }

    #[test]
    fn a_shared_mail_hands_out_its_body_without_a_copy() {
        let raw = Bytes::from_static(
            b"From: a@x.org\r\nContent-Type: text/plain\r\nX-Other: 1\r\n\r\nbody\r\n",
        );
        let shared = Mail::parse_shared(&raw).unwrap();
        let (head, body) = shared.mime_entity_shared();
        assert_eq!(head, b"Content-Type: text/plain\r\n\r\n");
        assert_eq!(&body[..], b"body\r\n");
        assert_eq!(body.as_ptr(), raw[raw.len() - 6..].as_ptr());
        let copied = Mail::parse(&raw).unwrap().mime_entity_shared();
        assert_eq!((copied.0, &copied.1[..]), (head, &body[..]));
        assert_eq!(
            shared.mime_entity(),
            b"Content-Type: text/plain\r\n\r\nbody\r\n"
        );
    }

    #[test]
    fn a_text_that_needs_no_decoding_is_read_in_place() {
        let plain = Bytes::from_static(
            b"From: a@x.org\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nline 1\r\nline \xc3\xa9\r\n\r\n",
        );
        let text = Mail::parse_shared(&plain).unwrap().text_shared().unwrap();
        assert_eq!(&*text, "line 1\r\nline \u{e9}");
        let at = plain.len() - "line 1\r\nline \u{e9}\r\n\r\n".len();
        assert_eq!(text.as_ptr(), plain[at..].as_ptr(), "a slice of the mail");
        assert_eq!(
            Mail::parse(&plain).unwrap().text_shared().as_deref(),
            Some(&*text),
            "the same text copied"
        );
        // decoded, or with bare LF made CRLF: a new buffer with the decoded text
        for (raw, want) in [
            (
                &b"Content-Transfer-Encoding: quoted-printable\r\n\r\nSch=C3=B6n\r\n"[..],
                "Sch\u{f6}n",
            ),
            (&b"Subject: x\r\n\r\na\nb\r\n"[..], "a\r\nb"),
        ] {
            let raw = Bytes::copy_from_slice(raw);
            let text = Mail::parse_shared(&raw).unwrap().text_shared().unwrap();
            assert_eq!(&*text, want);
            let inside = raw.as_ptr_range().contains(&text.as_ptr());
            assert!(!inside, "{want:?} is not the received octets");
        }
    }

    #[test]
    fn unfolding() {
        assert_eq!(unfold("a\r\n b\r\n\tc"), "a b c");
        assert_eq!(unfold("x\r\ny"), "x y");
        assert_eq!(unfold("  a \r\n b  "), "a  b");
        assert_eq!(unfold("\r\n a\r\n"), "a");
        assert_eq!(unfold(" plain "), "plain");
        assert_eq!(unfold("\u{a0}x\u{a0}"), "x");
        assert_eq!(unfold("\r\n\r\n"), "");
    }

    #[test]
    fn empty_input_is_refused() {
        assert!(Mail::parse(b"").is_err());
    }
}
