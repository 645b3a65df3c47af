//! Framing, kept as a property test (issue 14 item 2): whatever bytes one connection sends,
//! the real SMTP server (over a loopback socket, with a recording `MailHandler`) completes
//! no more transactions than the stream has real `<CRLF>.<CRLF>` terminators, and no more
//! than it answered `354` to. The streams are built from SMTP commands, message text, the
//! end-of-data look-alikes of the SMTP-smuggling research, BDAT chunks, NUL and random
//! octets, pipelined in one write and cut in pieces. After each stream a fresh connection
//! still gets its normal mail delivered (`250`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use iwf::smtp::envelope::{Envelope, Rcpt};
use iwf::smtp::reply::Reply;
use iwf::smtp::{DataReplies, MailHandler, Protocol, SmtpConfig, serve};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(10);

/// Accepts everyone; records every message handed over.
#[derive(Default)]
struct Recorder {
    messages: Mutex<Vec<Vec<u8>>>,
}

impl MailHandler for Recorder {
    fn rcpt(&self, _: &Envelope, _: &Rcpt) -> BoxFuture<'_, Result<(), Reply>> {
        Box::pin(async { Ok(()) })
    }
    fn data(&self, env: Envelope, message: Vec<u8>) -> BoxFuture<'_, DataReplies> {
        self.messages.lock().unwrap().push(message);
        Box::pin(async move { DataReplies::all(&env, Reply::new(250, "2.0.0", "OK")) })
    }
}

/// Sends `pieces` on one connection, half-closes, and returns everything the server wrote.
/// The server may close early (too many errors): write errors end the sending.
async fn exchange(addr: SocketAddr, pieces: &[Vec<u8>]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = s.split();
    let send = async {
        for p in pieces {
            if w.write_all(p).await.is_err() {
                break;
            }
        }
        let _ = w.shutdown().await;
    };
    let mut out = Vec::new();
    let recv = async {
        let _ = tokio::time::timeout(WAIT, r.read_to_end(&mut out)).await;
    };
    tokio::join!(send, recv);
    String::from_utf8_lossy(&out).into_owned()
}

/// A normal mail on a new connection; returns every reply.
async fn normal_mail(addr: SocketAddr) -> String {
    exchange(
        addr,
        &[b"EHLO ok.example\r\nMAIL FROM:<a@ok.example>\r\nRCPT TO:<b@ok.example>\r\nDATA\r\nSubject: ok\r\n\r\nok\r\n.\r\nQUIT\r\n".to_vec()],
    )
    .await
}

/// Overlapping occurrences of `CRLF.CRLF` in the whole stream: an upper bound on the DATA
/// sections that can end in it, whatever the commands around them did.
fn terminators(stream: &[u8]) -> usize {
    stream.windows(5).filter(|w| w == b"\r\n.\r\n").count()
}

fn fragment() -> impl Strategy<Value = Vec<u8>> {
    let fixed: Vec<&'static [u8]> = vec![
        b"EHLO client.example\r\n",
        b"HELO client.example\r\n",
        b"MAIL FROM:<a@mail.example.org>\r\n",
        b"MAIL FROM:<a@b> SIZE=999999999999999999999\r\n",
        b"RCPT TO:<+15551234567@cpm.example.net>\r\n",
        b"RCPT TO:<x@y> NOTIFY=NEVER\r\n",
        b"DATA\r\n",
        b"DATA\n",
        b"RSET\r\n",
        b"NOOP\r\n",
        b"BDAT 12\r\n",
        b"BDAT 5 LAST\r\n",
        b"Subject: x\r\n\r\n",
        b"hello\r\n",
        b"..stuffed\r\n",
        b"\r\n.\r\n",
        b".\r\n",
        b"\n.\n",
        b"\n.\r",
        b"\r.\n",
        b"\r.\r",
        b"\n.\r\n",
        b"\r.\r\n",
        b"\r\n.\r\r\n",
        b"\r\r\n.\r\r\n",
        b"\r\n\x00.\r\n",
        b"\r\n.\n",
        b"\x00",
        b"\r",
        b"\n",
        b".",
    ];
    prop_oneof![
        4 => proptest::sample::select(fixed).prop_map(<[u8]>::to_vec),
        1 => proptest::collection::vec(any::<u8>(), 0..16),
    ]
}

