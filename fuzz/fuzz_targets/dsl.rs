//! The rule language on arbitrary text, and the shipped rules on arbitrary mails.
//!
//! The first byte picks what runs (and for expressions, in which phase's scope):
//! * 0: `parse_expression` → `compile` in that phase's scope (the loader's names: fields,
//!   field functions, `config.*` settings and tables of the shipped rules) → `eval` with a
//!   bounded step budget over field values taken from the input;
//! * 1: the same with `parse_template` / `compile_template`;
//! * 2: the text as a rule file (`RuleFile` YAML), every expression and template in it
//!   parsed and compiled in the file's phase;
//! * 3: the shipped, compiled rules over the input as a mail: every recipient of its
//!   To/Cc through `resolve_recipient`, then `plan_mail` for the accepted ones.
//!
//! Properties: no panic; evaluation ends (the step limit holds); compile errors carry
//! spans inside the source.
#![no_main]

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use iwf::dsl::compile::{Scope, compile, compile_template};
use iwf::dsl::parser::{parse_expression, parse_template};
use iwf::dsl::{Frame, Input, Ty, Value};
use iwf::smtp::envelope::{Envelope, MailFrom, Rcpt};
use iwf::mail_to_cpm::phases::{self, RcptDecision};
use iwf::ruleset::RuleSet;
use iwf::ruleset::file::RuleFile;
use iwf::ruleset::schema::{FIELD_FNS, FIELDS, PHASES};
use libfuzzer_sys::fuzz_target;

fn rules() -> &'static RuleSet {
    static RULES: OnceLock<RuleSet> = OnceLock::new();
    RULES.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
        iwf::ruleset::load(&dir, 1).expect("shipped rules load")
    })
}

/// A phase's names, as the loader resolves them.
struct PhaseScope {
    bit: u16,
    captures: bool,
}

impl Scope for PhaseScope {
    fn field(&self, name: &str) -> Option<(u16, Ty)> {
        FIELDS
            .iter()
            .find(|f| f.0 == name && f.3 & self.bit != 0)
            .map(|f| (f.1 as u16, f.2.ty()))
    }
    fn field_fn(&self, name: &str) -> Option<(u16, Ty, bool)> {
        FIELD_FNS
            .iter()
            .find(|f| f.0 == name && f.3 & self.bit != 0)
            .map(|f| (f.1 as u16, f.2.ty(), true))
    }
    fn constant(&self, name: &str) -> Option<Value> {
        name.strip_prefix("config.")
            .and_then(|k| rules().settings.get(k).cloned())
    }
    fn table(&self, name: &str) -> Option<Arc<BTreeMap<String, Value>>> {
        rules().tables.get(name).cloned()
    }
    fn captures(&self) -> bool {
        self.captures
    }
    fn names(&self) -> Vec<String> {
        FIELDS
            .iter()
            .filter(|f| f.3 & self.bit != 0)
            .map(|f| f.0.to_string())
            .collect()
    }
}

/// Field values from the input: every string field is `text`, numbers and lists derived.
struct Fields<'a> {
    text: &'a str,
}

impl Input for Fields<'_> {
    fn field(&self, slot: u16) -> Value {
        let Some(f) = FIELDS.iter().find(|f| f.1 as u16 == slot) else {
            return Value::Null;
        };
        match f.2.ty() {
            Ty::Bool => Value::Bool(self.text.len() % 2 == 1),
            Ty::Int => Value::Int(self.text.parse().unwrap_or(self.text.len() as i64)),
            Ty::List(_) => Value::list_of_str(self.text.split(',')),
            _ if self.text.is_empty() => Value::Null,
            _ => Value::str(self.text),
        }
    }
    fn field_fn(&self, _slot: u16, arg: &str) -> Value {
        if arg.len().is_multiple_of(3) {
            Value::Null
        } else {
            Value::str(self.text)
        }
    }
}

