//! [`RsipBackend`]: the [`SipBackend`] on rsipstack's transports, with iwf's own MESSAGE
//! transaction and rsipstack's INVITE/BYE transactions.
//!
//! # How rsipstack is driven (DESIGN.md §4)
//!
//! * One `Endpoint` per back end. Its `serve()` runs in a spawned task (it reads the
//!   transports and fires the timers); the task ends when the back end is dropped or
//!   [`RsipBackend::shutdown`] is called (both cancel the endpoint's token).
//! * The UDP socket is made here with a 4 MiB receive buffer and handed over with
//!   `UdpConnection::from_socket`.
//! * MESSAGE runs on iwf's own non-INVITE client transaction
//!   ([`NonInviteClient`](super::transaction), RFC 3261 §17.1.2, sans I/O): the request
//!   is serialized once, written on the chosen connection and again on each Timer E; the
//!   [`ResponseTap`] (rsipstack's `TransportEventInspector`) takes responses whose top Via
//!   branch and CSeq method match a pending MESSAGE out of rsipstack's receive path, before
//!   its endpoint builds a transaction key, and discards malformed ones (§18.1.2). Timer F
//!   ends it as `Failure{Timeout}`, a failed write or a closed stream as
//!   `Failure{Transport}`. rsipstack still parses, owns the sockets and connections, and
//!   runs everything else. Measured why: bench/results/issue15-2026-12-01.md §4.
//! * INVITE and BYE: one rsipstack client transaction per request:
//!   `Transaction::new_client` with the connection and destination already chosen (so
//!   rsipstack does no lookup of its own), `send()`, then `receive()` until a final
//!   response. The future owns the transaction and polls it itself: that is the "owner
//!   polling `receive()`" the timers need, and since nothing else holds the transaction,
//!   dropping the future drops (and detaches) it whole; `receive()` is never raced in a
//!   `select!`.
//! * Timer B/F of those come from rsipstack (T1/T2/T4 and `t1x64` are set from [`Timers`]).
//!   Its Timer F produces a locally made 408, and a failed write on a stream a locally made
//!   503; a `MessageInspector` marks every locally made response (they are the only ones
//!   that reach `after_received` without a source address), so they become
//!   `Failure{Timeout}` / `Failure{Transport}` and a real 408/503 from the peer stays a
//!   `Final`.
//! * A whole delivery (redirects, the authentication retry, DNS, TCP connect) ends within
//!   one Timer F from its start: a follow-up MESSAGE's Timer F is capped at that deadline;
//!   a follow-up INVITE gets an extra Timer B event on rsipstack's timer wheel at it.
//! * TCP/TLS connections are opened here (one per target, reused by every transaction, one
//!   opener per target at a time so a burst does not open one each; [`RsipBackend::connect_proxy`]
//!   opens the proxy's before a burst) and registered with the transport
//!   layer, which reads them. When one closes, the transactions in flight on it end (an
//!   rsipstack one by `TransactionEvent::Terminate`, a MESSAGE by the connection's cancel
//!   token) after a short grace, so a response read just before the close still wins, and
//!   report `Failure{Transport}`.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rsipstack::sip::{self, Header, SipMessage, StatusCodeKind};
use rsipstack::transaction::endpoint::{
    EndpointInner, EndpointOption, MessageInspector, TransportEventInspector,
};
use rsipstack::transaction::key::{TransactionKey, TransactionRole};
use rsipstack::transaction::transaction::{Transaction, TransactionEvent, TransactionEventSender};
use rsipstack::transaction::{EndpointBuilder, TransactionTimer};
use rsipstack::transport::stream::StreamConnection;
use rsipstack::transport::tcp::TcpConnection;
use rsipstack::transport::tls::TlsConnection;
use rsipstack::transport::udp::UdpConnection;
use rsipstack::transport::{
    SipAddr, SipConnection, TcpListenerConnection, TransportEvent, TransportLayer,
};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::config::{Credentials, SipConfig, Timers};
use super::next_hop::{self, Dns, HickoryDns, HopHost, HopUri, Target, Transport};
use super::response::{self, LOCAL_MARKER};
use super::transaction::{Disposition, NonInviteClient, Timeout};
use super::{BoxFuture, InviteOutcome, Session, SipBackend, auth, stamp};
use crate::clock::Clock;
use crate::ids::Ids;
use crate::mail_to_cpm::outcome::{FailureKind, Outcome};
use crate::mail_to_cpm::plan::{Delivery, Stamp};
use crate::render::sip::{render_invite, render_message};

/// RFC 3261 §8.1.3.4 leaves the depth of recursion to the UAC; the project uses 3.
pub const MAX_REDIRECTS: usize = 3;

/// How long a closed connection's transactions wait for a response already read.
const CLOSE_GRACE: Duration = Duration::from_millis(20);

/// Why the back end could not start.
#[derive(Debug, thiserror::Error)]
pub enum SipError {
    #[error("binding {what} {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("outbound proxy: {0}")]
    Proxy(#[from] next_hop::NextHopError),
    #[error("SIP stack: {0}")]
    Stack(String),
}

/// Why a request found no connection to its next hop (the detail of a transport failure).
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// No outbound proxy and a Request-URI that RFC 3263 does not resolve.
    #[error(
        "Request-URI `{uri}` cannot be routed: only sip:/sips: hosts resolve by RFC 3263, a {scheme}: URI needs an outbound proxy"
    )]
    Scheme { uri: String, scheme: String },
    /// The URI to route on is not a SIP URI with a host.
    #[error("{0}")]
    Uri(next_hop::NextHopError),
    #[error("DNS unavailable: {0}")]
    DnsUnavailable(next_hop::ResolverError),
    #[error("DNS resolution did not finish within Timer F")]
    DnsTimeout,
    /// RFC 3263 resolution found no target.
    #[error("next hop: {0}")]
    NextHop(next_hop::NextHopError),
    /// Targets found, none on a transport iwf has (the ones it has).
    #[error("next hop needs a transport that is not configured (have {0:?})")]
    NoTransport(Vec<Transport>),
    /// A BYE with no proxy, no route and no remote target.
    #[error("no route")]
    NoRoute,
    #[error("no target")]
    NoTarget,
    /// The last target tried and why it took no connection.
    #[error("{target}: {error}")]
    Connect { target: Target, error: ConnectError },
}

