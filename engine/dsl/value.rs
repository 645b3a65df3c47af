//! Runtime values and static types of the rule language.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// A value. Every type may also be absent ([`Value::Null`]); `??` supplies a fallback.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    #[default]
    Null,
    Bool(bool),
    Int(i64),
    Str(Str),
    List(Arc<[Value]>),
    Map(Arc<BTreeMap<String, Value>>),
    /// A compiled `/regex/` literal (only as an argument or the right side of `~`).
    Regex(super::functions::Re),
}

impl Value {
    pub fn str(s: impl Into<Str>) -> Value {
        Value::Str(s.into())
    }

    pub fn opt_str(s: Option<impl Into<Str>>) -> Value {
        s.map(|s| Value::Str(s.into())).unwrap_or(Value::Null)
    }

    pub fn list_of_str<I, S>(items: I) -> Value
    where
        I: IntoIterator<Item = S>,
        S: Into<Str>,
    {
        Value::List(items.into_iter().map(|s| Value::Str(s.into())).collect())
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Truthiness used by `when:`, `and`, `or`, `not`, `if`: only `true` is true.
    pub fn is_true(&self) -> bool {
        matches!(self, Value::Bool(true))
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            _ => None,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Str(_) => "string",
            Value::List(_) => "list",
            Value::Map(_) => "map",
            Value::Regex(_) => "regex",
        }
    }

    /// Converts a YAML/JSON value from a rule-set file (settings, tables).
    pub fn from_json(v: &serde_json::Value) -> Value {
        match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => n
                .as_i64()
                .map(Value::Int)
                .unwrap_or_else(|| Value::str(n.to_string())),
            serde_json::Value::String(s) => Value::str(s.as_str()),
            serde_json::Value::Array(a) => Value::List(a.iter().map(Value::from_json).collect()),
            serde_json::Value::Object(o) => Value::Map(Arc::new(
                o.iter()
                    .map(|(k, v)| (k.clone(), Value::from_json(v)))
                    .collect(),
            )),
        }
    }

    /// The static type of a constant.
    pub fn ty(&self) -> Ty {
        match self {
            Value::Null => Ty::Any,
            Value::Bool(_) => Ty::Bool,
            Value::Int(_) => Ty::Int,
            Value::Str(_) => Ty::Str,
            Value::List(items) => Ty::List(Box::new(common_ty(items.iter().map(Value::ty)))),
            Value::Map(m) => Ty::Map(Box::new(common_ty(m.values().map(Value::ty)))),
            Value::Regex(_) => Ty::Regex,
        }
    }
}

/// Text form used when a value is interpolated into a template.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => Ok(()),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(n) => write!(f, "{n}"),
            Value::Str(s) => f.write_str(s),
            Value::List(items) => {
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                Ok(())
            }
            Value::Map(m) => {
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}={v}")?;
                }
                Ok(())
            }
            Value::Regex(re) => write!(f, "/{}/", re.0.as_str()),
        }
    }
}

/// The text of a string value: its own shared buffer, or a slice of a buffer someone else
/// holds (the received mail, for a `mail.text` that needed no decoding), so that a 10 MB
/// body is not copied to be read by the rules. Compares, orders and prints as its text.
#[derive(Clone)]
pub struct Str(Text);

#[derive(Clone)]
enum Text {
    Own(Arc<str>),
    /// Exactly the octets of a `&str` (checked where it is made): valid UTF-8. Boxed so that
    /// a `Value` stays 24 bytes (a bare `Bytes` made it 40, and the evaluator moves values).
    Slice(Box<bytes::Bytes>),
}

impl Str {
    /// `text` without a copy when it lies inside `owner` (a slice of it); `None` when not.
    pub fn within(owner: &bytes::Bytes, text: &str) -> Option<Str> {
        let (start, end) = (
            owner.as_ptr() as usize,
            owner.as_ptr() as usize + owner.len(),
        );
        let at = text.as_ptr() as usize;
        (start <= at && at + text.len() <= end)
            .then(|| Str(Text::Slice(Box::new(owner.slice_ref(text.as_bytes())))))
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            Text::Own(s) => s,
            // SAFETY: a `Slice` holds exactly the octets of a `&str` (`Str::within`), and
            // `Bytes` never changes its octets: they are valid UTF-8.
            Text::Slice(b) => unsafe { std::str::from_utf8_unchecked(b) },
        }
    }
}

impl std::ops::Deref for Str {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Str {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for Str {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl From<Arc<str>> for Str {
    fn from(s: Arc<str>) -> Str {
        Str(Text::Own(s))
    }
}

impl From<&str> for Str {
    fn from(s: &str) -> Str {
        Str(Text::Own(s.into()))
    }
}

impl From<String> for Str {
    fn from(s: String) -> Str {
        Str(Text::Own(s.into()))
    }
}

impl From<&String> for Str {
    fn from(s: &String) -> Str {
        Str(Text::Own(s.as_str().into()))
    }
}

impl From<Box<str>> for Str {
    fn from(s: Box<str>) -> Str {
        Str(Text::Own(s.into()))
    }
}

impl From<std::borrow::Cow<'_, str>> for Str {
    fn from(s: std::borrow::Cow<'_, str>) -> Str {
        Str(Text::Own(s.into()))
    }
}

impl PartialEq for Str {
    fn eq(&self, other: &Str) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Str {}

impl PartialOrd for Str {
    fn partial_cmp(&self, other: &Str) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Str {
    fn cmp(&self, other: &Str) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl std::hash::Hash for Str {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.as_str().hash(h)
    }
}

/// As the text's own `Debug` (what `Arc<str>` printed).
impl fmt::Debug for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Static types, checked when rules load. Every type admits the absent value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ty {
    /// Unknown or mixed: accepted everywhere, checked at run time.
    Any,
    Bool,
    Int,
    Str,
    /// Only as the right side of `~` / `!~` and as function arguments.
    Regex,
    List(Box<Ty>),
    Map(Box<Ty>),
}

impl Ty {
    /// Whether a value of type `self` may be passed where `want` is expected.
    pub fn fits(&self, want: &Ty) -> bool {
        match (self, want) {
            (Ty::Any, _) | (_, Ty::Any) => true,
            (Ty::List(a), Ty::List(b)) | (Ty::Map(a), Ty::Map(b)) => a.fits(b),
            (a, b) => a == b,
        }
    }
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ty::Any => f.write_str("any"),
            Ty::Bool => f.write_str("bool"),
            Ty::Int => f.write_str("int"),
            Ty::Str => f.write_str("string"),
            Ty::Regex => f.write_str("regex"),
            Ty::List(t) => write!(f, "list of {t}"),
            Ty::Map(t) => write!(f, "map of {t}"),
        }
    }
}

/// The one type all items share, or `Any`.
pub fn common_ty(mut tys: impl Iterator<Item = Ty>) -> Ty {
    let Some(first) = tys.next() else {
        return Ty::Any;
    };
    if tys.all(|t| t == first) {
        first
    } else {
        Ty::Any
    }
}

#[cfg(test)]
mod size_tests {
    /// The evaluator passes values by move: keep them three words.
    #[test]
    fn a_value_is_three_words() {
        assert_eq!(std::mem::size_of::<super::Value>(), 24);
    }
}
