//! SMTP replies: the one place where `NNN x.y.z text` is represented and written.

use std::fmt;

/// One SMTP reply: code, optional enhanced status code (RFC 3463), text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Reply {
    pub code: u16,
    /// Enhanced status code `class.subject.detail`, e.g. `5.1.1`.
    pub status: Option<String>,
    pub text: String,
}

/// Why a reply string from a rule is not a valid SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("an SMTP reply starts with a 3-digit code 2xx-5xx, found `{0}`")]
    BadCode(String),
    #[error("the enhanced status code `{status}` does not match the reply class {code}")]
    ClassMismatch { code: u16, status: String },
    #[error("a reply text may not contain CR, LF or control characters")]
    ControlCharacter,
}

impl Reply {
    pub fn new(code: u16, status: &str, text: impl Into<String>) -> Self {
        Reply {
            code,
            status: (!status.is_empty()).then(|| status.to_string()),
            text: text.into(),
        }
    }

    /// Parses `550 5.1.1 <x>: unknown` (the enhanced code is optional).
    pub fn parse(s: &str) -> Result<Self, ReplyError> {
        let s = s.trim();
        if s.chars().any(|c| c.is_control()) {
            return Err(ReplyError::ControlCharacter);
        }
        let (code, rest) = s.split_at(s.len().min(3));
        let code_n: u16 = code
            .parse()
            .ok()
            .filter(|c| (200..600).contains(c) && code.len() == 3)
            .ok_or_else(|| ReplyError::BadCode(s.to_string()))?;
        if !rest.is_empty() && !rest.starts_with(' ') {
            return Err(ReplyError::BadCode(s.to_string()));
        }
        let rest = rest.trim_start();
        let (status, text) = match rest.split_once(' ').unwrap_or((rest, "")) {
            (first, text) if is_enhanced(first) => (Some(first.to_string()), text.to_string()),
            _ => (None, rest.to_string()),
        };
        if let Some(st) = &status
            && st.as_bytes()[0] as u16 - b'0' as u16 != code_n / 100
        {
            return Err(ReplyError::ClassMismatch {
                code: code_n,
                status: st.clone(),
            });
        }
        Ok(Reply {
            code: code_n,
            status,
            text,
        })
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        self.code / 100 == 2
    }
    /// 4xx: the sender keeps the mail and retries.
    pub fn is_transient(&self) -> bool {
        self.code / 100 == 4
    }
    /// 5xx: the sender bounces now.
    pub fn is_permanent(&self) -> bool {
        self.code / 100 == 5
    }

    /// The wire form, CRLF-terminated; a text with `\n` becomes continuation lines.
    ///
    /// Whatever the text holds, what goes on the wire is well formed: control characters
    /// (a CR, a NUL, ... that reached the text from a peer) become `?`, every line is at most
    /// [`MAX_LINE`] octets with its CRLF (RFC 5321 §4.5.3.1.5) — a longer text is cut, at a
    /// character boundary, with `...` — and there are at most [`MAX_LINES`] lines.
    pub fn to_wire(&self) -> String {
        let mut out = String::new();
        let prefix = match &self.status {
            Some(s) => format!("{} ", s),
            None => String::new(),
        };
        let lines: Vec<&str> = if self.text.is_empty() {
            vec![""]
        } else {
            self.text.split('\n').take(MAX_LINES).collect()
        };
        // code, separator, prefix, text, CRLF
        let room = MAX_LINE.saturating_sub(3 + 1 + prefix.len() + 2);
        for (i, line) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            out.push_str(&format!("{}{}{}", self.code, sep, prefix));
            push_bounded(&mut out, line, room);
            out.push_str("\r\n");
        }
        out
    }
}

/// The longest reply line, CRLF included (RFC 5321 §4.5.3.1.5).
pub const MAX_LINE: usize = 512;
/// The most lines one reply is written with.
pub const MAX_LINES: usize = 32;

/// Appends `text` with control characters as `?`, cut to `room` octets (with `...`).
fn push_bounded(out: &mut String, text: &str, room: usize) {
    let clean = |c: char| if c.is_control() { '?' } else { c };
    if text.len() <= room {
        out.extend(text.chars().map(clean));
        return;
    }
    let mut used = 0;
    for c in text.chars() {
        if used + c.len_utf8() > room.saturating_sub(3) {
            break;
        }
        used += c.len_utf8();
        out.push(clean(c));
    }
    out.push_str("...");
}

/// `class.subject.detail` (RFC 3463): class 2, 4 or 5, subject and detail 1-3 digits.
pub(crate) fn is_enhanced(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && matches!(parts[0], "2" | "4" | "5")
        && parts[1..]
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.status {
            Some(s) if self.text.is_empty() => write!(f, "{} {}", self.code, s),
            Some(s) => write!(f, "{} {} {}", self.code, s, self.text),
            None => write!(f, "{} {}", self.code, self.text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for s in [
            "550 5.1.1 <x@y>: unknown",
            "250 2.0.0 OK",
            "451 try later",
            "221 2.0.0",
        ] {
            assert_eq!(Reply::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn refuses_bad_replies() {
        assert!(matches!(Reply::parse("55 x"), Err(ReplyError::BadCode(_))));
        assert!(matches!(Reply::parse("650 x"), Err(ReplyError::BadCode(_))));
        assert!(matches!(
            Reply::parse("550 4.1.1 x"),
            Err(ReplyError::ClassMismatch { .. })
        ));
        assert!(matches!(
            Reply::parse("550 a\rb"),
            Err(ReplyError::ControlCharacter)
        ));
    }

    #[test]
    fn wire_lines_are_bounded_and_clean() {
        let long = Reply::new(
            451,
            "4.3.0",
            format!("Retry-After: 60 ({})", "é".repeat(3000)),
        );
        let wire = long.to_wire();
        assert!(wire.len() <= MAX_LINE, "{}", wire.len());
        assert!(wire.ends_with("...\r\n"));
        let ctl = Reply::new(451, "4.3.0", "a\rb\x00c\x1bd");
        assert_eq!(ctl.to_wire(), "451 4.3.0 a?b?c?d\r\n");
        let many = Reply::new(250, "", "x\n".repeat(100));
        assert_eq!(many.to_wire().matches("\r\n").count(), MAX_LINES);
        for line in many.to_wire().split_terminator("\r\n") {
            assert!(line.len() + 2 <= MAX_LINE);
        }
    }

    #[test]
    fn wire_form() {
        assert_eq!(
            Reply::parse("250 2.0.0 OK").unwrap().to_wire(),
            "250 2.0.0 OK\r\n"
        );
    }
}
