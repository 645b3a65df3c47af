//! Tests against a real socket on 127.0.0.1:0: a recording [`MailHandler`] behind
//! [`serve`], driven by a small line-oriented client (and by swaks when it is installed).
//! Every read has a timeout, so a broken server fails a test instead of hanging it. Tests
//! of timers (read deadlines, connect wait, shutdown grace) run on tokio's paused clock:
//! the runtime skips ahead whenever every task waits, so they take no real time.
//! Verb sequencing without a socket is `tests_table.rs`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, oneshot};
use tokio::task::JoinHandle;

use super::*;
use crate::smtp::envelope::DeliverBy;

const WAIT: Duration = Duration::from_secs(10);

// ---- the recording handler ---------------------------------------------------------------

#[derive(Default)]
struct Recorder {
    /// RCPT refusals by address; everyone else is accepted.
    refuse_rcpt: HashMap<String, Reply>,
    /// End-of-DATA replies by recipient address; everyone else gets 250.
    data_reply: HashMap<String, Reply>,
    /// When set, `data` waits for a permit before answering.
    hold: Option<Arc<Semaphore>>,
    entered_data: Notify,
    rcpts: Mutex<Vec<Rcpt>>,
    messages: Mutex<Vec<(Envelope, Vec<u8>)>>,
}

impl Recorder {
    fn messages(&self) -> Vec<(Envelope, Vec<u8>)> {
        self.messages.lock().unwrap().clone()
    }
}

impl MailHandler for Recorder {
    fn rcpt(&self, _envelope: &Envelope, rcpt: &Rcpt) -> BoxFuture<'_, Result<(), Reply>> {
        self.rcpts.lock().unwrap().push(rcpt.clone());
        let result = match self.refuse_rcpt.get(&rcpt.address) {
            Some(reply) => Err(reply.clone()),
            None => Ok(()),
        };
        Box::pin(async move { result })
    }

    fn data(&self, envelope: Envelope, message: Vec<u8>) -> BoxFuture<'_, DataReplies> {
        Box::pin(async move {
            self.entered_data.notify_one();
            if let Some(hold) = &self.hold {
                hold.acquire().await.unwrap().forget();
            }
            let ok = Reply::new(250, "2.0.0", "Delivered");
            let per_recipient: Vec<Reply> = envelope
                .rcpts
                .iter()
                .map(|r| {
                    self.data_reply
                        .get(&r.address)
                        .cloned()
                        .unwrap_or(ok.clone())
                })
                .collect();
            let transaction = per_recipient
                .iter()
                .find(|r| !r.is_positive())
                .cloned()
                .unwrap_or(ok);
            self.messages.lock().unwrap().push((envelope, message));
            DataReplies {
                per_recipient,
                transaction,
            }
        })
    }
}

// ---- server and client helpers ---------------------------------------------------------

struct Server {
    addr: SocketAddr,
    handler: Arc<Recorder>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<ServeReport>,
}

impl Server {
    async fn start(protocol: Protocol, config: SmtpConfig, handler: Recorder) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler = Arc::new(handler);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, protocol, config, handler.clone(), async {
            let _ = stopped.await;
        }));
        Server {
            addr,
            handler,
            stop: Some(stop),
            task,
        }
    }

    async fn smtp() -> Server {
        Server::start(Protocol::Smtp, SmtpConfig::default(), Recorder::default()).await
    }

    async fn connect(&self) -> Client<TcpStream> {
        let mut c = Client::new(TcpStream::connect(self.addr).await.unwrap());
        let greeting = c.reply().await;
        assert!(greeting.starts_with("220 "), "{greeting}");
        c
    }

    /// Connects and sends EHLO (or LHLO).
    async fn hello(&self) -> Client<TcpStream> {
        let mut c = self.connect().await;
        let verb = if c.greeting_was_lmtp { "LHLO" } else { "EHLO" };
        c.expect(&format!("{verb} client.example"), "250-").await;
        c
    }

    fn shutdown(&mut self) {
        let _ = self.stop.take().unwrap().send(());
    }

    async fn finish(mut self) -> ServeReport {
        if self.stop.is_some() {
            self.shutdown();
        }
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("serve returns")
            .unwrap()
    }
}

struct Client<S> {
    io: BufReader<S>,
    greeting_was_lmtp: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    fn new(stream: S) -> Self {
        Client {
            io: BufReader::new(stream),
            greeting_was_lmtp: false,
        }
    }

    async fn send(&mut self, data: &str) {
        self.send_bytes(data.as_bytes()).await;
    }

    async fn send_bytes(&mut self, data: &[u8]) {
        self.io.get_mut().write_all(data).await.unwrap();
        self.io.get_mut().flush().await.unwrap();
    }

    /// One reply, all its lines joined by '\n', without CRLF.
    async fn reply(&mut self) -> String {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(WAIT, self.io.read_line(&mut line))
                .await
                .expect("a reply within the time limit")
                .unwrap();
            assert!(n > 0, "connection closed; got so far: {lines:?}");
            assert!(line.ends_with("\r\n"), "reply line without CRLF: {line:?}");
            let line = line.trim_end_matches("\r\n").to_string();
            let last = line.len() == 3 || line.as_bytes().get(3) == Some(&b' ');
            if line.starts_with("220 ") && line.contains(" LMTP ") {
                self.greeting_was_lmtp = true;
            }
            lines.push(line);
            if last {
                return lines.join("\n");
            }
        }
    }

    /// Sends a command line and returns the reply.
    async fn cmd(&mut self, line: &str) -> String {
        self.send(&format!("{line}\r\n")).await;
        self.reply().await
    }

    /// Sends a command line; the reply must start with `prefix`.
    async fn expect(&mut self, line: &str, prefix: &str) -> String {
        let reply = self.cmd(line).await;
        assert!(
            reply.starts_with(prefix),
            "{line:?}: want {prefix:?}, got {reply:?}"
        );
        reply
    }

    async fn expect_reply(&mut self, prefix: &str) -> String {
        let reply = self.reply().await;
        assert!(reply.starts_with(prefix), "want {prefix:?}, got {reply:?}");
        reply
    }

    /// The server closed the connection (EOF, or a reset after it).
    async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        match tokio::time::timeout(WAIT, self.io.read_to_end(&mut rest)).await {
            Ok(Ok(_)) => rest.is_empty(),
            Ok(Err(_)) => true,
            Err(_) => false,
        }
    }
}

