//! Bounded checks of MAIL / RCPT parameters on the raw command line.
//!
//! smtp-proto parses the parameters, but its number parsers saturate and then go on with
//! the next digit, so `SIZE=999999999999999999999` or a 20-digit `BY=` come out as small
//! numbers that pass every limit. Before smtp-proto's values are used, the raw line is
//! checked here against the grammars of the RFCs, so a value out of range gets its reply
//! (RFC 1870 `SIZE` 1*20DIGIT, over our limit → `552 5.3.4`; RFC 2852 `BY` by-time of 1 to 9
//! digits → `501 5.5.4`; RFC 3461 `ENVID` at most 100 and `ORCPT` at most 500 characters;
//! a keyword given twice → `501 5.5.4`). No I/O, table tests below.

use super::replies;
use crate::smtp::reply::Reply;

/// The `keyword[=value]` parameters after the path of a MAIL FROM / RCPT TO line.
/// `line` is the whole command line (CRLF optional).
pub(crate) fn parameters(line: &[u8]) -> Vec<(&[u8], Option<&[u8]>)> {
    let line = line.strip_suffix(b"\r\n").unwrap_or(line);
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return Vec::new();
    };
    let mut rest = &line[colon + 1..];
    while let [b' ', tail @ ..] = rest {
        rest = tail;
    }
    // The path: `<...>` with quoted strings and backslash escapes inside, or a bare word.
    let path_end = if rest.first() == Some(&b'<') {
        let mut quoted = false;
        let mut escaped = false;
        let mut end = rest.len();
        for (i, &b) in rest.iter().enumerate().skip(1) {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                quoted = !quoted;
            } else if b == b'>' && !quoted {
                end = i + 1;
                break;
            }
        }
        end
    } else {
        rest.iter().position(|&b| b == b' ').unwrap_or(rest.len())
    };
    rest[path_end..]
        .split(|&b| b == b' ')
        .filter(|p| !p.is_empty())
        .map(|p| match p.iter().position(|&b| b == b'=') {
            Some(eq) => (&p[..eq], Some(&p[eq + 1..])),
            None => (p, None),
        })
        .collect()
}

fn is_digits(v: &[u8], min: usize, max: usize) -> bool {
    (min..=max).contains(&v.len()) && v.iter().all(u8::is_ascii_digit)
}

/// Checks the parameters of a MAIL line; `max_size` is the advertised SIZE.
pub(crate) fn check_mail(line: &[u8], max_size: usize) -> Result<(), Reply> {
    let params = parameters(line);
    no_duplicates(&params)?;
    for (name, value) in params {
        let value = value.unwrap_or_default();
        if name.eq_ignore_ascii_case(b"SIZE") {
            // RFC 1870 §5: size-value ::= 1*20DIGIT.
            if !is_digits(value, 1, 20) {
                return Err(replies::invalid_parameter("SIZE"));
            }
            let declared = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u128>().ok())
                .unwrap_or(u128::MAX);
            if declared > max_size as u128 {
                return Err(replies::message_too_big(max_size));
            }
        } else if name.eq_ignore_ascii_case(b"BY") {
            // RFC 2852 §4: by-value ::= by-time ";" by-mode [ by-trace ],
            // by-time ::= [ "-" / "+" ] 1*9digit, by-mode ::= "N" / "R", by-trace ::= "T".
            let Some(semi) = value.iter().position(|&b| b == b';') else {
                return Err(replies::by_time_out_of_range());
            };
            let (time, mode) = (&value[..semi], &value[semi + 1..]);
            let digits = time
                .strip_prefix(b"-")
                .or_else(|| time.strip_prefix(b"+"))
                .unwrap_or(time);
            let mode_ok = matches!(
                mode.to_ascii_uppercase().as_slice(),
                b"N" | b"R" | b"NT" | b"RT"
            );
            if !is_digits(digits, 1, 9) || !mode_ok {
                return Err(replies::by_time_out_of_range());
            }
        } else if name.eq_ignore_ascii_case(b"ENVID") && value.len() > 100 {
            // RFC 3461 §4.4: ENVID at most 100 characters.
            return Err(replies::invalid_parameter("ENVID"));
        }
    }
    Ok(())
}

