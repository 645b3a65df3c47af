//! Every reply the SMTP/LMTP layer writes itself, in one place (STYLE habit 4).
//!
//! Replies that come from the rules (RCPT refusals, the end-of-DATA outcome) are the
//! handler's; everything about protocol, sequencing and limits is here. Enhanced status codes
//! follow RFC 3463 / RFC 5248; the greeting, the EHLO/LHLO/HELO reply and 354 carry none
//! (RFC 2034 §3).

use crate::smtp::reply::Reply;

use super::Protocol;

fn r(code: u16, status: &str, text: impl Into<String>) -> Reply {
    Reply::new(code, status, text)
}

// ---- 2xx / 3xx -------------------------------------------------------------------------

pub(crate) fn greeting(host: &str, protocol: Protocol) -> Reply {
    let proto = match protocol {
        Protocol::Smtp => "ESMTP",
        Protocol::Lmtp => "LMTP",
    };
    r(220, "", format!("{host} {proto} iwf ready"))
}

/// The EHLO / LHLO reply: our name, then one extension keyword per line.
pub(crate) fn ehlo(host: &str, keywords: &[String]) -> Reply {
    let mut text = host.to_string();
    for k in keywords {
        text.push('\n');
        text.push_str(k);
    }
    r(250, "", text)
}

pub(crate) fn helo(host: &str) -> Reply {
    r(250, "", host.to_string())
}

pub(crate) fn ok() -> Reply {
    r(250, "2.0.0", "OK")
}

pub(crate) fn reset() -> Reply {
    r(250, "2.0.0", "Reset OK")
}

pub(crate) fn sender_ok() -> Reply {
    r(250, "2.1.0", "Sender OK")
}

pub(crate) fn recipient_ok() -> Reply {
    r(250, "2.1.5", "Recipient OK")
}

pub(crate) fn help() -> Reply {
    r(
        214,
        "2.0.0",
        "Commands: EHLO HELO LHLO MAIL RCPT DATA RSET NOOP QUIT HELP STARTTLS",
    )
}

pub(crate) fn vrfy_cannot_verify() -> Reply {
    r(
        252,
        "2.5.0",
        "Cannot VRFY user, but will accept message and attempt delivery",
    )
}

pub(crate) fn closing(host: &str) -> Reply {
    r(221, "2.0.0", format!("{host} closing connection"))
}

pub(crate) fn start_tls() -> Reply {
    r(220, "2.0.0", "Ready to start TLS")
}

pub(crate) fn start_data() -> Reply {
    r(354, "", "Start mail input; end with <CRLF>.<CRLF>")
}

// ---- 421: closing the session ----------------------------------------------------------

pub(crate) fn shutting_down(host: &str) -> Reply {
    r(
        421,
        "4.3.2",
        format!("{host} Service shutting down, closing connection"),
    )
}

pub(crate) fn too_many_connections(host: &str) -> Reply {
    r(
        421,
        "4.3.2",
        format!("{host} Too many connections, try again later"),
    )
}

pub(crate) fn too_many_connections_from_ip(host: &str) -> Reply {
    r(
        421,
        "4.7.0",
        format!("{host} Too many connections from your address, try again later"),
    )
}

pub(crate) fn timeout(host: &str) -> Reply {
    r(421, "4.4.2", format!("{host} Timeout, closing connection"))
}

pub(crate) fn too_many_errors(host: &str) -> Reply {
    r(
        421,
        "4.7.0",
        format!("{host} Too many errors, closing connection"),
    )
}

// ---- transaction limits and content ----------------------------------------------------

pub(crate) fn too_many_recipients() -> Reply {
    r(452, "4.5.3", "Too many recipients")
}

pub(crate) fn message_too_big(limit: usize) -> Reply {
    r(
        552,
        "5.3.4",
        format!("Message size exceeds fixed maximum message size of {limit} octets"),
    )
}

