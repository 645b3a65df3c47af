//! Diagnostics for people: file:line:col, the source line and a caret under the offending
//! part. Positions point inside DSL expressions, not just at the YAML value.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_saphyr::Location;

/// One problem found while loading a rule set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub col: usize,
    /// Characters to underline (at least 1).
    pub len: usize,
    pub message: String,
    /// The rule the problem belongs to, when known.
    pub rule: Option<String>,
    /// The source line, for the caret display.
    pub source_line: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "error: {}", self.message)?;
        let num = self.line.to_string();
        let pad = " ".repeat(num.len());
        write!(
            f,
            "{pad}--> {}:{}:{}",
            self.file.display(),
            self.line,
            self.col
        )?;
        if let Some(r) = &self.rule {
            write!(f, " (rule `{r}`)")?;
        }
        writeln!(f)?;
        if !self.source_line.is_empty() {
            writeln!(f, "{pad} |")?;
            writeln!(f, "{num} | {}", self.source_line)?;
            let prefix: String = self
                .source_line
                .chars()
                .take(self.col.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            writeln!(f, "{pad} | {prefix}{}", "^".repeat(self.len.max(1)))?;
        }
        Ok(())
    }
}

/// A rule file's text, to turn locations into diagnostics.
pub struct Source<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

impl Source<'_> {
    fn line_text(&self, line: usize) -> String {
        self.text
            .lines()
            .nth(line.saturating_sub(1))
            .unwrap_or("")
            .to_string()
    }

    /// A diagnostic at a line and column.
    pub fn at(
        &self,
        line: usize,
        col: usize,
        len: usize,
        message: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic {
            file: self.path.to_path_buf(),
            line: line.max(1),
            col: col.max(1),
            len,
            message: message.into(),
            rule: None,
            source_line: self.line_text(line.max(1)),
        }
    }

    /// A diagnostic covering a whole YAML value.
    pub fn at_value(&self, loc: &Location, value: &str, message: impl Into<String>) -> Diagnostic {
        let len = value.lines().next().map(|l| l.chars().count()).unwrap_or(1);
        self.at(loc.line() as usize, loc.column() as usize, len, message)
    }

    /// A diagnostic at byte range `start..end` of the DSL text `value`, which YAML read at `loc`.
    ///
    /// serde-saphyr places a plain or quoted scalar at its first character (the quote for
    /// quoted ones) and a `|` block at its first content line, so offsets inside the
    /// expression become file positions by counting lines and columns from there.
    pub fn in_value(
        &self,
        loc: &Location,
        value: &str,
        start: usize,
        end: usize,
        message: impl Into<String>,
    ) -> Diagnostic {
        let start = start.min(value.len());
        let end = end.clamp(start, value.len());
        let before = &value[..start];
        let line_idx = before.matches('\n').count();
        let col_in_line = before.rsplit('\n').next().unwrap_or("").chars().count();
        let base_line = loc.line() as usize;
        let base_col = loc.column() as usize;
        let first_line = self.line_text(base_line);
        let quoted = first_line
            .chars()
            .nth(base_col.saturating_sub(1))
            .is_some_and(|c| c == '"' || c == '\'');
        let (line, col) = if line_idx == 0 {
            (base_line, base_col + col_in_line + usize::from(quoted))
        } else {
            (base_line + line_idx, base_col + col_in_line)
        };
        let span_text = &value[start..end];
        let len = span_text
            .split('\n')
            .next()
            .map(|l| l.chars().count())
            .unwrap_or(1)
            .max(1);
        self.at(line, col, len, message)
    }
}

/// Renders diagnostics the way `iwf check` prints them.
pub fn render_all(diags: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diags {
        out.push_str(&d.to_string());
        out.push('\n');
    }
    out.push_str(&format!(
        "{} error{} found\n",
        diags.len(),
        if diags.len() == 1 { "" } else { "s" }
    ));
    out
}
