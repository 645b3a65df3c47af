//! iwf
pub mod envelope;
pub mod msrp;
pub mod outcome;
pub mod plan;
pub mod render;
pub mod reply;
