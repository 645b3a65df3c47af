//! Thin public wrappers around the I/O-free pieces of the SMTP layer, for the fuzz targets
//! under `fuzz/` and the framing property test (they only see the public API). Not part of
//! the supported API: names and shapes may change with the pieces they wrap.

use bytes::BytesMut;

pub use super::data::ContentError;
use crate::smtp::reply::Reply;

/// The DATA content receiver ([`super::data`]): only `CRLF.CRLF` ends the data.
pub struct DataReceiver(super::data::DataPhase);

impl DataReceiver {
    /// `max_size`: largest message; `max_line`: longest text line, CRLF included.
    pub fn new(max_size: usize, max_line: usize, size_hint: Option<u64>) -> Self {
        DataReceiver(super::data::DataPhase::new(max_size, max_line, size_hint))
    }

    /// Octets consumed, and whether the end of data was seen (input after it is left).
    pub fn ingest(&mut self, input: &[u8]) -> (usize, bool) {
        self.0.ingest(input)
    }

    /// The unstuffed message, or why it is refused.
    pub fn finish(self) -> Result<Vec<u8>, ContentError> {
        self.0.finish()
    }
}

/// One framed command line ([`super::line`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framed {
    /// A complete line, CRLF included.
    Command(Vec<u8>),
    TooLong,
    BareLineEnd,
}

/// The command-line framer ([`super::line::LineReader`]).
#[derive(Default)]
pub struct LineFramer(super::line::LineReader);

impl LineFramer {
    /// The next line out of `buf` (`max`: longest line, CRLF included), or `None`.
    pub fn next(&mut self, buf: &mut BytesMut, max: usize) -> Option<Framed> {
        use super::line::Line;
        self.0.next(buf, max).map(|l| match l {
            Line::Command(b) => Framed::Command(b.to_vec()),
            Line::TooLong => Framed::TooLong,
            Line::BareLineEnd => Framed::BareLineEnd,
        })
    }
}

/// The bounded MAIL parameter checks ([`super::params`]); `Err` is the reply.
pub fn check_mail(line: &[u8], max_size: usize) -> Result<(), Reply> {
    super::params::check_mail(line, max_size)
}

/// The bounded RCPT parameter checks; `Err` is the reply.
pub fn check_rcpt(line: &[u8]) -> Result<(), Reply> {
    super::params::check_rcpt(line)
}

/// The `keyword[=value]` parameters after the path of a MAIL / RCPT line.
pub fn parameters(line: &[u8]) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    super::params::parameters(line)
        .into_iter()
        .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
        .collect()
}
