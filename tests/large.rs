//! Large Message Mode (INVITE + MSRP) end to end, through the real `iwf serve` binary:
//! an SMTP client sends a mail, iwf delivers it to a peer on loopback, and the DATA reply
//! is checked.
//!
//! * Against Kamailio (`tests/peers/kamailio/`), the real SIP answerer and MSRP endpoint.
//!   Kamailio keeps nothing it receives, so its SDP `a=path` points at a small recording
//!   proxy in this test that forwards every byte both ways between iwf and Kamailio's MSRP
//!   port and parses both directions with iwf's codec: the SEND chunks iwf wrote are
//!   reassembled and compared byte for byte with the mail, and every chunk must have been
//!   answered 200 by Kamailio. This keeps Kamailio the MSRP peer (its 200s are what iwf
//!   waits for) without capture privileges (tshark) or timing races of a sniffer, and lets
//!   the test hold back Kamailio's last 200 to show the SMTP reply waits for it.
//! * Failure cases use iwf's own `Answerer` (SIP, any status or silence) and `Receiver`
//!   (MSRP, with fault injection): each gives the mapped SMTP reply, never a 250.
//!
//! Missing peer binaries (kamailio, swaks) print "skipped: … not installed"; CI installs
//! them. Everything is on 127.0.0.1 and stopped when the test ends.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use iwf::msrp::codec::{Flag, Limits, Method, Request};
use iwf::msrp::{Fault, Frame, Parser, ReceivedMessage, Receiver, ReceiverConfig};
use iwf::sip::answerer::default_reply;
use iwf::sip::{Answerer, AnswererConfig, ReceivedRequest, Reply};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Bounds every test, whatever hangs.
const TEST_LIMIT: Duration = Duration::from_secs(120);

fn installed(bin: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A port free on 127.0.0.1 for both TCP and UDP (Kamailio listens on both).
fn free_port() -> u16 {
    loop {
        let t = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = t.local_addr().expect("addr").port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

// ---------------------------------------------------------------------------------------
// The mail
// ---------------------------------------------------------------------------------------

/// A text mail whose body is `body_len` octets of 76-character lines (CRLF) of varied
/// printable characters (no '.', '%' or '\\', so no dot-stuffing and no swaks tokens).
fn mail(body_len: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_ ";
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let mut body = Vec::with_capacity(body_len);
    let mut col = 0;
    while body.len() < body_len {
        if col == 76 || body.len() + 2 >= body_len {
            body.extend_from_slice(b"\r\n");
            col = 0;
            continue;
        }
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        body.push(ALPHABET[(x >> 33) as usize % ALPHABET.len()]);
        col += 1;
    }
    body.truncate(body_len);
    if !body.ends_with(b"\r\n") {
        body.truncate(body_len - 2);
        body.extend_from_slice(b"\r\n");
    }
    let head = format!(
        "From: Mail Sender <sender@example.org>\r\nTo: <alice@cpm.example.net>\r\n\
         Subject: large mail {body_len}\r\nMessage-ID: <large-{seed}-{body_len}@example.org>\r\n\
         Date: Sun, 22 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    );
    let mut m = head.into_bytes();
    m.extend_from_slice(&body);
    (m, body)
}

/// The text entity inside a CPIM document: what follows the second blank line.
fn cpim_inner(doc: &[u8]) -> &[u8] {
    let blank = |from: usize| {
        doc[from..]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|p| p + from + 4)
            .unwrap_or_else(|| panic!("no blank line in CPIM document"))
    };
    &doc[blank(blank(0))..]
}

// ---------------------------------------------------------------------------------------
// SMTP client
// ---------------------------------------------------------------------------------------

/// A minimal SMTP client: sends one mail to `alice@cpm.example.net` and returns the reply
/// to the end of DATA, and when it came.
async fn smtp_send(addr: SocketAddr, mail: &[u8]) -> (String, Instant) {
    let stream = TcpStream::connect(addr).await.expect("connect to iwf");
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    async fn reply(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).await.expect("read") == 0 {
                panic!("iwf closed the SMTP connection; so far: {all}");
            }
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all.trim_end().to_string();
            }
        }
    }
    assert!(reply(&mut r).await.starts_with("220"));
    for (cmd, want) in [
        ("EHLO client.example.org\r\n", "250"),
        ("MAIL FROM:<sender@example.org>\r\n", "250"),
        ("RCPT TO:<alice@cpm.example.net>\r\n", "250"),
        ("DATA\r\n", "354"),
    ] {
        w.write_all(cmd.as_bytes()).await.expect("write");
        let got = reply(&mut r).await;
        assert!(got.starts_with(want), "{cmd:?} answered {got:?}");
    }
    w.write_all(mail).await.expect("write");
    w.write_all(b".\r\n").await.expect("write");
    let got = reply(&mut r).await;
    let at = Instant::now();
    let _ = w.write_all(b"QUIT\r\n").await;
    (got, at)
}

