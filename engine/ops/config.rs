//! The service configuration: one YAML file (`ConfigFile`, as written) checked into a
//! [`Config`] (what the server runs with). Flags override the common settings.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The YAML file as written. Every key is optional; see the README for the meaning.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub rules: Option<PathBuf>,
    pub hostname: Option<String>,
    pub smtp_listen: Option<String>,
    pub lmtp_listen: Option<String>,
    pub sip_listen: Option<String>,
    /// Outbound proxy, e.g. `sip:127.0.0.1:5060;transport=udp`; without it RFC 3263.
    pub next_hop: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// SIP over TLS to the next hop (`next_hop: sips:…` or `;transport=tls`).
    #[serde(default)]
    pub sip_tls: SipTlsFile,
    /// `host:port` of the MTA that takes our DSNs.
    pub smarthost: Option<String>,
    /// CPM -> e-mail: longest wait for the smarthost, connect to its reply to DATA (default 20).
    pub smarthost_timeout_secs: Option<u64>,
    /// Also listen for SIP over TCP on the `sip_listen` address (CPM -> e-mail requests).
    pub sip_tcp: Option<bool>,
    /// How long a CPM peer's refusal (415 to CPIM, 488 to MSRP, 413) is remembered, in
    /// seconds (default 3600; 0 = not at all).
    pub peer_memory_secs: Option<u64>,
    #[serde(default)]
    pub limits: LimitsFile,
    #[serde(default)]
    pub timers: TimersFile,
    /// Prometheus metrics over HTTP, e.g. `127.0.0.1:9090` (off when absent).
    pub metrics_listen: Option<String>,
    /// `text` (default) or `json`.
    pub log_format: Option<String>,
    /// After SIGTERM/SIGINT, how long transactions in flight may take to finish.
    pub shutdown_grace_secs: Option<u64>,
    #[serde(default)]
    pub reload: ReloadFile,
    #[serde(default)]
    pub large: LargeFile,
    /// Where delivery and correlation records live: `sqlite` (default, a file in
    /// `state_dir`), `memory`, `redis://host:port[/db]` or `redis+cluster://h:p,h:p`.
    pub store: Option<String>,
    /// Directory of the SQLite store (default `./state`).
    pub state_dir: Option<PathBuf>,
    /// How long a delivery record lives (default 432000 = 5 days, RFC 5321 §4.5.4.1).
    pub store_ttl_secs: Option<u64>,
    /// At most this many records of each kind (default 1000000).
    pub store_max_records: Option<usize>,
    /// How long a report correlation record lives (default 604800 = 7 days): an IMDN, DSN
    /// or MDN arriving later finds nothing to report on.
    pub report_ttl_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadFile {
    /// Watch the rules directory (default true); SIGHUP reloads either way.
    pub watch: Option<bool>,
    pub debounce_ms: Option<u64>,
}

/// TLS towards the SIP next hop: trust anchors and an optional client certificate.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipTlsFile {
    /// PEM file of the CA(s) that sign the next hop's certificate.
    pub ca: Option<PathBuf>,
    /// PEM client certificate chain and key (mutual TLS), both or neither.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Name to verify in the next hop's certificate (default: its host name).
    pub server_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    pub message_size: Option<usize>,
    pub recipients: Option<usize>,
    pub connections: Option<usize>,
    pub connections_per_ip: Option<usize>,
    pub command_timeout_secs: Option<u64>,
    pub data_timeout_secs: Option<u64>,
    pub min_data_rate: Option<usize>,
    pub stress_timeout_secs: Option<u64>,
    pub connect_wait_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimersFile {
    pub t1_ms: Option<u64>,
    pub t2_ms: Option<u64>,
    pub t4_ms: Option<u64>,
}