fn config(f: impl FnOnce(&mut SmtpConfig)) -> SmtpConfig {
    let mut c = SmtpConfig::default();
    f(&mut c);
    c
}

fn tls_config() -> Arc<rustls::ServerConfig> {
    tls_config_from_pem(
        include_bytes!("testdata/cert.pem"),
        include_bytes!("testdata/key.pem"),
    )
    .unwrap()
}

// ---- EHLO and a whole transaction ---------------------------------------------------------

#[tokio::test]
async fn ehlo_advertises_the_extensions() {
    let server = Server::smtp().await;
    let mut c = Client::new(TcpStream::connect(server.addr).await.unwrap());
    assert_eq!(c.reply().await, "220 localhost ESMTP iwf ready");
    let ehlo = c.cmd("EHLO client.example").await;
    assert_eq!(
        ehlo,
        "250-localhost\n250-PIPELINING\n250-SIZE 10485760\n250-8BITMIME\n250-SMTPUTF8\n\
         250-ENHANCEDSTATUSCODES\n250-DSN\n250 DELIVERBY"
    );
    c.expect("HELO client.example", "250 localhost").await;
    c.expect("NOOP", "250 2.0.0").await;
    c.expect("HELP", "214 2.0.0").await;
    c.expect("QUIT", "221 2.0.0").await;
    assert!(c.closed().await);
    assert_eq!(server.finish().await.aborted_sessions, 0);

    let with_tls = Server::start(
        Protocol::Smtp,
        config(|c| {
            c.tls = Some(tls_config());
            c.deliver_by_min = Some(60);
            c.limits.message_size = 65536;
        }),
        Recorder::default(),
    )
    .await;
    let mut c = with_tls.connect().await;
    let ehlo = c.cmd("EHLO client.example").await;
    assert!(ehlo.contains("\n250-SIZE 65536\n"), "{ehlo}");
    assert!(ehlo.contains("\n250-DELIVERBY 60\n"), "{ehlo}");
    assert!(ehlo.ends_with("\n250 STARTTLS"), "{ehlo}");
}