/// Sends `mail_file` with swaks and returns the reply to the end of DATA.
async fn swaks_send(addr: SocketAddr, mail_file: &std::path::Path) -> String {
    let out = tokio::process::Command::new("swaks")
        .args([
            "--server",
            &addr.to_string(),
            "--from",
            "sender@example.org",
            "--to",
            "alice@cpm.example.net",
            "--data",
            &format!("@{}", mail_file.display()),
            "--suppress-data",
            "--timeout",
            "60",
        ])
        .kill_on_drop(true)
        .output()
        .await
        .expect("run swaks");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    // The reply after the data (swaks marks received lines `<-`, errors `<**`).
    let lines: Vec<&str> = text.lines().collect();
    let after_data = lines
        .iter()
        .rposition(|l| l.contains("-> ") && l.contains("lines sent"))
        .or_else(|| lines.iter().rposition(|l| l.trim_end().ends_with("-> .")))
        .unwrap_or_else(|| panic!("no data in swaks transcript:\n{text}"));
    lines[after_data + 1..]
        .iter()
        .find(|l| l.starts_with("<-") || l.starts_with("<**"))
        .map(|l| l.trim_start_matches(['<', '-', '*', ' ']).to_string())
        .unwrap_or_else(|| panic!("no DATA reply in swaks transcript:\n{text}"))
}

// ---------------------------------------------------------------------------------------
// iwf serve
// ---------------------------------------------------------------------------------------

