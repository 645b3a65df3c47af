//! The clock, injected: nothing in the library reads the time any other way.
//!
//! Two kinds of time: the wall clock for what goes on the wire and into records (Date:,
//! DSN Arrival-Date, IMDN DateTime, record TTLs) and the monotonic clock for timers and
//! budgets. The monotonic clock is tokio's, so tests on a paused runtime
//! (`#[tokio::test(start_paused = true)]`) drive timers without real sleeps.

use std::sync::Arc;

use chrono::{DateTime, Utc};

/// Where the time comes from.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Wall-clock time.
    fn now(&self) -> DateTime<Utc>;
    /// Monotonic time for timers and budgets (tokio's clock: pausable in tests).
    fn instant(&self) -> tokio::time::Instant {
        tokio::time::Instant::now()
    }
}

/// The system's clock: what `iwf serve` runs on.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A wall clock that stands still (dry runs, self-tests, snapshots); monotonic time is
/// still tokio's.
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub DateTime<Utc>);

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

impl FixedClock {
    /// The fixed time of self-tests and snapshots ([`crate::ids::fixed_now`]).
    pub fn snapshot() -> Self {
        FixedClock(crate::ids::fixed_now())
    }
}

/// Wall time that moves with tokio's clock, from a fixed start: on a paused runtime
/// (`#[tokio::test(start_paused = true)]`) record TTLs and other wall-clock deadlines pass
/// as tokio time advances, without real sleeps. Read it on a runtime thread (elsewhere
/// tokio's clock is the real one).
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    start: DateTime<Utc>,
    at: tokio::time::Instant,
}

impl TokioClock {
    /// Starts at `start`, now.
    pub fn starting_at(start: DateTime<Utc>) -> Self {
        TokioClock {
            start,
            at: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = tokio::time::Instant::now() - self.at;
        self.start + chrono::TimeDelta::from_std(elapsed).unwrap_or(chrono::TimeDelta::MAX)
    }
}

/// The system clock, shared.
pub fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}