#[tokio::test]
async fn a_transaction_reaches_the_handler_unstuffed_with_a_received_header() {
    let server = Server::smtp().await;
    let mut c = server.hello().await;
    let before = chrono::Utc::now();
    c.expect("MAIL FROM:<alice@mail.example.org>", "250 2.1.0")
        .await;
    c.expect("RCPT TO:<+15551234567@cpm.example.net>", "250 2.1.5")
        .await;
    c.expect("DATA", "354 ").await;
    c.send("Subject: hi\r\n\r\n..leading dot\r\nline\r\n.\r\n")
        .await;
    c.expect_reply("250 2.0.0 Delivered").await;
    // a second transaction on the same connection
    c.expect("MAIL FROM:<>", "250 2.1.0").await;
    c.expect("RCPT TO:<bob@cpm.example.net>", "250 2.1.5").await;
    c.expect("RSET", "250 2.0.0").await;
    c.expect("RCPT TO:<bob@cpm.example.net>", "503 5.5.1").await;
    c.expect("QUIT", "221 2.0.0").await;
    assert!(c.closed().await);

    let messages = server.handler.messages();
    assert_eq!(messages.len(), 1);
    let (env, msg) = &messages[0];
    assert_eq!(env.mail_from.address, "alice@mail.example.org");
    assert_eq!(env.rcpts.len(), 1);
    assert_eq!(env.rcpts[0].address, "+15551234567@cpm.example.net");
    assert_eq!(env.client.ip, Some("127.0.0.1".parse().unwrap()));
    assert_eq!(env.client.helo, "client.example");
    assert!(!env.client.tls && !env.client.authenticated);
    assert!(env.received_at >= before && env.received_at <= chrono::Utc::now());
    let msg = String::from_utf8(msg.clone()).unwrap();
    assert!(
        msg.starts_with(
            "Received: from client.example ([127.0.0.1])\r\n\tby localhost with ESMTP id "
        ),
        "{msg}"
    );
    let (received, body) = msg.split_once(";\r\n\t").unwrap();
    assert!(!received.contains("\r\n\r\n"));
    let (_date, body) = body.split_once("\r\n").unwrap();
    assert_eq!(body, "Subject: hi\r\n\r\n.leading dot\r\nline\r\n");
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order() {
    let server = Server::start(
        Protocol::Smtp,
        SmtpConfig::default(),
        Recorder {
            refuse_rcpt: HashMap::from([(
                "nobody@cpm.example.net".to_string(),
                Reply::new(550, "5.1.1", "<nobody@cpm.example.net>: unknown"),
            )]),
            ..Recorder::default()
        },
    )
    .await;
    let mut c = server.connect().await;
    c.send(
        "EHLO client.example\r\nMAIL FROM:<a@mail.example.org>\r\n\
         RCPT TO:<b@cpm.example.net>\r\nRCPT TO:<nobody@cpm.example.net>\r\nDATA\r\n",
    )
    .await;
    c.expect_reply("250-localhost").await;
    c.expect_reply("250 2.1.0").await;
    c.expect_reply("250 2.1.5").await;
    c.expect_reply("550 5.1.1 <nobody@cpm.example.net>: unknown")
        .await;
    c.expect_reply("354 ").await;
    c.send("hello\r\n.\r\nMAIL FROM:<a@mail.example.org>\r\nQUIT\r\n")
        .await;
    c.expect_reply("250 2.0.0").await;
    c.expect_reply("250 2.1.0").await;
    c.expect_reply("221 2.0.0").await;
    assert!(c.closed().await);
    let messages = server.handler.messages();
    assert_eq!(messages[0].0.rcpts.len(), 1);
    assert!(messages[0].1.ends_with(b"\r\n\r\nhello\r\n") || messages[0].1.ends_with(b"hello\r\n"));
}

#[tokio::test]
async fn lmtp_answers_once_per_accepted_recipient_in_order() {
    let handler = Recorder {
        refuse_rcpt: HashMap::from([(
            "b@cpm.example.net".to_string(),
            Reply::new(550, "5.1.1", "unknown"),
        )]),
        data_reply: HashMap::from([
            (
                "c@cpm.example.net".to_string(),
                Reply::new(452, "4.2.2", "full"),
            ),
            (
                "d@cpm.example.net".to_string(),
                Reply::new(550, "5.1.1", "gone"),
            ),
        ]),
        ..Recorder::default()
    };
    let server = Server::start(Protocol::Lmtp, SmtpConfig::default(), handler).await;
    let mut c = Client::new(TcpStream::connect(server.addr).await.unwrap());
    assert_eq!(c.reply().await, "220 localhost LMTP iwf ready");
    c.expect("EHLO client.example", "500 5.5.1").await;
    c.expect("HELO client.example", "500 5.5.1").await;
    c.expect("MAIL FROM:<a@mail.example.org>", "503 5.5.1 Send LHLO")
        .await;
    let lhlo = c.expect("LHLO client.example", "250-localhost").await;
    assert!(lhlo.contains("250-PIPELINING") && lhlo.contains("250-ENHANCEDSTATUSCODES"));
    c.expect("MAIL FROM:<a@mail.example.org>", "250 2.1.0")
        .await;
    c.expect("DATA", "503 5.5.1").await;
    for (rcpt, want) in [("a", "250"), ("b", "550 5.1.1"), ("c", "250"), ("d", "250")] {
        c.expect(&format!("RCPT TO:<{rcpt}@cpm.example.net>"), want)
            .await;
    }
    c.expect("DATA", "354 ").await;
    c.send("Subject: x\r\n\r\nbody\r\n.\r\n").await;
    c.expect_reply("250 2.0.0").await;
    c.expect_reply("452 4.2.2 full").await;
    c.expect_reply("550 5.1.1 gone").await;
    // oversize in LMTP: every recipient gets the refusal
    c.expect("MAIL FROM:<a@mail.example.org> SIZE=99999999", "552 5.3.4")
        .await;
    c.expect("QUIT", "221").await;
    let (env, msg) = &server.handler.messages()[0];
    let rcpts: Vec<_> = env.rcpts.iter().map(|r| r.address.as_str()).collect();
    assert_eq!(
        rcpts,
        [
            "a@cpm.example.net",
            "c@cpm.example.net",
            "d@cpm.example.net"
        ]
    );
    assert!(String::from_utf8_lossy(msg).contains(" with LMTP id "));
}

// ---- limits ------------------------------------------------------------------------------

#[tokio::test]
async fn command_lines_over_the_limit_get_500_5_5_6() {
    let server = Server::smtp().await;
    let mut c = server.connect().await;
    c.expect(&format!("NOOP {}", "x".repeat(600)), "500 5.5.6")
        .await;
    // a huge line in pieces: one reply, then the session goes on
    c.send(&"y".repeat(3000)).await;
    c.expect_reply("500 5.5.6").await;
    c.send(&"y".repeat(3000)).await;
    c.expect("\r\nNOOP", "250").await; // the long line ends at the first CRLF
    c.expect("EHLO client.example", "250-").await;
    // after EHLO, MAIL/RCPT may carry long DSN parameters, other commands may not
    c.expect("MAIL FROM:<a@mail.example.org>", "250").await;
    // smtp-proto caps addresses and ORCPT at 256 octets: two long ones make a 560-octet line
    let local = "o".repeat(220);
    let line = format!(
        "RCPT TO:<{local}@cpm.example.net> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=rfc822;{local}@mail.example.org"
    );
    assert!(line.len() > 512);
    c.expect(&line, "250").await;
    c.expect(&format!("NOOP {}", "x".repeat(600)), "500 5.5.6")
        .await;
    c.expect(&format!("XFOO {}", "x".repeat(600)), "500 5.5.6")
        .await;
    c.expect("NOOP", "250").await;
}

#[tokio::test]
async fn text_lines_over_the_limit_fail_the_message() {
    let server = Server::smtp().await;
    let mut c = server.hello().await;
    c.expect("MAIL FROM:<a@mail.example.org>", "250").await;
    c.expect("RCPT TO:<b@cpm.example.net>", "250").await;
    c.expect("DATA", "354").await;
    c.send(&format!("Subject: x\r\n\r\n{}\r\n.\r\n", "z".repeat(1200)))
        .await;
    c.expect_reply("554 5.6.0").await;
    c.expect("NOOP", "250").await;
    assert!(server.handler.messages().is_empty());
}

#[tokio::test]
async fn message_size_is_enforced_at_mail_and_during_data() {
    let server = Server::start(
        Protocol::Smtp,
        config(|c| c.limits.message_size = 1000),
        Recorder::default(),
    )
    .await;
    let mut c = server.hello().await;
    c.expect("MAIL FROM:<a@mail.example.org> SIZE=2000", "552 5.3.4")
        .await;
    c.expect("MAIL FROM:<a@mail.example.org> SIZE=500", "250")
        .await;
    c.expect("RCPT TO:<b@cpm.example.net>", "250").await;
    c.expect("DATA", "354").await;
    for _ in 0..100 {
        c.send(&format!("{}\r\n", "w".repeat(98))).await;
    }
    c.send(".\r\n").await;
    c.expect_reply("552 5.3.4").await;
    assert!(server.handler.messages().is_empty());
    // the session goes on, and a message at the limit passes
    c.expect("MAIL FROM:<a@mail.example.org>", "250").await;
    c.expect("RCPT TO:<b@cpm.example.net>", "250").await;
    c.expect("DATA", "354").await;
    c.send(&format!("{}\r\n", "v".repeat(998))).await;
    c.send(".\r\n").await;
    c.expect_reply("250").await;
    assert_eq!(server.handler.messages().len(), 1);
}

#[tokio::test]
async fn recipients_past_the_limit_get_452() {
    let server = Server::start(
        Protocol::Smtp,
        config(|c| c.limits.recipients = 3),
        Recorder::default(),
    )
    .await;
    let mut c = server.hello().await;
    c.expect("MAIL FROM:<a@mail.example.org>", "250").await;
    for i in 0..3 {
        c.expect(&format!("RCPT TO:<r{i}@cpm.example.net>"), "250")
            .await;
    }
    c.expect("RCPT TO:<r3@cpm.example.net>", "452 4.5.3").await;
    c.expect("DATA", "354").await;
    c.send("x\r\n.\r\n").await;
    c.expect_reply("250").await;
    assert_eq!(server.handler.messages()[0].0.rcpts.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn connections_over_the_limits_get_421() {
    let server = Server::start(
        Protocol::Smtp,
        config(|c| {
            c.limits.connections = 2;
            c.limits.connect_wait = Duration::ZERO;
        }),
        Recorder::default(),
    )
    .await;
    let mut a = server.connect().await;
    let _b = server.connect().await;
    let mut third = Client::new(TcpStream::connect(server.addr).await.unwrap());
    third.expect_reply("421 4.3.2").await;
    assert!(third.closed().await);
    a.expect("QUIT", "221").await;
    assert!(a.closed().await);
    // the slot comes back once the session has ended
    let mut again = None;
    for _ in 0..50 {
        let mut c = Client::new(TcpStream::connect(server.addr).await.unwrap());
        if c.reply().await.starts_with("220") {
            again = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    again.expect("a slot frees up").expect("NOOP", "250").await;

    let per_ip = Server::start(
        Protocol::Smtp,
        config(|c| c.limits.connections_per_ip = 1),
        Recorder::default(),
    )
    .await;
    let mut first = per_ip.connect().await;
    let mut second = Client::new(TcpStream::connect(per_ip.addr).await.unwrap());
    second.expect_reply("421 4.7.0").await;
    assert!(second.closed().await);
    first.expect("NOOP", "250").await;
}

#[tokio::test(start_paused = true)]
async fn command_timeout_closes_only_the_idle_session() {
    let server = Server::start(
        Protocol::Smtp,
        config(|c| c.limits.command_timeout = Duration::from_millis(300)),
        Recorder::default(),
    )
    .await;
    let mut idle = server.connect().await;
    let mut busy = server.connect().await;
    for _ in 0..8 {
        busy.expect("NOOP", "250").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    idle.expect_reply("421 4.4.2").await;
    assert!(idle.closed().await);
    busy.expect("NOOP", "250").await;
}

#[tokio::test(start_paused = true)]
async fn data_timeout_closes_the_session_without_delivering() {
    let server = Server::start(
        Protocol::Smtp,
        config(|c| c.limits.data_timeout = Duration::from_millis(300)),
        Recorder::default(),
    )
    .await;
    let mut c = server.hello().await;
    c.expect("MAIL FROM:<a@mail.example.org>", "250").await;
    c.expect("RCPT TO:<b@cpm.example.net>", "250").await;
    c.expect("DATA", "354").await;
    c.send("Subject: never finished\r\n").await;
    c.expect_reply("421 4.4.2").await;
    assert!(c.closed().await);
    assert!(server.handler.messages().is_empty());
}

#[tokio::test]
async fn too_many_bad_commands_close_the_session() {
    let server = Server::start(
        Protocol::Smtp,
        config(|c| c.limits.bad_commands = 3),
        Recorder::default(),
    )
    .await;
    let mut c = server.connect().await;
    c.expect("FOO", "500 5.5.1").await;
    c.expect("RCPT TO:<a@b.example>", "503 5.5.1").await;
    c.expect("NOOP\n", "500 5.5.2").await;
    c.expect("BAR", "421 4.7.0").await;
    assert!(c.closed().await);
}

#[tokio::test]
async fn bare_cr_and_lf_are_refused_in_commands_and_content() {
    let server = Server::smtp().await;
    let mut c = server.connect().await;
    c.send("NOOP\n").await;
    c.expect_reply("500 5.5.2").await;
    c.send("NO\rOP\r\n").await;
    c.expect_reply("500 5.5.2").await;
    c.send("EHLO client.example\r\n").await;
    c.expect_reply("250-").await;
    c.expect("MAIL FROM:<a@mail.example.org>", "250").await;
    c.expect("RCPT TO:<b@cpm.example.net>", "250").await;
    c.expect("DATA", "354").await;
    // an SMTP smuggling attempt: LF.LF must not end the message, and the message is refused
    c.send(
        "Subject: x\r\n\r\nhi\n.\nMAIL FROM:<evil@x.example>\r\nRCPT TO:<b@cpm.example.net>\r\n\
         DATA\r\nforged\r\n.\r\n",
    )
    .await;
    c.expect_reply("554 5.6.0").await;
    c.expect("NOOP", "250").await;
    assert!(server.handler.messages().is_empty());
    assert_eq!(server.handler.rcpts.lock().unwrap().len(), 1);
}

// ---- content and parameters ---------------------------------------------------------------

#[tokio::test]
async fn eight_bit_and_smtputf8_mail() {
    let server = Server::smtp().await;
    let mut c = server.hello().await;
    c.expect("MAIL FROM:<jösé@exämple.org> BODY=8BITMIME", "553 5.6.7")
        .await;
    c.expect("MAIL FROM:<jösé@exämple.org> SMTPUTF8 BODY=8BITMIME", "250")
        .await;
    c.expect("RCPT TO:<用户@cpm.example.net>", "250").await;
    c.expect("DATA", "354").await;
    let content = "Subject: Grüße 你好\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nÄpfel\r\n";
    let mut bytes = content.as_bytes().to_vec();
    bytes.extend_from_slice(b"latin-1: caf\xe9\r\n.\r\n");
    c.send_bytes(&bytes).await;
    c.expect_reply("250").await;
    // 8-bit content without SMTPUTF8 is fine too, but not a non-ASCII recipient
    c.expect("MAIL FROM:<a@mail.example.org> BODY=8BITMIME", "250")
        .await;
    c.expect("RCPT TO:<用户@cpm.example.net>", "553 5.6.7")
        .await;

    let (env, msg) = &server.handler.messages()[0];
    assert!(env.mail_from.smtputf8);
    assert_eq!(env.mail_from.body, Some("8BITMIME"));
    assert_eq!(env.mail_from.address, "jösé@exämple.org");
    assert_eq!(env.rcpts[0].address, "用户@cpm.example.net");
    assert!(String::from_utf8_lossy(msg).contains(" with UTF8SMTP id "));
    assert!(msg.ends_with(&bytes[..bytes.len() - 3]));
}

#[tokio::test]
async fn dsn_and_deliverby_parameters_reach_the_envelope() {
    let server = Server::start(
        Protocol::Smtp,
        config(|c| c.deliver_by_min = Some(60)),
        Recorder::default(),
    )
    .await;
    let mut c = server.hello().await;
    c.expect("MAIL FROM:<a@mail.example.org> BY=0;R", "501 5.5.4")
        .await;
    c.expect("MAIL FROM:<a@mail.example.org> BY=-5;R", "501 5.5.4")
        .await;
    c.expect("MAIL FROM:<a@mail.example.org> BY=30;R", "555 5.5.4")
        .await;
    c.expect("MAIL FROM:<a@mail.example.org> BY=1;X", "501 5.5.4")
        .await;
    let before = chrono::Utc::now();
    c.expect(
        "MAIL FROM:<a@mail.example.org> RET=HDRS ENVID=QQ+2B314 BY=120;RT SIZE=300",
        "250",
    )
    .await;
    c.expect(
        "RCPT TO:<b@cpm.example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+2Bx@mail.example.org",
        "250",
    )
    .await;
    c.expect("RCPT TO:<c@cpm.example.net> NOTIFY=NEVER", "250")
        .await;
    c.expect("DATA", "354").await;
    c.send("x\r\n.\r\n").await;
    c.expect_reply("250").await;
    c.expect("MAIL FROM:<a@mail.example.org> BY=-30;N", "250")
        .await;

    let (env, _) = &server.handler.messages()[0];
    let from = &env.mail_from;
    assert_eq!(from.ret, Some("HDRS"));
    assert_eq!(from.envid.as_deref(), Some("QQ+314"));
    assert_eq!(from.size, Some(300));
    assert_eq!(
        from.by,
        Some(DeliverBy {
            seconds: 120,
            mode: 'R',
            trace: true
        })
    );
    assert!(env.received_at >= before);
    assert_eq!(env.rcpts[0].notify, ["SUCCESS", "FAILURE"]);
    assert_eq!(env.rcpts[0].orcpt.as_deref(), Some("b+x@mail.example.org"));
    assert_eq!(env.rcpts[1].notify, ["NEVER"]);
}

#[tokio::test]
async fn sequencing_and_syntax_errors() {
    let server = Server::smtp().await;
    let mut c = server.connect().await;
    c.expect("MAIL FROM:<a@mail.example.org>", "503 5.5.1")
        .await;
    c.expect("DATA", "503 5.5.1").await;
    c.expect("LHLO client.example", "500 5.5.1").await;
    c.expect("EHLO", "501 5.5.2").await;
    c.expect("HELO client.example", "250 localhost").await;
    c.expect("MAIL FROM:<a@mail.example.org> SIZE=10", "555 5.5.4")
        .await;
    c.expect("EHLO client.example", "250-").await;
    c.expect("RCPT TO:<b@cpm.example.net>", "503 5.5.1 Need MAIL")
        .await;
    c.expect("DATA", "503 5.5.1 Need MAIL").await;
    c.expect("MAIL FROM:a@mail.example.org", "501 5.5.2").await;
    c.expect("MAIL FROM:<a@@mail>", "501 5.1.7").await;
    c.expect("MAIL FROM:<a@mail.example.org> FOO=1", "555 5.5.4")
        .await;
    c.expect("MAIL FROM:<a@mail.example.org>", "250").await;
    c.expect("MAIL FROM:<a@mail.example.org>", "503 5.5.1")
        .await;
    c.expect("DATA", "554 5.5.1").await;
    c.expect("RCPT TO:<>", "501 5.1.3").await;
    c.expect("RCPT TO:<Postmaster>", "250").await;
    c.expect("VRFY postmaster", "502 5.5.1").await;
    c.expect("EXPN list", "502 5.5.1").await;
    c.expect("ETRN example.org", "502 5.5.1").await;
    // the chunk behind BDAT is read and thrown away, never taken for commands
    c.send_bytes(b"BDAT 12 LAST\r\nQUIT\r\nRSET\r\n").await;
    c.expect_reply("502 5.5.1").await;
    c.expect("STARTTLS", "502 5.5.1").await;
    c.expect("FOO", "500 5.5.1").await;
    c.send_bytes(b"NOOP \xff\xfe\r\n").await;
    c.expect_reply("500 5.5.2").await;
    // EHLO resets the transaction
    c.expect("EHLO client.example", "250-").await;
    c.expect("DATA", "503 5.5.1").await;
    assert_eq!(
        server.handler.rcpts.lock().unwrap()[0].address,
        "postmaster"
    );

    let vrfy = Server::start(
        Protocol::Smtp,
        config(|c| c.vrfy = VrfyPolicy::CannotVerify),
        Recorder::default(),
    )
    .await;
    vrfy.connect()
        .await
        .expect("VRFY postmaster", "252 2.5.0")
        .await;
}

// ---- shutdown -----------------------------------------------------------------------------

#[tokio::test]
async fn shutdown_lets_the_transaction_in_flight_finish() {
    let hold = Arc::new(Semaphore::new(0));
    let mut server = Server::start(
        Protocol::Smtp,
        SmtpConfig::default(),
        Recorder {
            hold: Some(hold.clone()),
            ..Recorder::default()
        },
    )
    .await;
    let mut idle = server.hello().await;
    let mut busy = server.hello().await;
    busy.expect("MAIL FROM:<a@mail.example.org>", "250").await;
    busy.expect("RCPT TO:<b@cpm.example.net>", "250").await;
    busy.expect("DATA", "354").await;
    busy.send("x\r\n.\r\nNOOP\r\n").await;
    tokio::time::timeout(WAIT, server.handler.entered_data.notified())
        .await
        .unwrap();

    server.shutdown();
    idle.expect_reply("421 4.3.2").await;
    assert!(idle.closed().await);
    // new connections are refused once the listener is gone
    tokio::time::sleep(Duration::from_millis(100)).await;
    match TcpStream::connect(server.addr).await {
        Err(_) => {}
        Ok(s) => assert!(Client::new(s).closed().await),
    }
    // the transaction in flight gets its real reply, then 421 (the pipelined NOOP too)
    hold.add_permits(1);
    busy.expect_reply("250 2.0.0 Delivered").await;
    busy.expect_reply("421 4.3.2").await;
    assert!(busy.closed().await);
    let report = server.finish().await;
    assert_eq!(report.aborted_sessions, 0);
    assert_eq!(report.sessions, 2);
}

#[tokio::test(start_paused = true)]
async fn shutdown_aborts_what_is_left_after_the_grace_period() {
    let hold = Arc::new(Semaphore::new(0));
    let mut server = Server::start(
        Protocol::Smtp,
        config(|c| c.shutdown_grace = Duration::from_millis(300)),
        Recorder {
            hold: Some(hold),
            ..Recorder::default()
        },
    )
    .await;
    let mut stuck = server.hello().await;
    stuck.expect("MAIL FROM:<a@mail.example.org>", "250").await;
    stuck.expect("RCPT TO:<b@cpm.example.net>", "250").await;
    stuck.expect("DATA", "354").await;
    stuck.send("x\r\n.\r\n").await;
    tokio::time::timeout(WAIT, server.handler.entered_data.notified())
        .await
        .unwrap();
    server.shutdown();
    let report = server.finish().await;
    assert_eq!(report.aborted_sessions, 1);
}

// ---- STARTTLS -----------------------------------------------------------------------------

async fn tls_client(tcp: TcpStream) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &include_bytes!("testdata/cert.pem")[..]) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap()
}

#[tokio::test]
async fn starttls_upgrades_the_session_and_discards_injected_commands() {
    let server = Server::start(
        Protocol::Smtp,
        config(|c| {
            c.tls = Some(tls_config());
            c.require_tls = true;
        }),
        Recorder::default(),
    )
    .await;
    let mut c = server.hello().await;
    c.expect("MAIL FROM:<a@mail.example.org>", "530 5.7.0")
        .await;
    c.expect("STARTTLS now", "501 5.5.4").await;
    // a command pipelined after STARTTLS (CVE-2011-0411) must not be executed
    c.send("STARTTLS\r\nMAIL FROM:<injected@x.example>\r\n")
        .await;
    c.expect_reply("220 2.0.0").await;
    assert!(c.io.buffer().is_empty());
    let mut c = Client::new(tls_client(c.io.into_inner()).await);
    let ehlo = c.expect("EHLO client.example", "250-localhost").await;
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    c.expect("STARTTLS", "503 5.5.1").await;
    c.expect("MAIL FROM:<a@mail.example.org>", "250 2.1.0")
        .await;
    c.expect("RCPT TO:<b@cpm.example.net>", "250").await;
    c.expect("DATA", "354").await;
    c.send("Subject: secret\r\n\r\nx\r\n.\r\n").await;
    c.expect_reply("250").await;
    c.expect("QUIT", "221").await;

    let messages = server.handler.messages();
    assert_eq!(messages.len(), 1);
    let (env, msg) = &messages[0];
    assert!(env.client.tls);
    assert_eq!(env.mail_from.address, "a@mail.example.org");
    assert!(String::from_utf8_lossy(msg).contains(" with ESMTPS id "));
}

// ---- robustness and a real peer -------------------------------------------------------------

#[tokio::test]
async fn garbage_input_neither_panics_nor_disturbs_other_sessions() {
    let server = Server::smtp().await;
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let pieces: [&[u8]; 12] = [
        b"\r\n",
        b"\n",
        b"\r",
        b".",
        b"EHLO x\r\n",
        b"MAIL FROM:<a@b.example> BY=99999999999999999999;R SIZE=-1\r\n",
        b"RCPT TO:<\xff@\x00>\r\n",
        b"DATA\r\n",
        b"\x00\xff\xc3",
        b"RCPT TO:<c@d.example> NOTIFY=,,, ORCPT=rfc822;+zz\r\n",
        b"STARTTLS\r\n",
        b"BDAT 99999999999999999999999\r\n",
    ];
    let mut sessions = Vec::new();
    for _ in 0..8 {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        let mut input = Vec::new();
        for _ in 0..400 {
            input.extend_from_slice(pieces[(next() % pieces.len() as u64) as usize]);
        }
        sessions.push(tokio::spawn(async move {
            let _ = s.write_all(&input).await;
            let mut sink = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut sink)).await;
        }));
    }
    for s in sessions {
        s.await.unwrap();
    }
    let mut c = server.hello().await;
    c.expect("NOOP", "250").await;
    let report = server.finish().await;
    assert_eq!(report.aborted_sessions, 0);
}

#[tokio::test]
async fn swaks_delivers_a_message() {
    let Some(swaks) = which("swaks") else {
        println!("note: swaks is not on PATH, skipping (apt-get install swaks)");
        return;
    };
    let server = Server::smtp().await;
    let port = server.addr.port().to_string();
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(swaks)
            .args([
                "--server",
                "127.0.0.1",
                "--port",
                &port,
                "--ehlo",
                "swaks.example",
                "--from",
                "alice@mail.example.org",
                "--to",
                "bob@cpm.example.net,carol@cpm.example.net",
                "--header",
                "Subject: from swaks",
                "--body",
                "hello from swaks\n.leading dot",
                "--pipeline",
                "--timeout",
                "20",
            ])
            .output(),
    )
    .await
    .expect("swaks finishes")
    .unwrap();
    let log = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "swaks failed: {log}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let messages = server.handler.messages();
    assert_eq!(messages.len(), 1, "{log}");
    let (env, msg) = &messages[0];
    assert_eq!(env.mail_from.address, "alice@mail.example.org");
    let rcpts: Vec<_> = env.rcpts.iter().map(|r| r.address.as_str()).collect();
    assert_eq!(rcpts, ["bob@cpm.example.net", "carol@cpm.example.net"]);
    assert_eq!(env.client.helo, "swaks.example");
    let msg = String::from_utf8_lossy(msg);
    assert!(
        msg.starts_with("Received: from swaks.example ([127.0.0.1])"),
        "{msg}"
    );
    assert!(msg.contains("Subject: from swaks\r\n"), "{msg}");
    assert!(
        msg.contains("\r\nhello from swaks\r\n.leading dot\r\n"),
        "{msg}"
    );
}

/// Python's smtplib as a second real peer: unlike swaks it can send to `+E.164@` addresses
/// (peers.md), and its LMTP class speaks LHLO.
#[tokio::test]
async fn python_smtplib_delivers_to_e164_recipients_over_smtp_and_lmtp() {
    let Some(python) = which("python3") else {
        println!("note: python3 is not on PATH, skipping");
        return;
    };
    const SCRIPT: &str = r#"
import smtplib, sys
port, proto = int(sys.argv[1]), sys.argv[2]
rcpts = sys.argv[3:]
msg = "Subject: from smtplib\r\n\r\nhello\r\n".encode()
cls = smtplib.LMTP if proto == "lmtp" else smtplib.SMTP
with cls("127.0.0.1", port, timeout=20) as s:
    refused = s.sendmail("alice@mail.example.org", rcpts, msg,
                         mail_options=["BODY=8BITMIME"], rcpt_options=["NOTIFY=SUCCESS,FAILURE"])
    assert refused == {}, refused
"#;
    for (protocol, name, rcpts) in [
        (
            Protocol::Smtp,
            "smtp",
            &[
                "+15551234567@cpm.example.net",
                "+15557654321@cpm.example.net",
            ][..],
        ),
        // smtplib reads one reply after DATA, so one recipient for LMTP
        (
            Protocol::Lmtp,
            "lmtp",
            &["+15551234567@cpm.example.net"][..],
        ),
    ] {
        let server = Server::start(protocol, SmtpConfig::default(), Recorder::default()).await;
        let output = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::process::Command::new(&python)
                .arg("-c")
                .arg(SCRIPT)
                .arg(server.addr.port().to_string())
                .arg(name)
                .args(rcpts)
                .output(),
        )
        .await
        .expect("python finishes")
        .unwrap();
        assert!(
            output.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let messages = server.handler.messages();
        assert_eq!(messages.len(), 1, "{name}");
        let (env, msg) = &messages[0];
        let got: Vec<_> = env.rcpts.iter().map(|r| r.address.as_str()).collect();
        assert_eq!(got, rcpts, "{name}");
        assert!(env.rcpts.iter().all(|r| r.notify == ["SUCCESS", "FAILURE"]));
        assert_eq!(env.mail_from.body, Some("8BITMIME"));
        assert!(msg.ends_with(b"Subject: from smtplib\r\n\r\nhello\r\n"));
        server.finish().await;
    }
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| std::path::Path::new(dir).join(name))
        .find(|p| p.is_file())
}

