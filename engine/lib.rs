//! iwf
pub mod dryrun;
pub mod dsl;
pub mod envelope;
pub mod ids;
pub mod mail;
pub mod mapper;
pub mod outcome;
pub mod plan;
pub mod render;
pub mod reply;
pub mod ruleset;
pub mod selftest;
