//! Running one phase's rules over a state: evaluate `when:`, apply actions in order,
//! record what fired for `--explain`, stop on `stop`.

use serde::Serialize;

use crate::dsl::eval::{self, Frame, Input};
use crate::dsl::{EvalError, Value};
use crate::ruleset::schema::Action;
use crate::ruleset::{CompiledAction, Rule};

/// A rule that fired, for `--explain` and logs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fired {
    pub phase: &'static str,
    pub rule: String,
    /// `file:line` of the rule.
    pub at: String,
    /// action key (with header name) → the value it produced.
    pub values: Vec<(String, String)>,
}

/// What a phase's state does with actions.
pub trait PhaseState: Input {
    /// Applies an action's value; `header` is the header name for header actions.
    fn apply(&mut self, action: Action, header: Option<&str>, value: Value) -> Result<(), String>;
    fn remove_headers(&mut self, _names: &[String]) {}
    /// Whether the phase has reached a final decision (e.g. a rejection).
    fn done(&self) -> bool {
        false
    }
}

/// An error while running rules: which rule, and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule `{rule}` ({at}): {message}")]
pub struct RunError {
    pub rule: String,
    pub at: String,
    pub message: String,
    /// The mail itself cannot be converted (e.g. a control character in a header value),
    /// so retrying will not help; otherwise a local, temporary failure.
    pub permanent: bool,
}

/// Prefix of action errors caused by the mail's content rather than by the rules.
pub const CONTENT_ERROR: &str = "content: ";

pub fn run<S: PhaseState>(
    phase: &'static str,
    rules: &[Rule],
    state: &mut S,
    step_limit: u32,
    mut explain: Option<&mut Vec<Fired>>,
) -> Result<(), RunError> {
    let mut frame = Frame::new(step_limit);
    for rule in rules {
        let err = |e: String| RunError {
            rule: rule.name.clone(),
            at: format!("{}:{}", rule.file, rule.line),
            permanent: e.starts_with(CONTENT_ERROR),
            message: e.trim_start_matches(CONTENT_ERROR).to_string(),
        };
        frame.captures = None;
        if let Some(when) = &rule.when {
            let v =
                eval::eval(when, state, &mut frame).map_err(|e: EvalError| err(e.to_string()))?;
            if !v.is_true() {
                continue;
            }
        }
        let mut values = Vec::new();
        for action in &rule.actions {
            match action {
                CompiledAction::Value(a, code) => {
                    let v = eval::eval(code, state, &mut frame).map_err(|e| err(e.to_string()))?;
                    if explain.is_some() {
                        values.push((a.key().to_string(), v.to_string()));
                    }
                    state.apply(*a, None, v).map_err(err)?;
                }
                CompiledAction::Headers(a, list) => {
                    for (name, code) in list {
                        let v =
                            eval::eval(code, state, &mut frame).map_err(|e| err(e.to_string()))?;
                        if explain.is_some() {
                            values.push((format!("{} {name}", a.key()), v.to_string()));
                        }
                        state.apply(*a, Some(name), v).map_err(err)?;
                    }
                }
                CompiledAction::Remove(names) => {
                    if explain.is_some() {
                        values.push(("remove_header".into(), names.join(", ")));
                    }
                    state.remove_headers(names);
                }
            }
        }
        if let Some(hits) = &rule.hits {
            hits.increment(1);
        }
        if let Some(ex) = explain.as_deref_mut() {
            ex.push(Fired {
                phase,
                rule: rule.name.clone(),
                at: format!("{}:{}", rule.file, rule.line),
                values,
            });
        }
        if rule.stop || state.done() {
            break;
        }
    }
    Ok(())
}
