//! What every peer test needs: child processes that are always killed (a Drop guard), the
//! real `iwf` binary started on free loopback ports, SIPp as UAS with its message trace
//! parsed into requests, the Python smtplib client, and "skipped: X not installed".
//!
//! Every wait here has a deadline; nothing listens beyond 127.0.0.1.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `tests/peers/<name>` in the source tree.
pub fn asset(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers")
        .join(name)
}

/// The shipped rule set.
pub fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("rules")
}

/// The path of `bin` if it is installed (an absolute path, or found on PATH).
pub fn which(bin: &str) -> Option<PathBuf> {
    let p = Path::new(bin);
    if p.is_absolute() {
        return p.is_file().then(|| p.to_path_buf());
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(bin))
        .find(|p| p.is_file())
}

/// The Debian python3: only it sees python3-aiosmtpd (peers.md).
pub const PYTHON: &str = "/usr/bin/python3";

/// Returns false, after printing why, when one of `bins` is missing: the caller returns.
pub fn require(bins: &[&str]) -> bool {
    let missing: Vec<&str> = bins
        .iter()
        .copied()
        .filter(|b| which(b).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    eprintln!(
        "skipped: {} not installed (Debian: postfix sip-tester swaks python3-aiosmtpd; .ci/run installs them)",
        missing.join(", ")
    );
    false
}

/// Whether this process runs as root (Postfix needs it), read from /proc.
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A port nobody uses right now (a small race with other processes is accepted).
pub fn free_port(udp: bool) -> u16 {
    if udp {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map(|a| a.port())
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map(|a| a.port())
    }
    .expect("a free port")
}

/// Whether something listens on 127.0.0.1:`port`, read from /proc so that the probe does
/// not itself talk to (or take the port from) the peer.
pub fn listening(udp: bool, port: u16) -> bool {
    let (file, state) = if udp {
        ("/proc/net/udp", "07")
    } else {
        ("/proc/net/tcp", "0A")
    };
    let want = format!("0100007F:{port:04X}");
    std::fs::read_to_string(file).is_ok_and(|t| {
        t.lines().skip(1).any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1] == want && f[3] == state
        })
    })
}

/// Polls `f` every 20 ms until it returns `Some`, or `None` after `limit`.
pub fn wait_until<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process that is killed (by its pid, via `Child::kill`) and reaped when dropped.
/// Its stdout and stderr are collected, interleaved, into `output()`.
pub struct Proc {
    pub name: String,
    child: Child,
    out: Arc<Mutex<Vec<u8>>>,
    /// Stdout alone: what a process prints for the test to parse, which the interleaving
    /// with stderr (at the granularity of each pipe read) could cut in two.
    stdout: Arc<Mutex<Vec<u8>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{name} does not start: {e}"));
        Proc::adopt(name, child)
    }

    /// Sends SIGTERM (by pid, through bash's `kill` builtin: no procps needed).
    pub fn terminate(&self) {
        let pid = self.child.id();
        let _ = Command::new("bash")
            .args(["-c", &format!("kill -TERM {pid}")])
            .status();
    }

    /// Everything the process wrote so far (stdout and stderr).
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    /// What the process wrote to stdout so far.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    /// Waits for the process to exit; `None` if it still runs after `limit`.
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let child = &mut self.child;
        let status = wait_until(limit, || child.try_wait().ok().flatten());
        if status.is_some() {
            for r in self.readers.drain(..) {
                let _ = r.join();
            }
        }
        status
    }

    /// Waits for the process to exit and returns its output; kills it (and panics) after
    /// `limit`.
    pub fn finish(mut self, limit: Duration) -> (ExitStatus, String) {
        match self.wait(limit) {
            Some(status) => (status, self.output()),
            None => {
                self.kill();
                panic!(
                    "{} still ran after {limit:?}; killed. Output:\n{}",
                    self.name,
                    self.output()
                );
            }
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------
// iwf

/// The real `iwf` binary, `serve` (or `demo`) on 127.0.0.1 with port 0 listeners.
pub struct Iwf {
    pub proc: Proc,
    pub smtp: SocketAddr,
    pub lmtp: Option<SocketAddr>,
    _dir: tempfile::TempDir,
}

pub struct IwfOptions<'a> {
    /// `serve` or `demo`.
    pub command: &'a str,
    /// `--next-hop`, e.g. `sip:127.0.0.1:5070;transport=udp`.
    pub next_hop: Option<String>,
    /// The YAML configuration file's text (written to a temporary file).
    pub config: &'a str,
    pub lmtp: bool,
    /// Another rule-set directory than the shipped `rules/`.
    pub rules: Option<&'a Path>,
}

impl Default for IwfOptions<'_> {
    fn default() -> Self {
        IwfOptions {
            command: "serve",
            next_hop: None,
            config: "",
            lmtp: false,
            rules: None,
        }
    }
}

