//! Writing the RFC 5322 mail: the one mail-header encoder and the body encodings.
//!
//! Every header value goes through [`header`]: it refuses CR, LF and every other control
//! character (the same check as [`crate::render::encoder`] for SIP), folds long lines at
//! white space (RFC 5322 §2.2.3), and — unless the next hop takes UTF-8 headers
//! (SMTPUTF8) — writes non-ASCII as RFC 2047 encoded words through mail-builder (address
//! headers keep their addresses, only the display names are encoded).

use mail_builder::headers::Header as _;
use mail_builder::headers::address::Address;
use mail_builder::headers::text::Text;

use crate::render::encoder::{self, EncodeError};

/// Folding target (RFC 5322 §2.1.1: SHOULD ≤ 78, MUST ≤ 998).
const FOLD_AT: usize = 78;
const MAX_LINE: usize = 998;

/// Headers whose value is an address list (RFC 5322 §3.6.2–3.6.3, RFC 3798 §2.1).
const ADDRESS_HEADERS: &[&str] = &[
    "from",
    "to",
    "cc",
    "reply-to",
    "sender",
    "disposition-notification-to",
];

/// Why a header cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error("header {0}: a word longer than {MAX_LINE} bytes cannot be folded")]
    TooLong(String),
    #[error("header {0}: not an address list")]
    NotAddresses(String),
}

/// Writes `name: value` with CRLF, folded; `utf8`: the next hop offers SMTPUTF8.
pub fn header(name: &str, value: &str, utf8: bool) -> Result<String, HeaderError> {
    encoder::check_name(name)?;
    encoder::check_value(name, value)?;
    let value = value.trim();
    if value.is_ascii() || utf8 {
        if let Some(s) = fold(name, value) {
            return Ok(s);
        }
        if value.is_ascii() && !is_unstructured(name) {
            return Err(HeaderError::TooLong(name.to_string()));
        }
    }
    let mut out = format!("{name}: ").into_bytes();
    if ADDRESS_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
        addresses(name, value)?.write_header(&mut out, name.len() + 2);
    } else {
        Text::new(value).write_header(&mut out, name.len() + 2);
    }
    let s = String::from_utf8(out).map_err(|_| HeaderError::NotAddresses(name.into()))?;
    if s.split("\r\n").any(|l| l.len() > MAX_LINE) {
        return Err(HeaderError::TooLong(name.to_string()));
    }
    Ok(s)
}

fn is_unstructured(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n == "subject" || n == "comments" || n.starts_with("x-")
}

/// Folds at white space before [`FOLD_AT`] where it can; `None` when a word alone would
/// make a line longer than [`MAX_LINE`].
fn fold(name: &str, value: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len() + value.len() + 8);
    out.push_str(name);
    out.push(':');
    let mut line = out.len();
    for (i, word) in value.split(' ').enumerate() {
        if word.is_empty() && i > 0 {
            continue;
        }
        if line + 1 + word.len() > FOLD_AT && line > name.len() + 1 {
            out.push_str("\r\n");
            line = 0;
        }
        out.push(' ');
        out.push_str(word);
        line += 1 + word.len();
        if line > MAX_LINE {
            return None;
        }
    }
    out.push_str("\r\n");
    Some(out)
}

/// Parses an address-list value with mail-parser and hands it to mail-builder, which
/// encodes the display names (RFC 2047 §5 (3)) and folds.
fn addresses(name: &str, value: &str) -> Result<Address<'static>, HeaderError> {
    let raw = format!("To: {value}\r\n\r\n");
    let msg = mail_parser::MessageParser::new()
        .parse(raw.as_bytes())
        .ok_or_else(|| HeaderError::NotAddresses(name.into()))?;
    let list = msg
        .to()
        .ok_or_else(|| HeaderError::NotAddresses(name.into()))?;
    let mut items = Vec::new();
    for a in list.iter() {
        let Some(addr) = a.address() else {
            return Err(HeaderError::NotAddresses(name.into()));
        };
        if !addr.is_ascii() {
            // A non-ASCII address needs SMTPUTF8 (RFC 4356 §2.1.3.2; RFC 6531).
            return Err(HeaderError::NotAddresses(name.into()));
        }
        items.push(Address::new_address(
            a.name().map(|n| n.to_string()),
            addr.to_string(),
        ));
    }
    Ok(match items.len() {
        1 => items.remove(0),
        _ => Address::new_list(items),
    })
}

/// Content-Transfer-Encoding of the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    SevenBit,
    EightBit,
    QuotedPrintable,
    Base64,
}

