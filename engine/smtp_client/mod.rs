//! The SMTP client of the CPM → e-mail direction: one mail to the smarthost, driven command
//! by command (EHLO, STARTTLS when offered, MAIL with the extensions the server offers,
//! RCPT, DATA), so the caller gets the reply of the step that decided — never a 2xx/202 on
//! the SIP side before the smarthost's 250 to DATA.
//!
//! STARTTLS is opportunistic (RFC 7435): taken whenever offered, the certificate is not
//! verified (a smarthost on the same host or LAN; a verified mode needs a CA setting).

pub(crate) mod smarthost;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;

use crate::tls::MaybeTls;

/// Longest reply line and most lines of one reply accepted from the server.
const MAX_LINE: usize = 4096;
const MAX_LINES: usize = 200;

/// Which step of the SMTP dialogue answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Connect,
    Ehlo,
    Starttls,
    Mail,
    Rcpt,
    Data,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Ehlo => "ehlo",
            Stage::Starttls => "starttls",
            Stage::Mail => "mail",
            Stage::Rcpt => "rcpt",
            Stage::Data => "data",
        }
    }
}

/// How a delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmtpOutcome {
    /// The reply that decided: the 250 to DATA, or the first refusal.
    Reply {
        stage: Stage,
        code: u16,
        status: Option<String>,
        text: String,
    },
    /// No reply: `timeout`, `connect` (refused, unreachable, no smarthost) or `protocol`.
    Failure {
        stage: Stage,
        kind: &'static str,
        detail: String,
    },
}

impl SmtpOutcome {
    pub fn code(&self) -> Option<u16> {
        match self {
            SmtpOutcome::Reply { code, .. } => Some(*code),
            _ => None,
        }
    }
    pub fn status(&self) -> Option<&str> {
        match self {
            SmtpOutcome::Reply { status, .. } => status.as_deref(),
            _ => None,
        }
    }
    pub fn text(&self) -> &str {
        match self {
            SmtpOutcome::Reply { text, .. } => text,
            SmtpOutcome::Failure { detail, .. } => detail,
        }
    }
    pub fn stage(&self) -> Stage {
        match self {
            SmtpOutcome::Reply { stage, .. } | SmtpOutcome::Failure { stage, .. } => *stage,
        }
    }
    pub fn failure(&self) -> Option<&'static str> {
        match self {
            SmtpOutcome::Failure { kind, .. } => Some(kind),
            _ => None,
        }
    }
    pub fn failure_at(stage: Stage, kind: &'static str, detail: impl Into<String>) -> Self {
        SmtpOutcome::Failure {
            stage,
            kind,
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for SmtpOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SmtpOutcome::Reply {
                stage,
                code,
                status,
                text,
            } => {
                write!(f, "{code}")?;
                if let Some(s) = status {
                    write!(f, " {s}")?;
                }
                write!(f, " {text} (at {})", stage.as_str())
            }
            SmtpOutcome::Failure {
                stage,
                kind,
                detail,
            } => write!(f, "{kind} at {}: {detail}", stage.as_str()),
        }
    }
}

/// The extensions of the server's EHLO reply that matter here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caps {
    pub starttls: bool,
    pub eightbitmime: bool,
    pub smtputf8: bool,
    pub dsn: bool,
    pub deliverby: bool,
    pub size: Option<u64>,
}

impl Caps {
    fn from_ehlo(lines: &[String]) -> Caps {
        let mut c = Caps::default();
        for l in lines.iter().skip(1) {
            let mut w = l.split_whitespace();
            let kw = w.next().unwrap_or("").to_ascii_uppercase();
            match kw.as_str() {
                "STARTTLS" => c.starttls = true,
                "8BITMIME" => c.eightbitmime = true,
                "SMTPUTF8" => c.smtputf8 = true,
                "DSN" => c.dsn = true,
                "DELIVERBY" => c.deliverby = true,
                "SIZE" => c.size = w.next().and_then(|n| n.parse().ok()).filter(|n| *n > 0),
                _ => {}
            }
        }
        c
    }
}

