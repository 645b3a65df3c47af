//! CPM → e-mail with real peers on loopback: SIPp as the UAC sending MESSAGE (text/plain and
//! CPIM, over UDP and TCP) into `iwf serve`, which delivers to a smarthost — an aiosmtpd
//! server scripted to answer 250 / 4xx / 5xx / nothing (`tests/peers/smarthost.py`), or
//! nothing listening at all — and SIPp checks the mapped final response. SIPp's scenario
//! names the one status it expects (SIPp exits non-zero on anything else).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::harness::{
    self, Iwf, IwfOptions, PYTHON, Proc, Transport, asset, free_port, require, wait_until,
};

pub const TEXT: &str = "Content-Type: text/plain;charset=UTF-8\n\nhello from SIPp, grüße";

pub const CPIM: &str = "Content-Type: message/cpim\n\nFrom: \"Bob Ünal\" <sip:+15551234567@ims.example.net>\nTo: <sip:alice%40mail.example.org@iwf.example.net>\nDateTime: 2025-11-21T14:03:05Z\nSubject: Grüße aus Köln\nNS: imdn <urn:ietf:params:imdn>\nimdn.Message-ID: Zq81mK0pR2\n\nContent-Type: text/plain; charset=utf-8\n\nHallo Alice, schöne Grüße!";

