//! The delivery store against real processes: the real `iwf serve` (SQLite store in a
//! temporary `state_dir`, or a real `redis-server`), `iwf::sip::Answerer` as the CPM side,
//! a raw SMTP client, and a private Postfix as the relaying MTA.
//!
//! - The lost 250: a client that closes right after the final dot, then sends the same mail
//!   again → one MESSAGE; `iwf store get/stats` show the record.
//! - Crash: Postfix relays `IWF_CRASH_MAILS` mails (default 300, 3 recipients each: 900
//!   MESSAGEs; `bench/store_crash.sh` runs the full 1,000) while the answerer refuses one
//!   recipient of every mail with 480 for the first 15 s; iwf is killed with SIGKILL twice and
//!   restarted on the same state file. At the end every (mail, recipient) was accepted by the
//!   answerer exactly once and Postfix's queue is empty. Before each kill the answerer
//!   answers 480 and the test waits until iwf has no transaction in flight
//!   (`iwf_transactions_active` = 0), so no CPM 2xx is between the CPM side and our commit:
//!   that window (the CPM side accepted, iwf dies before writing the record) is the one a
//!   gateway without a two-phase CPM side cannot close, see the README. What the test proves
//!   is that every committed record survives SIGKILL and stops the retries.
//! - Two instances, one Redis: a transaction deferred by A and retried on B delivers only the
//!   rest; Redis stopped → 451, no 250, nothing delivered, the metric and the log say why;
//!   Redis back → mail flows.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iwf::sip::{Answerer, AnswererConfig, ReceivedRequest, Reply};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::harness::{self, Proc, asset, free_port, require, rules_dir, smtplib, wait_until};

// ---------------------------------------------------------------- the gateway process

/// `iwf serve` on a fixed SMTP port (Postfix's transport points at it across restarts).
struct Gw {
    proc: Proc,
    smtp: SocketAddr,
    metrics: SocketAddr,
}

impl Gw {
    /// Starts `iwf serve` in `dir` (its `./state` is the SQLite store unless `config` says
    /// otherwise) on 127.0.0.1:`port` (0: any), towards `next_hop`.
    fn start(dir: &Path, config: &str, port: u16, next_hop: &str) -> Gw {
        let file = dir.join("iwf.yaml");
        std::fs::write(&file, config).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_iwf"));
        cmd.arg("serve")
            .arg("--config")
            .arg(&file)
            .arg("--rules")
            .arg(rules_dir())
            .args(["--smtp-listen", &format!("127.0.0.1:{port}")])
            .args(["--sip-listen", "127.0.0.1:0"])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .args(["--next-hop", next_hop])
            .env("RUST_LOG", "info,rsipstack=warn")
            .env("NO_COLOR", "1")
            .current_dir(dir);
        let mut proc = Proc::spawn("iwf", &mut cmd);
        let addr = |out: &str, prefix: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(prefix))
                .and_then(|a| a.trim().trim_end_matches("/metrics").parse().ok())
        };
        let found = wait_until(Duration::from_secs(20), || {
            let out = proc.output();
            Some((
                addr(&out, "iwf: ESMTP listening on ")?,
                addr(&out, "iwf: metrics listening on http://")?,
            ))
        });
        let Some((smtp, metrics)) = found else {
            proc.kill();
            panic!("iwf did not start:\n{}", proc.output());
        };
        Gw {
            proc,
            smtp,
            metrics,
        }
    }

    /// `iwf store ARGS` with this gateway's configuration.
    fn store_cli(dir: &Path, args: &[&str]) -> (bool, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_iwf"));
        cmd.arg("store")
            .args(args)
            .arg("--config")
            .arg(dir.join("iwf.yaml"))
            .current_dir(dir);
        let (status, out) = harness::run("iwf store", &mut cmd, Duration::from_secs(20));
        (status.success(), out)
    }
}

