//! RCPT TO: checks, then the handler (the rules) decides.

use std::borrow::Cow;

use smtp_proto::{
    RCPT_CONNEG, RCPT_NOTIFY_DELAY, RCPT_NOTIFY_FAILURE, RCPT_NOTIFY_NEVER, RCPT_NOTIFY_SUCCESS,
    RCPT_RRVS_CONTINUE, RCPT_RRVS_REJECT,
};

use super::replies;
use super::session::{Flow, Session, State};
use crate::smtp::envelope::Rcpt;
use crate::smtp::reply::Reply;

type ProtoRcptTo<'a> = smtp_proto::RcptTo<Cow<'a, str>>;

const NOTIFY: u64 =
    RCPT_NOTIFY_SUCCESS | RCPT_NOTIFY_FAILURE | RCPT_NOTIFY_DELAY | RCPT_NOTIFY_NEVER;

/// Why a RCPT command's parameters are refused: what we offer or allow, and what came.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RcptParamError {
    /// A parameter of an extension we do not offer (or NOTIFY/ORCPT after plain HELO).
    #[error("parameter {0} is not offered")]
    Unsupported(&'static str),
    /// NOTIFY=NEVER together with SUCCESS, FAILURE or DELAY (RFC 3461 §4.1).
    #[error("NOTIFY=NEVER combined with other NOTIFY values")]
    NotifyNeverWithOthers,
    /// A non-ASCII address in a transaction without SMTPUTF8.
    #[error("a non-ASCII address without SMTPUTF8")]
    NonAsciiAddress,
}

impl RcptParamError {
    /// The reply it is answered with.
    pub(crate) fn reply(&self) -> Reply {
        match self {
            RcptParamError::Unsupported(name) => replies::unsupported_parameter(name),
            RcptParamError::NotifyNeverWithOthers => replies::invalid_parameter("NOTIFY"),
            RcptParamError::NonAsciiAddress => replies::non_ascii_address(),
        }
    }
}

/// Checks a RCPT command's parameters: only DSN's NOTIFY and ORCPT, and only after EHLO/LHLO.
pub(crate) fn check(
    to: &ProtoRcptTo<'_>,
    esmtp: bool,
    smtputf8: bool,
) -> Result<(), RcptParamError> {
    if to.flags & (RCPT_RRVS_REJECT | RCPT_RRVS_CONTINUE) != 0 {
        return Err(RcptParamError::Unsupported("RRVS"));
    }
    if to.flags & RCPT_CONNEG != 0 {
        return Err(RcptParamError::Unsupported("CONNEG"));
    }
    if !esmtp && to.flags & NOTIFY != 0 {
        return Err(RcptParamError::Unsupported("NOTIFY"));
    }
    // RFC 3461 §4.1: NOTIFY is NEVER or a list of SUCCESS, FAILURE, DELAY, never both.
    if to.flags & RCPT_NOTIFY_NEVER != 0 && to.flags & (NOTIFY & !RCPT_NOTIFY_NEVER) != 0 {
        return Err(RcptParamError::NotifyNeverWithOthers);
    }
    if !esmtp && to.orcpt.is_some() {
        return Err(RcptParamError::Unsupported("ORCPT"));
    }
    if !to.address.is_ascii() && !smtputf8 {
        return Err(RcptParamError::NonAsciiAddress);
    }
    Ok(())
}

impl Session {
    pub(super) async fn rcpt(&mut self, to: ProtoRcptTo<'_>, line: &[u8]) -> Flow {
        let limit = self.config().limits.recipients;
        let esmtp = self.hello.as_ref().is_some_and(|h| h.esmtp);
        let (smtputf8, count) = match &self.state {
            State::Fresh => return self.reply(replies::need_hello(self.shared.protocol)),
            State::Ready => return self.reply(replies::need_mail("RCPT")),
            State::Data(..) | State::Complete(..) => {
                unreachable!("no commands are read during DATA")
            }
            State::Mail(tx) => (tx.envelope.mail_from.smtputf8, tx.envelope.rcpts.len()),
        };
        if let Err(reply) = super::params::check_rcpt(line) {
            return self.reply(reply);
        }
        if let Err(e) = check(&to, esmtp, smtputf8) {
            return self.reply(e.reply());
        }
        let mut rcpt = Rcpt::from_proto(&to);
        if rcpt.address.is_empty() {
            if !crate::smtp::envelope::names_postmaster(line) {
                return self.reply(replies::bad_recipient_syntax());
            }
            rcpt.address = "postmaster".to_string();
        }
        if count >= limit {
            return self.reply(replies::too_many_recipients());
        }
        let handler = self.shared.handler.clone();
        let State::Mail(tx) = &self.state else {
            unreachable!("matched above")
        };
        let decision = handler.rcpt(&tx.envelope, &rcpt).await;
        tracing::debug!(id = %tx.id, rcpt = %rcpt.address, accepted = decision.is_ok(), "RCPT");
        match decision {
            Ok(()) => {
                if let State::Mail(tx) = &mut self.state {
                    tx.envelope.rcpts.push(rcpt);
                }
                self.reply(replies::recipient_ok())
            }
            Err(reply) => self.reply(reply),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_line(args: &str, esmtp: bool, utf8: bool) -> Result<(), RcptParamError> {
        let line = format!("RCPT TO:{args}\r\n");
        let mut iter = line.as_bytes().iter();
        let Ok(smtp_proto::Request::Rcpt { to }) = smtp_proto::Request::parse(&mut iter) else {
            panic!("{args} does not parse");
        };
        check(&to, esmtp, utf8)
    }

    #[test]
    fn parameter_table() {
        let cases: &[(&str, bool, bool, Result<(), &str>)] = &[
            ("<a@b.example>", false, false, Ok(())),
            (
                "<a@b.example> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;x@y.example",
                true,
                false,
                Ok(()),
            ),
            (
                "<a@b.example> NOTIFY=NEVER",
                false,
                false,
                Err("555 5.5.4 Parameter NOTIFY"),
            ),
            (
                "<a@b.example> NOTIFY=NEVER,SUCCESS",
                true,
                false,
                Err("501 5.5.4 Invalid NOTIFY parameter"),
            ),
            (
                "<a@b.example> ORCPT=rfc822;x@y.example",
                false,
                false,
                Err("555 5.5.4 Parameter ORCPT"),
            ),
            (
                "<a@b.example> CONNEG",
                true,
                false,
                Err("555 5.5.4 Parameter CONNEG"),
            ),
            ("<\u{e9}@b.example>", true, false, Err("553 5.6.7")),
            ("<\u{e9}@b.example>", true, true, Ok(())),
        ];
        for (args, esmtp, utf8, want) in cases {
            let got = check_line(args, *esmtp, *utf8);
            match (want, &got) {
                (Ok(()), Ok(())) => {}
                (Err(prefix), Err(e)) if e.reply().to_string().starts_with(prefix) => {}
                _ => panic!("{args}: want {want:?}, got {got:?}"),
            }
        }
        assert_eq!(
            check_line("<a@b.example> NOTIFY=NEVER,SUCCESS", true, false),
            Err(RcptParamError::NotifyNeverWithOthers)
        );
    }

    #[test]
    fn postmaster_is_told_apart_from_null() {
        assert!(crate::smtp::envelope::names_postmaster(
            b"RCPT TO:<Postmaster>\r\n"
        ));
        assert!(!crate::smtp::envelope::names_postmaster(b"RCPT TO:<>\r\n"));
    }
}
