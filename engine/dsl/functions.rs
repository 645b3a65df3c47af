//! Built-in pure functions. Each has a signature checked at load; a string or integer
//! argument that is absent makes the result absent (so `??` can supply a default).

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::value::{Ty, Value};

/// A parameter or result kind in a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum P {
    Any,
    Bool,
    Int,
    Str,
    Regex,
    /// A string or a regex (e.g. the pattern of `replace`).
    StrOrRegex,
    List,
    /// A list of strings.
    StrList,
}

impl P {
    pub fn ty(self) -> Ty {
        match self {
            P::Any | P::StrOrRegex => Ty::Any,
            P::Bool => Ty::Bool,
            P::Int => Ty::Int,
            P::Str => Ty::Str,
            P::Regex => Ty::Regex,
            P::List => Ty::List(Box::new(Ty::Any)),
            P::StrList => Ty::List(Box::new(Ty::Str)),
        }
    }

    /// Whether an argument of static type `t` is acceptable.
    pub fn accepts(self, t: &Ty) -> bool {
        match self {
            P::StrOrRegex => matches!(t, Ty::Any | Ty::Str | Ty::Regex),
            P::Any => *t != Ty::Regex,
            _ => t.fits(&self.ty()) && (*t != Ty::Regex || self == P::Regex),
        }
    }
}

/// Why a built-in refused its arguments (what it expected, what it got). The evaluator
/// puts the function's name in front ([`super::EvalError::Builtin`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FnError {
    /// `len()` of a value that has no length (its type name).
    #[error("len() of a {0}")]
    NoLength(&'static str),
    #[error("split() with an empty separator")]
    EmptySeparator,
    #[error("join() needs a list")]
    JoinNeedsList,
    #[error("capture() needs a /regex/")]
    CaptureNeedsRegex,
    /// Unix seconds outside chrono's range.
    #[error("date out of range")]
    DateOutOfRange(i64),
}

/// A built-in function.
pub struct Builtin {
    pub name: &'static str,
    pub params: &'static [P],
    /// How many leading parameters are required (the rest are optional).
    pub required: usize,
    pub ret: P,
    /// Whether absent arguments are passed through instead of making the result absent.
    pub takes_null: bool,
    pub doc: &'static str,
    pub f: fn(&[Value]) -> Result<Value, FnError>,
}

macro_rules! builtin {
    ($name:literal, [$($p:ident),*], $req:expr, $ret:ident, $tn:expr, $doc:literal, $f:expr) => {
        Builtin { name: $name, params: &[$(P::$p),*], required: $req, ret: P::$ret, takes_null: $tn, doc: $doc, f: $f }
    };
}

/// `v` itself (sharing its buffer) when `unchanged` says the conversion would not change
/// it, else the converted text.
fn same_or(v: &Value, unchanged: fn(&str) -> bool, convert: fn(&str) -> String) -> Value {
    let x = s(v);
    if matches!(v, Value::Str(_)) && unchanged(x) {
        v.clone()
    } else {
        Value::str(convert(x))
    }
}

