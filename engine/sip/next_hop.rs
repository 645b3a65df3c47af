//! Where a request goes: the configured outbound proxy, or RFC 3263 resolution of the
//! Request-URI.
//!
//! [`HopUri`] is the part of a SIP URI that routing needs (scheme, host, port, transport).
//! [`locate`] turns it into an ordered list of [`Target`]s following RFC 3263 §4:
//!
//! 1. transport: the URI's `transport` parameter; else UDP (TLS for `sips:`) when the host is
//!    an IP address or a port is given; else the NAPTR records of the host (services
//!    `SIP+D2U`, `SIP+D2T`, `SIPS+D2T`, by order then preference); else the SRV records that
//!    exist (`_sips._tcp` for `sips:`, else `_sip._udp`, `_sip._tcp`); else UDP (TLS).
//! 2. address: the IP itself; host + explicit port → A/AAAA; otherwise SRV (priority, then
//!    weighted random per RFC 2782) and A/AAAA of each SRV target; no SRV → A/AAAA with
//!    port 5060 (5061 for TLS).
//!
//! The DNS is behind the [`Dns`] trait, so the algorithm is tested without a network; the
//! real one is [`HickoryDns`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use rsipstack::sip::{self, Host, Uri};

use super::BoxFuture;
use crate::ids::Ids;

/// The transports the back end speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// The word in a Via header (`SIP/2.0/UDP`).
    pub fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Transport::Tls => 5061,
            _ => 5060,
        }
    }

    pub fn is_reliable(self) -> bool {
        self != Transport::Udp
    }

    fn from_param(value: &str) -> Option<Self> {
        match value.to_ascii_lowercase().as_str() {
            "udp" => Some(Transport::Udp),
            "tcp" => Some(Transport::Tcp),
            "tls" => Some(Transport::Tls),
            _ => None,
        }
    }

    pub(crate) fn to_rsip(self) -> sip::Transport {
        match self {
            Transport::Udp => sip::Transport::Udp,
            Transport::Tcp => sip::Transport::Tcp,
            Transport::Tls => sip::Transport::Tls,
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.via_name())
    }
}

/// One address to send to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Target {
    pub transport: Transport,
    pub addr: SocketAddr,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.transport, self.addr)
    }
}

/// Why no target could be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NextHopError {
    #[error("`{0}` is not a SIP URI")]
    BadUri(String),
    #[error("`{0}` has no host to route to: a tel: URI needs an outbound proxy")]
    NotRoutable(String),
    #[error("transport `{transport}` of `{uri}` is not supported (udp, tcp, tls)")]
    UnsupportedTransport { uri: String, transport: String },
    #[error("DNS: {0}")]
    Dns(DnsError),
}

/// What DNS could not tell about the next hop.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// An SRV lookup failed and the fallback found nothing either.
    #[error("{0}")]
    Srv(LookupError),
    /// The A/AAAA lookup of `name` failed.
    #[error("{name}: {error}")]
    Address { name: String, error: LookupError },
    /// `name` has no A/AAAA record.
    #[error("{0}: no A/AAAA record")]
    NoAddress(String),
}

/// A lookup that got no answer (timeout, server failure), in the resolver's words.
/// "No such record" is not one: it is an empty answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LookupError(pub String);

/// Why the system resolver could not be set up.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ResolverError {
    #[error("reading the system DNS configuration: {0}")]
    Config(hickory_resolver::net::NetError),
    #[error("building the DNS resolver: {0}")]
    Build(hickory_resolver::net::NetError),
}

/// The routing-relevant part of a `sip:`/`sips:` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopUri {
    pub secure: bool,
    pub host: HopHost,
    pub port: Option<u16>,
    pub transport: Option<Transport>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HopHost {
    Ip(IpAddr),
    Name(String),
}

impl HopUri {
    /// Parses a URI text (`sip:proxy.example.net:5060;transport=tcp`).
    pub fn parse(text: &str) -> Result<Self, NextHopError> {
        let uri = Uri::try_from(text.trim()).map_err(|_| NextHopError::BadUri(text.to_string()))?;
        Self::from_uri(&uri, text)
    }

