//! The rule language: parse ([`parser`]) → compile with names, types and arity checked
//! ([`compile`]) → evaluate, pure and bounded ([`eval`]).

pub(crate) mod ast;
pub mod compile;
pub mod eval;
pub mod functions;
pub mod parser;
pub(crate) mod value;

pub use compile::{Code, CompileError, Scope};
pub use eval::{EvalError, Frame, Input};
pub use functions::FnError;
pub use value::{Str, Ty, Value};
