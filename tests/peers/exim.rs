//! Exim (Debian `exim4-daemon-light` 4.96) as the relaying MTA in front of the gateway: a
//! private instance (configuration, spool and log under a temporary directory, SMTP on a
//! loopback port, `dsn_advertise_hosts = *`) routes `cpm.example.net` to `iwf serve`, with
//! several recipients per SMTP transaction (Exim's default), and `bounce.test` to an
//! aiosmtpd sink where its bounces are read.
//!
//! - Both recipients refused (404): Exim bounces both, and the reason it quotes for one
//!   recipient does not name the other (iwf's one reply speaks for the transaction).
//! - One recipient busy (480) the first time: iwf answers 4xx, Exim retries, and only the
//!   recipient that did not have the mail gets it again.
//!
//! Exim cannot be installed beside Postfix from Debian's packages (both are the
//! mail-transport-agent), so `.ci/run` unpacks the package and installs only the binary as
//! `/usr/sbin/exim4` (the path it re-executes itself from) and its user `Debian-exim`. Exim
//! needs root to run as a daemon: as another user these tests say "skipped".

use std::process::Command;
use std::time::Duration;

use iwf::sip::Reply;
use serde_json::json;

use super::harness::{
    Iwf, IwfOptions, PYTHON, Proc, Sink, free_port, is_root, listening, require, smtplib,
    wait_until,
};
use super::mixed::Cpm;

const EXIM: &str = "/usr/sbin/exim4";

struct Exim {
    proc: Proc,
    port: u16,
    dir: tempfile::TempDir,
}