pub(crate) fn text_line_too_long(limit: usize) -> Reply {
    r(
        554,
        "5.6.0",
        format!("Message contains a line longer than {limit} octets (RFC 5321 4.5.3.1.6)"),
    )
}

pub(crate) fn bare_line_end_in_data() -> Reply {
    r(
        554,
        "5.6.0",
        "Message contains a bare CR or LF; lines must end with CRLF (RFC 5321 2.3.8)",
    )
}

/// DATA after MAIL but no accepted RCPT: 554 over SMTP (RFC 5321 §3.3); LMTP requires 503
/// (RFC 2033 §4.2).
pub(crate) fn no_valid_recipients(protocol: Protocol) -> Reply {
    match protocol {
        Protocol::Smtp => r(554, "5.5.1", "No valid recipients"),
        Protocol::Lmtp => r(503, "5.5.1", "No valid recipients"),
    }
}

pub(crate) fn non_ascii_address() -> Reply {
    r(
        553,
        "5.6.7",
        "Non-ASCII addresses not permitted without SMTPUTF8",
    )
}

pub(crate) fn must_start_tls() -> Reply {
    r(530, "5.7.0", "Must issue a STARTTLS command first")
}

// ---- sequencing: 503 ---------------------------------------------------------------------

pub(crate) fn need_hello(protocol: Protocol) -> Reply {
    match protocol {
        Protocol::Smtp => r(503, "5.5.1", "Send EHLO or HELO first"),
        Protocol::Lmtp => r(503, "5.5.1", "Send LHLO first"),
    }
}

pub(crate) fn nested_mail() -> Reply {
    r(503, "5.5.1", "Sender already specified")
}

pub(crate) fn need_mail(verb: &str) -> Reply {
    r(503, "5.5.1", format!("Need MAIL before {verb}"))
}

pub(crate) fn tls_in_transaction() -> Reply {
    r(
        503,
        "5.5.1",
        "STARTTLS not allowed during a mail transaction",
    )
}

pub(crate) fn tls_already_active() -> Reply {
    r(503, "5.5.1", "TLS already active")
}

// ---- syntax: 500 / 501 / 502 / 555 -------------------------------------------------------

pub(crate) fn unknown_command() -> Reply {
    r(500, "5.5.1", "Command unrecognized")
}

pub(crate) fn wrong_hello(protocol: Protocol) -> Reply {
    match protocol {
        Protocol::Smtp => r(500, "5.5.1", "This is an SMTP server: use EHLO or HELO"),
        Protocol::Lmtp => r(500, "5.5.1", "This is an LMTP server: use LHLO"),
    }
}

pub(crate) fn bare_line_end_in_command() -> Reply {
    r(
        500,
        "5.5.2",
        "Command lines must end with CRLF; bare CR or LF refused",
    )
}

pub(crate) fn command_not_utf8() -> Reply {
    r(500, "5.5.2", "Command is not valid UTF-8")
}

pub(crate) fn command_line_too_long() -> Reply {
    r(500, "5.5.6", "Line too long")
}

pub(crate) fn syntax(usage: &str) -> Reply {
    r(501, "5.5.2", format!("Syntax: {usage}"))
}

pub(crate) fn no_arguments(verb: &str) -> Reply {
    r(501, "5.5.4", format!("{verb} takes no arguments"))
}

pub(crate) fn invalid_parameter(param: &str) -> Reply {
    r(501, "5.5.4", format!("Invalid {param} parameter"))
}

pub(crate) fn by_time_not_positive() -> Reply {
    r(
        501,
        "5.5.4",
        "BY time must be positive in R mode (RFC 2852 4)",
    )
}

pub(crate) fn by_time_out_of_range() -> Reply {
    r(
        501,
        "5.5.4",
        "BY time must have 1 to 9 digits, then ;N or ;R (RFC 2852 4)",
    )
}

pub(crate) fn duplicate_parameter() -> Reply {
    r(501, "5.5.4", "A parameter may be given only once")
}