/// A running `iwf serve` process; killed when dropped.
struct Iwf {
    _child: tokio::process::Child,
    smtp: SocketAddr,
    log: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Iwf {
    /// Starts `iwf serve` with `next_hop` and the extra YAML (e.g. `timers:` or `large:`).
    async fn start(next_hop: &str, extra_yaml: &str) -> Iwf {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("iwf.yaml");
        std::fs::write(
            &cfg,
            format!(
                "rules: {}/rules\nsmtp_listen: 127.0.0.1:0\nsip_listen: 127.0.0.1:0\nnext_hop: \"{next_hop}\"\n{extra_yaml}",
                env!("CARGO_MANIFEST_DIR")
            ),
        )
        .expect("write config");
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_iwf"))
            .arg("serve")
            .arg("--config")
            .arg(&cfg)
            // Its state (the SQLite store in ./state) stays in the test's directory.
            .current_dir(dir.path())
            .env("RUST_LOG", "warn,iwf=info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn iwf");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        // Drain both pipes for the process's whole life (a full pipe would block iwf).
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        for (pipe, tx) in [
            (
                Box::new(stdout) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                tx.clone(),
            ),
            (Box::new(stderr), tx),
        ] {
            let log = log.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(pipe).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    log.lock().unwrap().push_str(&format!("{l}\n"));
                    let _ = tx.send(l);
                }
            });
        }
        let smtp = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(l) = rx.recv().await {
                if let Some(a) = l.split("ESMTP listening on ").nth(1) {
                    return a.trim().parse::<SocketAddr>().expect("address");
                }
            }
            panic!("iwf ended before listening");
        })
        .await
        .unwrap_or_else(|_| panic!("iwf did not start: {}", log.lock().unwrap()));
        Iwf {
            _child: child,
            smtp,
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

// ---------------------------------------------------------------------------------------
// Kamailio
// ---------------------------------------------------------------------------------------

/// Kamailio from `tests/peers/kamailio/kamailio-msrp.cfg` on fresh loopback ports; stopped
/// (SIGTERM to its main process, which stops its children) when dropped.
struct Kamailio {
    child: std::process::Child,
    sip_port: u16,
    msrp_port: u16,
    dir: tempfile::TempDir,
}

impl Kamailio {
    /// `path_port`: the MSRP port its SDP answer points at (None: its own).
    fn start(path_port: Option<u16>) -> Option<Kamailio> {
        if !installed("kamailio") {
            println!("skipped: kamailio not installed");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let sip_port = free_port();
        let msrp_port = free_port();
        let template = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/peers/kamailio/kamailio-msrp.cfg"
        ))
        .expect("kamailio cfg");
        let cfg = template
            .replace("@SIP_PORT@", &sip_port.to_string())
            .replace("@MSRP_PORT@", &msrp_port.to_string())
            .replace("@PATH_PORT@", &path_port.unwrap_or(msrp_port).to_string());
        let cfg_path = dir.path().join("kamailio.cfg");
        std::fs::write(&cfg_path, cfg).expect("write cfg");
        let log = std::fs::File::create(dir.path().join("kam.log")).expect("log");
        let d = dir.path().to_str().expect("utf-8 path").to_string();
        let child = std::process::Command::new("kamailio")
            .args(["-f", cfg_path.to_str().expect("path"), "-DD", "-E"])
            .args(["-Y", &d, "-w", &d, "-m", "64", "-M", "8"])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn kamailio");
        let k = Kamailio {
            child,
            sip_port,
            msrp_port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", k.msrp_port)).is_err()
            || std::net::TcpStream::connect(("127.0.0.1", k.sip_port)).is_err()
        {
            assert!(
                Instant::now() < deadline,
                "kamailio did not start: {}",
                k.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(k)
    }

    fn next_hop(&self, transport: &str) -> String {
        format!("sip:127.0.0.1:{};transport={transport}", self.sip_port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kam.log")).unwrap_or_default()
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// Recording MSRP proxy between iwf and Kamailio
// ---------------------------------------------------------------------------------------

/// What went through one MSRP connection.
#[derive(Default)]
struct ConnLog {
    /// Requests iwf sent, in order.
    requests: Vec<Request>,
    /// Responses the peer sent: (tid, status).
    responses: Vec<(String, u16)>,
    /// Transaction ids of chunks flagged `$` (the last of a message).
    last_tids: HashSet<String>,
    /// When the response to a last chunk was passed on to iwf.
    last_answer_forwarded: Option<Instant>,
}

struct Recorder {
    addr: SocketAddr,
    /// Where connections are forwarded; set once the peer is up.
    upstream: Arc<OnceLock<SocketAddr>>,
    conns: Arc<Mutex<Vec<Arc<Mutex<ConnLog>>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn limits() -> Limits {
    Limits {
        max_header_bytes: 64 * 1024,
        max_body_bytes: 16 << 20,
    }
}

impl Recorder {
    /// Listens on a fresh loopback port and forwards every connection to the upstream
    /// set later ([`Recorder::forward_to`]); holds the answer to each message's last chunk
    /// back for `hold`.
    async fn start(hold: Duration) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let conns: Arc<Mutex<Vec<Arc<Mutex<ConnLog>>>>> = Arc::default();
        let upstream: Arc<OnceLock<SocketAddr>> = Arc::default();
        let all = conns.clone();
        let to = upstream.clone();
        let task = tokio::spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            while let Ok((down, _)) = listener.accept().await {
                let Some(upstream) = to.get().copied() else {
                    continue;
                };
                let Ok(up) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let _ = (down.set_nodelay(true), up.set_nodelay(true));
                let log = Arc::new(Mutex::new(ConnLog::default()));
                all.lock().unwrap().push(log.clone());
                let (mut dr, mut dw) = down.into_split();
                let (mut ur, mut uw) = up.into_split();
                let l = log.clone();
                tasks.spawn(async move {
                    let mut parser = Parser::new(limits());
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match dr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let mut data = &buf[..n];
                        while let Ok(Some(f)) = parser.feed(data) {
                            data = &[];
                            if let Frame::Request(r) = f {
                                let mut l = l.lock().unwrap();
                                if r.flag == Flag::End {
                                    l.last_tids.insert(r.tid.clone());
                                }
                                l.requests.push(r);
                            }
                        }
                        if uw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = uw.shutdown().await;
                });
                tasks.spawn(async move {
                    let mut parser = Parser::new(limits());
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match ur.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let mut data = &buf[..n];
                        let mut answers_last = false;
                        while let Ok(Some(f)) = parser.feed(data) {
                            data = &[];
                            if let Frame::Response(r) = f {
                                let mut l = log.lock().unwrap();
                                answers_last |= l.last_tids.contains(&r.tid);
                                l.responses.push((r.tid, r.status));
                            }
                        }
                        if answers_last && !hold.is_zero() {
                            tokio::time::sleep(hold).await;
                        }
                        if dw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        if answers_last {
                            log.lock().unwrap().last_answer_forwarded = Some(Instant::now());
                        }
                    }
                    let _ = dw.shutdown().await;
                });
            }
        });
        Recorder {
            addr,
            upstream,
            conns,
            task,
        }
    }

    fn forward_to(&self, upstream_port: u16) {
        let _ = self
            .upstream
            .set(SocketAddr::from(([127, 0, 0, 1], upstream_port)));
    }

    /// Every complete message sent over the recorded connections, checked: chunks in
    /// order and contiguous, each answered 200 by the peer. Returns (content type,
    /// content, chunk count) per message.
    fn messages(&self) -> Vec<(String, Vec<u8>, usize)> {
        let mut out = Vec::new();
        for conn in self.conns.lock().unwrap().iter() {
            let l = conn.lock().unwrap();
            let mut current: Option<(String, String, Vec<u8>, usize)> = None;
            for r in l.requests.iter().filter(|r| r.method == Method::Send) {
                let status = l
                    .responses
                    .iter()
                    .find(|(t, _)| *t == r.tid)
                    .map(|(_, s)| *s);
                assert_eq!(status, Some(200), "chunk {} not answered 200", r.tid);
                let id = r.message_id.clone().expect("Message-ID");
                let range = r.byte_range.expect("Byte-Range");
                let body = r.body.clone().unwrap_or_default();
                let (cid, _, content, chunks) = current.get_or_insert_with(|| {
                    (
                        id.clone(),
                        r.content_type.clone().unwrap_or_default(),
                        Vec::new(),
                        0,
                    )
                });
                assert_eq!(*cid, id, "interleaved messages");
                assert_eq!(range.start, content.len() as u64 + 1, "Byte-Range gap");
                assert_eq!(range.end, Some(range.start + body.len() as u64 - 1));
                content.extend_from_slice(&body);
                *chunks += 1;
                if r.flag == Flag::End {
                    assert_eq!(range.total, Some(content.len() as u64), "Byte-Range total");
                    let (_, t, c, n) = current.take().expect("message");
                    out.push((t, c, n));
                }
            }
            assert!(current.is_none(), "a message was not finished");
        }
        out
    }
}

// ---------------------------------------------------------------------------------------
// Kamailio tests
// ---------------------------------------------------------------------------------------

async fn kamailio_sizes(transport: &str) {
    if !installed("swaks") {
        println!("skipped: swaks not installed");
        return;
    }
    // Kamailio's SDP points at the recorder, which forwards to Kamailio's MSRP port.
    let rec = Recorder::start(Duration::ZERO).await;
    let Some(kam) = Kamailio::start(Some(rec.addr.port())) else {
        return;
    };
    rec.forward_to(kam.msrp_port);
    // 10 KB chunks: Kamailio's limit for frames it can look into (peers.md).
    let iwf = Iwf::start(&kam.next_hop(transport), "large:\n  chunk_size: 10240\n").await;
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, size) in [5 * 1024, 100 * 1024, 5 * 1024 * 1024]
        .into_iter()
        .enumerate()
    {
        let (m, body) = mail(size, i as u64);
        let file = dir.path().join(format!("mail-{size}.eml"));
        // swaks ends the data with "\r\n." itself: the file leaves out the last CRLF.
        std::fs::write(&file, m.strip_suffix(b"\r\n").expect("CRLF")).expect("write mail");
        let started = Instant::now();
        let reply = swaks_send(iwf.smtp, &file).await;
        assert!(
            reply.starts_with("250 "),
            "{size} octets over {transport}: {reply}\niwf log:\n{}\nkamailio log:\n{}",
            iwf.log(),
            kam.log()
        );
        let msgs = rec.messages();
        assert_eq!(msgs.len(), i + 1, "one MSRP message per mail");
        let (ctype, content, chunks) = msgs.last().expect("message");
        assert_eq!(ctype, "message/cpim");
        let inner = cpim_inner(content);
        assert!(
            inner == body.as_slice(),
            "{size}: content differs (got {} octets, sent {}): got ends {:?}, sent ends {:?}",
            inner.len(),
            body.len(),
            String::from_utf8_lossy(&inner[inner.len().saturating_sub(40)..]),
            String::from_utf8_lossy(&body[body.len().saturating_sub(40)..]),
        );
        println!(
            "kamailio/{transport}: {size} octets body, CPIM {} octets in {chunks} chunks, all 200, 250 after {:?}",
            content.len(),
            started.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kamailio_udp_delivers_5k_100k_5m_byte_for_byte() {
    tokio::time::timeout(TEST_LIMIT, kamailio_sizes("udp"))
        .await
        .expect("test time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kamailio_tcp_delivers_5k_100k_5m_byte_for_byte() {
    tokio::time::timeout(TEST_LIMIT, kamailio_sizes("tcp"))
        .await
        .expect("test time limit");
}

/// Kamailio's 200 to the last chunk is held back by the recorder: the SMTP reply must not
/// come before it is passed on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kamailio_smtp_reply_waits_for_the_last_chunk() {
    tokio::time::timeout(TEST_LIMIT, async {
        let hold = Duration::from_millis(700);
        let rec = Recorder::start(hold).await;
        let Some(kam) = Kamailio::start(Some(rec.addr.port())) else {
            return;
        };
        rec.forward_to(kam.msrp_port);
        let iwf = Iwf::start(&kam.next_hop("udp"), "").await;
        let (m, body) = mail(100 * 1024, 7);
        let started = Instant::now();
        let (reply, at) = smtp_send(iwf.smtp, &m).await;
        assert!(reply.starts_with("250 "), "{reply}\n{}", iwf.log());
        let forwarded = rec.conns.lock().unwrap()[0]
            .lock()
            .unwrap()
            .last_answer_forwarded
            .expect("the last chunk's 200 was forwarded");
        assert!(at >= forwarded, "250 before the last chunk's 200");
        assert!(at - started >= hold);
        let msgs = rec.messages();
        assert_eq!(cpim_inner(&msgs[0].1), body.as_slice());
    })
    .await
    .expect("test time limit");
}

// ---------------------------------------------------------------------------------------
// iwf's own SIP answerer and MSRP receiver: mapped failures
// ---------------------------------------------------------------------------------------

/// How the SIP peer answers INVITE.
#[derive(Clone)]
enum Invite {
    Status(u16),
    Silent,
    /// 200 with an SDP answer whose a=path is this MSRP URI.
    Answer(String),
}

/// A SIP answerer on UDP: INVITE as `invite` says, MESSAGE with `message_status`, ACK
/// ignored, BYE 200. Returns it, the next-hop URI and what it received.
async fn sip_peer(
    invite: Invite,
    message_status: u16,
) -> (Answerer, String, mpsc::UnboundedReceiver<ReceivedRequest>) {
    let contact: Arc<OnceLock<String>> = Arc::default();
    let c = contact.clone();
    let policy = move |req: &ReceivedRequest| -> Reply {
        if req.method != "INVITE" {
            return default_reply(message_status, req);
        }
        match &invite {
            Invite::Status(s) => Reply::status(*s),
            Invite::Silent => Reply::Ignore,
            Invite::Answer(path) => {
                let uri = iwf::msrp::MsrpUri::parse(path).expect("MSRP URI");
                Reply::status(200)
                    .with_header("Contact", c.get().map(String::as_str).unwrap_or(""))
                    .with_body(
                        "application/sdp",
                        iwf::ops::demo::sdp_answer(path, &uri.host, uri.port).as_bytes(),
                    )
            }
        }
    };
    let (answerer, received) = Answerer::start(AnswererConfig {
        udp: Some("127.0.0.1:0".parse().expect("addr")),
        tcp: None,
        ..AnswererConfig::with_policy(policy)
    })
    .await
    .expect("answerer");
    let addr = answerer.udp_addr().expect("udp");
    let _ = contact.set(format!("<sip:peer@{addr}>"));
    (answerer, format!("sip:{addr};transport=udp"), received)
}

/// An MSRP receiver with `fault`: (receiver, its a=path URI, inbox).
async fn msrp_peer(fault: Fault) -> (Receiver, String, mpsc::Receiver<ReceivedMessage>) {
    let (r, inbox) = Receiver::bind(
        "127.0.0.1:0",
        ReceiverConfig {
            fault,
            ..ReceiverConfig::default()
        },
    )
    .await
    .expect("receiver");
    let uri = r.uri("peer7x");
    (r, uri, inbox)
}

/// Methods the SIP peer saw, in order (after the transaction ended).
fn methods(rx: &mut mpsc::UnboundedReceiver<ReceivedRequest>) -> Vec<String> {
    let mut v = Vec::new();
    while let Ok(r) = rx.try_recv() {
        if r.method != "ACK" {
            v.push(r.method);
        }
    }
    v
}

/// Sends a large (5 KB) mail through iwf to a SIP peer answering INVITE with `invite`
/// and returns the DATA reply and the SIP methods the peer saw.
async fn large_mail_reply(invite: Invite, extra_yaml: &str) -> (String, Vec<String>) {
    let (_answerer, next_hop, mut seen) = sip_peer(invite, 200).await;
    let iwf = Iwf::start(&next_hop, extra_yaml).await;
    let (m, _) = mail(5 * 1024, 1);
    let (reply, _) = smtp_send(iwf.smtp, &m).await;
    // BYE is sent before the reply; let the answerer's report catch up.
    tokio::time::sleep(Duration::from_millis(50)).await;
    (reply, methods(&mut seen))
}

fn assert_reply(reply: &str, want: &str) {
    assert!(reply.starts_with(want), "expected {want:?}, got {reply:?}");
}

#[tokio::test]
async fn invite_486_gives_450_4_2_0() {
    let (reply, seen) = tokio::time::timeout(TEST_LIMIT, large_mail_reply(Invite::Status(486), ""))
        .await
        .expect("time");
    assert_reply(&reply, "450 4.2.0 ");
    assert_eq!(seen, ["INVITE"]);
}

/// A text mail whose INVITE is refused for its media (488: no MSRP) falls back to one
/// MESSAGE (the `retry-pager-when-msrp-refused` and `pager-for-peers-without-msrp` rules).
#[tokio::test]
async fn invite_488_for_text_falls_back_to_one_message() {
    let (reply, seen) = tokio::time::timeout(TEST_LIMIT, large_mail_reply(Invite::Status(488), ""))
        .await
        .expect("time");
    assert_reply(&reply, "250 2.0.0 ");
    assert_eq!(seen, ["INVITE", "MESSAGE"]);
}

/// A peer that refuses the session (415) and every MESSAGE form (415 to CPIM, then to
/// text): 554 5.6.1 after one try of each form, never a loop.
#[tokio::test]
async fn invite_415_and_message_415_give_554_5_6_1() {
    let run = async {
        let (_answerer, next_hop, mut seen) = sip_peer(Invite::Status(415), 415).await;
        let iwf = Iwf::start(&next_hop, "").await;
        let (m, _) = mail(5 * 1024, 1);
        let (reply, _) = smtp_send(iwf.smtp, &m).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        (reply, methods(&mut seen))
    };
    let (reply, seen) = tokio::time::timeout(TEST_LIMIT, run).await.expect("time");
    assert_reply(&reply, "554 5.6.1 ");
    assert_eq!(seen, ["INVITE", "MESSAGE", "MESSAGE"]);
}

/// No answer at all: Timer B (64·T1 = 1.28 s with T1 = 20 ms) ends the INVITE.
#[tokio::test]
async fn invite_unanswered_timer_b_gives_451_4_4_1() {
    let started = Instant::now();
    let (reply, seen) = tokio::time::timeout(
        TEST_LIMIT,
        large_mail_reply(Invite::Silent, "timers:\n  t1_ms: 20\n"),
    )
    .await
    .expect("time");
    assert_reply(&reply, "451 4.4.1 ");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(seen, ["INVITE"], "retransmissions are not reported again");
}

/// The SDP answer's a=path names a port nobody listens on.
#[tokio::test]
async fn msrp_connection_refused_gives_451_4_4_2() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let path = format!("msrp://127.0.0.1:{closed}/gone42;tcp");
    let (reply, seen) =
        tokio::time::timeout(TEST_LIMIT, large_mail_reply(Invite::Answer(path), ""))
            .await
            .expect("time");
    assert_reply(&reply, "451 4.4.2 ");
    assert_eq!(seen, ["INVITE", "BYE"], "the dialog is ended");
}

/// The MSRP peer answers two chunks and then goes silent; the per-chunk response timeout
/// (1 s here) ends the session.
#[tokio::test]
async fn msrp_peer_silent_mid_message_gives_451_4_4_2() {
    let (_rx, path, _inbox) = msrp_peer(Fault::StopAnsweringAfter(2)).await;
    let started = Instant::now();
    let (reply, seen) = tokio::time::timeout(
        TEST_LIMIT,
        large_mail_reply(
            Invite::Answer(path),
            "large:\n  chunk_size: 1024\n  response_timeout_secs: 1\n",
        ),
    )
    .await
    .expect("time");
    assert_reply(&reply, "451 4.4.2 ");
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(seen, ["INVITE", "BYE"]);
}

/// The MSRP peer drops the connection when the third chunk arrives.
#[tokio::test]
async fn msrp_peer_closing_mid_message_gives_451_4_4_2() {
    let (_rx, path, _inbox) = msrp_peer(Fault::CloseAfter(2)).await;
    let (reply, seen) = tokio::time::timeout(
        TEST_LIMIT,
        large_mail_reply(Invite::Answer(path), "large:\n  chunk_size: 1024\n"),
    )
    .await
    .expect("time");
    assert_reply(&reply, "451 4.4.2 ");
    assert_eq!(seen, ["INVITE", "BYE"]);
}

#[tokio::test]
async fn msrp_413_gives_552_5_3_4() {
    let (_rx, path, _inbox) = msrp_peer(Fault::AnswerStatus(413)).await;
    let (reply, seen) =
        tokio::time::timeout(TEST_LIMIT, large_mail_reply(Invite::Answer(path), ""))
            .await
            .expect("time");
    assert_reply(&reply, "552 5.3.4 ");
    assert_eq!(seen, ["INVITE", "BYE"]);
}

#[tokio::test]
async fn msrp_403_gives_550_5_7_1() {
    let (_rx, path, _inbox) = msrp_peer(Fault::AnswerStatus(403)).await;
    let (reply, seen) =
        tokio::time::timeout(TEST_LIMIT, large_mail_reply(Invite::Answer(path), ""))
            .await
            .expect("time");
    assert_reply(&reply, "550 5.7.1 ");
    assert_eq!(seen, ["INVITE", "BYE"]);
}

/// A 1 MB mail to iwf's own receiver: complete, byte for byte, then BYE, then 250.
#[tokio::test]
async fn receiver_gets_1m_mail_byte_for_byte() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (_rx, path, mut inbox) = msrp_peer(Fault::None).await;
        let (_answerer, next_hop, mut seen) = sip_peer(Invite::Answer(path), 200).await;
        let iwf = Iwf::start(&next_hop, "").await;
        let (m, body) = mail(1 << 20, 3);
        let (reply, _) = smtp_send(iwf.smtp, &m).await;
        assert_reply(&reply, "250 ");
        let got = inbox
            .try_recv()
            .expect("the message arrived before the 250");
        assert_eq!(got.content_type.as_deref(), Some("message/cpim"));
        assert!(
            cpim_inner(&got.content) == body.as_slice(),
            "content differs"
        );
        assert_eq!(got.chunks, got.content.len().div_ceil(2048));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(methods(&mut seen), ["INVITE", "BYE"]);
    })
    .await
    .expect("time");
}

/// A short mail goes as MESSAGE; the peer answers 413; iwf retries in large mode (INVITE
/// + MSRP) and the mail is delivered: 250.
#[tokio::test]
async fn message_413_is_retried_in_large_mode() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (_rx, path, mut inbox) = msrp_peer(Fault::None).await;
        let (_answerer, next_hop, mut seen) = sip_peer(Invite::Answer(path), 413).await;
        let iwf = Iwf::start(&next_hop, "").await;
        let (m, body) = mail(200, 5);
        let (reply, _) = smtp_send(iwf.smtp, &m).await;
        assert_reply(&reply, "250 ");
        let got = inbox
            .try_recv()
            .expect("the message arrived before the 250");
        assert_eq!(got.content_type.as_deref(), Some("message/cpim"));
        // The CPIM document of the pager attempt is sent as it was; its text is the mail's
        // text without the trailing line end (`Mail::text`).
        assert_eq!(
            String::from_utf8_lossy(cpim_inner(&got.content)),
            String::from_utf8_lossy(body.strip_suffix(b"\r\n").expect("CRLF"))
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(methods(&mut seen), ["MESSAGE", "INVITE", "BYE"]);
    })
    .await
    .expect("time");
}
