//! iwf
pub mod dsl;
pub mod envelope;
pub mod mail;
pub mod outcome;
pub mod plan;
pub mod render;
pub mod reply;
pub mod ruleset;