/// The envelope of one mail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    pub mail_from: String,
    pub rcpt: String,
    /// `BODY=8BITMIME` (only sent when offered).
    pub eight_bit: bool,
    /// `SMTPUTF8` (the mail needs it; refused locally when not offered).
    pub smtputf8: bool,
    /// RFC 3461 `ENVID=` / `RET=HDRS` / `NOTIFY=` (only when DSN is offered).
    pub envid: Option<String>,
    pub notify: Option<String>,
    /// RFC 2852 `BY=<seconds>;R` (only when DELIVERBY is offered).
    pub by: Option<i64>,
}

/// An open session with the smarthost, after EHLO (and STARTTLS when offered).
pub struct Session {
    io: BufStream<MaybeTls>,
    caps: Caps,
}

/// A response as the smarthost sent it: the code and each line's text (for EHLO, the
/// keywords). What iwf itself answers is a [`crate::smtp::reply::Reply`].
struct Response {
    code: u16,
    lines: Vec<String>,
}

impl Response {
    fn outcome(&self, stage: Stage) -> SmtpOutcome {
        let first = self.lines.first().map(String::as_str).unwrap_or("");
        let (status, text) = match first.split_once(' ') {
            Some((s, rest)) if crate::smtp::reply::is_enhanced(s) => {
                (Some(s.to_string()), rest.to_string())
            }
            _ => (None, first.to_string()),
        };
        SmtpOutcome::Reply {
            stage,
            code: self.code,
            status,
            text: text.chars().filter(|c| !c.is_control()).collect(),
        }
    }
}

/// The MAIL and RCPT command lines (without CRLF) for one mail to a server with `c`, or the
/// outcome that refuses the mail before anything is sent (SMTPUTF8 needed but not offered,
/// an address SMTP cannot carry, over the server's SIZE). Pure: the session sends these
/// lines and `iwf map --sip` shows them.
pub fn commands(
    env: &Envelope,
    c: &Caps,
    message_len: usize,
) -> Result<(String, String), SmtpOutcome> {
    if env.smtputf8 && !c.smtputf8 {
        return Err(SmtpOutcome::Reply {
            stage: Stage::Mail,
            code: 553,
            status: Some("5.6.7".into()),
            text: "the mail needs SMTPUTF8, which the smarthost does not offer".into(),
        });
    }
    for v in [&env.mail_from, &env.rcpt] {
        if v.chars()
            .any(|ch| ch.is_control() || ch == '<' || ch == '>' || ch == ' ')
        {
            return Err(SmtpOutcome::failure_at(
                Stage::Mail,
                "protocol",
                format!("address `{}` cannot be written into SMTP", v.escape_debug()),
            ));
        }
    }
    let mut mail = format!("MAIL FROM:<{}>", env.mail_from);
    if let Some(size) = c.size {
        if message_len as u64 > size {
            return Err(SmtpOutcome::Reply {
                stage: Stage::Mail,
                code: 552,
                status: Some("5.3.4".into()),
                text: format!(
                    "message of {} bytes over the smarthost's SIZE {size}",
                    message_len
                ),
            });
        }
        mail.push_str(&format!(" SIZE={message_len}"));
    }
    if env.eight_bit && c.eightbitmime {
        mail.push_str(" BODY=8BITMIME");
    }
    if env.smtputf8 {
        mail.push_str(" SMTPUTF8");
    }
    if c.dsn {
        mail.push_str(" RET=HDRS");
        if let Some(id) = env.envid.as_deref().filter(|i| is_xtext_safe(i)) {
            mail.push_str(&format!(" ENVID={id}"));
        }
    }
    if let (true, Some(by)) = (c.deliverby, env.by.filter(|b| *b > 0)) {
        mail.push_str(&format!(" BY={by};R"));
    }
    let mut rcpt = format!("RCPT TO:<{}>", env.rcpt);
    if c.dsn {
        if let Some(n) = env.notify.as_deref().filter(|n| is_xtext_safe(n)) {
            rcpt.push_str(&format!(" NOTIFY={n}"));
        }
        if env.rcpt.is_ascii() && is_xtext_safe(&env.rcpt) {
            rcpt.push_str(&format!(" ORCPT=rfc822;{}", env.rcpt));
        }
    }
    Ok((mail, rcpt))
}

