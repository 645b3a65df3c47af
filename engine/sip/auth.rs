//! Digest authentication (RFC 3261 §22, RFC 2617): parse a `WWW-Authenticate` /
//! `Proxy-Authenticate` challenge, compute the response, write the `Authorization` /
//! `Proxy-Authorization` value. MD5 and MD5-sess with `qop=auth` or without qop;
//! `auth-int` and other algorithms are declined (the 401/407 is then reported as is).
//!
//! MD5 is implemented here (RFC 1321) because it is the only hash digest needs and the
//! project takes no extra dependency for it; it is used for nothing else.

/// A parsed `Digest` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    /// `MD5` or `MD5-sess` (upper-cased); absent means MD5.
    pub algorithm: Option<String>,
    /// The qop options offered, lower-cased.
    pub qop: Vec<String>,
    pub stale: bool,
}

/// Why a challenge cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("challenge is not a Digest challenge")]
    NotDigest,
    #[error("challenge lacks {0}")]
    Missing(&'static str),
    #[error("digest algorithm {0} is not supported")]
    Algorithm(String),
    #[error("qop {0:?} offered, only auth is supported")]
    Qop(Vec<String>),
    #[error("challenge realm {got:?} is not the configured realm {want:?}")]
    Realm { got: String, want: String },
}

impl Challenge {
    /// Parses `Digest realm="...", nonce="...", qop="auth,auth-int", ...`.
    pub fn parse(value: &str) -> Result<Self, AuthError> {
        let value = value.trim_start();
        let (scheme, rest) = value.split_at(value.find([' ', '\t']).unwrap_or(value.len()));
        if !scheme.eq_ignore_ascii_case("digest") {
            return Err(AuthError::NotDigest);
        }
        let mut c = Challenge {
            realm: String::new(),
            nonce: String::new(),
            opaque: None,
            algorithm: None,
            qop: vec![],
            stale: false,
        };
        let (mut realm, mut nonce) = (None, None);
        for (name, v) in params(rest) {
            match name.to_ascii_lowercase().as_str() {
                "realm" => realm = Some(v),
                "nonce" => nonce = Some(v),
                "opaque" => c.opaque = Some(v),
                "algorithm" => c.algorithm = Some(v.to_ascii_uppercase()),
                "qop" => {
                    c.qop = v
                        .split(',')
                        .map(|q| q.trim().to_ascii_lowercase())
                        .filter(|q| !q.is_empty())
                        .collect()
                }
                "stale" => c.stale = v.eq_ignore_ascii_case("true"),
                _ => {}
            }
        }
        c.realm = realm.ok_or(AuthError::Missing("realm"))?;
        c.nonce = nonce.ok_or(AuthError::Missing("nonce"))?;
        Ok(c)
    }
}

/// `name=value` / `name="quoted"` pairs separated by commas; quoted values unescaped.
fn params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(c) if c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            name.push(c);
            chars.next();
        }
        if name.is_empty() && chars.peek().is_none() {
            return out;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            while matches!(chars.peek(), Some(c) if c.is_whitespace()) {
                chars.next();
            }
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                value.push(n)
                            }
                        }
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
                value = value.trim().to_string();
            }
        }
        let name = name.trim().to_string();
        if !name.is_empty() {
            out.push((name, value));
        }
        if chars.peek().is_none() {
            return out;
        }
    }
}

/// The inputs of one digest computation (RFC 2617 §3.2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestInput<'a> {
    pub username: &'a str,
    pub password: &'a str,
    pub realm: &'a str,
    pub nonce: &'a str,
    pub method: &'a str,
    pub uri: &'a str,
    /// `Some((cnonce, nc))` for `qop=auth`, `None` for the RFC 2069 form.
    pub qop_auth: Option<(&'a str, u32)>,
    pub md5_sess: bool,
}

