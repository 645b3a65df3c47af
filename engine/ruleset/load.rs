//! Loading a rule-set directory: read every file, compile every expression, collect every
//! problem (not just the first) as a [`Diagnostic`] with file:line:col.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_saphyr::{Location, Spanned};

use super::diag::{Diagnostic, Source};
use super::file::{RawRule, RuleFile, SelfTest};
use super::schema::{self, Action, FIELD_FNS, FIELDS, PhaseDef};
use super::{CompiledAction, Rule, RuleSet};
use crate::dsl::compile::{self, Scope, compile_template, has_match};
use crate::dsl::parser::{parse_expression, parse_template};
use crate::dsl::{Code, Ty, Value};

/// Default step limit for one phase evaluation of one mail.
pub const STEP_LIMIT: u32 = 200_000;

/// Loads and compiles the rule set in `dir`. `generation` is stamped on the result.
pub fn load(dir: &Path, generation: u64) -> Result<RuleSet, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let settings = load_settings(dir, &mut diags);
    let tables = load_tables(dir, &mut diags);
    let mut phases: Vec<Vec<Rule>> = schema::PHASES.iter().map(|_| Vec::new()).collect();
    let mut names: HashMap<String, (PathBuf, usize)> = HashMap::new();

    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                // Editors' lock and swap files (`.#x.yaml`, `.x.yaml.swp`) are not rules.
                p.is_file()
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                    && p.extension().is_some_and(|x| x == "yaml" || x == "yml")
                    && p.file_stem().is_some_and(|s| s != "settings")
            })
            .collect(),
        Err(e) => {
            return Err(vec![plain(dir, format!("cannot read rule directory: {e}"))]);
        }
    };
    files.sort();
    if files.is_empty() {
        diags.push(plain(
            dir,
            "no rule files (*.yaml) in the rule directory".into(),
        ));
    }
    for path in &files {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                diags.push(plain(path, format!("cannot read: {e}")));
                continue;
            }
        };
        let src = Source { path, text: &text };
        let file: RuleFile = match serde_saphyr::from_str(&text) {
            Ok(f) => f,
            Err(e) => {
                diags.push(yaml_error(&src, &e));
                continue;
            }
        };
        let Some(phase_idx) = schema::PHASES
            .iter()
            .position(|p| p.name == file.phase.value)
        else {
            let known: Vec<&str> = schema::PHASES.iter().map(|p| p.name).collect();
            diags.push(src.at_value(
                &file.phase.referenced,
                &file.phase.value,
                format!(
                    "unknown phase `{}`; phases are: {}",
                    file.phase.value,
                    known.join(", ")
                ),
            ));
            continue;
        };
        let phase = &schema::PHASES[phase_idx];
        let file_name: Arc<str> = Arc::from(display_path(dir, path));
        for raw in &file.rules {
            let line = raw.name.referenced.line() as usize;
            if let Some((other, other_line)) = names.get(&raw.name.value) {
                diags.push(src.at_value(
                    &raw.name.referenced,
                    &raw.name.value,
                    format!(
                        "duplicate rule name `{}` (first defined at {}:{})",
                        raw.name.value,
                        other.display(),
                        other_line
                    ),
                ));
            } else {
                names.insert(raw.name.value.clone(), (path.clone(), line));
            }
            let before = diags.len();
            let rule = compile_rule(raw, phase, &settings, &tables, &src, &file_name, &mut diags);
            for d in &mut diags[before..] {
                d.rule = Some(raw.name.value.clone());
            }
            if let Some(rule) = rule {
                phases[phase_idx].push(rule);
            }
        }
    }
    let tests = load_tests(dir, &mut diags);
    if diags.is_empty() {
        Ok(RuleSet {
            dir: dir.to_path_buf(),
            generation,
            settings,
            tables,
            phases,
            tests,
            step_limit: STEP_LIMIT,
        })
    } else {
        Err(diags)
    }
}

fn display_path(dir: &Path, path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let d = dir.to_string_lossy();
    if d.is_empty() || d == "." {
        name
    } else {
        format!("{}/{}", d.trim_end_matches('/'), name)
    }
}

fn plain(path: &Path, message: String) -> Diagnostic {
    Diagnostic {
        file: path.to_path_buf(),
        line: 1,
        col: 1,
        len: 1,
        message,
        rule: None,
        source_line: String::new(),
    }
}