fn check_spans(src: &str, errors: &[iwf::dsl::CompileError]) {
    for e in errors {
        assert!(
            e.span.start <= e.span.end && e.span.end <= src.len(),
            "{e:?} in {src:?}"
        );
    }
}

fn run_code(code: &iwf::dsl::Code, text: &str) {
    let mut frame = Frame::new(10_000);
    let _ = iwf::dsl::eval::eval(code, &Fields { text }, &mut frame);
}

fn expression(bit: u16, src: &str, text: &str) {
    let Ok(expr) = parse_expression(src) else {
        return;
    };
    let scope = PhaseScope {
        bit,
        captures: iwf::dsl::compile::has_match(&expr),
    };
    match compile(&expr, &scope) {
        Ok((code, _)) => run_code(&code, text),
        Err(errors) => check_spans(src, &errors),
    }
}

fn template(bit: u16, src: &str, text: &str) {
    let Ok(parts) = parse_template(src) else {
        return;
    };
    let scope = PhaseScope {
        bit,
        captures: false,
    };
    match compile_template(&parts, &scope) {
        Ok((code, _)) => run_code(&code, text),
        Err(errors) => check_spans(src, &errors),
    }
}

fn rule_file(src: &str) {
    let Ok(file) = serde_saphyr::from_str::<RuleFile>(src) else {
        return;
    };
    let Some(phase) = PHASES.iter().find(|p| p.name == file.phase.value) else {
        return;
    };
    for rule in &file.rules {
        if let Some(when) = &rule.when {
            expression(phase.bit, &when.value, "x");
        }
        let templates = [
            &rule.uri,
            &rule.reject,
            &rule.mode,
            &rule.request_uri,
            &rule.body,
            &rule.text,
            &rule.reply,
        ];
        for t in templates.into_iter().flatten() {
            template(phase.bit, &t.value, "x");
        }
        for map in [&rule.set_header, &rule.append_header, &rule.cpim_header]
            .into_iter()
            .flatten()
        {
            for v in map.values() {
                template(phase.bit, &v.value, "x");
            }
        }
    }
}

fn mail(raw: &[u8]) {
    let rules = rules();
    let now = iwf::ids::fixed_now();
    let ids = iwf::ids::SequentialIds::new();
    let (from, rcpts) = iwf::mail_to_cpm::dryrun::implied_envelope(raw);
    let mut envelope = Envelope {
        mail_from: MailFrom {
            size: Some(raw.len() as u64),
            ..from
        },
        rcpts: Vec::new(),
        client: Default::default(),
        received_at: now,
    };
    let mut accepted = Vec::new();
    for r in rcpts.into_iter().take(8) {
        if let RcptDecision::Accept { uri } =
            phases::resolve_recipient(rules, &envelope, &r, now, None)
        {
            envelope.rcpts.push(r.clone());
            accepted.push((r, uri));
        }
    }
    if accepted.is_empty() {
        // Still run the message phase once, for a fixed recipient.
        let r = Rcpt {
            address: "+15551234567@cpm.example.net".into(),
            notify: Vec::new(),
            orcpt: None,
        };
        envelope.rcpts.push(r.clone());
        accepted.push((r, "tel:+15551234567".into()));
    }
    let raw = bytes::Bytes::copy_from_slice(raw);
    let _ = phases::plan_mail(
        rules,
        &envelope,
        &accepted,
        iwf::mail_to_cpm::mail::Mail::parse_shared(&raw),
        &ids,
        &iwf::mail_to_cpm::peer_memory::Unknown,
        now,
        false,
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let mode = first % 4;
    let phase = &PHASES[usize::from(first / 4) % PHASES.len()];
    if mode == 3 {
        mail(rest);
        return;
    }
    let text = String::from_utf8_lossy(rest);
    let (src, value) = text.split_once('\u{0}').unwrap_or((&text, "+15551234567"));
    match mode {
        0 => expression(phase.bit, src, value),
        1 => template(phase.bit, src, value),
        _ => rule_file(src),
    }
});