/// Every built-in, in the order the README documents them.
pub static BUILTINS: &[Builtin] = &[
    builtin!("lower", [Str], 1, Str, false, "lower case", |a| Ok(
        same_or(
            &a[0],
            |x| x.is_ascii() && !x.bytes().any(|b| b.is_ascii_uppercase()),
            str::to_lowercase
        )
    )),
    builtin!("upper", [Str], 1, Str, false, "upper case", |a| Ok(
        same_or(
            &a[0],
            |x| x.is_ascii() && !x.bytes().any(|b| b.is_ascii_lowercase()),
            str::to_uppercase
        )
    )),
    builtin!(
        "trim",
        [Str],
        1,
        Str,
        false,
        "strip surrounding white space",
        |a| Ok({
            let t = s(&a[0]).trim();
            if matches!(a[0], Value::Str(_)) && t.len() == s(&a[0]).len() {
                a[0].clone()
            } else {
                Value::str(t)
            }
        })
    ),
    builtin!(
        "len",
        [Any],
        1,
        Int,
        true,
        "characters of a string, items of a list or map; 0 when absent",
        |a| Ok(Value::Int(match &a[0] {
            Value::Null => 0,
            Value::Str(x) => x.chars().count() as i64,
            Value::List(l) => l.len() as i64,
            Value::Map(m) => m.len() as i64,
            other => return Err(FnError::NoLength(other.type_name())),
        }))
    ),
    builtin!(
        "replace",
        [Str, StrOrRegex, Str],
        3,
        Str,
        false,
        "replace every occurrence of a string or /regex/ (with $1 references)",
        |a| {
            let subject = s(&a[0]);
            Ok(Value::str(match &a[1] {
                Value::Regex(re) => re.0.replace_all(subject, s(&a[2])).into_owned(),
                other => subject.replace(s(other), s(&a[2])),
            }))
        }
    ),
    builtin!(
        "split",
        [Str, Str],
        2,
        StrList,
        false,
        "split on a separator",
        |a| {
            if s(&a[1]).is_empty() {
                return Err(FnError::EmptySeparator);
            }
            Ok(Value::list_of_str(s(&a[0]).split(s(&a[1]))))
        }
    ),
    builtin!(
        "join",
        [List, Str],
        2,
        Str,
        false,
        "join list items with a separator",
        |a| {
            let Value::List(items) = &a[0] else {
                return Err(FnError::JoinNeedsList);
            };
            Ok(Value::str(
                items
                    .iter()
                    .filter(|v| !v.is_null())
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join(s(&a[1])),
            ))
        }
    ),
    builtin!(
        "starts_with",
        [Str, Str],
        2,
        Bool,
        false,
        "prefix test",
        |a| Ok(Value::Bool(s(&a[0]).starts_with(s(&a[1]))))
    ),
    builtin!(
        "ends_with",
        [Str, Str],
        2,
        Bool,
        false,
        "suffix test",
        |a| Ok(Value::Bool(s(&a[0]).ends_with(s(&a[1]))))
    ),
    builtin!(
        "contains",
        [Any, Any],
        2,
        Bool,
        true,
        "substring or list membership (same as `in`, arguments swapped)",
        |a| Ok(Value::Bool(contains(&a[0], &a[1])))
    ),
    builtin!(
        "substr",
        [Str, Int, Int],
        2,
        Str,
        false,
        "characters from start (0-based), optionally at most count",
        |a| {
            let start = a[1].as_int().unwrap_or(0).max(0) as usize;
            let it = s(&a[0]).chars().skip(start);
            Ok(Value::str(match a.get(2).and_then(Value::as_int) {
                Some(n) => it.take(n.max(0) as usize).collect::<String>(),
                None => it.collect::<String>(),
            }))
        }
    ),
    builtin!(
        "first",
        [List],
        1,
        Any,
        false,
        "first item, absent for an empty list",
        |a| Ok(list(&a[0]).first().cloned().unwrap_or_default())
    ),
    builtin!(
        "last",
        [List],
        1,
        Any,
        false,
        "last item, absent for an empty list",
        |a| Ok(list(&a[0]).last().cloned().unwrap_or_default())
    ),
    builtin!(
        "unique",
        [List],
        1,
        List,
        false,
        "items without repeats, first occurrence kept",
        |a| {
            let mut out: Vec<Value> = Vec::new();
            for v in list(&a[0]) {
                if !out.contains(v) {
                    out.push(v.clone());
                }
            }
            Ok(Value::List(out.into()))
        }
    ),
    builtin!(
        "int",
        [Any],
        1,
        Int,
        false,
        "parse a decimal integer; absent if not a number",
        |a| Ok(match &a[0] {
            Value::Int(n) => Value::Int(*n),
            Value::Str(x) => x
                .trim()
                .parse::<i64>()
                .map(Value::Int)
                .unwrap_or(Value::Null),
            _ => Value::Null,
        })
    ),
    builtin!("str", [Any], 1, Str, false, "text form of a value", |a| Ok(
        Value::str(a[0].to_string())
    )),
    builtin!(
        "min",
        [Int, Int],
        2,
        Int,
        false,
        "smaller of two integers",
        |a| Ok(Value::Int(i(&a[0]).min(i(&a[1]))))
    ),
    builtin!(
        "max",
        [Int, Int],
        2,
        Int,
        false,
        "larger of two integers",
        |a| Ok(Value::Int(i(&a[0]).max(i(&a[1]))))
    ),
    builtin!(
        "capture",
        [Str, Regex, Int],
        2,
        Str,
        false,
        "group n (default 1) of the first match; absent if no match",
        |a| {
            let Value::Regex(re) = &a[1] else {
                return Err(FnError::CaptureNeedsRegex);
            };
            let n = a.get(2).and_then(Value::as_int).unwrap_or(1).max(0) as usize;
            Ok(Value::opt_str(
                re.0.captures(s(&a[0]))
                    .and_then(|c| c.get(n))
                    .map(|m| m.as_str()),
            ))
        }
    ),
    builtin!(
        "local_part",
        [Str],
        1,
        Str,
        false,
        "the part of an address before the last @",
        |a| Ok(Value::str(split_addr(s(&a[0])).0))
    ),
    builtin!(
        "domain",
        [Str],
        1,
        Str,
        false,
        "the part of an address after the last @, lower case",
        |a| Ok(Value::str(split_addr(s(&a[0])).1.to_ascii_lowercase()))
    ),
    builtin!(
        "tel",
        [Str],
        1,
        Str,
        false,
        "a global tel: URI from an E.164 number (visual separators removed); absent if not E.164",
        |a| Ok(tel(s(&a[0])))
    ),
    builtin!(
        "sip",
        [Str, Str],
        2,
        Str,
        false,
        "sip:user@host with the user part percent-encoded (RFC 3261 §25.1)",
        |a| {
            let (user, host) = (s(&a[0]), s(&a[1]));
            let mut out = String::with_capacity(5 + user.len() + host.len());
            out.push_str("sip:");
            encode_into(&mut out, user, is_user_char);
            out.push('@');
            out.push_str(host);
            Ok(Value::str(out))
        }
    ),
    builtin!(
        "pct",
        [Str],
        1,
        Str,
        false,
        "percent-encode everything but RFC 3986 unreserved characters",
        |a| Ok(Value::str(pct(s(&a[0]))))
    ),
    builtin!(
        "unpct",
        [Str],
        1,
        Str,
        false,
        "percent-decode (RFC 3986 §2.1); absent when the result is not UTF-8",
        |a| Ok(
            match percent_encoding::percent_decode_str(s(&a[0])).decode_utf8() {
                Ok(d) => Value::str(d.into_owned()),
                Err(_) => Value::Null,
            }
        )
    ),
    builtin!(
        "quote",
        [Str],
        1,
        Str,
        false,
        "a quoted-string with \" and \\ escaped",
        |a| Ok(Value::str(
            crate::render::encoder::Quoted(s(&a[0])).to_string()
        ))
    ),
    builtin!(
        "name_addr",
        [Str, Str],
        2,
        Str,
        true,
        "`\"Display Name\" <uri>`, or `<uri>` when the name is absent or empty",
        |a| {
            let uri = match &a[1] {
                Value::Str(u) => u.clone(),
                _ => return Ok(Value::Null),
            };
            Ok(Value::str({
                let name = a[0].as_str().map(str::trim).filter(|n| !n.is_empty());
                let mut out = String::with_capacity(uri.len() + name.map_or(2, |n| n.len() + 8));
                if let Some(n) = name {
                    use std::fmt::Write;
                    let _ = write!(out, "{} ", crate::render::encoder::Quoted(n));
                }
                out.push('<');
                out.push_str(&uri);
                out.push('>');
                out
            }))
        }
    ),
    builtin!(
        "sip_date",
        [Int],
        1,
        Str,
        false,
        "RFC 1123 date in GMT for SIP Date (RFC 3261 §20.17) from Unix seconds",
        |a| {
            let t = date(i(&a[0]))?;
            Ok(Value::str(rfc1123(&t, "GMT")))
        }
    ),
    builtin!(
        "iso_date",
        [Int],
        1,
        Str,
        false,
        "RFC 3339 date in UTC (CPIM DateTime) from Unix seconds",
        |a| {
            let t = date(i(&a[0]))?;
            Ok(Value::str(iso(&t)))
        }
    ),
    builtin!(
        "mail_date",
        [Int],
        1,
        Str,
        false,
        "RFC 5322 §3.3 date in UTC (`Fri, 21 Nov 2025 14:03:07 +0000`) from Unix seconds",
        |a| {
            let t = date(i(&a[0]))?;
            Ok(Value::str(rfc1123(&t, "+0000")))
        }
    ),
];

