//! Shutdown as a value: a [`Trigger`] that fires once and any number of [`Shutdown`]
//! handles that wait for it (mini-redis's `shutdown.rs`, on a `watch` channel).
//!
//! `iwf serve` fires the trigger on SIGTERM or SIGINT ([`on_signals`]); every listener
//! (SMTP, LMTP, metrics) and the rule watcher hold a [`Shutdown`] and stop when it
//! completes. Tests fire a [`Trigger`] themselves instead of sending a signal.

use tokio::sync::watch;

/// Fires the shutdown (once; later calls do nothing).
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

/// Waits for the shutdown. Cheap to clone; one per task that must stop.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A new trigger and the handle that waits for it.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    pub fn fire(&self) {
        self.0.send_replace(true);
    }

    #[cfg(test)]
    /// Another handle waiting for this trigger.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

impl Shutdown {
    /// Completes once the trigger fired (or was dropped without firing: nothing can stop
    /// us any more, so waiting longer would only hang).
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|v| *v).await;
    }

    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }
}

/// Which signal asked us to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    Terminate,
    Interrupt,
}

impl StopSignal {
    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Terminate => "SIGTERM",
            StopSignal::Interrupt => "SIGINT",
        }
    }
}

/// Installs the SIGTERM and SIGINT handlers now (so a signal that arrives from here on is
/// ours, not the default "terminate"), and returns a handle that completes on the first
/// of them. Must be called inside the tokio runtime.
pub fn on_signals() -> std::io::Result<Shutdown> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (trigger, shutdown) = channel();
    tokio::spawn(async move {
        let which = tokio::select! {
            _ = term.recv() => StopSignal::Terminate,
            _ = int.recv() => StopSignal::Interrupt,
        };
        tracing::info!(
            signal = which.name(),
            "shutting down: no new sessions, finishing the transactions in flight"
        );
        trigger.fire();
        // A second signal while draining: the operator means it.
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::warn!("second stop signal: exiting without waiting for the transactions");
        std::process::exit(1);
    });
    Ok(shutdown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_handle_sees_the_trigger() {
        let (trigger, a) = channel();
        let b = a.clone();
        let c = trigger.subscribe();
        assert!(!a.is_triggered());
        let waiting = tokio::spawn(b.wait());
        trigger.fire();
        trigger.fire();
        waiting.await.unwrap();
        assert!(a.is_triggered() && c.is_triggered());
        a.wait().await;
    }

    #[tokio::test]
    async fn a_dropped_trigger_releases_the_waiters() {
        let (trigger, s) = channel();
        drop(trigger);
        tokio::time::timeout(std::time::Duration::from_secs(1), s.wait())
            .await
            .unwrap();
    }
}