    /// Takes the routing part of a parsed URI; `text` names it in errors.
    pub fn from_uri(uri: &Uri, text: &str) -> Result<Self, NextHopError> {
        let secure = match &uri.scheme {
            Some(sip::Scheme::Sip) => false,
            Some(sip::Scheme::Sips) => true,
            Some(sip::Scheme::Other(_)) => {
                return Err(NextHopError::NotRoutable(text.to_string()));
            }
            None => return Err(NextHopError::BadUri(text.to_string())),
        };
        let host = match &uri.host_with_port.host {
            Host::IpAddr(ip) => HopHost::Ip(*ip),
            Host::Domain(d) => {
                let name = d.to_string();
                let name = name.trim_start_matches('[').trim_end_matches(']');
                match name.parse::<IpAddr>() {
                    Ok(ip) => HopHost::Ip(ip),
                    Err(_) if name.is_empty() => {
                        return Err(NextHopError::NotRoutable(text.to_string()));
                    }
                    Err(_)
                        if !name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c)) =>
                    {
                        return Err(NextHopError::BadUri(text.to_string()));
                    }
                    Err(_) => HopHost::Name(name.to_string()),
                }
            }
        };
        let mut transport = None;
        for p in &uri.params {
            let value = match p {
                sip::Param::Transport(t) => t.to_string(),
                sip::Param::Other(name, Some(v))
                    if name.to_string().eq_ignore_ascii_case("transport") =>
                {
                    v.to_string()
                }
                _ => continue,
            };
            transport = Some(Transport::from_param(&value).ok_or_else(|| {
                NextHopError::UnsupportedTransport {
                    uri: text.to_string(),
                    transport: value.clone(),
                }
            })?);
        }
        Ok(HopUri {
            secure,
            host,
            port: uri.host_with_port.port.as_ref().map(|p| p.value()),
            transport,
        })
    }
}

/// A NAPTR record, reduced to what RFC 3263 reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naptr {
    pub order: u16,
    pub preference: u16,
    pub flags: String,
    pub service: String,
    pub replacement: String,
}

/// An SRV record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
}

/// The DNS lookups RFC 3263 needs. "No such record" is `Ok(vec![])`; `Err` is a failure
/// to get an answer.
pub trait Dns: Send + Sync {
    fn naptr<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<Naptr>, LookupError>>;
    fn srv<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<Srv>, LookupError>>;
    fn ip<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, LookupError>>;
}

/// Resolves `hop` to targets in the order to try them (RFC 3263 §4).
/// `supported` lists the transports the caller can use (TLS only when configured); `ids`
/// draws among SRV records of equal priority.
pub async fn locate(
    hop: &HopUri,
    supported: &[Transport],
    dns: &dyn Dns,
    ids: &dyn Ids,
) -> Result<Vec<Target>, NextHopError> {
    let fallback = if hop.secure {
        Transport::Tls
    } else {
        Transport::Udp
    };
    let name = match &hop.host {
        HopHost::Ip(ip) => {
            let t = hop.transport.unwrap_or(fallback);
            let port = hop.port.unwrap_or(t.default_port());
            return Ok(vec![Target {
                transport: t,
                addr: SocketAddr::new(*ip, port),
            }]);
        }
        HopHost::Name(n) => n.as_str(),
    };
    if let Some(port) = hop.port {
        let t = hop.transport.unwrap_or(fallback);
        return addresses(dns, name, port, t).await;
    }
    // Transport and SRV name: from the URI, NAPTR, or SRV probing.
    let mut srv_names: Vec<(Transport, String)> = Vec::new();
    if let Some(t) = hop.transport {
        srv_names.push((t, srv_name(t, hop.secure, name)));
    } else {
        let mut naptrs: Vec<(Naptr, Transport)> = dns
            .naptr(name)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|n| n.flags.eq_ignore_ascii_case("s"))
            .filter_map(|n| {
                let t = naptr_transport(&n.service, hop.secure)?;
                supported.contains(&t).then_some((n, t))
            })
            .collect();
        naptrs.sort_by_key(|(n, _)| (n.order, n.preference));
        if naptrs.is_empty() {
            let probe: &[Transport] = if hop.secure {
                &[Transport::Tls]
            } else {
                &[Transport::Udp, Transport::Tcp, Transport::Tls]
            };
            for t in probe.iter().filter(|t| supported.contains(t)) {
                srv_names.push((*t, srv_name(*t, hop.secure, name)));
            }
        } else {
            for (n, t) in naptrs {
                srv_names.push((t, n.replacement.trim_end_matches('.').to_string()));
            }
        }
    }
    let mut dns_error = None;
    for (t, srv) in &srv_names {
        let records = match dns.srv(srv).await {
            Ok(r) => r,
            Err(e) => {
                dns_error = Some(e);
                continue;
            }
        };
        if records.is_empty() {
            continue;
        }
        let mut out = Vec::new();
        let ordered = order_srv(records, ids);
        for rec in ordered {
            if let Ok(mut a) = addresses(dns, &rec.target, rec.port, *t).await {
                out.append(&mut a);
            }
        }
        if !out.is_empty() {
            return Ok(out);
        }
    }
    let t = hop.transport.unwrap_or(fallback);
    match addresses(dns, name, t.default_port(), t).await {
        Ok(a) => Ok(a),
        Err(e) => Err(dns_error
            .map(|e| NextHopError::Dns(DnsError::Srv(e)))
            .unwrap_or(e)),
    }
}

