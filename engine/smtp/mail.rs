//! MAIL FROM: starts a transaction after checking its parameters.
//!
//! smtp-proto parses every parameter it knows, including extensions we do not offer
//! (REQUIRETLS, FUTURERELEASE, MT-PRIORITY, AUTH=, ...); those are refused here with
//! `555 5.5.4` (RFC 5321 §4.1.1.11), as is any parameter after plain HELO.

use std::borrow::Cow;

use smtp_proto::{
    MAIL_BODY_7BIT, MAIL_BODY_8BITMIME, MAIL_BODY_BINARYMIME, MAIL_BY_NOTIFY, MAIL_BY_RETURN,
    MAIL_CONPERM, MAIL_REQUIRETLS, MAIL_RET_FULL, MAIL_RET_HDRS, MAIL_SMTPUTF8,
};

use super::config::SmtpConfig;
use super::replies;
use super::session::{Flow, Session, State, Transaction};
use crate::smtp::envelope::{Envelope, MailFrom};
use crate::smtp::reply::Reply;

/// Largest BY= magnitude: by-time is 1 to 9 digits (RFC 2852 §4).
const MAX_BY_TIME: i64 = 999_999_999;

type ProtoMailFrom<'a> = smtp_proto::MailFrom<Cow<'a, str>>;

/// The parameters present on a MAIL command, by name.
fn present(from: &ProtoMailFrom<'_>) -> Vec<&'static str> {
    let f = from.flags;
    let mut p = Vec::new();
    let mut flag = |bits: u64, name: &'static str| {
        if f & bits != 0 {
            p.push(name);
        }
    };
    flag(MAIL_BODY_7BIT | MAIL_BODY_8BITMIME, "BODY");
    flag(MAIL_BODY_BINARYMIME, "BODY=BINARYMIME");
    flag(MAIL_SMTPUTF8, "SMTPUTF8");
    flag(MAIL_RET_FULL | MAIL_RET_HDRS, "RET");
    flag(MAIL_BY_NOTIFY | MAIL_BY_RETURN, "BY");
    flag(MAIL_REQUIRETLS, "REQUIRETLS");
    flag(MAIL_CONPERM, "CONPERM");
    let mut when = |cond: bool, name: &'static str| {
        if cond {
            p.push(name);
        }
    };
    when(from.size > 0, "SIZE");
    when(from.env_id.is_some(), "ENVID");
    when(from.trans_id.is_some(), "TRANSID");
    when(from.solicit.is_some(), "SOLICIT");
    when(from.mtrk.is_some(), "MTRK");
    when(from.auth.is_some(), "AUTH");
    when(from.hold_for != 0, "HOLDFOR");
    when(from.hold_until != 0, "HOLDUNTIL");
    when(from.mt_priority != 0, "MT-PRIORITY");
    p
}

/// Parameters of the extensions we advertise.
const SUPPORTED: &[&str] = &["BODY", "SMTPUTF8", "RET", "BY", "SIZE", "ENVID"];

/// Why a MAIL command's parameters are refused: what we offer or allow, and what came.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum MailParamError {
    /// A parameter of an extension we do not offer (or any, after plain HELO).
    #[error("parameter {0} is not offered")]
    Unsupported(&'static str),
    /// A non-ASCII address without the SMTPUTF8 parameter.
    #[error("a non-ASCII address without SMTPUTF8")]
    NonAsciiAddress,
    /// SIZE= over the message size limit.
    #[error("SIZE={declared} is over the limit of {limit} octets")]
    TooBig { declared: usize, limit: usize },
    /// BY= outside 1 to 9 digits (RFC 2852 §4).
    #[error("BY={by} has more than 9 digits")]
    ByOutOfRange { by: i64 },
    /// BY= not positive in R mode.
    #[error("BY={by} is not positive in R mode")]
    ByNotPositive { by: i64 },
    /// BY= in R mode below our DELIVERBY minimum.
    #[error("BY={by} is below the minimum of {min} seconds")]
    ByBelowMinimum { by: i64, min: u32 },
}

impl MailParamError {
    /// The reply it is answered with.
    pub(crate) fn reply(&self) -> Reply {
        match self {
            MailParamError::Unsupported(name) => replies::unsupported_parameter(name),
            MailParamError::NonAsciiAddress => replies::non_ascii_address(),
            MailParamError::TooBig { limit, .. } => replies::message_too_big(*limit),
            MailParamError::ByOutOfRange { .. } => replies::by_time_out_of_range(),
            MailParamError::ByNotPositive { .. } => replies::by_time_not_positive(),
            MailParamError::ByBelowMinimum { min, .. } => replies::by_time_below_minimum(*min),
        }
    }
}

/// Checks a MAIL command's parameters against what we offer and our limits.
pub(crate) fn check(
    from: &ProtoMailFrom<'_>,
    esmtp: bool,
    config: &SmtpConfig,
) -> Result<(), MailParamError> {
    for name in present(from) {
        if !esmtp || !SUPPORTED.contains(&name) {
            return Err(MailParamError::Unsupported(name));
        }
    }
    if !from.address.is_ascii() && from.flags & MAIL_SMTPUTF8 == 0 {
        return Err(MailParamError::NonAsciiAddress);
    }
    let limit = config.limits.message_size;
    if from.size > limit {
        return Err(MailParamError::TooBig {
            declared: from.size,
            limit,
        });
    }
    let by = from.by;
    if from.flags & (MAIL_BY_NOTIFY | MAIL_BY_RETURN) != 0 {
        if !(-MAX_BY_TIME..=MAX_BY_TIME).contains(&by) {
            return Err(MailParamError::ByOutOfRange { by });
        }
        if from.flags & MAIL_BY_RETURN != 0 {
            if by <= 0 {
                return Err(MailParamError::ByNotPositive { by });
            }
            if let Some(min) = config.deliver_by_min
                && by < i64::from(min)
            {
                return Err(MailParamError::ByBelowMinimum { by, min });
            }
        }
    }
    Ok(())
}