fn yaml_error(src: &Source, e: &serde_saphyr::Error) -> Diagnostic {
    let (line, col) = e
        .location()
        .map(|l| (l.line() as usize, l.column() as usize))
        .unwrap_or((1, 1));
    // serde-saphyr's Display repeats the location and a snippet; keep the first line.
    let full = e.to_string();
    let msg = full.lines().next().unwrap_or("invalid YAML").trim();
    let msg = msg.split(" at line ").next().unwrap_or(msg);
    let msg = msg.trim_start_matches("error: ");
    // Drop serde-saphyr's own "line N column M: " prefix: the diagnostic shows the position.
    let msg = match msg.split_once(": ") {
        Some((pos, rest)) if pos.starts_with("line ") && pos.contains(" column ") => rest,
        _ => msg,
    }
    .to_string();
    src.at(line, col, 1, format!("invalid rule file: {msg}"))
}

fn load_settings(dir: &Path, diags: &mut Vec<Diagnostic>) -> BTreeMap<String, Value> {
    let path = dir.join("settings.yaml");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return BTreeMap::new();
    };
    match serde_saphyr::from_str::<BTreeMap<String, serde_json::Value>>(&text) {
        Ok(m) => m
            .into_iter()
            .map(|(k, v)| (k, Value::from_json(&v)))
            .collect(),
        Err(e) => {
            diags.push(yaml_error(
                &Source {
                    path: &path,
                    text: &text,
                },
                &e,
            ));
            BTreeMap::new()
        }
    }
}

fn load_tables(
    dir: &Path,
    diags: &mut Vec<Diagnostic>,
) -> BTreeMap<String, Arc<BTreeMap<String, Value>>> {
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(dir.join("tables")) else {
        return out;
    };
    let mut paths: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if !path.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            continue;
        }
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        match serde_saphyr::from_str::<BTreeMap<String, serde_json::Value>>(&text) {
            Ok(m) => {
                out.insert(
                    name,
                    Arc::new(
                        m.into_iter()
                            .map(|(k, v)| (k, Value::from_json(&v)))
                            .collect(),
                    ),
                );
            }
            Err(e) => diags.push(yaml_error(
                &Source {
                    path: &path,
                    text: &text,
                },
                &e,
            )),
        }
    }
    out
}

fn load_tests(dir: &Path, diags: &mut Vec<Diagnostic>) -> Vec<SelfTest> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir.join("tests")) else {
        return out;
    };
    let mut paths: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if !path.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        match serde_saphyr::from_str::<Vec<SelfTest>>(&text) {
            Ok(t) => out.extend(t),
            Err(e) => diags.push(yaml_error(
                &Source {
                    path: &path,
                    text: &text,
                },
                &e,
            )),
        }
    }
    out
}

/// Names available to the expressions of one phase.
struct PhaseScope<'a> {
    bit: u16,
    settings: &'a BTreeMap<String, Value>,
    tables: &'a BTreeMap<String, Arc<BTreeMap<String, Value>>>,
    captures: bool,
}

impl Scope for PhaseScope<'_> {
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
            .and_then(|k| self.settings.get(k).cloned())
    }
    fn table(&self, name: &str) -> Option<Arc<BTreeMap<String, Value>>> {
        self.tables.get(name).cloned()
    }
    fn captures(&self) -> bool {
        self.captures
    }
    fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = FIELDS
            .iter()
            .filter(|f| f.3 & self.bit != 0)
            .map(|f| f.0.to_string())
            .collect();
        v.extend(self.settings.keys().map(|k| format!("config.{k}")));
        v
    }
}

/// Why a field name is unknown in this phase, when it exists in another.
fn other_phase_hint(msg: &str, bit: u16) -> String {
    let Some(name) = msg
        .strip_prefix("unknown field `")
        .and_then(|r| r.split('`').next())
    else {
        return msg.to_string();
    };
    if let Some(f) = FIELDS.iter().find(|f| f.0 == name && f.3 & bit == 0) {
        let phases: Vec<&str> = schema::PHASES
            .iter()
            .filter(|p| p.bit & f.3 != 0)
            .map(|p| p.name)
            .collect();
        return format!(
            "field `{name}` is not available in this phase (only in: {})",
            phases.join(", ")
        );
    }
    msg.to_string()
}

/// Compile errors of an expression, placed inside the YAML value they came from.
fn report_compile_errors(
    src: &Source,
    value: &Spanned<String>,
    errs: &[compile::CompileError],
    phase_bit: u16,
    diags: &mut Vec<Diagnostic>,
) {
    for er in errs {
        diags.push(src.in_value(
            &value.referenced,
            &value.value,
            er.span.start,
            er.span.end,
            other_phase_hint(&er.message, phase_bit),
        ));
    }
}

