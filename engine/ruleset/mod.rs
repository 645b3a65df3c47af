//! A rule set: the YAML rule files of a directory, compiled once per load into an
//! immutable value that every mail of one generation is mapped with.
//!
//! Layout of a rule-set directory:
//! ```text
//! rules/
//!   settings.yaml        constants the rules read as `config.<name>`
//!   tables/<name>.yaml   lookup tables for `lookup("<name>", key)`
//!   *.yaml               rule files, loaded in file-name order; each belongs to one phase
//!   tests/*.yaml         self-tests run by `iwf check` and `cargo test`
//! ```

pub mod diag;
pub mod file;
pub mod load;
pub(crate) mod run;
pub mod schema;
pub mod selftest;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde_saphyr::Location;

use crate::dsl::{Code, Value};
pub use diag::Diagnostic;
pub use load::load;
use schema::Action;

/// A compiled rule set (one generation).
#[derive(Debug)]
pub struct RuleSet {
    pub dir: PathBuf,
    /// Increases by one with every successful (re)load.
    pub generation: u64,
    pub settings: BTreeMap<String, Value>,
    pub tables: BTreeMap<String, Arc<BTreeMap<String, Value>>>,
    /// Rules per phase, indexed like [`schema::PHASES`], in load order.
    pub phases: Vec<Vec<Rule>>,
    /// The self-tests of the rule set.
    pub tests: Vec<file::SelfTest>,
    /// Steps one phase evaluation may take.
    pub step_limit: u32,
}

/// One compiled rule.
#[derive(Debug)]
pub struct Rule {
    pub name: String,
    pub cite: String,
    pub file: Arc<str>,
    pub line: usize,
    pub when: Option<Code>,
    pub actions: Vec<CompiledAction>,
    pub stop: bool,
    /// Counts the times the rule fired (`iwf_rule_hits_total`). `None` until the rule set
    /// is put into service (`metrics::count_rule_hits`): self-tests and dry runs do not count.
    pub hits: Option<::metrics::Counter>,
}

/// An action with its compiled value(s).
#[derive(Debug)]
pub enum CompiledAction {
    /// An action with one value.
    Value(Action, Code),
    /// `set_header` / `append_header` / `cpim_header`: header name → value, in order.
    Headers(Action, Vec<(String, Code)>),
    /// `remove_header`.
    Remove(Vec<String>),
}

impl RuleSet {
    pub fn rules(&self, phase: &str) -> &[Rule] {
        schema::PHASES
            .iter()
            .position(|p| p.name == phase)
            .map(|i| self.phases[i].as_slice())
            .unwrap_or(&[])
    }

    pub fn setting(&self, name: &str) -> Option<&Value> {
        self.settings.get(name)
    }

    /// A string setting, or `default`.
    pub fn setting_str(&self, name: &str, default: &str) -> String {
        self.settings
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_string()
    }

    pub fn rule_count(&self) -> usize {
        self.phases.iter().map(Vec::len).sum()
    }
}

/// Where a rule came from, for `--explain`.
pub fn location_line(loc: &Location) -> usize {
    loc.line() as usize
}
