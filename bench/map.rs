//! `cargo bench --bench map`: the time to parse a typical 1 KB mail with mail-parser, beside
//! the time to evaluate the shipped rules and render the SIP request for it (issue #2's
//! goal: evaluation + rendering no slower than the parse itself).

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use iwf::ids::{SequentialIds, fixed_now};
use iwf::mail_to_cpm::mail::Mail;
use iwf::mail_to_cpm::phases;
use iwf::render::sip;
use iwf::smtp::envelope::{Client, Envelope, MailFrom, Rcpt};

fn mail_1k() -> Vec<u8> {
    let mut m = String::from(
        "Received: from mx.mail.example.org (mx.mail.example.org [192.0.2.1]) by iwf.example.net with ESMTP id 1; Fri, 21 Nov 2025 09:03:08 -0500\r\n\
         From: \"Alice Example\" <alice@mail.example.org>\r\n\
         To: +15551234567@cpm.example.net\r\n\
         Subject: =?utf-8?q?Lunch_=C3=A0_midi=3F?=\r\n\
         Date: Fri, 21 Nov 2025 09:03:07 -0500\r\n\
         Message-ID: <k3q9w7z2m4x8r6t1@mail.example.org>\r\n\
         X-Priority: 1 (Highest)\r\n\
         Disposition-Notification-To: alice@mail.example.org\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: quoted-printable\r\n\r\n",
    );
    while m.len() < 1000 {
        m.push_str("Meet at 12:30 at the usual place? Caf=C3=A9 first, then the park.\r\n");
    }
    m.into_bytes()
}

fn bench(c: &mut Criterion) {
    let rules = iwf::ruleset::load(Path::new("rules"), 1).expect("shipped rules load");
    // Held shared, as `iwf serve` holds the received mail.
    let raw = bytes::Bytes::from(mail_1k());
    let rcpt = Rcpt::parse("<+15551234567@cpm.example.net> NOTIFY=SUCCESS,FAILURE").unwrap();
    let envelope = Envelope {
        mail_from: MailFrom::parse("<alice@mail.example.org> BY=3600;R").unwrap(),
        rcpts: vec![rcpt.clone()],
        client: Client::default(),
        received_at: fixed_now(),
    };
    let accepted = phases::RcptDecision::Accept {
        uri: "tel:+15551234567".to_string(),
    };
    let ids = SequentialIds::new();
    let stamp = iwf::mail_to_cpm::dryrun::stamp(&ids, &rules);
    let ctx = iwf::mail_to_cpm::plan::PlanContext {
        now: fixed_now(),
        ids: &ids,
        peers: &iwf::mail_to_cpm::peer_memory::Unknown,
        explain: false,
    };

    // The plan step `iwf serve` runs at the end of DATA, for a recipient the RCPT step
    // accepted, and the request it sends.
    let parse = || Mail::parse(black_box(&raw)).unwrap();
    let full = || {
        let plan = iwf::mail_to_cpm::plan::plan_decided(
            &rules,
            &envelope,
            Mail::parse_shared(black_box(&raw)),
            vec![Some(accepted.clone())],
            &ctx,
        );
        let req = sip::render_message(&plan.deliveries[0], &stamp).unwrap();
        req.to_bytes()
    };
    // `MAP_COUNT=parse:N` / `MAP_COUNT=full:N`: run that case N times and exit, for an
    // instruction count (bench/map_icount.sh: instructions per mail do not move with the
    // machine's load the way time does).
    if let Ok(spec) = std::env::var("MAP_COUNT") {
        let (case, n) = spec.split_once(':').expect("MAP_COUNT=parse:N or full:N");
        let n: u64 = n.parse().expect("a count");
        for _ in 0..n {
            if case == "parse" {
                black_box(parse());
            } else {
                black_box(full());
            }
        }
        std::process::exit(0);
    }

    let mut g = c.benchmark_group("1KB mail");
    g.bench_function("parse (mail-parser)", |b| b.iter(|| black_box(parse())));
    g.bench_function("parse + rules + render", |b| b.iter(|| black_box(full())));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