fn stream() -> impl Strategy<Value = (Vec<u8>, usize)> {
    (proptest::collection::vec(fragment(), 1..40), 1usize..64)
        .prop_map(|(parts, step)| (parts.concat(), step))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn no_more_transactions_than_real_terminators((bytes, step) in stream()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (delivered, replies, after) = rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let handler = Arc::new(Recorder::default());
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let config = SmtpConfig {
                hostname: "iwf.test".into(),
                ..SmtpConfig::default()
            };
            let task = tokio::spawn(serve(listener, Protocol::Smtp, config, handler.clone(), async {
                let _ = stopped.await;
            }));
            // One write, then the same stream in pieces on a second connection.
            let whole = exchange(addr, std::slice::from_ref(&bytes)).await;
            let pieces: Vec<Vec<u8>> = bytes.chunks(step).map(<[u8]>::to_vec).collect();
            let cut = exchange(addr, &pieces).await;
            let delivered = handler.messages.lock().unwrap().len();
            let after = normal_mail(addr).await;
            let _ = stop.send(());
            let _ = tokio::time::timeout(WAIT, task).await;
            (delivered, [whole, cut], after)
        });
        let bound = terminators(&bytes);
        let accepted: usize = replies.iter().map(|r| r.matches("\r\n354 ").count() + usize::from(r.starts_with("354 "))).sum();
        prop_assert!(delivered <= 2 * bound, "{delivered} transactions, {bound} terminators in {:?}", String::from_utf8_lossy(&bytes));
        prop_assert!(delivered <= accepted, "{delivered} transactions after {accepted} 354s");
        // Both connections see the same stream: they complete the same number of sections.
        let n = |r: &str| r.matches("\r\n250 2.0.0 OK").count();
        prop_assert_eq!(n(&replies[0]), n(&replies[1]), "whole vs pieces differ for {:?}", String::from_utf8_lossy(&bytes));
        for r in &replies {
            prop_assert!(r.lines().all(|l| l.len() <= 512), "reply line over 512 octets");
        }
        prop_assert!(after.contains("\r\n250 2.0.0 OK\r\n221 "), "normal mail after the stream: {after:?}");
    }
}

/// Every end-of-data look-alike, pipelined with a smuggled transaction behind it, over one
/// connection: one transaction at most per real terminator, and the smuggled sender never
/// reaches the handler as an envelope of its own.
#[test]
fn smuggled_transactions_never_complete() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler = Arc::new(Recorder::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(
            listener,
            Protocol::Smtp,
            SmtpConfig::default(),
            handler.clone(),
            async {
                let _ = stopped.await;
            },
        ));
        let ends: &[&[u8]] = &[
            b"\n.\n",
            b"\n.\r",
            b"\r.\n",
            b"\r.\r",
            b"\n.\r\n",
            b"\r.\r\n",
            b"\r\n.\r\r\n",
            b"\r\r\n.\r\r\n",
            b"\r\n\x00.\r\n",
            b"\r\n.\n",
            b"\r\n.\r",
        ];
        let mut stream = b"EHLO c.example\r\n".to_vec();
        for end in ends {
            stream.extend_from_slice(b"MAIL FROM:<a@ok.example>\r\nRCPT TO:<b@ok.example>\r\nDATA\r\nhello");
            stream.extend_from_slice(end);
            stream.extend_from_slice(b"MAIL FROM:<smuggled@evil.example>\r\nRCPT TO:<b@ok.example>\r\nDATA\r\nSpoofed\r\n.\r\n");
        }
        stream.extend_from_slice(b"QUIT\r\n");
        let replies = exchange(addr, &[stream]).await;
        // Each variant is one message (refused for its bare CR/LF, or delivered whole);
        // the smuggled MAIL FROM is never answered as a command.
        assert_eq!(replies.matches("\r\n354 ").count(), ends.len(), "{replies}");
        assert!(handler.messages.lock().unwrap().len() <= 1, "{replies}");
        for m in handler.messages.lock().unwrap().iter() {
            assert!(m.ends_with(b"Spoofed\r\n"), "the smuggled lines are content");
        }
        assert!(normal_mail(addr).await.contains("\r\n250 2.0.0 OK\r\n"));
        let _ = stop.send(());
        let _ = tokio::time::timeout(WAIT, task).await;
    });
}
