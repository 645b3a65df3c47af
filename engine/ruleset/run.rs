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
    fn apply(
        &mut self,
        action: Action,
        header: Option<&str>,
        value: Value,
    ) -> Result<(), ActionError>;
    fn remove_headers(&mut self, _names: &[String]) {}
    /// Whether the phase has reached a final decision (e.g. a rejection).
    fn done(&self) -> bool {
        false
    }
}

/// Why an action could not take the value its rule produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    /// The mail (or request) itself cannot be converted: a value of its content would put
    /// a control character into a header or reply. Retrying will not help.
    #[error("{0}")]
    Content(String),
    /// The rule produced a value the action does not take: a rule error, local and
    /// temporary (the sender retries after the operator fixed the rule).
    #[error("{what} must be {expected}, found `{found}`")]
    Unexpected {
        what: String,
        expected: &'static str,
        found: String,
    },
}

impl ActionError {
    /// `what` must be `expected`, found `found` (escaped for the log).
    pub fn unexpected(what: impl Into<String>, expected: &'static str, found: &str) -> Self {
        ActionError::Unexpected {
            what: what.into(),
            expected,
            found: found.escape_debug().to_string(),
        }
    }
}

/// Whose fault a failed rule run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The mail's content: a permanent refusal (`554 5.6.0`).
    Content,
    /// The rules (an evaluation error, a limit, a value an action does not take): a local,
    /// temporary failure (`451 4.3.0`), logged for the operator.
    Rule,
}

/// An error while running rules: which rule, and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule `{rule}` ({at}): {message}")]
pub struct RunError {
    pub rule: String,
    pub at: String,
    pub message: String,
    pub fault: Fault,
}

pub fn run<S: PhaseState>(
    phase: &'static str,
    rules: &[Rule],
    state: &mut S,
    step_limit: u32,
    mut explain: Option<&mut Vec<Fired>>,
) -> Result<(), RunError> {
    let mut frame = Frame::new(step_limit);
    for rule in rules {
        let fail = |fault: Fault, message: String| RunError {
            rule: rule.name.clone(),
            at: format!("{}:{}", rule.file, rule.line),
            message,
            fault,
        };
        let err = |e: EvalError| fail(Fault::Rule, e.to_string());
        let refused = |e: ActionError| {
            let fault = match e {
                ActionError::Content(_) => Fault::Content,
                ActionError::Unexpected { .. } => Fault::Rule,
            };
            fail(fault, e.to_string())
        };
        frame.captures = None;
        if let Some(when) = &rule.when {
            let v = eval::eval(when, state, &mut frame).map_err(err)?;
            if !v.is_true() {
                continue;
            }
        }
        let mut values = Vec::new();
        for action in &rule.actions {
            match action {
                CompiledAction::Value(a, code) => {
                    let v = eval::eval(code, state, &mut frame).map_err(err)?;
                    if explain.is_some() {
                        values.push((a.key().to_string(), v.to_string()));
                    }
                    state.apply(*a, None, v).map_err(refused)?;
                }
                CompiledAction::Headers(a, list) => {
                    for (name, code) in list {
                        let v = eval::eval(code, state, &mut frame).map_err(err)?;
                        if explain.is_some() {
                            values.push((format!("{} {name}", a.key()), v.to_string()));
                        }
                        state.apply(*a, Some(name), v).map_err(refused)?;
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