/// SMTP smuggling (smtpsmuggling.com): every end-of-data look-alike, each followed by a
/// smuggled transaction, all pipelined over one connection. Only `CRLF.CRLF` ends DATA, so
/// each DATA section is one message (refused when it holds a bare CR or LF) and the
/// smuggled MAIL/RCPT/DATA lines are never answered as commands.
#[tokio::test]
async fn smuggled_end_of_data_variants_never_yield_a_second_transaction() {
    let variants: &[&[u8]] = &[
        b"\n.\n",
        b"\n.\r",
        b"\r.\n",
        b"\r.\r",
        b"\n.\r\n",
        b"\r.\r\n",
        b"\r\n.\r\r\n",
        b"\r\r\n.\r\r\n",
        b"\r\n\x00.\r\n",
    ];
    let server = Server::smtp().await;
    let mut c = server.hello().await;
    let mut wire = Vec::new();
    for end in variants {
        wire.extend_from_slice(
            b"MAIL FROM:<real@mail.example.org>\r\nRCPT TO:<alice@cpm.example.net>\r\nDATA\r\n",
        );
        wire.extend_from_slice(b"Subject: real\r\n\r\nhello");
        wire.extend_from_slice(end);
        wire.extend_from_slice(
            b"MAIL FROM:<smuggled@evil.example>\r\nRCPT TO:<bob@cpm.example.net>\r\nDATA\r\nSubject: spoofed\r\n\r\nspoofed\r\n.\r\n",
        );
    }
    wire.extend_from_slice(b"QUIT\r\n");
    c.send_bytes(&wire).await;
    let mut replies = Vec::new();
    for _ in 0..variants.len() * 4 + 1 {
        replies.push(c.reply().await);
    }
    for (i, end) in variants.iter().enumerate() {
        let r = &replies[i * 4..i * 4 + 4];
        assert!(r[0].starts_with("250") && r[1].starts_with("250"), "{r:?}");
        assert!(r[2].starts_with("354"), "{r:?}");
        let want = if end.contains(&b'\x00') {
            "250"
        } else {
            "554 5.6.0"
        };
        assert!(
            r[3].starts_with(want),
            "{:?}: {r:?}",
            String::from_utf8_lossy(end)
        );
    }
    assert!(replies.last().unwrap().starts_with("221"), "{replies:?}");
    let messages = server.handler.messages();
    assert_eq!(
        messages.len(),
        1,
        "only the NUL variant is a (single) valid message"
    );
    assert_eq!(messages[0].0.mail_from.address, "real@mail.example.org");
    assert_eq!(messages[0].0.rcpts.len(), 1);
    assert!(
        messages[0].1.windows(8).any(|w| w == b"spoofed\r"),
        "the smuggled lines are content of the real message"
    );
    let rcpts = server.handler.rcpts.lock().unwrap();
    assert!(
        rcpts.iter().all(|r| r.address == "alice@cpm.example.net"),
        "{rcpts:?}"
    );
}

