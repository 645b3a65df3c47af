//! Evaluator: pure and bounded. It reads the phase's input through [`Input`] and counts
//! steps; past the limit evaluation stops with an error instead of running on.

use std::sync::Arc;

use super::ast::BinOp;
use super::compile::Code;
use super::functions;
use super::value::Value;

/// The phase's input, as seen by compiled code (slots were resolved at load).
pub trait Input {
    fn field(&self, slot: u16) -> Value;
    fn field_fn(&self, slot: u16, arg: &str) -> Value;
}

/// Why evaluation stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error("step limit of {0} exceeded")]
    StepLimit(u32),
    #[error("integer overflow")]
    Overflow,
    #[error("division by zero")]
    DivisionByZero,
    /// A built-in refused its arguments.
    #[error("{name}(): {error}")]
    Builtin {
        name: &'static str,
        error: functions::FnError,
    },
}

/// Per-rule evaluation state: the step budget and the last regex captures.
pub struct Frame {
    pub steps_left: u32,
    pub limit: u32,
    pub captures: Option<Value>,
}

impl Frame {
    pub fn new(limit: u32) -> Self {
        Frame {
            steps_left: limit,
            limit,
            captures: None,
        }
    }
}

pub fn eval(code: &Code, input: &dyn Input, frame: &mut Frame) -> Result<Value, EvalError> {
    if frame.steps_left == 0 {
        return Err(EvalError::StepLimit(frame.limit));
    }
    frame.steps_left -= 1;
    Ok(match code {
        Code::Const(v) => v.clone(),
        Code::Field(slot) => input.field(*slot),
        Code::FieldFn(slot, arg) => input.field_fn(*slot, arg),
        Code::Captures => frame.captures.clone().unwrap_or(Value::List(Arc::from([]))),
        Code::Builtin(b, args) => {
            // Arguments on the stack for the usual arities (no allocation per call).
            const INLINE: usize = 4;
            let mut inline: [Value; INLINE] = Default::default();
            let mut spilled = Vec::new();
            let vals: &mut [Value] = if args.len() <= INLINE {
                &mut inline[..args.len()]
            } else {
                spilled.resize(args.len(), Value::Null);
                &mut spilled
            };
            for (slot, a) in vals.iter_mut().zip(args) {
                *slot = eval(a, input, frame)?;
            }
            if !b.takes_null
                && vals
                    .iter()
                    .zip(b.params)
                    .any(|(v, p)| v.is_null() && *p != functions::P::Any)
            {
                return Ok(Value::Null);
            }
            (b.f)(vals).map_err(|error| EvalError::Builtin {
                name: b.name,
                error,
            })?
        }
        Code::Lookup(table, key) => match eval(key, input, frame)? {
            Value::Str(k) => table.get(&*k).cloned().unwrap_or(Value::Null),
            _ => Value::Null,
        },
        Code::Match {
            subject,
            re,
            negate,
        } => {
            let s = eval(subject, input, frame)?;
            let Value::Str(s) = s else {
                return Ok(Value::Bool(*negate));
            };
            match re.captures(&s) {
                Some(c) => {
                    if !negate {
                        frame.captures = Some(Value::List(
                            c.iter()
                                .map(|m| m.map(|m| Value::str(m.as_str())).unwrap_or(Value::Null))
                                .collect(),
                        ));
                    }
                    Value::Bool(!negate)
                }
                None => Value::Bool(*negate),
            }
        }
        Code::Not(a) => Value::Bool(!eval(a, input, frame)?.is_true()),
        Code::Neg(a) => match eval(a, input, frame)? {
            Value::Int(n) => Value::Int(n.checked_neg().ok_or_else(overflow)?),
            _ => Value::Null,
        },
        Code::If(c, a, b) => {
            if eval(c, input, frame)?.is_true() {
                eval(a, input, frame)?
            } else {
                eval(b, input, frame)?
            }
        }
        Code::Concat(parts) => {
            // `"${expr}"` alone: a string value is already its own text; share it rather
            // than copy it (a whole mail body for `text: ${mail.text}`).
            if let [only] = parts.as_slice() {
                match eval(only, input, frame)? {
                    v @ Value::Str(_) => return Ok(v),
                    v => {
                        let mut out = String::new();
                        push_text(&mut out, &v);
                        return Ok(Value::str(out));
                    }
                }
            }
            let mut out = String::with_capacity(64);
            for p in parts {
                push_text(&mut out, &eval(p, input, frame)?);
            }
            Value::str(out)
        }
        Code::List(items) => {
            let mut out = Vec::with_capacity(items.len());
            for i in items {
                out.push(eval(i, input, frame)?);
            }
            Value::List(out.into())
        }
        Code::Map(entries) => {
            let mut out = std::collections::BTreeMap::new();
            for (k, v) in entries {
                out.insert(k.clone(), eval(v, input, frame)?);
            }
            Value::Map(Arc::new(out))
        }
        Code::Index(base, key) => {
            let b = eval(base, input, frame)?;
            let k = eval(key, input, frame)?;
            match (b, k) {
                (Value::List(l), Value::Int(i)) => {
                    let idx = if i < 0 { l.len() as i64 + i } else { i };
                    usize::try_from(idx)
                        .ok()
                        .and_then(|i| l.get(i).cloned())
                        .unwrap_or(Value::Null)
                }
                (Value::Map(m), Value::Str(k)) => m.get(&*k).cloned().unwrap_or(Value::Null),
                _ => Value::Null,
            }
        }
        Code::Bin(op, a, b) => binary(*op, a, b, input, frame)?,
    })
}

