//! Property tests: the DSL front end never panics, and nothing from a mail can put CR or LF
//! into a header line of a request.

use std::path::Path;

use iwf::dsl::parser::{parse_expression, parse_template};
use iwf::ids::{SequentialIds, fixed_now};
use iwf::mail_to_cpm::dryrun::{self, Options};
use iwf::smtp::envelope::{Client, Rcpt};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parser_never_panics(src in "\\PC{0,80}") {
        let _ = parse_expression(&src);
        let _ = parse_template(&src);
    }

    #[test]
    fn parser_never_panics_on_dsl_like_input(src in "[a-z._()\\[\\]{}\"/~?!=<>+*%$ 0-9,:-]{0,60}") {
        let _ = parse_expression(&src);
        let _ = parse_template(&src);
    }

    #[test]
    fn compiler_never_panics(src in "[a-z._()\\[\\]{}\"/~?!=<>+*%$ 0-9,:-]{0,60}") {
        if let Ok(e) = parse_expression(&src) {
            struct Empty;
            impl iwf::dsl::Scope for Empty {
                fn field(&self, n: &str) -> Option<(u16, iwf::dsl::Ty)> { (n == "x").then_some((0, iwf::dsl::Ty::Str)) }
                fn field_fn(&self, _: &str) -> Option<(u16, iwf::dsl::Ty, bool)> { None }
                fn constant(&self, _: &str) -> Option<iwf::dsl::Value> { None }
                fn table(&self, _: &str) -> Option<std::sync::Arc<std::collections::BTreeMap<String, iwf::dsl::Value>>> { None }
                fn captures(&self) -> bool { true }
                fn names(&self) -> Vec<String> { vec!["x".into()] }
            }
            if let Ok((code, _)) = iwf::dsl::compile::compile(&e, &Empty) {
                struct In;
                impl iwf::dsl::Input for In {
                    fn field(&self, _: u16) -> iwf::dsl::Value { iwf::dsl::Value::str("v") }
                    fn field_fn(&self, _: u16, _: &str) -> iwf::dsl::Value { iwf::dsl::Value::Null }
                }
                let _ = iwf::dsl::eval::eval(&code, &In, &mut iwf::dsl::Frame::new(10_000));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Header values with CR, LF, NUL and encoded words that decode to CR/LF never reach a
    /// SIP header line: the mail is either mapped with clean headers or refused.
    #[test]
    fn no_header_injection(subject in "[a-zA-Z \r\n\t\u{0}:]{0,40}", name in "[a-zA-Z \r\n\"]{0,20}") {
        let rules = iwf::ruleset::load(Path::new("rules"), 1).unwrap();
        let encoded = "=?utf-8?q?a=0D=0AVia:_evil?=";
        let raw = format!(
            "From: \"{name}\" <a@mail.example.org>\r\nTo: +15551234567@cpm.example.net\r\nSubject: {subject} {encoded}\r\nX-Priority: 1{subject}\r\n\r\nbody\r\n"
        );
        let ids = SequentialIds::new();
        let run = dryrun::run(&rules, raw.as_bytes(), &Options {
            mail_from: None,
            rcpts: vec![Rcpt::parse("<+15551234567@cpm.example.net>").unwrap()],
            client: Client::default(),
            now: fixed_now(),
            elapsed: 0,
            ids: &ids,
            explain: false,
            chunk_size: 2048,
        });
        for d in &run.deliveries {
            let head = d.request.split("\r\n\r\n").next().unwrap();
            for line in head.split("\r\n") {
                prop_assert!(!line.contains('\n') && !line.contains('\r'));
                prop_assert!(!line.starts_with("Via: evil"));
            }
            let cpim_head = String::from_utf8_lossy(&d.delivery.content.body.to_vec()).into_owned();
            prop_assert!(!cpim_head.contains("\r\nVia: evil"));
        }
    }
}