/// A SIPp UAC scenario sending one MESSAGE with `content` (Content-Type line, blank line,
/// body) and expecting `status`.
pub fn uac_scenario(dir: &Path, status: u16, content: &str) -> PathBuf {
    let (ct, body) = content.split_once("\n\n").unwrap();
    let xml = format!(
        r#"<?xml version="1.0" encoding="UTF-8" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="CPM MESSAGE UAC expecting {status}">
  <send retrans="500">
    <![CDATA[

      MESSAGE sip:alice%40mail.example.org@iwf.example.net SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "SIPp" <sip:+15551234567@ims.example.net>;tag=[pid]SIPpTag00[call_number]
      To: <sip:alice%40mail.example.org@iwf.example.net>
      Call-ID: [call_id]
      CSeq: 1 MESSAGE
      Max-Forwards: 70
      Expires: 3600
      Conversation-ID: conv-[call_id]
      {ct}
      Content-Length: [len]

{body}
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="{status}"/>
</scenario>
"#
    );
    let path = dir.join(format!("uac_{status}.xml"));
    std::fs::write(&path, xml).unwrap();
    path
}

/// Runs SIPp as UAC against `port` and returns whether it saw `status` (within 60 s).
pub fn sipp_uac(port: u16, transport: Transport, status: u16, content: &str) -> (bool, String) {
    sipp_uac_in(port, transport, status, content, None)
}

fn sipp_uac_in(
    port: u16,
    transport: Transport,
    status: u16,
    content: &str,
    conversation: Option<&str>,
) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let scen = uac_scenario(dir.path(), status, content);
    if let Some(c) = conversation {
        let xml = std::fs::read_to_string(&scen)
            .unwrap()
            .replace("conv-[call_id]", c);
        std::fs::write(&scen, xml).unwrap();
    }
    let local = free_port(transport.udp());
    let mut cmd = Command::new("sipp");
    cmd.arg(format!("127.0.0.1:{port}"))
        .arg("-sf")
        .arg(&scen)
        .args(["-i", "127.0.0.1", "-p", &local.to_string()])
        .args(["-t", if transport.udp() { "u1" } else { "t1" }])
        .args([
            "-m",
            "1",
            "-nostdin",
            "-timeout",
            "50s",
            "-recv_timeout",
            "45000",
        ])
        .args(["-trace_err", "-trace_msg"])
        .current_dir(dir.path());
    let (st, out) = harness::run("sipp-uac", &mut cmd, Duration::from_secs(60));
    let msgs = std::fs::read_dir(dir.path())
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
                .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default();
    (st.success(), format!("{out}\n{msgs}"))
}

/// The scripted aiosmtpd smarthost.
pub struct Smarthost {
    _proc: Proc,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Smarthost {
    pub fn start(mode: &str) -> Smarthost {
        Smarthost::start_with(mode, None)
    }

    /// With `tls` (certificate and key files): STARTTLS offered and required.
    pub fn start_with(mode: &str, tls: Option<(&Path, &Path)>) -> Smarthost {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port(false);
        let mut cmd = Command::new(PYTHON);
        cmd.arg(asset("smarthost.py"))
            .arg(port.to_string())
            .arg(dir.path())
            .arg(mode);
        if let Some((cert, key)) = tls {
            cmd.arg(cert).arg(key);
        }
        let mut proc = Proc::spawn("smarthost", &mut cmd);
        if wait_until(Duration::from_secs(10), || {
            harness::listening(false, port).then_some(())
        })
        .is_none()
        {
            proc.kill();
            panic!("the scripted smarthost did not listen: {}", proc.output());
        }
        Smarthost {
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

/// `iwf serve` with the smarthost at `smarthost_port` (UDP and TCP SIP); returns it with
/// its SIP UDP and TCP ports.
pub fn start_iwf(smarthost_port: u16, timeout_secs: u64) -> (Iwf, u16, u16) {
    start_iwf_with(smarthost_port, timeout_secs, None)
}

fn start_iwf_with(
    smarthost_port: u16,
    timeout_secs: u64,
    next_hop: Option<String>,
) -> (Iwf, u16, u16) {
    let config = format!(
        "smarthost: 127.0.0.1:{smarthost_port}\nsmarthost_timeout_secs: {timeout_secs}\nsip_tcp: true\n"
    );
    let iwf = Iwf::start(IwfOptions {
        config: &config,
        next_hop,
        ..IwfOptions::default()
    });
    let ports = wait_until(Duration::from_secs(10), || {
        let out = iwf.proc.output();
        let udp = out.lines().find_map(|l| {
            l.strip_prefix("iwf: SIP (CPM -> e-mail MESSAGE) listening on udp ")
                .and_then(|a| a.trim().parse::<std::net::SocketAddr>().ok())
                .map(|a| a.port())
        })?;
        let tcp = out.lines().find_map(|l| {
            l.strip_prefix("iwf: SIP (CPM -> e-mail MESSAGE) listening on tcp port ")
                .and_then(|p| p.trim().parse::<u16>().ok())
        })?;
        Some((udp, tcp))
    })
    .unwrap_or_else(|| panic!("iwf printed no SIP ports:\n{}", iwf.proc.output()));
    (iwf, ports.0, ports.1)
}

fn peers() -> bool {
    require(&["sipp", PYTHON]) && {
        let ok = Command::new(PYTHON)
            .args(["-c", "import aiosmtpd"])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipped: python3-aiosmtpd not installed");
        }
        ok
    }
}

/// 202 only after the smarthost's 250; the mail it got is the mapped one, over UDP and TCP,
/// for text/plain and CPIM.
#[test]
fn sipp_message_reaches_the_smarthost() {
    if !peers() {
        return;
    }
    let sink = Smarthost::start("ok");
    let (iwf, udp, tcp) = start_iwf(sink.port, 10);
    let cases = [
        (udp, Transport::Udp, TEXT),
        (tcp, Transport::Tcp, TEXT),
        (udp, Transport::Udp, CPIM),
        (tcp, Transport::Tcp, CPIM),
    ];
    for (i, (port, t, content)) in cases.iter().enumerate() {
        let (ok, out) = sipp_uac(*port, *t, 202, content);
        assert!(
            ok,
            "case {i}: SIPp did not get 202:\n{out}\n--- iwf:\n{}",
            iwf.proc.output()
        );
        let mails = wait_until(Duration::from_secs(5), || {
            let m = sink.mails();
            (m.len() > i).then_some(m)
        })
        .unwrap_or_else(|| panic!("case {i}: no mail at the smarthost"));
        let m = &mails[i];
        assert!(m.contains("X-Envelope-To: alice@mail.example.org"), "{m}");
        assert!(m.contains("\r\nTo: <alice@mail.example.org>\r\n"), "{m}");
        assert!(m.contains("\r\nMessage-ID: <"), "{m}");
        if content == &CPIM {
            assert!(m.contains("+15551234567@cpm.example.net>\r\n"), "{m}");
            // aiosmtpd offers SMTPUTF8: the headers go as UTF-8, not RFC 2047
            assert!(m.contains("\r\nSubject: Grüße aus Köln\r\n"), "{m}");
            assert!(m.contains("From: \"Bob Ünal\" <"), "{m}");
            assert!(m.contains("Date: Fri, 21 Nov 2025 14:03:05 +0000"), "{m}");
            assert!(m.contains("Hallo Alice, schöne Grüße!"), "{m}");
            assert!(m.contains("Content-Transfer-Encoding: 8bit"), "{m}");
            assert!(m.contains("BODY=8BITMIME SMTPUTF8"), "{m}");
        } else {
            assert!(
                m.contains("From: \"SIPp\" <+15551234567@cpm.example.net>"),
                "{m}"
            );
            assert!(m.contains("hello from SIPp, grüße"), "{m}");
        }
    }
    assert_eq!(sink.mails().len(), 4);
}

/// UDP retransmissions while the smarthost takes its time: one mail, one 202.
#[test]
fn retransmissions_do_not_mail_twice() {
    if !peers() {
        return;
    }
    let sink = Smarthost::start("slow");
    let (iwf, udp, _) = start_iwf(sink.port, 10);
    let (ok, out) = sipp_uac(udp, Transport::Udp, 202, TEXT);
    assert!(ok, "{out}\n--- iwf:\n{}", iwf.proc.output());
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(sink.mails().len(), 1, "{}", iwf.proc.output());
}

/// The smarthost's refusals and silence, each mapped by the cpm_response rules.
#[test]
fn smarthost_failures_map_to_sip_responses() {
    if !peers() {
        return;
    }
    for (mode, status, transport) in [
        ("451", 503, Transport::Udp),
        ("452", 480, Transport::Tcp),
        ("550", 404, Transport::Udp),
        ("552", 413, Transport::Tcp),
        ("554", 403, Transport::Udp),
        ("silent", 503, Transport::Tcp),
    ] {
        let sink = Smarthost::start(mode);
        let (iwf, udp, tcp) = start_iwf(sink.port, 3);
        let port = if transport.udp() { udp } else { tcp };
        let (ok, out) = sipp_uac(port, transport, status, CPIM);
        assert!(
            ok,
            "smarthost {mode}: SIPp did not get {status}:\n{out}\n--- iwf:\n{}",
            iwf.proc.output()
        );
        assert!(sink.mails().is_empty(), "{mode}: a mail was kept");
    }
    // nothing listening: 503 (with Retry-After, checked by the self-tests)
    let dead = free_port(false);
    let (iwf, udp, _) = start_iwf(dead, 3);
    let (ok, out) = sipp_uac(udp, Transport::Udp, 503, TEXT);
    assert!(ok, "smarthost down: {out}\n--- iwf:\n{}", iwf.proc.output());
}

/// The private Postfix instance of `tests/peers/postfix-mailbox.sh` (local Maildir for
/// alice@mail.example.org); stopped when dropped.
struct MailboxPostfix {
    dir: PathBuf,
    port: u16,
    _tmp: tempfile::TempDir,
}

impl MailboxPostfix {
    fn start() -> MailboxPostfix {
        let tmp = tempfile::tempdir().unwrap();
        let pf = MailboxPostfix {
            dir: tmp.path().join("postfix"),
            port: free_port(false),
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
        harness::run("postfix-mailbox.sh", &mut cmd, Duration::from_secs(90))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("maillog")).unwrap_or_default()
    }

    fn mailbox(&self) -> Vec<String> {
        let new = self.dir.join("mail/alice/new");
        let mut files: Vec<PathBuf> = std::fs::read_dir(new)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned())
            .collect()
    }
}

impl Drop for MailboxPostfix {
    fn drop(&mut self) {
        let _ = self.script("stop");
    }
}

/// A MESSAGE from SIPp reaches a Postfix mailbox as a proper mail (From, To, Date, Subject,
/// UTF-8 body); SIPp gets 202 after Postfix's 250 and Postfix logs `status=sent`. A MESSAGE
/// to a mail user Postfix does not know gets Postfix's 550 5.1.1 as 404.
#[test]
fn sipp_message_to_a_postfix_mailbox() {
    if !peers() || !require(&["/usr/sbin/postfix"]) {
        return;
    }
    if !harness::is_root() {
        eprintln!("skipped: Postfix needs root");
        return;
    }
    let pf = MailboxPostfix::start();
    let (iwf, udp, tcp) = start_iwf(pf.port, 15);
    let (ok, out) = sipp_uac(tcp, Transport::Tcp, 202, CPIM);
    assert!(
        ok,
        "{out}\n--- iwf:\n{}\n--- postfix:\n{}",
        iwf.proc.output(),
        pf.log()
    );
    let mails = wait_until(Duration::from_secs(20), || {
        let m = pf.mailbox();
        (!m.is_empty()).then_some(m)
    })
    .unwrap_or_else(|| panic!("nothing in the mailbox; postfix log:\n{}", pf.log()));
    let m = &mails[0];
    assert!(m.contains("+15551234567@cpm.example.net>"), "{m}");
    assert!(m.contains("\nFrom: "), "{m}");
    assert!(m.contains("\nTo: <alice@mail.example.org>"), "{m}");
    assert!(m.contains("\nDate: Fri, 21 Nov 2025 14:03:05 +0000"), "{m}");
    assert!(m.contains("\nSubject: "), "{m}");
    assert!(m.contains("Hallo Alice, schöne Grüße!"), "{m}");
    assert!(
        wait_until(Duration::from_secs(10), || {
            pf.log()
                .lines()
                .any(|l| l.contains("to=<alice@mail.example.org>") && l.contains("status=sent"))
                .then_some(())
        })
        .is_some(),
        "{}",
        pf.log()
    );
    // Postfix refuses an unknown mailbox at RCPT (550 5.1.1): 404 at SIPp.
    let dir = tempfile::tempdir().unwrap();
    let scen = uac_scenario(dir.path(), 404, TEXT);
    let xml = std::fs::read_to_string(&scen)
        .unwrap()
        .replace("alice%40mail.example.org", "nobody%40mail.example.org");
    std::fs::write(&scen, xml).unwrap();
    let local = free_port(true);
    let mut cmd = Command::new("sipp");
    cmd.arg(format!("127.0.0.1:{udp}"))
        .arg("-sf")
        .arg(&scen)
        .args(["-i", "127.0.0.1", "-p", &local.to_string(), "-t", "u1"])
        .args(["-m", "1", "-nostdin", "-timeout", "50s"])
        .current_dir(dir.path());
    let (st, out) = harness::run("sipp-uac", &mut cmd, Duration::from_secs(60));
    assert!(
        st.success(),
        "{out}\n--- iwf:\n{}\n--- postfix:\n{}",
        iwf.proc.output(),
        pf.log()
    );
}

/// The thread survives the protocol change: a mail goes out as a MESSAGE (to SIPp as UAS)
/// with a Conversation-ID; SIPp as UAC answers with a MESSAGE in that conversation; the mail
/// that reaches the smarthost is In-Reply-To the first mail.
#[test]
fn a_cpm_reply_lands_in_the_mail_thread() {
    use super::harness::{Sipp, smtplib};
    use serde_json::json;
    if !peers() {
        return;
    }
    let uas = Sipp::start("message_uas_200.xml", Transport::Udp, None, 1, &[]);
    let sink = Smarthost::start("ok");
    let (iwf, udp, _) = start_iwf_with(sink.port, 10, Some(uas.next_hop()));
    let mail = "From: Alice <alice@mail.example.org>\r\nTo: +15551234567@cpm.example.net\r\nSubject: lunch?\r\nMessage-ID: <first-1@mail.example.org>\r\n\r\nat noon?\r\n";
    let r = smtplib(
        iwf.smtp,
        json!({"transactions": [{"mail_from": "alice@mail.example.org",
                                 "rcpts": [["+15551234567@cpm.example.net", []]],
                                 "data": mail}]}),
        Duration::from_secs(40),
    );
    assert!(
        r.transactions[0].data.as_ref().unwrap().is(250, "2.0.0"),
        "{r:?}\n{}",
        iwf.proc.output()
    );
    let got = uas.wait_requests(1, Duration::from_secs(5));
    let conv = got[0]
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("Conversation-ID"))
        .map(|(_, v)| v.clone())
        .expect("the MESSAGE carries a Conversation-ID");
    assert_eq!(conv, "first-1%40mail.example.org");
    let (ok, out) = sipp_uac_in(udp, Transport::Udp, 202, TEXT, Some(&conv));
    assert!(ok, "{out}\n--- iwf:\n{}", iwf.proc.output());
    let mails = wait_until(Duration::from_secs(5), || {
        let m = sink.mails();
        (!m.is_empty()).then_some(m)
    })
    .expect("the reply reached the smarthost");
    assert!(
        mails[0].contains("\r\nIn-Reply-To: <first-1@mail.example.org>\r\n"),
        "{}",
        mails[0]
    );
    assert!(
        mails[0].contains("\r\nReferences: <first-1@mail.example.org>\r\n"),
        "{}",
        mails[0]
    );
}

/// STARTTLS when offered: a smarthost that requires it gets the mail over TLS.
#[test]
fn starttls_to_the_smarthost() {
    if !peers() || !require(&["openssl"]) {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let (st, out) = harness::run(
        "openssl",
        Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=127.0.0.1", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert),
        Duration::from_secs(60),
    );
    assert!(st.success(), "{out}");
    let sink = Smarthost::start_with("ok", Some((&cert, &key)));
    let (iwf, udp, _) = start_iwf(sink.port, 10);
    let (ok, out) = sipp_uac(udp, Transport::Udp, 202, TEXT);
    assert!(ok, "{out}\n--- iwf:\n{}", iwf.proc.output());
    let mails = wait_until(Duration::from_secs(5), || {
        let m = sink.mails();
        (!m.is_empty()).then_some(m)
    })
    .expect("a mail at the smarthost");
    assert!(mails[0].contains("X-Session-TLS: yes"), "{}", mails[0]);
}

/// Large Message Mode, receiving side: iwf's own MSRP sender (`large::deliver`, INVITE +
/// chunks + BYE) sends 5 KB, 100 KB and 5 MB to the UAS; each arrives at the smarthost as
/// one mail, byte for byte, and the sender gets 200 to its last chunk only after the 250.
#[test]
fn large_message_mode_arrives_as_one_mail() {
    use base64::Engine;
    use iwf::mail_to_cpm::outcome::Outcome;

    if !peers() {
        return;
    }
    let sink = Smarthost::start("ok");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (_server, client, cfg) = large_pair(sink.port).await;
        for (i, size) in [5_000usize, 100_000, 5_000_000].into_iter().enumerate() {
            let payload: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
            let d = large_delivery(&payload);
            let o = iwf::mail_to_cpm::large::deliver(
                &client,
                &d,
                &cfg,
                &iwf::clock::system(),
                &iwf::ids::random(),
            )
            .await;
            assert!(
                matches!(o, Outcome::Final { status: 200, .. }),
                "{size} bytes: {o:?}"
            );
            let mails = wait_until(Duration::from_secs(10), || {
                let m = sink.mails();
                (m.len() > i).then_some(m)
            })
            .unwrap_or_else(|| panic!("{size} bytes: no mail at the smarthost"));
            let m = &mails[i];
            let head = &m[..m.find("\r\n\r\n").unwrap_or(m.len())];
            assert!(
                m.contains("Content-Type: application/octet-stream"),
                "{size}: {head}"
            );
            assert!(
                m.contains("Content-Transfer-Encoding: base64"),
                "{size}: {head}"
            );
            assert!(m.contains("(CPM large"), "{size}: {head}");
            let body = m.split("\r\n\r\n").nth(1).unwrap().replace("\r\n", "");
            let got = base64::engine::general_purpose::STANDARD
                .decode(body.trim())
                .unwrap();
            assert!(
                got == payload,
                "{size} bytes: content differs ({} bytes arrived)",
                got.len()
            );
        }
        assert_eq!(sink.mails().len(), 3);
    });
}

/// The smarthost refuses the mail (554 5.7.1): the sender's last chunk gets MSRP 403 (the
/// failure report), nothing is kept.
#[test]
fn large_message_refused_by_the_smarthost_fails_the_last_chunk() {
    use iwf::mail_to_cpm::outcome::{Layer, Outcome};
    if !peers() {
        return;
    }
    let sink = Smarthost::start("554");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (_server, client, cfg) = large_pair(sink.port).await;
        let d = large_delivery(&[b'x'; 50_000]);
        let o = iwf::mail_to_cpm::large::deliver(
            &client,
            &d,
            &cfg,
            &iwf::clock::system(),
            &iwf::ids::random(),
        )
        .await;
        assert!(
            matches!(
                o,
                Outcome::Final {
                    protocol: Layer::Msrp,
                    status: 403,
                    ..
                }
            ),
            "{o:?}"
        );
    });
    assert!(sink.mails().is_empty());
}