/// Why one target took no connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("UDP is not configured")]
    NoUdp,
    #[error("connect failed: {0}")]
    Failed(Box<rsipstack::Error>),
    #[error("connect did not finish within Timer F")]
    Timeout,
}

/// Why a request could not be written.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot render the request: {0}")]
    Render(crate::render::sip::RenderError),
    /// A digest challenge arrived and no credentials are configured.
    #[error("no credentials")]
    NoCredentials,
    #[error("{0}")]
    Digest(auth::AuthError),
    /// The peer's Contact, which the BYE goes to, is not a URI.
    #[error("remote target `{uri}`: {error}")]
    RemoteTarget { uri: String, error: sip::Error },
    /// A header value (from the peer's 2xx) the encoder refuses.
    #[error("{0}")]
    Header(crate::render::encoder::EncodeError),
}

/// The SIP back end on rsipstack. Cheap to share behind an `Arc`; dropping the last
/// handle stops the endpoint.
pub struct RsipBackend {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: Arc<EndpointInner>,
    /// Deadlines (Timer F/B budgets) come from here.
    clock: Arc<dyn Clock>,
    /// Via branches, Call-IDs, From tags, digest cnonces, SRV draws.
    ids: Arc<dyn Ids>,
    cancel: rsipstack::platform::CancellationToken,
    timers: Timers,
    host: String,
    udp: Option<(SipConnection, u16)>,
    tcp_port: Option<u16>,
    tls: Option<rsipstack::transport::TlsConfig>,
    proxy: Option<HopUri>,
    default_from: String,
    credentials: Option<Credentials>,
    dns: tokio::sync::OnceCell<Result<HickoryDns, next_hop::ResolverError>>,
    streams: Mutex<HashMap<Target, Stream>>,
    /// One opener per target at a time (a target that hangs does not hold up others).
    connecting: Mutex<HashMap<Target, Arc<tokio::sync::Mutex<()>>>>,
    /// MESSAGE transactions in flight, by Via branch ([`ResponseTap`] feeds them).
    pending: Pending,
}

/// The MESSAGE client transactions waiting for responses, by the branch of their Via.
type Pending = Arc<Mutex<HashMap<String, tokio::sync::mpsc::UnboundedSender<sip::Response>>>>;

/// Takes the responses to iwf's own MESSAGE transactions out of rsipstack's receive path
/// (before the endpoint computes a transaction key for them) and hands each to its
/// transaction; everything else (requests, responses to INVITE/BYE) goes on to rsipstack.
/// A response matches by the branch of its top Via and CSeq method MESSAGE (RFC 3261
/// §17.1.3); one that is not well formed is discarded (§18.1.2).
struct ResponseTap {
    pending: Pending,
}

impl ResponseTap {
    fn take(&self, event: TransportEvent) -> Option<TransportEvent> {
        let TransportEvent::Incoming(SipMessage::Response(resp), conn, from) = event else {
            return Some(event);
        };
        let tu = message_branch(&resp).and_then(|b| lock(&self.pending).get(b).cloned());
        let Some(tu) = tu else {
            return Some(TransportEvent::Incoming(
                SipMessage::Response(resp),
                conn,
                from,
            ));
        };
        match response::malformed(&resp) {
            Some(why) => warn!(%from, %why, "malformed SIP response discarded"),
            None => {
                tu.send(resp).ok();
            }
        }
        None
    }
}

impl TransportEventInspector for ResponseTap {
    fn handle<'a, 'f>(
        &'a self,
        event: TransportEvent,
    ) -> std::pin::Pin<Box<dyn Future<Output = Option<TransportEvent>> + Send + 'f>>
    where
        'a: 'f,
        Self: 'f,
    {
        Box::pin(std::future::ready(self.take(event)))
    }
}

/// The top Via's branch of a response to a MESSAGE, if it is one.
fn message_branch(resp: &sip::Response) -> Option<&str> {
    let (mut via, mut cseq) = (None, None);
    for h in resp.headers.iter() {
        let name = h.name();
        if via.is_none() && (name.eq_ignore_ascii_case("via") || name == "v") {
            via = Some(h.value());
        } else if cseq.is_none() && name.eq_ignore_ascii_case("cseq") {
            cseq = Some(h.value());
        }
        if via.is_some() && cseq.is_some() {
            break;
        }
    }
    if cseq?.split_whitespace().nth(1)? != "MESSAGE" {
        return None;
    }
    let top = via?.split(',').next()?;
    top.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("branch")
            .then(|| value.trim())
    })
}

/// Removes a MESSAGE transaction from [`Pending`] when its driver ends, however it ends.
struct Registered<'a> {
    pending: &'a Pending,
    branch: &'a str,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        lock(self.pending).remove(self.branch);
    }
}

/// A stream connection and the transactions in flight on it.
#[derive(Clone)]
struct Stream {
    conn: SipConnection,
    inflight: Arc<Mutex<HashMap<TransactionKey, TransactionEventSender>>>,
}

/// Marks the responses rsipstack makes itself (Timer F's 408, a failed write's 503).
struct LocalMarker;

impl MessageInspector for LocalMarker {
    fn before_send(&self, msg: SipMessage, _dest: Option<&SipAddr>) -> SipMessage {
        msg
    }
    fn after_received(&self, msg: SipMessage, from: Option<&SipAddr>) -> SipMessage {
        match (msg, from) {
            (SipMessage::Response(mut r), None) => {
                r.headers
                    .push(sip::headers::make_header(LOCAL_MARKER, "1".into()));
                SipMessage::Response(r)
            }
            // RFC 3261 §18.1.2: a response that is not well formed is discarded. rsipstack
            // has no way to drop a message here, so it is turned into a bare 100: the
            // transaction goes on exactly as if nothing had arrived but a provisional
            // response (Timer F still runs, a later good final response still counts).
            (SipMessage::Response(mut r), Some(from)) => {
                if let Some(why) = super::response::malformed(&r) {
                    tracing::warn!(%from, %why, "malformed SIP response discarded");
                    r.status_code = sip::StatusCode::Trying;
                    r.wire_reason = None;
                    r.body.clear();
                    r.headers.retain(|h| {
                        !(h.name().eq_ignore_ascii_case("content-length") || h.name() == "l")
                    });
                }
                SipMessage::Response(r)
            }
            (msg, _) => msg,
        }
    }
}