async fn addresses(
    dns: &dyn Dns,
    name: &str,
    port: u16,
    transport: Transport,
) -> Result<Vec<Target>, NextHopError> {
    let name = name.trim_end_matches('.');
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(vec![Target {
            transport,
            addr: SocketAddr::new(ip, port),
        }]);
    }
    let ips = dns.ip(name).await.map_err(|error| {
        NextHopError::Dns(DnsError::Address {
            name: name.to_string(),
            error,
        })
    })?;
    if ips.is_empty() {
        return Err(NextHopError::Dns(DnsError::NoAddress(name.to_string())));
    }
    Ok(ips
        .into_iter()
        .map(|ip| Target {
            transport,
            addr: SocketAddr::new(ip, port),
        })
        .collect())
}

fn srv_name(t: Transport, secure: bool, host: &str) -> String {
    match (t, secure) {
        (Transport::Tls, _) | (Transport::Tcp, true) => format!("_sips._tcp.{host}"),
        (Transport::Tcp, false) => format!("_sip._tcp.{host}"),
        (Transport::Udp, _) => format!("_sip._udp.{host}"),
    }
}

fn naptr_transport(service: &str, secure: bool) -> Option<Transport> {
    let t = match service.to_ascii_uppercase().as_str() {
        "SIP+D2U" => Transport::Udp,
        "SIP+D2T" => Transport::Tcp,
        "SIPS+D2T" => Transport::Tls,
        _ => return None,
    };
    (!secure || t == Transport::Tls).then_some(t)
}

/// RFC 2782 order: ascending priority; within one priority a weighted random draw.
pub fn order_srv(mut records: Vec<Srv>, ids: &dyn Ids) -> Vec<Srv> {
    records.sort_by_key(|r| r.priority);
    let mut out = Vec::with_capacity(records.len());
    let mut rest = records.as_slice();
    while let Some(first) = rest.first() {
        let n = rest
            .iter()
            .take_while(|r| r.priority == first.priority)
            .count();
        let (group, tail) = rest.split_at(n);
        // Zero-weight entries first, as RFC 2782 asks, so they get a small chance.
        let mut group: Vec<Srv> = group.to_vec();
        group.sort_by_key(|r| r.weight != 0);
        while !group.is_empty() {
            let total: u32 = group.iter().map(|r| u32::from(r.weight)).sum();
            let pick = if total == 0 {
                0
            } else {
                let draw = (ids.bits() % (u64::from(total) + 1)) as u32;
                let mut running = 0u32;
                group
                    .iter()
                    .position(|r| {
                        running += u32::from(r.weight);
                        running >= draw
                    })
                    .unwrap_or(0)
            };
            out.push(group.remove(pick));
        }
        rest = tail;
    }
    out
}

/// The real DNS: hickory's tokio resolver with the system configuration.
#[derive(Clone)]
pub struct HickoryDns(Arc<hickory_resolver::TokioResolver>);

impl HickoryDns {
    pub fn from_system() -> Result<Self, ResolverError> {
        let resolver = hickory_resolver::TokioResolver::builder_tokio()
            .map_err(ResolverError::Config)?
            .build()
            .map_err(ResolverError::Build)?;
        Ok(HickoryDns(Arc::new(resolver)))
    }
}

fn is_no_records(e: &hickory_resolver::net::NetError) -> bool {
    e.is_no_records_found() || e.is_nx_domain()
}

