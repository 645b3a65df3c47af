//! The report loop without a network (issue 11): every fixture in
//! `tests/fixtures/report-flows/` through the same dry runs as `iwf map --record`:
//! IMDN requests (`*.sip`) → the DSN/MDN mails they owe, report mails (`*.eml`) → the IMDN
//! they owe, each against the correlation record its `#! record:` line names.

use std::path::Path;

use iwf::ids::{SequentialIds, fixed_now};
use iwf::reports::dryrun::{ReportDryRun, read_record};
use iwf::store::Fields;

const DIR: &str = "tests/fixtures/report-flows";

/// The `#! record: FILE` line of a fixture (empty: no record) and the rest.
fn record_of(text: &[u8]) -> (Option<Fields>, Vec<u8>) {
    let mut record = None;
    let mut kept = Vec::new();
    for line in text.split_inclusive(|&b| b == b'\n') {
        if let Some(v) = line.strip_prefix(b"#! record:") {
            let name = String::from_utf8_lossy(v).trim().to_string();
            if !name.is_empty() {
                let t = std::fs::read_to_string(Path::new(DIR).join(&name)).unwrap();
                record = Some(read_record(&t).unwrap());
            }
        } else {
            kept.extend_from_slice(line);
        }
    }
    (record, kept)
}

/// mail-builder's MIME boundaries are random: each is shown as `BOUNDARY-n`.
fn stable_boundaries(mail: &str) -> String {
    let re = regex::Regex::new(r#"boundary="([^"]+)""#).unwrap();
    let mut out = mail.to_string();
    for (n, c) in re.captures_iter(mail).enumerate() {
        out = out.replace(&c[1], &format!("BOUNDARY-{}", n + 1));
    }
    out
}

fn render(r: &ReportDryRun) -> String {
    let mut out = String::new();
    for s in &r.sent {
        out.push_str("--- sent ---\n");
        out.push_str(&stable_boundaries(&s.replace("\r\n", "\n")));
        if !s.ends_with('\n') {
            out.push('\n');
        }
    }
    out.push_str("--- answer ---\n");
    out.push_str(&r.answer.replace("\r\n", "\n"));
    out.push_str("--- rules ---\n");
    for f in &r.explain {
        out.push_str(&format!("{} {}\n", f.phase, f.rule));
    }
    out
}

/// Called from `mapping::snapshots` (globs run one after the other).
pub fn report_flows() {
    let rules = crate::mapping::rules();
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path("../snapshots");
    s.set_prepend_module_to_snapshot(false);
    s.bind(|| {
        insta::glob!("fixtures/report-flows/*.sip", |path| {
            let (record, wire) = record_of(&std::fs::read(path).unwrap());
            let run = iwf::cpm_to_mail::uas::dry_run_with_record(
                &rules,
                &crate::cpm_to_mail::wire(&wire),
                &iwf::smtp_client::Caps::default(),
                "t000000000000001".into(),
                fixed_now(),
                true,
                record.as_ref(),
            );
            let report = run.report.expect("an IMDN is handled as a report");
            insta::assert_snapshot!(render(&report));
        });
        insta::glob!("fixtures/report-flows/*.eml", |path| {
            let (record, text) = record_of(&std::fs::read(path).unwrap());
            let (mail_from, rcpts, raw) = crate::mapping::split_fixture(&text);
            let run = crate::mapping::dry_run(&rules, mail_from, rcpts, &raw);
            assert!(
                run.deliveries.is_empty(),
                "a report is not sent to CPM as a message"
            );
            assert_eq!(run.reports.len(), 1, "the b+ address is a report address");
            let ids = SequentialIds::new();
            let r = iwf::reports::dryrun::mail_report(
                &rules,
                &raw,
                &run.reports[0].recipient,
                &run.reports[0].token,
                record.as_ref(),
                &ids,
                fixed_now(),
                true,
            );
            insta::assert_snapshot!(render(&r));
        });
    });
}