/// What a delivery sends.
#[derive(Clone, Copy)]
enum Kind<'a> {
    /// Pager mode.
    Message,
    /// Large mode: the SDP offer and our Contact URI.
    Invite { sdp: &'a [u8], contact: &'a str },
}

/// The last final response of a delivery.
struct Exchanged {
    /// The request it answers; kept for INVITE only (the dialog is built from it).
    request: Option<sip::Request>,
    response: sip::Response,
    target: Target,
}

/// How one client transaction ended.
enum TxEnd {
    Final(sip::Response),
    Timeout,
    Transport(String),
}

impl RsipBackend {
    /// Binds the sockets and starts the endpoint. Must run inside a tokio runtime.
    /// Incoming requests are answered 501 (OPTIONS 200); see [`Self::start_with_uas`].
    /// Deadlines are taken on `clock`, branches, Call-IDs and tags drawn from `ids`.
    pub async fn start(
        config: SipConfig,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn Ids>,
    ) -> Result<Self, SipError> {
        Self::start_with_uas(config, None, clock, ids).await
    }

    /// As [`Self::start`], with incoming requests served by `uas` (the CPM → e-mail
    /// direction, [`crate::cpm_to_mail`]).
    pub async fn start_with_uas(
        config: SipConfig,
        uas: Option<Arc<crate::cpm_to_mail::Uas>>,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn Ids>,
    ) -> Result<Self, SipError> {
        let cancel = rsipstack::platform::CancellationToken::new();
        let transport_layer = TransportLayer::new(cancel.clone());
        let mut first_ip = None;

        let udp = match config.udp_listen {
            Some(addr) => {
                let bind = |source| SipError::Bind {
                    what: "UDP",
                    addr,
                    source,
                };
                let sock = std::net::UdpSocket::bind(addr).map_err(bind)?;
                sock.set_nonblocking(true).map_err(bind)?;
                let got = set_recv_buffer(&sock, config.udp_recv_buffer);
                if got < config.udp_recv_buffer {
                    debug!(asked = config.udp_recv_buffer, got, "UDP receive buffer");
                }
                let sock = tokio::net::UdpSocket::from_std(sock).map_err(bind)?;
                let local = sock.local_addr().map_err(bind)?;
                first_ip.get_or_insert(local.ip());
                let conn =
                    UdpConnection::from_socket(Arc::new(sock), None, Some(cancel.child_token()))
                        .await
                        .map_err(|e| SipError::Stack(e.to_string()))?;
                let conn: SipConnection = conn.into();
                transport_layer.add_transport(conn.clone());
                Some((conn, local.port()))
            }
            None => None,
        };

        let tcp_port = match config.tcp_listen {
            Some(mut addr) => {
                if addr.port() == 0 {
                    // rsipstack binds the listener when serving and reports the configured
                    // address, so pick the port here.
                    let probe =
                        std::net::TcpListener::bind(addr).map_err(|source| SipError::Bind {
                            what: "TCP",
                            addr,
                            source,
                        })?;
                    addr = probe.local_addr().map_err(|source| SipError::Bind {
                        what: "TCP",
                        addr,
                        source,
                    })?;
                }
                first_ip.get_or_insert(addr.ip());
                let l = TcpListenerConnection::new(addr, None)
                    .await
                    .map_err(|e| SipError::Stack(e.to_string()))?;
                transport_layer.add_transport(l.into());
                Some(addr.port())
            }
            None => None,
        };

        let tls = config.tls.as_ref().map(|t| {
            // rustls needs one process-wide crypto provider; a second install is refused,
            // which is fine.
            let _ = rustls::crypto::ring::default_provider().install_default();
            rsipstack::transport::TlsConfig {
                ca_certs: t.ca_pem.clone(),
                client_cert: t.client_cert_pem.clone(),
                client_key: t.client_key_pem.clone(),
                sni_hostname: t.server_name.clone(),
                ..Default::default()
            }
        });

        let host = match &config.advertised_host {
            Some(h) => h.clone(),
            None => match first_ip {
                Some(ip) if ip.is_unspecified() => "127.0.0.1".to_string(),
                Some(ip) => ip.to_string(),
                None => "127.0.0.1".to_string(),
            },
        };
        let proxy = config
            .outbound_proxy
            .as_deref()
            .map(HopUri::parse)
            .transpose()?;

        let option = EndpointOption {
            t1: config.timers.t1,
            t2: config.timers.t2,
            t4: config.timers.t4,
            t1x64: config.timers.timer_f(),
            callid_suffix: Some(host.clone()),
            ..Default::default()
        };
        let pending = Pending::default();
        let endpoint = EndpointBuilder::new()
            .with_cancel_token(cancel.clone())
            .with_transport_layer(transport_layer)
            .with_option(option)
            .with_user_agent(&config.user_agent)
            .with_inspector(Box::new(LocalMarker))
            .with_transport_inspector(Box::new(ResponseTap {
                pending: pending.clone(),
            }))
            .build();
        let incoming = endpoint
            .incoming_transactions()
            .map_err(|e| SipError::Stack(e.to_string()))?;
        let inner_ep = endpoint.inner.clone();
        tokio::spawn(async move {
            if let Err(e) = inner_ep.serve().await {
                warn!(error = %e, "SIP endpoint stopped");
            }
        });
        match uas {
            Some(uas) => tokio::spawn(crate::cpm_to_mail::uas::serve(incoming, uas)),
            None => tokio::spawn(refuse_incoming(incoming)),
        };

        let default_from = config
            .default_from
            .clone()
            .unwrap_or_else(|| format!("<sip:iwf@{}>", bracket(&host)));
        Ok(RsipBackend {
            inner: Arc::new(Inner {
                endpoint: endpoint.inner.clone(),
                clock,
                ids,
                cancel,
                timers: config.timers,
                host,
                udp,
                tcp_port,
                tls,
                proxy,
                default_from,
                credentials: config.credentials,
                dns: tokio::sync::OnceCell::new(),
                streams: Mutex::new(HashMap::new()),
                connecting: Mutex::new(HashMap::new()),
                pending,
            }),
        })
    }

