//! Verb sequencing as tables, without a socket: the [`Session`] is fed bytes and every
//! reply it writes is compared, line for line, with the table. A row is
//! `(input, expected replies)`; the replies are written one per line (`\n` for the wire's
//! CRLF, which is checked separately), and a row whose batch ends the session or starts TLS
//! ends with `[close]` or `[starttls]`. Each table is one conversation: the rows run in
//! order on one session, after its greeting.
//!
//! The handler is a [`MailHandler`] that accepts everyone but the recipients it is told to
//! refuse and records what it got. The socket-level integration of the driver is
//! `tests.rs`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::session::{Next, Session, Shared};
use super::*;
use crate::clock::FixedClock;

// ---- a recording handler ------------------------------------------------------------------

#[derive(Default)]
struct Recorder {
    /// RCPT refusals by address; everyone else is accepted.
    refuse_rcpt: HashMap<String, Reply>,
    /// End-of-DATA replies by recipient address; everyone else gets `250 2.0.0 Delivered`.
    data_reply: HashMap<String, Reply>,
    rcpts: Mutex<Vec<String>>,
    messages: Mutex<Vec<(Envelope, Vec<u8>)>>,
}

impl Recorder {
    fn refusing(address: &str, reply: Reply) -> Self {
        Recorder {
            refuse_rcpt: HashMap::from([(address.to_string(), reply)]),
            ..Recorder::default()
        }
    }

    fn messages(&self) -> Vec<(Envelope, Vec<u8>)> {
        self.messages.lock().unwrap().clone()
    }
}

impl MailHandler for Recorder {
    fn rcpt(&self, _: &Envelope, rcpt: &Rcpt) -> BoxFuture<'_, Result<(), Reply>> {
        self.rcpts.lock().unwrap().push(rcpt.address.clone());
        let result = match self.refuse_rcpt.get(&rcpt.address) {
            Some(reply) => Err(reply.clone()),
            None => Ok(()),
        };
        Box::pin(async move { result })
    }

    fn data(&self, envelope: Envelope, message: Vec<u8>) -> BoxFuture<'_, DataReplies> {
        let ok = Reply::new(250, "2.0.0", "Delivered");
        let per_recipient: Vec<Reply> = envelope
            .rcpts
            .iter()
            .map(|r| self.data_reply.get(&r.address).unwrap_or(&ok).clone())
            .collect();
        let transaction = per_recipient
            .iter()
            .find(|r| !r.is_positive())
            .cloned()
            .unwrap_or(ok);
        self.messages.lock().unwrap().push((envelope, message));
        Box::pin(async move {
            DataReplies {
                per_recipient,
                transaction,
            }
        })
    }
}

// ---- the harness ----------------------------------------------------------------------------

struct Harness {
    session: Session,
    handler: Arc<Recorder>,
    shutdown: watch::Sender<bool>,
}

impl Harness {
    fn new(protocol: Protocol, config: SmtpConfig, handler: Recorder) -> Self {
        let handler = Arc::new(handler);
        let shared = Arc::new(Shared::new(
            protocol,
            config,
            handler.clone(),
            Arc::new(FixedClock::snapshot()),
        ));
        let (shutdown, rx) = watch::channel(false);
        let peer: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        Harness {
            session: Session::new(shared, peer, rx),
            handler,
            shutdown,
        }
    }

    fn smtp() -> Self {
        Harness::new(Protocol::Smtp, SmtpConfig::default(), Recorder::default())
    }

    /// Feeds `input` and returns the replies in the table's notation, as a driver would
    /// see them: a `Deliver` is followed by another call without input.
    async fn exchange(&mut self, input: &[u8]) -> String {
        let mut out = String::new();
        let mut batch = self.session.ingest(input).await;
        loop {
            out.push_str(&notation(batch.replies));
            match batch.next {
                Next::Deliver => batch = self.session.process().await,
                Next::Read { .. } => return out,
                Next::Close => return out + "[close]",
                Next::StartTls => return out + "[starttls]",
            }
        }
    }

