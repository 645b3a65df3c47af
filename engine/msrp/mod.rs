//! MSRP (RFC 4975) for Large Message Mode.
//!
//! placeholder
pub mod codec;
