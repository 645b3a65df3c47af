//! The CPM → e-mail part of a rule set's self-tests (`sip:` + `sip_expect:`, and
//! `cpm_response:` cases in `rules/tests/*.yaml`).

use chrono::{DateTime, Utc};

use super::uas::dry_run;
use crate::ruleset::RuleSet;
use crate::ruleset::file::SelfTest;
use crate::smtp_client::{Caps, SmtpOutcome, Stage};

/// Runs the CPM → e-mail cases of one self-test; returns what differed.
pub fn run(rules: &RuleSet, t: &SelfTest, now: DateTime<Utc>) -> Vec<String> {
    let mut errs = Vec::new();
    if let Some(req) = &t.sip {
        let caps = Caps {
            eightbitmime: true,
            dsn: true,
            deliverby: true,
            ..Caps::default()
        };
        let wire = req.replace("\r\n", "\n");
        let (head, body) = wire.split_once("\n\n").unwrap_or((&wire, ""));
        let wire = format!("{}\r\n\r\n{}", head.replace('\n', "\r\n"), body);
        let run = dry_run(
            rules,
            wire.as_bytes(),
            &caps,
            "t000000000000001".into(),
            now,
            false,
        );
        let status: Option<u16> = run
            .response
            .strip_prefix("SIP/2.0 ")
            .and_then(|r| r.get(..3))
            .and_then(|c| c.parse().ok());
        let exp = t.sip_expect.clone().unwrap_or_default();
        if let Some(want) = exp.status
            && status != Some(want)
        {
            errs.push(format!(
                "SIP response {:?}, expected {want}",
                run.response.lines().next().unwrap_or("")
            ));
        }
        let mail = run.mail.clone().unwrap_or_default();
        let unfolded = mail.replace("\r\n ", " ").replace("\r\n\t", "\t");
        let head = unfolded.split("\r\n\r\n").next().unwrap_or("");
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
        };
        if let Some(want) = &exp.rcpt {
            let got = run
                .envelope
                .as_ref()
                .and_then(|e| e.get(1).cloned())
                .unwrap_or_default();
            if !got.starts_with(&format!("RCPT TO:<{want}>")) {
                errs.push(format!("RCPT `{got}`, expected <{want}>"));
            }
        }
        for (n, v) in &exp.headers {
            match header(n) {
                Some(got) if &got == v => {}
                got => errs.push(format!("mail header {n}: expected `{v}`, got {got:?}")),
            }
        }
        for n in &exp.absent {
            if let Some(got) = header(n) {
                errs.push(format!("mail header {n} should be absent, got `{got}`"));
            }
        }
        for s in &exp.mail_contains {
            if !mail.contains(s.as_str()) {
                errs.push(format!("the mail does not contain `{s}`"));
            }
        }
    }
    for (i, c) in t.cpm_response.iter().enumerate() {
        let stage = match c.stage.as_deref().unwrap_or("data") {
            "connect" => Stage::Connect,
            "ehlo" => Stage::Ehlo,
            "starttls" => Stage::Starttls,
            "mail" => Stage::Mail,
            "rcpt" => Stage::Rcpt,
            "data" => Stage::Data,
            other => {
                errs.push(format!("cpm_response case {i}: unknown stage `{other}`"));
                continue;
            }
        };
        let outcome = match (&c.failure, c.code) {
            (Some(f), _) => {
                let kind = match f.as_str() {
                    "timeout" => "timeout",
                    "connect" => "connect",
                    "protocol" => "protocol",
                    other => {
                        errs.push(format!("cpm_response case {i}: unknown failure `{other}`"));
                        continue;
                    }
                };
                SmtpOutcome::failure_at(stage, kind, "self-test")
            }
            (None, Some(code)) => SmtpOutcome::Reply {
                stage,
                code,
                status: c.status.clone(),
                text: "self-test".into(),
            },
            (None, None) => {
                errs.push(format!("cpm_response case {i}: needs `code` or `failure`"));
                continue;
            }
        };
        let a = super::respond(rules, &outcome, Some("alice@mail.example.org"), now, None);
        if a.status != c.sip {
            errs.push(format!(
                "cpm_response case {i} ({outcome}): SIP {}, expected {}",
                a.status, c.sip
            ));
        }
        if let Some(ra) = &c.retry_after {
            let got = a
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("Retry-After"))
                .map(|(_, v)| v.as_str());
            if got != Some(ra.as_str()) {
                errs.push(format!(
                    "cpm_response case {i}: Retry-After {got:?}, expected {ra}"
                ));
            }
        }
    }
    errs
}
