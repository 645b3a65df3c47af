//! RFC 4826 resource-lists with RFC 5364 copyControl, for RFC 5365 multiple-recipient MESSAGEs.

use quick_xml::escape::escape;

/// One list entry: a URI and its copyControl (`to`, `cc`, `bcc`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub uri: String,
    pub copy_control: &'static str,
}

/// Renders the flat list (no entry-ref, RFC 5365 §4).
pub fn render(entries: &[Entry]) -> String {
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n\
         <resource-lists xmlns=\"urn:ietf:params:xml:ns:resource-lists\"\r\n\
         \x20               xmlns:cp=\"urn:ietf:params:xml:ns:copycontrol\">\r\n  <list>\r\n",
    );
    for e in entries {
        out.push_str(&format!(
            "    <entry uri=\"{}\" cp:copyControl=\"{}\"/>\r\n",
            escape(e.uri.as_str()),
            e.copy_control
        ));
    }
    out.push_str("  </list>\r\n</resource-lists>\r\n");
    out
}

/// One body part: its header lines and content.
pub type Part = (Vec<(String, String)>, Vec<u8>);

/// Wraps body parts into multipart/mixed: returns (content type, body).
pub fn multipart(parts: &[Part], boundary: &str) -> (String, Vec<u8>) {
    let mut body = Vec::new();
    for (headers, content) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        for (n, v) in headers {
            body.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/mixed;boundary=\"{boundary}\""), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_uris() {
        let xml = render(&[Entry {
            uri: "sip:a&b@x\"".into(),
            copy_control: "to",
        }]);
        assert!(xml.contains("uri=\"sip:a&amp;b@x&quot;\""), "{xml}");
    }
}
