//! 64 SMTP sessions at once (raw TCP, one thread each, all released by one barrier), each
//! pipelining one mail to its own recipient through `iwf serve` to the CPM side: every
//! session gets 250, and the CPM side sees every recipient exactly once — no lost and no
//! duplicated MESSAGE. Once with SIPp over UDP, once with iwf's in-process answerer over TCP.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use super::harness::{Iwf, IwfOptions, Sipp, Transport, require};

const SESSIONS: usize = 64;

/// A relay in front of the gateway is one IP for all its sessions: allow them all.
const CONFIG: &str = "limits: {connections: 256, connections_per_ip: 128}\n";

fn rcpt(i: usize) -> String {
    format!("+1555200{i:04}@cpm.example.net")
}

fn tel(i: usize) -> String {
    format!("tel:+1555200{i:04}")
}

/// Reads one (possibly multi-line) reply; returns its last line.
fn reply(r: &mut BufReader<TcpStream>) -> Result<String, String> {
    loop {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) => return Err("connection closed".into()),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(line.trim_end().to_string());
        }
    }
}

/// One session: EHLO, then MAIL, RCPT, DATA in one write (PIPELINING), the mail, QUIT.
/// Returns the reply to the end of data.
fn session(addr: SocketAddr, i: usize, start: &Barrier) -> Result<String, String> {
    start.wait();
    let s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(40)))
        .and_then(|_| s.set_write_timeout(Some(Duration::from_secs(10))))
        .map_err(|e| e.to_string())?;
    let mut w = s.try_clone().map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s);
    let expect = |r: &mut BufReader<TcpStream>, code: &str| {
        let got = reply(r)?;
        if got.starts_with(code) {
            Ok(got)
        } else {
            Err(format!("session {i}: want {code}, got {got}"))
        }
    };
    let mut send = |bytes: &[u8]| w.write_all(bytes).map_err(|e| e.to_string());
    expect(&mut r, "220")?;
    send(format!("EHLO load{i}.example\r\n").as_bytes())?;
    expect(&mut r, "250")?;
    send(
        format!(
            "MAIL FROM:<load@mail.example.org>\r\nRCPT TO:<{}> NOTIFY=NEVER\r\nDATA\r\n",
            rcpt(i)
        )
        .as_bytes(),
    )?;
    expect(&mut r, "250")?;
    expect(&mut r, "250")?;
    expect(&mut r, "354")?;
    send(
        format!(
            "From: load@mail.example.org\r\nTo: {}\r\nSubject: load {i}\r\n\
             Message-ID: <load-{i}@mail.example.org>\r\n\r\nmail number {i}\r\n.\r\n",
            rcpt(i)
        )
        .as_bytes(),
    )?;
    let data = reply(&mut r)?;
    send(b"QUIT\r\n")?;
    let _ = reply(&mut r);
    Ok(data)
}

/// Runs the sessions in parallel; returns each session's reply to its data.
fn run_sessions(addr: SocketAddr) -> Vec<Result<String, String>> {
    let start = Arc::new(Barrier::new(SESSIONS));
    let threads: Vec<_> = (0..SESSIONS)
        .map(|i| {
            let start = start.clone();
            std::thread::spawn(move || session(addr, i, &start))
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().unwrap_or_else(|_| Err("thread panicked".into())))
        .collect()
}

fn assert_all_delivered(replies: &[Result<String, String>], iwf: &Iwf) {
    let bad: Vec<(usize, &Result<String, String>)> = replies
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.as_ref().is_ok_and(|r| r.starts_with("250 2.0.0")))
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {SESSIONS} sessions not delivered: {bad:?}\niwf:\n{}",
        bad.len(),
        iwf.proc.output()
    );
}

/// Every expected Request-URI exactly once.
fn assert_each_once(seen: &BTreeMap<String, usize>) {
    let want: BTreeMap<String, usize> = (0..SESSIONS).map(|i| (tel(i), 1)).collect();
    let lost: Vec<&String> = want.keys().filter(|k| !seen.contains_key(*k)).collect();
    let extra: Vec<(&String, &usize)> = seen
        .iter()
        .filter(|(k, n)| **n != 1 || !want.contains_key(*k))
        .collect();
    assert!(
        lost.is_empty() && extra.is_empty(),
        "lost: {lost:?}\nduplicated or unexpected: {extra:?}"
    );
}

#[test]
fn sixty_four_parallel_sessions_through_sipp_over_udp() {
    if !require(&["sipp"]) {
        return;
    }
    let sipp = Sipp::start("message_uas_200.xml", Transport::Udp, None, SESSIONS, &[]);
    let iwf = Iwf::start(IwfOptions {
        next_hop: Some(sipp.next_hop()),
        config: CONFIG,
        ..IwfOptions::default()
    });
    let replies = run_sessions(iwf.smtp);
    assert_all_delivered(&replies, &iwf);
    sipp.wait_requests(SESSIONS, Duration::from_secs(10));
    // anything late (a duplicate) shows up too
    std::thread::sleep(Duration::from_millis(300));
    let reqs = sipp.requests();
    // one entry per transaction: a UDP retransmission repeats the Via branch
    let mut by_branch: BTreeMap<String, String> = BTreeMap::new();
    for r in &reqs {
        by_branch.insert(r.h("Via").to_string(), r.request_uri.clone());
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for uri in by_branch.values() {
        *seen.entry(uri.clone()).or_default() += 1;
    }
    assert_each_once(&seen);
}

#[test]
fn sixty_four_parallel_sessions_through_the_in_process_answerer_over_tcp() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (answerer, mut received) = rt
        .block_on(iwf::sip::Answerer::start(iwf::sip::AnswererConfig {
            udp: None,
            ..iwf::sip::AnswererConfig::status(200)
        }))
        .expect("the answerer starts");
    let tcp = answerer.tcp_addr().expect("a TCP address");
    let iwf = Iwf::start(IwfOptions {
        next_hop: Some(format!("sip:{tcp};transport=tcp")),
        config: CONFIG,
        ..IwfOptions::default()
    });
    let replies = run_sessions(iwf.smtp);
    assert_all_delivered(&replies, &iwf);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    rt.block_on(async {
        // everything that arrived, plus anything late (a duplicate) within 300 ms
        while let Ok(Some(req)) =
            tokio::time::timeout(Duration::from_millis(300), received.recv()).await
        {
            assert_eq!(req.method, "MESSAGE");
            *seen.entry(req.request_uri).or_default() += 1;
        }
    });
    answerer.shutdown();
    assert_each_once(&seen);
}
