//! `iwf serve` / `iwf demo`: wire the configuration, the rule set, the SIP back end and the
//! SMTP/LMTP listeners together, and run until SIGINT/SIGTERM.
//!
//! Operations (metrics, rule reload, shutdown, logs) live in their own modules
//! (`metrics`, `reload`, `shutdown`, `logging`); this file only wires them in.

use std::path::Path;
use std::sync::Arc;

use crate::config::{Config, Overrides};
use crate::ids::RandomIds;
use crate::mail_to_cpm::Gateway;
use crate::sip::{RsipBackend, SipBackend};
use crate::smtp::{self, Protocol};

pub async fn run(config: Option<&Path>, overrides: Overrides, demo: bool) -> anyhow::Result<()> {
    serve(Config::load(config, &overrides)?, demo).await
}

/// Runs with a checked configuration until SIGTERM/SIGINT, then drains and returns.
pub async fn serve(mut cfg: Config, demo: bool) -> anyhow::Result<()> {
    // --- operations: signals, metrics, generation 1 (before anything can be asked) ---
    let shutdown = crate::shutdown::on_signals()?;
    if let Some(addr) = cfg.metrics_listen {
        let handle = crate::metrics::install()?;
        let listener = crate::metrics::bind(addr).await?;
        println!(
            "iwf: metrics listening on http://{}/metrics",
            listener.local_addr()?
        );
        tokio::spawn(crate::metrics::serve(listener, handle, shutdown.clone()));
    }
    let reloader = Arc::new(crate::reload::Reloader::start(&cfg.rules).map_err(|e| {
        anyhow::anyhow!("the rule set {} is not usable:\n{e}", cfg.rules.display())
    })?);
    // --- end operations ---
    let mut _demo = None;
    if demo {
        let endpoint = crate::demo::start().await?;
        println!(
            "demo: in-process CPM endpoint at {} answers MESSAGE and INVITE (MSRP at {}) and prints what it receives",
            endpoint.uri,
            endpoint.msrp.local_addr()
        );
        cfg.sip.outbound_proxy = Some(endpoint.uri.clone());
        _demo = Some(endpoint);
        if cfg.smarthost.is_none() {
            let sink = crate::reverse::sink::start().await?;
            println!(
                "demo: in-process smarthost at {sink} prints every mail it receives (CPM -> e-mail)"
            );
            cfg.smarthost = Some(sink);
        }
    }
    let store = cfg.store.open(cfg.store_limits)?;
    crate::store::describe_metrics();
    tracing::info!(store = ?cfg.store, "store open");
    // Reports across the border (engine/reports), shared by both directions.
    let reports = Arc::new(crate::reports::Reports::new(
        store.clone(),
        cfg.smarthost.clone(),
        cfg.hostname.clone(),
        cfg.store_limits.report_ttl,
    ));
    // CPM -> e-mail: the UAS on the same SIP sockets (engine/reverse), sharing the thread
    // store with the mail -> CPM direction (which remembers what the CPM side accepted).
    let threads: Arc<dyn crate::reverse::ThreadStore> =
        Arc::new(crate::reverse::MemoryThreads::default());
    let uas = Arc::new(
        crate::reverse::Uas::new(
            reloader.rules(),
            Arc::new(RandomIds),
            threads.clone(),
            crate::reverse::UasConfig {
                smarthost: cfg.smarthost.clone(),
                helo: cfg.hostname.clone(),
                smtp_timeout: cfg.smarthost_timeout,
                answer_cache: cfg.sip.timers.timer_f(),
                ..Default::default()
            },
        )
        .with_reports(reports.clone()),
    );
    let backend = RsipBackend::start_with_uas(cfg.sip.clone(), Some(uas))
        .await
        .map_err(|e| anyhow::anyhow!("SIP back end: {e}"))?;
    if let Some(a) = backend.udp_addr() {
        println!("iwf: SIP (CPM -> e-mail MESSAGE) listening on udp {a}");
    }
    if let Some(p) = backend.tcp_port() {
        println!("iwf: SIP (CPM -> e-mail MESSAGE) listening on tcp port {p}");
    }
    let sip: Arc<dyn SipBackend> = Arc::new(crate::reverse::threads::Remembering {
        inner: Arc::new(crate::metrics::MeteredSip(Arc::new(backend))),
        threads,
    });
    let large = cfg.large.clone();
    let rules = reloader.rules();
    let _watcher = crate::reload::spawn(reloader, &cfg.reload, shutdown.clone())?;
    let peers = Arc::new(crate::peer_memory::PeerMemory::new(
        cfg.peer_memory,
        100_000,
    ));
    let mut tasks = Vec::new();
    for (addr, protocol) in [
        (cfg.smtp_listen, Protocol::Smtp),
        (cfg.lmtp_listen, Protocol::Lmtp),
    ] {
        let Some(addr) = addr else { continue };
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!(
            "iwf: {} listening on {}",
            if protocol == Protocol::Smtp {
                "ESMTP"
            } else {
                "LMTP"
            },
            listener.local_addr()?
        );
        let handler = Arc::new(Gateway {
            rules: rules.clone(),
            sip: sip.clone(),
            ids: Arc::new(RandomIds),
            clock: crate::clock::system(),
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
