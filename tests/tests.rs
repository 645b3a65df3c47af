//! The one integration test binary. Snapshot files live in `snapshots/`; CI runs with
//! CI=true, so a changed snapshot fails until it is reviewed and accepted.

mod abuse;
mod cpm_to_mail;
mod framing;
mod gateway;
mod large;
mod mapping;
mod ops;
mod peers;
mod properties;
mod reports;