/// Appends the text form of `v` (its `Display`) without the formatting machinery for the
/// common cases.
fn push_text(out: &mut String, v: &Value) {
    match v {
        Value::Null => {}
        Value::Str(s) => out.push_str(s),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(n) => {
            use std::fmt::Write;
            let _ = write!(out, "{n}");
        }
        other => {
            use std::fmt::Write;
            let _ = write!(out, "{other}");
        }
    }
}

fn overflow() -> EvalError {
    EvalError::Overflow
}

/// An operand: a constant by reference (its step counted), anything else evaluated into
/// `slot`.
fn operand<'c>(
    code: &'c Code,
    input: &dyn Input,
    frame: &mut Frame,
    slot: &'c mut Option<Value>,
) -> Result<&'c Value, EvalError> {
    if let Code::Const(v) = code {
        if frame.steps_left == 0 {
            return Err(EvalError::StepLimit(frame.limit));
        }
        frame.steps_left -= 1;
        return Ok(v);
    }
    Ok(slot.insert(eval(code, input, frame)?))
}

fn binary(
    op: BinOp,
    a: &Code,
    b: &Code,
    input: &dyn Input,
    frame: &mut Frame,
) -> Result<Value, EvalError> {
    // Short-circuit operators first.
    match op {
        BinOp::And => {
            return Ok(Value::Bool(
                eval(a, input, frame)?.is_true() && eval(b, input, frame)?.is_true(),
            ));
        }
        BinOp::Or => {
            return Ok(Value::Bool(
                eval(a, input, frame)?.is_true() || eval(b, input, frame)?.is_true(),
            ));
        }
        BinOp::Coalesce => {
            let l = eval(a, input, frame)?;
            return if l.is_null() {
                eval(b, input, frame)
            } else {
                Ok(l)
            };
        }
        _ => {}
    }
    // Comparisons read constants in place (`x == "R"`, `d in config.served_domains`): no
    // clone of the constant per evaluation. The step is counted as if it were evaluated.
    if matches!(
        op,
        BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge | BinOp::In
    ) {
        let (mut l_slot, mut r_slot) = (None, None);
        let l = operand(a, input, frame, &mut l_slot)?;
        let r = operand(b, input, frame, &mut r_slot)?;
        return Ok(Value::Bool(match op {
            BinOp::Eq => l == r,
            BinOp::Ne => l != r,
            BinOp::In => functions::contains(r, l),
            _ => {
                let ord = match (l, r) {
                    (Value::Int(x), Value::Int(y)) => x.cmp(y),
                    (Value::Str(x), Value::Str(y)) => x.cmp(y),
                    _ => return Ok(Value::Bool(false)),
                };
                match op {
                    BinOp::Lt => ord.is_lt(),
                    BinOp::Le => ord.is_le(),
                    BinOp::Gt => ord.is_gt(),
                    _ => ord.is_ge(),
                }
            }
        }));
    }
    let l = eval(a, input, frame)?;
    let r = eval(b, input, frame)?;
    Ok(match op {
        BinOp::Add => match (l, r) {
            (Value::Int(x), Value::Int(y)) => Value::Int(x.checked_add(y).ok_or_else(overflow)?),
            (Value::List(x), Value::List(y)) => {
                Value::List(x.iter().chain(y.iter()).cloned().collect())
            }
            (Value::Null, _) | (_, Value::Null) => Value::Null,
            (x, y) => {
                let mut out = String::new();
                push_text(&mut out, &x);
                push_text(&mut out, &y);
                Value::str(out)
            }
        },
        BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem => {
            let (Value::Int(x), Value::Int(y)) = (l, r) else {
                return Ok(Value::Null);
            };
            Value::Int(
                match op {
                    BinOp::Sub => x.checked_sub(y),
                    BinOp::Mul => x.checked_mul(y),
                    BinOp::Div => x.checked_div(y),
                    _ => x.checked_rem(y),
                }
                .ok_or_else(|| {
                    if y == 0 {
                        EvalError::DivisionByZero
                    } else {
                        overflow()
                    }
                })?,
            )
        }
        BinOp::And
        | BinOp::Or
        | BinOp::Coalesce
        | BinOp::Match
        | BinOp::NotMatch
        | BinOp::Eq
        | BinOp::Ne
        | BinOp::Lt
        | BinOp::Le
        | BinOp::Gt
        | BinOp::Ge
        | BinOp::In => unreachable!("handled before"),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::dsl::compile::{Scope, compile};
    use crate::dsl::parser::parse_expression;
    use crate::dsl::value::Ty;

    struct S;
    impl Scope for S {
        fn field(&self, name: &str) -> Option<(u16, Ty)> {
            match name {
                "rcpt.local" => Some((0, Ty::Str)),
                "n" => Some((1, Ty::Int)),
                "absent" => Some((2, Ty::Str)),
                _ => None,
            }
        }
        fn field_fn(&self, name: &str) -> Option<(u16, Ty, bool)> {
            (name == "mail.header").then_some((0, Ty::Str, true))
        }
        fn constant(&self, name: &str) -> Option<Value> {
            (name == "config.limit").then_some(Value::Int(1300))
        }
        fn table(&self, name: &str) -> Option<Arc<BTreeMap<String, Value>>> {
            (name == "prio")
                .then(|| Arc::new(BTreeMap::from([("1".to_string(), Value::str("urgent"))])))
        }
        fn captures(&self) -> bool {
            true
        }
        fn names(&self) -> Vec<String> {
            vec!["rcpt.local".into(), "n".into()]
        }
    }
    struct I;
    impl Input for I {
        fn field(&self, slot: u16) -> Value {
            match slot {
                0 => Value::str("+15551234567"),
                1 => Value::Int(7),
                _ => Value::Null,
            }
        }
        fn field_fn(&self, _: u16, arg: &str) -> Value {
            if arg == "x-priority" {
                Value::str("1 (Highest)")
            } else {
                Value::Null
            }
        }
    }

    fn run(src: &str) -> Value {
        let e = parse_expression(src).unwrap();
        let (code, _) = compile(&e, &S).unwrap_or_else(|e| panic!("{src}: {e:?}"));
        eval(&code, &I, &mut Frame::new(1000)).unwrap()
    }

    #[test]
    fn table() {
        let cases: Vec<(&str, Value)> = vec![
            (
                "rcpt.local ~ /^\\+([0-9]+)$/ and match[1] == \"15551234567\"",
                Value::Bool(true),
            ),
            ("absent ?? \"d\"", Value::str("d")),
            ("lower(absent) ?? \"d\"", Value::str("d")),
            ("n * 2 + 1", Value::Int(15)),
            ("n > 3 and not (n > 10)", Value::Bool(true)),
            (
                "if n == 7 then \"seven\" else \"other\"",
                Value::str("seven"),
            ),
            ("\"a\" in [\"a\", \"b\"]", Value::Bool(true)),
            (
                "lookup(\"prio\", capture(mail.header(\"X-Priority\"), /^\\s*([0-9])/))",
                Value::str("urgent"),
            ),
            ("{\"high\": \"urgent\"}[\"high\"]", Value::str("urgent")),
            ("config.limit", Value::Int(1300)),
            ("\"tel:${rcpt.local}\"", Value::str("tel:+15551234567")),
            ("[1, 2][5] ?? 0", Value::Int(0)),
        ];
        for (src, want) in cases {
            assert_eq!(run(src), want, "{src}");
        }
    }

    #[test]
    fn compile_errors() {
        let cases = [
            (
                "rcpt.locl",
                "unknown field `rcpt.locl` (did you mean `rcpt.local`?)",
            ),
            ("lowr(n)", "unknown function `lowr` (did you mean `lower`?)"),
            (
                "lower(n)",
                "argument 1 of lower() must be string, found int",
            ),
            (
                "lower(\"a\", \"b\")",
                "lower() takes 1 argument(s), found 2",
            ),
            ("rcpt.local ~ /(/", "invalid regex"),
            ("mail.header(\"Bad Name\")", "not a valid header name"),
            ("lookup(\"nope\", \"x\")", "unknown table `nope`"),
            (
                "n and true",
                "the left side of `and` must be bool, found int",
            ),
            ("rcpt.local ~ \"x\"", "must be a /regex/ literal"),
        ];
        for (src, want) in cases {
            let e = parse_expression(src).unwrap();
            let errs = compile(&e, &S).unwrap_err();
            assert!(errs[0].message.contains(want), "{src}: {:?}", errs);
        }
    }

    #[test]
    fn runtime_errors_say_what_went_wrong() {
        let cases = [
            ("n / 0", EvalError::DivisionByZero, "division by zero"),
            (
                "n * 9223372036854775807",
                EvalError::Overflow,
                "integer overflow",
            ),
            (
                "split(rcpt.local, \"\")",
                EvalError::Builtin {
                    name: "split",
                    error: functions::FnError::EmptySeparator,
                },
                "split(): split() with an empty separator",
            ),
            (
                "len(true)",
                EvalError::Builtin {
                    name: "len",
                    error: functions::FnError::NoLength("bool"),
                },
                "len(): len() of a bool",
            ),
        ];
        for (src, want, text) in cases {
            let e = parse_expression(src).unwrap();
            let (code, _) = compile(&e, &S).unwrap_or_else(|e| panic!("{src}: {e:?}"));
            let got = eval(&code, &I, &mut Frame::new(1000)).unwrap_err();
            assert_eq!(got, want, "{src}");
            assert_eq!(got.to_string(), text, "{src}");
        }
    }

    /// Constant sub-expressions are folded when compiled; the rest evaluate as before.
    #[test]
    fn constants_fold_when_compiled() {
        let code = |src: &str| compile(&parse_expression(src).unwrap(), &S).unwrap().0;
        let folded = [
            ("\"a${config.limit}b\"", Value::str("a1300b")),
            ("[1, 2][5] ?? 0", Value::Int(0)),
            ("4 * config.limit", Value::Int(5200)),
            ("lookup(\"prio\", \"1\")", Value::str("urgent")),
            ("upper(\"x\") + \"y\"", Value::str("Xy")),
        ];
        for (src, want) in folded {
            assert!(matches!(code(src), Code::Const(v) if v == want), "{src}");
            assert_eq!(run(src), want, "{src}");
        }
        // Still evaluated per input: fields, `~` (it sets `match`), and a failing operation
        // (its error stays a run-time error).
        for src in [
            "rcpt.local ~ /^x/",
            "\"tel:${rcpt.local}\"",
            "n / 0",
            "if n == 7 then \"a\" else \"b\"",
        ] {
            assert!(!matches!(code(src), Code::Const(_)), "{src}");
        }
        assert!(matches!(
            code("if true then rcpt.local else \"x\""),
            Code::Field(0)
        ));
    }

    #[test]
    fn step_limit() {
        let e = parse_expression("n + n + n + n + n + n").unwrap();
        let (code, _) = compile(&e, &S).unwrap();
        assert_eq!(
            eval(&code, &I, &mut Frame::new(3)),
            Err(EvalError::StepLimit(3))
        );
    }
}