/// A UAS on its own SIP endpoint delivering to the smarthost at `port`, and a SIP client
/// whose outbound proxy is that UAS.
async fn large_pair(
    port: u16,
) -> (
    iwf::sip::RsipBackend,
    iwf::sip::RsipBackend,
    iwf::mail_to_cpm::large::LargeConfig,
) {
    large_pair_idle(port, Duration::from_secs(30)).await
}

/// As [`large_pair`], with the UAS's `msrp_idle` (longest sender silence mid-message).
async fn large_pair_idle(
    port: u16,
    msrp_idle: Duration,
) -> (
    iwf::sip::RsipBackend,
    iwf::sip::RsipBackend,
    iwf::mail_to_cpm::large::LargeConfig,
) {
    use std::sync::Arc;

    use iwf::cpm_to_mail::{MemoryThreads, Uas, UasConfig};
    use iwf::sip::{RsipBackend, SipConfig};
    let rules = iwf::ruleset::load(&harness::rules_dir(), 1).unwrap();
    let uas = Arc::new(Uas::new(
        Arc::new(arc_swap::ArcSwap::from_pointee(rules)),
        Arc::new(iwf::ids::RandomIds),
        iwf::clock::system(),
        Arc::new(MemoryThreads::default()),
        UasConfig {
            smarthost: Some(format!("127.0.0.1:{port}")),
            msrp_idle,
            ..UasConfig::default()
        },
    ));
    let server = RsipBackend::start_with_uas(
        SipConfig::default(),
        Some(uas),
        iwf::clock::system(),
        iwf::ids::random(),
    )
    .await
    .unwrap();
    let addr = server.udp_addr().unwrap();
    let client = RsipBackend::start(
        SipConfig {
            outbound_proxy: Some(format!("sip:{addr};transport=udp")),
            ..SipConfig::default()
        },
        iwf::clock::system(),
        iwf::ids::random(),
    )
    .await
    .unwrap();
    let cfg = iwf::mail_to_cpm::large::LargeConfig {
        host: "127.0.0.1".parse().unwrap(),
        chunk_size: 10_000,
        ..iwf::mail_to_cpm::large::LargeConfig::default()
    };
    (server, client, cfg)
}