/// BDAT without CHUNKING: the chunk (here full of commands) is discarded before the 502; a
/// size that cannot be read past closes the connection instead.
#[tokio::test]
async fn bdat_chunks_are_never_read_as_commands() {
    let server = Server::smtp().await;
    let mut c = server.hello().await;
    let chunk = b"MAIL FROM:<x@evil.example>\r\nRCPT TO:<bob@cpm.example.net>\r\n";
    let mut wire = format!(
        "MAIL FROM:<a@mail.example.org>\r\nBDAT {} LAST\r\n",
        chunk.len()
    )
    .into_bytes();
    wire.extend_from_slice(chunk);
    wire.extend_from_slice(b"RSET\r\n");
    c.send_bytes(&wire).await;
    c.expect_reply("250").await;
    c.expect_reply("502 5.5.1").await;
    c.expect_reply("250").await;
    assert!(server.handler.rcpts.lock().unwrap().is_empty());
    for bad in [
        "BDAT 99999999999999999999999 LAST",
        "BDAT x",
        "BDAT 20000000",
    ] {
        let mut c = server.hello().await;
        c.expect(bad, "421 4.7.0").await;
        assert!(c.closed().await, "{bad}");
    }
}

/// Parameter values past their grammar's bounds (smtp-proto's parsers saturate).
#[tokio::test]
async fn out_of_range_parameters_are_refused() {
    let server = Server::smtp().await;
    let mut c = server.hello().await;
    c.expect(
        "MAIL FROM:<a@mail.example.org> SIZE=999999999999999999999",
        "501 5.5.4",
    )
    .await;
    c.expect(
        "MAIL FROM:<a@mail.example.org> SIZE=99999999999999999999",
        "552 5.3.4",
    )
    .await;
    c.expect(
        "MAIL FROM:<a@mail.example.org> BY=99999999999999999999;R",
        "501 5.5.4",
    )
    .await;
    c.expect(
        "MAIL FROM:<a@mail.example.org> BY=-99999999999999999999;N",
        "501 5.5.4",
    )
    .await;
    c.expect("MAIL FROM:<a@mail.example.org> SIZE=100", "250")
        .await;
    c.expect(
        "RCPT TO:<b@cpm.example.net> NOTIFY=SUCCESS NOTIFY=FAILURE",
        "501 5.5.4",
    )
    .await;
    c.expect("QUIT", "221").await;
}