/// BDAT without CHUNKING on offer (RFC 3030): the chunk was read and thrown away, so the
/// session stays in step.
pub(crate) fn bdat_not_offered() -> Reply {
    r(
        502,
        "5.5.1",
        "BDAT not implemented (CHUNKING is not offered); chunk discarded",
    )
}

/// BDAT whose chunk size we cannot or will not read past: its octets could otherwise be
/// taken for commands.
pub(crate) fn bdat_unframeable(host: &str) -> Reply {
    r(
        421,
        "4.7.0",
        format!("{host} BDAT not implemented and its chunk size is unusable; closing"),
    )
}

pub(crate) fn by_time_below_minimum(min: u32) -> Reply {
    r(
        555,
        "5.5.4",
        format!("BY time below the minimum of {min} seconds (RFC 2852 3)"),
    )
}

pub(crate) fn bad_sender_syntax() -> Reply {
    r(501, "5.1.7", "Bad sender address syntax")
}

pub(crate) fn bad_recipient_syntax() -> Reply {
    r(501, "5.1.3", "Bad recipient address syntax")
}

pub(crate) fn not_implemented(verb: &str) -> Reply {
    r(502, "5.5.1", format!("{verb} not implemented"))
}

pub(crate) fn unsupported_parameter(param: &str) -> Reply {
    r(
        555,
        "5.5.4",
        format!("Parameter {param} not recognized or not implemented"),
    )
}

/// Whether a reply we sent counts as a protocol error for [`Limits::bad_commands`](super::Limits).
pub(crate) fn is_protocol_error(reply: &Reply) -> bool {
    reply.is_permanent()
        && reply
            .status
            .as_deref()
            .is_some_and(|s| s.starts_with("5.5."))
}

// ---- the mail's outcome (engine/mail_to_cpm, the report loop) ---------------------------
//
// The replies iwf writes itself about a mail, not about the protocol: what the rules did not
// decide, what the mechanism could not do. Replies the rules decide are in `rules/`.

/// The mail cannot be parsed as RFC 5322 / MIME.
pub(crate) fn unparsable_message(e: &dyn std::fmt::Display) -> Reply {
    r(554, "5.6.0", format!("message cannot be parsed: {e}"))
}

/// A value of the mail cannot go where a rule puts it (a control character in a header).
pub(crate) fn content_refused(why: &str) -> Reply {
    r(
        554,
        "5.6.0",
        format!("the message cannot be converted: {why}"),
    )
}

/// The request the rules described for `rcpt` cannot be assembled.
pub(crate) fn unconvertible(rcpt: &str, e: &dyn std::fmt::Display) -> Reply {
    r(
        554,
        "5.6.0",
        format!("<{rcpt}>: the message cannot be converted: {e}"),
    )
}

/// The request for `rcpt` cannot be rendered (dry run).
pub(crate) fn unrenderable(rcpt: &str, e: &dyn std::fmt::Display) -> Reply {
    r(
        554,
        "5.6.0",
        format!("<{rcpt}>: cannot render the request: {e}"),
    )
}

/// A rule failed at run time (evaluation error, step limit): local and temporary.
pub(crate) fn rule_error(rule: &str) -> Reply {
    r(451, "4.3.0", format!("local error in rule {rule}"))
}

/// No address or recipient rule took `rcpt`.
pub(crate) fn no_rule_accepted(rcpt: &str) -> Reply {
    r(
        550,
        "5.1.1",
        format!("<{rcpt}>: no rule accepted this recipient"),
    )
}

/// No response rule mapped the CPM outcome for `rcpt` (fail safe: the sender retries).
pub(crate) fn no_response_rule(rcpt: &str) -> Reply {
    r(
        451,
        "4.3.0",
        format!("<{rcpt}>: no response rule matched the outcome"),
    )
}

/// No transaction rule decided and no recipient is left.
pub(crate) fn no_recipient_left() -> Reply {
    r(554, "5.5.1", "no valid recipients")
}