/// A large-mode delivery to alice@mail.example.org of `payload` as application/octet-stream
/// in CPIM.
fn large_delivery(payload: &[u8]) -> iwf::mail_to_cpm::plan::Delivery {
    use iwf::mail_to_cpm::plan::{Content, Delivery, Mode};
    let mut cpim = b"From: <sip:+15551234567@ims.example.net>\r\nTo: <sip:alice%40mail.example.org@iwf.example.net>\r\nSubject: big\r\n\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
    cpim.extend_from_slice(payload);
    Delivery {
        recipient: "alice@mail.example.org".into(),
        mode: Mode::Large,
        request_uri: "sip:alice%40mail.example.org@iwf.example.net".into(),
        headers: vec![
            ("From".into(), "<sip:+15551234567@ims.example.net>".into()),
            (
                "To".into(),
                "<sip:alice%40mail.example.org@iwf.example.net>".into(),
            ),
        ],
        content: Content {
            content_type: "message/cpim".into(),
            body: cpim.into(),
        },
        cpim_inner: None,
        imdn_message_id: None,
        imdn_dispositions: Vec::new(),
        success_report: true,
    }
}

/// baresip as a real user agent: its `/message` command (contact module) sends a MESSAGE
/// through its outbound proxy (iwf); baresip sees 202 (only given after the smarthost's 250)
/// and the smarthost gets the mail; a mailbox the smarthost refuses (550 5.1.1) gives 404.
#[test]
fn baresip_message_reaches_the_smarthost() {
    if !peers() || !require(&["baresip"]) {
        return;
    }
    for (mode, status) in [("ok", 202), ("550", 404)] {
        let sink = Smarthost::start(mode);
        let (iwf, udp, _) = start_iwf(sink.port, 10);
        let out = baresip_message(
            &format!("sip:127.0.0.1:{udp};transport=udp"),
            "hello from baresip, grüße",
            5,
        );
        assert!(
            out.contains(&format!("SIP/2.0 {status} ")),
            "{mode}: baresip did not get {status}:\n{out}\n--- iwf:\n{}",
            iwf.proc.output()
        );
        if mode == "ok" {
            let mails = wait_until(Duration::from_secs(5), || {
                let m = sink.mails();
                (!m.is_empty()).then_some(m)
            })
            .expect("the mail at the smarthost");
            assert!(
                mails[0].contains("\r\nFrom: <bob@cpm.example.net>\r\n"),
                "{}",
                mails[0]
            );
            assert!(
                mails[0].contains("hello from baresip, grüße"),
                "{}",
                mails[0]
            );
        } else {
            assert!(sink.mails().is_empty());
        }
    }
}

