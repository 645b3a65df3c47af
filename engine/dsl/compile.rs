//! Compiler: AST → [`Code`], with names resolved to slots, function arity and argument
//! types checked, regexes compiled, and every problem collected with its span.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::ast::{BinOp, Expr, ExprKind, Part, Span, UnaryOp};
use super::functions::{self, Builtin, P, Re};
use super::value::{Ty, Value, common_ty};

/// Compiled, evaluable form of an expression.
#[derive(Debug, Clone)]
pub enum Code {
    Const(Value),
    /// A field of the phase's input, by slot number.
    Field(u16),
    /// A field function of the phase's input (e.g. `mail.header("Subject")`), by slot, with its
    /// (lower-cased) literal argument.
    FieldFn(u16, Arc<str>),
    /// The captures of the last successful `~` in this rule's `when:`.
    Captures,
    Builtin(&'static Builtin, Vec<Code>),
    Lookup(Arc<BTreeMap<String, Value>>, Box<Code>),
    Match {
        subject: Box<Code>,
        re: Arc<regex::Regex>,
        negate: bool,
    },
    Not(Box<Code>),
    Neg(Box<Code>),
    Bin(BinOp, Box<Code>, Box<Code>),
    If(Box<Code>, Box<Code>, Box<Code>),
    Concat(Vec<Code>),
    List(Vec<Code>),
    Map(Vec<(String, Code)>),
    Index(Box<Code>, Box<Code>),
}

/// A compile error at a span of the expression source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    pub span: Span,
    pub message: String,
}

/// What names mean where an expression is compiled (a phase, plus the rule set's
/// settings and tables).
pub trait Scope {
    /// A field by dotted name: its slot and type.
    fn field(&self, name: &str) -> Option<(u16, Ty)>;
    /// A field function by dotted name (one string literal argument): slot, result type,
    /// and whether the argument must be a valid header name.
    fn field_fn(&self, name: &str) -> Option<(u16, Ty, bool)>;
    /// A constant setting by dotted name (`config.x`).
    fn constant(&self, name: &str) -> Option<Value>;
    fn table(&self, name: &str) -> Option<Arc<BTreeMap<String, Value>>>;
    /// Whether `match` (regex captures) is available here.
    fn captures(&self) -> bool;
    /// All names, for "did you mean" hints.
    fn names(&self) -> Vec<String>;
}

/// Compiles an expression; `Ok` only when no error was found.
pub fn compile(e: &Expr, scope: &dyn Scope) -> Result<(Code, Ty), Vec<CompileError>> {
    let mut c = Compiler {
        scope,
        errors: Vec::new(),
    };
    let (code, ty) = c.expr(e);
    if c.errors.is_empty() {
        Ok((fold(code), ty))
    } else {
        Err(c.errors)
    }
}

/// Compiles template parts: a lone `${expr}` keeps its type; anything else is a string.
pub fn compile_template(
    parts: &[Part],
    scope: &dyn Scope,
) -> Result<(Code, Ty), Vec<CompileError>> {
    let mut c = Compiler {
        scope,
        errors: Vec::new(),
    };
    let out = match parts {
        [Part::Expr(e)] => c.expr(e),
        _ => (c.concat(parts), Ty::Str),
    };
    if c.errors.is_empty() {
        Ok((fold(out.0), out.1))
    } else {
        Err(c.errors)
    }
}

