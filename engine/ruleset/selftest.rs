//! Running a rule set's own self-tests (`rules/tests/*.yaml`): each case maps a mail (or an
//! outcome) and compares what the rules produced with what the case expects.

use crate::ids::{SequentialIds, fixed_now};
use crate::mail_to_cpm::dryrun::{self, Options};
use crate::mail_to_cpm::outcome::{FailureKind, Layer, Outcome};
use crate::mail_to_cpm::plan::Mode;
use crate::ruleset::RuleSet;
use crate::ruleset::file::SelfTest;
use crate::smtp::envelope::{Client, Envelope, MailFrom, Rcpt};

/// A failed self-test: which case, and what differed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub test: String,
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "self-test `{}` failed: {}", self.test, self.message)
    }
}

/// Runs every self-test; returns the failures (empty = all passed).
pub fn run_all(rules: &RuleSet) -> Vec<Failure> {
    let mut out = Vec::new();
    for t in &rules.tests {
        for message in run_one(rules, t) {
            out.push(Failure {
                test: t.name.clone(),
                message,
            });
        }
    }
    out
}

fn run_one(rules: &RuleSet, t: &SelfTest) -> Vec<String> {
    let mut errs = Vec::new();
    let now = match &t.now {
        Some(s) => match chrono::DateTime::parse_from_rfc3339(s) {
            Ok(d) => d.with_timezone(&chrono::Utc),
            Err(e) => return vec![format!("bad `now`: {e}")],
        },
        None => fixed_now(),
    };
    let mail_from = match t.mail_from.as_deref().map(MailFrom::parse).transpose() {
        Ok(m) => m,
        Err(e) => return vec![e.to_string()],
    };
    let rcpts: Vec<Rcpt> = match t.rcpt.iter().map(|r| Rcpt::parse(r)).collect() {
        Ok(r) => r,
        Err(e) => return vec![e.to_string()],
    };
    let client = Client {
        authenticated: t.authenticated,
        helo: "selftest.example.org".into(),
        ..Client::default()
    };
    if let Some(mail) = &t.mail {
        let raw = mail.replace("\r\n", "\n").replace('\n', "\r\n");
        let ids = SequentialIds::new();
        let run = dryrun::run(
            rules,
            raw.as_bytes(),
            &Options {
                mail_from: mail_from.clone(),
                rcpts: rcpts.clone(),
                client: client.clone(),
                now,
                elapsed: t.elapsed.unwrap_or(0),
                ids: &ids,
                explain: false,
                chunk_size: 2048,
            },
        );
        for (rcpt, exp) in &t.expect {
            let delivery = run
                .deliveries
                .iter()
                .find(|d| d.recipient.eq_ignore_ascii_case(rcpt));
            let rejection = run
                .rejections
                .iter()
                .find(|r| r.recipient.eq_ignore_ascii_case(rcpt));
            if let Some(want) = &exp.reject {
                match rejection {
                    Some(r) if r.reply.starts_with(want.as_str()) => {}
                    Some(r) => errs.push(format!(
                        "{rcpt}: expected reject `{want}`, got `{}`",
                        r.reply
                    )),
                    None => errs.push(format!(
                        "{rcpt}: expected reject `{want}`, but it was delivered"
                    )),
                }
                continue;
            }
            let Some(d) = delivery else {
                errs.push(format!(
                    "{rcpt}: no delivery{}",
                    rejection
                        .map(|r| format!(" (rejected: {})", r.reply))
                        .unwrap_or_default()
                ));
                continue;
            };
            if let Some(m) = &exp.mode
                && d.mode.as_str() != m
            {
                errs.push(format!("{rcpt}: mode {} != expected {m}", d.mode.as_str()));
            }
            if let Some(u) = &exp.request_uri
                && &d.delivery.request_uri != u
            {
                errs.push(format!(
                    "{rcpt}: Request-URI {} != expected {u}",
                    d.delivery.request_uri
                ));
            }
            let head = d.request.split("\r\n\r\n").next().unwrap_or("");
            let header = |name: &str| {
                head.lines().skip(1).find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| v.trim().to_string())
                })
            };
            for (n, v) in &exp.headers {
                match header(n) {
                    Some(got) if &got == v => {}
                    got => errs.push(format!("{rcpt}: header {n}: expected `{v}`, got {got:?}")),
                }
            }
            for n in &exp.absent {
                if let Some(got) = header(n) {
                    errs.push(format!("{rcpt}: header {n} should be absent, got `{got}`"));
                }
            }
            let body = String::from_utf8_lossy(&d.delivery.content.body.to_vec()).into_owned();
            for (n, v) in &exp.cpim {
                let want = format!("{n}: {v}\r\n");
                if !body.contains(&want) {
                    errs.push(format!("{rcpt}: CPIM header `{n}: {v}` not in the body"));
                }
            }
            for s in &exp.body_contains {
                if !body.contains(s.as_str()) {
                    errs.push(format!("{rcpt}: body does not contain `{s}`"));
                }
            }
        }
    } else if !t.expect.is_empty() {
        errs.push("`expect` needs a `mail`".into());
    }
    errs.extend(crate::cpm_to_mail::selftest::run(rules, t, now));
    errs.extend(crate::reports::selftest::run(rules, t, now));
    for (i, case) in t.response.iter().enumerate() {
        let mode = if case.mode.as_deref() == Some("large") {
            Mode::Large
        } else {
            Mode::Pager
        };
        let outcome = match (case.status, &case.failure) {
            (Some(status), _) => Outcome::Final {
                protocol: Layer::Sip,
                status,
                reason: String::new(),
                headers: Vec::new(),
                mode,
            },
            (None, Some(f)) => match FailureKind::parse(f) {
                Some(kind) => Outcome::Failure {
                    kind,
                    detail: "self-test".into(),
                    mode,
                },
                None => {
                    errs.push(format!("response case {i}: unknown failure `{f}`"));
                    continue;
                }
            },
            (None, None) => {
                errs.push(format!("response case {i}: needs `status` or `failure`"));
                continue;
            }
        };
        let rcpt = rcpts.first().cloned().unwrap_or(Rcpt {
            address: "+15551234567@cpm.example.net".into(),
            ..Rcpt::default()
        });
        let env = Envelope {
            mail_from: mail_from.clone().unwrap_or_default(),
            rcpts: vec![rcpt.clone()],
            client: client.clone(),
            received_at: now,
        };
        let cpim = case.body.as_deref() == Some("cpim");
        let input = crate::mail_to_cpm::phases::ResponseInput {
            envelope: &env,
            rcpt: &rcpt,
            uri: None,
            outcome: &outcome,
            cpim_body: cpim,
            retried: &case.retried,
            imdn_requested: case.imdn_requested.unwrap_or(cpim),
            now,
        };
        let (got, notes) = crate::mail_to_cpm::phases::respond_noting(rules, &input, None);
        if case.learn.is_some() && notes.learn != case.learn {
            errs.push(format!(
                "response case {i} ({:?}/{:?}): expected learn {:?}, got {:?}",
                case.status, case.failure, case.learn, notes.learn
            ));
        }
        let relayed = case.report.as_deref() == Some("relayed");
        if case.report.is_some() && notes.relayed != relayed {
            errs.push(format!(
                "response case {i} ({:?}/{:?}): expected report {:?}, got relayed={}",
                case.status, case.failure, case.report, notes.relayed
            ));
        }
        match (&got, &case.reply, &case.retry) {
            (crate::mail_to_cpm::phases::ResponseDecision::Reply(r), Some(want), None)
                if r.to_string().starts_with(want.as_str()) => {}
            (crate::mail_to_cpm::phases::ResponseDecision::Retry(r), None, Some(want))
                if r == want => {}
            _ => errs.push(format!(
                "response case {i} ({:?}/{:?}): expected {}, got {got:?}",
                case.status,
                case.failure,
                case.reply
                    .as_ref()
                    .map(|r| format!("reply `{r}`"))
                    .or(case.retry.as_ref().map(|r| format!("retry {r}")))
                    .unwrap_or_default()
            )),
        }
    }
    errs
}
