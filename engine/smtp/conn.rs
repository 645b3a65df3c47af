//! The driver of one connection: the socket around a [`Session`].
//!
//! Everything here is I/O and time: reading with deadlines, one write per reply batch
//! (PIPELINING), the STARTTLS handshake, the shutdown signal, the lingering close. What to
//! answer is the session's (`session.rs`), which never sees the socket.
//!
//! Every read has a deadline ([`Connection::read_deadline`]); the shutdown signal is looked
//! at whenever the session is between commands. Timers are tokio's (through the injected
//! clock), so they run on a paused clock in tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::session::{Next, Session, Shared};
use super::tls::Stream;

/// How long a closing session waits for the client to close its side.
const LINGER: Duration = Duration::from_secs(2);

/// The current wait for input (for the whole-command and DATA budgets).
#[derive(Debug, Clone, Copy)]
struct Waiting {
    /// Message content (DATA, a BDAT chunk), or a command line.
    content: bool,
    since: tokio::time::Instant,
    /// Octets that arrived during it.
    got: usize,
}

/// One connection: its stream and its session.
pub(crate) struct Connection {
    session: Session,
    stream: Stream,
    shared: Arc<Shared>,
    waiting: Option<Waiting>,
    shutdown: watch::Receiver<bool>,
}

impl Connection {
    pub(crate) fn new(
        shared: Arc<Shared>,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Connection {
            session: Session::new(shared.clone(), peer, shutdown.clone()),
            stream: Stream::Plain(stream),
            shared,
            waiting: None,
            shutdown,
        }
    }

    /// Runs the session to its end. Never panics on client input; I/O errors end it.
    pub(crate) async fn run(mut self) {
        let peer = self.session.peer;
        tracing::debug!(%peer, "session start");
        if let Err(e) = self.serve().await {
            tracing::debug!(%peer, error = %e, "session ended by I/O error");
        }
        tracing::debug!(%peer, "session end");
    }

    async fn serve(&mut self) -> std::io::Result<()> {
        let write_timeout = self.shared.config.limits.command_timeout;
        let mut batch = self.session.greet();
        loop {
            write(&mut self.stream, batch.replies, write_timeout).await?;
            if batch.new_content {
                // Every message gets its own DATA budget.
                self.waiting = None;
            }
            let content = match batch.next {
                Next::Read { content } => content,
                Next::Deliver => {
                    batch = self.session.process().await;
                    continue;
                }
                Next::StartTls => {
                    self.start_tls().await?;
                    batch = self.session.tls_started();
                    continue;
                }
                Next::Close => return self.close().await,
            };
            // Everything buffered is answered: wait for more.
            if !content && self.session.shutting_down() {
                batch = self.session.shut_down();
                continue;
            }
            let deadline = self.read_deadline(content);
            let read = tokio::select! {
                read = tokio::time::timeout_at(deadline, self.stream.read_buf(self.session.input_buffer())) => Some(read),
                () = wait_for_shutdown(&mut self.shutdown), if !content => None,
            };
            let Some(read) = read else {
                batch = self.session.shut_down();
                continue;
            };
            match read {
                Err(_elapsed) => {
                    tracing::info!(peer = %self.session.peer, in_data = content, "timeout");
                    batch = self.session.timed_out();
                    continue;
                }
                Ok(Ok(0)) => return Ok(()),
                Ok(Ok(n)) => {
                    if let Some(w) = &mut self.waiting {
                        w.got = w.got.saturating_add(n);
                    }
                }
                Ok(Err(e)) => return Err(e),
            }
            batch = self.session.process().await;
        }
    }

    /// When the next read gives up: the longest silence allowed, or the end of the budget
    /// of the whole command line / message content, whichever comes first.
    ///
    /// A command line's budget is [`Limits::command_timeout`](super::Limits) from when the
    /// session began waiting for it; content's is `data_timeout` plus one second per
    /// `min_data_rate` octets received. Under stress both bases shrink to `stress_timeout`.
    fn read_deadline(&mut self, content: bool) -> tokio::time::Instant {
        let now = self.shared.clock.instant();
        let limits = &self.shared.config.limits;
        // A new wait starts when the kind of input changes, or (for commands) when no
        // part of a command line is pending.
        let continuing = matches!(self.waiting, Some(w) if w.content == content)
            && (content || self.session.pending_input());
        if !continuing {
            self.waiting = Some(Waiting {
                content,
                since: now,
                got: 0,
            });
        }
        let Waiting { since, got, .. } = self.waiting.unwrap_or(Waiting {
            content,
            since: now,
            got: 0,
        });
        let stressed = self.shared.stressed();
        let (silence, base) = if content {
            let base = if stressed {
                limits.stress_timeout
            } else {
                limits.data_timeout
            };
            (limits.data_timeout, base)
        } else {
            let base = if stressed {
                limits.stress_timeout
            } else {
                limits.command_timeout
            };
            (limits.command_timeout, base)
        };
        let earned = if content && limits.min_data_rate > 0 {
            Duration::from_secs((got / limits.min_data_rate) as u64)
        } else {
            Duration::ZERO
        };
        (now + silence).min(since + base + earned)
    }

    /// The handshake after `220 Ready to start TLS` (the session already dropped what the
    /// client pipelined behind STARTTLS).
    async fn start_tls(&mut self) -> std::io::Result<()> {
        let Some(config) = self.shared.config.tls.clone() else {
            return Err(std::io::Error::other(
                "STARTTLS without a TLS configuration",
            ));
        };
        let timeout = self.shared.config.limits.command_timeout;
        match tokio::time::timeout(timeout, self.stream.start_tls(config)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(std::io::Error::other("TLS handshake timed out")),
        }
    }

    /// Closes after the last replies were written: our side first, then a short wait for
    /// the client's, so unread input does not turn into a reset that eats our last reply.
    async fn close(&mut self) -> std::io::Result<()> {
        let _ = self.stream.shutdown().await;
        let mut sink = [0u8; 4096];
        let drain = async {
            while let Ok(n) = self.stream.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
        Ok(())
    }
}

/// Writes one batch of replies, within `timeout` (a client that does not read cannot hold
/// the session forever).
async fn write(stream: &mut Stream, replies: &[u8], timeout: Duration) -> std::io::Result<()> {
    if replies.is_empty() {
        return Ok(());
    }
    // On plain TCP a batch of replies almost always fits the socket's send buffer: written
    // at once it needs no timer (arming and cancelling one per reply batch was a visible
    // share of the CPU per mail). What does not fit is written below, within `timeout`.
    let mut replies = replies;
    if let crate::tls::MaybeTls::Plain(tcp) = stream {
        match tcp.try_write(replies) {
            Ok(n) if n == replies.len() => return Ok(()),
            Ok(n) => replies = &replies[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    let write = async {
        stream.write_all(replies).await?;
        stream.flush().await
    };
    match tokio::time::timeout(timeout, write).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::other("write timed out")),
    }
}

async fn wait_for_shutdown(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|down| *down).await.is_err() {
        // The server is gone without signalling: nothing will ever come.
        std::future::pending::<()>().await;
    }
}
