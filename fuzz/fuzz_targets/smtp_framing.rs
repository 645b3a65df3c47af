//! Arbitrary bytes through the SMTP layer's I/O-free pieces, as one connection would feed
//! them: command-line framing (`LineFramer`), smtp-proto's parser on each complete line, the
//! bounded MAIL/RCPT parameter checks, and the DATA receiver after every line that parses
//! as `DATA`. The first byte picks the read size, so the same stream is also cut in pieces.
//!
//! Properties: no panic; a framed command is CRLF-terminated with no other CR or LF inside
//! and within the limit; a parameter reply is one bounded line; and **framing**: a DATA
//! section ends exactly where an independent scan finds the first real `CRLF.CRLF` (the
//! DATA line's own CRLF counting as the first CRLF), so no byte stream yields more
//! completed DATA sections than it has real terminators reached from a DATA state.
#![no_main]

use bytes::BytesMut;
use iwf::smtp::fuzzing::{DataReceiver, Framed, LineFramer, check_mail, check_rcpt, parameters};
use libfuzzer_sys::fuzz_target;

const MAX_LINE: usize = 512 + 2048;
const MAX_SIZE: usize = 4096;

/// Where the first `CRLF.CRLF` ends in `content`, the DATA command's CRLF counting as the
/// CRLF before it: the offset just past it.
fn reference_end(content: &[u8]) -> Option<usize> {
    if content.starts_with(b".\r\n") {
        return Some(3);
    }
    content
        .windows(5)
        .position(|w| w == b"\r\n.\r\n")
        .map(|p| p + 5)
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let step = usize::from(first % 32) + 1;
    let mut framer = LineFramer::default();
    let mut buf = BytesMut::new();
    // The stream offset of buf[0].
    let mut offset = 0usize;
    let mut fed = 0usize;
    // Some((receiver, stream offset where the content began))
    let mut data: Option<(DataReceiver, usize)> = None;
    while fed < input.len() || !buf.is_empty() {
        if fed < input.len() {
            let end = (fed + step).min(input.len());
            buf.extend_from_slice(&input[fed..end]);
            fed = end;
        }
        loop {
            if let Some((rx, start)) = &mut data {
                let (used, done) = rx.ingest(&buf);
                assert!(used <= buf.len());
                let _ = buf.split_to(used);
                offset += used;
                if !done {
                    assert!(buf.is_empty(), "not done, yet input left");
                    break;
                }
                let want = reference_end(&input[*start..]).map(|e| *start + e);
                assert_eq!(Some(offset), want, "DATA ended where no CRLF.CRLF ends");
                let (rx, start) = data.take().expect("in data");
                if let Ok(msg) = rx.finish() {
                    assert!(msg.len() <= MAX_SIZE);
                    // Unstuffed content has CRLF line ends only.
                    for (i, &b) in msg.iter().enumerate() {
                        if b == b'\n' {
                            assert!(i > 0 && msg[i - 1] == b'\r', "bare LF kept");
                        }
                        if b == b'\r' {
                            assert_eq!(msg.get(i + 1), Some(&b'\n'), "bare CR kept");
                        }
                    }
                    assert!(msg.len() <= offset - start);
                }
                continue;
            }
            let before = buf.len();
            let next = framer.next(&mut buf, MAX_LINE);
            // (The rest of an over-long line is consumed even when no line comes out.)
            offset += before - buf.len();
            let Some(line) = next else {
                break;
            };
            let Framed::Command(line) = line else {
                continue;
            };
            assert!(line.len() <= MAX_LINE);
            assert!(line.ends_with(b"\r\n"));
            assert!(
                !line[..line.len() - 2]
                    .iter()
                    .any(|&b| b == b'\r' || b == b'\n'),
                "CR or LF inside a framed line"
            );
            let verb = line.get(..4).unwrap_or_default();
            if verb.eq_ignore_ascii_case(b"MAIL") {
                if let Err(r) = check_mail(&line, MAX_SIZE) {
                    let r = r.to_string();
                    assert!(r.len() <= 512 && !r.contains(['\r', '\n']), "{r:?}");
                }
                let _ = parameters(&line);
            } else if verb.eq_ignore_ascii_case(b"RCPT")
                && let Err(r) = check_rcpt(&line)
            {
                let r = r.to_string();
                assert!(r.len() <= 512 && !r.contains(['\r', '\n']), "{r:?}");
            }
            if let Ok(smtp_proto::Request::Data) = smtp_proto::Request::parse(&mut line.iter()) {
                data = Some((DataReceiver::new(MAX_SIZE, 1000, None), offset));
            }
        }
        if fed >= input.len() {
            break;
        }
    }
    // Whatever remains unframed at the end is an unfinished line or unfinished content.
    if let Some((_, start)) = data {
        assert_eq!(
            reference_end(&input[start..]),
            None,
            "a real CRLF.CRLF was not seen as the end"
        );
    }
});
