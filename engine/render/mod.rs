//! Mechanisms that write protocol text: the header encoder every value goes through,
//! SIP requests (on rsipstack's message types), CPIM, resource-lists XML and the SDP offer.

pub mod body;
pub(crate) mod cpim;
pub(crate) mod encoder;
pub(crate) mod resource_lists;
pub mod sdp;
pub mod sip;
