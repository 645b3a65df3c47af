//! CPM → e-mail without a network: every SIP fixture through `iwf map --sip`'s dry run
//! (snapshots), and the bad input of issue 9 — each gets its SIP answer, none panics, and no
//! header line can be injected into the mail.

use std::path::Path;

use iwf::cpm_to_mail::uas::{DryRun, dry_run};
use iwf::ruleset::{self, RuleSet, diag};
use iwf::smtp_client::Caps;

fn rules() -> RuleSet {
    ruleset::load(Path::new("rules"), 1).unwrap_or_else(|d| panic!("{}", diag::render_all(&d)))
}

fn caps() -> Caps {
    Caps {
        eightbitmime: true,
        dsn: true,
        deliverby: true,
        ..Caps::default()
    }
}

fn run(rules: &RuleSet, wire: &[u8], caps: &Caps) -> DryRun {
    dry_run(
        rules,
        wire,
        caps,
        "t000000000000001".into(),
        iwf::ids::fixed_now(),
        true,
    )
}

/// Fixture files are written with LF: the head becomes CRLF as a UA sends it.
pub(crate) fn wire(text: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(text).replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    format!("{}\r\n\r\n{}", head.replace('\n', "\r\n"), body).into_bytes()
}

fn render(r: &DryRun) -> String {
    let mut out = String::new();
    if let Some(env) = &r.envelope {
        out.push_str("--- envelope ---\n");
        for l in env {
            out.push_str(l);
            out.push('\n');
        }
    }
    if let Some(m) = &r.mail {
        out.push_str("--- mail ---\n");
        out.push_str(&m.replace("\r\n", "\n"));
    }
    out.push_str("--- SIP response ---\n");
    out.push_str(&r.response.replace("\r\n", "\n"));
    out.push_str("--- rules ---\n");
    for f in &r.explain {
        out.push_str(&format!("{} {}\n", f.phase, f.rule));
    }
    out
}

/// Called from `mapping::snapshots` (globs run one after the other).
pub fn sip_fixtures() {
    let rules = rules();
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path("../snapshots");
    s.set_prepend_module_to_snapshot(false);
    s.bind(|| {
        insta::glob!("fixtures/sip/*.sip", |path| {
            let raw = std::fs::read(path).unwrap();
            let r = run(&rules, &wire(&raw), &caps());
            assert_clean(&r);
            insta::assert_snapshot!(render(&r));
        });
    });
}

/// Every mail line ends in CRLF, none is over 998 bytes, the head has no line that is not a
/// header or a continuation.
fn assert_clean(r: &DryRun) {
    let Some(m) = &r.mail else { return };
    let (head, body) = m
        .split_once("\r\n\r\n")
        .expect("a blank line after the head");
    for l in head.split("\r\n") {
        assert!(
            l.starts_with([' ', '\t']) || l.split_once(':').is_some_and(|(n, _)| !n.contains(' ')),
            "not a header line: {l:?}"
        );
        assert!(!l.contains('\r') && !l.contains('\n'));
    }
    for l in m.split("\r\n") {
        assert!(l.len() <= 998, "line of {} bytes", l.len());
    }
    assert!(
        !body.replace("\r\n", "").contains('\n'),
        "bare LF in the body"
    );
}

fn status(r: &DryRun) -> u16 {
    r.response
        .strip_prefix("SIP/2.0 ")
        .and_then(|s| s[..3].parse().ok())
        .unwrap_or(0)
}

