//! pest parser → owned AST. Operator precedence by pest's Pratt parser; pest rule names are
//! renamed into words people read in syntax errors.

use std::sync::LazyLock;

use pest::Parser as _;
use pest::iterators::Pair;
use pest::pratt_parser::{Assoc, Op, PrattParser};

use super::ast::{BinOp, Expr, ExprKind, Part, Span, UnaryOp};

#[derive(pest_derive::Parser)]
#[grammar = "grammar/dsl.pest"]
struct DslParser;

/// A syntax error: where, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub at: usize,
    pub message: String,
}

static PRATT: LazyLock<PrattParser<Rule>> = LazyLock::new(|| {
    PrattParser::new()
        .op(Op::infix(Rule::coalesce, Assoc::Right))
        .op(Op::infix(Rule::or_op, Assoc::Left))
        .op(Op::infix(Rule::and_op, Assoc::Left))
        .op(Op::prefix(Rule::not_op))
        .op(Op::infix(Rule::eq, Assoc::Left)
            | Op::infix(Rule::ne, Assoc::Left)
            | Op::infix(Rule::lt, Assoc::Left)
            | Op::infix(Rule::le, Assoc::Left)
            | Op::infix(Rule::gt, Assoc::Left)
            | Op::infix(Rule::ge, Assoc::Left)
            | Op::infix(Rule::rmatch, Assoc::Left)
            | Op::infix(Rule::nmatch, Assoc::Left)
            | Op::infix(Rule::in_op, Assoc::Left))
        .op(Op::infix(Rule::add, Assoc::Left) | Op::infix(Rule::sub, Assoc::Left))
        .op(Op::infix(Rule::mul, Assoc::Left)
            | Op::infix(Rule::div, Assoc::Left)
            | Op::infix(Rule::rem, Assoc::Left))
        .op(Op::prefix(Rule::neg_op))
});

/// Maximum nesting depth accepted, so that deeply nested input cannot exhaust the stack.
const MAX_DEPTH: usize = 64;

/// Parses a whole expression (a `when:` value).
pub fn parse_expression(src: &str) -> Result<Expr, SyntaxError> {
    check_depth(src)?;
    let mut pairs = DslParser::parse(Rule::expression, src).map_err(convert)?;
    let top = pairs.next().expect("expression rule always yields a pair");
    let inner = top.into_inner().next().expect("expression holds expr");
    Ok(build_expr(inner))
}

/// Parses a template (an action value): literal text with `${expr}` parts.
pub fn parse_template(src: &str) -> Result<Vec<Part>, SyntaxError> {
    check_depth(src)?;
    let mut pairs = DslParser::parse(Rule::template, src).map_err(convert)?;
    let top = pairs.next().expect("template rule always yields a pair");
    Ok(top
        .into_inner()
        .filter(|p| p.as_rule() != Rule::EOI)
        .map(build_part)
        .collect())
}

/// Rejects inputs nested deeper than [`MAX_DEPTH`] before pest recurses into them.
fn check_depth(src: &str) -> Result<(), SyntaxError> {
    let mut depth = 0usize;
    for (i, b) in src.bytes().enumerate() {
        match b {
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(SyntaxError {
                        at: i,
                        message: format!("nesting deeper than {MAX_DEPTH} levels"),
                    });
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    // Prefix chains (`not not not ...`, `- - -`) recurse too.
    if src.matches("not").count() > MAX_DEPTH * 4 || src.matches('-').count() > MAX_DEPTH * 16 {
        return Err(SyntaxError {
            at: 0,
            message: "expression too complex".into(),
        });
    }
    Ok(())
}

fn span(p: &Pair<Rule>) -> Span {
    let s = p.as_span();
    Span {
        start: s.start(),
        end: s.end(),
    }
}

fn build_expr(pair: Pair<Rule>) -> Expr {
    PRATT
        .map_primary(build_postfix)
        .map_prefix(|op, rhs| {
            let span = Span {
                start: op.as_span().start(),
                end: rhs.span.end,
            };
            let op = match op.as_rule() {
                Rule::not_op => UnaryOp::Not,
                _ => UnaryOp::Neg,
            };
            Expr {
                kind: ExprKind::Unary(op, Box::new(rhs)),
                span,
            }
        })
        .map_infix(|lhs, op, rhs| {
            let op = match op.as_rule() {
                Rule::coalesce => BinOp::Coalesce,
                Rule::or_op => BinOp::Or,
                Rule::and_op => BinOp::And,
                Rule::eq => BinOp::Eq,
                Rule::ne => BinOp::Ne,
                Rule::lt => BinOp::Lt,
                Rule::le => BinOp::Le,
                Rule::gt => BinOp::Gt,
                Rule::ge => BinOp::Ge,
                Rule::rmatch => BinOp::Match,
                Rule::nmatch => BinOp::NotMatch,
                Rule::in_op => BinOp::In,
                Rule::add => BinOp::Add,
                Rule::sub => BinOp::Sub,
                Rule::mul => BinOp::Mul,
                Rule::div => BinOp::Div,
                _ => BinOp::Rem,
            };
            let span = Span {
                start: lhs.span.start,
                end: rhs.span.end,
            };
            Expr {
                kind: ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)),
                span,
            }
        })
        .parse(pair.into_inner())
}

