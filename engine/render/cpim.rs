//! The CPIM document (RFC 3862) with the imdn namespace (RFC 5438 §7.1.1).

use bytes::Bytes;

use crate::render::body::Body;
use crate::render::encoder::{self, EncodeError};

/// A message/cpim document: headers, then the inner MIME entity.
pub struct Cpim<'a> {
    /// Headers set by the rules (From, To, DateTime, Subject, ...), in order.
    pub headers: &'a [(String, String)],
    /// `imdn.Message-ID` and the requested dispositions; absent when no IMDN is requested.
    pub imdn: Option<(&'a str, &'a [String])>,
    /// The inner entity (its Content-* header lines, a blank line, its body), as pieces
    /// written one after the other, so a large body is copied once, into the document.
    pub inner: &'a [&'a [u8]],
}

impl Cpim<'_> {
    pub fn render(&self) -> Result<Vec<u8>, EncodeError> {
        let inner_len: usize = self.inner.iter().map(|p| p.len()).sum();
        let mut out = Vec::with_capacity(inner_len + 256);
        self.write(&mut out)?;
        Ok(out)
    }

    /// The document with `tail` after the inner pieces, as a [`Body`] that holds `tail`
    /// shared, not copied: a large mail's MIME body stays where it was received.
    pub fn render_with_tail(&self, tail: Bytes) -> Result<Body, EncodeError> {
        let inner_len: usize = self.inner.iter().map(|p| p.len()).sum();
        let mut head = Vec::with_capacity(inner_len + 256);
        self.write(&mut head)?;
        Ok(Body::pieces(head, tail))
    }

    fn write(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let mut line = |n: &str, v: &str| -> Result<(), EncodeError> {
            encoder::check_name(n)?;
            encoder::check_value(n, v)?;
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
            Ok(())
        };
        for (n, v) in self.headers {
            line(n, v)?;
        }
        if let Some((id, dispositions)) = self.imdn {
            line("NS", "imdn <urn:ietf:params:imdn>")?;
            line("imdn.Message-ID", id)?;
            if !dispositions.is_empty() {
                line("imdn.Disposition-Notification", &dispositions.join(", "))?;
            }
        }
        out.extend_from_slice(b"\r\n");
        for piece in self.inner {
            out.extend_from_slice(piece);
        }
        Ok(())
    }

    /// The length of what [`render`](Self::render) writes, after the same checks (it fails
    /// exactly when `render` does), without writing the document: what `request.size`
    /// measures on every mail.
    pub fn encoded_len(&self) -> Result<usize, EncodeError> {
        fn line(n: &str, v: &str) -> Result<usize, EncodeError> {
            encoder::check_name(n)?;
            encoder::check_value(n, v)?;
            Ok(n.len() + 2 + v.len() + 2)
        }
        let mut len = 0;
        for (n, v) in self.headers {
            len += line(n, v)?;
        }
        if let Some((id, dispositions)) = self.imdn {
            len += line("NS", "imdn <urn:ietf:params:imdn>")?;
            len += line("imdn.Message-ID", id)?;
            if !dispositions.is_empty() {
                // `render` checks the values joined by ", ": the check is per character,
                // so checking each one is the same check.
                const NAME: &str = "imdn.Disposition-Notification";
                let mut value = 2 * (dispositions.len() - 1);
                for d in dispositions {
                    encoder::check_value(NAME, d)?;
                    value += d.len();
                }
                len += NAME.len() + 2 + value + 2;
            }
        }
        Ok(len + 2 + self.inner.iter().map(|p| p.len()).sum::<usize>())
    }
}

/// The header section of [`text_entity`]: the text follows it verbatim.
pub const TEXT_ENTITY_HEAD: &[u8] = b"Content-Type: text/plain; charset=UTF-8\r\n\r\n";

/// A text/plain inner entity in UTF-8.
pub fn text_entity(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 48);
    out.extend_from_slice(TEXT_ENTITY_HEAD);
    out.extend_from_slice(text.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rfc5438_layout() {
        let headers = vec![
            ("From".to_string(), "<sip:a@iwf.example.net>".to_string()),
            ("To".to_string(), "<tel:+15551234567>".to_string()),
        ];
        let disp = vec!["positive-delivery".to_string(), "display".to_string()];
        let doc = Cpim {
            headers: &headers,
            imdn: Some(("k3q9", &disp)),
            inner: &[&text_entity("hi")],
        }
        .render()
        .unwrap();
        assert_eq!(
            String::from_utf8(doc).unwrap(),
            "From: <sip:a@iwf.example.net>\r\nTo: <tel:+15551234567>\r\nNS: imdn <urn:ietf:params:imdn>\r\n\
             imdn.Message-ID: k3q9\r\nimdn.Disposition-Notification: positive-delivery, display\r\n\r\n\
             Content-Type: text/plain; charset=UTF-8\r\n\r\nhi"
        );
    }

    #[test]
    fn encoded_len_is_the_rendered_length() {
        let headers = vec![
            ("From".to_string(), "<sip:a@iwf.example.net>".to_string()),
            ("Subject".to_string(), "Caf\u{e9}".to_string()),
        ];
        let one = vec!["positive-delivery".to_string()];
        let two = vec!["positive-delivery".to_string(), "display".to_string()];
        let none: Vec<String> = Vec::new();
        for imdn in [
            None,
            Some(("k3q9", &none)),
            Some(("k3q9", &one)),
            Some(("k3q9", &two)),
        ] {
            let doc = Cpim {
                headers: &headers,
                imdn: imdn.map(|(id, d)| (id, d.as_slice())),
                inner: &[TEXT_ENTITY_HEAD, "h\u{e9}".as_bytes()],
            };
            assert_eq!(doc.encoded_len().unwrap(), doc.render().unwrap().len());
        }
        let bad = vec!["a\rb".to_string()];
        let doc = Cpim {
            headers: &headers,
            imdn: Some(("k3q9", &bad)),
            inner: &[],
        };
        assert!(doc.render().is_err() && doc.encoded_len().is_err());
    }

    #[test]
    fn a_tail_is_the_document_end_unchanged() {
        let headers = vec![("From".to_string(), "<sip:a@iwf.example.net>".to_string())];
        let doc = Cpim {
            headers: &headers,
            imdn: None,
            inner: &[b"Content-Type: text/plain\r\n\r\n"],
        };
        let whole = Cpim {
            inner: &[b"Content-Type: text/plain\r\n\r\n", b"the body"],
            ..doc
        };
        let body = doc
            .render_with_tail(Bytes::from_static(b"the body"))
            .unwrap();
        assert_eq!(body.to_vec(), whole.render().unwrap());
    }

    #[test]
    fn refuses_injection() {
        let headers = vec![("Subject".to_string(), "a\r\nimdn.X: y".to_string())];
        assert!(
            Cpim {
                headers: &headers,
                imdn: None,
                inner: &[]
            }
            .render()
            .is_err()
        );
    }
}