impl Iwf {
    pub fn start(o: IwfOptions<'_>) -> Iwf {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_iwf"));
        cmd.arg(o.command)
            .arg("--rules")
            .arg(o.rules.map_or_else(rules_dir, Path::to_path_buf))
            .args([
                "--smtp-listen",
                "127.0.0.1:0",
                "--sip-listen",
                "127.0.0.1:0",
            ])
            .env("RUST_LOG", "info,rsipstack=warn")
            .env("NO_COLOR", "1")
            .current_dir(dir.path());
        if !o.config.is_empty() {
            let file = dir.path().join("iwf.yaml");
            std::fs::write(&file, o.config).unwrap();
            cmd.arg("--config").arg(file);
        }
        if let Some(hop) = &o.next_hop {
            cmd.args(["--next-hop", hop]);
        }
        if o.lmtp {
            cmd.args(["--lmtp-listen", "127.0.0.1:0"]);
        }
        let mut proc = Proc::spawn("iwf", &mut cmd);
        let addr_of = |out: &str, what: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("iwf: {what} listening on ")))
                .and_then(|a| a.trim().parse::<SocketAddr>().ok())
        };
        let ready = wait_until(Duration::from_secs(10), || {
            let out = proc.output();
            let smtp = addr_of(&out, "ESMTP")?;
            let lmtp = addr_of(&out, "LMTP");
            if o.lmtp && lmtp.is_none() {
                return None;
            }
            Some((smtp, lmtp))
        });
        let Some((smtp, lmtp)) = ready else {
            let running = proc.running();
            panic!(
                "iwf did not listen within 10 s (running: {running}); output:\n{}",
                proc.output()
            );
        };
        Iwf {
            proc,
            smtp,
            lmtp,
            _dir: dir,
        }
    }

    /// For `iwf demo`: every request its in-process endpoint printed (on stdout; the logs
    /// go to stderr), as parsed requests.
    pub fn demo_requests(&self) -> Vec<SipRequest> {
        let out = self.proc.stdout();
        out.split("--- SIP request received by the demo CPM endpoint ---\n")
            .skip(1)
            .filter_map(|block| {
                let block = block.split("\n---\n").next().unwrap_or(block);
                SipRequest::parse(block.as_bytes(), false)
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// SIPp

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub fn udp(self) -> bool {
        self == Transport::Udp
    }
    pub fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// SIPp as UAS: `sipp -sf tests/peers/sipp/<scenario> -i 127.0.0.1 -p PORT -t u1|t1
/// -nostdin -trace_msg -message_file FILE -m MAX`.
pub struct Sipp {
    pub proc: Proc,
    pub port: u16,
    pub transport: Transport,
    trace: PathBuf,
    _dir: tempfile::TempDir,
}

impl Sipp {
    /// Starts SIPp on a free port (or `port`) and waits until it listens. `calls` is `-m`:
    /// SIPp exits after that many MESSAGEs (plus the scenario's timewait).
    pub fn start(
        scenario: &str,
        transport: Transport,
        port: Option<u16>,
        calls: usize,
        extra: &[&str],
    ) -> Sipp {
        let dir = tempfile::tempdir().unwrap();
        let trace = dir.path().join("messages.log");
        let port = port.unwrap_or_else(|| free_port(transport.udp()));
        let mut cmd = Command::new("sipp");
        cmd.arg("-sf")
            .arg(asset("sipp").join(scenario))
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .args(["-t", if transport.udp() { "u1" } else { "t1" }])
            .args(["-m", &calls.to_string()])
            .args(["-nostdin", "-trace_msg", "-timeout", "120s"])
            .arg("-message_file")
            .arg(&trace)
            .args(extra)
            .current_dir(dir.path());
        let mut proc = Proc::spawn("sipp", &mut cmd);
        if wait_until(Duration::from_secs(10), || {
            listening(transport.udp(), port).then_some(())
        })
        .is_none()
        {
            proc.kill();
            panic!("sipp did not listen on {port}: {}", proc.output());
        }
        Sipp {
            proc,
            port,
            transport,
            trace,
            _dir: dir,
        }
    }

    /// The `--next-hop` URI that sends every request to this SIPp.
    pub fn next_hop(&self) -> String {
        format!(
            "sip:127.0.0.1:{};transport={}",
            self.port,
            self.transport.name()
        )
    }

    /// The requests SIPp logged as received so far (`-trace_msg`), in order.
    pub fn requests(&self) -> Vec<SipRequest> {
        let trace = std::fs::read(&self.trace).unwrap_or_default();
        parse_sipp_trace(&trace)
    }

    /// Waits until SIPp logged `n` requests (at most `limit`) and returns them.
    pub fn wait_requests(&self, n: usize, limit: Duration) -> Vec<SipRequest> {
        wait_until(limit, || {
            let r = self.requests();
            (r.len() >= n).then_some(r)
        })
        .unwrap_or_else(|| self.requests())
    }
}

/// One SIP request as received by the peer.
#[derive(Clone, Debug)]
pub struct SipRequest {
    pub method: String,
    pub request_uri: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl SipRequest {
    /// Parses a request (start line, headers, blank line, body cut at Content-Length when
    /// `exact_body`, else the rest).
    pub fn parse(raw: &[u8], exact_body: bool) -> Option<SipRequest> {
        // the first empty line, whether the lines end in CRLF (SIPp) or LF (iwf demo)
        let crlf = raw.windows(4).position(|w| w == b"\r\n\r\n");
        let lf = raw.windows(2).position(|w| w == b"\n\n");
        let text_end = match (crlf, lf) {
            (Some(c), Some(l)) if l < c => (l, l + 2),
            (Some(c), _) => (c, c + 4),
            (None, Some(l)) => (l, l + 2),
            (None, None) => (raw.len(), raw.len()),
        };
        let head = String::from_utf8_lossy(&raw[..text_end.0]);
        let mut lines = head.lines().map(|l| l.trim_end_matches('\r'));
        let start = lines.find(|l| !l.trim().is_empty())?;
        let mut parts = start.split(' ');
        let method = parts.next()?.to_string();
        let request_uri = parts.next()?.to_string();
        if parts.next() != Some("SIP/2.0") {
            return None;
        }
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| {
                let (n, v) = l.split_once(':')?;
                Some((n.trim().to_string(), v.trim().to_string()))
            })
            .collect();
        let mut body = raw[text_end.1..].to_vec();
        if exact_body
            && let Some(len) = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
                .and_then(|(_, v)| v.parse::<usize>().ok())
        {
            body.truncate(len);
        }
        Some(SipRequest {
            method,
            request_uri,
            headers,
            body,
        })
    }

    /// The value of header `name` (case-insensitive); panics with the request if absent.
    pub fn h(&self, name: &str) -> &str {
        self.header(name)
            .unwrap_or_else(|| panic!("no {name} header in {self:#?}"))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// SIPp's `-message_file` with `-trace_msg`: blocks separated by a dashed line with a time,
/// each "UDP|TCP message received [N] bytes :" or "... message sent ...", a blank line, then
/// the message.
pub fn parse_sipp_trace(trace: &[u8]) -> Vec<SipRequest> {
    let sep = b"\n-----------------------------------------------";
    let mut blocks = Vec::new();
    let mut rest = trace;
    // the file starts with the separator (no leading newline)
    if rest.starts_with(&sep[1..]) {
        rest = &rest[sep.len() - 1..];
    }
    while !rest.is_empty() {
        match rest.windows(sep.len()).position(|w| w == sep) {
            Some(p) => {
                blocks.push(&rest[..p]);
                rest = &rest[p + sep.len()..];
            }
            None => {
                blocks.push(rest);
                break;
            }
        }
    }
    blocks
        .into_iter()
        .filter_map(|b| {
            // drop the rest of the separator line (the time) and find the caption
            let nl = b.iter().position(|&c| c == b'\n')?;
            let b = &b[nl + 1..];
            let nl = b.iter().position(|&c| c == b'\n')?;
            let caption = String::from_utf8_lossy(&b[..nl]);
            if !caption.contains("message received") {
                return None;
            }
            SipRequest::parse(&b[nl + 1..], true)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Python smtplib client

/// One SMTP reply: code and text (lines joined with '\n', without the codes).
#[derive(Clone, Debug, serde::Deserialize, PartialEq, Eq)]
pub struct R(pub u16, pub String);

impl R {
    /// The reply starts with `code` and, when given, the enhanced status `enhanced`.
    pub fn is(&self, code: u16, enhanced: &str) -> bool {
        self.0 == code && (enhanced.is_empty() || self.1.starts_with(enhanced))
    }
}

#[derive(Debug, serde::Deserialize)]
pub struct TransactionReplies {
    pub mail: R,
    pub rcpts: Vec<R>,
    pub data: Option<R>,
    #[serde(default)]
    pub lmtp_data: Vec<R>,
}

#[derive(Debug, serde::Deserialize)]
pub struct SessionReplies {
    pub ehlo: (u16, String, Vec<String>),
    pub transactions: Vec<TransactionReplies>,
    pub quit: Option<R>,
}

/// Runs `tests/peers/smtp_client.py` (smtplib) against `addr` with `spec` (see the script),
/// within `limit`.
pub fn smtplib(addr: SocketAddr, spec: serde_json::Value, limit: Duration) -> SessionReplies {
    use std::io::Write;
    let mut child = Command::new(PYTHON)
        .arg(asset("smtp_client.py"))
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 starts");
    let mut stdin = child.stdin.take().unwrap();
    let spec = spec.to_string();
    std::thread::spawn(move || {
        let _ = stdin.write_all(spec.as_bytes());
    });
    let (status, out) = Proc::adopt("smtplib client", child).finish(limit);
    let json = out.lines().last().unwrap_or("");
    match serde_json::from_str(json) {
        Ok(r) if status.success() => r,
        _ => panic!("smtplib client failed ({status}):\n{out}"),
    }
}

impl Proc {
    /// Takes over an already spawned child whose stdout/stderr are piped.
    pub fn adopt(name: &str, mut child: Child) -> Proc {
        let out = Arc::new(Mutex::new(Vec::new()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        if let Some(pipe) = child.stdout.take() {
            readers.push(collect(pipe, vec![out.clone(), stdout.clone()]));
        }
        if let Some(pipe) = child.stderr.take() {
            readers.push(collect(pipe, vec![out.clone()]));
        }
        Proc {
            name: name.to_string(),
            child,
            out,
            stdout,
            readers,
        }
    }
}

/// A thread that reads `pipe` to its end, appending each read to every one of `into`.
fn collect(
    mut pipe: impl Read + Send + 'static,
    into: Vec<Arc<Mutex<Vec<u8>>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            for out in &into {
                out.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        }
    })
}

/// Runs a command to completion within `limit` (killed after it) and returns its status and
/// output.
pub fn run(name: &str, cmd: &mut Command, limit: Duration) -> (ExitStatus, String) {
    Proc::spawn(name, cmd).finish(limit)
}

/// An aiosmtpd sink that keeps every mail it receives (`tests/peers/sink.py`): bounces,
/// DSNs, smarthost deliveries.
pub struct Sink {
    pub port: u16,
    _proc: Proc,
    dir: tempfile::TempDir,
}

impl Sink {
    pub fn start() -> Sink {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port(false);
        let mut proc = Proc::spawn(
            "sink",
            Command::new(PYTHON)
                .arg(asset("sink.py"))
                .arg(port.to_string())
                .arg(dir.path()),
        );
        if wait_until(Duration::from_secs(10), || {
            listening(false, port).then_some(())
        })
        .is_none()
        {
            proc.kill();
            panic!("the aiosmtpd sink did not listen: {}", proc.output());
        }
        Sink {
            _proc: proc,
            port,
            dir,
        }
    }

    pub fn mails(&self) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.retain(|p| p.extension().is_some_and(|e| e == "eml"));
        files.sort();
        files
            .iter()
            .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned())
            .collect()
    }
}

/// A port for baresip's `sip_listen`: free on UDP and TCP, and the next one free on TCP
/// (baresip puts its SIP/TLS transport there). Taken from below the kernel's ephemeral range,
/// where `bind(0)` and outgoing connections of the other tests never land, so it stays free
/// until baresip binds it unless another baresip took it; callers retry on "Address already
/// in use".
pub fn baresip_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 500) as u16 * 20;
    loop {
        let p = base + NEXT.fetch_add(2, Ordering::Relaxed) % 2_000;
        let free = std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok();
        if free {
            return p;
        }
    }
}