impl Session {
    pub(super) fn mail(&mut self, from: ProtoMailFrom<'_>, line: &[u8]) -> Flow {
        match &self.state {
            State::Fresh => return self.reply(replies::need_hello(self.shared.protocol)),
            State::Mail(_) | State::Data(..) | State::Complete(..) => {
                return self.reply(replies::nested_mail());
            }
            State::Ready => {}
        }
        if self.config().require_tls && !self.tls {
            return self.reply(replies::must_start_tls());
        }
        let esmtp = self.hello.as_ref().is_some_and(|h| h.esmtp);
        // The raw values first: smtp-proto's numbers saturate (see `params`).
        if let Err(reply) = super::params::check_mail(line, self.config().limits.message_size) {
            return self.reply(reply);
        }
        if let Err(e) = check(&from, esmtp, self.config()) {
            return self.reply(e.reply());
        }
        let tx = Transaction {
            envelope: Envelope {
                mail_from: MailFrom::from_proto(&from),
                rcpts: Vec::new(),
                client: self.client(),
                received_at: self.shared.clock.now(),
            },
            id: self.new_id(),
        };
        tracing::debug!(id = %tx.id, peer = %self.peer, from = %tx.envelope.mail_from.address, "MAIL");
        self.state = State::Mail(tx);
        self.reply(replies::sender_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_line(args: &str, esmtp: bool, min: Option<u32>) -> Result<(), MailParamError> {
        let line = format!("MAIL FROM:{args}\r\n");
        let mut iter = line.as_bytes().iter();
        let Ok(smtp_proto::Request::Mail { from }) = smtp_proto::Request::parse(&mut iter) else {
            panic!("{args} does not parse");
        };
        let config = SmtpConfig {
            deliver_by_min: min,
            ..SmtpConfig::default()
        };
        check(&from, esmtp, &config)
    }

    #[test]
    fn parameter_table() {
        type Case = (&'static str, bool, Option<u32>, Result<(), &'static str>);
        let cases: &[Case] = &[
            ("<a@b.example>", false, None, Ok(())),
            ("<>", true, None, Ok(())),
            (
                "<a@b.example> SIZE=1000 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=x",
                true,
                None,
                Ok(()),
            ),
            ("<a@b.example> BODY=7BIT", true, None, Ok(())),
            (
                "<a@b.example> SIZE=1000",
                false,
                None,
                Err("555 5.5.4 Parameter SIZE"),
            ),
            (
                "<a@b.example> BODY=BINARYMIME",
                true,
                None,
                Err("555 5.5.4 Parameter BODY=BINARYMIME"),
            ),
            (
                "<a@b.example> REQUIRETLS",
                true,
                None,
                Err("555 5.5.4 Parameter REQUIRETLS"),
            ),
            (
                "<a@b.example> HOLDFOR=10",
                true,
                None,
                Err("555 5.5.4 Parameter HOLDFOR"),
            ),
            (
                "<a@b.example> MT-PRIORITY=3",
                true,
                None,
                Err("555 5.5.4 Parameter MT-PRIORITY"),
            ),
            ("<a@b.example> AUTH=<>", true, None, Err("555 5.5.4")),
            ("<a@b.example> SIZE=10485760", true, None, Ok(())),
            ("<a@b.example> SIZE=10485761", true, None, Err("552 5.3.4")),
            ("<j\u{f6}s\u{e9}@b.example>", true, None, Err("553 5.6.7")),
            ("<j\u{f6}s\u{e9}@b.example> SMTPUTF8", true, None, Ok(())),
            ("<a@b.example> BY=3600;R", true, None, Ok(())),
            ("<a@b.example> BY=3600;RT", true, Some(60), Ok(())),
            (
                "<a@b.example> BY=0;R",
                true,
                None,
                Err("501 5.5.4 BY time must be positive"),
            ),
            (
                "<a@b.example> BY=-10;R",
                true,
                None,
                Err("501 5.5.4 BY time must be positive"),
            ),
            ("<a@b.example> BY=0;N", true, None, Ok(())),
            ("<a@b.example> BY=-10;NT", true, Some(60), Ok(())),
            (
                "<a@b.example> BY=30;R",
                true,
                Some(60),
                Err("555 5.5.4 BY time below the minimum of 60"),
            ),
            ("<a@b.example> BY=60;R", true, Some(60), Ok(())),
            (
                "<a@b.example> BY=1000000000;N",
                true,
                None,
                Err("501 5.5.4 BY time must have"),
            ),
        ];
        for (args, esmtp, min, want) in cases {
            let got = check_line(args, *esmtp, *min);
            match (want, &got) {
                (Ok(()), Ok(())) => {}
                (Err(prefix), Err(e)) if e.reply().to_string().starts_with(prefix) => {}
                _ => panic!("{args}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn errors_say_what_was_expected_and_what_came() {
        assert_eq!(
            check_line("<a@b.example> SIZE=10485761", true, None),
            Err(MailParamError::TooBig {
                declared: 10_485_761,
                limit: 10_485_760
            })
        );
        assert_eq!(
            check_line("<a@b.example> BY=30;R", true, Some(60)),
            Err(MailParamError::ByBelowMinimum { by: 30, min: 60 })
        );
        assert_eq!(
            check_line("<a@b.example> SIZE=1", false, None)
                .unwrap_err()
                .to_string(),
            "parameter SIZE is not offered"
        );
    }
}