fn build_postfix(pair: Pair<Rule>) -> Expr {
    let mut inner = pair.into_inner();
    let mut e = build_primary(inner.next().expect("postfix_expr has a primary"));
    for idx in inner {
        let s = span(&idx);
        let key = build_expr(idx.into_inner().next().expect("index holds expr"));
        e = Expr {
            span: Span {
                start: e.span.start,
                end: s.end,
            },
            kind: ExprKind::Index(Box::new(e), Box::new(key)),
        };
    }
    e
}

fn build_primary(pair: Pair<Rule>) -> Expr {
    let s = span(&pair);
    let kind = match pair.as_rule() {
        Rule::expr => return build_expr(pair),
        Rule::conditional => {
            let mut it = pair.into_inner().filter(|p| p.as_rule() == Rule::expr);
            let c = build_expr(it.next().expect("if cond"));
            let a = build_expr(it.next().expect("then"));
            let b = build_expr(it.next().expect("else"));
            ExprKind::If(Box::new(c), Box::new(a), Box::new(b))
        }
        Rule::integer => match pair.as_str().parse::<i64>() {
            Ok(n) => ExprKind::Int(n),
            // Out of range: keep it visible to the compiler as an error.
            Err(_) => ExprKind::Call {
                name: "<integer too large>".into(),
                name_span: s,
                args: vec![],
            },
        },
        Rule::boolean => ExprKind::Bool(pair.as_str() == "true"),
        Rule::null => ExprKind::Null,
        Rule::string => ExprKind::Str(pair.into_inner().map(build_part).collect()),
        Rule::regex => {
            let mut it = pair.into_inner();
            let source = it.next().map(|p| p.as_str()).unwrap_or("");
            let flags = it.next().map(|p| p.as_str()).unwrap_or("");
            ExprKind::Regex {
                source: source.replace("\\/", "/"),
                flags: flags.to_string(),
            }
        }
        Rule::call => {
            let mut it = pair.into_inner();
            let name_pair = it.next().expect("call has a name");
            let name_span = span(&name_pair);
            ExprKind::Call {
                name: name_pair.as_str().to_string(),
                name_span,
                args: it.map(build_expr).collect(),
            }
        }
        Rule::path => ExprKind::Path(pair.as_str().to_string()),
        Rule::list => ExprKind::List(pair.into_inner().map(build_expr).collect()),
        Rule::map => ExprKind::Map(
            pair.into_inner()
                .map(|entry| {
                    let mut it = entry.into_inner();
                    let key = string_literal_text(it.next().expect("map key"));
                    let value = build_expr(it.next().expect("map value"));
                    (key, value)
                })
                .collect(),
        ),
        other => unreachable!("unexpected primary {other:?}"),
    };
    Expr { kind, span: s }
}

/// The text of a string literal used as a map key (interpolations are kept as written).
fn string_literal_text(pair: Pair<Rule>) -> String {
    let mut out = String::new();
    for p in pair.into_inner() {
        match build_part(p) {
            Part::Text(t) => out.push_str(&t),
            Part::Expr(e) => out.push_str(&format!("${{{:?}}}", e.kind)),
        }
    }
    out
}

fn build_part(pair: Pair<Rule>) -> Part {
    match pair.as_rule() {
        Rule::interpolation => Part::Expr(build_expr(
            pair.into_inner().next().expect("interpolation holds expr"),
        )),
        Rule::escape => Part::Text(
            match &pair.as_str()[1..] {
                "n" => "\n",
                "t" => "\t",
                "r" => "\r",
                other => other,
            }
            .to_string(),
        ),
        Rule::template_text => Part::Text(pair.as_str().replace("$$", "$")),
        _ => Part::Text(pair.as_str().to_string()),
    }
}