fn message(ct: &str, body: &str) -> Vec<u8> {
    format!(
        "MESSAGE sip:alice%40mail.example.org@iwf.example.net SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bKx\r\nFrom: <tel:+15551234567>;tag=1\r\n\
         To: <sip:alice%40mail.example.org@iwf.example.net>\r\nCall-ID: x\r\nCSeq: 1 MESSAGE\r\n\
         Content-Type: {ct}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn bad_input_gets_its_answer() {
    let rules = rules();
    let c = caps();
    // over the body limit
    let big = "x".repeat(70_000);
    assert_eq!(status(&run(&rules, &message("text/plain", &big), &c)), 413);
    // 415 carries Accept
    let r = run(&rules, &message("application/json", "{}"), &c);
    assert_eq!(status(&r), 415);
    assert!(
        r.response
            .contains("Accept: text/plain, message/cpim, multipart/mixed")
    );
    // no body
    assert_eq!(status(&run(&rules, &message("text/plain", ""), &c)), 400);
    // malformed CPIM: no blank line, no From/To, a bare CR in a value
    for cpim in [
        "From: <tel:+1>\r\nTo: <tel:+2>\r\n",
        "Subject: x\r\n\r\nContent-Type: text/plain\r\n\r\nhi",
        "From: <tel:+15551234567>\r\nTo: <sip:a@b>\r\nSubject: a\rBcc: evil@example.org\r\n\r\nContent-Type: text/plain\r\n\r\nhi",
        "From: x\r\nTo: <sip:a@b>\r\n\r\nContent-Type: text/plain\r\n\r\nhi",
        "From: <tel:+15551234567>\r\nTo: <sip:a@b>\r\n\r\nno content type here",
    ] {
        let r = run(&rules, &message("message/cpim", cpim), &c);
        assert_eq!(status(&r), 400, "{cpim:?}: {}", r.response);
    }
    // SMTP command injection through the Request-URI's user part: not a mail user
    let inj = String::from_utf8(message("text/plain", "x"))
        .unwrap()
        .replacen(
            "sip:alice%40mail.example.org@iwf.example.net SIP",
            "sip:a%0D%0ARCPT%20TO%3A%3Cx%40evil.org%3E%40mail.example.org@iwf.example.net SIP",
            1,
        );
    let r = run(&rules, inj.as_bytes(), &c);
    assert_eq!(status(&r), 404, "{}", r.response);
    // a multipart without its boundary, and a body that is garbage bytes
    assert_eq!(
        status(&run(
            &rules,
            &message("multipart/mixed", "--x\r\n\r\nhi\r\n--x--"),
            &c
        )),
        400
    );
    let mut garbage = message("message/cpim", "");
    garbage.extend((0..=255u8).cycle().take(3000));
    let r = run(&rules, &garbage, &c);
    assert!(matches!(status(&r), 400 | 202), "{}", r.response);
}

#[test]
fn cpim_headers_cannot_inject_mail_headers() {
    let rules = rules();
    // A CPIM line that looks like a mail header is just an unknown CPIM header: not copied.
    let cpim = "From: <tel:+15551234567>\r\nTo: <sip:a@b>\r\nBcc: evil@example.org\r\nSubject: hi\r\n\r\nContent-Type: text/plain\r\n\r\nbody";
    let r = run(&rules, &message("message/cpim", cpim), &caps());
    assert_eq!(status(&r), 202, "{}", r.response);
    let mail = r.mail.unwrap();
    assert!(!mail.contains("evil@example.org"), "{mail}");
    // A SIP Subject with an encoded line break stays one header line.
    let mut wire = message("text/plain", "x");
    let at = wire.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    wire.splice(
        at..at,
        b"\r\nSubject: =?utf-8?Q?a=0D=0ABcc:_evil@example.org?="
            .iter()
            .copied(),
    );
    let r = run(&rules, &wire, &caps());
    assert_clean(&r);
    assert!(!r.mail.unwrap_or_default().contains("\r\nBcc:"));
}

#[test]
fn ten_thousand_history_entries_are_refused_and_bounded() {
    let rules = rules();
    let mut xml = String::from(
        "<?xml version=\"1.0\"?><resource-lists xmlns=\"urn:ietf:params:xml:ns:resource-lists\" xmlns:cp=\"urn:ietf:params:xml:ns:copycontrol\"><list>",
    );
    for i in 0..10_000 {
        xml.push_str(&format!(
            "<entry uri=\"tel:+1555{i:07}\" cp:copyControl=\"to\"/>"
        ));
    }
    xml.push_str("</list></resource-lists>");
    let body = format!(
        "--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b\r\nContent-Type: application/resource-lists+xml\r\nContent-Disposition: recipient-list-history\r\n\r\n{xml}\r\n--b--\r\n"
    );
    // The body limit would refuse it first (413, checked below); lift it to reach the
    // history rule.
    let r = run(
        &rules,
        &message("multipart/mixed; boundary=b", &body),
        &caps(),
    );
    assert_eq!(status(&r), 413, "{}", r.response);
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir("rules").unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    std::fs::create_dir(dir.path().join("tables")).unwrap();
    for e in std::fs::read_dir("rules/tables").unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.path().join("tables").join(p.file_name().unwrap())).unwrap();
    }
    let settings = std::fs::read_to_string("rules/settings.yaml")
        .unwrap()
        .replace("cpm_max_body: 65536", "cpm_max_body: 10000000");
    std::fs::write(dir.path().join("settings.yaml"), settings).unwrap();
    let rules_big =
        ruleset::load(dir.path(), 1).unwrap_or_else(|d| panic!("{}", diag::render_all(&d)));
    let r = run(
        &rules_big,
        &message("multipart/mixed; boundary=b", &body),
        &caps(),
    );
    assert_eq!(status(&r), 403, "{}", r.response);
    assert!(r.response.contains("too many recipients"));
    // bounded work: the entries beyond the limit are not mapped
    assert!(
        r.explain
            .iter()
            .filter(|f| f.phase == "cpm_address")
            .count()
            < 10,
        "history entries were mapped although refused"
    );
}

