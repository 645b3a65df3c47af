//! The listener: accepts connections within the limits, spawns sessions, shuts down.
//!
//! Shape of mini-redis's `server.rs`: one accept loop, a semaphore for the total
//! number of sessions, a per-IP count, a `watch` channel that tells sessions to stop, and a
//! `JoinSet` to wait for them.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::config::SmtpConfig;
use super::conn::Connection;
use super::replies;
use super::session::Shared;
use super::{MailHandler, Protocol};
use crate::clock::Clock;
use crate::smtp::reply::Reply;

/// What [`serve`] reports when it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServeReport {
    /// Sessions accepted over the listener's life.
    pub sessions: u64,
    /// Sessions still running when the grace period ended, and therefore aborted.
    pub aborted_sessions: usize,
}

/// Pending connections the kernel keeps for the accept loop. Rust's and tokio's `bind`
/// listen with 128: a burst of more connects than that (a sender opening 300 sessions at
/// once, a slowloris) overflows the accept queue, the kernel drops the handshake's last ACK
/// and the client waits for our greeting while we never saw it (seen as 30 s stalls).
/// The kernel caps it at `net.core.somaxconn`.
pub const LISTEN_BACKLOG: u32 = 1024;

/// Binds a listener for [`serve`] with [`LISTEN_BACKLOG`].
pub async fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves SMTP or LMTP on `listener` until `shutdown` completes, then drains.
///
/// * Each connection gets a session (a tokio task). Over [`Limits::connections`] sessions
///   a new connection waits up to [`Limits::connect_wait`] for a slot, then gets
///   `421 4.3.2` and is closed; over
///   [`Limits::connections_per_ip`] from one address, `421 4.7.0`.
/// * When `shutdown` completes the listener is closed (new connections are refused by the
///   OS), and every session is told: one waiting for a command answers `421 4.3.2` and
///   closes; one receiving a message or waiting for [`MailHandler::data`] finishes that
///   transaction, sends the real reply, then `421 4.3.2`.
/// * `serve` returns once every session has ended, or after
///   [`SmtpConfig::shutdown_grace`], aborting the sessions still running.
///
/// [`Limits::connections`]: super::Limits::connections
/// [`Limits::connections_per_ip`]: super::Limits::connections_per_ip
/// [`Limits::connect_wait`]: super::Limits::connect_wait
pub async fn serve(
    listener: TcpListener,
    protocol: Protocol,
    config: SmtpConfig,
    handler: Arc<dyn MailHandler>,
    shutdown: impl Future,
) -> ServeReport {
    serve_with_clock(
        listener,
        protocol,
        config,
        handler,
        crate::clock::system(),
        shutdown,
    )
    .await
}

/// [`serve`] with the time taken from `clock`: the envelope's `received_at`, the
/// `Received:` date, transaction ids and the sessions' read deadlines.
pub async fn serve_with_clock(
    listener: TcpListener,
    protocol: Protocol,
    config: SmtpConfig,
    handler: Arc<dyn MailHandler>,
    clock: Arc<dyn Clock>,
    shutdown: impl Future,
) -> ServeReport {
    let grace = config.shutdown_grace;
    let shared = Arc::new(Shared::new(protocol, config, handler, clock));
    let slots: Arc<Semaphore> = shared.slots.clone();
    // Connections waiting for a slot (at most as many as there are slots).
    let waiting = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let per_ip = Arc::new(Mutex::new(HashMap::<IpAddr, usize>::new()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut sessions = JoinSet::new();
    let mut report = ServeReport::default();

    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, ?protocol, "listening");
    }
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            accepted = listener.accept() => {
                let (socket, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Typically EMFILE: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Some(ip_slot) = IpSlot::take(&per_ip, peer.ip(), shared.config.limits.connections_per_ip) else {
                    tracing::info!(%peer, "per-IP connection limit reached");
                    crate::ops::metrics::connection_refused(protocol, "per_ip");
                    refuse(&socket, &replies::too_many_connections_from_ip(&shared.config.hostname));
                    continue;
                };
                let limits = &shared.config.limits;
                let permit = match slots.clone().try_acquire_owned() {
                    Ok(permit) => Some(permit),
                    // All slots taken: wait a while, as in a listen queue (slow sessions
                    // are cut sooner under stress, so one frees up), unless too many wait.
                    Err(_) if !limits.connect_wait.is_zero()
                        && waiting.load(Ordering::Relaxed) < limits.connections => None,
                    Err(_) => {
                        tracing::info!(%peer, "connection limit reached");
                        crate::ops::metrics::connection_refused(protocol, "limit");
                        refuse(&socket, &replies::too_many_connections(&shared.config.hostname));
                        continue;
                    }
                };
                report.sessions += 1;
                let shared = shared.clone();
                let stop_rx = stop_rx.clone();
                let slots = slots.clone();
                let waiting = waiting.clone();
                sessions.spawn(async move {
                    let permit = match permit {
                        Some(permit) => permit,
                        None => {
                            waiting.fetch_add(1, Ordering::Relaxed);
                            let wait = shared.config.limits.connect_wait;
                            let got = tokio::time::timeout(wait, slots.acquire_owned()).await;
                            waiting.fetch_sub(1, Ordering::Relaxed);
                            match got {
                                Ok(Ok(permit)) => permit,
                                _ => {
                                    tracing::info!(%peer, "connection limit reached");
                                    crate::ops::metrics::connection_refused(protocol, "limit");
                                    refuse(&socket, &replies::too_many_connections(&shared.config.hostname));
                                    return;
                                }
                            }
                        }
                    };
                    let connection = Connection::new(shared, socket, peer, stop_rx);
                    let active = crate::ops::metrics::session_started(protocol);
                    connection.run().await;
                    drop(active);
                    drop(ip_slot);
                    drop(permit);
                });
            }
        }
    }

    drop(listener);
    let _ = stop_tx.send(true);
    tracing::info!(sessions = sessions.len(), "shutting down");
    let drained = tokio::time::timeout(grace, async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        report.aborted_sessions = sessions.len();
        tracing::warn!(
            aborted = report.aborted_sessions,
            "grace period over, aborting sessions"
        );
        sessions.shutdown().await;
    }
    report
}

/// Writes one reply to a connection we will not serve, without waiting: a fresh socket's
/// send buffer takes a line, and a client that cannot take it loses nothing it had.
fn refuse(socket: &TcpStream, reply: &Reply) {
    let _ = socket.try_write(reply.to_wire().as_bytes());
}

/// One session's place in the per-IP count; gives it back when dropped.
struct IpSlot {
    map: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl IpSlot {
    fn take(map: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, limit: usize) -> Option<Self> {
        let mut counts = map.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(ip).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            map: map.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_slots_are_counted_and_given_back() {
        let map = Arc::new(Mutex::new(HashMap::new()));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let a = IpSlot::take(&map, ip, 2).unwrap();
        let b = IpSlot::take(&map, ip, 2).unwrap();
        assert!(IpSlot::take(&map, ip, 2).is_none());
        assert!(IpSlot::take(&map, "192.0.2.2".parse().unwrap(), 2).is_some());
        drop(a);
        let c = IpSlot::take(&map, ip, 2).unwrap();
        drop((b, c));
        assert!(map.lock().unwrap().is_empty());
    }
}