/// A connection that finds every slot taken waits for one (as in a listen queue) instead of
/// being refused at once; past `connect_wait` it gets `421 4.3.2`.
#[tokio::test(start_paused = true)]
async fn a_full_listener_makes_new_connections_wait_for_a_slot() {
    let server = Server::start(
        Protocol::Smtp,
        config(|c| {
            c.limits.connections = 1;
            c.limits.connect_wait = Duration::from_secs(3);
        }),
        Recorder::default(),
    )
    .await;
    let mut first = server.connect().await;
    let waiter = tokio::spawn({
        let addr = server.addr;
        async move {
            let mut c = Client::new(TcpStream::connect(addr).await.unwrap());
            let greeting = c.reply().await;
            (greeting, c)
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    first.expect("QUIT", "221").await;
    let (greeting, mut c) = waiter.await.unwrap();
    assert!(greeting.starts_with("220 "), "{greeting}");
    // and one that waits longer than connect_wait is refused (on tokio's clock, paused here)
    let start = tokio::time::Instant::now();
    let mut late = Client::new(TcpStream::connect(server.addr).await.unwrap());
    late.expect_reply("421 4.3.2").await;
    assert!(start.elapsed() >= Duration::from_secs(3));
    c.expect("QUIT", "221").await;
}

async fn connect_from(ip: [u8; 4], to: SocketAddr) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::from((ip, 0))).unwrap();
    sock.connect(to).await.unwrap()
}

/// Slowloris (RFC 5321 §4.5.3.2 timeouts are per read, so a byte now and then would hold a
/// slot for ever): many clients from several addresses trickle a byte every 200 ms and
/// fill the listener. The whole-command budget, shrunk under stress, cuts them, and a
/// legitimate client from another address gets its mail through with a 250 meanwhile.
#[tokio::test]
async fn trickling_clients_do_not_starve_legitimate_mail() {
    let server = Server::start(
        Protocol::Smtp,
        config(|c| {
            c.limits.connections = 20;
            c.limits.connections_per_ip = 10;
            c.limits.stress_timeout = Duration::from_secs(1);
            c.limits.connect_wait = Duration::from_secs(5);
        }),
        Recorder::default(),
    )
    .await;
    let addr = server.addr;
    let mut tricklers = Vec::new();
    for ip in [[127, 0, 0, 2], [127, 0, 0, 3]] {
        for _ in 0..10 {
            tricklers.push(tokio::spawn(async move {
                let mut s = connect_from(ip, addr).await;
                // one byte of "EHLO x" every 200 ms, never a whole line; then the reply
                let mut cut = Vec::new();
                for b in b"EHLO trickle.example".iter().cycle().take(200) {
                    if s.write_all(&[*b]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let mut buf = [0u8; 512];
                    if let Ok(Ok(n)) =
                        tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await
                    {
                        cut.extend_from_slice(&buf[..n]);
                        if n == 0 || cut.windows(3).any(|w| w == b"421") {
                            break;
                        }
                    }
                }
                String::from_utf8_lossy(&cut).into_owned()
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = std::time::Instant::now();
    let legit = connect_from([127, 0, 0, 4], addr).await;
    let mut c = Client::new(legit);
    let greeting = c.reply().await;
    assert!(greeting.starts_with("220 "), "{greeting}");
    c.expect("EHLO legit.example", "250").await;
    c.expect("MAIL FROM:<a@mail.example.org>", "250").await;
    c.expect("RCPT TO:<b@cpm.example.net>", "250").await;
    c.expect("DATA", "354").await;
    c.expect("Subject: hi\r\n\r\nhello\r\n.", "250").await;
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "legitimate mail took {took:?}"
    );
    for t in tricklers {
        let got = tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("trickler ends")
            .unwrap();
        assert!(got.contains("421 4.4.2") || got.is_empty(), "{got}");
    }
    assert_eq!(server.handler.messages().len(), 1);
}

/// A client that pipelines commands and never reads the replies: once the socket takes no
/// more, the reply write (no longer written at once) waits at most the command timeout and
/// the session is closed; other sessions are served meanwhile.
#[tokio::test(start_paused = true)]
async fn a_client_that_never_reads_its_replies_is_cut_off() {
    let server = Server::start(
        Protocol::Smtp,
        config(|c| c.limits.command_timeout = Duration::from_millis(300)),
        Recorder::default(),
    )
    .await;
    let hog = TcpStream::connect(server.addr).await.unwrap();
    let (mut hog_read, mut hog_write) = hog.into_split();
    let writer = tokio::spawn(async move {
        let noops = b"NOOP\r\n".repeat(1 << 20);
        let _ = hog_write.write_all(&noops).await;
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut busy = server.hello().await;
    busy.expect("NOOP", "250").await;
    // The hog's connection has ended already: what it can still read is what was in the
    // socket buffers when the write gave up, far from a reply to every NOOP, then EOF or
    // a reset.
    let mut sink = vec![0u8; 1 << 16];
    let got = tokio::time::timeout(Duration::from_secs(30), async {
        let mut got = 0usize;
        loop {
            match hog_read.read(&mut sink).await {
                Ok(0) | Err(_) => return got,
                Ok(n) => got += n,
            }
        }
    })
    .await
    .expect("the session of a client that never reads was not closed");
    let all_replies = (1usize << 20) * "250 2.0.0 OK\r\n".len();
    assert!(
        got < all_replies / 2,
        "read {got} of {all_replies} reply octets"
    );
    writer.abort();
}
