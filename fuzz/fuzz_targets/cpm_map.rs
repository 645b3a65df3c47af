//! The CPM → e-mail direction on arbitrary bytes: a SIP request as a UA would send it
//! (text/plain, message/cpim, multipart/mixed with a recipient-list-history) through
//! `iwf::cpm_to_mail::uas::dry_run` with the shipped rules — the path of `iwf map --sip` and of
//! the UAS: request parsing, CPIM (RFC 3862) and resource-lists parsing, the cpm_* phases,
//! the mail encoder. The first byte picks the smarthost's capabilities (SMTPUTF8 or not).
//!
//! Properties: no panic; a mail, when there is one, has a header section of well-formed
//! lines (CRLF line ends only, no control characters but HTAB, continuation lines start
//! with a space or tab), no line of the whole mail over 998 octets (RFC 5322 §2.1.1), and the
//! envelope lines carry no CR or LF; the SIP response is one status line plus headers.
#![no_main]

use std::sync::OnceLock;

use iwf::ruleset::RuleSet;
use libfuzzer_sys::fuzz_target;

fn rules() -> &'static RuleSet {
    static RULES: OnceLock<RuleSet> = OnceLock::new();
    RULES.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
        iwf::ruleset::load(&dir, 1).expect("shipped rules load")
    })
}

fn check_mail(mail: &str) {
    let bytes = mail.as_bytes();
    // CRLF only: every LF is preceded by CR, every CR followed by LF.
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' {
            assert!(i > 0 && bytes[i - 1] == b'\r', "bare LF at {i}");
        }
        if b == b'\r' {
            assert!(bytes.get(i + 1) == Some(&b'\n'), "bare CR at {i}");
        }
    }
    for line in mail.split("\r\n") {
        assert!(line.len() <= 998, "line of {} octets", line.len());
    }
    let head = mail.split("\r\n\r\n").next().unwrap_or_default();
    for line in head.split("\r\n") {
        assert!(
            !line.chars().any(|c| c.is_control() && c != '\t'),
            "control character in header line {line:?}"
        );
        let folded = line.starts_with(' ') || line.starts_with('\t');
        assert!(
            folded || line.contains(':'),
            "header line without a name: {line:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, wire)) = data.split_first() else {
        return;
    };
    let caps = iwf::smtp_client::Caps {
        eightbitmime: true,
        dsn: true,
        deliverby: true,
        smtputf8: first & 1 == 1,
        ..Default::default()
    };
    let run = iwf::cpm_to_mail::uas::dry_run(
        rules(),
        wire,
        &caps,
        "fuzztoken".to_string(),
        iwf::ids::fixed_now(),
        false,
    );
    if let Some(mail) = &run.mail {
        check_mail(mail);
    }
    if let Some(env) = &run.envelope {
        for l in env {
            assert!(!l.contains(['\r', '\n']), "envelope line {l:?}");
        }
    }
    assert!(run.response.starts_with("SIP/2.0 ") || !run.response.is_empty());
});