/// `request-digest` as lower-case hex.
pub fn digest_response(d: &DigestInput<'_>) -> String {
    let mut ha1 = md5_hex(format!("{}:{}:{}", d.username, d.realm, d.password).as_bytes());
    if d.md5_sess {
        let cnonce = d.qop_auth.map(|(c, _)| c).unwrap_or("");
        ha1 = md5_hex(format!("{ha1}:{}:{cnonce}", d.nonce).as_bytes());
    }
    let ha2 = md5_hex(format!("{}:{}", d.method, d.uri).as_bytes());
    match d.qop_auth {
        Some((cnonce, nc)) => {
            md5_hex(format!("{ha1}:{}:{nc:08x}:{cnonce}:auth:{ha2}", d.nonce).as_bytes())
        }
        None => md5_hex(format!("{ha1}:{}:{ha2}", d.nonce).as_bytes()),
    }
}

/// Answers `challenge` for `method uri`: the value of the `Authorization` (or
/// `Proxy-Authorization`) header. The client nonce comes from `ids`.
pub fn authorization(
    ids: &dyn crate::ids::Ids,
    challenge: &Challenge,
    username: &str,
    password: &str,
    realm_wanted: Option<&str>,
    method: &str,
    uri: &str,
) -> Result<String, AuthError> {
    if let Some(want) = realm_wanted
        && want != challenge.realm
    {
        return Err(AuthError::Realm {
            got: challenge.realm.clone(),
            want: want.to_string(),
        });
    }
    let md5_sess = match challenge.algorithm.as_deref() {
        None | Some("MD5") => false,
        Some("MD5-SESS") => true,
        Some(other) => return Err(AuthError::Algorithm(other.to_string())),
    };
    let use_qop = if challenge.qop.is_empty() {
        false
    } else if challenge.qop.iter().any(|q| q == "auth") {
        true
    } else {
        return Err(AuthError::Qop(challenge.qop.clone()));
    };
    let cnonce = ids.hex(16);
    let nc = 1u32;
    let response = digest_response(&DigestInput {
        username,
        password,
        realm: &challenge.realm,
        nonce: &challenge.nonce,
        method,
        uri,
        qop_auth: use_qop.then_some((cnonce.as_str(), nc)),
        md5_sess,
    });
    let q = |s: &str| crate::render::encoder::Quoted(s).to_string();
    let mut v = format!(
        "Digest username={}, realm={}, nonce={}, uri={}, response=\"{response}\"",
        q(username),
        q(&challenge.realm),
        q(&challenge.nonce),
        q(uri)
    );
    if challenge.algorithm.is_some() {
        v.push_str(if md5_sess {
            ", algorithm=MD5-sess"
        } else {
            ", algorithm=MD5"
        });
    }
    if use_qop {
        v.push_str(&format!(", qop=auth, nc={nc:08x}, cnonce=\"{cnonce}\""));
    }
    if let Some(o) = &challenge.opaque {
        v.push_str(&format!(", opaque={}", q(o)));
    }
    Ok(v)
}