/// A recipient no step of the pipeline answered (fail safe).
pub(crate) fn not_processed() -> Reply {
    r(451, "4.3.0", "recipient not processed")
}

/// An earlier attempt of this transaction delivered `rcpt` already (the store says so).
pub(crate) fn already_delivered(rcpt: &str) -> Reply {
    r(250, "2.0.0", format!("<{rcpt}>: already delivered to CPM"))
}

/// The store cannot say who has the mail already: nothing is delivered now.
pub(crate) fn delivery_state_unavailable() -> Reply {
    r(451, "4.3.0", "delivery state unavailable; try again later")
}

/// Delivered, but the record that keeps a retry from delivering twice was not written.
pub(crate) fn delivery_state_not_recorded() -> Reply {
    r(
        451,
        "4.3.0",
        "delivery state could not be recorded; try again later",
    )
}

/// The DSN a positive reply promises could not be handed to the smarthost.
pub(crate) fn dsn_not_handed_off() -> Reply {
    r(
        451,
        "4.3.0",
        "delivery report could not be handed off; delivered recipients will not receive it twice",
    )
}

/// `rcpt` is a report address, but this instance keeps no report records.
pub(crate) fn reports_not_taken(rcpt: &str) -> Reply {
    r(
        550,
        "5.1.1",
        format!("<{rcpt}>: reports are not taken here"),
    )
}

/// A report arrived while the report loop is not running.
pub(crate) fn reports_not_taken_now() -> Reply {
    r(451, "4.3.0", "reports are not taken now")
}

/// A `mailbox` recipient relayed as mail: each relayed recipient's reply.
pub(crate) fn relayed(rcpt: &str) -> Reply {
    r(
        250,
        "2.0.0",
        format!("<{rcpt}>: relayed as mail through the smarthost"),
    )
}

pub(crate) fn relay_without_smarthost(rcpt: &str) -> Reply {
    r(
        451,
        "4.3.5",
        format!("<{rcpt}>: no smarthost configured to relay this recipient"),
    )
}

pub(crate) fn relay_refused(rcpt: &str, e: &dyn std::fmt::Display) -> Reply {
    r(
        550,
        "5.0.0",
        format!("<{rcpt}>: relay refused by the smarthost ({e})"),
    )
}

pub(crate) fn relay_failed(rcpt: &str, e: &dyn std::fmt::Display) -> Reply {
    r(
        451,
        "4.4.0",
        format!("<{rcpt}>: relay through the smarthost failed ({e})"),
    )
}

// ---- a DSN/MDN mail for the report address (engine/reports/from_mail.rs) ----------------

/// The reply to a report mail for the report address `rcpt`: 451 only where a retry can
/// help; everything else is 250 (a report is never bounced).
pub(crate) fn report_verdict(v: &crate::reports::from_mail::Verdict, rcpt: &str) -> Reply {
    use crate::reports::from_mail::Verdict;
    let ok = |text: &str| r(250, "2.0.0", format!("<{rcpt}>: {text}"));
    match v {
        Verdict::Uncorrelated => ok("report accepted; no message of ours to report on (dropped)"),
        Verdict::DamagedRecord => ok("report accepted; its record is damaged (dropped)"),
        Verdict::StoreUnavailable(e) => r(
            451,
            "4.3.0",
            format!("report state unavailable ({e}); try again later"),
        ),
        Verdict::NotAsked => ok(
            "report accepted; it owes no IMDN (not asked for, or not a notification the rules map)",
        ),
        Verdict::NotAReport(why) => ok(&format!(
            "accepted and dropped: not a delivery or disposition report ({why})"
        )),
        Verdict::RuleError => r(451, "4.3.0", "report could not be mapped; try again later"),
        Verdict::Sent => ok("report delivered to CPM as an IMDN"),
        Verdict::Duplicate => ok("report already delivered to CPM"),
        Verdict::Temporary(cpm) => r(
            451,
            "4.4.0",
            format!("the IMDN could not be delivered now ({cpm})"),
        ),
        Verdict::Permanent(cpm) => ok(&format!(
            "report accepted; CPM refused the IMDN ({cpm}), dropped"
        )),
    }
}