#[test]
fn methods_other_than_message() {
    let rules = rules();
    let opt = b"OPTIONS sip:iwf.example.net SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:iwf.example.net>\r\nCall-ID: o\r\nCSeq: 1 OPTIONS\r\n\r\n";
    let r = run(&rules, opt, &caps());
    assert!(r.response.starts_with("SIP/2.0 200"));
    assert!(
        r.response
            .contains("Allow: INVITE, ACK, BYE, CANCEL, MESSAGE, OPTIONS")
    );
    assert!(r.response.contains("Accept: text/plain"));
    let bye = String::from_utf8_lossy(opt).replace("OPTIONS", "SUBSCRIBE");
    let r = run(&rules, bye.as_bytes(), &caps());
    assert!(r.response.starts_with("SIP/2.0 405"));
    assert!(
        r.response
            .contains("Allow: INVITE, ACK, BYE, CANCEL, MESSAGE, OPTIONS")
    );
    // not SIP at all
    let r = run(&rules, b"hello\r\n\r\n", &caps());
    assert!(r.response.contains("400"));
}

#[test]
fn smtputf8_next_hop_gets_utf8_headers_else_rfc2047() {
    let rules = rules();
    let cpim = "From: \"Zoë\" <tel:+15551234567>\r\nTo: <sip:a@b>\r\nSubject: Grüße\r\n\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nÄpfel";
    let plain = run(&rules, &message("message/cpim", cpim), &caps());
    let mail = plain.mail.unwrap();
    assert!(mail.contains("Subject: =?utf-8?"), "{mail}");
    assert!(plain.envelope.unwrap()[0].contains("BODY=8BITMIME"));
    let utf8 = Caps {
        smtputf8: true,
        ..caps()
    };
    let r = run(&rules, &message("message/cpim", cpim), &utf8);
    let mail = r.mail.unwrap();
    assert!(mail.contains("Subject: Grüße\r\n"), "{mail}");
    assert!(r.envelope.unwrap()[0].contains(" SMTPUTF8"));
    // without 8BITMIME the text goes quoted-printable
    let seven = Caps {
        eightbitmime: false,
        ..caps()
    };
    let r = run(&rules, &message("message/cpim", cpim), &seven);
    let mail = r.mail.unwrap();
    assert!(mail.contains("Content-Transfer-Encoding: quoted-printable"));
    assert!(mail.contains("=C3=84pfel"), "{mail}");
    assert!(mail.is_ascii());
}

#[test]
fn a_reply_in_a_known_conversation_threads_into_the_mail() {
    use iwf::cpm_to_mail::{Ctx, MemoryThreads, Thread, ThreadStore, plan};
    let rules = rules();
    let store = MemoryThreads::default();
    store.remember(
        "conv-1",
        Thread {
            message_id: "orig@mail.example.org".into(),
            references: "<root@mail.example.org>".into(),
        },
    );
    let mut wire = message("text/plain", "answer");
    let at = wire.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    wire.splice(at..at, b"\r\nConversation-ID: conv-1".iter().copied());
    let inc = iwf::cpm_to_mail::Incoming::parse(&wire).unwrap();
    let ctx = Ctx {
        now: iwf::ids::fixed_now(),
        token: "tok".into(),
        explain: false,
        threads: Some(&store),
    };
    let p = plan(&rules, &inc, &caps(), &ctx).result.unwrap();
    let mail = String::from_utf8(p.message).unwrap();
    assert!(
        mail.contains("In-Reply-To: <orig@mail.example.org>\r\n"),
        "{mail}"
    );
    assert!(
        mail.contains("References: <root@mail.example.org> <orig@mail.example.org>\r\n"),
        "{mail}"
    );
    assert_eq!(p.conversation.as_deref(), Some("conv-1"));
}
