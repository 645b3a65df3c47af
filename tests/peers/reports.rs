//! Reports across the protocol border with real peers (issue 11, mapping reference §5.2,
//! §5.3): `iwf serve` with its SQLite store, SIPp as the CPM side, Python smtplib as the mail
//! client, and a private Postfix (`postfix-mailbox.sh`) as iwf's smarthost delivering into
//! alice's Maildir — and, for the CPM → mail direction, writing the real success DSN to
//! iwf's `b+<token>` return path.
//!
//! * mail → CPM → mail: a mail with `NOTIFY=SUCCESS,FAILURE`, ENVID, ORCPT and
//!   Disposition-Notification-To becomes a MESSAGE; SIPp (`sipp/imdn_uas.xml`) answers 200 and
//!   sends `delivered` and `displayed` IMDNs (the second twice) into iwf's SIP port; alice's
//!   mailbox gets one DSN (RFC 3464) and one MDN (RFC 3798). A `failed` IMDN gives a failed
//!   DSN returning the headers (RET=HDRS).
//! * CPM → mail → CPM: a MESSAGE asking `positive-delivery, display` leaves through Postfix
//!   from `b+<token>@iwf.example.net`; a DSN and an MDN for that token come into iwf's SMTP
//!   port; SIPp (iwf's next hop) receives the IMDNs (RFC 5438 §7.2.1), checked header by
//!   header and in the XML. Postfix's own success DSN (held, then flushed) is one more copy.
//! * The same with `kill -9` of iwf between the message and its report, restarted on the
//!   same state directory.
//! * Reports that correlate with nothing are accepted and dropped.
//! * A report that cannot go on now is refused for a retry (IMDN 503 while the smarthost is
//!   down, DSN 4xx while the CPM side answers 480), and the retry goes; the IMDN follows
//!   the IM's IMDN-Record-Route.
//! * An IMDN that
//!   overtakes the 200 of its MESSAGE, played by `imdn_first_uas.py`.
//!
//! Every wait is bounded; every process is stopped by its guard.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use super::cpm_to_mail::uac_scenario;
use super::harness::{
    self, PYTHON, Proc, SipRequest, Sipp, Transport, asset, free_port, is_root, require, rules_dir,
    smtplib, wait_until,
};

// ---------------------------------------------------------------------------------------
// peers

fn peers() -> bool {
    if !require(&["sipp", PYTHON, "/usr/sbin/postfix", "/usr/sbin/postqueue"]) {
        return false;
    }
    if !is_root() {
        eprintln!("skipped: Postfix needs root");
        return false;
    }
    true
}

/// `iwf serve` on fixed loopback ports (the peers keep pointing at them across a restart)
/// with the SQLite store in `dir/state`.
struct Gw {
    proc: Proc,
    smtp: SocketAddr,
    sip: u16,
}

impl Gw {
    fn start(dir: &Path, smarthost: u16, smtp: u16, sip: u16, next_hop: &str) -> Gw {
        Gw::start_with_store(dir, smarthost, smtp, sip, next_hop, "sqlite")
    }

    /// [`Gw::start`] with another store (`redis://…`).
    fn start_with_store(
        dir: &Path,
        smarthost: u16,
        smtp: u16,
        sip: u16,
        next_hop: &str,
        store: &str,
    ) -> Gw {
        let file = dir.join("iwf.yaml");
        let config = format!(
            "smarthost: 127.0.0.1:{smarthost}\nsmarthost_timeout_secs: 15\nstore: {store}\nstate_dir: {}\n",
            dir.join("state").display()
        );
        std::fs::write(&file, config).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_iwf"));
        cmd.arg("serve")
            .arg("--config")
            .arg(&file)
            .arg("--rules")
            .arg(rules_dir())
            .args(["--smtp-listen", &format!("127.0.0.1:{smtp}")])
            .args(["--sip-listen", &format!("127.0.0.1:{sip}")])
            .args(["--next-hop", next_hop])
            .env("RUST_LOG", "info,rsipstack=warn")
            .env("NO_COLOR", "1")
            .current_dir(dir);
        let mut proc = Proc::spawn("iwf", &mut cmd);
        let ready = wait_until(Duration::from_secs(20), || {
            let out = proc.output();
            let smtp = out
                .lines()
                .find_map(|l| l.strip_prefix("iwf: ESMTP listening on "))
                .and_then(|a| a.trim().parse::<SocketAddr>().ok())?;
            out.contains("iwf: SIP (CPM -> e-mail MESSAGE) listening on udp")
                .then_some(smtp)
        });
        let Some(smtp) = ready else {
            proc.kill();
            panic!("iwf did not start:\n{}", proc.output());
        };
        Gw { proc, smtp, sip }
    }

    fn log(&self) -> String {
        self.proc.output()
    }
}

/// The private Postfix of `postfix-mailbox.sh`: alice's Maildir; with `iwf_smtp`, mail for
/// iwf.example.net (its own DSNs to iwf's return paths) goes there, held until
/// [`Postfix::flush`] when `hold`.
struct Postfix {
    dir: PathBuf,
    port: u16,
    iwf_smtp: Option<u16>,
    hold: bool,
    _tmp: tempfile::TempDir,
}

impl Postfix {
    fn start(iwf_smtp: Option<u16>, hold: bool) -> Postfix {
        let tmp = tempfile::tempdir().unwrap();
        let pf = Postfix {
            dir: tmp.path().join("postfix"),
            port: free_port(false),
            iwf_smtp,
            hold,
            _tmp: tmp,
        };
        let (st, out) = pf.script("start");
        assert!(st.success(), "postfix did not start:\n{out}\n{}", pf.log());
        pf
    }

    fn script(&self, verb: &str) -> (std::process::ExitStatus, String) {
        let mut cmd = Command::new("bash");
        cmd.arg(asset("postfix-mailbox.sh"))
            .arg(verb)
            .env("PF_DIR", &self.dir)
            .env("PF_PORT", self.port.to_string());
        if let Some(p) = self.iwf_smtp {
            cmd.env("IWF_SMTP", p.to_string());
            cmd.env("PF_HOLD", if self.hold { "1" } else { "0" });
        }
        harness::run("postfix-mailbox.sh", &mut cmd, Duration::from_secs(90))
    }