pub(crate) fn report_state_error(e: &dyn std::fmt::Display) -> Reply {
    r(451, "4.3.0", format!("report state: {e}"))
}

/// CPM asked to retry an IMDN in another form: there is none.
pub(crate) fn imdn_retry_asked(form: &dyn std::fmt::Display) -> Reply {
    r(554, "5.0.0", format!("CPM asked for a retry as {form}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_well_formed() {
        // Every reply must survive the parser the rules use, i.e. code/class/status agree.
        let all = [
            greeting("h", Protocol::Smtp),
            ok(),
            reset(),
            sender_ok(),
            recipient_ok(),
            help(),
            vrfy_cannot_verify(),
            closing("h"),
            start_tls(),
            start_data(),
            shutting_down("h"),
            too_many_connections("h"),
            too_many_connections_from_ip("h"),
            timeout("h"),
            too_many_errors("h"),
            too_many_recipients(),
            message_too_big(1),
            text_line_too_long(1),
            bare_line_end_in_data(),
            no_valid_recipients(Protocol::Smtp),
            no_valid_recipients(Protocol::Lmtp),
            non_ascii_address(),
            must_start_tls(),
            need_hello(Protocol::Lmtp),
            nested_mail(),
            need_mail("RCPT"),
            tls_in_transaction(),
            tls_already_active(),
            unknown_command(),
            wrong_hello(Protocol::Smtp),
            bare_line_end_in_command(),
            command_not_utf8(),
            command_line_too_long(),
            syntax("X"),
            no_arguments("X"),
            invalid_parameter("X"),
            by_time_not_positive(),
            by_time_out_of_range(),
            by_time_below_minimum(1),
            bad_sender_syntax(),
            bad_recipient_syntax(),
            not_implemented("X"),
            unsupported_parameter("X"),
        ];
        for reply in all {
            let wire = reply.to_wire();
            assert!(wire.ends_with("\r\n") && wire.len() < 512, "{wire}");
            assert_eq!(Reply::parse(wire.trim_end()).unwrap(), reply, "{wire}");
        }
    }

    #[test]
    fn ehlo_is_multiline_without_status() {
        let wire = ehlo("h.example", &["PIPELINING".into(), "SIZE 10".into()]).to_wire();
        assert_eq!(wire, "250-h.example\r\n250-PIPELINING\r\n250 SIZE 10\r\n");
    }

    #[test]
    fn protocol_errors_are_5_5_x() {
        assert!(is_protocol_error(&unknown_command()));
        assert!(is_protocol_error(&need_mail("DATA")));
        assert!(!is_protocol_error(&too_many_recipients()));
        assert!(!is_protocol_error(&message_too_big(1)));
        assert!(!is_protocol_error(&Reply::new(550, "5.1.1", "unknown")));
    }

    /// Text iwf copies from a peer (a smarthost's error, a CPM reply) into its own reply
    /// cannot smuggle a reply of another class: every line keeps our code, control
    /// characters become `?`, lines are bounded.
    #[test]
    fn peer_text_in_a_reply_stays_inside_it() {
        let hostile = "refused\r\n250 2.0.0 ok\n250 2.0.0 delivered\u{7}";
        for reply in [
            relay_failed("<a@b>", &hostile),
            relay_refused("<a@b>", &hostile),
            report_state_error(&hostile),
            unconvertible("a@b", &hostile),
        ] {
            let wire = reply.to_wire();
            let code = reply.code.to_string();
            for line in wire.split_terminator("\r\n") {
                assert!(line.starts_with(&code), "{wire:?}");
                assert!(!line.contains('\r') && !line.contains('\u{7}'), "{wire:?}");
                assert!(line.len() <= 512, "{wire:?}");
            }
        }
    }
}
