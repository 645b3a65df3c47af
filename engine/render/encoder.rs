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
pub fn check_value(name: &str, value: &str) -> Result<(), EncodeError> {
    // Fast path: ASCII without C0 controls (tab allowed) or DEL is always fine.
    if value
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) || b == b'\t')
    {
        return Ok(());
    }
    match value
        .char_indices()
        .find(|&(_, c)| c.is_control() && c != '\t')
    {
        Some((at, ch)) => Err(EncodeError::ControlInValue {
            name: name.to_string(),
            ch,
            at,
        }),
        None => Ok(()),
    }
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
        for c in self.0.chars() {
            if c == '"' || c == '\\' {
                f.write_str("\\")?;
            }
            write!(f, "{c}")?;
        }
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