async fn metric(addr: SocketAddr, name: &str) -> f64 {
    use tokio::io::AsyncReadExt;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: iwf\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

// ---------------------------------------------------------------- a raw SMTP client

struct Smtp {
    r: tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
}

impl Smtp {
    async fn connect(addr: SocketAddr) -> Smtp {
        let (r, w) = TcpStream::connect(addr).await.unwrap().into_split();
        let mut s = Smtp {
            r: tokio::io::BufReader::new(r),
            w,
        };
        assert_eq!(s.reply().await.0, 220);
        assert_eq!(s.cmd("EHLO client.example.org").await.0, 250);
        s
    }

    async fn reply(&mut self) -> (u16, String) {
        loop {
            let mut line = String::new();
            if self.r.read_line(&mut line).await.unwrap_or(0) == 0 {
                return (0, String::new());
            }
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return (line[..3].parse().unwrap_or(0), line.trim_end().to_string());
            }
        }
    }

    async fn cmd(&mut self, line: &str) -> (u16, String) {
        self.w
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
        self.reply().await
    }

    /// MAIL, RCPT, DATA and the message up to the final dot, without reading its reply.
    async fn send_until_dot(&mut self, rcpts: &[&str], id: &str) {
        assert_eq!(self.cmd("MAIL FROM:<alice@mail.example.org>").await.0, 250);
        for r in rcpts {
            assert_eq!(self.cmd(&format!("RCPT TO:<{r}>")).await.0, 250, "{r}");
        }
        assert_eq!(self.cmd("DATA").await.0, 354);
        let mail = format!(
            "From: alice@mail.example.org\r\nTo: {}\r\nMessage-ID: <{id}>\r\nSubject: {id}\r\n\r\nhello\r\n.\r\n",
            rcpts[0]
        );
        self.w.write_all(mail.as_bytes()).await.unwrap();
    }

    async fn send(&mut self, rcpts: &[&str], id: &str) -> (u16, String) {
        self.send_until_dot(rcpts, id).await;
        self.reply().await
    }
}

/// One mail on a new connection; its end-of-DATA reply.
async fn send_one(addr: SocketAddr, rcpts: &[&str], id: &str) -> (u16, String) {
    let mut c = Smtp::connect(addr).await;
    let r = c.send(rcpts, id).await;
    let _ = c.cmd("QUIT").await;
    r
}

// ---------------------------------------------------------------- the CPM side

/// What the answerer accepted (answered 200): (Subject, Request-URI) → count.
type Accepted = Arc<Mutex<HashMap<(String, String), u32>>>;

/// An answerer that refuses with 480 while `hold` is set, and `refused` recipients while
/// `refuse` is set; counts every MESSAGE it accepts.
struct Cpm {
    answerer: Answerer,
    accepted: Accepted,
    hold: Arc<AtomicBool>,
    refuse: Arc<AtomicBool>,
    _rx: tokio::sync::mpsc::UnboundedReceiver<ReceivedRequest>,
}

impl Cpm {
    async fn start(refused: &'static [&'static str]) -> Cpm {
        let accepted: Accepted = Arc::default();
        let hold = Arc::new(AtomicBool::new(false));
        let refuse = Arc::new(AtomicBool::new(true));
        let (a, h, r) = (accepted.clone(), hold.clone(), refuse.clone());
        let policy = move |req: &ReceivedRequest| {
            if req.method != "MESSAGE" {
                return iwf::sip::answerer::default_reply(200, req);
            }
            let uri = req.request_uri.clone();
            if h.load(Ordering::SeqCst)
                || (r.load(Ordering::SeqCst) && refused.iter().any(|x| uri.contains(x)))
            {
                return Reply::status(480);
            }
            let subject = req.header("Subject").unwrap_or("").to_string();
            *a.lock().unwrap().entry((subject, uri)).or_default() += 1;
            Reply::status(200)
        };
        let (answerer, rx) = Answerer::start(AnswererConfig::with_policy(policy))
            .await
            .unwrap();
        Cpm {
            answerer,
            accepted,
            hold,
            refuse,
            _rx: rx,
        }
    }

    fn hop(&self) -> String {
        format!("sip:{};transport=udp", self.answerer.udp_addr().unwrap())
    }

    fn count(&self, subject: &str, tel: &str) -> u32 {
        self.accepted
            .lock()
            .unwrap()
            .get(&(subject.to_string(), format!("tel:{tel}")))
            .copied()
            .unwrap_or(0)
    }

    fn total(&self) -> u32 {
        self.accepted.lock().unwrap().values().sum()
    }
}