/// Constant folding: a sub-expression whose operands are all constants is evaluated once,
/// when the rules load (`${config.max_forwards}`, `"*;+g.3gpp.icsi-ref=\"${config.cpm_icsi}\""`,
/// `4 * config.pager_max_bytes`, `lower(config.iwf_domain)`), instead of for every mail.
/// Built-ins are pure, so the value is the one every evaluation would produce. A `~` match
/// (it sets `match`) and `match` itself are never folded; an operation that fails on its
/// constants (an overflow, a division by zero) is left to fail at run time as before.
fn fold(code: Code) -> Code {
    fn is_const(c: &Code) -> bool {
        matches!(c, Code::Const(_))
    }
    /// Folds in place (the box is kept).
    fn boxed(mut c: Box<Code>) -> Box<Code> {
        let inner = std::mem::replace(&mut *c, Code::Captures);
        *c = fold(inner);
        c
    }
    let code = match code {
        Code::Builtin(b, args) => Code::Builtin(b, args.into_iter().map(fold).collect()),
        Code::Lookup(t, k) => Code::Lookup(t, boxed(k)),
        Code::Match {
            subject,
            re,
            negate,
        } => {
            return Code::Match {
                subject: boxed(subject),
                re,
                negate,
            };
        }
        Code::Not(a) => Code::Not(boxed(a)),
        Code::Neg(a) => Code::Neg(boxed(a)),
        Code::Bin(op, a, b) => Code::Bin(op, boxed(a), boxed(b)),
        Code::If(c, a, b) => {
            let (c, a, b) = (fold(*c), fold(*a), fold(*b));
            if let Code::Const(v) = &c {
                return if v.is_true() { a } else { b };
            }
            Code::If(Box::new(c), Box::new(a), Box::new(b))
        }
        Code::Concat(parts) => Code::Concat(parts.into_iter().map(fold).collect()),
        Code::List(items) => Code::List(items.into_iter().map(fold).collect()),
        Code::Map(entries) => Code::Map(entries.into_iter().map(|(k, v)| (k, fold(v))).collect()),
        Code::Index(a, b) => Code::Index(boxed(a), boxed(b)),
        leaf @ (Code::Const(_) | Code::Field(_) | Code::FieldFn(..) | Code::Captures) => {
            return leaf;
        }
    };
    let constant = match &code {
        Code::Builtin(_, args) | Code::Concat(args) | Code::List(args) => args.iter().all(is_const),
        Code::Lookup(_, k) | Code::Not(k) | Code::Neg(k) => is_const(k),
        Code::Bin(_, a, b) | Code::Index(a, b) => is_const(a) && is_const(b),
        Code::Map(entries) => entries.iter().all(|(_, v)| is_const(v)),
        _ => false,
    };
    if !constant {
        return code;
    }
    struct NoInput;
    impl super::eval::Input for NoInput {
        fn field(&self, _: u16) -> Value {
            Value::Null
        }
        fn field_fn(&self, _: u16, _: &str) -> Value {
            Value::Null
        }
    }
    match super::eval::eval(&code, &NoInput, &mut super::eval::Frame::new(u32::MAX)) {
        Ok(v) if !matches!(v, Value::Regex(_)) => Code::Const(v),
        _ => code,
    }
}

/// Whether an expression contains a regex match (so `match` is meaningful after it).
pub fn has_match(e: &Expr) -> bool {
    match &e.kind {
        ExprKind::Binary(BinOp::Match, _, _) => true,
        ExprKind::Binary(_, a, b) | ExprKind::Index(a, b) => has_match(a) || has_match(b),
        ExprKind::Unary(_, a) => has_match(a),
        ExprKind::If(a, b, c) => has_match(a) || has_match(b) || has_match(c),
        _ => false,
    }
}

struct Compiler<'a> {
    scope: &'a dyn Scope,
    errors: Vec<CompileError>,
}

