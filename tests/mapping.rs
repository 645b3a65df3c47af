//! Snapshot corpus: every fixture mail, every corpus mail, every kind of rule diagnostic,
//! and the shipped rule set's self-tests.

use std::path::Path;

use iwf::ids::{SequentialIds, fixed_now};
use iwf::mail_to_cpm::dryrun::{self, DryRun, Options};
use iwf::ruleset::{self, RuleSet, diag};
use iwf::smtp::envelope::{Client, MailFrom, Rcpt};

pub(crate) fn rules() -> RuleSet {
    ruleset::load(Path::new("rules"), 1).unwrap_or_else(|d| panic!("{}", diag::render_all(&d)))
}

fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path("../snapshots");
    s.set_prepend_module_to_snapshot(false);
    s
}

/// Fixture mails may start with `#! mail-from: ...` / `#! rcpt: ...` lines (the envelope);
/// the rest is the mail, with LF line ends turned into CRLF as SMTP would carry it.
pub(crate) fn split_fixture(text: &[u8]) -> (Option<MailFrom>, Vec<Rcpt>, Vec<u8>) {
    let mut mail_from = None;
    let mut rcpts = Vec::new();
    let mut rest = text;
    while rest.starts_with(b"#! ") {
        let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        let line = String::from_utf8_lossy(&rest[3..end]).trim().to_string();
        if let Some(v) = line.strip_prefix("mail-from:") {
            mail_from = Some(MailFrom::parse(v.trim()).unwrap());
        } else if let Some(v) = line.strip_prefix("rcpt:") {
            rcpts.push(Rcpt::parse(v.trim()).unwrap());
        }
        rest = &rest[(end + 1).min(rest.len())..];
    }
    let raw = iwf::mail_to_cpm::mail::crlf_line_ends(rest.to_vec());
    (mail_from, rcpts, raw)
}

pub(crate) fn dry_run(
    rules: &RuleSet,
    mail_from: Option<MailFrom>,
    rcpts: Vec<Rcpt>,
    raw: &[u8],
) -> DryRun {
    let ids = SequentialIds::new();
    dryrun::run(
        rules,
        raw,
        &Options {
            mail_from,
            rcpts,
            client: Client {
                helo: "client.example.org".into(),
                ..Client::default()
            },
            now: fixed_now(),
            elapsed: 0,
            ids: &ids,
            explain: true,
            chunk_size: 2048,
        },
    )
}

/// The text a reviewer reads: each request in wire form (CRLF shown as line ends), MSRP
/// chunks, rejections, and the rules that fired.
fn render(run: &DryRun) -> String {
    let mut out = String::new();
    for d in &run.deliveries {
        out.push_str(&format!(
            "=== {} ({} mode) ===\n",
            d.recipient,
            d.mode.as_str()
        ));
        out.push_str(&d.request.replace("\r\n", "\n"));
        out.push('\n');
        for (i, c) in d.msrp.iter().enumerate() {
            out.push_str(&format!("--- MSRP chunk {} ---\n", i + 1));
            out.push_str(&c.replace("\r\n", "\n"));
        }
    }
    for r in &run.rejections {
        out.push_str(&format!("=== {} rejected ===\n{}\n", r.recipient, r.reply));
    }
    // Rules by file, without line numbers: a comment added to a rule file must not change
    // every snapshot (`iwf map --explain` shows the lines).
    out.push_str("=== rules that fired ===\n");
    for f in &run.explain {
        let file = f.at.rsplit_once(':').map(|(file, _)| file).unwrap_or(&f.at);
        out.push_str(&format!("{} {} ({})\n", f.phase, f.rule, file));
    }
    out
}

/// Every header line of every request must be free of CR/LF taken from the input.
fn assert_no_injection(run: &DryRun) {
    for d in &run.deliveries {
        let head = d.request.split("\r\n\r\n").next().unwrap();
        for line in head.split("\r\n") {
            assert!(
                !line.contains('\r') && !line.contains('\n'),
                "bare CR/LF in {line:?}"
            );
            assert!(
                line.starts_with(|c: char| c.is_ascii_alphabetic()),
                "header line does not start with a name: {line:?}"
            );
        }
    }
}

fn fixture_mails() {
    let rules = rules();
    settings().bind(|| {
        insta::glob!("fixtures/mails/*.eml", |path| {
            let (mail_from, rcpts, raw) = split_fixture(&std::fs::read(path).unwrap());
            let run = dry_run(&rules, mail_from, rcpts, &raw);
            assert_no_injection(&run);
            insta::assert_snapshot!(render(&run));
        });
    });
}