/// An MSRP session opened by hand against the UAS: the INVITE went through iwf's own SIP
/// client, the TCP connection to the UAS's `a=path` is open.
struct HandSession {
    stream: tokio::net::TcpStream,
    /// The UAS's path (To-Path) and ours (From-Path).
    theirs: String,
    ours: String,
    sip: Box<dyn iwf::sip::Session>,
}

async fn hand_session(client: &iwf::sip::RsipBackend, tag: &str) -> HandSession {
    use iwf::mail_to_cpm::outcome::Outcome;
    use iwf::render::sdp::{SdpOffer, msrp_path, parse_answer};
    use iwf::sip::SipBackend;
    let ours = msrp_path("127.0.0.1".parse().unwrap(), 9, tag, false);
    let offer = SdpOffer {
        session_id: 1,
        host: "127.0.0.1".parse().unwrap(),
        port: 9,
        session_path: ours.clone(),
        accept_types: vec!["message/cpim".into()],
        accept_wrapped_types: vec!["*".into()],
        max_size: None,
        sendonly: true,
        setup_active: true,
        tls: false,
    };
    let d = large_delivery(b"unused");
    let inv = client
        .send_invite(&d, offer.render().into_bytes(), "sip:iwf@127.0.0.1")
        .await;
    assert!(
        matches!(inv.outcome, Outcome::Final { status: 200, .. }),
        "{:?}",
        inv.outcome
    );
    let answer = parse_answer(&String::from_utf8_lossy(&inv.answer.unwrap())).unwrap();
    let theirs = answer.next_hop().unwrap().to_string();
    let hostport = theirs
        .strip_prefix("msrp://")
        .and_then(|r| r.split('/').next())
        .unwrap()
        .to_string();
    let stream = tokio::net::TcpStream::connect(hostport).await.unwrap();
    HandSession {
        stream,
        theirs,
        ours,
        sip: inv.session.unwrap(),
    }
}

impl HandSession {
    /// Sends the first 10 octets of a 100-octet message `m1` (flag `+`).
    async fn send_first_chunk(&mut self, failure_report: Option<iwf::msrp::codec::FailureReport>) {
        use bytes::BytesMut;
        use iwf::msrp::codec::{ByteRange, Flag, Method, Request};
        use tokio::io::AsyncWriteExt;
        let mut req = Request::new(
            "t1",
            Method::Send,
            vec![self.theirs.clone()],
            vec![self.ours.clone()],
        );
        req.message_id = Some("m1".into());
        req.byte_range = Some(ByteRange {
            start: 1,
            end: Some(10),
            total: Some(100),
        });
        req.failure_report = failure_report;
        req.content_type = Some("message/cpim".into());
        req.body = Some(bytes::Bytes::from_static(b"From: <tel"));
        req.flag = Flag::More;
        let mut out = BytesMut::new();
        req.render(&mut out);
        self.stream.write_all(&out).await.unwrap();
    }