impl Compiler<'_> {
    fn err(&mut self, span: Span, message: impl Into<String>) -> (Code, Ty) {
        self.errors.push(CompileError {
            span,
            message: message.into(),
        });
        (Code::Const(Value::Null), Ty::Any)
    }

    fn expect(&mut self, span: Span, got: &Ty, want: &Ty, what: &str) {
        if !got.fits(want) || (*got == Ty::Regex && *want != Ty::Regex) {
            self.errors.push(CompileError {
                span,
                message: format!("{what} must be {want}, found {got}"),
            });
        }
    }

    fn concat(&mut self, parts: &[Part]) -> Code {
        let codes: Vec<Code> = parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => Code::Const(Value::str(t.as_str())),
                Part::Expr(e) => {
                    let (c, t) = self.expr(e);
                    if t == Ty::Regex {
                        self.errors.push(CompileError {
                            span: e.span,
                            message: "a regex cannot be written into text".into(),
                        });
                    }
                    c
                }
            })
            .collect();
        match codes.as_slice() {
            [] => Code::Const(Value::str("")),
            [Code::Const(Value::Str(_))] => codes.into_iter().next().expect("one"),
            _ => Code::Concat(codes),
        }
    }

    fn expr(&mut self, e: &Expr) -> (Code, Ty) {
        match &e.kind {
            ExprKind::Null => (Code::Const(Value::Null), Ty::Any),
            ExprKind::Bool(b) => (Code::Const(Value::Bool(*b)), Ty::Bool),
            ExprKind::Int(n) => (Code::Const(Value::Int(*n)), Ty::Int),
            ExprKind::Str(parts) => (self.concat(parts), Ty::Str),
            ExprKind::Regex { source, flags } => match build_regex(source, flags) {
                Ok(re) => (Code::Const(Value::Regex(Re(Arc::new(re)))), Ty::Regex),
                Err(msg) => self.err(e.span, msg.to_string()),
            },
            ExprKind::List(items) => {
                let (codes, tys): (Vec<Code>, Vec<Ty>) = items.iter().map(|i| self.expr(i)).unzip();
                let ty = Ty::List(Box::new(common_ty(tys.into_iter())));
                (Code::List(codes), ty)
            }
            ExprKind::Map(entries) => {
                let mut seen = std::collections::HashSet::new();
                let mut codes = Vec::new();
                let mut tys = Vec::new();
                for (k, v) in entries {
                    if !seen.insert(k.clone()) {
                        self.err(v.span, format!("duplicate key \"{k}\" in map"));
                    }
                    let (c, t) = self.expr(v);
                    codes.push((k.clone(), c));
                    tys.push(t);
                }
                (
                    Code::Map(codes),
                    Ty::Map(Box::new(common_ty(tys.into_iter()))),
                )
            }
            ExprKind::Path(name) => self.path(name, e.span),
            ExprKind::Call {
                name,
                name_span,
                args,
            } => self.call(name, *name_span, args, e.span),
            ExprKind::Index(base, key) => {
                let (b, bt) = self.expr(base);
                let (k, kt) = self.expr(key);
                let elem = match &bt {
                    Ty::List(t) => {
                        self.expect(key.span, &kt, &Ty::Int, "a list index");
                        (**t).clone()
                    }
                    Ty::Map(t) => {
                        self.expect(key.span, &kt, &Ty::Str, "a map key");
                        (**t).clone()
                    }
                    Ty::Any => Ty::Any,
                    other => return self.err(base.span, format!("cannot index into a {other}")),
                };
                (Code::Index(Box::new(b), Box::new(k)), elem)
            }
            ExprKind::Unary(op, a) => {
                let (c, t) = self.expr(a);
                match op {
                    UnaryOp::Not => {
                        self.expect(a.span, &t, &Ty::Bool, "the operand of `not`");
                        (Code::Not(Box::new(c)), Ty::Bool)
                    }
                    UnaryOp::Neg => {
                        self.expect(a.span, &t, &Ty::Int, "the operand of `-`");
                        (Code::Neg(Box::new(c)), Ty::Int)
                    }
                }
            }
            ExprKind::If(c, a, b) => {
                let (cc, ct) = self.expr(c);
                self.expect(c.span, &ct, &Ty::Bool, "the condition of `if`");
                let (ac, at) = self.expr(a);
                let (bc, bt) = self.expr(b);
                let ty = if at == bt { at } else { Ty::Any };
                (Code::If(Box::new(cc), Box::new(ac), Box::new(bc)), ty)
            }
            ExprKind::Binary(op, a, b) => self.binary(*op, a, b),
        }
    }

    fn binary(&mut self, op: BinOp, a: &Expr, b: &Expr) -> (Code, Ty) {
        if matches!(op, BinOp::Match | BinOp::NotMatch) {
            let (subject, st) = self.expr(a);
            self.expect(a.span, &st, &Ty::Str, "the left side of `~`");
            let ExprKind::Regex { source, flags } = &b.kind else {
                return self.err(b.span, "the right side of `~` must be a /regex/ literal");
            };
            return match build_regex(source, flags) {
                Ok(re) => (
                    Code::Match {
                        subject: Box::new(subject),
                        re: Arc::new(re),
                        negate: op == BinOp::NotMatch,
                    },
                    Ty::Bool,
                ),
                Err(msg) => self.err(b.span, msg.to_string()),
            };
        }
        let (ac, at) = self.expr(a);
        let (bc, bt) = self.expr(b);
        let ty = match op {
            BinOp::Coalesce => {
                if at == bt || bt == Ty::Any {
                    at.clone()
                } else if at == Ty::Any {
                    bt.clone()
                } else {
                    Ty::Any
                }
            }
            BinOp::And | BinOp::Or => {
                let w = if op == BinOp::And { "`and`" } else { "`or`" };
                self.expect(a.span, &at, &Ty::Bool, &format!("the left side of {w}"));
                self.expect(b.span, &bt, &Ty::Bool, &format!("the right side of {w}"));
                Ty::Bool
            }
            BinOp::Eq | BinOp::Ne => {
                if !at.fits(&bt) {
                    self.err(
                        b.span,
                        format!("cannot compare {at} with {bt} (always unequal)"),
                    );
                }
                Ty::Bool
            }
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                if !(at.fits(&Ty::Int) && bt.fits(&Ty::Int)
                    || at.fits(&Ty::Str) && bt.fits(&Ty::Str))
                {
                    self.err(b.span, format!("cannot order {at} and {bt}"));
                }
                Ty::Bool
            }
            BinOp::In => {
                if !matches!(bt, Ty::Any | Ty::Str | Ty::List(_) | Ty::Map(_)) {
                    self.err(
                        b.span,
                        format!("the right side of `in` must be a string, list or map, found {bt}"),
                    );
                }
                Ty::Bool
            }
            BinOp::Add => match (&at, &bt) {
                (Ty::Int, Ty::Int) => Ty::Int,
                (Ty::Str, _) | (_, Ty::Str) => Ty::Str,
                (Ty::List(x), Ty::List(y)) => {
                    Ty::List(Box::new(if x == y { (**x).clone() } else { Ty::Any }))
                }
                (Ty::Any, _) | (_, Ty::Any) => Ty::Any,
                _ => return self.err(b.span, format!("cannot add {at} and {bt}")),
            },
            BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem => {
                self.expect(a.span, &at, &Ty::Int, "an arithmetic operand");
                self.expect(b.span, &bt, &Ty::Int, "an arithmetic operand");
                Ty::Int
            }
            BinOp::Match | BinOp::NotMatch => unreachable!("handled above"),
        };
        if at == Ty::Regex || bt == Ty::Regex {
            return self.err(
                a.span,
                "a regex can only be used with `~` or as a function argument",
            );
        }
        (Code::Bin(op, Box::new(ac), Box::new(bc)), ty)
    }

    fn path(&mut self, name: &str, span: Span) -> (Code, Ty) {
        if name == "match" {
            if self.scope.captures() {
                return (Code::Captures, Ty::List(Box::new(Ty::Str)));
            }
            return self.err(
                span,
                "`match` is only available in a rule whose `when:` uses `~`",
            );
        }
        if let Some((slot, ty)) = self.scope.field(name) {
            return (Code::Field(slot), ty);
        }
        if let Some(v) = self.scope.constant(name) {
            let ty = v.ty();
            return (Code::Const(v), ty);
        }
        if self.scope.field_fn(name).is_some() {
            return self.err(
                span,
                format!("`{name}` is a function: call it as {name}(\"Header-Name\")"),
            );
        }
        let hint = did_you_mean(name, &self.scope.names());
        self.err(span, format!("unknown field `{name}`{hint}"))
    }

    fn call(&mut self, name: &str, name_span: Span, args: &[Expr], span: Span) -> (Code, Ty) {
        if name == "lookup" || name == "reverse_lookup" {
            return self.lookup(args, name_span, span, name == "reverse_lookup");
        }
        if let Some((slot, ty, header_name)) = self.scope.field_fn(name) {
            let [arg] = args else {
                return self.err(
                    span,
                    format!("{name}() takes 1 argument, found {}", args.len()),
                );
            };
            let Some(text) = literal_text(arg) else {
                return self.err(
                    arg.span,
                    format!("the argument of {name}() must be a string literal"),
                );
            };
            if header_name && crate::render::encoder::check_name(&text).is_err() {
                return self.err(arg.span, format!("`{text}` is not a valid header name"));
            }
            return (
                Code::FieldFn(slot, Arc::from(text.to_ascii_lowercase())),
                ty,
            );
        }
        let Some(b) = functions::find(name) else {
            let mut names: Vec<String> = functions::BUILTINS
                .iter()
                .map(|b| b.name.to_string())
                .collect();
            names.push("lookup".into());
            names.push("reverse_lookup".into());
            let hint = did_you_mean(name, &names);
            return self.err(name_span, format!("unknown function `{name}`{hint}"));
        };
        if args.len() < b.required || args.len() > b.params.len() {
            let want = if b.required == b.params.len() {
                format!("{}", b.required)
            } else {
                format!("{} to {}", b.required, b.params.len())
            };
            return self.err(
                span,
                format!("{name}() takes {want} argument(s), found {}", args.len()),
            );
        }
        let mut codes = Vec::with_capacity(args.len());
        for (i, (arg, p)) in args.iter().zip(b.params).enumerate() {
            let (c, t) = self.expr(arg);
            if !p.accepts(&t) {
                self.errors.push(CompileError {
                    span: arg.span,
                    message: format!(
                        "argument {} of {name}() must be {}, found {t}",
                        i + 1,
                        param_word(*p)
                    ),
                });
            }
            codes.push(c);
        }
        (Code::Builtin(b, codes), b.ret.ty())
    }

    /// `lookup(table, key)`, or with `reverse` `reverse_lookup(table, value)`: the key of
    /// the first entry (in key order) whose value is that string.
    fn lookup(&mut self, args: &[Expr], name_span: Span, span: Span, reverse: bool) -> (Code, Ty) {
        let fname = if reverse { "reverse_lookup" } else { "lookup" };
        let [table, key] = args else {
            return self.err(
                span,
                format!(
                    "{fname}() takes 2 arguments (table, key), found {}",
                    args.len()
                ),
            );
        };
        let Some(tname) = literal_text(table) else {
            return self.err(
                table.span,
                "the table of lookup() must be a string literal naming a file in tables/",
            );
        };
        let Some(t) = self.scope.table(&tname) else {
            let _ = name_span;
            return self.err(
                table.span,
                format!("unknown table `{tname}` (no tables/{tname}.yaml)"),
            );
        };
        let (k, kt) = self.expr(key);
        self.expect(key.span, &kt, &Ty::Str, "the key of lookup()");
        if reverse {
            let mut inverted = BTreeMap::new();
            for (key, v) in t.iter() {
                if let Some(v) = v.as_str() {
                    inverted
                        .entry(v.to_string())
                        .or_insert_with(|| Value::str(key.as_str()));
                }
            }
            return (Code::Lookup(Arc::new(inverted), Box::new(k)), Ty::Str);
        }
        let ty = common_ty(t.values().map(Value::ty));
        (Code::Lookup(t, Box::new(k)), ty)
    }
}