/// Large Message Mode (INVITE + MSRP) settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LargeFile {
    /// Octets of content per MSRP SEND (default 2048; Kamailio needs <= 10 KB).
    pub chunk_size: Option<usize>,
    /// How long to wait for each chunk's MSRP response (default 30, RFC 4975 §7.1.2).
    pub response_timeout_secs: Option<u64>,
    /// Cap on a whole large-mode session (default 120, mapping reference §7 Q10).
    pub session_cap_secs: Option<u64>,
    /// PEM file of the CA(s) of the MSRP peers: enables MSRP over TLS (`msrps:`).
    pub tls_ca: Option<PathBuf>,
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub rules: PathBuf,
    pub hostname: String,
    pub smtp_listen: Option<SocketAddr>,
    pub lmtp_listen: Option<SocketAddr>,
    pub sip_listen: SocketAddr,
    pub next_hop: Option<String>,
    pub smarthost: Option<String>,
    /// CPM -> e-mail: the wait for the smarthost.
    pub smarthost_timeout: Duration,
    /// How long a peer's refusals are remembered (`peer_memory_secs`).
    pub peer_memory: Duration,
    pub smtp: crate::smtp::SmtpConfig,
    pub sip: crate::sip::SipConfig,
    pub metrics_listen: Option<SocketAddr>,
    pub log_format: crate::ops::logging::LogFormat,
    pub reload: crate::ops::reload::ReloadConfig,
    /// Large-mode delivery (its `host` is the SIP listening address).
    pub large: crate::mail_to_cpm::large::LargeConfig,
    /// The delivery/correlation store and its limits.
    pub store: crate::store::Backend,
    pub store_limits: crate::store::Limits,
}

/// A configuration problem, with where it is.
#[derive(Debug, thiserror::Error)]
#[error("{where_}: {message}")]
pub struct ConfigError {
    pub where_: String,
    pub message: String,
}

fn addr(where_: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse().map_err(|e| ConfigError {
        where_: where_.into(),
        message: format!("`{s}` is not an IP:port address ({e})"),
    })
}

/// Flags that override the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub rules: Option<PathBuf>,
    pub smtp_listen: Option<String>,
    pub lmtp_listen: Option<String>,
    pub sip_listen: Option<String>,
    pub next_hop: Option<String>,
    pub metrics_listen: Option<String>,
    pub log_format: Option<String>,
}

