//! SIP responses from a hostile peer, as iwf's client meets them: arbitrary bytes through
//! rsipstack's stream framing (`SipCodec`, what a TCP/TLS connection uses; the first byte
//! picks the read size) and its message parser (`SipMessage::try_from`, what UDP uses),
//! then every parsed response through `iwf::sip::response::{malformed, final_outcome,
//! redirect_targets}`.
//!
//! Properties: no panic; a response `malformed` lets through has a status code in 100-699
//! and at least the body its Content-Length promises; the texts `final_outcome` hands to
//! the rules are clean (no control characters) and bounded; redirect targets are
//! `sip:`/`sips:`/`tel:` URIs without CR/LF.
#![no_main]

use bytes::BytesMut;
use iwf::mail_to_cpm::outcome::Outcome;
use iwf::mail_to_cpm::plan::Mode;
use iwf::sip::response::{MAX_PEER_TEXT, final_outcome, malformed, redirect_targets};
use libfuzzer_sys::fuzz_target;
use rsipstack::sip::SipMessage;
use rsipstack::transport::stream::{SipCodec, SipCodecType};
use tokio_util::codec::Decoder;

fn bounded_clean(s: &str) {
    assert!(
        !s.chars().any(char::is_control),
        "control character in {s:?}"
    );
    assert!(
        s.chars().count() <= MAX_PEER_TEXT + 3,
        "{} chars",
        s.chars().count()
    );
}

fn check(msg: SipMessage) {
    let SipMessage::Response(resp) = msg else {
        return;
    };
    if malformed(&resp).is_some() {
        return;
    }
    let code = resp.status_code.code();
    assert!((100..=699).contains(&code), "{code} let through");
    let outcome = final_outcome(&resp, Mode::Pager);
    if let Outcome::Final {
        status,
        reason,
        headers,
        ..
    } = &outcome
    {
        assert_eq!(*status, code);
        bounded_clean(reason);
        for (_, v) in headers {
            bounded_clean(v);
        }
    }
    for t in redirect_targets(&resp) {
        // (schemes are case-insensitive, RFC 3986 §3.1: `teL:` is fine)
        let lower = t.to_ascii_lowercase();
        assert!(
            lower.starts_with("sip:") || lower.starts_with("sips:") || lower.starts_with("tel:"),
            "{t:?}"
        );
        assert!(!t.contains(['\r', '\n']), "{t:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    // As a datagram.
    if let Ok(msg) = SipMessage::try_from(input) {
        check(msg);
    }
    // As a stream, in pieces.
    let step = usize::from(first % 64) + 1;
    let mut codec = SipCodec::new();
    let mut buf = BytesMut::new();
    'feed: for piece in input.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(SipCodecType::Message(msg))) => check(msg),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
    }
});
