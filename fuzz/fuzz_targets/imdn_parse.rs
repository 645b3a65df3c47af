//! Arbitrary bytes as an IMDN document (`message/imdn+xml`, RFC 5438) through
//! `iwf::reports::imdn::parse`, the parser the SIP UAS uses for incoming IMDNs.
//!
//! Properties: no panic; on Ok, `render` gives a document that parses back to the same
//! `Imdn`, whose values hold no control character but HTAB; the rendered document is
//! accepted by `cpim_document` (no CR/LF reaches a CPIM header).
#![no_main]

use iwf::reports::imdn;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(first) = imdn::parse(data) else {
        return;
    };
    for v in [
        Some(&first.message_id),
        Some(&first.datetime),
        first.recipient_uri.as_ref(),
        first.original_recipient_uri.as_ref(),
        first.subject.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        assert!(
            !v.chars().any(|c| c.is_control() && c != '\t'),
            "control character in {v:?}"
        );
    }
    let xml = imdn::render(&first);
    let again = imdn::parse(xml.as_bytes())
        .unwrap_or_else(|e| panic!("rendered IMDN does not parse: {e}\n{xml}"));
    assert_eq!(first, again, "round trip changed the IMDN:\n{xml}");
    assert!(
        imdn::cpim_document("sip:a@b", "sip:c@d", "id1", &first.datetime, &xml).is_ok(),
        "CPIM refused a parsed IMDN's datetime {:?}",
        first.datetime
    );
});
