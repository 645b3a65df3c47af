//! `iwf map` on arbitrary mail bytes with the shipped rules (`iwf::mail_to_cpm::dryrun::run`, the same
//! path as the CLI and the snapshot tests). The envelope is the one the mail implies
//! (From → MAIL FROM, To/Cc → RCPT TO), or when the first byte is odd a fixed recipient
//! that the shipped rules accept, so the message phase always runs.
//!
//! Properties: no panic; every rendered SIP request (and MSRP SEND chunk) has a header
//! section whose lines are well formed: CRLF-separated, no CR or LF inside a line, no
//! control characters other than HTAB (RFC 3261 §7.3.1 LWS), a `name:` before each value.
#![no_main]

use std::sync::OnceLock;

use iwf::mail_to_cpm::dryrun::{self, Options};
use iwf::smtp::envelope::Rcpt;
use iwf::ruleset::RuleSet;
use libfuzzer_sys::fuzz_target;

fn rules() -> &'static RuleSet {
    static RULES: OnceLock<RuleSet> = OnceLock::new();
    RULES.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
        iwf::ruleset::load(&dir, 1).expect("shipped rules load")
    })
}

/// Checks the header section of a rendered request: start line, then `name: value` lines.
fn well_formed(what: &str, wire: &str) {
    let head = match wire.find("\r\n\r\n") {
        Some(end) => &wire[..end],
        // MSRP chunks with no body end with the end-line.
        None => wire.trim_end_matches("\r\n"),
    };
    for (i, line) in head.split("\r\n").enumerate() {
        assert!(
            !line.chars().any(|c| c.is_control() && c != '\t'),
            "{what}: control character in header line {i}: {line:?}\n{wire}"
        );
        if i == 0 || line.starts_with("-------") {
            continue;
        }
        let colon = line.find(':');
        assert!(
            colon.is_some_and(|c| c > 0 && !line[..c].contains([' ', '\t'])),
            "{what}: header line {i} without a name: {line:?}\n{wire}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, raw)) = data.split_first() else {
        return;
    };
    let ids = iwf::ids::SequentialIds::new();
    let rcpts = if first % 2 == 1 {
        vec![Rcpt {
            address: "+15551234567@cpm.example.net".into(),
            notify: Vec::new(),
            orcpt: None,
        }]
    } else {
        Vec::new()
    };
    let run = dryrun::run(
        rules(),
        raw,
        &Options {
            mail_from: None,
            rcpts,
            client: Default::default(),
            now: iwf::ids::fixed_now(),
            elapsed: 0,
            ids: &ids,
            explain: first % 4 == 3,
            chunk_size: 2048,
        },
    );
    for d in &run.deliveries {
        well_formed("SIP", &d.request);
        for chunk in &d.msrp {
            well_formed("MSRP", chunk);
        }
    }
    for r in &run.rejections {
        assert!(
            !r.reply.contains(['\r', '\n']),
            "reply with CR/LF: {:?}",
            r.reply
        );
    }
});