    /// Delivers what the queue holds (the DSNs held for iwf).
    fn flush(&self) {
        let (st, out) = self.script("flush");
        assert!(st.success(), "postqueue -f failed:\n{out}\n{}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("maillog")).unwrap_or_default()
    }

    /// The mails in alice's Maildir, oldest first.
    fn mailbox(&self) -> Vec<String> {
        let new = self.dir.join("mail/alice/new");
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(new)
            .map(|d| {
                d.flatten()
                    .map(|e| {
                        let t = e
                            .metadata()
                            .and_then(|m| m.modified())
                            .unwrap_or(std::time::UNIX_EPOCH);
                        (t, e.path())
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .map(|(_, p)| {
                String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned()
            })
            .collect()
    }

    /// Waits (at most `limit`) until alice's Maildir holds `n` mails.
    fn wait_mails(&self, n: usize, limit: Duration) -> Vec<String> {
        wait_until(limit, || {
            let m = self.mailbox();
            (m.len() >= n).then_some(m)
        })
        .unwrap_or_else(|| self.mailbox())
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = self.script("stop");
    }
}

// ---------------------------------------------------------------------------------------
// mails: the ones sent, and reading the reports received

/// A mail from alice to the CPM user, asking for delivery reports (NOTIFY, ORCPT, ENVID,
/// RET=HDRS) and, with `dnt`, a read report (Disposition-Notification-To = MAIL FROM).
fn mail_spec(
    envid: &str,
    msgid: &str,
    subject: &str,
    notify: &str,
    dnt: bool,
) -> serde_json::Value {
    let dnt = if dnt {
        "Disposition-Notification-To: Alice <alice@mail.example.org>\n"
    } else {
        ""
    };
    json!({"timeout": 60, "transactions": [{
        "mail_from": "alice@mail.example.org",
        "mail_opts": [format!("ENVID={envid}"), "RET=HDRS"],
        "rcpts": [["+15551234567@cpm.example.net",
                   [format!("NOTIFY={notify}"), "ORCPT=rfc822;+2B15551234567@cpm.example.net"]]],
        "data": format!(
            "From: Alice <alice@mail.example.org>\nTo: <+15551234567@cpm.example.net>\n\
             Subject: {subject}\nDate: Fri, 21 Nov 2025 14:03:05 +0000\nMessage-ID: <{msgid}>\n\
             {dnt}MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\nLunch at noon?\n"
        ),
    }]})
}

/// The header section of a mail (or a MIME part), unfolded: (name, value) in order.
fn headers(raw: &str) -> Vec<(String, String)> {
    let head = raw
        .split_once("\r\n\r\n")
        .or_else(|| raw.split_once("\n\n"))
        .map_or(raw, |(h, _)| h);
    let mut out: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((n, v)) = line.split_once(':') {
            out.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// One MIME part: its headers and its body.
struct Part {
    headers: Vec<(String, String)>,
    body: String,
}

impl Part {
    fn content_type(&self) -> String {
        header(&self.headers, "Content-Type")
            .unwrap_or("text/plain")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    }

    /// The body read as RFC 3464 / RFC 3798 field groups (separated by blank lines).
    fn field_groups(&self) -> Vec<Vec<(String, String)>> {
        self.body
            .replace("\r\n", "\n")
            .split("\n\n")
            .filter(|g| !g.trim().is_empty())
            .map(|g| headers(&format!("{g}\n\n")))
            .collect()
    }
}

/// A received report: the top-level headers, the Content-Type parameters and the parts of
/// its `multipart/report` body (split on the boundary as RFC 2046 §5.1.1 says).
struct Report {
    raw: String,
    headers: Vec<(String, String)>,
    report_type: String,
    parts: Vec<Part>,
}

impl Report {
    fn parse(raw: &str) -> Option<Report> {
        use mail_parser::MimeHeaders;
        let msg = mail_parser::MessageParser::default().parse(raw.as_bytes())?;
        let ct = msg.content_type()?;
        if !ct.ctype().eq_ignore_ascii_case("multipart")
            || !ct.subtype()?.eq_ignore_ascii_case("report")
        {
            return None;
        }
        let report_type = ct.attribute("report-type")?.to_ascii_lowercase();
        let boundary = ct.attribute("boundary")?.to_string();
        let body = raw
            .split_once("\r\n\r\n")
            .or_else(|| raw.split_once("\n\n"))?
            .1;
        let delim = format!("--{boundary}");
        let mut parts = Vec::new();
        for chunk in body.split(delim.as_str()).skip(1) {
            if chunk.starts_with("--") {
                break;
            }
            let chunk = chunk
                .strip_prefix("\r\n")
                .or_else(|| chunk.strip_prefix('\n'))
                .unwrap_or(chunk);
            let (h, b) = if chunk.starts_with("\r\n") || chunk.starts_with('\n') {
                ("", chunk)
            } else {
                chunk
                    .split_once("\r\n\r\n")
                    .or_else(|| chunk.split_once("\n\n"))
                    .unwrap_or((chunk, ""))
            };
            parts.push(Part {
                headers: headers(&format!("{h}\n\n")),
                body: b.to_string(),
            });
        }
        Some(Report {
            raw: raw.to_string(),
            headers: headers(raw),
            report_type,
            parts,
        })
    }

    fn part(&self, content_type: &str) -> &Part {
        self.parts
            .iter()
            .find(|p| p.content_type() == content_type)
            .unwrap_or_else(|| panic!("no {content_type} part in:\n{}", self.raw))
    }

    fn h(&self, name: &str) -> &str {
        header(&self.headers, name).unwrap_or_else(|| panic!("no {name} header in:\n{}", self.raw))
    }
}

/// The reports in `mails` of `report_type` (delivery-status, disposition-notification).
fn reports_of(mails: &[String], report_type: &str) -> Vec<Report> {
    mails
        .iter()
        .filter_map(|m| Report::parse(m))
        .filter(|r| r.report_type == report_type)
        .collect()
}

fn field<'a>(group: &'a [(String, String)], name: &str, raw: &str) -> &'a str {
    header(group, name).unwrap_or_else(|| panic!("no {name} field in:\n{raw}"))
}

/// `rfc822;x@y` / `rfc822; x@y` → (`rfc822`, `x@y`).
fn typed_address(v: &str) -> (String, String) {
    let (t, a) = v.split_once(';').unwrap_or(("", v));
    (t.trim().to_ascii_lowercase(), a.trim().to_string())
}

/// The checks common to every DSN of these tests (RFC 3464 §2; RFC 3461 §6.2: MAIL FROM:<>).
fn check_dsn(r: &Report, envid: &str, action: &str) {
    assert_eq!(r.h("Return-Path"), "<>", "DSN not from <>:\n{}", r.raw);
    assert!(
        r.h("To").contains("alice@mail.example.org"),
        "DSN not to the reverse-path:\n{}",
        r.raw
    );
    assert!(r.parts.len() >= 2, "{}", r.raw);
    assert_eq!(r.parts[0].content_type(), "text/plain", "{}", r.raw);
    let ds = r.part("message/delivery-status");
    let groups = ds.field_groups();
    assert!(groups.len() >= 2, "no per-recipient group:\n{}", r.raw);
    let msg = &groups[0];
    assert!(
        field(msg, "Reporting-MTA", &r.raw)
            .to_ascii_lowercase()
            .starts_with("dns;"),
        "{}",
        r.raw
    );
    assert_eq!(
        field(msg, "Original-Envelope-Id", &r.raw),
        envid,
        "{}",
        r.raw
    );
    let rcpt = &groups[1];
    assert_eq!(
        typed_address(field(rcpt, "Original-Recipient", &r.raw)),
        ("rfc822".into(), "+15551234567@cpm.example.net".into()),
        "Original-Recipient is the ORCPT, xtext-decoded (RFC 3464 §2.3.1):\n{}",
        r.raw
    );
    assert_eq!(
        typed_address(field(rcpt, "Final-Recipient", &r.raw)),
        ("rfc822".into(), "+15551234567@cpm.example.net".into()),
        "{}",
        r.raw
    );
    assert_eq!(
        field(rcpt, "Action", &r.raw).to_ascii_lowercase(),
        action,
        "{}",
        r.raw
    );
    let status = field(rcpt, "Status", &r.raw);
    let want_class = if action == "failed" { "5." } else { "2." };
    assert!(
        status.starts_with(want_class),
        "Status {status}:\n{}",
        r.raw
    );
    if action == "delivered" {
        assert_eq!(status, "2.0.0", "{}", r.raw);
    }
}

// ---------------------------------------------------------------------------------------
// IMDNs received by the CPM side

/// An IMDN document (RFC 5438 §7.2.1), read with quick-xml.
#[derive(Debug, Default)]
struct ImdnDoc {
    namespace: String,
    message_id: String,
    datetime: String,
    recipient_uri: String,
    /// `delivery-notification`, `display-notification`, …
    notification: String,
    /// `delivered`, `displayed`, `failed`, …
    status: String,
}

fn parse_imdn_xml(xml: &str) -> ImdnDoc {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    reader.config_mut().trim_text(true);
    let mut doc = ImdnDoc::default();
    let mut path: Vec<String> = Vec::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                let name = e.local_name().as_ref().to_string();
                if path.is_empty() {
                    assert_eq!(name, "imdn", "root element of:\n{xml}");
                    for a in e.attributes().flatten() {
                        if a.key.as_ref() == "xmlns" {
                            doc.namespace = a.value.to_string();
                        }
                    }
                }
                if path.len() == 1 && name.ends_with("-notification") {
                    doc.notification = name.clone();
                }
                path.push(name);
            }
            Ok(Event::Empty(e)) => {
                let name = e.local_name().as_ref().to_string();
                if path.len() == 3 && path[2] == "status" {
                    doc.status = name;
                }
            }
            Ok(Event::End(_)) => {
                path.pop();
            }
            Ok(Event::Text(t)) => {
                let text = t.xml10_content().into_owned();
                match path.as_slice() {
                    [_, n] if n == "message-id" => doc.message_id = text,
                    [_, n] if n == "datetime" => doc.datetime = text,
                    [_, n] if n == "recipient-uri" => doc.recipient_uri = text,
                    _ => {}
                }
            }
            Ok(Event::Eof) => break,
            Err(e) => panic!("IMDN XML does not parse ({e}):\n{xml}"),
            _ => {}
        }
    }
    doc
}

/// The CPIM document of an IMDN MESSAGE: its headers, the inner entity's headers, the XML.
struct CpimImdn {
    cpim: Vec<(String, String)>,
    inner: Vec<(String, String)>,
    xml: String,
}

fn cpim_imdn(req: &SipRequest) -> CpimImdn {
    let body = req.body_text().replace("\r\n", "\n");
    let (cpim, rest) = body
        .split_once("\n\n")
        .unwrap_or_else(|| panic!("CPIM without a blank line:\n{body}"));
    let (inner, xml) = rest
        .split_once("\n\n")
        .unwrap_or_else(|| panic!("CPIM inner entity without a blank line:\n{body}"));
    CpimImdn {
        cpim: headers(&format!("{cpim}\n\n")),
        inner: headers(&format!("{inner}\n\n")),
        xml: xml.to_string(),
    }
}

fn uri_of(v: &str) -> String {
    match (v.find('<'), v.find('>')) {
        (Some(a), Some(b)) if a < b => v[a + 1..b].to_string(),
        _ => v.split(';').next().unwrap_or(v).trim().to_string(),
    }
}

/// Every check of RFC 5438 §7.2.1 on one IMDN MESSAGE iwf sent for the IM `im_id` (sent at
/// `im_datetime` by `sender` to `recipient`); returns what the XML says.
fn check_imdn(
    req: &SipRequest,
    im_id: &str,
    im_datetime: &str,
    sender: &str,
    recipient: &str,
) -> ImdnDoc {
    check_imdn_to(req, im_id, im_datetime, sender, recipient, sender)
}

/// [`check_imdn`] for an IM that carried an IMDN-Record-Route: the IMDN's Request-URI is
/// its top entry `request_uri` (RFC 5438 §9), SIP and CPIM To still the sender.
fn check_imdn_to(
    req: &SipRequest,
    im_id: &str,
    im_datetime: &str,
    sender: &str,
    recipient: &str,
    request_uri: &str,
) -> ImdnDoc {
    let all = show(std::slice::from_ref(req));
    assert_eq!(req.method, "MESSAGE", "{all}");
    assert_eq!(uri_of(&req.request_uri), request_uri, "Request-URI: {all}");
    assert_eq!(uri_of(req.h("To")), sender, "SIP To: {all}");
    assert_eq!(uri_of(req.h("From")), recipient, "SIP From: {all}");
    assert!(
        req.h("Content-Type")
            .to_ascii_lowercase()
            .starts_with("message/cpim"),
        "{all}"
    );
    let c = cpim_imdn(req);
    assert_eq!(
        uri_of(header(&c.cpim, "To").unwrap_or("")),
        sender,
        "CPIM To: {all}"
    );
    assert_eq!(
        uri_of(header(&c.cpim, "From").unwrap_or("")),
        recipient,
        "CPIM From: {all}"
    );
    let ns = c
        .cpim
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("NS"))
        .map(|(_, v)| v.as_str())
        .collect::<Vec<_>>();
    assert!(ns.contains(&"imdn <urn:ietf:params:imdn>"), "NS: {all}");
    let own_id = header(&c.cpim, "imdn.Message-ID").unwrap_or("");
    assert!(
        !own_id.is_empty() && own_id != im_id,
        "imdn.Message-ID: {all}"
    );
    assert!(header(&c.cpim, "DateTime").is_some(), "DateTime: {all}");
    assert!(
        header(&c.cpim, "imdn.Disposition-Notification").is_none(),
        "no IMDN for an IMDN (RFC 5438 §7.2.1): {all}"
    );
    assert!(
        header(&c.inner, "Content-Type")
            .unwrap_or("")
            .to_ascii_lowercase()
            .starts_with("message/imdn+xml"),
        "{all}"
    );
    assert_eq!(
        header(&c.inner, "Content-Disposition").map(|v| v.to_ascii_lowercase()),
        Some("notification".to_string()),
        "{all}"
    );
    let doc = parse_imdn_xml(&c.xml);
    assert_eq!(doc.namespace, "urn:ietf:params:xml:ns:imdn", "{all}");
    assert_eq!(doc.message_id, im_id, "<message-id>: {all}");
    assert_eq!(doc.datetime, im_datetime, "<datetime>: {all}");
    assert_eq!(doc.recipient_uri, recipient, "<recipient-uri>: {all}");
    doc
}

/// Requests as text, for failure messages.
fn show(reqs: &[SipRequest]) -> String {
    reqs.iter()
        .map(|r| {
            let h: Vec<String> = r.headers.iter().map(|(n, v)| format!("{n}: {v}")).collect();
            format!(
                "{} {}\n{}\n\n{}\n",
                r.method,
                r.request_uri,
                h.join("\n"),
                r.body_text()
            )
        })
        .collect::<Vec<_>>()
        .join("-----\n")
}

/// The requests `sipp` received, retransmissions (same Call-ID and CSeq) counted once.
fn distinct(sipp: &Sipp) -> Vec<SipRequest> {
    let mut seen = std::collections::HashSet::new();
    sipp.requests()
        .into_iter()
        .filter(|r| {
            seen.insert((
                r.header("Call-ID").unwrap_or("").to_string(),
                r.header("CSeq").unwrap_or("").to_string(),
            ))
        })
        .collect()
}

/// Waits (at most `limit`) until `sipp` received `n` distinct requests.
fn wait_distinct(sipp: &Sipp, n: usize, limit: Duration) -> Vec<SipRequest> {
    wait_until(limit, || {
        let r = distinct(sipp);
        (r.len() >= n).then_some(r)
    })
    .unwrap_or_else(|| distinct(sipp))
}

/// The CPIM MESSAGE a CPM user sends to alice asking for delivery and read reports.
fn cpim_asking(im_id: &str, datetime: &str) -> String {
    format!(
        "Content-Type: message/cpim\n\nFrom: \"Bob\" <sip:+15551234567@ims.example.net>\nTo: <sip:alice%40mail.example.org@iwf.example.net>\nDateTime: {datetime}\nSubject: Reports please\nNS: imdn <urn:ietf:params:imdn>\nimdn.Message-ID: {im_id}\nimdn.Disposition-Notification: positive-delivery, display\n\nContent-Type: text/plain; charset=utf-8\n\nHallo Alice, tell me when you read this."
    )
}

const CPM_SENDER: &str = "sip:+15551234567@ims.example.net";
const MAIL_USER_URI: &str = "sip:alice%40mail.example.org@iwf.example.net";
/// An IMDN-Record-Route entry a CPM intermediary put on an IM.
const IMDN_RR: &str = "sip:imdn-rr@ims.example.net";

/// SIPp as UAC: one MESSAGE with `content` to 127.0.0.1:`port` over UDP, expecting `status`.
fn send_message(port: u16, status: u16, content: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let scen = uac_scenario(dir.path(), status, content);
    let local = free_port(true);
    let mut cmd = Command::new("sipp");
    cmd.arg(format!("127.0.0.1:{port}"))
        .arg("-sf")
        .arg(&scen)
        .args(["-i", "127.0.0.1", "-p", &local.to_string(), "-t", "u1"])
        .args([
            "-m",
            "1",
            "-nostdin",
            "-timeout",
            "40s",
            "-recv_timeout",
            "35000",
        ])
        .current_dir(dir.path());
    let (st, out) = harness::run("sipp-uac", &mut cmd, Duration::from_secs(50));
    (st.success(), out)
}

/// The token of iwf's return path `b+<token>@iwf.example.net` in a delivered mail, after
/// checking that Disposition-Notification-To names the same address (RFC 3798 §2.1).
fn token_of(mail: &str) -> String {
    let h = headers(mail);
    let rp = uri_of(header(&h, "Return-Path").unwrap_or_else(|| panic!("{mail}")));
    let token = rp
        .strip_prefix("b+")
        .and_then(|r| r.strip_suffix("@iwf.example.net"))
        .unwrap_or_else(|| panic!("Return-Path {rp} is not b+<token>@iwf.example.net:\n{mail}"));
    assert!(
        !token.is_empty()
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
        "{mail}"
    );
    let dnt = header(&h, "Disposition-Notification-To")
        .unwrap_or_else(|| panic!("display asked, no Disposition-Notification-To:\n{mail}"));
    assert_eq!(uri_of(dnt), rp, "DNT is the return path:\n{mail}");
    token.to_string()
}

/// A DSN (RFC 3464) from the mail side's MTA about the mail with ENVID `token`.
fn dsn_for(token: &str, action: &str, status: &str) -> String {
    format!(
        "From: Mail Delivery System <MAILER-DAEMON@mx.mail.example.org>\n\
         To: <b+{token}@iwf.example.net>\n\
         Subject: Delivery Status Notification\n\
         Date: Fri, 21 Nov 2025 14:04:00 +0000\n\
         Message-ID: <dsn-{token}@mx.mail.example.org>\n\
         Auto-Submitted: auto-replied\n\
         MIME-Version: 1.0\n\
         Content-Type: multipart/report; report-type=delivery-status;\n\tboundary=\"dsn-b\"\n\
         \n\
         --dsn-b\n\
         Content-Type: text/plain; charset=us-ascii\n\
         \n\
         Your message to alice@mail.example.org: {action}.\n\
         \n\
         --dsn-b\n\
         Content-Type: message/delivery-status\n\
         \n\
         Reporting-MTA: dns; mx.mail.example.org\n\
         Original-Envelope-Id: {token}\n\
         Arrival-Date: Fri, 21 Nov 2025 14:03:06 +0000\n\
         \n\
         Final-Recipient: rfc822; alice@mail.example.org\n\
         Original-Recipient: rfc822;alice@mail.example.org\n\
         Action: {action}\n\
         Status: {status}\n\
         \n\
         --dsn-b\n\
         Content-Type: text/rfc822-headers\n\
         \n\
         From: \"Bob\" <+15551234567@cpm.example.net>\n\
         To: <alice@mail.example.org>\n\
         Subject: Reports please\n\
         Message-ID: <{token}@iwf.example.net>\n\
         \n\
         --dsn-b--\n"
    )
}

/// An MDN (RFC 3798 §3) from alice's MUA about the mail with Message-ID `<token@iwf…>`.
fn mdn_for(token: &str, disposition: &str) -> String {
    format!(
        "From: Alice <alice@mail.example.org>\n\
         To: <b+{token}@iwf.example.net>\n\
         Subject: Read: Reports please\n\
         Date: Fri, 21 Nov 2025 14:05:00 +0000\n\
         Message-ID: <mdn-{token}@mail.example.org>\n\
         MIME-Version: 1.0\n\
         Content-Type: multipart/report; report-type=disposition-notification;\n\tboundary=\"mdn-b\"\n\
         \n\
         --mdn-b\n\
         Content-Type: text/plain; charset=us-ascii\n\
         \n\
         Your message was displayed.\n\
         \n\
         --mdn-b\n\
         Content-Type: message/disposition-notification\n\
         \n\
         Reporting-UA: mua.mail.example.org; Test MUA\n\
         Final-Recipient: rfc822;alice@mail.example.org\n\
         Original-Message-ID: <{token}@iwf.example.net>\n\
         Disposition: manual-action/MDN-sent-manually; {disposition}\n\
         \n\
         --mdn-b--\n"
    )
}

/// Sends `report` to iwf for `b+<token>` from `<>`; returns the DATA reply and how long the
/// transaction took.
fn send_report(iwf: SocketAddr, token: &str, report: &str) -> (harness::R, Duration) {
    let start = Instant::now();
    let r = smtplib(
        iwf,
        json!({"timeout": 60, "transactions": [{
            "mail_from": "",
            "rcpts": [[format!("b+{token}@iwf.example.net"), []]],
            "data": report,
        }]}),
        Duration::from_secs(70),
    );
    let t = &r.transactions[0];
    assert!(t.mail.is(250, ""), "MAIL FROM:<> {:?}", t.mail);
    assert!(t.rcpts[0].is(250, ""), "RCPT b+{token}: {:?}", t.rcpts[0]);
    let data = t.data.clone().expect("a DATA reply");
    (data, start.elapsed())
}

// ---------------------------------------------------------------------------------------
// 1. mail -> CPM -> mail

/// SIPp (`imdn_uas.xml`) as the CPM recipient at `port`: answers the MESSAGE with 200, then
/// after `pause_ms` sends IMDNs `first` and `second` (twice) into iwf.
fn imdn_sender(port: u16, pause_ms: u64, first: (&str, &str), second: (&str, &str)) -> Sipp {
    Sipp::start(
        "imdn_uas.xml",
        Transport::Udp,
        Some(port),
        1,
        &[
            "-d",
            &pause_ms.to_string(),
            "-key",
            "n1",
            first.0,
            "-key",
            "s1",
            first.1,
            "-key",
            "n2",
            second.0,
            "-key",
            "s2",
            second.1,
        ],
    )
}

/// Waits for the scripted SIPp to finish its scenario (every IMDN answered 200).
fn sipp_done(mut sipp: Sipp, limit: Duration, iwf: &Gw, pf: &Postfix) -> Vec<SipRequest> {
    let status = sipp.proc.wait(limit);
    let requests = sipp.requests();
    assert!(
        status.is_some_and(|s| s.success()),
        "SIPp did not get 200 to every IMDN ({status:?}):\n{}\n--- received:\n{}\n--- iwf:\n{}\n--- postfix:\n{}",
        sipp.proc.output(),
        show(&requests),
        iwf.log(),
        pf.log()
    );
    requests
}

fn send_mail(iwf: &Gw, spec: serde_json::Value, pf: &Postfix) {
    let r = smtplib(iwf.smtp, spec, Duration::from_secs(70));
    let t = &r.transactions[0];
    assert!(
        t.data.as_ref().is_some_and(|d| d.is(250, "2.0.0")),
        "mail not taken: {:?}\n--- iwf:\n{}\n--- postfix:\n{}",
        t,
        iwf.log(),
        pf.log()
    );
}

/// Checks the message iwf sent to CPM asked for the IMDNs the mail asked for (mapping
/// reference §1.7); returns its imdn.Message-ID.
fn check_im(req: &SipRequest, dispositions: &[&str]) -> String {
    let body = req.body_text().replace("\r\n", "\n");
    let cpim = headers(&format!("{}\n\n", body.split("\n\n").next().unwrap_or("")));
    let mut asked: Vec<String> = header(&cpim, "imdn.Disposition-Notification")
        .unwrap_or_else(|| panic!("no imdn.Disposition-Notification:\n{body}"))
        .split(',')
        .map(|v| v.trim().to_ascii_lowercase())
        .collect();
    asked.sort();
    let mut want: Vec<String> = dispositions.iter().map(|d| d.to_string()).collect();
    want.sort();
    assert_eq!(asked, want, "{body}");
    header(&cpim, "imdn.Message-ID")
        .unwrap_or_else(|| panic!("no imdn.Message-ID:\n{body}"))
        .to_string()
}

#[test]
fn mail_to_cpm_imdns_come_back_as_dsn_and_mdn() {
    if !peers() {
        return;
    }
    let pf = Postfix::start(None, false);
    let dir = tempfile::tempdir().unwrap();
    let uas_port = free_port(true);
    let hop = format!("sip:127.0.0.1:{uas_port};transport=udp");
    let iwf = Gw::start(dir.path(), pf.port, free_port(false), free_port(true), &hop);

    // delivered + displayed (sent twice): one DSN, one MDN
    let sipp = imdn_sender(
        uas_port,
        300,
        ("delivery", "delivered"),
        ("display", "displayed"),
    );
    send_mail(
        &iwf,
        mail_spec(
            "QQ314159a",
            "m1@mail.example.org",
            "Lunch",
            "SUCCESS,FAILURE",
            true,
        ),
        &pf,
    );
    let got = sipp_done(sipp, Duration::from_secs(30), &iwf, &pf);
    check_im(
        &got[0],
        &["positive-delivery", "negative-delivery", "display"],
    );
    let mails = pf.wait_mails(2, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(1500));
    let mails_now = pf.mailbox();
    assert_eq!(
        mails_now.len(),
        2,
        "one DSN and one MDN, nothing twice:\n{mails_now:#?}\n--- iwf:\n{}\n--- postfix:\n{}",
        iwf.log(),
        pf.log()
    );
    let dsns = reports_of(&mails, "delivery-status");
    assert_eq!(dsns.len(), 1, "{mails:#?}");
    check_dsn(&dsns[0], "QQ314159a", "delivered");
    let mdns = reports_of(&mails, "disposition-notification");
    assert_eq!(mdns.len(), 1, "{mails:#?}");
    let mdn = &mdns[0];
    assert_eq!(
        mdn.h("Return-Path"),
        "<>",
        "MDN not from <> (RFC 3798 §3):\n{}",
        mdn.raw
    );
    assert!(
        mdn.h("To").contains("alice@mail.example.org"),
        "{}",
        mdn.raw
    );
    let dn = mdn.part("message/disposition-notification").field_groups();
    let dn: Vec<(String, String)> = dn.into_iter().flatten().collect();
    assert_eq!(
        field(&dn, "Disposition", &mdn.raw).replace(' ', ""),
        "manual-action/MDN-sent-automatically;displayed",
        "{}",
        mdn.raw
    );
    assert_eq!(
        field(&dn, "Original-Message-ID", &mdn.raw),
        "<m1@mail.example.org>",
        "{}",
        mdn.raw
    );
    assert!(
        field(&dn, "Final-Recipient", &mdn.raw).contains("15551234567"),
        "{}",
        mdn.raw
    );
    assert!(header(&dn, "Reporting-UA").is_some(), "{}", mdn.raw);

    // failed (sent three times): one failed DSN with the headers of the mail (RET=HDRS)
    let sipp = imdn_sender(
        uas_port,
        300,
        ("delivery", "failed"),
        ("delivery", "failed"),
    );
    send_mail(
        &iwf,
        mail_spec(
            "QQ314159b",
            "m2@mail.example.org",
            "Dinner",
            "FAILURE",
            false,
        ),
        &pf,
    );
    let got = sipp_done(sipp, Duration::from_secs(30), &iwf, &pf);
    check_im(&got[0], &["negative-delivery"]);
    let mails = pf.wait_mails(3, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        pf.mailbox().len(),
        3,
        "{:#?}\n--- iwf:\n{}",
        pf.mailbox(),
        iwf.log()
    );
    let failed: Vec<Report> = reports_of(&mails, "delivery-status")
        .into_iter()
        .filter(|r| r.raw.contains("QQ314159b"))
        .collect();
    assert_eq!(failed.len(), 1, "{mails:#?}");
    let f = &failed[0];
    check_dsn(f, "QQ314159b", "failed");
    let returned = f.part("text/rfc822-headers");
    assert!(
        returned.body.contains("Subject: Dinner")
            && returned.body.contains("<m2@mail.example.org>"),
        "RET=HDRS returns the header section:\n{}",
        f.raw
    );
    assert!(!returned.body.contains("Lunch at noon?"), "{}", f.raw);
}

// ---------------------------------------------------------------------------------------
// 2. CPM -> mail -> CPM

#[test]
fn cpm_to_mail_dsn_and_mdn_come_back_as_imdns() {
    if !peers() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let smtp_port = free_port(false);
    // Postfix holds its own success DSN for iwf until the end (flushed there).
    let pf = Postfix::start(Some(smtp_port), true);
    // The CPM side that receives the IMDNs answers each after 1 s.
    let uas = Sipp::start(
        "message_uas_delay.xml",
        Transport::Udp,
        None,
        3,
        &["-d", "1000"],
    );
    let iwf = Gw::start(
        dir.path(),
        pf.port,
        smtp_port,
        free_port(true),
        &uas.next_hop(),
    );

    let im_id = "Zq81mK0pR2-reports";
    let datetime = "2025-11-21T14:03:05Z";
    let (ok, out) = send_message(iwf.sip, 202, &cpim_asking(im_id, datetime));
    assert!(
        ok,
        "{out}\n--- iwf:\n{}\n--- postfix:\n{}",
        iwf.log(),
        pf.log()
    );
    let mails = pf.wait_mails(1, Duration::from_secs(20));
    assert_eq!(mails.len(), 1, "{}", pf.log());
    let token = token_of(&mails[0]);
    assert!(mails[0].contains("Hallo Alice"), "{}", mails[0]);

    // DSN delivered: 250 only after the IMDN got its 200 (SIPp waits 1 s).
    let (reply, took) = send_report(iwf.smtp, &token, &dsn_for(&token, "delivered", "2.0.0"));
    assert!(reply.is(250, ""), "{reply:?}\n--- iwf:\n{}", iwf.log());
    let got = wait_distinct(&uas, 1, Duration::from_secs(10));
    assert_eq!(got.len(), 1, "{}\n--- iwf:\n{}", show(&got), iwf.log());
    assert!(
        took >= Duration::from_millis(1000),
        "250 before the IMDN's 200 ({took:?})"
    );
    let d = check_imdn(&got[0], im_id, datetime, CPM_SENDER, MAIL_USER_URI);
    assert_eq!(
        (d.notification.as_str(), d.status.as_str()),
        ("delivery-notification", "delivered")
    );

    // MDN displayed
    let (reply, took) = send_report(iwf.smtp, &token, &mdn_for(&token, "displayed"));
    assert!(reply.is(250, ""), "{reply:?}\n--- iwf:\n{}", iwf.log());
    assert!(
        took >= Duration::from_millis(1000),
        "250 before the IMDN's 200 ({took:?})"
    );
    let got = wait_distinct(&uas, 2, Duration::from_secs(10));
    assert_eq!(got.len(), 2, "{}\n--- iwf:\n{}", show(&got), iwf.log());
    let d = check_imdn(&got[1], im_id, datetime, CPM_SENDER, MAIL_USER_URI);
    assert_eq!(
        (d.notification.as_str(), d.status.as_str()),
        ("display-notification", "displayed")
    );
    let own_ids: Vec<String> = got
        .iter()
        .map(|r| {
            header(&cpim_imdn(r).cpim, "imdn.Message-ID")
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_ne!(
        own_ids[0], own_ids[1],
        "each IMDN has its own imdn.Message-ID"
    );

    // The same DSN again, and Postfix's own success DSN: accepted, no second IMDN.
    let (reply, _) = send_report(iwf.smtp, &token, &dsn_for(&token, "delivered", "2.0.0"));
    assert!(reply.is(250, ""), "{reply:?}");
    pf.flush();
    let sent_to_iwf = wait_until(Duration::from_secs(20), || {
        pf.log()
            .lines()
            .any(|l| {
                l.contains(&format!("to=<b+{token}@iwf.example.net>")) && l.contains("status=sent")
            })
            .then_some(())
    });
    assert!(
        sent_to_iwf.is_some(),
        "Postfix's DSN did not reach iwf:\n{}\n--- iwf:\n{}",
        pf.log(),
        iwf.log()
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        distinct(&uas).len(),
        2,
        "one IMDN per notification:\n{}",
        show(&distinct(&uas))
    );
}

// ---------------------------------------------------------------------------------------
// 3. the same across kill -9 and a restart on the same state directory

#[test]
fn reports_survive_kill_9_between_message_and_report() {
    if !peers() {
        return;
    }
    // --- mail -> CPM: the IMDNs come after iwf was killed and restarted
    let pf = Postfix::start(None, false);
    let dir = tempfile::tempdir().unwrap();
    let uas_port = free_port(true);
    let hop = format!("sip:127.0.0.1:{uas_port};transport=udp");
    let (smtp, sip) = (free_port(false), free_port(true));
    let mut iwf = Gw::start(dir.path(), pf.port, smtp, sip, &hop);
    // SIPp sends its IMDNs 4 s after its 200 (retransmitted every 500 ms until answered).
    let sipp = imdn_sender(
        uas_port,
        4000,
        ("delivery", "delivered"),
        ("display", "displayed"),
    );
    send_mail(
        &iwf,
        mail_spec(
            "KILL9a",
            "k1@mail.example.org",
            "Crash",
            "SUCCESS,FAILURE",
            true,
        ),
        &pf,
    );
    iwf.proc.kill();
    let before = iwf.log();
    assert!(
        ![
            "IMDN reported",
            "IMDN for no",
            "IMDN owes",
            "IMDN not handled",
            "IMDN refused"
        ]
        .iter()
        .any(|l| before.contains(l)),
        "the IMDN reached iwf before the kill; the test proves nothing:\n{before}"
    );
    drop(iwf);
    let iwf = Gw::start(dir.path(), pf.port, smtp, sip, &hop);
    sipp_done(sipp, Duration::from_secs(40), &iwf, &pf);
    let mails = pf.wait_mails(2, Duration::from_secs(20));
    let dsns = reports_of(&mails, "delivery-status");
    assert_eq!(dsns.len(), 1, "{mails:#?}\n--- iwf:\n{}", iwf.log());
    check_dsn(&dsns[0], "KILL9a", "delivered");
    assert_eq!(
        reports_of(&mails, "disposition-notification").len(),
        1,
        "{mails:#?}"
    );
    drop(iwf);
    drop(pf);

    // --- CPM -> mail: Postfix's own DSN (held until after the restart) and an MDN
    let dir = tempfile::tempdir().unwrap();
    let (smtp, sip) = (free_port(false), free_port(true));
    let pf = Postfix::start(Some(smtp), true);
    let uas = Sipp::start("message_uas_200.xml", Transport::Udp, None, 3, &[]);
    let mut iwf = Gw::start(dir.path(), pf.port, smtp, sip, &uas.next_hop());
    let im_id = "Kill9-im-1";
    let datetime = "2025-11-21T14:03:05Z";
    let (ok, out) = send_message(sip, 202, &cpim_asking(im_id, datetime));
    assert!(
        ok,
        "{out}\n--- iwf:\n{}\n--- postfix:\n{}",
        iwf.log(),
        pf.log()
    );
    let mails = pf.wait_mails(1, Duration::from_secs(20));
    assert_eq!(mails.len(), 1, "{}", pf.log());
    let token = token_of(&mails[0]);
    iwf.proc.kill();
    drop(iwf);
    let iwf = Gw::start(dir.path(), pf.port, smtp, sip, &uas.next_hop());
    pf.flush();
    let got = wait_distinct(&uas, 1, Duration::from_secs(20));
    assert_eq!(
        got.len(),
        1,
        "Postfix's DSN did not become an IMDN after the restart:\n{}\n--- iwf:\n{}",
        pf.log(),
        iwf.log()
    );
    let d = check_imdn(&got[0], im_id, datetime, CPM_SENDER, MAIL_USER_URI);
    assert_eq!(
        (d.notification.as_str(), d.status.as_str()),
        ("delivery-notification", "delivered")
    );
    let (reply, _) = send_report(iwf.smtp, &token, &mdn_for(&token, "displayed"));
    assert!(reply.is(250, ""), "{reply:?}\n--- iwf:\n{}", iwf.log());
    let got = wait_distinct(&uas, 2, Duration::from_secs(10));
    assert_eq!(got.len(), 2, "{}\n--- iwf:\n{}", show(&got), iwf.log());
    let d = check_imdn(&got[1], im_id, datetime, CPM_SENDER, MAIL_USER_URI);
    assert_eq!(
        (d.notification.as_str(), d.status.as_str()),
        ("display-notification", "displayed")
    );
}

// ---------------------------------------------------------------------------------------
// 4. reports about nothing iwf sent

#[test]
fn uncorrelated_reports_are_accepted_and_dropped() {
    if !peers() {
        return;
    }
    let pf = Postfix::start(None, false);
    let dir = tempfile::tempdir().unwrap();
    let uas = Sipp::start("message_uas_200.xml", Transport::Udp, None, 1, &[]);
    let iwf = Gw::start(
        dir.path(),
        pf.port,
        free_port(false),
        free_port(true),
        &uas.next_hop(),
    );
    // An IMDN for a message iwf never sent: 200, no mail.
    let imdn = "Content-Type: message/cpim\n\nFrom: <sip:+15551234567@cpm.example.net>\nTo: <sip:alice%40mail.example.org@iwf.example.net>\nNS: imdn <urn:ietf:params:imdn>\nimdn.Message-ID: stray-imdn-1\nDateTime: 2025-11-21T14:03:09Z\n\nContent-Type: message/imdn+xml\nContent-Disposition: notification\n\n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<imdn xmlns=\"urn:ietf:params:xml:ns:imdn\"><message-id>never-sent-by-iwf</message-id><datetime>2025-11-21T14:03:05Z</datetime><recipient-uri>sip:+15551234567@cpm.example.net</recipient-uri><delivery-notification><status><delivered/></status></delivery-notification></imdn>";
    let (ok, out) = send_message(iwf.sip, 200, imdn);
    assert!(ok, "{out}\n--- iwf:\n{}", iwf.log());
    // A DSN for a token iwf never issued: 250, no IMDN.
    let (reply, _) = send_report(
        iwf.smtp,
        "unknown0token",
        &dsn_for("unknown0token", "delivered", "2.0.0"),
    );
    assert!(reply.is(250, ""), "{reply:?}\n--- iwf:\n{}", iwf.log());
    std::thread::sleep(Duration::from_millis(1500));
    assert!(pf.mailbox().is_empty(), "{:#?}\n{}", pf.mailbox(), pf.log());
    assert!(distinct(&uas).is_empty(), "{}", show(&distinct(&uas)));
    let log = iwf.log();
    assert!(
        log.contains("never-sent-by-iwf"),
        "the dropped IMDN is logged:\n{log}"
    );
    assert!(
        log.contains("unknown0token"),
        "the dropped DSN is logged:\n{log}"
    );
}

// ---------------------------------------------------------------------------------------
// 5. a report that cannot go on now is refused for a retry, and the retry goes

/// The IMDN MESSAGE content (CPIM) a CPM recipient sends about the IM `im_id`.
fn imdn_content(im_id: &str, own_id: &str, status: &str) -> String {
    format!(
        "Content-Type: message/cpim\n\nFrom: <sip:+15551234567@cpm.example.net>\nTo: <{MAIL_USER_URI}>\nNS: imdn <urn:ietf:params:imdn>\nimdn.Message-ID: {own_id}\nDateTime: 2025-11-21T14:03:09Z\n\nContent-Type: message/imdn+xml\nContent-Disposition: notification\n\n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<imdn xmlns=\"urn:ietf:params:xml:ns:imdn\"><message-id>{im_id}</message-id><datetime>2025-11-21T14:03:05Z</datetime><recipient-uri>sip:+15551234567@cpm.example.net</recipient-uri><delivery-notification><status><{status}/></status></delivery-notification></imdn>"
    )
}

/// No 2xx to an IMDN before the smarthost took its DSN (503 while Postfix is down, 200 and
/// the DSN once it is back); no 250 to a DSN before its IMDN got a 2xx (4xx while the CPM
/// side answers 480, 250 and the IMDN once it answers 200). A failed attempt is not
/// remembered as sent. (The IM here came with an IMDN-Record-Route, which the IMDN
/// follows.)
#[test]
fn reports_that_cannot_go_on_now_are_refused_for_a_retry() {
    if !peers() {
        return;
    }
    // --- IMDN -> DSN, smarthost down
    let pf = Postfix::start(None, false);
    let dir = tempfile::tempdir().unwrap();
    let hop_port = free_port(true);
    let hop = format!("sip:127.0.0.1:{hop_port};transport=udp");
    let iwf = Gw::start(dir.path(), pf.port, free_port(false), free_port(true), &hop);
    let cpm = Sipp::start(
        "message_uas_200.xml",
        Transport::Udp,
        Some(hop_port),
        1,
        &[],
    );
    send_mail(
        &iwf,
        mail_spec("RETRY1", "r1@mail.example.org", "Retry", "SUCCESS", false),
        &pf,
    );
    let got = wait_distinct(&cpm, 1, Duration::from_secs(10));
    let im_id = check_im(&got[0], &["positive-delivery"]);
    drop(cpm);
    let (st, out) = pf.script("stop");
    assert!(st.success(), "{out}");
    let (ok, out) = send_message(
        iwf.sip,
        503,
        &imdn_content(&im_id, "retry-imdn-1", "delivered"),
    );
    assert!(
        ok,
        "IMDN not refused while the smarthost is down:\n{out}\n--- iwf:\n{}",
        iwf.log()
    );
    let (st, out) = pf.script("start");
    assert!(
        st.success(),
        "postfix did not start again:\n{out}\n{}",
        pf.log()
    );
    let (ok, out) = send_message(
        iwf.sip,
        200,
        &imdn_content(&im_id, "retry-imdn-1", "delivered"),
    );
    assert!(
        ok,
        "{out}\n--- iwf:\n{}\n--- postfix:\n{}",
        iwf.log(),
        pf.log()
    );
    let mails = pf.wait_mails(1, Duration::from_secs(20));
    let dsns = reports_of(&mails, "delivery-status");
    assert_eq!(dsns.len(), 1, "{mails:#?}\n--- iwf:\n{}", iwf.log());
    check_dsn(&dsns[0], "RETRY1", "delivered");
    drop(iwf);
    drop(pf);

    // --- DSN -> IMDN, CPM side answers 480 first
    let dir = tempfile::tempdir().unwrap();
    let smtp_port = free_port(false);
    let pf = Postfix::start(Some(smtp_port), true);
    let hop_port = free_port(true);
    let hop = format!("sip:127.0.0.1:{hop_port};transport=udp");
    let iwf = Gw::start(dir.path(), pf.port, smtp_port, free_port(true), &hop);
    let im_id = "Retry-im-1";
    let datetime = "2025-11-21T14:03:05Z";
    // This IM came through an IMDN-Record-Route: the IMDN goes back that way (RFC 5438 §9).
    let (ok, out) = send_message(
        iwf.sip,
        202,
        &format!(
            "IMDN-Record-Route: <{IMDN_RR}>\n{}",
            cpim_asking(im_id, datetime)
        ),
    );
    assert!(
        ok,
        "{out}\n--- iwf:\n{}\n--- postfix:\n{}",
        iwf.log(),
        pf.log()
    );
    let mails = pf.wait_mails(1, Duration::from_secs(20));
    assert_eq!(mails.len(), 1, "{}", pf.log());
    let token = token_of(&mails[0]);
    let busy = Sipp::start(
        "message_uas_480.xml",
        Transport::Udp,
        Some(hop_port),
        1,
        &[],
    );
    let (reply, _) = send_report(iwf.smtp, &token, &dsn_for(&token, "delivered", "2.0.0"));
    assert!(
        reply.0 / 100 == 4,
        "a DSN whose IMDN got 480 must be retried, got {reply:?}\n--- iwf:\n{}",
        iwf.log()
    );
    assert_eq!(distinct(&busy).len(), 1, "{}", show(&distinct(&busy)));
    drop(busy);
    let cpm = Sipp::start(
        "message_uas_200.xml",
        Transport::Udp,
        Some(hop_port),
        2,
        &[],
    );
    let (reply, _) = send_report(iwf.smtp, &token, &dsn_for(&token, "delivered", "2.0.0"));
    assert!(reply.is(250, ""), "{reply:?}\n--- iwf:\n{}", iwf.log());
    let got = wait_distinct(&cpm, 1, Duration::from_secs(10));
    assert_eq!(got.len(), 1, "{}\n--- iwf:\n{}", show(&got), iwf.log());
    let d = check_imdn_to(&got[0], im_id, datetime, CPM_SENDER, MAIL_USER_URI, IMDN_RR);
    assert_eq!(
        (d.notification.as_str(), d.status.as_str()),
        ("delivery-notification", "delivered")
    );
}

// ---------------------------------------------------------------------------------------
// 6. an IMDN that overtakes the 200 of its MESSAGE

/// The CPM recipient sends its `delivered` IMDN before it answers the MESSAGE, and answers
/// 1.5 s later (`imdn_first_uas.py`; the two travel independently, RFC 5438 §7.2.1). The
/// record iwf keeps for the message is meant to be there "before the message leaves (a
/// report can overtake the answer)" (engine/reports/records.rs), so the IMDN still becomes a
/// DSN.
/// `imdn_first_uas.py` on `port`: answers a MESSAGE with its IMDN sent to iwf's SIP port
/// `iwf_sip` first, and the 200 `delay_ms` later.
fn imdn_first_uas(port: u16, iwf_sip: u16, delay_ms: u64) -> Proc {
    let uas = Proc::spawn(
        "imdn-first UAS",
        Command::new(PYTHON)
            .arg(asset("imdn_first_uas.py"))
            .arg(port.to_string())
            .arg(iwf_sip.to_string())
            .arg(delay_ms.to_string()),
    );
    assert!(
        wait_until(Duration::from_secs(10), || uas
            .output()
            .contains("ready")
            .then_some(()))
        .is_some(),
        "{}",
        uas.output()
    );
    uas
}

#[test]
fn an_imdn_that_overtakes_the_200_still_becomes_a_dsn() {
    if !peers() {
        return;
    }
    let pf = Postfix::start(None, false);
    let dir = tempfile::tempdir().unwrap();
    let uas_port = free_port(true);
    let sip = free_port(true);
    let hop = format!("sip:127.0.0.1:{uas_port};transport=udp");
    let iwf = Gw::start(dir.path(), pf.port, free_port(false), sip, &hop);
    let uas = imdn_first_uas(uas_port, sip, 1500);
    send_mail(
        &iwf,
        mail_spec(
            "FIRST1",
            "f1@mail.example.org",
            "Early",
            "SUCCESS,FAILURE",
            false,
        ),
        &pf,
    );
    let out = uas.output();
    assert!(
        out.contains("IMDN answered 200") && out.contains("MESSAGE answered 200"),
        "{out}\n--- iwf:\n{}",
        iwf.log()
    );
    let mails = pf.wait_mails(1, Duration::from_secs(15));
    let dsns = reports_of(&mails, "delivery-status");
    assert_eq!(
        dsns.len(),
        1,
        "the IMDN that came before the 200 gave no DSN:\n{mails:#?}\n--- UAS:\n{out}\n--- iwf:\n{}",
        iwf.log()
    );
    check_dsn(&dsns[0], "FIRST1", "delivered");
}

// ---------------------------------------------------------------------------------------
// 7. several instances share the records through Redis

/// The mail goes through instance A; the CPM recipient's IMDN comes back to instance B
/// (another iwf behind the same SIP domain); B finds A's record in the shared Redis and
/// sends the DSN (issue 11: "a durable store that several iwf instances can share").
#[test]
fn an_imdn_to_another_instance_finds_the_record_in_redis() {
    if !peers() || !require(&["redis-server"]) {
        return;
    }
    let redis = super::store::Redis::start(free_port(false));
    let store = format!("redis://127.0.0.1:{}/0", redis.port);
    let pf = Postfix::start(None, false);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let uas_port = free_port(true);
    let (sip_a, sip_b) = (free_port(true), free_port(true));
    let hop = format!("sip:127.0.0.1:{uas_port};transport=udp");
    let a = Gw::start_with_store(da.path(), pf.port, free_port(false), sip_a, &hop, &store);
    let b = Gw::start_with_store(db.path(), pf.port, free_port(false), sip_b, &hop, &store);
    // The UAS answers A's MESSAGE and sends its IMDN to B (first, then the 200 after 0.3 s).
    let uas = imdn_first_uas(uas_port, sip_b, 300);
    send_mail(
        &a,
        mail_spec(
            "CROSS1",
            "x1@mail.example.org",
            "Across",
            "SUCCESS,FAILURE",
            false,
        ),
        &pf,
    );
    let out = uas.output();
    assert!(
        out.contains("IMDN answered 200"),
        "{out}\n--- B:\n{}",
        b.log()
    );
    let mails = pf.wait_mails(1, Duration::from_secs(15));
    let dsns = reports_of(&mails, "delivery-status");
    assert_eq!(
        dsns.len(),
        1,
        "{mails:#?}\n--- A:\n{}\n--- B:\n{}",
        a.log(),
        b.log()
    );
    check_dsn(&dsns[0], "CROSS1", "delivered");
    assert!(b.log().contains("IMDN reported by mail"), "{}", b.log());
    drop(redis);
}
