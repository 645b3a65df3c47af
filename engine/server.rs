//! `iwf serve` / `iwf demo`: wire the configuration, the rule set, the SIP back end and the
//! SMTP/LMTP listeners together, and run until SIGINT/SIGTERM.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{Config, Overrides};
use crate::gateway::{Gateway, MemoryStore};
use crate::ids::RandomIds;
use crate::sip::{RsipBackend, SipBackend};
use crate::smtp::{self, Protocol};

pub async fn run(config: Option<&Path>, overrides: Overrides, demo: bool) -> anyhow::Result<()> {
    let mut cfg = Config::load(config, &overrides)?;
    let rules = crate::ruleset::load(&cfg.rules, 1).map_err(|d| {
        anyhow::anyhow!(
            "the rule set does not load:\n{}",
            crate::ruleset::diag::render_all(&d)
        )
    })?;
    let failures = crate::selftest::run_all(&rules);
    if !failures.is_empty() {
        anyhow::bail!("the rule set's self-tests fail: {:?}", failures);
    }
    tracing::info!(rules = rules.rule_count(), dir = %cfg.rules.display(), "rule set generation 1 loaded");
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
    }
    let backend = RsipBackend::start(cfg.sip.clone())
        .await
        .map_err(|e| anyhow::anyhow!("SIP back end: {e}"))?;
    let sip: Arc<dyn SipBackend> = Arc::new(backend);
    let large = cfg.large.clone();
    let rules = Arc::new(ArcSwap::from_pointee(rules));
    let store = Arc::new(MemoryStore::default());
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {},
        }
        tracing::info!("shutting down: no new sessions, finishing transactions in flight");
    };
    let shutdown = futures_shared(shutdown);
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
            store: store.clone(),
            protocol,
            large: large.clone(),
        });
        let smtp_cfg = cfg.smtp.clone();
        let sd = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            smtp::serve(listener, protocol, smtp_cfg, handler, sd.wait()).await
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

/// A shutdown signal several listeners can wait on.
#[derive(Clone)]
struct Shared(tokio::sync::watch::Receiver<bool>);

impl Shared {
    async fn wait(mut self) {
        let _ = self.0.wait_for(|v| *v).await;
    }
}

fn futures_shared(f: impl std::future::Future<Output = ()> + Send + 'static) -> Shared {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        f.await;
        let _ = tx.send(true);
    });
    Shared(rx)
}