    /// The bound UDP address, if UDP is on.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        let (conn, _) = self.inner.udp.as_ref()?;
        conn.get_addr().get_socketaddr().ok()
    }

    /// The TCP listener's port, if one is configured.
    pub fn tcp_port(&self) -> Option<u16> {
        self.inner.tcp_port
    }

    /// Opens the connection(s) to the outbound proxy ahead of a burst (DESIGN.md §4), so
    /// concurrent transactions share it instead of each racing to open one. Does nothing
    /// for UDP or without a proxy.
    pub async fn connect_proxy(&self) -> Result<(), RouteError> {
        let Some(proxy) = self.inner.proxy.clone() else {
            return Ok(());
        };
        let deadline = self.inner.clock.instant() + self.inner.timers.timer_f();
        let targets = self.inner.locate(&proxy, deadline).await?;
        self.inner.connect_any(&targets, deadline).await.map(|_| ())
    }

    /// Stops the endpoint, its sockets and connections.
    pub fn shutdown(&self) {
        self.inner.cancel.cancel();
    }
}

impl Drop for RsipBackend {
    fn drop(&mut self) {
        self.inner.cancel.cancel();
    }
}

impl SipBackend for RsipBackend {
    fn send_message<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, Outcome> {
        Box::pin(self.inner.deliver(delivery))
    }

    fn send_invite<'a>(
        &'a self,
        delivery: &'a Delivery,
        sdp_offer: Vec<u8>,
        contact: &'a str,
    ) -> BoxFuture<'a, InviteOutcome> {
        Box::pin(async move {
            let kind = Kind::Invite {
                sdp: &sdp_offer,
                contact,
            };
            let last = match self.inner.exchange(delivery, kind).await {
                Ok(last) => last,
                Err(outcome) => {
                    return InviteOutcome {
                        outcome,
                        answer: None,
                        session: None,
                    };
                }
            };
            let outcome = response::final_outcome(&last.response, delivery.mode);
            if last.response.status_code.kind() != StatusCodeKind::Successful {
                return InviteOutcome {
                    outcome,
                    answer: None,
                    session: None,
                };
            }
            let session = last.request.as_ref().and_then(|req| {
                InviteSession::from_2xx(self.inner.clone(), req, &last.response, last.target)
            });
            if session.is_none() {
                warn!("2xx to INVITE without the headers a dialog needs (To tag, Contact)");
            }
            InviteOutcome {
                outcome,
                answer: Some(last.response.body.clone()),
                session: session.map(|s| Box::new(s) as Box<dyn Session>),
            }
        })
    }
}

/// A dialog established by a 2xx to our INVITE (RFC 3261 §12.1.2): enough to send BYE.
pub struct InviteSession {
    inner: Arc<Inner>,
    call_id: String,
    /// Our From (with our tag) and the peer's To (with its tag), as sent and received.
    from: String,
    to: String,
    /// The 2xx's Contact URI: the Request-URI of in-dialog requests.
    remote_target: String,
    /// Record-Route reversed, as Route header values.
    routes: Vec<String>,
    /// Where the INVITE went: in-dialog requests go there too when neither a proxy nor a
    /// route set says otherwise and the remote target cannot be resolved.
    invite_target: Target,
    next_cseq: std::sync::atomic::AtomicU32,
}

impl InviteSession {
    fn from_2xx(
        inner: Arc<Inner>,
        invite: &sip::Request,
        ok: &sip::Response,
        invite_target: Target,
    ) -> Option<Self> {
        let to = response::header_value(&ok.headers, "to")?;
        if !to.to_ascii_lowercase().contains(";tag=") {
            return None;
        }
        let contact = response::header_value(&ok.headers, "contact")?;
        let remote_target = response::contacts(&[contact]).into_iter().next()?;
        let cseq = response::header_value(&invite.headers, "cseq")?
            .split_whitespace()
            .next()?
            .parse::<u32>()
            .ok()?;
        Some(InviteSession {
            call_id: response::header_value(&invite.headers, "call-id")?.to_string(),
            from: response::header_value(&invite.headers, "from")?.to_string(),
            to: to.to_string(),
            remote_target,
            routes: response::route_set(ok),
            invite_target,
            next_cseq: std::sync::atomic::AtomicU32::new(cseq.saturating_add(1)),
            inner,
        })
    }

    /// The peer's Contact URI.
    pub fn remote_target(&self) -> &str {
        &self.remote_target
    }

    async fn send_bye(&self) -> Outcome {
        let inner = &self.inner;
        let mode = crate::mail_to_cpm::plan::Mode::Large;
        let fail = |kind: FailureKind, detail: String| response::failure(kind, detail, mode);
        let deadline = inner.clock.instant() + inner.timers.timer_f();
        // Next hop: proxy, else the first route, else the remote target (RFC 3261 §12.2.1.1
        // with loose routing), else where the INVITE went.
        let hop_text = match self.routes.first() {
            Some(r) => response::contacts(&[r.as_str()]).into_iter().next(),
            None => Some(self.remote_target.clone()),
        };
        let targets = match (&inner.proxy, hop_text) {
            (Some(p), _) => inner.locate(p, deadline).await,
            (None, Some(uri)) => match HopUri::parse(&uri) {
                Ok(h) => inner.locate(&h, deadline).await,
                Err(e) => Err(RouteError::Uri(e)),
            },
            (None, None) => Err(RouteError::NoRoute),
        }
        .unwrap_or_else(|_| vec![self.invite_target]);
        let (target, conn, stream) = match inner.connect_any(&targets, deadline).await {
            Ok(c) => c,
            Err(d) => return fail(FailureKind::Transport, d.to_string()),
        };
        let sent_by = inner.sent_by(target.transport, &conn);
        let cseq = self
            .next_cseq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let request = match self.bye_request(target.transport, &sent_by, cseq) {
            Ok(r) => r,
            Err(d) => return fail(FailureKind::Transport, d.to_string()),
        };
        let dest = SipAddr {
            r#type: Some(target.transport.to_rsip()),
            addr: target.addr.into(),
        };
        match inner
            .run_transaction(request, conn, dest, stream, Some(deadline))
            .await
        {
            TxEnd::Final(r) => response::final_outcome(&r, mode),
            TxEnd::Timeout => fail(
                FailureKind::Timeout,
                format!("no final response to BYE from {target} within Timer F"),
            ),
            TxEnd::Transport(d) => fail(FailureKind::Transport, format!("{target}: {d}")),
        }
    }