impl Encoding {
    pub fn parse(s: &str) -> Option<Encoding> {
        Some(match s {
            "7bit" => Encoding::SevenBit,
            "8bit" => Encoding::EightBit,
            "quoted-printable" => Encoding::QuotedPrintable,
            "base64" => Encoding::Base64,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::SevenBit => "7bit",
            Encoding::EightBit => "8bit",
            Encoding::QuotedPrintable => "quoted-printable",
            Encoding::Base64 => "base64",
        }
    }
}

/// Text with CRLF line ends (bare CR and LF become CRLF).
pub fn crlf(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + text.len() / 32);
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if text.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Whether CRLF text may go as it is: 7bit (ASCII) or 8bit, no NUL, no line over 998.
pub fn fits_as_is(text: &[u8], eight_bit: bool) -> bool {
    text.split(|&b| b == b'\n').all(|l| l.len() <= MAX_LINE + 1)
        && !text.contains(&0)
        && (eight_bit || text.is_ascii())
}

/// Encodes the body. Text is expected with CRLF line ends; an encoding the text does not
/// fit (8bit with a long line, 7bit with 8-bit bytes) falls back to quoted-printable.
pub fn body(bytes: &[u8], enc: Encoding) -> (Encoding, Vec<u8>) {
    match enc {
        Encoding::SevenBit | Encoding::EightBit if fits_as_is(bytes, false) => {
            (Encoding::SevenBit, bytes.to_vec())
        }
        Encoding::EightBit if fits_as_is(bytes, true) => (enc, bytes.to_vec()),
        Encoding::Base64 => (enc, base64_lines(bytes)),
        _ => (Encoding::QuotedPrintable, quoted_printable(bytes)),
    }
}

fn base64_lines(bytes: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let b = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = Vec::with_capacity(b.len() + b.len() / 38 + 2);
    for chunk in b.as_bytes().chunks(76) {
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// RFC 2045 §6.7 quoted-printable of CRLF text: hard line breaks kept, soft breaks at 76.
fn quoted_printable(text: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(text.len() * 11 / 10 + 8);
    let mut lines = text.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let last = lines.peek().is_none();
        if last && line.is_empty() {
            break;
        }
        let mut col = 0;
        for (i, &b) in line.iter().enumerate() {
            let end = i + 1 == line.len();
            let literal = (b == b' ' || b == b'\t') && !end || (33..=126).contains(&b) && b != b'=';
            let width = if literal { 1 } else { 3 };
            if col + width > 75 {
                out.extend_from_slice(b"=\r\n");
                col = 0;
            }
            if literal {
                out.push(b);
            } else {
                out.extend_from_slice(&[b'=', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
            }
            col += width;
        }
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_injection_and_folds() {
        assert!(header("Subject", "hi\r\nBcc: x@y", false).is_err());
        assert!(header("Subject", "a\rb", true).is_err());
        assert!(header("Bad Name", "x", false).is_err());
        let long = "word ".repeat(40);
        let h = header("Subject", &long, false).unwrap();
        assert!(h.split("\r\n").all(|l| l.len() <= 78), "{h}");
        assert!(h.ends_with("\r\n"));
        let h = header("Subject", "Grüße aus Köln", false).unwrap();
        assert!(h.starts_with("Subject: =?utf-8?"), "{h}");
        let h = header("Subject", "Grüße aus Köln", true).unwrap();
        assert_eq!(h, "Subject: Grüße aus Köln\r\n");
        let h = header("From", "\"Bjørn\" <+15551234567@cpm.example.net>", false).unwrap();
        assert!(h.contains("<+15551234567@cpm.example.net>"), "{h}");
        assert!(h.is_ascii(), "{h}");
        let huge = "x".repeat(2000);
        assert!(header("Message-ID", &huge, false).is_err());
        let h = header("Subject", &huge, false).unwrap();
        assert!(h.split("\r\n").all(|l| l.len() <= 998));
    }

    #[test]
    fn body_encodings() {
        let text = crlf("Grüße\nline two".as_bytes());
        assert_eq!(body(&text, Encoding::EightBit).0, Encoding::EightBit);
        let (e, qp) = body(&text, Encoding::QuotedPrintable);
        assert_eq!(e, Encoding::QuotedPrintable);
        assert_eq!(qp, b"Gr=C3=BC=C3=9Fe\r\nline two\r\n");
        let long = crlf("a".repeat(2000).as_bytes());
        let (e, out) = body(&long, Encoding::EightBit);
        assert_eq!(e, Encoding::QuotedPrintable);
        assert!(out.split(|&b| b == b'\n').all(|l| l.len() <= 77));
        let (_, b64) = body(&[0u8, 1, 2, 255], Encoding::Base64);
        assert_eq!(b64, b"AAEC/w==\r\n");
    }
}