impl Session {
    /// Connects to `smarthost` (`host:port`), reads the greeting, says EHLO and takes
    /// STARTTLS when offered.
    pub async fn connect(smarthost: &str, helo: &str) -> Result<Session, SmtpOutcome> {
        let tcp = TcpStream::connect(smarthost)
            .await
            .map_err(|e| SmtpOutcome::failure_at(Stage::Connect, "connect", e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let mut s = Session {
            io: BufStream::new(MaybeTls::Plain(tcp)),
            caps: Caps::default(),
        };
        let greeting = s.read_reply(Stage::Connect).await?;
        if greeting.code != 220 {
            return Err(greeting.outcome(Stage::Connect));
        }
        s.ehlo(helo).await?;
        if s.caps.starttls {
            let r = s.command("STARTTLS\r\n", Stage::Starttls).await?;
            if r.code != 220 {
                return Err(r.outcome(Stage::Starttls));
            }
            let host = smarthost
                .rsplit_once(':')
                .map(|(h, _)| h.trim_matches(['[', ']']))
                .unwrap_or(smarthost)
                .to_string();
            let mut stream =
                std::mem::replace(&mut s.io, BufStream::new(MaybeTls::Upgrading)).into_inner();
            let connector = crate::tls::opportunistic_client_config()
                .map(tokio_rustls::TlsConnector::from)
                .map_err(|e| SmtpOutcome::failure_at(Stage::Starttls, "protocol", e.to_string()))?;
            stream
                .connect_tls(&connector, server_name(&host))
                .await
                .map_err(|e| SmtpOutcome::failure_at(Stage::Starttls, "protocol", e.to_string()))?;
            s.io = BufStream::new(stream);
            s.ehlo(helo).await?;
        }
        Ok(s)
    }

    pub fn caps(&self) -> &Caps {
        &self.caps
    }

    async fn ehlo(&mut self, helo: &str) -> Result<(), SmtpOutcome> {
        let r = self
            .command(&format!("EHLO {helo}\r\n"), Stage::Ehlo)
            .await?;
        if r.code != 250 {
            return Err(r.outcome(Stage::Ehlo));
        }
        self.caps = Caps::from_ehlo(&r.lines);
        Ok(())
    }

    async fn command(&mut self, line: &str, stage: Stage) -> Result<Response, SmtpOutcome> {
        self.io
            .write_all(line.as_bytes())
            .await
            .map_err(|e| SmtpOutcome::failure_at(stage, "connect", e.to_string()))?;
        self.io
            .flush()
            .await
            .map_err(|e| SmtpOutcome::failure_at(stage, "connect", e.to_string()))?;
        self.read_reply(stage).await
    }

    async fn read_reply(&mut self, stage: Stage) -> Result<Response, SmtpOutcome> {
        let proto = |d: String| SmtpOutcome::failure_at(stage, "protocol", d);
        let mut lines = Vec::new();
        let mut code = 0;
        loop {
            let mut buf = Vec::new();
            let n = (&mut self.io)
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut buf)
                .await
                .map_err(|e| SmtpOutcome::failure_at(stage, "connect", e.to_string()))?;
            if n == 0 {
                return Err(SmtpOutcome::failure_at(
                    stage,
                    "connect",
                    "connection closed by the smarthost",
                ));
            }
            if !buf.ends_with(b"\n") {
                return Err(proto("reply line too long".into()));
            }
            let line = String::from_utf8_lossy(&buf);
            let line = line.trim_end_matches(['\r', '\n']);
            if line.len() < 3 || !line.as_bytes()[..3].iter().all(u8::is_ascii_digit) {
                return Err(proto(format!("not an SMTP reply: `{line}`")));
            }
            let c: u16 = line[..3].parse().unwrap_or(0);
            if !(200..600).contains(&c) || (code != 0 && c != code) {
                return Err(proto(format!("bad reply code in `{line}`")));
            }
            code = c;
            let more = line.as_bytes().get(3) == Some(&b'-');
            lines.push(line.get(4..).unwrap_or("").to_string());
            if !more {
                break;
            }
            if lines.len() > MAX_LINES {
                return Err(proto("reply too long".into()));
            }
        }
        Ok(Response { code, lines })
    }

    /// MAIL, RCPT, DATA for one mail. Returns the 250 to DATA or the first refusal. When
    /// the mail needs SMTPUTF8 and the server does not offer it, nothing is sent.
    pub async fn send(&mut self, env: &Envelope, message: &[u8]) -> SmtpOutcome {
        match self.transaction(env, message).await {
            Ok(o) | Err(o) => o,
        }
    }

    async fn transaction(
        &mut self,
        env: &Envelope,
        message: &[u8],
    ) -> Result<SmtpOutcome, SmtpOutcome> {
        let (mut mail, mut rcpt) = commands(env, &self.caps, message.len())?;
        mail.push_str("\r\n");
        let r = self.command(&mail, Stage::Mail).await?;
        if r.code != 250 {
            return Err(r.outcome(Stage::Mail));
        }
        rcpt.push_str("\r\n");
        let r = self.command(&rcpt, Stage::Rcpt).await?;
        if r.code != 250 && r.code != 251 {
            let _ = self.command("RSET\r\n", Stage::Rcpt).await;
            return Err(r.outcome(Stage::Rcpt));
        }
        let r = self.command("DATA\r\n", Stage::Data).await?;
        if r.code != 354 {
            return Err(r.outcome(Stage::Data));
        }
        let mut data = Vec::with_capacity(message.len() + message.len() / 64 + 8);
        let mut at_line_start = true;
        for &b in message {
            if at_line_start && b == b'.' {
                data.push(b'.');
            }
            data.push(b);
            at_line_start = b == b'\n';
        }
        if !data.ends_with(b"\r\n") {
            data.extend_from_slice(b"\r\n");
        }
        data.extend_from_slice(b".\r\n");
        self.io
            .write_all(&data)
            .await
            .map_err(|e| SmtpOutcome::failure_at(Stage::Data, "connect", e.to_string()))?;
        self.io
            .flush()
            .await
            .map_err(|e| SmtpOutcome::failure_at(Stage::Data, "connect", e.to_string()))?;
        let r = self.read_reply(Stage::Data).await?;
        Ok(r.outcome(Stage::Data))
    }

    /// Says QUIT (best effort).
    pub async fn quit(mut self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            self.command("QUIT\r\n", Stage::Data),
        )
        .await;
    }
}

