//! Operations: what runs the two pipelines as a service and lets an operator see and steer
//! it — configuration, `iwf serve` wiring, rule reloads without a restart, metrics,
//! structured logs, graceful shutdown, and the demo endpoint of the embedded default.

pub mod config;
pub mod demo;
pub mod logging;
pub(crate) mod metrics;
pub mod reload;
pub mod server;
pub(crate) mod shutdown;