impl Dns for HickoryDns {
    fn naptr<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<Naptr>, LookupError>> {
        Box::pin(async move {
            use hickory_resolver::proto::rr::{RData, RecordType};
            match self.0.lookup(name, RecordType::NAPTR).await {
                Ok(l) => Ok(l
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::NAPTR(n) => Some(Naptr {
                            order: n.order,
                            preference: n.preference,
                            flags: String::from_utf8_lossy(&n.flags).into_owned(),
                            service: String::from_utf8_lossy(&n.services).into_owned(),
                            replacement: n.replacement.to_string(),
                        }),
                        _ => None,
                    })
                    .collect()),
                Err(e) if is_no_records(&e) => Ok(vec![]),
                Err(e) => Err(LookupError(e.to_string())),
            }
        })
    }

    fn srv<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<Srv>, LookupError>> {
        Box::pin(async move {
            use hickory_resolver::proto::rr::RData;
            match self.0.srv_lookup(name).await {
                Ok(l) => Ok(l
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::SRV(s) => Some(Srv {
                            priority: s.priority,
                            weight: s.weight,
                            port: s.port,
                            target: s.target.to_string(),
                        }),
                        _ => None,
                    })
                    .collect()),
                Err(e) if is_no_records(&e) => Ok(vec![]),
                Err(e) => Err(LookupError(e.to_string())),
            }
        })
    }

    fn ip<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, LookupError>> {
        Box::pin(async move {
            match self.0.lookup_ip(name).await {
                Ok(l) => Ok(l.iter().collect()),
                Err(e) if is_no_records(&e) => Ok(vec![]),
                Err(e) => Err(LookupError(e.to_string())),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn parses_hop_uris() {
        let cases: &[(&str, HopUri)] = &[
            (
                "sip:127.0.0.1:5060;transport=udp",
                HopUri {
                    secure: false,
                    host: HopHost::Ip("127.0.0.1".parse().unwrap()),
                    port: Some(5060),
                    transport: Some(Transport::Udp),
                },
            ),
            (
                "sip:proxy.example.net;transport=TCP",
                HopUri {
                    secure: false,
                    host: HopHost::Name("proxy.example.net".into()),
                    port: None,
                    transport: Some(Transport::Tcp),
                },
            ),
            (
                "sips:ims.example.net",
                HopUri {
                    secure: true,
                    host: HopHost::Name("ims.example.net".into()),
                    port: None,
                    transport: None,
                },
            ),
            (
                "sip:+15551234567@ims.example.net:5070;user=phone",
                HopUri {
                    secure: false,
                    host: HopHost::Name("ims.example.net".into()),
                    port: Some(5070),
                    transport: None,
                },
            ),
            (
                "sip:[::1]:5062;transport=tcp",
                HopUri {
                    secure: false,
                    host: HopHost::Ip("::1".parse().unwrap()),
                    port: Some(5062),
                    transport: Some(Transport::Tcp),
                },
            ),
        ];
        for (text, want) in cases {
            assert_eq!(&HopUri::parse(text).unwrap(), want, "{text}");
        }
    }

    #[test]
    fn refuses_unroutable_uris() {
        assert!(matches!(
            HopUri::parse("tel:+15551234567"),
            Err(NextHopError::NotRoutable(_) | NextHopError::BadUri(_))
        ));
        assert!(matches!(
            HopUri::parse("sip:p.example.net;transport=sctp"),
            Err(NextHopError::UnsupportedTransport { .. })
        ));
        assert!(HopUri::parse("not a uri").is_err());
    }

    #[derive(Default)]
    struct FakeDns {
        naptr: HashMap<String, Vec<Naptr>>,
        srv: HashMap<String, Vec<Srv>>,
        ip: HashMap<String, Vec<IpAddr>>,
    }

    impl Dns for FakeDns {
        fn naptr<'a>(&'a self, n: &'a str) -> BoxFuture<'a, Result<Vec<Naptr>, LookupError>> {
            Box::pin(async move { Ok(self.naptr.get(n).cloned().unwrap_or_default()) })
        }
        fn srv<'a>(&'a self, n: &'a str) -> BoxFuture<'a, Result<Vec<Srv>, LookupError>> {
            Box::pin(async move { Ok(self.srv.get(n).cloned().unwrap_or_default()) })
        }
        fn ip<'a>(&'a self, n: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, LookupError>> {
            Box::pin(async move { Ok(self.ip.get(n).cloned().unwrap_or_default()) })
        }
    }

    fn srv(priority: u16, weight: u16, port: u16, target: &str) -> Srv {
        Srv {
            priority,
            weight,
            port,
            target: target.into(),
        }
    }

    fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    const ALL: [Transport; 3] = [Transport::Udp, Transport::Tcp, Transport::Tls];

    fn t(transport: Transport, addr: &str) -> Target {
        Target {
            transport,
            addr: addr.parse().unwrap(),
        }
    }

    #[test]
    fn rfc3263_naptr_then_srv_then_a() {
        let mut dns = FakeDns::default();
        dns.naptr.insert(
            "example.com".into(),
            vec![
                Naptr {
                    order: 50,
                    preference: 50,
                    flags: "s".into(),
                    service: "SIP+D2U".into(),
                    replacement: "_sip._udp.example.com.".into(),
                },
                Naptr {
                    order: 10,
                    preference: 50,
                    flags: "s".into(),
                    service: "SIP+D2T".into(),
                    replacement: "_sip._tcp.example.com.".into(),
                },
            ],
        );
        dns.srv.insert(
            "_sip._tcp.example.com".into(),
            vec![
                srv(0, 0, 5070, "b.example.com."),
                srv(1, 0, 5080, "c.example.com"),
            ],
        );
        dns.ip
            .insert("b.example.com".into(), vec!["192.0.2.2".parse().unwrap()]);
        dns.ip
            .insert("c.example.com".into(), vec!["192.0.2.3".parse().unwrap()]);
        let hop = HopUri::parse("sip:bob@example.com").unwrap();
        let got = run(locate(&hop, &ALL, &dns, &crate::ids::RandomIds)).unwrap();
        assert_eq!(
            got,
            vec![
                t(Transport::Tcp, "192.0.2.2:5070"),
                t(Transport::Tcp, "192.0.2.3:5080")
            ]
        );
        // Without TCP support the UDP NAPTR is used (its SRV is missing: A record).
        dns.ip
            .insert("example.com".into(), vec!["192.0.2.9".parse().unwrap()]);
        let got = run(locate(
            &hop,
            &[Transport::Udp],
            &dns,
            &crate::ids::RandomIds,
        ))
        .unwrap();
        assert_eq!(got, vec![t(Transport::Udp, "192.0.2.9:5060")]);
    }

    #[test]
    fn rfc3263_srv_probe_and_fallbacks() {
        let mut dns = FakeDns::default();
        dns.srv.insert(
            "_sip._tcp.example.org".into(),
            vec![srv(0, 0, 5090, "192.0.2.7")],
        );
        let hop = HopUri::parse("sip:example.org").unwrap();
        assert_eq!(
            run(locate(&hop, &ALL, &dns, &crate::ids::RandomIds)).unwrap(),
            vec![t(Transport::Tcp, "192.0.2.7:5090")]
        );
        // explicit port: A record only, no SRV
        dns.ip
            .insert("example.org".into(), vec!["192.0.2.8".parse().unwrap()]);
        let hop = HopUri::parse("sip:example.org:5099").unwrap();
        assert_eq!(
            run(locate(&hop, &ALL, &dns, &crate::ids::RandomIds)).unwrap(),
            vec![t(Transport::Udp, "192.0.2.8:5099")]
        );
        // sips: TLS on 5061
        let hop = HopUri::parse("sips:example.org").unwrap();
        assert_eq!(
            run(locate(&hop, &ALL, &dns, &crate::ids::RandomIds)).unwrap(),
            vec![t(Transport::Tls, "192.0.2.8:5061")]
        );
        // nothing at all
        let hop = HopUri::parse("sip:nowhere.example").unwrap();
        assert!(matches!(
            run(locate(&hop, &ALL, &dns, &crate::ids::RandomIds)),
            Err(NextHopError::Dns(_))
        ));
    }

    #[test]
    fn srv_order_is_priority_then_weight() {
        let ids = crate::ids::RandomIds;
        for _ in 0..50 {
            let got = order_srv(
                vec![
                    srv(2, 0, 1, "c"),
                    srv(1, 10, 1, "a"),
                    srv(1, 0, 1, "b"),
                    srv(1, 90, 1, "d"),
                ],
                &ids,
            );
            let names: Vec<&str> = got.iter().map(|s| s.target.as_str()).collect();
            assert_eq!(names.len(), 4);
            assert_eq!(names[3], "c");
            assert!(names[..3].contains(&"a") && names[..3].contains(&"b"));
        }
    }
}