fn syntax_error(
    src: &Source,
    value: &Spanned<String>,
    se: &crate::dsl::parser::SyntaxError,
) -> Diagnostic {
    src.in_value(
        &value.referenced,
        &value.value,
        se.at,
        se.at + 1,
        format!("syntax error: {}", se.message),
    )
}

#[allow(clippy::too_many_arguments)]
fn compile_rule(
    raw: &RawRule,
    phase: &PhaseDef,
    settings: &BTreeMap<String, Value>,
    tables: &BTreeMap<String, Arc<BTreeMap<String, Value>>>,
    src: &Source,
    file: &Arc<str>,
    diags: &mut Vec<Diagnostic>,
) -> Option<Rule> {
    let before = diags.len();
    let name = &raw.name.value;
    if name.trim().is_empty() {
        diags.push(src.at_value(&raw.name.referenced, " ", "a rule needs a non-empty `name`"));
    }
    let cite = match &raw.cite {
        Some(c) if !c.value.trim().is_empty() => c.value.clone(),
        _ => {
            diags.push(src.at_value(
                &raw.name.referenced,
                name,
                format!("rule `{name}` has no `cite:` (the standard and section it implements)"),
            ));
            String::new()
        }
    };
    let mut scope = PhaseScope {
        bit: phase.bit,
        settings,
        tables,
        captures: false,
    };
    let when = raw
        .when
        .as_ref()
        .and_then(|w| match parse_expression(&w.value) {
            Ok(e) => {
                scope.captures = has_match(&e);
                match compile::compile(&e, &scope) {
                    Ok((code, ty)) => {
                        if !ty.fits(&Ty::Bool) {
                            diags.push(src.in_value(
                                &w.referenced,
                                &w.value,
                                e.span.start,
                                e.span.end,
                                format!("`when:` must be a condition (bool), found {ty}"),
                            ));
                        }
                        Some(code)
                    }
                    Err(errs) => {
                        report_compile_errors(src, w, &errs, phase.bit, diags);
                        None
                    }
                }
            }
            Err(se) => {
                diags.push(syntax_error(src, w, &se));
                None
            }
        });

    let mut actions = Vec::new();
    let allowed =
        |action: Action, loc: &Location, val: &str, diags: &mut Vec<Diagnostic>| -> bool {
            if phase.actions.contains(&action) {
                true
            } else {
                let ok: Vec<&str> = phase.actions.iter().map(|a| a.key()).collect();
                diags.push(src.at_value(
                    loc,
                    val,
                    format!(
                        "action `{}` is not allowed in phase `{}` (allowed: {})",
                        action.key(),
                        phase.name,
                        ok.join(", ")
                    ),
                ));
                false
            }
        };
    let template = |action: Action,
                    s: &Spanned<String>,
                    diags: &mut Vec<Diagnostic>,
                    want: Option<Ty>|
     -> Option<Code> {
        match parse_template(&s.value) {
            Ok(parts) => match compile_template(&parts, &scope) {
                Ok((code, ty)) => {
                    if let Some(want) = want
                        && !ty.fits(&want)
                    {
                        diags.push(src.at_value(
                            &s.referenced,
                            &s.value,
                            format!("`{}` must be {want}, found {ty}", action.key()),
                        ));
                    }
                    if let (Some(choices), Code::Const(Value::Str(v))) = (action.choices(), &code)
                        && !choices.contains(&&**v)
                    {
                        diags.push(src.at_value(
                            &s.referenced,
                            &s.value,
                            format!(
                                "`{}` must be one of: {} (found `{v}`)",
                                action.key(),
                                choices.join(", ")
                            ),
                        ));
                    }
                    if let (Action::SipReply, Code::Const(Value::Str(v))) = (action, &code)
                        && let Err(e) = crate::cpm_to_mail::SipAnswer::parse(v)
                    {
                        diags.push(src.at_value(
                            &s.referenced,
                            &s.value,
                            format!("invalid SIP response: {e}"),
                        ));
                    }
                    if let (Action::Reject | Action::Reply, Code::Const(Value::Str(v))) =
                        (action, &code)
                        && let Err(e) = crate::smtp::reply::Reply::parse(v)
                    {
                        diags.push(src.at_value(
                            &s.referenced,
                            &s.value,
                            format!("invalid SMTP reply: {e}"),
                        ));
                    }
                    Some(code)
                }
                Err(errs) => {
                    report_compile_errors(src, s, &errs, phase.bit, diags);
                    None
                }
            },
            Err(se) => {
                diags.push(syntax_error(src, s, &se));
                None
            }
        }
    };
    type Single<'r> = (Action, &'r Option<Spanned<String>>, Option<Ty>);
    let singles: [Single; 26] = [
        (Action::Uri, &raw.uri, Some(Ty::Str)),
        (Action::Reject, &raw.reject, Some(Ty::Str)),
        (Action::Mode, &raw.mode, Some(Ty::Str)),
        (Action::RequestUri, &raw.request_uri, Some(Ty::Str)),
        (Action::Imdn, &raw.imdn, None),
        (Action::Body, &raw.body, Some(Ty::Str)),
        (Action::Text, &raw.text, Some(Ty::Str)),
        (Action::RecipientList, &raw.recipient_list, Some(Ty::Str)),
        (Action::Exploder, &raw.exploder, Some(Ty::Str)),
        (Action::Reply, &raw.reply, Some(Ty::Str)),
        (Action::Retry, &raw.retry, Some(Ty::Str)),
        (Action::Dsn, &raw.dsn, Some(Ty::Bool)),
        (Action::Mailbox, &raw.mailbox, Some(Ty::Str)),
        (Action::Learn, &raw.learn, Some(Ty::Str)),
        (Action::Report, &raw.report, Some(Ty::Str)),
        (Action::Address, &raw.address, Some(Ty::Str)),
        (Action::SipReply, &raw.sip_reply, Some(Ty::Str)),
        (Action::Encoding, &raw.encoding, Some(Ty::Str)),
        (Action::EnvelopeFrom, &raw.envelope_from, Some(Ty::Str)),
        (Action::Notify, &raw.notify, Some(Ty::Str)),
        (Action::ReportToken, &raw.report_token, Some(Ty::Str)),
        (Action::DsnAction, &raw.dsn_action, Some(Ty::Str)),
        (Action::DsnStatus, &raw.dsn_status, Some(Ty::Str)),
        (Action::Diagnostic, &raw.diagnostic, Some(Ty::Str)),
        (Action::MdnDisposition, &raw.mdn_disposition, Some(Ty::Str)),
        (Action::ImdnStatus, &raw.imdn_status, Some(Ty::Str)),
    ];
    // Header maps come first so that a rule's headers are set before its mode/body decisions.
    let maps = [
        (Action::SetHeader, &raw.set_header),
        (Action::AppendHeader, &raw.append_header),
        (Action::CpimHeader, &raw.cpim_header),
    ];
    for (action, map) in maps {
        let Some(map) = map else { continue };
        let Some((_, first)) = map.first() else {
            continue;
        };
        if !allowed(action, &first.referenced, &first.value, diags) {
            continue;
        }
        let mut out = Vec::new();
        for (hname, v) in map {
            if crate::render::encoder::check_name(hname).is_err() {
                diags.push(src.at_value(
                    &v.referenced,
                    &v.value,
                    format!("`{hname}` is not a valid header name"),
                ));
                continue;
            }
            // Header values may be strings or integers (written in decimal).
            if let Some(code) = template(action, v, diags, None) {
                out.push((hname.clone(), code));
            }
        }
        actions.push(CompiledAction::Headers(action, out));
    }
    if let Some(list) = &raw.remove_header
        && let Some(first) = list.first()
        && allowed(Action::RemoveHeader, &first.referenced, &first.value, diags)
    {
        let mut out = Vec::new();
        for h in list {
            if crate::render::encoder::check_name(&h.value).is_err() {
                diags.push(src.at_value(
                    &h.referenced,
                    &h.value,
                    format!("`{}` is not a valid header name", h.value),
                ));
            }
            out.push(h.value.clone());
        }
        actions.push(CompiledAction::Remove(out));
    }
    for (action, val, want) in singles {
        let Some(s) = val else { continue };
        if !allowed(action, &s.referenced, &s.value, diags) {
            continue;
        }
        if let Some(code) = template(action, s, diags, want) {
            actions.push(CompiledAction::Value(action, code));
        }
    }
    let stop = raw.stop.as_ref().map(|s| s.value).unwrap_or(false);
    if actions.is_empty() && !stop && diags.len() == before {
        diags.push(src.at_value(
            &raw.name.referenced,
            name,
            format!("rule `{name}` has no action"),
        ));
    }
    (diags.len() == before).then(|| Rule {
        name: name.clone(),
        cite,
        file: file.clone(),
        line: raw.name.referenced.line() as usize,
        when: when.map(|c| c as Code),
        actions,
        stop,
        hits: None,
    })
}
