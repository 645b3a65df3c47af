//! Arbitrary bytes into the MSRP parser, fed in pieces whose size the first byte picks.
//! Properties: no panic; every frame it returns renders to bytes that parse back to the
//! same frame.
#![no_main]

use iwf::msrp::codec::{Limits, Parser};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let step = usize::from(first % 64) + 1;
    let limits = Limits {
        max_header_bytes: 4096,
        max_body_bytes: 8192,
    };
    let mut parser = Parser::new(limits);
    let mut frames = Vec::new();
    'feed: for piece in input.chunks(step) {
        let mut next = parser.feed(piece);
        loop {
            match next {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(_) => break 'feed,
            }
            next = parser.next_frame();
        }
    }
    for f in frames {
        let mut wire = bytes::BytesMut::new();
        f.render(&mut wire);
        let mut again = Parser::new(Limits {
            max_header_bytes: usize::MAX,
            max_body_bytes: usize::MAX,
        });
        let reparsed = again.feed(&wire).expect("rendered frame parses");
        assert_eq!(reparsed.as_ref(), Some(&f), "render/parse round trip");
        assert_eq!(again.buffered(), 0);
    }
});