    fn bye_request(
        &self,
        transport: Transport,
        sent_by: &str,
        cseq: u32,
    ) -> Result<sip::Request, BuildError> {
        let uri = sip::Uri::try_from(self.remote_target.as_str()).map_err(|error| {
            BuildError::RemoteTarget {
                uri: self.remote_target.clone(),
                error,
            }
        })?;
        let mut lines: Vec<(String, String)> = vec![(
            "Via".into(),
            format!(
                "SIP/2.0/{} {sent_by};branch={}",
                transport.via_name(),
                stamp::new_branch(&*self.inner.ids)
            ),
        )];
        lines.push(("Max-Forwards".into(), "70".into()));
        for r in &self.routes {
            lines.push(("Route".into(), r.clone()));
        }
        lines.push(("From".into(), self.from.clone()));
        lines.push(("To".into(), self.to.clone()));
        lines.push(("Call-ID".into(), self.call_id.clone()));
        lines.push(("CSeq".into(), format!("{cseq} BYE")));
        lines.push(("Content-Length".into(), "0".into()));
        let mut headers = Vec::with_capacity(lines.len());
        for (n, v) in lines {
            // Values from the peer's 2xx go through the one encoder too.
            let (n, v) = crate::render::encoder::header(&n, &v).map_err(BuildError::Header)?;
            headers.push(sip::headers::make_header(&n, v));
        }
        Ok(sip::Request {
            method: sip::Method::Bye,
            uri,
            version: sip::Version::V2,
            headers: headers.into(),
            body: vec![],
        })
    }
}

impl Session for InviteSession {
    fn call_id(&self) -> &str {
        &self.call_id
    }

    fn bye(&self) -> BoxFuture<'_, Outcome> {
        Box::pin(self.send_bye())
    }
}

/// Requests sent to the back end's own sockets: the reverse direction is not served yet.
async fn refuse_incoming(mut incoming: rsipstack::transaction::TransactionReceiver) {
    while let Some(mut tx) = incoming.recv().await {
        tokio::spawn(async move {
            let code = match tx.original.method {
                sip::Method::Ack => return,
                sip::Method::Options => sip::StatusCode::OK,
                _ => sip::StatusCode::NotImplemented,
            };
            tx.reply(code).await.ok();
        });
    }
}

fn bracket(host: &str) -> Cow<'_, str> {
    if host.contains(':') && !host.starts_with('[') {
        Cow::Owned(format!("[{host}]"))
    } else {
        Cow::Borrowed(host)
    }
}

impl Inner {
    async fn deliver(&self, delivery: &Delivery) -> Outcome {
        match self.exchange(delivery, Kind::Message).await {
            Ok(last) => response::final_outcome(&last.response, delivery.mode),
            Err(failure) => failure,
        }
    }

