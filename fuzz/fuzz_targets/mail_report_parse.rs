//! Arbitrary bytes as a report mail (`multipart/report`: DSN, RFC 3464, or MDN, RFC 3798)
//! through `iwf::reports::mail_report::parse`, the parser the SMTP gateway uses for reports
//! sent to a `b+<token>` address.
//!
//! Properties: no panic; on Ok, every field value is free of CR, LF and other control
//! characters and at most 998 octets, and at most 1,000 recipient blocks are kept.
#![no_main]

use iwf::reports::mail_report::{self, MAX_RECIPIENTS, MAX_VALUE, Report, Typed};
use libfuzzer_sys::fuzz_target;

fn check(v: &str) {
    assert!(v.len() <= MAX_VALUE, "value of {} octets", v.len());
    assert!(
        !v.chars().any(|c| c.is_control()),
        "control character in {v:?}"
    );
}

fn opt(v: &Option<String>) {
    if let Some(v) = v {
        check(v);
    }
}

fn check_typed(t: &Option<Typed>) {
    if let Some(t) = t {
        check(&t.kind);
        check(&t.value);
    }
}

/// mail-parser 0.11.9 has a `debug_assert!` (parsers/message.rs:485) that malformed nested
/// multiparts reach; `mail_report::parse` unwinds it (release builds compile it out). The
/// libFuzzer panic hook would abort before that, so this hook lets that one panic through
/// to the unwind and aborts on every other.
fn hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let fuzzer_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let known = info.location().is_some_and(|l| {
                l.file()
                    .contains("mail-parser-0.11.9/src/parsers/message.rs")
            });
            if !known {
                fuzzer_hook(info);
            }
        }));
    });
}

fuzz_target!(|data: &[u8]| {
    hook();
    let Ok(r) = mail_report::parse(data) else {
        return;
    };
    opt(&r.original_message_id);
    opt(&r.returned);
    match &r.report {
        Report::Delivery(d) => {
            opt(&d.original_envelope_id);
            opt(&d.arrival_date);
            check_typed(&d.reporting_mta);
            check_typed(&d.dsn_gateway);
            assert!(d.recipients.len() <= MAX_RECIPIENTS);
            assert!(d.recipients.len() <= d.recipient_blocks);
            for rc in &d.recipients {
                check_typed(&rc.original_recipient);
                check_typed(&rc.final_recipient);
                check_typed(&rc.diagnostic_code);
                check_typed(&rc.remote_mta);
                opt(&rc.action);
                opt(&rc.status);
            }
        }
        Report::Disposition(d) => {
            opt(&d.reporting_ua);
            opt(&d.original_message_id);
            check_typed(&d.mdn_gateway);
            check_typed(&d.original_recipient);
            check_typed(&d.final_recipient);
            if let Some(disp) = &d.disposition {
                check(&disp.action_mode);
                check(&disp.sending_mode);
                check(&disp.kind);
                disp.modifiers.iter().for_each(|m| check(m));
            }
        }
    }
});
