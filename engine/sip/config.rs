//! Configuration of the SIP back end, with the defaults RFC 3261 gives.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Everything [`RsipBackend`](super::RsipBackend) needs to start.
#[derive(Debug, Clone)]
pub struct SipConfig {
    /// UDP socket to bind (`None`: no UDP). Default `127.0.0.1:0`.
    pub udp_listen: Option<SocketAddr>,
    /// TCP listener to bind (`None`: outbound TCP connections only; our Via then names the
    /// connection's own local port). Port 0 picks a free port at start. Default `None`.
    pub tcp_listen: Option<SocketAddr>,
    /// Host written into Via sent-by and the Call-ID. Default: the IP of the first bound
    /// socket.
    pub advertised_host: Option<String>,
    /// Outbound proxy, e.g. `sip:127.0.0.1:5060;transport=udp`. When absent the
    /// Request-URI's host is resolved by RFC 3263 (NAPTR, SRV, A/AAAA).
    pub outbound_proxy: Option<String>,
    /// RFC 3261 timer base values.
    pub timers: Timers,
    /// Digest credentials for 401/407 challenges.
    pub credentials: Option<Credentials>,
    /// TLS client settings, for `transport=tls` / `sips:` next hops.
    pub tls: Option<TlsClient>,
    /// `From:` used when the rules set none (the transaction layer needs a From tag).
    /// Default: `<sip:iwf@ADVERTISED_HOST>`.
    pub default_from: Option<String>,
    /// `User-Agent` of locally generated messages.
    pub user_agent: String,
    /// SO_RCVBUF asked for the UDP socket (DESIGN.md §4: the default buffer drops
    /// responses under load). Default 4 MiB.
    pub udp_recv_buffer: usize,
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            udp_listen: Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)),
            tcp_listen: None,
            advertised_host: None,
            outbound_proxy: None,
            timers: Timers::default(),
            credentials: None,
            tls: None,
            default_from: None,
            user_agent: concat!("iwf/", env!("CARGO_PKG_VERSION")).to_string(),
            udp_recv_buffer: 4 << 20,
        }
    }
}

/// RFC 3261 §17.1.1.1 / Table 4 timer bases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// RTT estimate; Timer E starts here, Timer F = 64·T1. Default 500 ms.
    pub t1: Duration,
    /// Cap of the retransmit interval. Default 4 s.
    pub t2: Duration,
    /// Maximum time a message stays in the network (Timer K on UDP). Default 5 s.
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl Timers {
    /// Timer F (non-INVITE) and Timer B (INVITE): 64·T1.
    pub fn timer_f(&self) -> Duration {
        self.t1 * 64
    }
}

/// Digest credentials (RFC 3261 §22, RFC 2617).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// Answer only challenges of this realm; `None` answers any realm.
    pub realm: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("realm", &self.realm)
            .finish()
    }
}

/// TLS client settings, all PEM. Without `ca_pem` no server certificate verifies
/// (rsipstack installs no implicit trust anchors).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsClient {
    pub ca_pem: Option<Vec<u8>>,
    pub client_cert_pem: Option<Vec<u8>>,
    pub client_key_pem: Option<Vec<u8>>,
    /// SNI / certificate name; default the next hop's host name.
    pub server_name: Option<String>,
}