    fn greeting(&mut self) -> String {
        let batch = self.session.greet();
        assert_eq!(batch.next, Next::Read { content: false });
        notation(batch.replies)
    }

    /// Runs the rows in order; all mismatches are reported together.
    async fn table(&mut self, rows: &[(&[u8], &str)]) {
        let mut failures = Vec::new();
        for (input, want) in rows {
            let got = self.exchange(input).await;
            if got != *want {
                failures.push(format!(
                    "input {:?}\n  want {want:?}\n  got  {got:?}",
                    String::from_utf8_lossy(input)
                ));
            }
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }
}

/// Wire replies → one line per reply line, `\n` for CRLF; a bare LF would show as `<LF>`.
fn notation(wire: &[u8]) -> String {
    let text = String::from_utf8(wire.to_vec()).expect("replies are UTF-8");
    let lines = text.replace("\r\n", "\u{0}");
    assert!(
        !lines.contains(['\r', '\n']),
        "a reply line without CRLF: {text:?}"
    );
    lines.replace('\u{0}', "\n")
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

const EHLO_REPLY: &str = "250-localhost\n250-PIPELINING\n250-SIZE 10485760\n250-8BITMIME\n\
                          250-SMTPUTF8\n250-ENHANCEDSTATUSCODES\n250-DSN\n250 DELIVERBY\n";
const LHLO_REPLY: &str = EHLO_REPLY;
const NEED_HELLO: &str = "503 5.5.1 Send EHLO or HELO first\n";
const SENDER_OK: &str = "250 2.1.0 Sender OK\n";
const RCPT_OK: &str = "250 2.1.5 Recipient OK\n";
const START_DATA: &str = "354 Start mail input; end with <CRLF>.<CRLF>\n";
const DELIVERED: &str = "250 2.0.0 Delivered\n";
const OK: &str = "250 2.0.0 OK\n";
const BARE_IN_COMMAND: &str = "500 5.5.2 Command lines must end with CRLF; bare CR or LF refused\n";
const BARE_IN_DATA: &str =
    "554 5.6.0 Message contains a bare CR or LF; lines must end with CRLF (RFC 5321 2.3.8)\n";
const TOO_LONG: &str = "500 5.5.6 Line too long\n";
const BDAT_502: &str =
    "502 5.5.1 BDAT not implemented (CHUNKING is not offered); chunk discarded\n";

// ---- the tables -------------------------------------------------------------------------------

#[tokio::test]
async fn greeting_and_hello() {
    let mut h = Harness::smtp();
    assert_eq!(h.greeting(), "220 localhost ESMTP iwf ready\n");
    h.table(&[
        (b"EHLO client.example\r\n", EHLO_REPLY),
        (b"HELO client.example\r\n", "250 localhost\n"),
        (
            b"LHLO client.example\r\n",
            "500 5.5.1 This is an SMTP server: use EHLO or HELO\n",
        ),
        (b"EHLO\r\n", "501 5.5.2 Syntax: EHLO domain\n"),
        (b"ehlo client.example\r\n", EHLO_REPLY),
        (b"NOOP\r\n", OK),
        (b"NOOP anything\r\n", OK),
        (
            b"HELP\r\n",
            "214 2.0.0 Commands: EHLO HELO LHLO MAIL RCPT DATA RSET NOOP QUIT HELP STARTTLS\n",
        ),
        (b"RSET\r\n", "250 2.0.0 Reset OK\n"),
        (
            b"QUIT\r\n",
            "221 2.0.0 localhost closing connection\n[close]",
        ),
    ])
    .await;
}

#[tokio::test]
async fn verbs_out_of_sequence() {
    let mut h = Harness::smtp();
    h.greeting();
    h.table(&[
        (b"MAIL FROM:<a@mail.example.org>\r\n", NEED_HELLO),
        (b"RCPT TO:<b@cpm.example.net>\r\n", NEED_HELLO),
        (b"DATA\r\n", NEED_HELLO),
        (b"EHLO client.example\r\n", EHLO_REPLY),
        (
            b"RCPT TO:<b@cpm.example.net>\r\n",
            "503 5.5.1 Need MAIL before RCPT\n",
        ),
        (b"DATA\r\n", "503 5.5.1 Need MAIL before DATA\n"),
        (b"MAIL FROM:<a@mail.example.org>\r\n", SENDER_OK),
        (
            b"MAIL FROM:<a@mail.example.org>\r\n",
            "503 5.5.1 Sender already specified\n",
        ),
        (b"DATA\r\n", "554 5.5.1 No valid recipients\n"),
        (b"RCPT TO:<b@cpm.example.net>\r\n", RCPT_OK),
        // RSET ends the transaction
        (b"RSET\r\n", "250 2.0.0 Reset OK\n"),
        (
            b"RCPT TO:<b@cpm.example.net>\r\n",
            "503 5.5.1 Need MAIL before RCPT\n",
        ),
        // so does EHLO (RFC 5321 §4.1.4)
        (b"MAIL FROM:<a@mail.example.org>\r\n", SENDER_OK),
        (b"EHLO client.example\r\n", EHLO_REPLY),
        (b"DATA\r\n", "503 5.5.1 Need MAIL before DATA\n"),
        // syntax
        (
            b"MAIL FROM:a@mail.example.org\r\n",
            "501 5.5.2 Syntax: MAIL FROM:<reverse-path> [parameters]\n",
        ),
        (
            b"MAIL FROM:<a@@mail>\r\n",
            "501 5.1.7 Bad sender address syntax\n",
        ),
        (
            b"MAIL FROM:<a@mail.example.org> FOO=1\r\n",
            "555 5.5.4 Parameter FOO=1 not recognized or not implemented\n",
        ),
        (b"MAIL FROM:<a@mail.example.org>\r\n", SENDER_OK),
        (
            b"RCPT TO:<>\r\n",
            "501 5.1.3 Bad recipient address syntax\n",
        ),
        (b"RCPT TO:<Postmaster>\r\n", RCPT_OK),
    ])
    .await;
    assert_eq!(
        *h.handler.rcpts.lock().unwrap(),
        ["b@cpm.example.net", "postmaster"]
    );
}

#[tokio::test]
async fn helo_allows_no_extension_parameters() {
    let mut h = Harness::smtp();
    h.greeting();
    h.table(&[
        (b"HELO client.example\r\n", "250 localhost\n"),
        (
            b"MAIL FROM:<a@mail.example.org> SIZE=10\r\n",
            "555 5.5.4 Parameter SIZE not recognized or not implemented\n",
        ),
        (b"MAIL FROM:<a@mail.example.org>\r\n", SENDER_OK),
        (
            b"RCPT TO:<b@cpm.example.net> NOTIFY=NEVER\r\n",
            "555 5.5.4 Parameter NOTIFY not recognized or not implemented\n",
        ),
    ])
    .await;
}

#[tokio::test]
async fn unknown_and_unoffered_verbs() {
    let mut h = Harness::smtp();
    h.greeting();
    h.table(&[
        (b"FOO\r\n", "500 5.5.1 Command unrecognized\n"),
        (b"VRFY postmaster\r\n", "502 5.5.1 VRFY not implemented\n"),
        (b"EXPN list\r\n", "502 5.5.1 EXPN not implemented\n"),
        (b"ETRN example.org\r\n", "502 5.5.1 ETRN not implemented\n"),
        (b"AUTH PLAIN\r\n", "502 5.5.1 AUTH not implemented\n"),
    ])
    .await;

    let mut vrfy = Harness::new(
        Protocol::Smtp,
        config(|c| c.vrfy = VrfyPolicy::CannotVerify),
        Recorder::default(),
    );
    vrfy.greeting();
    vrfy.table(&[(
        b"VRFY postmaster\r\n",
        "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery\n",
    )])
    .await;
}

/// BDAT without CHUNKING: the chunk is thrown away, even when it arrives in pieces and
/// looks like commands; a size that cannot be read past closes the session.
#[tokio::test]
async fn bdat_chunks_are_skipped() {
    let mut h = Harness::smtp();
    h.greeting();
    h.table(&[
        (b"EHLO client.example\r\n", EHLO_REPLY),
        (b"BDAT 12 LAST\r\nQUIT\r\nRSET\r\n", BDAT_502),
        (b"BDAT 0 LAST\r\n", BDAT_502),
        // a chunk in pieces: the 502 comes when its last octet has arrived
        (b"BDAT 10\r\nQUIT\r\n", ""),
        (b"RSE", ""),
        (b"TNOOP\r\n", &format!("{BDAT_502}{OK}")),
        (b"MAIL FROM:<a@mail.example.org>\r\n", SENDER_OK),
        (
            b"BDAT 31 LAST\r\nRCPT TO:<bob@cpm.example.net>\r\nRSET\r\n",
            &format!("{BDAT_502}{}", "250 2.0.0 Reset OK\n"),
        ),
    ])
    .await;
    assert!(h.handler.rcpts.lock().unwrap().is_empty());

    for bad in [
        &b"BDAT 99999999999999999999999 LAST\r\n"[..],
        b"BDAT x\r\n",
        b"BDAT 20000000\r\n",
        b"BDAT\r\n",
    ] {
        let mut h = Harness::smtp();
        h.greeting();
        h.table(&[(
            bad,
            "421 4.7.0 localhost BDAT not implemented and its chunk size is unusable; closing\n[close]",
        )])
        .await;
    }
}

#[tokio::test]
async fn the_driver_is_told_what_input_comes_next() {
    let mut h = Harness::smtp();
    h.greeting();
    let batch = h.session.ingest(b"EHLO x\r\nBDAT 5\r\n").await;
    assert_eq!(batch.next, Next::Read { content: true });
    let batch = h.session.ingest(b"12345").await;
    assert_eq!(batch.next, Next::Read { content: false });
    let batch = h
        .session
        .ingest(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n")
        .await;
    assert_eq!(batch.next, Next::Read { content: true });
    assert!(batch.new_content);
    let batch = h.session.ingest(b"Subject: x\r\n").await;
    assert_eq!(batch.next, Next::Read { content: true });
    assert!(!batch.new_content);
    // The end of data: the 354 before it is written before the handler gets the message.
    let batch = h.session.ingest(b"\r\nbody\r\n.\r\nNOOP\r\n").await;
    assert_eq!((batch.replies, batch.next), (&b""[..], Next::Deliver));
    assert!(h.handler.messages().is_empty());
    let batch = h.session.process().await;
    assert_eq!(
        notation(batch.replies),
        format!("{DELIVERED}{OK}"),
        "the delivery reply, then the pipelined NOOP"
    );
    assert_eq!(batch.next, Next::Read { content: false });
    assert_eq!(h.handler.messages().len(), 1);
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order_in_one_batch() {
    let mut h = Harness::new(
        Protocol::Smtp,
        SmtpConfig::default(),
        Recorder::refusing(
            "nobody@cpm.example.net",
            Reply::new(550, "5.1.1", "<nobody@cpm.example.net>: unknown"),
        ),
    );
    h.greeting();
    h.table(&[
        (
            b"EHLO client.example\r\nMAIL FROM:<a@mail.example.org>\r\n\
              RCPT TO:<b@cpm.example.net>\r\nRCPT TO:<nobody@cpm.example.net>\r\nDATA\r\n",
            &format!(
                "{EHLO_REPLY}{SENDER_OK}{RCPT_OK}550 5.1.1 <nobody@cpm.example.net>: unknown\n{START_DATA}"
            ),
        ),
        (
            b"hello\r\n.\r\nMAIL FROM:<a@mail.example.org>\r\nQUIT\r\n",
            &format!("{DELIVERED}{SENDER_OK}221 2.0.0 localhost closing connection\n[close]"),
        ),
    ])
    .await;
    let messages = h.handler.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].0.rcpts.len(), 1);
    assert!(messages[0].1.ends_with(b"\r\nhello\r\n"));
}

#[tokio::test]
async fn too_many_errors_close_the_session() {
    let mut h = Harness::new(
        Protocol::Smtp,
        config(|c| c.limits.bad_commands = 3),
        Recorder::default(),
    );
    h.greeting();
    h.table(&[
        (b"FOO\r\n", "500 5.5.1 Command unrecognized\n"),
        (b"RCPT TO:<a@b.example>\r\n", NEED_HELLO),
        // not an error: NOOP, and 4xx/5xx outside 5.5.x
        (b"NOOP\r\n", OK),
        (b"NOOP\n", BARE_IN_COMMAND),
        (
            b"BAR\r\nNOOP\r\n",
            "421 4.7.0 localhost Too many errors, closing connection\n[close]",
        ),
    ])
    .await;
}

#[tokio::test]
async fn over_long_command_lines() {
    let long_noop = format!("NOOP {}\r\n", "x".repeat(600));
    let ys = "y".repeat(3000);
    let local = "o".repeat(220);
    let long_rcpt = format!(
        "RCPT TO:<{local}@cpm.example.net> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=rfc822;{local}@mail.example.org\r\n"
    );
    assert!(long_rcpt.len() > 512);
    let mut h = Harness::smtp();
    h.greeting();
    h.table(&[
        (long_noop.as_bytes(), TOO_LONG),
        // a huge line in pieces: one reply, the rest is dropped up to its LF
        (ys.as_bytes(), TOO_LONG),
        (ys.as_bytes(), ""),
        (b"\r\nNOOP\r\n", OK),
        // before EHLO, MAIL and RCPT get no allowance
        (long_rcpt.as_bytes(), TOO_LONG),
        (b"EHLO client.example\r\n", EHLO_REPLY),
        (b"MAIL FROM:<a@mail.example.org>\r\n", SENDER_OK),
        // after it, they may carry long DSN parameters; other commands may not
        (long_rcpt.as_bytes(), RCPT_OK),
        (long_noop.as_bytes(), TOO_LONG),
        (format!("XFOO {}\r\n", "x".repeat(600)).as_bytes(), TOO_LONG),
        (b"NOOP\r\n", OK),
    ])
    .await;
}

#[tokio::test]
async fn bare_cr_and_lf_in_commands() {
    let mut h = Harness::smtp();
    h.greeting();
    h.table(&[
        (b"NOOP\n", BARE_IN_COMMAND),
        (b"NO\rOP\r\n", BARE_IN_COMMAND),
        (b"NOOP\r\rQUIT\r\n", BARE_IN_COMMAND),
        (b"\n", BARE_IN_COMMAND),
        (b"NOOP\r", ""),
        (b"\n", OK),
    ])
    .await;
}

#[tokio::test]
async fn starttls_refusals_and_the_upgrade() {
    let mut plain = Harness::smtp();
    plain.greeting();
    plain
        .table(&[
            (b"EHLO client.example\r\n", EHLO_REPLY),
            (b"STARTTLS\r\n", "502 5.5.1 STARTTLS not implemented\n"),
        ])
        .await;

    let mut h = Harness::new(
        Protocol::Smtp,
        config(|c| {
            c.tls = Some(tls_config());
            c.require_tls = true;
        }),
        Recorder::default(),
    );
    h.greeting();
    let ehlo_tls = EHLO_REPLY.replace("250 DELIVERBY\n", "250-DELIVERBY\n250 STARTTLS\n");
    h.table(&[
        (b"EHLO client.example\r\n", &ehlo_tls),
        (
            b"MAIL FROM:<a@mail.example.org>\r\n",
            "530 5.7.0 Must issue a STARTTLS command first\n",
        ),
        (
            b"STARTTLS now\r\n",
            "501 5.5.4 STARTTLS takes no arguments\n",
        ),
        // a command pipelined after STARTTLS (CVE-2011-0411) is dropped, never answered
        (
            b"STARTTLS\r\nMAIL FROM:<injected@x.example>\r\n",
            "220 2.0.0 Ready to start TLS\n[starttls]",
        ),
    ])
    .await;
    assert!(!h.session.pending_input());
    let batch = h.session.tls_started();
    assert_eq!(batch.next, Next::Read { content: false });
    assert!(batch.replies.is_empty());
    h.table(&[
        (b"MAIL FROM:<a@mail.example.org>\r\n", NEED_HELLO),
        (b"EHLO client.example\r\n", EHLO_REPLY),
        (b"STARTTLS\r\n", "503 5.5.1 TLS already active\n"),
        (b"MAIL FROM:<a@mail.example.org>\r\n", SENDER_OK),
        (b"RCPT TO:<b@cpm.example.net>\r\n", RCPT_OK),
        (b"DATA\r\n", START_DATA),
        (b"Subject: secret\r\n\r\nx\r\n.\r\n", DELIVERED),
    ])
    .await;
    let (env, msg) = &h.handler.messages()[0];
    assert!(env.client.tls);
    assert!(String::from_utf8_lossy(msg).contains(" with ESMTPS id "));

    // in a transaction (without require_tls)
    let mut h = Harness::new(
        Protocol::Smtp,
        config(|c| c.tls = Some(tls_config())),
        Recorder::default(),
    );
    h.greeting();
    h.table(&[
        (b"EHLO client.example\r\n", &ehlo_tls),
        (b"MAIL FROM:<a@mail.example.org>\r\n", SENDER_OK),
        (
            b"STARTTLS\r\n",
            "503 5.5.1 STARTTLS not allowed during a mail transaction\n",
        ),
    ])
    .await;
}

#[tokio::test]
async fn eight_bit_commands_and_content() {
    let mut h = Harness::smtp();
    h.greeting();
    let mut content = "Subject: Grüße 你好\r\n\r\nÄpfel\r\n".as_bytes().to_vec();
    content.extend_from_slice(b"latin-1: caf\xe9\r\n.\r\n");
    h.table(&[
        (
            b"NOOP \xff\xfe\r\n",
            "500 5.5.2 Command is not valid UTF-8\n",
        ),
        (b"EHLO client.example\r\n", EHLO_REPLY),
        (
            "MAIL FROM:<jösé@exämple.org> BODY=8BITMIME\r\n".as_bytes(),
            "553 5.6.7 Non-ASCII addresses not permitted without SMTPUTF8\n",
        ),
        (
            "MAIL FROM:<jösé@exämple.org> SMTPUTF8 BODY=8BITMIME\r\n".as_bytes(),
            SENDER_OK,
        ),
        ("RCPT TO:<用户@cpm.example.net>\r\n".as_bytes(), RCPT_OK),
        (b"DATA\r\n", START_DATA),
        (&content, DELIVERED),
        (
            b"MAIL FROM:<a@mail.example.org> BODY=8BITMIME\r\n",
            SENDER_OK,
        ),
        (
            "RCPT TO:<用户@cpm.example.net>\r\n".as_bytes(),
            "553 5.6.7 Non-ASCII addresses not permitted without SMTPUTF8\n",
        ),
    ])
    .await;
    let (env, msg) = &h.handler.messages()[0];
    assert!(env.mail_from.smtputf8);
    assert!(msg.ends_with(&content[..content.len() - 3]));
}

#[tokio::test]
async fn lmtp_answers_once_per_accepted_recipient() {
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
    let mut h = Harness::new(Protocol::Lmtp, SmtpConfig::default(), handler);
    assert_eq!(h.greeting(), "220 localhost LMTP iwf ready\n");
    let wrong = "500 5.5.1 This is an LMTP server: use LHLO\n";
    h.table(&[
        (b"EHLO client.example\r\n", wrong),
        (b"HELO client.example\r\n", wrong),
        (
            b"MAIL FROM:<a@mail.example.org>\r\n",
            "503 5.5.1 Send LHLO first\n",
        ),
        (b"LHLO client.example\r\n", LHLO_REPLY),
        (b"MAIL FROM:<a@mail.example.org>\r\n", SENDER_OK),
        (b"DATA\r\n", "503 5.5.1 No valid recipients\n"),
        (
            b"RCPT TO:<a@cpm.example.net>\r\nRCPT TO:<b@cpm.example.net>\r\n\
              RCPT TO:<c@cpm.example.net>\r\nRCPT TO:<d@cpm.example.net>\r\nDATA\r\n",
            &format!("{RCPT_OK}550 5.1.1 unknown\n{RCPT_OK}{RCPT_OK}{START_DATA}"),
        ),
        (
            b"Subject: x\r\n\r\nbody\r\n.\r\n",
            "250 2.0.0 Delivered\n452 4.2.2 full\n550 5.1.1 gone\n",
        ),
        // a refused message: every recipient gets the refusal
        (
            b"MAIL FROM:<a@mail.example.org>\r\nRCPT TO:<a@cpm.example.net>\r\n\
              RCPT TO:<c@cpm.example.net>\r\nDATA\r\nbare\nLF\r\n.\r\n",
            &format!("{SENDER_OK}{RCPT_OK}{RCPT_OK}{START_DATA}{BARE_IN_DATA}{BARE_IN_DATA}"),
        ),
    ])
    .await;
    let messages = h.handler.messages();
    assert_eq!(messages.len(), 1);
    assert!(String::from_utf8_lossy(&messages[0].1).contains(" with LMTP id "));
}

/// Only `CRLF.CRLF` ends DATA; dots are unstuffed; the smuggled "end" variants are content.
#[tokio::test]
async fn dot_stuffing_and_the_end_of_data() {
    let mut h = Harness::smtp();
    h.greeting();
    let tx = b"MAIL FROM:<a@mail.example.org>\r\nRCPT TO:<b@cpm.example.net>\r\nDATA\r\n";
    let head = format!("{SENDER_OK}{RCPT_OK}{START_DATA}");
    h.table(&[
        (b"EHLO client.example\r\n", EHLO_REPLY),
        (tx, &head),
        (b"..leading dot\r\nline\r\n", ""),
        (b".", ""),
        (b"\r", ""),
        (b"\n", DELIVERED),
        // LF.LF is not an end: the smuggled transaction is content, the message is refused
        (tx, &head),
        (
            b"hi\n.\nMAIL FROM:<evil@x.example>\r\nRCPT TO:<c@cpm.example.net>\r\nDATA\r\nforged\r\n",
            "",
        ),
        (b".\r\n", BARE_IN_DATA),
        // nor is CRLF.CR CR LF
        (tx, &head),
        (b"x\r\n.\r\r\nMAIL FROM:<evil@x.example>\r\n", ""),
        (b".\r\n", BARE_IN_DATA),
        // a NUL before the dot makes it content, and valid
        (tx, &head),
        (b"x\r\n\x00.\r\nstill content\r\n.\r\nNOOP\r\n", &format!("{DELIVERED}{OK}")),
        // an empty message
        (tx, &head),
        (b".\r\n", DELIVERED),
    ])
    .await;
    let messages = h.handler.messages();
    assert_eq!(messages.len(), 3);
    let body = |m: &[u8]| {
        let m = String::from_utf8_lossy(m).into_owned();
        // after the Received: header (its date line is the last one indented by a tab)
        let (_, rest) = m.split_once(";\r\n\t").unwrap();
        rest.split_once("\r\n").unwrap().1.to_string()
    };
    assert_eq!(body(&messages[0].1), ".leading dot\r\nline\r\n");
    assert_eq!(body(&messages[1].1), "x\r\n\u{0}.\r\nstill content\r\n");
    assert_eq!(body(&messages[2].1), "");
    assert_eq!(*h.handler.rcpts.lock().unwrap(), ["b@cpm.example.net"; 5]);
}

#[tokio::test]
async fn content_limits_fail_the_message_not_the_session() {
    let mut h = Harness::new(
        Protocol::Smtp,
        config(|c| c.limits.message_size = 2000),
        Recorder::default(),
    );
    h.greeting();
    let tx = b"MAIL FROM:<a@mail.example.org>\r\nRCPT TO:<b@cpm.example.net>\r\nDATA\r\n";
    let head = format!("{SENDER_OK}{RCPT_OK}{START_DATA}");
    let big = format!("{}\r\n", "w".repeat(98)).repeat(21);
    let too_big = "552 5.3.4 Message size exceeds fixed maximum message size of 2000 octets\n";
    h.table(&[
        (
            b"EHLO client.example\r\n",
            &EHLO_REPLY.replace("10485760", "2000"),
        ),
        (b"MAIL FROM:<a@mail.example.org> SIZE=2001\r\n", too_big),
        (tx, &head),
        (big.as_bytes(), ""),
        (b".\r\n", too_big),
        (tx, &head),
        (
            format!("{}\r\n.\r\n", "z".repeat(999)).as_bytes(),
            "554 5.6.0 Message contains a line longer than 1000 octets (RFC 5321 4.5.3.1.6)\n",
        ),
        (tx, &head),
        (
            format!("{}\r\n.\r\n", "v".repeat(998)).as_bytes(),
            DELIVERED,
        ),
    ])
    .await;
    assert_eq!(h.handler.messages().len(), 1);
}

#[tokio::test]
async fn recipients_past_the_limit() {
    let mut h = Harness::new(
        Protocol::Smtp,
        config(|c| c.limits.recipients = 2),
        Recorder::default(),
    );
    h.greeting();
    h.table(&[
        (b"EHLO client.example\r\n", EHLO_REPLY),
        (b"MAIL FROM:<a@mail.example.org>\r\n", SENDER_OK),
        (b"RCPT TO:<r0@cpm.example.net>\r\n", RCPT_OK),
        (b"RCPT TO:<r1@cpm.example.net>\r\n", RCPT_OK),
        (
            b"RCPT TO:<r2@cpm.example.net>\r\n",
            "452 4.5.3 Too many recipients\n",
        ),
    ])
    .await;
}

/// Shutdown: the next command gets `421 4.3.2`, but a message already arriving is
/// finished and answered first.
#[tokio::test]
async fn shutdown_is_answered_between_commands() {
    let mut h = Harness::smtp();
    h.greeting();
    let shutting = "421 4.3.2 localhost Service shutting down, closing connection\n[close]";
    h.table(&[
        (b"EHLO client.example\r\n", EHLO_REPLY),
        (
            b"MAIL FROM:<a@mail.example.org>\r\nRCPT TO:<b@cpm.example.net>\r\nDATA\r\n",
            &format!("{SENDER_OK}{RCPT_OK}{START_DATA}"),
        ),
    ])
    .await;
    h.shutdown.send(true).unwrap();
    assert!(h.session.shutting_down());
    h.table(&[(b"x\r\n.\r\nNOOP\r\n", &format!("{DELIVERED}{shutting}"))])
        .await;

    let mut idle = Harness::smtp();
    idle.greeting();
    let batch = idle.session.shut_down();
    assert_eq!(notation(batch.replies), &shutting[..shutting.len() - 7]);
    assert_eq!(batch.next, Next::Close);
}

#[tokio::test]
async fn the_envelope_takes_its_time_from_the_clock() {
    let mut h = Harness::smtp();
    h.greeting();
    h.table(&[(
        b"EHLO client.example\r\nMAIL FROM:<a@mail.example.org>\r\nRCPT TO:<b@cpm.example.net>\r\nDATA\r\nx\r\n.\r\n",
        &format!("{EHLO_REPLY}{SENDER_OK}{RCPT_OK}{START_DATA}{DELIVERED}"),
    )])
    .await;
    let (env, msg) = &h.handler.messages()[0];
    assert_eq!(env.received_at, crate::ids::fixed_now());
    assert_eq!(env.client.ip, Some("192.0.2.7".parse().unwrap()));
    assert_eq!(env.client.helo, "client.example");
    let msg = String::from_utf8_lossy(msg);
    assert!(
        msg.starts_with(
            "Received: from client.example ([192.0.2.7])\r\n\tby localhost with ESMTP id "
        ),
        "{msg}"
    );
    assert!(msg.contains("Fri, 21 Nov 2025 14:03:07 +0000"), "{msg}");
}
