//! `iwf serve` / `iwf demo`: wire the configuration, the rule set, the SIP back end and the
//! SMTP/LMTP listeners together, and run until SIGINT/SIGTERM.
//!
//! Operations (metrics, rule reload, shutdown, logs) live in their own modules
//! (`metrics`, `reload`, `shutdown`, `logging`); this file only wires them in.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::ids::RandomIds;
use crate::mail_to_cpm::Gateway;
use crate::ops::config::{Config, ConfigError, Overrides};
use crate::sip::{RsipBackend, SipBackend};
use crate::smtp::{self, Protocol};

/// Why the server did not start (or stopped on its own). Each variant reads as the error
/// it wraps, but for the rule set and the SIP back end, which say what they are.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// SIGINT/SIGTERM handlers.
    #[error(transparent)]
    Signals(std::io::Error),
    #[error(transparent)]
    Metrics(#[from] crate::ops::metrics::MetricsError),
    #[error("the rule set {} is not usable:\n{error}", dir.display())]
    Rules {
        dir: PathBuf,
        error: crate::ops::reload::ReloadError,
    },
    #[error(transparent)]
    Demo(#[from] crate::ops::demo::DemoError),
    #[error(transparent)]
    Store(#[from] crate::store::OpenError),
    #[error("SIP back end: {0}")]
    Sip(crate::sip::client::SipError),
    #[error(transparent)]
    Watch(#[from] crate::ops::reload::WatchError),
    /// A listener (SMTP, LMTP, metrics, the demo smarthost) or its address.
    #[error(transparent)]
    Listen(std::io::Error),
}

pub async fn run(
    config: Option<&Path>,
    overrides: Overrides,
    demo: bool,
) -> Result<(), ServeError> {
    serve(Config::load(config, &overrides)?, demo).await
}

/// Runs with a checked configuration until SIGTERM/SIGINT, then drains and returns.
pub async fn serve(mut cfg: Config, demo: bool) -> Result<(), ServeError> {
    // The one clock and the one id source of the whole process.
    let clock = crate::clock::system();
    let ids: Arc<dyn crate::ids::Ids> = Arc::new(RandomIds);
    // --- operations: signals, metrics, generation 1 (before anything can be asked) ---
    let shutdown = crate::ops::shutdown::on_signals().map_err(ServeError::Signals)?;
    if let Some(addr) = cfg.metrics_listen {
        let handle = crate::ops::metrics::install()?;
        let listener = crate::ops::metrics::bind(addr).await?;
        println!(
            "iwf: metrics listening on http://{}/metrics",
            listener.local_addr().map_err(ServeError::Listen)?
        );
        tokio::spawn(crate::ops::metrics::serve(
            listener,
            handle,
            shutdown.clone(),
        ));
    }
    let reloader = Arc::new(
        crate::ops::reload::Reloader::start(&cfg.rules, clock.clone()).map_err(|error| {
            ServeError::Rules {
                dir: cfg.rules.clone(),
                error,
            }
        })?,
    );
    // --- end operations ---
    let mut _demo = None;
    if demo {
        let endpoint = crate::ops::demo::start().await?;
        println!(
            "demo: in-process CPM endpoint at {} answers MESSAGE and INVITE (MSRP at {}) and prints what it receives",
            endpoint.uri,
            endpoint.msrp.local_addr()
        );
        cfg.sip.outbound_proxy = Some(endpoint.uri.clone());
        _demo = Some(endpoint);
        if cfg.smarthost.is_none() {
            let sink = crate::cpm_to_mail::sink::start()
                .await
                .map_err(ServeError::Listen)?;
            println!(
                "demo: in-process smarthost at {sink} prints every mail it receives (CPM -> e-mail)"
            );
            cfg.smarthost = Some(sink);
        }
    }
    let store = cfg.store.open(cfg.store_limits, clock.clone())?;
    crate::store::describe_metrics();
    tracing::info!(store = ?cfg.store, "store open");
    // Reports across the border (engine/reports), shared by both directions.
    let reports = Arc::new(crate::reports::Reports::new(
        store.clone(),
        cfg.smarthost.clone(),
        cfg.hostname.clone(),
        cfg.store_limits.report_ttl,
        clock.clone(),
    ));
    // CPM -> e-mail: the UAS on the same SIP sockets (engine/cpm_to_mail), sharing the thread
    // store with the mail -> CPM direction (which remembers what the CPM side accepted).
    let threads: Arc<dyn crate::cpm_to_mail::ThreadStore> =
        Arc::new(crate::cpm_to_mail::MemoryThreads::default());
    let uas = Arc::new(
        crate::cpm_to_mail::Uas::new(
            reloader.rules(),
            ids.clone(),
            clock.clone(),
            threads.clone(),
            crate::cpm_to_mail::UasConfig {
                smarthost: cfg.smarthost.clone(),
                helo: cfg.hostname.clone(),
                smtp_timeout: cfg.smarthost_timeout,
                answer_cache: cfg.sip.timers.timer_f(),
                ..Default::default()
            },
        )
        .with_reports(reports.clone()),
    );
    let backend =
        RsipBackend::start_with_uas(cfg.sip.clone(), Some(uas), clock.clone(), ids.clone())
            .await
            .map_err(ServeError::Sip)?;
    if let Some(a) = backend.udp_addr() {
        println!("iwf: SIP (CPM -> e-mail MESSAGE) listening on udp {a}");
    }
    if let Some(p) = backend.tcp_port() {
        println!("iwf: SIP (CPM -> e-mail MESSAGE) listening on tcp port {p}");
    }
    let sip: Arc<dyn SipBackend> = Arc::new(crate::cpm_to_mail::threads::Remembering {
        inner: Arc::new(crate::ops::metrics::MeteredSip(
            Arc::new(backend),
            clock.clone(),
        )),
        threads,
    });
    let large = cfg.large.clone();
    let rules = reloader.rules();
    let _watcher = crate::ops::reload::spawn(reloader, &cfg.reload, shutdown.clone())?;
    let peers = Arc::new(crate::mail_to_cpm::peer_memory::PeerMemory::new(
        cfg.peer_memory,
        100_000,
    ));
    let mut tasks = Vec::new();
    for (addr, protocol) in [
        (cfg.smtp_listen, Protocol::Smtp),
        (cfg.lmtp_listen, Protocol::Lmtp),
    ] {
        let Some(addr) = addr else { continue };
        let listener = smtp::bind(addr).await.map_err(ServeError::Listen)?;
        println!(
            "iwf: {} listening on {}",
            if protocol == Protocol::Smtp {
                "ESMTP"
            } else {
                "LMTP"
            },
            listener.local_addr().map_err(ServeError::Listen)?
        );
        let handler = Arc::new(Gateway {
            rules: rules.clone(),
            sip: sip.clone(),
            ids: ids.clone(),
            clock: clock.clone(),
            store: store.clone(),
            peers: peers.clone(),
            protocol,
            large: large.clone(),
            smarthost: cfg.smarthost.clone(),
            hostname: cfg.hostname.clone(),
            reports: Some(reports.clone()),
        });
        let smtp_cfg = cfg.smtp.clone();
        let sd = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let clock = crate::clock::system();
            let report =
                smtp::serve_with_clock(listener, protocol, smtp_cfg, handler, clock, sd.wait())
                    .await;
            if report.aborted_sessions > 0 {
                tracing::warn!(
                    aborted = report.aborted_sessions,
                    "shutdown grace period over: sessions cut"
                );
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    tracing::info!("stopped");
    Ok(())
}