    /// What arrives on the MSRP connection within `wait` (until it is closed).
    async fn read_for(&mut self, wait: Duration) -> String {
        use tokio::io::AsyncReadExt;
        let mut got = Vec::new();
        let mut buf = vec![0u8; 4096];
        let _ = tokio::time::timeout(wait, async {
            loop {
                match self.stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        String::from_utf8_lossy(&got).into_owned()
    }

    async fn bye(&self) -> iwf::mail_to_cpm::outcome::Outcome {
        self.sip.bye().await
    }
}

fn assert_failure_report(wire: &str) {
    let report = wire
        .split("MSRP ")
        .find(|f| f.contains(" REPORT\r\n"))
        .unwrap_or_else(|| panic!("no REPORT on the connection:\n{wire}"));
    for want in [
        "Message-ID: m1\r\n",
        "Byte-Range: 1-10/100\r\n",
        "Status: 000 408",
    ] {
        assert!(report.contains(want), "{want:?} missing:\n{report}");
    }
    assert!(!report.contains("Success-Report"), "{report}");
    assert!(!report.contains("Failure-Report"), "{report}");
}

/// A Large Message Mode session abandoned mid-message with a BYE: the sender sends one
/// chunk of a bigger message (`+`, no Failure-Report header, which means `yes`), then BYE.
/// The chunk gets 200; before the 200 to the BYE the sender gets a failure REPORT for the
/// message (RFC 4975 §7.1.2: `Status: 000 408`, the 10 octets received as Byte-Range); no
/// mail is sent. With `Failure-Report: no` the same session gets no REPORT (and no 200 to
/// its chunk).
#[test]
fn large_message_abandoned_by_bye_gets_a_failure_report_and_no_mail() {
    use iwf::mail_to_cpm::outcome::Outcome;
    use iwf::msrp::codec::FailureReport;
    if !peers() {
        return;
    }
    let sink = Smarthost::start("ok");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (_server, client, _) = large_pair(sink.port).await;
        let mut s = hand_session(&client, "abandon1").await;
        s.send_first_chunk(None).await;
        let first = s.read_for(Duration::from_millis(500)).await;
        assert!(first.starts_with("MSRP t1 200"), "{first}");
        let bye = s.bye().await;
        assert!(matches!(bye, Outcome::Final { status: 200, .. }), "{bye:?}");
        let after = s.read_for(Duration::from_secs(2)).await;
        assert_failure_report(&after);

        let mut s = hand_session(&client, "abandon2").await;
        s.send_first_chunk(Some(FailureReport::No)).await;
        let bye = s.bye().await;
        assert!(matches!(bye, Outcome::Final { status: 200, .. }), "{bye:?}");
        let wire = s.read_for(Duration::from_secs(1)).await;
        assert!(wire.is_empty(), "Failure-Report: no, yet:\n{wire}");
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(sink.mails().is_empty());
}

/// The sender stops sending mid-message and keeps the connection open: after `msrp_idle`
/// (1 s here) iwf sends the failure REPORT on its own, no mail is sent, and the sender's
/// later BYE still gets 200.
#[test]
fn large_message_sender_silent_mid_message_gets_a_failure_report() {
    use iwf::mail_to_cpm::outcome::Outcome;
    if !peers() {
        return;
    }
    let sink = Smarthost::start("ok");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (_server, client, _) = large_pair_idle(sink.port, Duration::from_secs(1)).await;
        let mut s = hand_session(&client, "silent1").await;
        s.send_first_chunk(None).await;
        let wire = s.read_for(Duration::from_secs(4)).await;
        assert!(wire.starts_with("MSRP t1 200"), "{wire}");
        assert_failure_report(&wire);
        let bye = s.bye().await;
        assert!(matches!(bye, Outcome::Final { status: 200, .. }), "{bye:?}");
    });
    assert!(sink.mails().is_empty());
}

/// The sender closes the MSRP connection mid-message: there is no connection left for a
/// REPORT (iwf is the passive side and opens none), so the outcome is at the SIP level —
/// the dialog is still there and the sender's BYE gets 200, not 481 — and no mail is sent.
#[test]
fn large_message_connection_closed_mid_message_sends_no_mail() {
    use iwf::mail_to_cpm::outcome::Outcome;
    if !peers() {
        return;
    }
    let sink = Smarthost::start("ok");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (_server, client, _) = large_pair(sink.port).await;
        let mut s = hand_session(&client, "closed1").await;
        s.send_first_chunk(None).await;
        let first = s.read_for(Duration::from_millis(500)).await;
        assert!(first.starts_with("MSRP t1 200"), "{first}");
        let HandSession { stream, sip, .. } = s;
        drop(stream);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let bye = sip.bye().await;
        assert!(matches!(bye, Outcome::Final { status: 200, .. }), "{bye:?}");
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(sink.mails().is_empty());
}

/// CANCEL after the INVITE was answered. iwf answers an INVITE with 200 at once, so a CANCEL
/// always comes after the final response. RFC 3261 §9.2: the CANCEL is answered 200 when it
/// matches a transaction ("Regardless of the method of the original request, as long as the
/// CANCEL matched an existing transaction, the UAS answers the CANCEL request itself with a
/// 200 (OK) response"), and "if it has [already sent a final response], the CANCEL request
/// has no effect on the processing of the original request, no effect on any session state,
/// and no effect on the responses generated for the original request". No 487 — that is for
/// an INVITE still without a final response. So: INVITE → 200, ACK, CANCEL → 200, and the
/// session goes on: the message sent after the CANCEL arrives as a mail, the BYE gets 200.
/// (The INVITE server transaction stays in RFC 6026's Accepted state for 64·T1, which is
/// what the CANCEL matches.) SIP here is written by hand over UDP so the CANCEL carries the
/// INVITE's branch, as §9.1 requires.
#[test]
fn cancel_after_the_200_has_no_effect_on_the_session() {
    use bytes::BytesMut;
    use iwf::msrp::codec::{ByteRange, Method, Request};
    use tokio::io::AsyncWriteExt;
    if !peers() {
        return;
    }
    let sink = Smarthost::start("ok");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (server, _client, _) = large_pair(sink.port).await;
        let iwf_addr = server.udp_addr().unwrap();
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let me = sock.local_addr().unwrap();
        let ours = "msrp://127.0.0.1:9/cancel1;tcp";
        let sdp = format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=message 9 TCP/MSRP *\r\na=sendonly\r\na=accept-types:message/cpim\r\na=setup:active\r\na=path:{ours}\r\n"
        );
        let ruri = "sip:alice%40mail.example.org@iwf.example.net";
        let common = |method: &str, branch: &str, cseq: &str, to_tag: &str| {
            format!(
                "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch={branch}\r\nMax-Forwards: 70\r\nFrom: <sip:+15551234567@ims.example.net>;tag=c1\r\nTo: <{ruri}>{to_tag}\r\nCall-ID: cancel-test-1\r\nCSeq: {cseq}\r\nContact: <sip:+15551234567@{me}>\r\n"
            )
        };
        let recv = |want: &'static str| {
            let sock = &sock;
            async move {
                let mut buf = vec![0u8; 8192];
                loop {
                    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
                        .await
                        .unwrap_or_else(|_| panic!("no response with {want}"))
                        .unwrap();
                    let r = String::from_utf8_lossy(&buf[..n]).into_owned();
                    if r.starts_with("SIP/2.0 1") {
                        continue;
                    }
                    assert!(r.contains(want), "want {want}:\n{r}");
                    return r;
                }
            }
        };
        let invite = format!(
            "{}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            common("INVITE", "z9hG4bKcancel1", "1 INVITE", ""),
            sdp.len()
        );
        sock.send_to(invite.as_bytes(), iwf_addr).await.unwrap();
        let ok = recv("CSeq: 1 INVITE").await;
        assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
        let to_tag = ok
            .lines()
            .find(|l| l.starts_with("To:"))
            .and_then(|l| l.split(";tag=").nth(1))
            .expect("a To tag")
            .trim()
            .to_string();
        let to_tag = format!(";tag={to_tag}");
        // §9.1: CANCEL has the INVITE's Request-URI, Call-ID, To, From, CSeq number and
        // top Via (branch); the To without the tag the INVITE had none of.
        let cancel = format!(
            "{}Content-Length: 0\r\n\r\n",
            common("CANCEL", "z9hG4bKcancel1", "1 CANCEL", "")
        );
        // Before the ACK (the transaction is Accepted) and after it (finished): 200 both.
        sock.send_to(cancel.as_bytes(), iwf_addr).await.unwrap();
        let r = recv("CSeq: 1 CANCEL").await;
        assert!(r.starts_with("SIP/2.0 200"), "RFC 3261 §9.2 wants 200:\n{r}");
        let ack = format!(
            "{}Content-Length: 0\r\n\r\n",
            common("ACK", "z9hG4bKcancel1ack", "1 ACK", &to_tag)
        );
        sock.send_to(ack.as_bytes(), iwf_addr).await.unwrap();
        // The ACK ends the transaction; for the instant until it is dropped and moved to
        // rsipstack's finished transactions a CANCEL would find neither (and get no
        // answer, or 481). A CANCEL that close behind the ACK is no real UA's.
        tokio::time::sleep(Duration::from_millis(200)).await;
        sock.send_to(cancel.as_bytes(), iwf_addr).await.unwrap();
        let r = recv("CSeq: 1 CANCEL").await;
        assert!(r.starts_with("SIP/2.0 200"), "RFC 3261 §9.2 wants 200:\n{r}");

        // The session is untouched: the whole message in one chunk arrives as a mail.
        let theirs = ok
            .lines()
            .find_map(|l| l.strip_prefix("a=path:"))
            .expect("a=path in the answer")
            .trim()
            .to_string();
        let hostport = theirs
            .strip_prefix("msrp://")
            .and_then(|r| r.split('/').next())
            .unwrap()
            .to_string();
        let mut stream = tokio::net::TcpStream::connect(hostport).await.unwrap();
        let body = b"From: <sip:+15551234567@ims.example.net>\r\nTo: <sip:alice%40mail.example.org@iwf.example.net>\r\nSubject: after cancel\r\n\r\nContent-Type: text/plain\r\n\r\nstill here";
        let mut req = Request::new("t1", Method::Send, vec![theirs], vec![ours.to_string()]);
        req.message_id = Some("m1".into());
        req.byte_range = Some(ByteRange {
            start: 1,
            end: Some(body.len() as u64),
            total: Some(body.len() as u64),
        });
        req.content_type = Some("message/cpim".into());
        req.body = Some(bytes::Bytes::from_static(body));
        let mut out = BytesMut::new();
        req.render(&mut out);
        stream.write_all(&out).await.unwrap();
        let mails = wait_until(Duration::from_secs(10), || {
            let m = sink.mails();
            (!m.is_empty()).then_some(m)
        })
        .expect("the message sent after the CANCEL reached the smarthost");
        assert!(mails[0].contains("still here"), "{}", mails[0]);
        let bye = format!(
            "{}Content-Length: 0\r\n\r\n",
            common("BYE", "z9hG4bKcancel1bye", "2 BYE", &to_tag)
        );
        sock.send_to(bye.as_bytes(), iwf_addr).await.unwrap();
        let r = recv("CSeq: 2 BYE").await;
        assert!(r.starts_with("SIP/2.0 200"), "{r}");
    });
}