/// Every corpus mail maps or is refused cleanly. The snapshot is a summary (mode,
/// request line, headers, body size, replies) because the bodies are long.
fn corpus_mails() {
    let rules = rules();
    settings().bind(|| {
        insta::glob!("fixtures/corpus/*/*.eml", |path| {
            let raw = std::fs::read(path).unwrap();
            let rcpts = vec![Rcpt::parse("<+15551234567@cpm.example.net>").unwrap()];
            let run = dry_run(
                &rules,
                Some(MailFrom::parse("<sender@mail.example.org>").unwrap()),
                rcpts,
                &raw,
            );
            assert_no_injection(&run);
            assert_eq!(
                run.deliveries.len() + run.rejections.len(),
                1,
                "one answer per recipient"
            );
            let mut out = String::new();
            for d in &run.deliveries {
                let (head, _) = d.request.split_once("\r\n\r\n").unwrap();
                out.push_str(&format!("mode: {}\n", d.mode.as_str()));
                for line in head.split("\r\n") {
                    // Identifiers vary with nothing but the sequence: keep names only.
                    let shown = match line.split_once(':') {
                        Some((n, _)) if ["Via", "Call-ID", "From"].contains(&n) => {
                            format!("{n}: …")
                        }
                        _ => line.to_string(),
                    };
                    out.push_str(&shown);
                    out.push('\n');
                }
                out.push_str(&format!(
                    "content: {} ({} bytes), {} MSRP chunk(s)\n",
                    d.delivery.content.content_type,
                    d.delivery.content.body.len(),
                    d.msrp.len()
                ));
            }
            for r in &run.rejections {
                out.push_str(&format!("rejected: {}\n", r.reply));
            }
            insta::assert_snapshot!(out);
        });
    });
}

/// One broken rule set per error kind: all diagnostics at once, with file:line:col and a caret.
fn rule_diagnostics() {
    settings().bind(|| {
        insta::glob!("fixtures/bad-rules/*", |dir| {
            let rel = dir.strip_prefix(std::env::current_dir().unwrap()).unwrap();
            let diags = ruleset::load(rel, 1).expect_err("a broken rule set must not load");
            insta::assert_snapshot!(diag::render_all(&diags));
        });
    });
}

/// The snapshot globs run one after the other: insta counts glob failures process-wide, so
/// globs in parallel tests would report each other's failures.
#[test]
fn snapshots() {
    fixture_mails();
    corpus_mails();
    rule_diagnostics();
    crate::cpm_to_mail::sip_fixtures();
    crate::reports::report_flows();
}

#[test]
fn shipped_rules_pass_their_self_tests() {
    let rules = rules();
    assert!(rules.tests.len() >= 10);
    let failures = iwf::ruleset::selftest::run_all(&rules);
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The README's DSL reference names every field, field function, built-in and phase, so an
/// operator never meets a name the documentation does not explain.
#[test]
fn readme_documents_every_name() {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let mut missing = Vec::new();
    for (name, ..) in iwf::ruleset::schema::FIELDS {
        if !readme.contains(&format!("`{name}`")) && !readme.contains(&format!("{name}`")) {
            missing.push(name.to_string());
        }
    }
    for (name, ..) in iwf::ruleset::schema::FIELD_FNS {
        if !readme.contains(&format!("`{name}(")) {
            missing.push(format!("{name}()"));
        }
    }
    for b in iwf::dsl::functions::BUILTINS {
        if !readme.contains(&format!("`{}(", b.name))
            && !readme.contains(&format!(" `{}(", b.name))
            && !readme.contains(&format!("{}(", b.name))
        {
            missing.push(format!("{}()", b.name));
        }
    }
    for p in iwf::ruleset::schema::PHASES {
        if !readme.contains(&format!("`{}`", p.name)) {
            missing.push(format!("phase {}", p.name));
        }
    }
    assert!(missing.is_empty(), "README does not document: {missing:?}");
}

/// With `exploder_uri` set, several recipients become one MESSAGE to the exploder with a
/// recipient-list (RFC 5365 §5-6): To and Cc keep their copyControl, envelope-only
/// recipients are `bcc`, and the other recipients are covered by that one request.
#[test]
fn exploder_strategy() {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir("rules").unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    std::fs::create_dir(dir.path().join("tables")).unwrap();
    for entry in std::fs::read_dir("rules/tables").unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, dir.path().join("tables").join(p.file_name().unwrap())).unwrap();
    }
    let settings = dir.path().join("settings.yaml");
    let text = std::fs::read_to_string(&settings).unwrap();
    std::fs::write(
        &settings,
        text.replace(
            "exploder_uri: \"\"",
            "exploder_uri: \"sip:exploder@ims.example.net\"",
        ),
    )
    .unwrap();
    let rules = ruleset::load(dir.path(), 1).unwrap_or_else(|d| panic!("{}", diag::render_all(&d)));
    let (_, _, raw) = split_fixture(b"From: a@mail.example.org\nTo: +15551234567@cpm.example.net\nCc: +15557654321@cpm.example.net\n\nhi\n");
    let rcpts = ["+15551234567", "+15557654321", "+15550000009"]
        .iter()
        .map(|n| Rcpt::parse(&format!("<{n}@cpm.example.net> NOTIFY=NEVER")).unwrap())
        .collect();
    let run = dry_run(&rules, None, rcpts, &raw);
    assert_eq!(run.deliveries.len(), 1, "one request for all recipients");
    let d = &run.deliveries[0];
    assert!(
        d.request
            .starts_with("MESSAGE sip:exploder@ims.example.net SIP/2.0\r\n")
    );
    assert!(
        d.request
            .contains("\r\nTo: <sip:exploder@ims.example.net>\r\n")
    );
    assert!(
        d.request
            .contains("\r\nRequire: recipient-list-message\r\n")
    );
    assert!(
        d.request
            .contains("Content-Disposition: recipient-list\r\n")
    );
    for (uri, cc) in [
        ("tel:+15551234567", "to"),
        ("tel:+15557654321", "cc"),
        ("tel:+15550000009", "bcc"),
    ] {
        assert!(
            d.request
                .contains(&format!("<entry uri=\"{uri}\" cp:copyControl=\"{cc}\"/>")),
            "{uri}"
        );
    }
    assert_eq!(
        d.covers,
        vec![
            "+15557654321@cpm.example.net",
            "+15550000009@cpm.example.net"
        ]
    );
}