/// RFC 3461 §4: xtext without `+`, `=` or controls is written as is.
fn is_xtext_safe(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| (33..=126).contains(&b) && b != b'+' && b != b'=')
}

fn server_name(host: &str) -> rustls::pki_types::ServerName<'static> {
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => rustls::pki_types::ServerName::IpAddress(ip.into()),
        Err(_) => rustls::pki_types::ServerName::try_from(host.to_string()).unwrap_or_else(|_| {
            rustls::pki_types::ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into())
        }),
    }
}

/// Connects, sends one mail and quits, all within `limit`; a timeout is a `timeout` failure
/// at the stage reached. `plan` builds the envelope and mail once the server's extensions
/// are known (or answers without sending).
pub async fn deliver<P>(
    smarthost: Option<&str>,
    helo: &str,
    limit: Duration,
    plan: P,
) -> Result<SmtpOutcome, crate::cpm_to_mail::SipAnswer>
where
    P: FnOnce(&Caps) -> Result<(Envelope, Vec<u8>), crate::cpm_to_mail::SipAnswer>,
{
    let Some(smarthost) = smarthost else {
        return Ok(SmtpOutcome::failure_at(
            Stage::Connect,
            "connect",
            "no smarthost configured",
        ));
    };
    let stage = Arc::new(std::sync::Mutex::new(Stage::Connect));
    let stage_in = stage.clone();
    let work = async move {
        let mut s = match Session::connect(smarthost, helo).await {
            Ok(s) => s,
            Err(o) => return Ok(o),
        };
        let (env, message) = match plan(s.caps()) {
            Ok(p) => p,
            Err(answer) => {
                s.quit().await;
                return Err(answer);
            }
        };
        if let Ok(mut st) = stage_in.lock() {
            *st = Stage::Data;
        }
        let outcome = s.send(&env, &message).await;
        s.quit().await;
        Ok(outcome)
    };
    match tokio::time::timeout(limit, work).await {
        Ok(r) => r,
        Err(_) => {
            let at = stage.lock().map(|s| *s).unwrap_or(Stage::Connect);
            Ok(SmtpOutcome::failure_at(
                at,
                "timeout",
                format!("no reply from the smarthost within {} s", limit.as_secs()),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(rcpt: &str) -> Envelope {
        Envelope {
            mail_from: "b+tok@iwf.example.net".into(),
            rcpt: rcpt.into(),
            eight_bit: true,
            smtputf8: false,
            envid: Some("ab+2Bc".into()),
            notify: Some("FAILURE".into()),
            by: Some(60),
        }
    }

    /// The MAIL/RCPT lines follow what the server offers (RFC 1870 SIZE, RFC 6152
    /// 8BITMIME, RFC 3461 DSN with xtext-safe values only, RFC 2852 BY), and a mail the
    /// server cannot take is refused before anything is sent.
    #[test]
    fn commands_follow_the_servers_extensions() {
        let all = Caps {
            starttls: false,
            eightbitmime: true,
            smtputf8: true,
            dsn: true,
            deliverby: true,
            size: Some(1000),
        };
        let (mail, rcpt) = commands(&env("bob@mail.example.org"), &all, 500).unwrap();
        assert_eq!(
            mail,
            "MAIL FROM:<b+tok@iwf.example.net> SIZE=500 BODY=8BITMIME RET=HDRS BY=60;R"
        );
        assert_eq!(
            rcpt,
            "RCPT TO:<bob@mail.example.org> NOTIFY=FAILURE ORCPT=rfc822;bob@mail.example.org"
        );
        let (mail, rcpt) = commands(&env("bob@mail.example.org"), &Caps::default(), 500).unwrap();
        assert_eq!(mail, "MAIL FROM:<b+tok@iwf.example.net>");
        assert_eq!(rcpt, "RCPT TO:<bob@mail.example.org>");
        let over = commands(&env("bob@mail.example.org"), &all, 1001).unwrap_err();
        assert!(
            matches!(over, SmtpOutcome::Reply { code: 552, .. }),
            "{over:?}"
        );
        let mut utf8 = env("bob@mail.example.org");
        utf8.smtputf8 = true;
        let refused = commands(&utf8, &Caps::default(), 10).unwrap_err();
        assert!(
            matches!(refused, SmtpOutcome::Reply { code: 553, .. }),
            "{refused:?}"
        );
        let injected = commands(&env("bob@x>\r\nRCPT TO:<eve@x"), &all, 10).unwrap_err();
        assert!(
            matches!(injected, SmtpOutcome::Failure { .. }),
            "{injected:?}"
        );
    }
}