const R1: &str = "+15551230001@cpm.example.net";
const R2: &str = "+15551230002@cpm.example.net";
const R3: &str = "+15551230003@cpm.example.net";

fn tel(rcpt: &str) -> &str {
    rcpt.split('@').next().unwrap()
}

// ---------------------------------------------------------------- the lost 250

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_250_does_not_deliver_twice() {
    let cpm = Cpm::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let gw = Gw::start(dir.path(), "timers: {t1_ms: 50}\n", 0, &cpm.hop());

    // The client hangs up right after the final dot: it never sees the reply.
    let mut c = Smtp::connect(gw.smtp).await;
    c.send_until_dot(&[R1, R2], "lost-250@test").await;
    drop(c);
    let delivered = wait_until(Duration::from_secs(10), || {
        (cpm.count("lost-250@test", tel(R1)) == 1 && cpm.count("lost-250@test", tel(R2)) == 1)
            .then_some(())
    });
    assert!(delivered.is_some(), "not delivered:\n{}", gw.proc.output());
    // The transaction is over (logged) before the sender tries again.
    let logged = wait_until(Duration::from_secs(10), || {
        gw.proc.output().contains("lost-250@test").then_some(())
    });
    assert!(logged.is_some(), "{}", gw.proc.output());

    // Its retry: 250, and no second MESSAGE.
    let (code, text) = send_one(gw.smtp, &[R1, R2], "lost-250@test").await;
    assert_eq!(code, 250, "{text}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(cpm.count("lost-250@test", tel(R1)), 1);
    assert_eq!(cpm.count("lost-250@test", tel(R2)), 1);
    assert_eq!(cpm.total(), 2);

    // A different mail to the same recipient is delivered.
    let (code, text) = send_one(gw.smtp, &[R1], "other@test").await;
    assert_eq!(code, 250, "{text}");
    assert_eq!(cpm.count("other@test", tel(R1)), 1);

    // The operator's view of the same file, while iwf runs.
    let (ok, out) = Gw::store_cli(dir.path(), &["get", "id:lost-250@test"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("\"+15551230001@cpm.example.net\"")
            && out.contains("\"+15551230002@cpm.example.net\""),
        "{out}"
    );
    let (ok, out) = Gw::store_cli(dir.path(), &["stats"]);
    assert!(ok, "{out}");
    assert!(out.contains("backend: sqlite"), "{out}");
    assert!(out.contains("delivery_records: 3"), "{out}");
    assert!(dir.path().join("state/iwf.sqlite3").is_file());
    let (ok, out) = Gw::store_cli(dir.path(), &["get", "id:never@test"]);
    assert!(!ok && out.contains("nothing recorded"), "{out}");
}

// ---------------------------------------------------------------- crash with Postfix in front

/// The private Postfix (tests/peers/postfix-relay.sh): several recipients per transaction,
/// 1–2 s retries.
struct Postfix {
    dir: PathBuf,
    port: u16,
    env: Vec<(&'static str, String)>,
    _tmp: tempfile::TempDir,
}

impl Postfix {
    fn start(gateway_port: u16) -> Postfix {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("postfix");
        let port = free_port(false);
        let env = vec![
            ("PF_DIR", dir.display().to_string()),
            ("PF_PORT", port.to_string()),
            ("GW_PORT", gateway_port.to_string()),
            ("GW_PROTO", "smtp".to_string()),
            // Nothing listens there: a bounce would stay queued and fail the test.
            ("BOUNCE_PORT", free_port(false).to_string()),
            ("RETRY", "1s".to_string()),
            ("RETRY_MAX", "2s".to_string()),
            ("RCPT_LIMIT", "10".to_string()),
        ];
        let pf = Postfix {
            dir,
            port,
            env,
            _tmp: tmp,
        };
        let (status, out) = pf.script("start");
        assert!(
            status.success(),
            "postfix did not start:\n{out}\n{}",
            pf.log()
        );
        pf
    }

    fn script(&self, verb: &str) -> (std::process::ExitStatus, String) {
        let mut cmd = Command::new("bash");
        cmd.arg(asset("postfix-relay.sh")).arg(verb);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        harness::run("postfix-relay.sh", &mut cmd, Duration::from_secs(90))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("maillog")).unwrap_or_default()
    }

    fn queue_empty(&self) -> bool {
        self.script("queue").1.contains("Mail queue is empty")
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = self.script("stop");
    }
}

fn postfix_available() -> bool {
    if !require(&["/usr/sbin/postfix", "/usr/sbin/postqueue", harness::PYTHON]) {
        return false;
    }
    if !harness::is_root() {
        eprintln!("skipped: the Postfix crash test needs root (Postfix runs its daemons as root)");
        return false;
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_twice_under_postfix_load_delivers_every_recipient_exactly_once() {
    if !postfix_available() {
        return;
    }
    let mails: usize = std::env::var("IWF_CRASH_MAILS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let started = Instant::now();
    let cpm = Cpm::start(&["+15551230003"]).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port(false);
    let config = "timers: {t1_ms: 100}\n";
    let mut gw = Gw::start(dir.path(), config, port, &cpm.hop());
    let pf = Postfix::start(port);

    // Submit everything to Postfix (one session, one transaction per mail).
    let pf_addr: SocketAddr = ([127, 0, 0, 1], pf.port).into();
    let submit = std::thread::spawn(move || {
        let transactions: Vec<_> = (0..mails)
            .map(|i| {
                json!({
                    "mail_from": "alice@bounce.test",
                    "rcpts": [[R1, []], [R2, []], [R3, []]],
                    "data": format!(
                        "From: Alice <alice@bounce.test>\nTo: {R1}\n\
                         Subject: crash-{i}\nMessage-ID: <crash-{i}@bounce.test>\n\n\
                         mail {i}\n"
                    ),
                })
            })
            .collect();
        smtplib(
            pf_addr,
            json!({"ehlo": "client.iwf.test", "transactions": transactions}),
            Duration::from_secs(120),
        )
    });

    // Two crashes: the answerer holds (480) for 300 ms, then SIGKILL, then a restart on the
    // same state file and port.
    for pause in [Duration::from_secs(2), Duration::from_secs(4)] {
        tokio::time::sleep(pause).await;
        cpm.hold.store(true, Ordering::SeqCst);
        // Every transaction that could still be between a 2xx and its commit finishes
        // (new ones only get 480 now): wait until none is in flight (on a loaded machine
        // an fsync can take longer than any fixed pause).
        tokio::time::sleep(Duration::from_millis(100)).await;
        let quiet = Instant::now() + Duration::from_secs(20);
        while metric(gw.metrics, "iwf_transactions_active").await > 0.0 && Instant::now() < quiet {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let before = cpm.total();
        gw.proc.kill();
        eprintln!(
            "killed iwf at {:?} with {before} MESSAGEs accepted",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        gw = Gw::start(dir.path(), config, port, &cpm.hop());
        cpm.hold.store(false, Ordering::SeqCst);
    }
    let replies = submit.join().unwrap();
    assert!(
        replies
            .transactions
            .iter()
            .all(|t| t.data.as_ref().is_some_and(|d| d.0 == 250)),
        "Postfix did not queue every mail"
    );
    // The third recipient is refused until 15 s into the run.
    tokio::time::sleep(Duration::from_secs(15).saturating_sub(started.elapsed())).await;
    cpm.refuse.store(false, Ordering::SeqCst);

    let want = mails * 3;
    let done = {
        let deadline = Instant::now() + Duration::from_secs(75);
        let mut flushed = Instant::now();
        loop {
            let n = cpm.accepted.lock().unwrap().len();
            if n == want && pf.queue_empty() {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            // What is still queued is deferred, not lost: on a loaded machine Postfix's
            // backoff can outgrow the wait, so ask it to retry now and then ("at the end").
            if flushed.elapsed() > Duration::from_secs(10) {
                let _ = pf.script("flush");
                flushed = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    // A few more queue runs: nothing arrives late, nothing twice.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let accepted = cpm.accepted.lock().unwrap().clone();
    let twice: Vec<_> = accepted.iter().filter(|(_, n)| **n != 1).collect();
    let tail = |s: String| {
        let mut l: Vec<&str> = s.lines().rev().take(40).collect();
        l.reverse();
        l.join("\n")
    };
    let missing: Vec<String> = (0..mails)
        .flat_map(|i| [R1, R2, R3].map(move |r| (i, r)))
        .filter(|(i, r)| !accepted.contains_key(&(format!("crash-{i}"), format!("tel:{}", tel(r)))))
        .map(|(i, r)| format!("crash-{i} {r}"))
        .collect();
    assert!(
        done,
        "{} of {want} (mail, recipient) pairs delivered; missing: {missing:?}\nqueue:\n{}\npostfix:\n{}\niwf:\n{}",
        accepted.len(),
        pf.script("queue").1,
        tail(pf.log()),
        tail(gw.proc.output())
    );
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    for i in 0..mails {
        for r in [R1, R2, R3] {
            assert_eq!(cpm.count(&format!("crash-{i}"), tel(r)), 1, "crash-{i} {r}");
        }
    }
    assert!(pf.queue_empty());
    let log = pf.log();
    assert!(!log.contains("status=bounced"), "bounced: {}", tail(log));
    eprintln!(
        "{mails} mails, {want} MESSAGEs, 2 kills: done in {:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------- two instances, one Redis

pub(super) struct Redis {
    proc: Option<Proc>,
    pub(super) port: u16,
    dir: tempfile::TempDir,
}

impl Redis {
    pub(super) fn start(port: u16) -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Redis {
            proc: None,
            port,
            dir,
        };
        r.restart();
        r
    }

    fn restart(&mut self) {
        let mut proc = Proc::spawn(
            "redis-server",
            Command::new("redis-server")
                .args(["--port", &self.port.to_string()])
                .args(["--bind", "127.0.0.1"])
                .args(["--save", ""])
                .args(["--appendonly", "yes", "--appendfsync", "always"])
                .arg("--dir")
                .arg(self.dir.path()),
        );
        let port = self.port;
        if wait_until(Duration::from_secs(10), || {
            harness::listening(false, port).then_some(())
        })
        .is_none()
        {
            proc.kill();
            panic!("redis-server did not listen: {}", proc.output());
        }
        self.proc = Some(proc);
    }

    fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.terminate();
            if p.wait(Duration::from_secs(10)).is_none() {
                p.kill();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_redis_and_answer_4xx_without_it() {
    if !require(&["redis-server"]) {
        return;
    }
    let cpm = Cpm::start(&["+15551230002"]).await;
    let mut redis = Redis::start(free_port(false));
    let config = format!(
        "timers: {{t1_ms: 50}}\nstore: redis://127.0.0.1:{}/0\n",
        redis.port
    );
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Gw::start(da.path(), &config, 0, &cpm.hop());
    let b = Gw::start(db.path(), &config, 0, &cpm.hop());

    // A: R1 delivered, R2 refused (480) → 450 for the transaction.
    let (code, text) = send_one(a.smtp, &[R1, R2], "shared@test").await;
    assert_eq!(code / 100, 4, "{text}");
    assert_eq!(cpm.count("shared@test", tel(R1)), 1);
    assert_eq!(cpm.count("shared@test", tel(R2)), 0);
    // The CPM side recovers; the sender's retry lands on B: only R2 is delivered.
    cpm.refuse.store(false, Ordering::SeqCst);
    let (code, text) = send_one(b.smtp, &[R1, R2], "shared@test").await;
    assert_eq!(code, 250, "{text}\n{}", b.proc.output());
    assert_eq!(cpm.count("shared@test", tel(R1)), 1, "not twice via B");
    assert_eq!(cpm.count("shared@test", tel(R2)), 1);
    let (ok, out) = Gw::store_cli(da.path(), &["get", "id:shared@test"]);
    assert!(ok && out.contains(R2), "{out}");

    // Redis goes away: 4xx, nothing delivered, and the reason is visible.
    redis.stop();
    let total = cpm.total();
    for (gw, id) in [(&a, "during-outage-a@test"), (&b, "during-outage-b@test")] {
        let (code, text) = send_one(gw.smtp, &[R1], id).await;
        assert_eq!(code, 451, "{text}");
        assert!(text.contains("4.3.0"), "{text}");
    }
    assert_eq!(cpm.total(), total, "nothing delivered without the store");
    assert!(metric(a.metrics, "iwf_store_errors_total").await >= 1.0);
    assert!(
        a.proc.output().contains("store failure"),
        "{}",
        a.proc.output()
    );

    // Redis is back: mail flows again (the connection is re-made on the next calls).
    redis.restart();
    let flows = {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (code, _) = send_one(a.smtp, &[R1], "during-outage-a@test").await;
            if code == 250 || Instant::now() > deadline {
                break code == 250;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    assert!(flows, "{}", a.proc.output());
    let (code, text) = send_one(b.smtp, &[R1], "during-outage-a@test").await;
    assert_eq!(code, 250, "{text}");
    assert_eq!(cpm.count("during-outage-a@test", tel(R1)), 1, "once, via A");
    drop(a);
    drop(b);
    redis.stop();
}

/// The Redis backend through the store interface, against a real redis-server: recipients
/// compare case-insensitively, records and correlation hashes expire, lookups and stats
/// see what was written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_store_keeps_and_expires_records() {
    use iwf::store::{Fields, Limits, RedisStore, Store};
    if !require(&["redis-server"]) {
        return;
    }
    let mut redis = Redis::start(free_port(false));
    let url = format!("redis://127.0.0.1:{}/0", redis.port);
    let limits = Limits {
        delivery_ttl: Duration::from_millis(300),
        max_records: 1000,
        report_ttl: Duration::from_millis(300),
    };
    let s = RedisStore::new(&[url], false, limits, iwf::clock::system()).unwrap();
    // A report claim (engine/reports: one instance sends it): SET NX, exclusive until
    // released or expired.
    assert!(
        s.claim("sending:imdn:x:dsn", Duration::from_secs(30))
            .await
            .unwrap()
    );
    assert!(
        !s.claim("sending:imdn:x:dsn", Duration::from_secs(30))
            .await
            .unwrap()
    );
    s.release("sending:imdn:x:dsn").await.unwrap();
    assert!(
        s.claim("sending:imdn:x:dsn", Duration::from_secs(30))
            .await
            .unwrap()
    );
    let rc = |l: &[&str]| l.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    s.record_delivered("id:m@x", &rc(&["A@B"])).await.unwrap();
    assert_eq!(
        s.delivered("id:m@x", &rc(&["a@b", "c@d"])).await.unwrap(),
        vec![true, false]
    );
    let mut f = Fields::new();
    f.insert("mail_from".into(), "alice@mail.example.org".into());
    f.insert("message_id".into(), "m@x".into());
    s.put("imdn:abc", &f, Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(s.get("imdn:abc").await.unwrap(), Some(f));
    let l = s.lookup("id:m@x").await.unwrap();
    assert_eq!(l.delivered.keys().collect::<Vec<_>>(), vec!["a@b"]);
    let st = s.stats().await.unwrap();
    assert_eq!((st.delivery_records, st.correlation_records), (1, 1));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        s.delivered("id:m@x", &rc(&["a@b"])).await.unwrap(),
        vec![false],
        "expired"
    );
    assert_eq!(s.get("imdn:abc").await.unwrap(), None, "expired");
    redis.stop();
    assert!(s.delivered("id:m@x", &rc(&["a@b"])).await.is_err());
}
