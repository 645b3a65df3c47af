//! The one integration test binary. Snapshot files live in `snapshots/`; CI runs with
//! CI=true, so a changed snapshot fails until it is reviewed and accepted.

mod large;
mod mapping;
mod properties;