/// Rule names as words people read.
fn rule_word(r: &Rule) -> &'static str {
    match r {
        Rule::EOI => "end of expression",
        Rule::expr | Rule::postfix_expr | Rule::primary => "an expression",
        Rule::coalesce
        | Rule::or_op
        | Rule::and_op
        | Rule::eq
        | Rule::ne
        | Rule::le
        | Rule::ge
        | Rule::lt
        | Rule::gt
        | Rule::nmatch
        | Rule::rmatch
        | Rule::in_op
        | Rule::add
        | Rule::sub
        | Rule::mul
        | Rule::div
        | Rule::rem => "an operator",
        Rule::not_op | Rule::neg_op => "`not` or `-`",
        Rule::index => "`[`",
        Rule::conditional | Rule::kw_if => "`if`",
        Rule::kw_then => "`then`",
        Rule::kw_else => "`else`",
        Rule::call => "a function call",
        Rule::path | Rule::dotted | Rule::ident => "a name",
        Rule::list => "a list",
        Rule::map => "a map",
        Rule::map_entry => "a `\"key\": value` entry",
        Rule::integer => "a number",
        Rule::boolean => "`true`/`false`",
        Rule::null => "`null`",
        Rule::regex | Rule::regex_body | Rule::regex_flags => "a regex",
        Rule::string | Rule::string_text => "a string",
        Rule::escape => "an escape (\\\" \\\\ \\n \\t \\r \\$)",
        Rule::interpolation => "`${`",
        Rule::template_text => "text",
        _ => "something else",
    }
}

fn convert(e: pest::error::Error<Rule>) -> SyntaxError {
    use pest::error::{ErrorVariant, InputLocation};
    let at = match e.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    let message = match &e.variant {
        ErrorVariant::ParsingError {
            positives,
            negatives,
        } => {
            let mut words: Vec<&str> = positives.iter().map(rule_word).collect();
            words.sort();
            words.dedup();
            if words.is_empty() {
                let mut n: Vec<&str> = negatives.iter().map(rule_word).collect();
                n.dedup();
                format!("unexpected {}", n.join(" or "))
            } else {
                format!("expected {}", words.join(" or "))
            }
        }
        ErrorVariant::CustomError { message } => message.clone(),
    };
    SyntaxError { at, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(src: &str) -> String {
        fn s(e: &Expr) -> String {
            match &e.kind {
                ExprKind::Binary(op, a, b) => format!("({} {} {})", s(a), op.symbol(), s(b)),
                ExprKind::Unary(UnaryOp::Not, a) => format!("(not {})", s(a)),
                ExprKind::Unary(UnaryOp::Neg, a) => format!("(-{})", s(a)),
                ExprKind::Path(p) => p.clone(),
                ExprKind::Int(n) => n.to_string(),
                ExprKind::Call { name, args, .. } => {
                    format!(
                        "{name}({})",
                        args.iter().map(s).collect::<Vec<_>>().join(", ")
                    )
                }
                ExprKind::Index(a, b) => format!("{}[{}]", s(a), s(b)),
                ExprKind::If(c, a, b) => format!("if {} then {} else {}", s(c), s(a), s(b)),
                other => format!("{other:?}"),
            }
        }
        s(&parse_expression(src).unwrap())
    }

    #[test]
    fn precedence() {
        let table = [
            ("a or b and c", "(a or (b and c))"),
            ("not a and b", "((not a) and b)"),
            ("a ?? b ?? c", "(a ?? (b ?? c))"),
            ("1 + 2 * 3 == 7", "((1 + (2 * 3)) == 7)"),
            ("x in y or z", "((x in y) or z)"),
            ("-a + b", "((-a) + b)"),
            ("match[1]", "match[1]"),
            (
                "lower(mail.header(\"X\")) ?? 3",
                "(lower(mail.header(Str([Text(\"X\")]))) ?? 3)",
            ),
            ("if a then 1 else 2", "if a then 1 else 2"),
            ("inx and notx", "(inx and notx)"),
        ];
        for (src, want) in table {
            assert_eq!(show(src), want, "{src}");
        }
    }

    #[test]
    fn strings_and_regex() {
        let e = parse_expression(r#""tel:${x}\"" ~ /^a\/b$/i"#).unwrap();
        let ExprKind::Binary(BinOp::Match, a, b) = e.kind else {
            panic!()
        };
        assert_eq!(a.kind.clone(), {
            let ExprKind::Str(parts) = a.kind else {
                panic!()
            };
            ExprKind::Str(parts)
        });
        assert_eq!(
            b.kind,
            ExprKind::Regex {
                source: "^a/b$".into(),
                flags: "i".into()
            }
        );
    }

    #[test]
    fn templates() {
        let parts = parse_template("tel:${ x }; cost $$5").unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0], Part::Text("tel:".into()));
        assert_eq!(parts[2], Part::Text("; cost $5".into()));
        assert!(parse_template("").unwrap().is_empty());
    }

    #[test]
    fn errors_have_positions() {
        let e = parse_expression("a ==").unwrap_err();
        assert_eq!(e.at, 4);
        assert!(e.message.contains("expected"), "{}", e.message);
        let deep = "(".repeat(1000);
        assert!(parse_expression(&deep).is_err());
    }
}