/// MD5 (RFC 1321, the `md-5` crate) of `data` as 32 lower-case hex digits.
pub fn md5_hex(data: &[u8]) -> String {
    use md5::Digest;
    md5::Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
/// Checks an `Authorization` value against the password (used by the test answerer).
pub fn verify(authorization: &str, password: &str, method: &str) -> bool {
    let rest = authorization
        .trim_start()
        .strip_prefix("Digest")
        .unwrap_or("");
    let p: std::collections::HashMap<String, String> = params(rest)
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    let get = |k: &str| p.get(k).map(String::as_str).unwrap_or("");
    let nc = u32::from_str_radix(get("nc"), 16).unwrap_or(0);
    let qop_auth = (get("qop") == "auth").then_some((get("cnonce"), nc));
    let want = digest_response(&DigestInput {
        username: get("username"),
        password,
        realm: get("realm"),
        nonce: get("nonce"),
        method,
        uri: get("uri"),
        qop_auth,
        md5_sess: get("algorithm").eq_ignore_ascii_case("md5-sess"),
    });
    !get("response").is_empty() && want == get("response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_rfc1321_vectors() {
        let cases = [
            ("", "d41d8cd98f00b204e9800998ecf8427e"),
            ("a", "0cc175b9c0f1b6a831c399e269772661"),
            ("abc", "900150983cd24fb0d6963f7d28e17f72"),
            ("message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            (
                "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(md5_hex(input.as_bytes()), want, "{input:?}");
        }
    }

    /// RFC 2617 §3.5 example.
    #[test]
    fn digest_rfc2617_example() {
        let d = DigestInput {
            username: "Mufasa",
            password: "Circle Of Life",
            realm: "testrealm@host.com",
            nonce: "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            method: "GET",
            uri: "/dir/index.html",
            qop_auth: Some(("0a4f113b", 1)),
            md5_sess: false,
        };
        assert_eq!(digest_response(&d), "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn parses_challenges() {
        let c = Challenge::parse(
            r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
        )
        .unwrap();
        assert_eq!(c.realm, "testrealm@host.com");
        assert_eq!(c.nonce, "dcd98b7102dd2f0e8b11d0f600bfb0c093");
        assert_eq!(c.qop, vec!["auth", "auth-int"]);
        assert_eq!(
            c.opaque.as_deref(),
            Some("5ccc069c403ebaf9f0171e9517f40e41")
        );
        let c =
            Challenge::parse(r#"digest realm="a\"b",nonce=xyz,algorithm=md5,stale=TRUE"#).unwrap();
        assert_eq!(
            (c.realm.as_str(), c.nonce.as_str(), c.stale),
            ("a\"b", "xyz", true)
        );
        assert_eq!(c.algorithm.as_deref(), Some("MD5"));
        assert_eq!(
            Challenge::parse("Basic realm=\"x\""),
            Err(AuthError::NotDigest)
        );
        assert_eq!(
            Challenge::parse("Digest nonce=\"1\""),
            Err(AuthError::Missing("realm"))
        );
        // arbitrary bytes never panic
        for s in [
            "Digest",
            "Digest ,,,",
            "Digest a=\"",
            "Digest =x",
            "Digest a=\\",
        ] {
            let _ = Challenge::parse(s);
        }
    }

    #[test]
    fn authorization_round_trips_through_verify() {
        let c =
            Challenge::parse(r#"Digest realm="iwf", nonce="n1", qop="auth", opaque="o""#).unwrap();
        let v = authorization(
            &crate::ids::RandomIds,
            &c,
            "alice",
            "pw",
            None,
            "MESSAGE",
            "sip:bob@x",
        )
        .unwrap();
        assert!(v.starts_with("Digest username=\"alice\", realm=\"iwf\""));
        assert!(v.contains("qop=auth, nc=00000001, cnonce=\""));
        assert!(v.contains("opaque=\"o\""));
        assert!(verify(&v, "pw", "MESSAGE"));
        assert!(!verify(&v, "wrong", "MESSAGE"));
        // RFC 2069 form (no qop)
        let c = Challenge::parse(r#"Digest realm="iwf", nonce="n1""#).unwrap();
        let v = authorization(
            &crate::ids::RandomIds,
            &c,
            "alice",
            "pw",
            Some("iwf"),
            "MESSAGE",
            "sip:bob@x",
        )
        .unwrap();
        assert!(!v.contains("qop"));
        assert!(verify(&v, "pw", "MESSAGE"));
        assert!(matches!(
            authorization(
                &crate::ids::RandomIds,
                &c,
                "alice",
                "pw",
                Some("other"),
                "MESSAGE",
                "sip:b@x"
            ),
            Err(AuthError::Realm { .. })
        ));
        let c = Challenge::parse(r#"Digest realm="r", nonce="n", qop="auth-int""#).unwrap();
        assert!(matches!(
            authorization(
                &crate::ids::RandomIds,
                &c,
                "a",
                "p",
                None,
                "MESSAGE",
                "sip:b@x"
            ),
            Err(AuthError::Qop(_))
        ));
    }
}