/// Checks the parameters of a RCPT line.
pub(crate) fn check_rcpt(line: &[u8]) -> Result<(), Reply> {
    let params = parameters(line);
    no_duplicates(&params)?;
    for (name, value) in params {
        // RFC 3461 §4.2: ORCPT at most 500 characters.
        if name.eq_ignore_ascii_case(b"ORCPT") && value.unwrap_or_default().len() > 500 {
            return Err(replies::invalid_parameter("ORCPT"));
        }
    }
    Ok(())
}

/// RFC 5321 §4.1.1.11 leaves a repeated keyword undefined; RFC 3461 and RFC 1870 forbid it.
fn no_duplicates(params: &[(&[u8], Option<&[u8]>)]) -> Result<(), Reply> {
    for (i, (name, _)) in params.iter().enumerate() {
        if params[..i]
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            return Err(replies::duplicate_parameter());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_follow_the_path() {
        let p = parameters(b"MAIL FROM:<\"a> SIZE=1\"@b.example> SIZE=10 BODY=8BITMIME\r\n");
        assert_eq!(
            p,
            vec![
                (&b"SIZE"[..], Some(&b"10"[..])),
                (&b"BODY"[..], Some(&b"8BITMIME"[..]))
            ]
        );
        assert_eq!(
            parameters(b"RCPT TO:<a@b> NOTIFY=NEVER"),
            vec![(&b"NOTIFY"[..], Some(&b"NEVER"[..]))]
        );
        assert!(parameters(b"MAIL FROM:<>\r\n").is_empty());
        assert_eq!(parameters(b"MAIL FROM: <a@b> SMTPUTF8").len(), 1);
    }

    #[test]
    fn mail_parameter_table() {
        let cases: &[(&str, Result<(), &str>)] = &[
            ("<a@b> SIZE=1000", Ok(())),
            ("<a@b> SIZE=10485760", Ok(())),
            ("<a@b> SIZE=10485761", Err("552 5.3.4")),
            ("<a@b> SIZE=999999999999999999999", Err("501 5.5.4")),
            ("<a@b> SIZE=99999999999999999999", Err("552 5.3.4")),
            ("<a@b> SIZE=12a", Err("501 5.5.4")),
            ("<a@b> SIZE=", Err("501 5.5.4")),
            ("<a@b> SIZE=-1", Err("501 5.5.4")),
            ("<a@b> BY=3600;R", Ok(())),
            ("<a@b> BY=-3600;NT", Ok(())),
            ("<a@b> BY=999999999;N", Ok(())),
            ("<a@b> BY=99999999999999999999;R", Err("501 5.5.4")),
            ("<a@b> BY=-99999999999999999999;N", Err("501 5.5.4")),
            ("<a@b> BY=1000000000;N", Err("501 5.5.4")),
            ("<a@b> BY=60", Err("501 5.5.4")),
            ("<a@b> BY=60;X", Err("501 5.5.4")),
            ("<a@b> BY=;R", Err("501 5.5.4")),
            ("<a@b> SIZE=10 SIZE=20", Err("501 5.5.4")),
            ("<a@b> ENVID=abc", Ok(())),
        ];
        for (args, want) in cases {
            let line = format!("MAIL FROM:{args}\r\n");
            let got = check_mail(line.as_bytes(), 10 * 1024 * 1024).map_err(|r| r.to_string());
            match (want, &got) {
                (Ok(()), Ok(())) => {}
                (Err(prefix), Err(reply)) if reply.starts_with(prefix) => {}
                _ => panic!("{args}: want {want:?}, got {got:?}"),
            }
        }
        let envid = format!("MAIL FROM:<a@b> ENVID={}\r\n", "x".repeat(101));
        assert!(check_mail(envid.as_bytes(), 1000).is_err());
    }

    #[test]
    fn rcpt_parameter_table() {
        assert!(check_rcpt(b"RCPT TO:<a@b> NOTIFY=SUCCESS ORCPT=rfc822;a@b\r\n").is_ok());
        let long = format!("RCPT TO:<a@b> ORCPT=rfc822;{}\r\n", "x".repeat(500));
        assert!(check_rcpt(long.as_bytes()).is_err());
        assert!(check_rcpt(b"RCPT TO:<a@b> NOTIFY=NEVER NOTIFY=SUCCESS\r\n").is_err());
    }
}