impl std::fmt::Debug for Builtin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}()", self.name)
    }
}

pub fn find(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name)
}

/// The UTC time of Unix seconds `secs`.
fn date(secs: i64) -> Result<DateTime<Utc>, FnError> {
    DateTime::<Utc>::from_timestamp(secs, 0).ok_or(FnError::DateOutOfRange(secs))
}

/// `%a, %d %b %Y %H:%M:%S <zone>`, written directly: the same text as chrono's `format`,
/// without parsing the pattern for every mail (a SIP Date per request).
fn rfc1123(t: &DateTime<Utc>, zone: &str) -> String {
    use chrono::{Datelike, Timelike};
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    if !(0..=9999).contains(&t.year()) {
        return t
            .format(&format!("%a, %d %b %Y %H:%M:%S {zone}"))
            .to_string();
    }
    let mut out = String::with_capacity(26 + zone.len());
    out.push_str(DAYS[t.weekday().num_days_from_monday() as usize]);
    out.push_str(", ");
    push_digits(&mut out, t.day(), 2);
    out.push(' ');
    out.push_str(MONTHS[t.month0() as usize]);
    out.push(' ');
    push_digits(&mut out, t.year() as u32, 4);
    out.push(' ');
    push_time(&mut out, t.hour(), t.minute(), t.second());
    out.push(' ');
    out.push_str(zone);
    out
}