/// Large Message Mode driven by an MSRP sender that is not iwf's own: `msrp_sender.py`
/// (stdlib Python, after the shared bench-baseline's `sip_msrp_flow.py`) sends INVITE, the
/// chunks stop-and-wait and BYE to `iwf serve` over UDP SIP. 5 KB, 100 KB and 5 MB each
/// arrive at the smarthost as one mail, byte for byte; every chunk, the INVITE and the BYE
/// get 200 (the last chunk's only after the smarthost's 250).
#[test]
fn python_msrp_sender_5k_100k_5m_arrive_as_one_mail_each() {
    use base64::Engine;
    if !peers() {
        return;
    }
    let sink = Smarthost::start("ok");
    let (iwf, udp, _) = start_iwf(sink.port, 20);
    let dir = tempfile::tempdir().unwrap();
    for (i, size) in [5_000usize, 100_000, 5_000_000].into_iter().enumerate() {
        let payload: Vec<u8> = (0..size).map(|i| (i * 13 % 256) as u8).collect();
        let mut cpim = format!(
            "From: <sip:+15551234567@ims.example.net>\r\nTo: <sip:alice%40mail.example.org@iwf.example.net>\r\nSubject: {size} octets\r\n\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        cpim.extend_from_slice(&payload);
        let file = dir.path().join(format!("m{i}"));
        std::fs::write(&file, &cpim).unwrap();
        let (st, out) = harness::run(
            "msrp_sender.py",
            Command::new(PYTHON)
                .arg(asset("msrp_sender.py"))
                .args(["--peer", &format!("127.0.0.1:{udp}")])
                .args(["--uri", "sip:alice%40mail.example.org@iwf.example.net"])
                .arg("--file")
                .arg(&file)
                .args(["--ctype", "message/cpim", "--chunk", "10000"]),
            Duration::from_secs(120),
        );
        assert!(
            st.success(),
            "{size}: the sender did not get 200 everywhere:\n{out}\n--- iwf:\n{}",
            iwf.proc.output()
        );
        assert!(out.contains("BYE    -> SIP/2.0 200"), "{out}");
        let mails = wait_until(Duration::from_secs(10), || {
            let m = sink.mails();
            (m.len() > i).then_some(m)
        })
        .unwrap_or_else(|| panic!("{size} bytes: no mail at the smarthost"));
        let m = &mails[i];
        let head = &m[..m.find("\r\n\r\n").unwrap_or(m.len())];
        assert!(head.contains(&format!("Subject: {size} octets")), "{head}");
        assert!(head.contains("Content-Transfer-Encoding: base64"), "{head}");
        let body = m.split("\r\n\r\n").nth(1).unwrap().replace("\r\n", "");
        let got = base64::engine::general_purpose::STANDARD
            .decode(body.trim())
            .unwrap();
        assert!(
            got == payload,
            "{size} bytes: content differs ({} bytes arrived)",
            got.len()
        );
    }
    assert_eq!(sink.mails().len(), 3, "one mail per message");
}

/// Kamailio as a stateful SIP proxy on loopback (`tests/peers/kamailio/kamailio-proxy.cfg`)
/// relaying everything to iwf's UDP port; SIGTERM (which ends its workers too), then a kill.
struct KamailioProxy {
    proc: Proc,
    port: u16,
    _dir: tempfile::TempDir,
}

impl KamailioProxy {
    fn start(next_port: u16) -> KamailioProxy {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port(true);
        let cfg = std::fs::read_to_string(asset("kamailio/kamailio-proxy.cfg"))
            .unwrap()
            .replace("@SIP_PORT@", &port.to_string())
            .replace("@NEXT_PORT@", &next_port.to_string());
        let path = dir.path().join("kamailio.cfg");
        std::fs::write(&path, cfg).unwrap();
        let d = dir.path().to_str().unwrap().to_string();
        let mut proc = Proc::spawn(
            "kamailio",
            Command::new("kamailio")
                .arg("-f")
                .arg(&path)
                .args(["-DD", "-E", "-Y", &d, "-w", &d, "-m", "64", "-M", "8"]),
        );
        if wait_until(Duration::from_secs(10), || {
            harness::listening(true, port).then_some(())
        })
        .is_none()
        {
            proc.terminate();
            proc.wait(Duration::from_secs(5));
            proc.kill();
            panic!("kamailio did not listen: {}", proc.output());
        }
        KamailioProxy {
            proc,
            port,
            _dir: dir,
        }
    }
}

impl Drop for KamailioProxy {
    fn drop(&mut self) {
        self.proc.terminate();
        if self.proc.wait(Duration::from_secs(5)).is_none() {
            self.proc.kill();
        }
    }
}

/// Issue 9's "Done when", first sentence: baresip (a real UA, its `/message` command) sends
/// a MESSAGE through Kamailio (a stateful proxy on loopback) into `iwf serve`, which hands it
/// to a private Postfix delivering into a Maildir. The mail file has From (the mapped
/// sender), To, Date, Subject and the UTF-8 body; Postfix logs
/// `status=sent`; iwf answered 202 only after Postfix's 250 (its log line pairs the two),
/// and baresip got that 202 through Kamailio.
#[test]
fn baresip_through_kamailio_to_a_postfix_mailbox() {
    if !peers() || !require(&["baresip", "kamailio", "/usr/sbin/postfix"]) {
        return;
    }
    if !harness::is_root() {
        eprintln!("skipped: Postfix needs root");
        return;
    }
    let pf = MailboxPostfix::start();
    let (iwf, udp, _) = start_iwf(pf.port, 15);
    let kam = KamailioProxy::start(udp);
    let out = baresip_message(
        &format!("sip:127.0.0.1:{};transport=udp", kam.port),
        "Grüße aus dem Telefon, schöne Woche!",
        8,
    );
    let ctx = || {
        format!(
            "--- baresip:\n{out}\n--- kamailio:\n{}\n--- iwf:\n{}\n--- postfix:\n{}",
            kam.proc.output(),
            iwf.proc.output(),
            pf.log()
        )
    };
    assert!(
        out.contains("SIP/2.0 202 "),
        "baresip got no 202\n{}",
        ctx()
    );
    assert!(
        kam.proc.output().contains("proxy: reply 202"),
        "the 202 did not come through Kamailio\n{}",
        ctx()
    );
    let mails = wait_until(Duration::from_secs(20), || {
        let m = pf.mailbox();
        (!m.is_empty()).then_some(m)
    })
    .unwrap_or_else(|| panic!("nothing in the mailbox\n{}", ctx()));
    let m = &mails[0];
    let head = &m[..m.find("\n\n").unwrap_or(m.len())];
    assert!(head.contains("\nFrom: <bob@cpm.example.net>\n"), "{m}");
    assert!(head.contains("\nTo: <alice@mail.example.org>"), "{m}");
    let date = head
        .lines()
        .find_map(|l| l.strip_prefix("Date: "))
        .unwrap_or_else(|| panic!("no Date:\n{m}"));
    assert!(
        chrono::DateTime::parse_from_rfc2822(date.trim()).is_ok(),
        "Date is not RFC 5322: {date}"
    );
    assert!(
        head.contains("\nSubject: CPM message from bob@cpm.example.net\n"),
        "{m}"
    );
    assert!(
        head.contains("charset=utf-8") || head.contains("charset=UTF-8"),
        "{m}"
    );
    assert!(m.contains("Grüße aus dem Telefon, schöne Woche!"), "{m}");
    assert!(
        wait_until(Duration::from_secs(10), || {
            pf.log()
                .lines()
                .any(|l| l.contains("to=<alice@mail.example.org>") && l.contains("status=sent"))
                .then_some(())
        })
        .is_some(),
        "{}",
        pf.log()
    );
    // iwf's log line for the MESSAGE: the smarthost's 250 and, from it, the 202.
    assert!(
        iwf.proc
            .output()
            .lines()
            .any(|l| l.contains("MESSAGE to mail") && l.contains("250") && l.contains("202")),
        "{}",
        iwf.proc.output()
    );
}

/// baresip as bob@ims.example.net sends one `/message` to alice@mail.example.org (through
/// `outbound`) and quits after `secs`; its console output.
///
/// baresip binds its `sip_listen` port on UDP and TCP and the next port for TLS. A port
/// found free can be taken before baresip binds it (the other tests open connections all
/// the time), so the port is picked below the kernel's ephemeral range (where no outgoing
/// connection lands) and a start that failed to bind is retried on another port.
fn baresip_message(outbound: &str, text: &str, secs: u64) -> String {
    let mut out = String::new();
    for _attempt in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let port = harness::baresip_port();
        let files = [
            (
                "config",
                format!(
                    "sip_listen\t\t127.0.0.1:{port}\nmodule_path\t\t/usr/lib/baresip/modules\nmodule\t\t\taccount.so\nmodule\t\t\tcontact.so\nmodule_app\t\tmenu.so\n"
                ),
            ),
            (
                "accounts",
                format!("<sip:bob@ims.example.net>;regint=0;outbound=\"{outbound}\"\n"),
            ),
            (
                "contacts",
                "\"Alice\" <sip:alice%40mail.example.org@iwf.example.net>\n".to_string(),
            ),
            (
                "current_contact",
                "sip:alice%40mail.example.org@iwf.example.net".to_string(),
            ),
        ];
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let message = format!("/message {text}");
        let quit_after = secs.to_string();
        (_, out) = harness::run(
            "baresip",
            Command::new("baresip").arg("-f").arg(dir.path()).args([
                "-s",
                "-e",
                &message,
                "-t",
                &quit_after,
            ]),
            Duration::from_secs(secs + 30),
        );
        if !out.contains("Address already in use") {
            break;
        }
    }
    out
}
