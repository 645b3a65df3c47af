//! iwf
pub mod envelope;
pub mod outcome;
pub mod plan;
pub mod render;
pub mod reply;
pub mod sip;