/// `%Y-%m-%dT%H:%M:%SZ`, written directly (see [`rfc1123`]).
fn iso(t: &DateTime<Utc>) -> String {
    use chrono::{Datelike, Timelike};
    if !(0..=9999).contains(&t.year()) {
        return t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    }
    let mut out = String::with_capacity(20);
    push_digits(&mut out, t.year() as u32, 4);
    out.push('-');
    push_digits(&mut out, t.month(), 2);
    out.push('-');
    push_digits(&mut out, t.day(), 2);
    out.push('T');
    push_time(&mut out, t.hour(), t.minute(), t.second());
    out.push('Z');
    out
}

fn push_time(out: &mut String, h: u32, m: u32, s: u32) {
    push_digits(out, h, 2);
    out.push(':');
    push_digits(out, m, 2);
    out.push(':');
    push_digits(out, s, 2);
}

/// `n` in exactly `width` decimal digits (zero-padded; `n` has at most `width` digits).
fn push_digits(out: &mut String, n: u32, width: u32) {
    for k in (0..width).rev() {
        out.push(char::from(b'0' + (n / 10u32.pow(k) % 10) as u8));
    }
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn i(v: &Value) -> i64 {
    v.as_int().unwrap_or(0)
}

fn list(v: &Value) -> &[Value] {
    match v {
        Value::List(l) => l,
        _ => &[],
    }
}

/// `needle in haystack`: substring, list item or map key.
pub fn contains(haystack: &Value, needle: &Value) -> bool {
    match (haystack, needle) {
        (Value::Str(h), Value::Str(n)) => h.contains(&**n),
        (Value::List(l), n) => l.iter().any(|x| x == n),
        (Value::Map(m), Value::Str(k)) => m.contains_key(&**k),
        _ => false,
    }
}

fn split_addr(a: &str) -> (&str, &str) {
    match a.rfind('@') {
        Some(at) => (&a[..at], &a[at + 1..]),
        None => (a, ""),
    }
}

fn tel(number: &str) -> Value {
    let separator = |c: char| matches!(c, '-' | '.' | '(' | ')' | ' ');
    // The number without visual separators, then without one leading `+`: only digits
    // remain in a valid one, so it is checked and copied byte by byte, without an
    // intermediate string.
    let mut chars = number.chars().filter(|&c| !separator(c)).peekable();
    if chars.peek() == Some(&'+') {
        chars.next();
    }
    let mut out = String::with_capacity(5 + number.len());
    out.push_str("tel:+");
    for c in chars {
        if !c.is_ascii_digit() {
            return Value::Null;
        }
        out.push(c);
    }
    let digits = &out[5..];
    if (7..=15).contains(&digits.len()) && !digits.starts_with('0') {
        Value::str(out)
    } else {
        Value::Null
    }
}

/// RFC 3986 unreserved characters stay, everything else is %XX (UTF-8 bytes).
pub fn pct(s: &str) -> String {
    encode(s, |b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// RFC 3261 `user` characters (unreserved / user-unreserved) stay; `@`, `:` etc. are escaped.
pub fn pct_user(s: &str) -> String {
    encode(s, is_user_char)
}

fn is_user_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,;?/".contains(&b)
}

fn encode(s: &str, keep: impl Fn(u8) -> bool) -> String {
    let mut out = String::with_capacity(s.len());
    encode_into(&mut out, s, keep);
    out
}

/// Appends `s` to `out`, every byte `keep` refuses written as `%XX` (upper-case hex).
fn encode_into(out: &mut String, s: &str, keep: impl Fn(u8) -> bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        if keep(b) {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
}

/// A compiled regex value (compared by source).
#[derive(Debug, Clone)]
pub struct Re(pub Arc<regex::Regex>);

impl PartialEq for Re {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, args: Vec<Value>) -> Value {
        (find(name).unwrap().f)(&args).unwrap()
    }

    /// The hand-written date texts are chrono's `format` of the same pattern, for dates
    /// across the range (leap days, year bounds, every weekday and month, single digits).
    #[test]
    fn dates_are_what_strftime_writes() {
        let mut secs: Vec<i64> = vec![
            0,
            1,
            59,
            86_399,
            951_782_400,     // 2000-02-29
            1_763_733_787,   // 2025-11-21 14:03:07
            253_402_300_799, // 9999-12-31 23:59:59
            -62_167_219_200, // 0000-01-01
            -62_167_219_201, // -0001-12-31: chrono's own text
            253_402_300_800, // 10000-01-01: chrono's own text
        ];
        let mut x: i64 = 12345;
        for _ in 0..2000 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            secs.push((x >> 20) % 253_402_300_800);
        }
        for t in secs {
            let d = date(t).unwrap();
            assert_eq!(
                rfc1123(&d, "GMT"),
                d.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
            );
            assert_eq!(
                rfc1123(&d, "+0000"),
                d.format("%a, %d %b %Y %H:%M:%S +0000").to_string()
            );
            assert_eq!(iso(&d), d.format("%Y-%m-%dT%H:%M:%SZ").to_string());
        }
    }

    #[test]
    fn table() {
        let st = |x: &str| Value::str(x);
        let cases: Vec<(&str, Vec<Value>, Value)> = vec![
            ("tel", vec![st("+1 (555) 123-4567")], st("tel:+15551234567")),
            ("tel", vec![st("15551234567")], st("tel:+15551234567")),
            ("tel", vec![st("alice")], Value::Null),
            ("tel", vec![st("+0123456789")], Value::Null),
            ("tel", vec![st("(+1) 555.123.4567")], st("tel:+15551234567")),
            ("tel", vec![st("++15551234567")], Value::Null),
            ("tel", vec![st("+123456")], Value::Null),
            ("tel", vec![st("+1234567")], st("tel:+1234567")),
            ("tel", vec![st("1234567890123456")], Value::Null),
            ("tel", vec![st("+1555123456\u{e9}")], Value::Null),
            ("tel", vec![st("")], Value::Null),
            (
                "sip",
                vec![st("j\u{fc}rg:x y"), st("iwf.example.net")],
                st("sip:j%C3%BCrg%3Ax%20y@iwf.example.net"),
            ),
            ("pct", vec![st("\u{e9}~")], st("%C3%A9~")),
            (
                "sip",
                vec![st("alice@mail.example.org"), st("iwf.example.net")],
                st("sip:alice%40mail.example.org@iwf.example.net"),
            ),
            ("pct", vec![st("a b@c")], st("a%20b%40c")),
            (
                "sip_date",
                vec![Value::Int(1763733787)],
                st("Fri, 21 Nov 2025 14:03:07 GMT"),
            ),
            (
                "iso_date",
                vec![Value::Int(1763733787)],
                st("2025-11-21T14:03:07Z"),
            ),
            (
                "name_addr",
                vec![st("Alice \"A\""), st("sip:a@b")],
                st("\"Alice \\\"A\\\"\" <sip:a@b>"),
            ),
            (
                "name_addr",
                vec![Value::Null, st("sip:a@b")],
                st("<sip:a@b>"),
            ),
            ("len", vec![st("äb")], Value::Int(2)),
            ("len", vec![Value::Null], Value::Int(0)),
            (
                "split",
                vec![st("a,b"), st(",")],
                Value::list_of_str(["a", "b"]),
            ),
            (
                "join",
                vec![Value::list_of_str(["a", "b"]), st(", ")],
                st("a, b"),
            ),
            ("int", vec![st(" 42 ")], Value::Int(42)),
            ("int", vec![st("4x")], Value::Null),
            (
                "substr",
                vec![st("hello"), Value::Int(1), Value::Int(3)],
                st("ell"),
            ),
            ("domain", vec![st("a@Example.ORG")], st("example.org")),
            ("local_part", vec![st("+1555@x")], st("+1555")),
        ];
        for (name, args, want) in cases {
            assert_eq!(call(name, args.clone()), want, "{name}({args:?})");
        }
    }
}
