//! The `iwf demo` smarthost: an in-process SMTP sink on loopback that answers 250 and
//! prints every mail it receives, so a MESSAGE sent into the demo shows up as a mail.

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// Largest mail the sink keeps (the rest of a bigger one is read and dropped).
const MAX_MAIL: usize = 1 << 20;

/// Binds 127.0.0.1:0 and serves until the runtime stops; returns `host:port`.
pub async fn start() -> std::io::Result<String> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?.to_string();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Err(e) = session(sock).await {
                    tracing::debug!("demo SMTP sink: {e}");
                }
            });
        }
    });
    Ok(addr)
}

async fn session(sock: tokio::net::TcpStream) -> std::io::Result<()> {
    let (r, mut w) = sock.into_split();
    let mut r = BufReader::new(r.take(64 << 20));
    w.write_all(b"220 demo-sink ESMTP\r\n").await?;
    let mut envelope = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-demo-sink\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 DSN\r\n",
            "MAIL" | "RCPT" => {
                envelope.push(line.trim_end().to_string());
                b"250 2.1.0 ok\r\n"
            }
            "DATA" => {
                w.write_all(b"354 go ahead\r\n").await?;
                let mut mail = Vec::new();
                loop {
                    let mut l = Vec::new();
                    if r.read_until(b'\n', &mut l).await? == 0 {
                        return Ok(());
                    }
                    if l == b".\r\n" || l == b".\n" {
                        break;
                    }
                    let l = l.strip_prefix(b".").unwrap_or(&l);
                    if mail.len() + l.len() <= MAX_MAIL {
                        mail.extend_from_slice(l);
                    }
                }
                println!(
                    "\n--- mail received by the demo smarthost ---\n{}\n{}---",
                    envelope.join("\n"),
                    String::from_utf8_lossy(&mail)
                );
                envelope.clear();
                b"250 2.0.0 queued\r\n"
            }
            "QUIT" => {
                w.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => b"250 ok\r\n",
        };
        w.write_all(reply).await?;
    }
}