impl Exim {
    fn start(gateway_port: u16, sink_port: u16) -> Exim {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port(false);
        let d = dir.path().display().to_string();
        let config = format!(
            "primary_hostname = exim.iwf.test\n\
             spool_directory = {d}/spool\n\
             log_file_path = {d}/log/%slog\n\
             local_interfaces = 127.0.0.1\n\
             dsn_advertise_hosts = *\n\
             tls_advertise_hosts =\n\
             acl_smtp_rcpt = acl_rcpt\n\
             begin acl\n\
             acl_rcpt:\n  accept hosts = 127.0.0.1\n  deny\n\
             begin routers\n\
             to_iwf:\n  driver = manualroute\n  domains = cpm.example.net\n  transport = to_iwf\n  route_list = * 127.0.0.1\n  self = send\n\
             to_sink:\n  driver = manualroute\n  domains = bounce.test\n  transport = to_sink\n  route_list = * 127.0.0.1\n  self = send\n\
             begin transports\n\
             to_iwf:\n  driver = smtp\n  port = {gateway_port}\n\
             to_sink:\n  driver = smtp\n  port = {sink_port}\n\
             begin retry\n\
             * * F,10m,2s\n"
        );
        let conf = dir.path().join("exim.conf");
        std::fs::write(&conf, config).unwrap();
        for sub in ["spool", "log"] {
            let p = dir.path().join(sub);
            std::fs::create_dir_all(&p).unwrap();
            let _ = Command::new("chown").arg("Debian-exim").arg(&p).status();
        }
        // the temporary directory is 0700: Exim's deliveries run as Debian-exim
        let _ = Command::new("chmod").arg("755").arg(dir.path()).status();
        let mut proc = Proc::spawn(
            "exim",
            Command::new(EXIM).arg("-C").arg(&conf).args([
                "-bdf",
                "-q2s",
                "-oX",
                &port.to_string(),
            ]),
        );
        if wait_until(Duration::from_secs(10), || {
            listening(false, port).then_some(())
        })
        .is_none()
        {
            proc.kill();
            panic!(
                "exim did not listen: {}\n{}",
                proc.output(),
                std::fs::read_to_string(dir.path().join("log/mainlog")).unwrap_or_default()
            );
        }
        Exim { proc, port, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log/mainlog")).unwrap_or_default()
    }
}

fn available() -> bool {
    if !require(&[PYTHON, EXIM]) {
        return false;
    }
    if !is_root() {
        eprintln!("skipped: the Exim relay test needs root");
        return false;
    }
    true
}

fn submit(exim: &Exim, id: &str, rcpts: &[&str]) {
    let r = smtplib(
        ([127, 0, 0, 1], exim.port).into(),
        json!({"ehlo": "client.iwf.test", "transactions": [{
        "mail_from": "alice@bounce.test",
        "rcpts": rcpts.iter().map(|r| json!([r, []])).collect::<Vec<_>>(),
        "data": format!(
            "From: Alice <alice@bounce.test>\nTo: {}\nSubject: via exim\n\
             Message-ID: <{id}@bounce.test>\n\nrelayed by Exim\n",
            rcpts.join(", ")
        )}]}),
        Duration::from_secs(30),
    );
    assert!(
        r.transactions[0].data.as_ref().is_some_and(|d| d.0 == 250),
        "Exim did not take the mail: {r:?}"
    );
}

#[test]
fn exim_bounce_for_one_recipient_does_not_cite_another() {
    if !available() {
        return;
    }
    let cpm = Cpm::start(|_| Reply::status(404));
    let iwf = Iwf::start(IwfOptions {
        next_hop: Some(cpm.next_hop()),
        ..IwfOptions::default()
    });
    let sink = Sink::start();
    let exim = Exim::start(iwf.smtp.port(), sink.port);
    let (a, b) = (
        "+15551230001@cpm.example.net",
        "+15551230002@cpm.example.net",
    );
    submit(&exim, "exim-404", &[a, b]);
    let bounce = wait_until(Duration::from_secs(20), || {
        sink.mails()
            .into_iter()
            .find(|m| m.contains("X-Envelope-From: <>"))
    })
    .unwrap_or_else(|| {
        panic!(
            "no bounce\nexim:\n{}\niwf:\n{}",
            exim.log(),
            iwf.proc.output()
        )
    });
    assert!(
        bounce.contains("550 5.1.1 all 2 CPM recipients refused"),
        "{bounce}"
    );
    for r in [a, b] {
        assert!(
            !bounce.contains(&format!("<{r}>:")),
            "the transaction reply names {r}:\n{bounce}"
        );
    }
    let log = exim.log();
    assert!(
        log.contains(&format!("** {a}")) && log.contains(&format!("** {b}")),
        "both bounced: {log}"
    );
    drop(exim.proc);
}

#[test]
fn exim_retries_a_temporary_failure_and_delivers_each_recipient_once() {
    if !available() {
        return;
    }
    let tries = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t = tries.clone();
    let mut cpm = Cpm::start(move |r| {
        if r.request_uri == "tel:+15551230002"
            && t.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0
        {
            Reply::status(480)
        } else {
            Reply::status(200)
        }
    });
    let iwf = Iwf::start(IwfOptions {
        next_hop: Some(cpm.next_hop()),
        ..IwfOptions::default()
    });
    let sink = Sink::start();
    let exim = Exim::start(iwf.smtp.port(), sink.port);
    submit(
        &exim,
        "exim-480",
        &[
            "+15551230001@cpm.example.net",
            "+15551230002@cpm.example.net",
        ],
    );
    let done = wait_until(Duration::from_secs(30), || {
        exim.log().contains("Completed").then_some(())
    });
    assert!(
        done.is_some(),
        "not completed\nexim:\n{}\niwf:\n{}",
        exim.log(),
        iwf.proc.output()
    );
    let log = exim.log();
    assert!(
        log.contains("450 4.2.1 1 of 2 CPM recipients failed temporarily"),
        "{log}"
    );
    let counts = cpm.counts();
    assert_eq!(
        counts.get("tel:+15551230001"),
        Some(&1),
        "delivered once: {counts:?}"
    );
    assert_eq!(
        counts.get("tel:+15551230002"),
        Some(&2),
        "480, then 200: {counts:?}"
    );
    assert!(sink.mails().is_empty(), "no bounce: {:?}", sink.mails());
}
