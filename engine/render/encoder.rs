//! The one encoder for header values written into SIP, CPIM, SDP and MSRP.
//!
//! Header injection is impossible by construction: every header the mechanisms write goes
//! through [`check_value`], which refuses CR, LF and every other control character
//! (horizontal tab excepted, which is linear white space), and [`check_name`], which accepts
//! only RFC 3261 `token` characters.

use std::fmt;

/// A value or name that may not be written into a header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("header {name}: value contains control character {ch:?} at byte {at}")]
    ControlInValue { name: String, ch: char, at: usize },
    #[error("`{0}` is not a valid header name (RFC 3261 token characters only)")]
    BadName(String),
}

/// RFC 3261 §25.1 `token` characters.
pub fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-.!%*_+`'~".contains(c)
}

/// Checks a header name (a non-empty token).
pub fn check_name(name: &str) -> Result<(), EncodeError> {
    if !name.is_empty() && name.chars().all(is_token_char) {
        Ok(())
    } else {
        Err(EncodeError::BadName(name.to_string()))
    }
}

/// Checks a header value: no CR, LF or other control characters.
///
/// The control characters (`char::is_control`, Unicode category Cc) are U+0000–U+001F,
/// U+007F and U+0080–U+009F; in UTF-8 the first two ranges are single bytes and the last is
/// `C2 80`–`C2 9F` (`C2` is only ever a lead byte), so one pass over the bytes finds them,
/// non-ASCII text included, without decoding characters.
pub fn check_value(name: &str, value: &str) -> Result<(), EncodeError> {
    let bytes = value.as_bytes();
    for (at, &b) in bytes.iter().enumerate() {
        let ch = if (b < 0x20 && b != b'\t') || b == 0x7f {
            char::from(b)
        } else if b == 0xc2
            && let Some(&next) = bytes.get(at + 1)
            && (0x80..=0x9f).contains(&next)
        {
            char::from(next)
        } else {
            continue;
        };
        return Err(EncodeError::ControlInValue {
            name: name.to_string(),
            ch,
            at,
        });
    }
    Ok(())
}

/// Checks both and returns the pair, ready to write as `name: value`.
pub fn header(name: &str, value: &str) -> Result<(String, String), EncodeError> {
    check_name(name)?;
    check_value(name, value)?;
    Ok((name.to_string(), value.to_string()))
}

/// Writes RFC 3862 / RFC 3261 quoted-string content: `"` and `\` escaped.
pub struct Quoted<'a>(pub &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        // Runs between the characters that need a backslash, written whole.
        let mut rest = self.0;
        while let Some(i) = rest.find(['"', '\\']) {
            f.write_str(&rest[..i])?;
            f.write_str("\\")?;
            f.write_str(&rest[i..i + 1])?;
            rest = &rest[i + 1..];
        }
        f.write_str(rest)?;
        f.write_str("\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_crlf_and_controls() {
        assert!(check_value("Subject", "hi\r\nVia: evil").is_err());
        assert!(check_value("Subject", "a\nb").is_err());
        assert!(check_value("Subject", "a\u{0}b").is_err());
        assert!(check_value("Subject", "a\u{7f}b").is_err());
        assert!(check_value("Subject", "a\u{85}b").is_err());
        assert!(check_value("Subject", "tab\tok, ünïcode ok").is_ok());
    }

    #[test]
    fn finds_the_first_control_character_as_a_char_scan_does() {
        let by_chars = |v: &str| v.char_indices().find(|&(_, c)| c.is_control() && c != '\t');
        for v in [
            "plain",
            "tab\tok",
            "caf\u{e9} \u{a0}\u{bf}\u{c0}\u{ff}\u{100}\u{2028}\u{feff}\u{1f600}",
            "\u{e9}\u{80}x",
            "\u{9f}",
            "a\u{7f}",
            "\u{e9}\u{e9}\r\n",
            "\u{120}\u{85}",
            "\u{a0}\u{1}",
        ] {
            let got = match check_value("X", v) {
                Ok(()) => None,
                Err(EncodeError::ControlInValue { ch, at, .. }) => Some((at, ch)),
                Err(e) => panic!("{e}"),
            };
            assert_eq!(got, by_chars(v), "{v:?}");
        }
        for c in (0..=0x10ffff).filter_map(char::from_u32) {
            let v = format!("a{c}b");
            assert_eq!(
                check_value("X", &v).is_err(),
                c.is_control() && c != '\t',
                "{c:?}"
            );
        }
    }

    #[test]
    fn names_are_tokens() {
        assert!(check_name("P-Asserted-Identity").is_ok());
        assert!(check_name("imdn.Message-ID").is_ok());
        assert!(check_name("Bad Name").is_err());
        assert!(check_name("Bad:Name").is_err());
        assert!(check_name("").is_err());
    }

    #[test]
    fn quoting() {
        assert_eq!(Quoted(r#"A "B" \C"#).to_string(), r#""A \"B\" \\C""#);
    }
}
