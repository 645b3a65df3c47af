//! Command-line framing without I/O.
//!
//! smtp-proto's `RequestReceiver` accepts a bare LF as a line end and lines up to 4096
//! octets; RFC 5321 §2.3.8 says a server must not recognise anything but CRLF, and
//! §4.5.3.1.4 limits a command line to 512 octets. So framing is done here and smtp-proto's
//! parser only ever sees one complete, CRLF-terminated, checked line.

use bytes::{Buf, Bytes, BytesMut};

/// What the next piece of input is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Line {
    /// A complete command line, CRLF included, no other CR or LF inside.
    Command(Bytes),
    /// A line longer than the limit; it has been (or is being) discarded up to its LF.
    TooLong,
    /// A line ended by a bare LF, or with a CR not followed by LF inside; discarded.
    BareLineEnd,
}

/// Splits buffered input into command lines.
#[derive(Debug, Default)]
pub(crate) struct LineReader {
    /// The rest of an over-long line is being thrown away up to its LF.
    skipping: bool,
}

impl LineReader {
    /// Takes the next line out of `buf`, or `None` when `buf` holds no complete line yet.
    /// `max` is the longest acceptable line, CRLF included.
    pub(crate) fn next(&mut self, buf: &mut BytesMut, max: usize) -> Option<Line> {
        if self.skipping {
            match memchr(b'\n', buf) {
                Some(pos) => {
                    buf.advance(pos + 1);
                    self.skipping = false;
                }
                None => {
                    buf.clear();
                    return None;
                }
            }
        }
        match memchr(b'\n', buf) {
            Some(pos) => {
                let line = buf.split_to(pos + 1).freeze();
                if line.len() > max {
                    Some(Line::TooLong)
                } else if pos == 0 || line[pos - 1] != b'\r' || line[..pos - 1].contains(&b'\r') {
                    Some(Line::BareLineEnd)
                } else {
                    Some(Line::Command(line))
                }
            }
            // No LF within `max` octets: the line can only be too long. Answer now (the
            // client may be waiting) and drop the rest of it as it arrives.
            None if buf.len() >= max => {
                buf.clear();
                self.skipping = true;
                Some(Line::TooLong)
            }
            None => None,
        }
    }
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    memchr::memchr(needle, haystack)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&str], max: usize) -> Vec<Line> {
        let mut reader = LineReader::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk.as_bytes());
            while let Some(line) = reader.next(&mut buf, max) {
                out.push(line);
            }
        }
        out
    }

    fn cmd(s: &str) -> Line {
        Line::Command(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn framing_table() {
        use Line::*;
        let cases: &[(&[&str], usize, Vec<Line>)] = &[
            (&["NOOP\r\n"], 512, vec![cmd("NOOP\r\n")]),
            (
                &["NO", "OP\r", "\nQUIT\r\n"],
                512,
                vec![cmd("NOOP\r\n"), cmd("QUIT\r\n")],
            ),
            (&["NOOP\n"], 512, vec![BareLineEnd]),
            (&["\n"], 512, vec![BareLineEnd]),
            (&["NO\rOP\r\n"], 512, vec![BareLineEnd]),
            (&["NOOP\r\rQUIT\r\n"], 512, vec![BareLineEnd]),
            // exactly at the limit (CRLF included) is fine, one more is not
            (&["NOOP 123\r\n"], 10, vec![cmd("NOOP 123\r\n")]),
            (&["NOOP 1234\r\n"], 10, vec![TooLong]),
            // a long line arriving in pieces is refused once, then skipped to its LF
            (
                &["NOOP 1234567", "89012345", "6789\r\nQUIT\r\n"],
                10,
                vec![TooLong, cmd("QUIT\r\n")],
            ),
            (
                &["MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n"],
                512,
                vec![
                    cmd("MAIL FROM:<a@b>\r\n"),
                    cmd("RCPT TO:<c@d>\r\n"),
                    cmd("DATA\r\n"),
                ],
            ),
            (&["DATA"], 512, vec![]),
        ];
        for (chunks, max, want) in cases {
            assert_eq!(&run(chunks, *max), want, "{chunks:?}");
        }
    }

    #[test]
    fn unfinished_line_stays_buffered() {
        let mut reader = LineReader::default();
        let mut buf = BytesMut::from(&b"QUIT\r\nNOO"[..]);
        assert_eq!(reader.next(&mut buf, 512), Some(cmd("QUIT\r\n")));
        assert_eq!(reader.next(&mut buf, 512), None);
        assert_eq!(&buf[..], b"NOO");
    }
}