fn param_word(p: P) -> String {
    match p {
        P::StrOrRegex => "a string or a /regex/".into(),
        other => other.ty().to_string(),
    }
}

/// The text of a string literal without interpolation.
fn literal_text(e: &Expr) -> Option<String> {
    let ExprKind::Str(parts) = &e.kind else {
        return None;
    };
    let mut out = String::new();
    for p in parts {
        match p {
            Part::Text(t) => out.push_str(t),
            Part::Expr(_) => return None,
        }
    }
    Some(out)
}

/// A `/regex/` literal the regex crate refuses: the last line of its explanation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid regex: {0}")]
pub struct RegexError(String);

fn build_regex(source: &str, flags: &str) -> Result<regex::Regex, RegexError> {
    regex::RegexBuilder::new(source)
        .case_insensitive(flags.contains('i'))
        .multi_line(flags.contains('m'))
        .dot_matches_new_line(flags.contains('s'))
        .ignore_whitespace(flags.contains('x'))
        .size_limit(1 << 20)
        .build()
        .map_err(|e| {
            let text = e.to_string();
            let last = text
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or("")
                .to_string();
            RegexError(last.trim_start_matches("error: ").to_string())
        })
}

/// ` (did you mean `x`?)` for the closest name, when one is close.
pub fn did_you_mean(name: &str, candidates: &[String]) -> String {
    let best = candidates
        .iter()
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((_, c)) => format!(" (did you mean `{c}`?)"),
        None => String::new(),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}