/// The configuration example in the README is a valid configuration (TLS paths aside).
#[test]
fn readme_config_example_loads() {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let start = readme
        .find("```yaml\nrules: rules")
        .expect("config example")
        + "```yaml\n".len();
    let end = start + readme[start..].find("```").unwrap();
    let example: String = readme[start..end]
        .lines()
        .filter(|l| !l.starts_with("tls_"))
        .map(|l| format!("{l}\n"))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("iwf.yaml");
    std::fs::write(&path, example).unwrap();
    let cfg = iwf::ops::config::Config::load(Some(&path), &Default::default())
        .unwrap_or_else(|e| panic!("README config example: {e}"));
    assert_eq!(cfg.smarthost.as_deref(), Some("127.0.0.1:25"));
}

/// The gateway takes the store key's Message-ID from its one parse of the mail
/// (`Mail::parse`), not from a second, header-only parse: for every fixture and corpus mail
/// (and a few broken ones) both give the same identity, so keys written by an older build
/// still match a sender's retry.
#[test]
fn the_store_key_from_the_one_parse_is_the_header_only_one() {
    use iwf::mail_to_cpm::mail::Mail;
    use iwf::store::{mail_identity, mail_identity_of};
    let mut mails: Vec<Vec<u8>> = Vec::new();
    for dir in ["tests/fixtures/mails", "tests/fixtures/corpus"] {
        let mut stack = vec![std::path::PathBuf::from(dir)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "eml") {
                    mails.push(split_fixture(&std::fs::read(&p).unwrap()).2);
                }
            }
        }
    }
    assert!(mails.len() > 20, "fixtures found: {}", mails.len());
    for odd in [
        &b""[..],
        b"\r\n\r\nno headers",
        b"Message-ID: <a b@c>\r\n\r\nx",
        b"Message-ID: <first@x>\r\nMessage-ID: <second@x>\r\n\r\nx",
        b"message-id:   <lower@x>  \r\n\r\n",
        b"Subject: x\r\nMessage-ID:\r\n <folded@x>\r\n\r\nbody",
        b"Message-ID: not-an-id\r\n\r\n",
        b"garbage line without colon\r\nMessage-ID: <g@x>\r\n\r\n",
    ] {
        mails.push(odd.to_vec());
    }
    for raw in &mails {
        let id = Mail::parse(raw).ok().and_then(|m| m.message_id());
        assert_eq!(
            mail_identity_of("s@x", id.as_deref(), raw),
            mail_identity("s@x", raw),
            "{}",
            String::from_utf8_lossy(&raw[..raw.len().min(200)])
        );
    }
}