    /// Sends the request of `kind` for `delivery`, following redirects and one digest
    /// challenge, and returns the last final response (with the request it answers), or
    /// the failure outcome when there is none.
    async fn exchange(&self, delivery: &Delivery, kind: Kind<'_>) -> Result<Exchanged, Outcome> {
        let mode = delivery.mode;
        let fail = |kind: FailureKind, detail: String| response::failure(kind, detail, mode);
        let deadline = self.clock.instant() + self.timers.timer_f();
        let base = self.base_delivery(delivery);
        let mut request_uri = delivery.request_uri.clone();
        let mut tried = vec![request_uri.clone()];
        let mut redirect_queue: VecDeque<String> = VecDeque::new();
        let mut redirects = 0;
        let mut authorization: Option<(&'static str, auth::Challenge)> = None;
        let mut auth_used = false;
        let mut prev: Option<Stamp> = None;
        loop {
            let hop = self
                .hop_for(&request_uri)
                .map_err(|d| fail(FailureKind::Transport, d.to_string()))?;
            let targets = self
                .locate(&hop, deadline)
                .await
                .map_err(|d| fail(FailureKind::Transport, d.to_string()))?;
            let (target, conn, stream) =
                self.connect_any(&targets, deadline).await.map_err(|d| {
                    if self.clock.instant() >= deadline {
                        fail(FailureKind::Timeout, d.to_string())
                    } else {
                        fail(FailureKind::Transport, d.to_string())
                    }
                })?;
            let sent_by = self.sent_by(target.transport, &conn);
            let stamp = match &prev {
                None => {
                    let s = stamp::first(
                        &*self.ids,
                        target.transport.via_name(),
                        &sent_by,
                        &self.host,
                    );
                    crate::ops::logging::note_call_id(&s.call_id);
                    s
                }
                Some(p) => stamp::follow_up(&*self.ids, p, target.transport.via_name(), &sent_by),
            };
            let mut request = self
                .render(&base, &request_uri, &stamp, kind)
                .map_err(|d| fail(FailureKind::Transport, d.to_string()))?;
            if let Some((header, challenge)) = authorization.take() {
                let value = self.authorize(&challenge, &request).map_err(|e| {
                    fail(
                        FailureKind::Transport,
                        format!("cannot answer the digest challenge: {e}"),
                    )
                })?;
                insert_before_content_type(&mut request, header, value);
            }
            let dest = SipAddr {
                r#type: Some(target.transport.to_rsip()),
                addr: target.addr.into(),
            };
            let sent = matches!(kind, Kind::Invite { .. }).then(|| request.clone());
            let followup = (redirects > 0 || auth_used).then_some(deadline);
            let end = match kind {
                Kind::Message => {
                    self.run_message(request, &stamp.branch, conn, dest, followup)
                        .await
                }
                Kind::Invite { .. } => {
                    self.run_transaction(request, conn, dest, stream, followup)
                        .await
                }
            };
            prev = Some(stamp);
            let resp = match end {
                TxEnd::Final(r) => r,
                TxEnd::Timeout => {
                    return Err(fail(
                        FailureKind::Timeout,
                        format!(
                            "no final response from {target} within Timer {} ({} ms)",
                            if sent.is_some() { "B" } else { "F" },
                            self.timers.timer_f().as_millis()
                        ),
                    ));
                }
                TxEnd::Transport(d) => {
                    return Err(fail(FailureKind::Transport, format!("{target}: {d}")));
                }
            };
            let code = resp.status_code.code();
            match code {
                300..=399 => {
                    for c in response::redirect_targets(&resp) {
                        if !tried.contains(&c) && !redirect_queue.contains(&c) {
                            redirect_queue.push_back(c);
                        }
                    }
                    if redirects < MAX_REDIRECTS
                        && let Some(next) = redirect_queue.pop_front()
                    {
                        debug!(from = %request_uri, to = %next, code, "following redirect");
                        tried.push(next.clone());
                        request_uri = next;
                        redirects += 1;
                        continue;
                    }
                }
                401 | 407 if !auth_used && self.credentials.is_some() => {
                    if let Some(c) = challenge_of(&resp, code) {
                        auth_used = true;
                        let header = if code == 401 {
                            "Authorization"
                        } else {
                            "Proxy-Authorization"
                        };
                        authorization = Some((header, c));
                        continue;
                    }
                }
                _ => {}
            }
            return Ok(Exchanged {
                request: sent,
                response: resp,
                target,
            });
        }
    }

    /// The delivery as rendered: with our default From when the rules set none, and the
    /// original To kept when a redirect changes the Request-URI.
    fn base_delivery<'d>(&self, delivery: &'d Delivery) -> Cow<'d, Delivery> {
        let has = |n: &str| {
            delivery
                .headers
                .iter()
                .any(|(h, _)| h.eq_ignore_ascii_case(n))
        };
        if has("from") && has("to") {
            return Cow::Borrowed(delivery);
        }
        let mut d = delivery.clone();
        if !has("from") {
            d.headers.push(("From".into(), self.default_from.clone()));
        }
        if !has("to") {
            d.headers
                .push(("To".into(), format!("<{}>", delivery.request_uri)));
        }
        Cow::Owned(d)
    }

    fn render(
        &self,
        base: &Delivery,
        request_uri: &str,
        stamp: &Stamp,
        kind: Kind<'_>,
    ) -> Result<sip::Request, BuildError> {
        let redirected;
        let d = if base.request_uri == request_uri {
            base
        } else {
            let mut d = base.clone();
            d.request_uri = request_uri.to_string();
            redirected = d;
            &redirected
        };
        match kind {
            Kind::Message => render_message(d, stamp),
            Kind::Invite { sdp, contact } => render_invite(d, stamp, sdp.to_vec(), contact),
        }
        .map_err(BuildError::Render)
    }

    fn authorize(
        &self,
        challenge: &auth::Challenge,
        request: &sip::Request,
    ) -> Result<String, BuildError> {
        let Some(c) = &self.credentials else {
            return Err(BuildError::NoCredentials);
        };
        auth::authorization(
            &*self.ids,
            challenge,
            &c.username,
            &c.password,
            c.realm.as_deref(),
            &request.method.to_string(),
            &request.uri.to_string(),
        )
        .map_err(BuildError::Digest)
    }

    /// The next hop's URI: the outbound proxy, else the Request-URI.
    fn hop_for(&self, request_uri: &str) -> Result<HopUri, RouteError> {
        if let Some(p) = &self.proxy {
            return Ok(p.clone());
        }
        let scheme = request_uri
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if scheme != "sip" && scheme != "sips" {
            return Err(RouteError::Scheme {
                uri: request_uri.to_string(),
                scheme,
            });
        }
        HopUri::parse(request_uri).map_err(RouteError::Uri)
    }

    fn supported(&self) -> Vec<Transport> {
        let mut t = Vec::with_capacity(3);
        if self.udp.is_some() {
            t.push(Transport::Udp);
        }
        t.push(Transport::Tcp);
        if self.tls.is_some() {
            t.push(Transport::Tls);
        }
        t
    }

    async fn locate(&self, hop: &HopUri, deadline: Instant) -> Result<Vec<Target>, RouteError> {
        let supported = self.supported();
        let targets = if let HopHost::Ip(_) = hop.host {
            next_hop::locate(hop, &supported, &NoDns, &*self.ids).await
        } else {
            let dns = self
                .dns
                .get_or_init(|| async { HickoryDns::from_system() })
                .await
                .as_ref()
                .map_err(|e| RouteError::DnsUnavailable(e.clone()))?;
            tokio::time::timeout_at(deadline, next_hop::locate(hop, &supported, dns, &*self.ids))
                .await
                .map_err(|_| RouteError::DnsTimeout)?
        }
        .map_err(RouteError::NextHop)?;
        let usable: Vec<Target> = targets
            .into_iter()
            .filter(|t| supported.contains(&t.transport))
            .collect();
        if usable.is_empty() {
            return Err(RouteError::NoTransport(supported));
        }
        Ok(usable)
    }

    /// A connection to the first target that takes one (RFC 3263 §4.3 failover).
    async fn connect_any(
        &self,
        targets: &[Target],
        deadline: Instant,
    ) -> Result<(Target, SipConnection, Option<Stream>), RouteError> {
        let mut last_error = RouteError::NoTarget;
        for target in targets {
            match self.connect(*target, deadline).await {
                Ok((conn, stream)) => return Ok((*target, conn, stream)),
                Err(error) => {
                    debug!(%target, %error, "next hop failed");
                    last_error = RouteError::Connect {
                        target: *target,
                        error,
                    };
                }
            }
        }
        Err(last_error)
    }

    async fn connect(
        &self,
        target: Target,
        deadline: Instant,
    ) -> Result<(SipConnection, Option<Stream>), ConnectError> {
        if target.transport == Transport::Udp {
            return match &self.udp {
                Some((conn, _)) => Ok((conn.clone(), None)),
                None => Err(ConnectError::NoUdp),
            };
        }
        if let Some(s) = self.cached_stream(&target) {
            return Ok((s.conn.clone(), Some(s)));
        }
        let opener = lock(&self.connecting).entry(target).or_default().clone();
        let _guard = opener.lock().await;
        if let Some(s) = self.cached_stream(&target) {
            return Ok((s.conn.clone(), Some(s)));
        }
        let addr = SipAddr {
            r#type: Some(target.transport.to_rsip()),
            addr: target.addr.into(),
        };
        let token = Some(self.cancel.child_token());
        let opening = async {
            match target.transport {
                Transport::Tls => TlsConnection::connect(&addr, self.tls.as_ref(), None, token)
                    .await
                    .map(SipConnection::Tls),
                _ => TcpConnection::connect(&addr, token)
                    .await
                    .map(SipConnection::Tcp),
            }
        };
        let conn = match tokio::time::timeout_at(deadline, opening).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(ConnectError::Failed(Box::new(e))),
            Err(_) => return Err(ConnectError::Timeout),
        };
        self.endpoint.transport_layer.add_connection(conn.clone());
        let stream = Stream {
            conn: conn.clone(),
            inflight: Arc::new(Mutex::new(HashMap::new())),
        };
        if let Some(token) = conn.cancel_token() {
            let inflight = stream.inflight.clone();
            tokio::spawn(async move {
                token.cancelled().await;
                tokio::time::sleep(CLOSE_GRACE).await;
                let waiting: Vec<_> = lock(&inflight).drain().collect();
                for (key, tu) in waiting {
                    tu.send(TransactionEvent::Terminate(key)).ok();
                }
            });
        }
        lock(&self.streams).insert(target, stream.clone());
        Ok((conn, Some(stream)))
    }

    fn cached_stream(&self, target: &Target) -> Option<Stream> {
        let mut streams = lock(&self.streams);
        let s = streams.get(target)?;
        if s.conn.cancel_token().is_some_and(|t| t.is_cancelled()) {
            streams.remove(target);
            return None;
        }
        Some(s.clone())
    }

    /// Via sent-by: the advertised host with the port of the socket that sends.
    fn sent_by(&self, transport: Transport, conn: &SipConnection) -> String {
        let port = match transport {
            Transport::Udp => self.udp.as_ref().map(|(_, p)| *p),
            Transport::Tcp => self.tcp_port,
            Transport::Tls => None,
        }
        .or_else(|| conn.get_addr().get_socketaddr().ok().map(|a| a.port()))
        .unwrap_or(transport.default_port());
        stamp::sent_by(&self.host, port)
    }

    /// One MESSAGE client transaction on iwf's own state machine
    /// ([`NonInviteClient`]): the request is serialized once and written again on each
    /// Timer E; responses arrive through [`ResponseTap`]; a stream that closes ends it
    /// (after [`CLOSE_GRACE`], so a response read just before the close still wins).
    async fn run_message(
        &self,
        request: sip::Request,
        branch: &str,
        conn: SipConnection,
        dest: SipAddr,
        deadline: Option<Instant>,
    ) -> TxEnd {
        let bytes = SipMessage::Request(request).to_bytes();
        let (tu, mut responses) = tokio::sync::mpsc::unbounded_channel();
        lock(&self.pending).insert(branch.to_string(), tu);
        let _registered = Registered {
            pending: &self.pending,
            branch,
        };
        let reliable = conn.is_reliable();
        let mut tx = NonInviteClient::new(self.clock.instant(), reliable, self.timers, deadline);
        // A stream whose peer does not read blocks the write: Timer F bounds it too.
        match tokio::time::timeout_at(tx.timer_f(), send_raw(&conn, &bytes, &dest)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tx.on_transport_error();
                return TxEnd::Transport(format!("send failed: {e}"));
            }
            Err(_) => {
                // Part of the request may be on the stream: its framing is lost, so the
                // connection is closed rather than reused.
                if let Some(token) = conn.cancel_token().filter(|_| reliable) {
                    token.cancel();
                }
                return TxEnd::Timeout;
            }
        }
        // A stream's token fires when it closes; the UDP socket's when the back end stops.
        let closed = conn.cancel_token();
        let closed = async move {
            match closed {
                Some(token) => {
                    token.cancelled().await;
                    tokio::time::sleep(CLOSE_GRACE).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::pin!(closed);
        while let Some(wake) = tx.poll_timeout() {
            tokio::select! {
                biased;
                resp = responses.recv() => {
                    let Some(resp) = resp else { break };
                    let code = resp.status_code.code();
                    if tx.on_response(code, self.clock.instant()) == Disposition::Final {
                        return TxEnd::Final(resp);
                    }
                }
                () = &mut closed => {
                    tx.on_transport_error();
                    let what = if reliable {
                        "connection closed before a final response"
                    } else {
                        "SIP back end stopped before a final response"
                    };
                    return TxEnd::Transport(what.into());
                }
                () = tokio::time::sleep_until(wake) => {
                    match tx.handle_timeout(self.clock.instant().max(wake)) {
                        Some(Timeout::Retransmit) => {
                            if let Err(e) = send_raw(&conn, &bytes, &dest).await {
                                tx.on_transport_error();
                                return TxEnd::Transport(format!("retransmission failed: {e}"));
                            }
                        }
                        Some(Timeout::TimedOut) => return TxEnd::Timeout,
                        None => {}
                    }
                }
            }
        }
        TxEnd::Transport("the transaction ended without a final response".into())
    }

    /// One client transaction, polled here until its final response (see module docs).
    async fn run_transaction(
        &self,
        request: sip::Request,
        conn: SipConnection,
        dest: SipAddr,
        stream: Option<Stream>,
        deadline: Option<Instant>,
    ) -> TxEnd {
        let key = match TransactionKey::from_request(&request, TransactionRole::Client) {
            Ok(k) => k,
            Err(e) => return TxEnd::Transport(format!("request lacks transaction ids: {e}")),
        };
        let mut tx =
            Transaction::new_client(key.clone(), request, self.endpoint.clone(), Some(conn));
        tx.destination = Some(dest);
        // A follow-up ends with the delivery's Timer F, not its own.
        let extra_timer = deadline.map(|d| {
            self.endpoint
                .timers
                .timeout_at(d.into_std(), TransactionTimer::TimerB(key.clone()))
        });
        if let Some(s) = &stream {
            lock(&s.inflight).insert(key.clone(), tx.tu_sender.clone());
        }
        let end = drive(&mut tx).await;
        if let Some(s) = &stream {
            lock(&s.inflight).remove(&key);
        }
        if let Some(id) = extra_timer {
            self.endpoint.timers.cancel(id);
        }
        end
    }
}

async fn drive(tx: &mut Transaction) -> TxEnd {
    if let Err(e) = tx.send().await {
        return TxEnd::Transport(format!("send failed: {e}"));
    }
    while let Some(msg) = tx.receive().await {
        let SipMessage::Response(resp) = msg else {
            continue;
        };
        if resp.status_code.kind() == StatusCodeKind::Provisional {
            continue;
        }
        let local = resp
            .headers
            .iter()
            .any(|h| h.name().eq_ignore_ascii_case(LOCAL_MARKER));
        if local {
            return if resp.status_code.code() == 408 {
                TxEnd::Timeout
            } else {
                TxEnd::Transport("write on the connection failed".into())
            };
        }
        return TxEnd::Final(resp);
    }
    TxEnd::Transport("connection closed before a final response".into())
}

/// Writes a serialized request on `conn` (to `dest` on UDP). [`Inner::connect`] only ever
/// hands out UDP, TCP and TLS connections; any other kind is refused, not re-parsed.
async fn send_raw(conn: &SipConnection, bytes: &[u8], dest: &SipAddr) -> rsipstack::Result<()> {
    match conn {
        SipConnection::Udp(udp) => udp.send_raw(bytes, dest).await,
        SipConnection::Tcp(tcp) => tcp.send_raw(bytes).await,
        SipConnection::Tls(tls) => tls.send_raw(bytes).await,
        other => Err(rsipstack::Error::TransportLayerError(
            "not a connection iwf sends MESSAGE on".into(),
            other.get_addr().clone(),
        )),
    }
}

/// The first Digest challenge of a 401 (WWW-Authenticate) or 407 (Proxy-Authenticate).
fn challenge_of(resp: &sip::Response, code: u16) -> Option<auth::Challenge> {
    let want = if code == 401 {
        "www-authenticate"
    } else {
        "proxy-authenticate"
    };
    resp.headers
        .iter()
        .filter(|h| h.name().eq_ignore_ascii_case(want))
        .find_map(|h| auth::Challenge::parse(h.value()).ok())
}

fn insert_before_content_type(req: &mut sip::Request, name: &str, value: String) {
    let mut headers: Vec<Header> = req.headers.iter().cloned().collect();
    let at = headers
        .iter()
        .position(|h| matches!(h, Header::ContentType(_)))
        .unwrap_or(headers.len());
    headers.insert(at, sip::headers::make_header(name, value));
    req.headers = headers.into();
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// For IP next hops: `locate` never asks.
struct NoDns;

impl Dns for NoDns {
    fn naptr<'a>(
        &'a self,
        _: &'a str,
    ) -> BoxFuture<'a, Result<Vec<next_hop::Naptr>, next_hop::LookupError>> {
        Box::pin(async { Ok(vec![]) })
    }
    fn srv<'a>(
        &'a self,
        _: &'a str,
    ) -> BoxFuture<'a, Result<Vec<next_hop::Srv>, next_hop::LookupError>> {
        Box::pin(async { Ok(vec![]) })
    }
    fn ip<'a>(
        &'a self,
        _: &'a str,
    ) -> BoxFuture<'a, Result<Vec<std::net::IpAddr>, next_hop::LookupError>> {
        Box::pin(async { Ok(vec![]) })
    }
}

