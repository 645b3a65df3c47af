//! The report loop on arbitrary bytes (issue 11), through the same dry runs as
//! `iwf map --record` with the shipped rules and a correlation record from the fixtures:
//! the first byte picks the direction.
//!
//! * even: the bytes are an IMDN document (the CPIM inner entity) about a mail iwf sent to
//!   CPM → the DSN / MDN mails it owes (`iwf::reports::dryrun::imdn`);
//! * odd: the bytes are a mail for a `b+<token>` address about a mail iwf sent for a CPM
//!   message → the IMDN MESSAGE it owes (`iwf::reports::dryrun::mail_report`).
//!
//! Properties: no panic; every report mail has CRLF line ends only and header lines without
//! control characters (but HTAB) that start with a name or a fold; an IMDN MESSAGE's header
//! section is clean the same way; the answer is bounded.
#![no_main]

use std::sync::OnceLock;

use iwf::ruleset::RuleSet;
use iwf::store::Fields;
use libfuzzer_sys::fuzz_target;

struct World {
    rules: RuleSet,
    sent: Fields,
    mailed: Fields,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let read = |name: &str| {
            let t = std::fs::read_to_string(root.join("tests/fixtures/report-flows").join(name))
                .expect("record fixture");
            iwf::reports::dryrun::read_record(&t).expect("record")
        };
        World {
            rules: iwf::ruleset::load(&root.join("rules"), 1).expect("shipped rules load"),
            sent: read("sent-notify-success-failure.json"),
            mailed: read("mailed-delivery-display.json"),
        }
    })
}

/// A mail is CRLF text throughout (SMTP); a SIP request's header section is (its body, the
/// CPIM document with the XML, may have bare LFs).
fn check_head(text: &str, what: &str, whole: bool) {
    let bytes = if whole {
        text.as_bytes()
    } else {
        text.split("\r\n\r\n").next().unwrap_or_default().as_bytes()
    };
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' {
            assert!(i > 0 && bytes[i - 1] == b'\r', "{what}: bare LF at {i}");
        }
        if b == b'\r' {
            assert!(bytes.get(i + 1) == Some(&b'\n'), "{what}: bare CR at {i}");
        }
    }
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    for line in head.split("\r\n").skip(1) {
        assert!(
            !line.chars().any(|c| c.is_control() && c != '\t'),
            "{what}: control character in header line {line:?}"
        );
        let folded = line.starts_with(' ') || line.starts_with('\t');
        assert!(folded || line.contains(':'), "{what}: header line without a name: {line:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, bytes)) = data.split_first() else {
        return;
    };
    let w = world();
    let ids = iwf::ids::SequentialIds::new();
    let now = iwf::ids::fixed_now();
    let run = if first % 2 == 0 {
        iwf::reports::dryrun::imdn(&w.rules, bytes, Some(&w.sent), "iwf.example.net", &ids, now, true)
    } else {
        iwf::reports::dryrun::mail_report(
            &w.rules,
            bytes,
            "b+t000000000000042@iwf.example.net",
            "t000000000000042",
            Some(&w.mailed),
            &ids,
            now,
            true,
        )
    };
    for s in &run.sent {
        // Mails start with the dry run's "MAIL FROM ... RCPT TO" line; IMDNs with the
        // request line. Both are CRLF text with a clean header section after that line.
        let mail = first % 2 == 0;
        check_head(s, if mail { "report mail" } else { "IMDN" }, mail);
    }
    assert!(run.answer.len() < 4096, "answer of {} octets", run.answer.len());
});