impl Config {
    /// Reads `path` (if any), applies the flags, and checks everything.
    pub fn load(path: Option<&Path>, o: &Overrides) -> Result<Config, ConfigError> {
        let file: ConfigFile = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| ConfigError {
                    where_: p.display().to_string(),
                    message: format!("cannot read: {e}"),
                })?;
                serde_saphyr::from_str(&text).map_err(|e| {
                    let (l, c) = e
                        .location()
                        .map(|l| (l.line(), l.column()))
                        .unwrap_or((1, 1));
                    ConfigError {
                        where_: format!("{}:{l}:{c}", p.display()),
                        message: e
                            .to_string()
                            .lines()
                            .next()
                            .unwrap_or("invalid YAML")
                            .to_string(),
                    }
                })?
            }
            None => ConfigFile::default(),
        };
        let smtp_listen = o
            .smtp_listen
            .clone()
            .or(file.smtp_listen)
            .unwrap_or_else(|| "127.0.0.1:2525".into());
        let lmtp_listen = o.lmtp_listen.clone().or(file.lmtp_listen);
        let sip_listen = o
            .sip_listen
            .clone()
            .or(file.sip_listen)
            .unwrap_or_else(|| "127.0.0.1:0".into());
        let next_hop = o.next_hop.clone().or(file.next_hop);
        if let Some(h) = &next_hop
            && !(h.starts_with("sip:") || h.starts_with("sips:"))
        {
            return Err(ConfigError {
                where_: "next_hop".into(),
                message: format!("`{h}` is not a SIP URI (e.g. sip:127.0.0.1:5060;transport=udp)"),
            });
        }
        let mut smtp = crate::smtp::SmtpConfig::default();
        let hostname = file.hostname.unwrap_or_else(|| "iwf.example.net".into());
        smtp.hostname = hostname.clone();
        let l = &file.limits;
        if let Some(v) = l.message_size {
            smtp.limits.message_size = v;
        }
        if let Some(v) = l.recipients {
            smtp.limits.recipients = v;
        }
        if let Some(v) = l.connections {
            smtp.limits.connections = v;
        }
        if let Some(v) = l.connections_per_ip {
            smtp.limits.connections_per_ip = v;
        }
        if let Some(v) = l.command_timeout_secs {
            smtp.limits.command_timeout = Duration::from_secs(v);
        }
        if let Some(v) = l.data_timeout_secs {
            smtp.limits.data_timeout = Duration::from_secs(v);
        }
        if let Some(v) = l.min_data_rate {
            smtp.limits.min_data_rate = v;
        }
        if let Some(v) = l.stress_timeout_secs {
            smtp.limits.stress_timeout = Duration::from_secs(v);
        }
        if let Some(v) = l.connect_wait_ms {
            smtp.limits.connect_wait = Duration::from_millis(v);
        }
        match (&file.tls_cert, &file.tls_key) {
            (Some(c), Some(k)) => {
                smtp.tls = Some(crate::smtp::tls_config_from_pem_files(c, k).map_err(|e| {
                    ConfigError {
                        where_: "tls_cert/tls_key".into(),
                        message: e.to_string(),
                    }
                })?);
            }
            (None, None) => {}
            _ => {
                return Err(ConfigError {
                    where_: "tls_cert/tls_key".into(),
                    message: "give both or neither".into(),
                });
            }
        }
        if let Some(v) = file.shutdown_grace_secs {
            smtp.shutdown_grace = Duration::from_secs(v);
        }
        let log_format = match o.log_format.clone().or(file.log_format) {
            Some(f) => f
                .parse()
                .map_err(|e: crate::ops::logging::UnknownLogFormat| ConfigError {
                    where_: "log_format".into(),
                    message: e.to_string(),
                })?,
            None => crate::ops::logging::LogFormat::default(),
        };
        let metrics_listen = o
            .metrics_listen
            .clone()
            .or(file.metrics_listen)
            .map(|a| addr("metrics_listen", &a))
            .transpose()?;
        let mut reload = crate::ops::reload::ReloadConfig::default();
        if let Some(w) = file.reload.watch {
            reload.watch = w;
        }
        if let Some(ms) = file.reload.debounce_ms {
            if ms == 0 {
                return Err(ConfigError {
                    where_: "reload.debounce_ms".into(),
                    message: "must be at least 1".into(),
                });
            }
            reload.debounce = Duration::from_millis(ms);
        }
        let sip_addr = addr("sip_listen", &sip_listen)?;
        let read = |key: &str, p: &Option<PathBuf>| -> Result<Option<Vec<u8>>, ConfigError> {
            p.as_ref()
                .map(|p| {
                    std::fs::read(p).map_err(|e| ConfigError {
                        where_: format!("sip_tls.{key}"),
                        message: format!("cannot read {}: {e}", p.display()),
                    })
                })
                .transpose()
        };
        let t = &file.sip_tls;
        if t.cert.is_some() != t.key.is_some() {
            return Err(ConfigError {
                where_: "sip_tls.cert/sip_tls.key".into(),
                message: "give both or neither".into(),
            });
        }
        let sip_tls = if t.ca.is_some() || t.cert.is_some() || t.server_name.is_some() {
            Some(crate::sip::TlsClient {
                ca_pem: read("ca", &t.ca)?,
                client_cert_pem: read("cert", &t.cert)?,
                client_key_pem: read("key", &t.key)?,
                server_name: t.server_name.clone(),
            })
        } else {
            None
        };
        let mut sip = crate::sip::SipConfig {
            udp_listen: Some(sip_addr),
            outbound_proxy: next_hop.clone(),
            tls: sip_tls,
            ..crate::sip::SipConfig::default()
        };
        if file.sip_tcp == Some(true) {
            sip.tcp_listen = Some(sip_addr);
        } else if next_hop
            .as_deref()
            .is_some_and(|h| h.contains("transport=tcp"))
        {
            sip.tcp_listen = Some(SocketAddr::new(sip_addr.ip(), 0));
        }
        if let Some(v) = file.timers.t1_ms {
            sip.timers.t1 = Duration::from_millis(v);
        }
        if let Some(v) = file.timers.t2_ms {
            sip.timers.t2 = Duration::from_millis(v);
        }
        if let Some(v) = file.timers.t4_ms {
            sip.timers.t4 = Duration::from_millis(v);
        }
        let mut large = crate::mail_to_cpm::large::LargeConfig {
            host: sip_addr.ip(),
            ..crate::mail_to_cpm::large::LargeConfig::default()
        };
        if let Some(ca) = &file.large.tls_ca {
            let pem = std::fs::read(ca).map_err(|e| ConfigError {
                where_: "large.tls_ca".into(),
                message: format!("cannot read {}: {e}", ca.display()),
            })?;
            large.tls = Some(
                crate::mail_to_cpm::large::tls_client_config(&pem).map_err(|e| ConfigError {
                    where_: "large.tls_ca".into(),
                    message: e.to_string(),
                })?,
            );
        }
        if let Some(v) = file.large.chunk_size {
            if v == 0 {
                return Err(ConfigError {
                    where_: "large.chunk_size".into(),
                    message: "must be at least 1".into(),
                });
            }
            large.chunk_size = v;
        }
        if let Some(v) = file.large.response_timeout_secs {
            large.response_timeout = Duration::from_secs(v);
        }
        if let Some(v) = file.large.session_cap_secs {
            large.session_cap = Duration::from_secs(v);
        }
        let state_dir = file.state_dir.unwrap_or_else(|| "state".into());
        let store =
            crate::store::Backend::parse(file.store.as_deref().unwrap_or("sqlite"), &state_dir)
                .map_err(|e| ConfigError {
                    where_: "store".into(),
                    message: e.to_string(),
                })?;
        let mut store_limits = crate::store::Limits::default();
        if let Some(v) = file.store_ttl_secs {
            store_limits.delivery_ttl = Duration::from_secs(v.max(1));
        }
        if let Some(v) = file.report_ttl_secs {
            store_limits.report_ttl = Duration::from_secs(v.max(1));
        }
        if let Some(v) = file.store_max_records {
            if v == 0 {
                return Err(ConfigError {
                    where_: "store_max_records".into(),
                    message: "must be at least 1".into(),
                });
            }
            store_limits.max_records = v;
        }
        Ok(Config {
            rules: o
                .rules
                .clone()
                .or(file.rules)
                .unwrap_or_else(|| "rules".into()),
            hostname,
            smtp_listen: Some(addr("smtp_listen", &smtp_listen)?),
            lmtp_listen: lmtp_listen.map(|a| addr("lmtp_listen", &a)).transpose()?,
            sip_listen: sip_addr,
            next_hop,
            smarthost: file.smarthost,
            smarthost_timeout: Duration::from_secs(file.smarthost_timeout_secs.unwrap_or(20)),
            peer_memory: Duration::from_secs(file.peer_memory_secs.unwrap_or(3600)),
            smtp,
            sip,
            metrics_listen,
            log_format,
            reload,
            large,
            store,
            store_limits,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_configuration_loads() {
        let c = Config::load(Some(Path::new("contrib/iwf.yaml")), &Overrides::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9465".parse().unwrap()));
        assert_eq!(c.log_format, crate::ops::logging::LogFormat::Text);
        assert_eq!(c.smtp.shutdown_grace, Duration::from_secs(60));
        assert_eq!(c.reload, crate::ops::reload::ReloadConfig::default());
    }

    #[test]
    fn flags_override_operations_settings() {
        let o = Overrides {
            metrics_listen: Some("127.0.0.1:0".into()),
            log_format: Some("json".into()),
            ..Overrides::default()
        };
        let c = Config::load(Some(Path::new("contrib/iwf.yaml")), &o).unwrap();
        assert_eq!(c.metrics_listen, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(c.log_format, crate::ops::logging::LogFormat::Json);
        let bad = Overrides {
            log_format: Some("xml".into()),
            ..Overrides::default()
        };
        let e = Config::load(None, &bad).unwrap_err();
        assert_eq!(e.where_, "log_format");
        let c = Config::load(None, &Overrides::default()).unwrap();
        assert_eq!(c.metrics_listen, None);
    }
}