/// Asks for an `SO_RCVBUF` of `bytes` and returns what the kernel granted (Linux doubles
/// the figure it reports). std and tokio expose no setter for UDP and the project adds no
/// dependency for it, hence the two libc calls.
#[cfg(target_os = "linux")]
fn set_recv_buffer(sock: &std::net::UdpSocket, bytes: usize) -> usize {
    use std::ffi::c_void;
    use std::os::fd::AsRawFd;
    unsafe extern "C" {
        fn setsockopt(fd: i32, level: i32, name: i32, value: *const c_void, len: u32) -> i32;
        fn getsockopt(fd: i32, level: i32, name: i32, value: *mut c_void, len: *mut u32) -> i32;
    }
    const SOL_SOCKET: i32 = 1;
    const SO_RCVBUF: i32 = 8;
    const SO_RCVBUFFORCE: i32 = 33;
    let fd = sock.as_raw_fd();
    let want = i32::try_from(bytes).unwrap_or(i32::MAX);
    let get = || {
        let mut v: i32 = 0;
        let mut len = std::mem::size_of::<i32>() as u32;
        // SAFETY: fd is an open socket owned by `sock`; v/len point to live locals of the
        // sizes passed.
        let rc = unsafe { getsockopt(fd, SOL_SOCKET, SO_RCVBUF, (&raw mut v).cast(), &mut len) };
        if rc == 0 { v.max(0) as usize / 2 } else { 0 }
    };
    for opt in [SO_RCVBUF, SO_RCVBUFFORCE] {
        // SAFETY: as above; `want` lives for the call and its size is passed.
        unsafe {
            setsockopt(
                fd,
                SOL_SOCKET,
                opt,
                (&raw const want).cast(),
                std::mem::size_of::<i32>() as u32,
            );
        }
        if get() >= bytes {
            break;
        }
    }
    get()
}

#[cfg(not(target_os = "linux"))]
fn set_recv_buffer(_sock: &std::net::UdpSocket, _bytes: usize) -> usize {
    0
}
