//! IMDN documents (RFC 5438): `message/imdn+xml` parsed with quick-xml and rendered, and the
//! `message/cpim` body that carries one (§7.2.1).
//!
//! The parser takes the schema of §10: a root `<imdn>` in the namespace
//! `urn:ietf:params:xml:ns:imdn` (any prefix), `<message-id>` and `<datetime>`, optional
//! `<recipient-uri>`, `<original-recipient-uri>` and `<subject>`, and exactly one of
//! `<delivery-notification>`, `<display-notification>`, `<processing-notification>` with a
//! `<status>` holding one status element valid for that kind. Extension elements (other
//! namespaces, unknown names) are skipped. Hostile documents are refused before anything is
//! kept: a DOCTYPE (so no entity declaration, no billion laughs, no external entity), an
//! entity other than the five XML predefined ones, more than [`MAX_IMDN_BYTES`], nesting
//! deeper than [`MAX_DEPTH`], control characters in the values.

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;

use crate::render::cpim::Cpim;
use crate::render::encoder::EncodeError;

/// The IMDN XML namespace (RFC 5438 §10).
pub const IMDN_NS: &str = "urn:ietf:params:xml:ns:imdn";
/// The CPIM header namespace of the `imdn.` headers (RFC 5438 §7.1.1).
pub const CPIM_NS: &str = "urn:ietf:params:imdn";
/// Documents larger than this are refused (an IMDN is a few hundred octets).
pub const MAX_IMDN_BYTES: usize = 64 * 1024;
/// Elements nested deeper than this are refused.
pub const MAX_DEPTH: usize = 16;

/// The disposition type an IMDN reports (RFC 5438 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Delivery,
    Display,
    Processing,
}

impl Kind {
    /// `delivery`, `display`, `processing`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Delivery => "delivery",
            Kind::Display => "display",
            Kind::Processing => "processing",
        }
    }

    /// The element name: `delivery-notification`, ...
    pub fn element(self) -> &'static str {
        match self {
            Kind::Delivery => "delivery-notification",
            Kind::Display => "display-notification",
            Kind::Processing => "processing-notification",
        }
    }

    fn from_element(name: &str) -> Option<Kind> {
        [Kind::Delivery, Kind::Display, Kind::Processing]
            .into_iter()
            .find(|k| k.element() == name)
    }

    /// The statuses the schema allows for this kind (RFC 5438 §10).
    pub fn statuses(self) -> &'static [Status] {
        match self {
            Kind::Delivery => &[
                Status::Delivered,
                Status::Failed,
                Status::Forbidden,
                Status::Error,
            ],
            Kind::Display => &[Status::Displayed, Status::Forbidden, Status::Error],
            Kind::Processing => &[
                Status::Processed,
                Status::Stored,
                Status::Forbidden,
                Status::Error,
            ],
        }
    }
}

/// A notification status (RFC 5438 §5, the status elements of §10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Delivered,
    Failed,
    Forbidden,
    Error,
    Displayed,
    Processed,
    Stored,
}

impl Status {
    /// The element name, lower case: `delivered`, `failed`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Delivered => "delivered",
            Status::Failed => "failed",
            Status::Forbidden => "forbidden",
            Status::Error => "error",
            Status::Displayed => "displayed",
            Status::Processed => "processed",
            Status::Stored => "stored",
        }
    }

    /// The status named by an element name (exact, lower case as in the schema).
    pub fn from_name(name: &str) -> Option<Status> {
        [
            Status::Delivered,
            Status::Failed,
            Status::Forbidden,
            Status::Error,
            Status::Displayed,
            Status::Processed,
            Status::Stored,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

/// What the IMDN says: a kind and a status valid for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Notification {
    pub kind: Kind,
    pub status: Status,
}

impl Notification {
    /// A notification, if the schema allows `status` for `kind`.
    pub fn new(kind: Kind, status: Status) -> Option<Notification> {
        kind.statuses()
            .contains(&status)
            .then_some(Notification { kind, status })
    }
}

/// An IMDN document. Text values are kept as written (entities resolved, surrounding white
/// space trimmed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imdn {
    /// The `imdn.Message-ID` of the IM this reports on.
    pub message_id: String,
    /// The DateTime of that IM, as written.
    pub datetime: String,
    pub recipient_uri: Option<String>,
    pub original_recipient_uri: Option<String>,
    pub subject: Option<String>,
    pub notification: Notification,
}

/// Why an IMDN document is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImdnError {
    #[error("expected an IMDN document of at most {MAX_IMDN_BYTES} octets, got {0}")]
    TooLarge(usize),
    #[error("expected elements nested at most {MAX_DEPTH} deep, got deeper")]
    TooDeep,
    #[error("expected no DOCTYPE (entity declarations are refused), got one")]
    DocType,
    #[error("expected only the XML predefined entities, got `&{0};`")]
    Entity(String),
    #[error(
        "expected the root element <imdn> in namespace {IMDN_NS}, got <{element}> in {namespace}"
    )]
    WrongRoot { element: String, namespace: String },
    #[error("expected one root element, got content after </imdn>")]
    TrailingElement,
    #[error("expected <{0}>, got none (or an empty one)")]
    Missing(&'static str),
    #[error("expected one <{0}>, got several")]
    Duplicate(&'static str),
    #[error("expected exactly one notification element, got {0}")]
    Notifications(usize),
    #[error("expected one status of {expected} in <{kind}>, got {got}")]
    BadStatus {
        kind: &'static str,
        expected: String,
        got: String,
    },
    #[error("expected text without control characters in <{0}>, got one")]
    Control(&'static str),
    #[error("expected well-formed XML, got: {0}")]
    Xml(String),
}

/// The text fields of the root, by element name.
const FIELDS: [&str; 5] = [
    "message-id",
    "datetime",
    "recipient-uri",
    "original-recipient-uri",
    "subject",
];

/// Where the reader is, for the elements that matter.
#[derive(Clone, Copy, PartialEq, Eq)]
enum At {
    Root,
    /// Inside a text field of the root (index into FIELDS).
    Field(usize),
    /// Inside a notification element.
    Notification,
    /// Inside its `<status>`.
    Status,
    /// Anywhere else (an extension, a status element's content): skipped.
    Other,
}

/// Parses an IMDN document (RFC 5438 §7.2.1.1, schema §10).
pub fn parse(xml: &[u8]) -> Result<Imdn, ImdnError> {
    if xml.len() > MAX_IMDN_BYTES {
        return Err(ImdnError::TooLarge(xml.len()));
    }
    let mut reader = quick_xml::NsReader::from_reader(xml);
    let mut buf = Vec::new();
    let mut stack: Vec<At> = Vec::new();
    let mut root_seen = false;
    let mut fields: [Option<String>; 5] = Default::default();
    let mut text = String::new();
    let mut kinds: Vec<Kind> = Vec::new();
    let mut statuses: Vec<String> = Vec::new();
    loop {
        let (ns, event) = reader
            .read_resolved_event_into(&mut buf)
            .map_err(|e| ImdnError::Xml(short(&e.to_string())))?;
        let in_imdn = matches!(ns, ResolveResult::Bound(n) if n.0 == IMDN_NS);
        let ns_text = match ns {
            ResolveResult::Bound(n) => short(n.0),
            ResolveResult::Unbound => "no namespace".to_string(),
            ResolveResult::Unknown(p) => format!("undeclared prefix `{}`", short(&p)),
        };
        match event {
            Event::DocType(_) => return Err(ImdnError::DocType),
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(event, Event::Empty(_));
                let local = e.local_name();
                let name = local.as_ref();
                if stack.len() + 1 > MAX_DEPTH {
                    return Err(ImdnError::TooDeep);
                }
                let parent = stack.last().copied();
                let at = match parent {
                    None => {
                        if root_seen {
                            return Err(ImdnError::TrailingElement);
                        }
                        root_seen = true;
                        if !in_imdn || name != "imdn" {
                            return Err(ImdnError::WrongRoot {
                                element: short(name),
                                namespace: ns_text,
                            });
                        }
                        At::Root
                    }
                    Some(At::Root) if in_imdn => {
                        if let Some(i) = FIELDS.iter().position(|f| *f == name) {
                            if fields[i].is_some() {
                                return Err(ImdnError::Duplicate(FIELDS[i]));
                            }
                            text.clear();
                            At::Field(i)
                        } else if let Some(kind) = Kind::from_element(name) {
                            kinds.push(kind);
                            At::Notification
                        } else {
                            At::Other
                        }
                    }
                    Some(At::Notification) if in_imdn && name == "status" => At::Status,
                    Some(At::Status) if in_imdn => {
                        statuses.push(short(name));
                        At::Other
                    }
                    _ => At::Other,
                };
                if empty {
                    if let At::Field(i) = at {
                        fields[i] = Some(String::new());
                    }
                } else {
                    stack.push(at);
                }
            }
            Event::End(_) => {
                if let Some(At::Field(i)) = stack.pop() {
                    let value = text.trim();
                    if value.chars().any(|c| c.is_control() && c != '\t') {
                        return Err(ImdnError::Control(FIELDS[i]));
                    }
                    fields[i] = Some(value.to_string());
                    text.clear();
                }
            }
            Event::Text(t) => {
                if let Some(At::Field(_)) = stack.last() {
                    push_bounded(&mut text, &t.xml10_content());
                }
            }
            Event::CData(t) => {
                if let Some(At::Field(_)) = stack.last() {
                    push_bounded(&mut text, &t.xml10_content());
                }
            }
            Event::GeneralRef(r) => {
                let ch = if r.is_char_ref() {
                    match r.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        _ => return Err(ImdnError::Entity(short(&r.xml10_content()))),
                    }
                } else {
                    match r.xml10_content().as_ref() {
                        "lt" => "<".into(),
                        "gt" => ">".into(),
                        "amp" => "&".into(),
                        "apos" => "'".into(),
                        "quot" => "\"".into(),
                        other => return Err(ImdnError::Entity(short(other))),
                    }
                };
                if let Some(At::Field(_)) = stack.last() {
                    push_bounded(&mut text, &ch);
                }
            }
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
        }
        buf.clear();
    }
    if !root_seen {
        return Err(ImdnError::WrongRoot {
            element: "(none)".into(),
            namespace: "(none)".into(),
        });
    }
    let [
        message_id,
        datetime,
        recipient_uri,
        original_recipient_uri,
        subject,
    ] = fields;
    let message_id = message_id
        .filter(|s| !s.is_empty())
        .ok_or(ImdnError::Missing("message-id"))?;
    let datetime = datetime
        .filter(|s| !s.is_empty())
        .ok_or(ImdnError::Missing("datetime"))?;
    let kind = match kinds.as_slice() {
        [k] => *k,
        other => return Err(ImdnError::Notifications(other.len())),
    };
    let expected = kind
        .statuses()
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let bad = |got: String| ImdnError::BadStatus {
        kind: kind.element(),
        expected: expected.clone(),
        got,
    };
    let status = match statuses.as_slice() {
        [s] => Status::from_name(s)
            .filter(|s| kind.statuses().contains(s))
            .ok_or_else(|| bad(format!("<{s}>")))?,
        [] => return Err(bad("none".into())),
        _ => return Err(bad(format!("{} status elements", statuses.len()))),
    };
    Ok(Imdn {
        message_id,
        datetime,
        recipient_uri,
        original_recipient_uri,
        subject,
        notification: Notification { kind, status },
    })
}

/// Renders the IMDN document of RFC 5438 §7.2.1.1 (mapping-reference §5.3): UTF-8, text
/// escaped; the status is written as given (the parser checks kind and status agree).
pub fn render(imdn: &Imdn) -> String {
    use quick_xml::escape::escape;
    let mut out = String::with_capacity(256);
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str("<imdn xmlns=\"urn:ietf:params:xml:ns:imdn\">\n");
    let mut field = |name: &str, value: &str| {
        out.push_str(&format!("  <{name}>{}</{name}>\n", escape(value)));
    };
    field("message-id", &imdn.message_id);
    field("datetime", &imdn.datetime);
    if let Some(v) = &imdn.recipient_uri {
        field("recipient-uri", v);
    }
    if let Some(v) = &imdn.original_recipient_uri {
        field("original-recipient-uri", v);
    }
    if let Some(v) = &imdn.subject {
        field("subject", v);
    }
    let element = imdn.notification.kind.element();
    out.push_str(&format!(
        "  <{element}><status><{}/></status></{element}>\n</imdn>\n",
        imdn.notification.status.as_str()
    ));
    out
}

/// Whether the inner entity of a CPIM document is an IMDN (RFC 5438 §7.1.2):
/// `Content-Type: message/imdn+xml` and `Content-Disposition: notification` (names and
/// values compared without case; parameters ignored). `inner_headers` are the entity's
/// header fields, as [`crate::cpm_to_mail::content::Content::inner_headers`] keeps them.
pub fn is_imdn(inner_headers: &[(String, String)]) -> bool {
    let first = |name: &str| {
        inner_headers
            .iter()
            .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
    };
    first("Content-Type").as_deref() == Some("message/imdn+xml")
        && first("Content-Disposition").as_deref() == Some("notification")
}

/// The `message/cpim` body of an IMDN (RFC 5438 §7.2.1): CPIM `From:`/`To:` as `<uri>`
/// (a value already holding `<` is taken as a name-addr), `DateTime`, the `imdn` namespace
/// and `imdn.Message-ID` (no `imdn.Disposition-Notification`: never an IMDN for an IMDN),
/// then the inner entity `message/imdn+xml` with `Content-Disposition: notification`.
/// Values with CR, LF or other control characters are refused (rendered with
/// [`Cpim`], whose header encoder checks every line).
pub fn cpim_document(
    from: &str,
    to: &str,
    imdn_message_id: &str,
    datetime: &str,
    xml: &str,
) -> Result<Vec<u8>, EncodeError> {
    let addr = |v: &str| {
        if v.contains('<') {
            v.to_string()
        } else {
            format!("<{v}>")
        }
    };
    let headers = vec![
        ("From".to_string(), addr(from)),
        ("To".to_string(), addr(to)),
        ("DateTime".to_string(), datetime.to_string()),
    ];
    let head = format!(
        "Content-Type: message/imdn+xml\r\nContent-Disposition: notification\r\nContent-Length: {}\r\n\r\n",
        xml.len()
    );
    Cpim {
        headers: &headers,
        imdn: Some((imdn_message_id, &[])),
        inner: &[head.as_bytes(), xml.as_bytes()],
    }
    .render()
}

/// Text kept for one value: the document bound already limits it; this keeps a field from
/// growing past it through entity expansion of character references.
fn push_bounded(text: &mut String, s: &str) {
    if text.len() + s.len() <= MAX_IMDN_BYTES {
        text.push_str(s);
    }
}

fn short(s: &str) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(64).collect();
    if s.chars().count() > 64 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_EXAMPLE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<imdn xmlns="urn:ietf:params:xml:ns:imdn">
  <message-id>34jk324j</message-id>
  <datetime>2008-04-04T12:16:49-05:00</datetime>
  <recipient-uri>im:bob@example.com</recipient-uri>
  <original-recipient-uri>im:bob@example.com</original-recipient-uri>
  <subject>Weekly report</subject>
  <delivery-notification>
    <status>
      <delivered/>
    </status>
  </delivery-notification>
</imdn>"#;

    #[test]
    fn rfc5438_example_parses() {
        let i = parse(RFC_EXAMPLE.as_bytes()).unwrap();
        assert_eq!(i.message_id, "34jk324j");
        assert_eq!(i.datetime, "2008-04-04T12:16:49-05:00");
        assert_eq!(i.recipient_uri.as_deref(), Some("im:bob@example.com"));
        assert_eq!(
            i.original_recipient_uri.as_deref(),
            Some("im:bob@example.com")
        );
        assert_eq!(i.subject.as_deref(), Some("Weekly report"));
        assert_eq!(i.notification.kind, Kind::Delivery);
        assert_eq!(i.notification.status, Status::Delivered);
        assert_eq!(i.notification.kind.as_str(), "delivery");
        assert_eq!(i.notification.status.as_str(), "delivered");
    }

    #[test]
    fn accepted_documents() {
        let cases: &[(&str, Kind, Status, &str)] = &[
            // prefixed namespace
            (
                r#"<i:imdn xmlns:i="urn:ietf:params:xml:ns:imdn"><i:message-id>a</i:message-id><i:datetime>d</i:datetime><i:display-notification><i:status><i:displayed/></i:status></i:display-notification></i:imdn>"#,
                Kind::Display,
                Status::Displayed,
                "a",
            ),
            // extensions in other namespaces and unknown elements are skipped
            (
                r#"<imdn xmlns="urn:ietf:params:xml:ns:imdn" xmlns:x="urn:x"><x:ext><message-id>no</message-id></x:ext><message-id> b&amp;c </message-id><datetime>d</datetime><future/><processing-notification><status><stored/><x:why>full</x:why></status></processing-notification></imdn>"#,
                Kind::Processing,
                Status::Stored,
                "b&c",
            ),
            // character references, CDATA, comments
            (
                r#"<?xml version="1.0"?><!-- c --><imdn xmlns="urn:ietf:params:xml:ns:imdn"><message-id>&#x41;<![CDATA[<z>]]></message-id><datetime>d</datetime><delivery-notification><status><forbidden/></status></delivery-notification></imdn>"#,
                Kind::Delivery,
                Status::Forbidden,
                "A<z>",
            ),
            (
                r#"<imdn xmlns="urn:ietf:params:xml:ns:imdn"><message-id>m</message-id><datetime>d</datetime><delivery-notification><status><failed></failed></status></delivery-notification></imdn>"#,
                Kind::Delivery,
                Status::Failed,
                "m",
            ),
            (
                r#"<imdn xmlns="urn:ietf:params:xml:ns:imdn"><message-id>m</message-id><datetime>d</datetime><display-notification><status><error/></status></display-notification></imdn>"#,
                Kind::Display,
                Status::Error,
                "m",
            ),
        ];
        for (xml, kind, status, id) in cases {
            let i = parse(xml.as_bytes()).unwrap_or_else(|e| panic!("{xml}: {e}"));
            assert_eq!(
                (
                    i.notification.kind,
                    i.notification.status,
                    i.message_id.as_str()
                ),
                (*kind, *status, *id),
                "{xml}"
            );
        }
    }

    fn doc(inner: &str) -> String {
        format!(r#"<imdn xmlns="urn:ietf:params:xml:ns:imdn">{inner}</imdn>"#)
    }

    #[test]
    fn refused_documents() {
        let ok_note =
            "<delivery-notification><status><delivered/></status></delivery-notification>";
        let mut deep = String::new();
        for _ in 0..20 {
            deep.push_str("<x>");
        }
        for _ in 0..20 {
            deep.push_str("</x>");
        }
        let cases: Vec<(String, &str)> = vec![
            (
                r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]><imdn xmlns="urn:ietf:params:xml:ns:imdn"><message-id>&lol2;</message-id></imdn>"#.into(),
                "DOCTYPE",
            ),
            (
                r#"<!DOCTYPE imdn SYSTEM "file:///etc/passwd"><imdn/>"#.into(),
                "DOCTYPE",
            ),
            (doc(&format!("<message-id>&xxe;</message-id><datetime>d</datetime>{ok_note}")), "`&xxe;`"),
            (doc(&format!("<datetime>d</datetime>{ok_note}")), "<message-id>"),
            (doc(&format!("<message-id>  </message-id><datetime>d</datetime>{ok_note}")), "<message-id>"),
            (doc(&format!("<message-id>m</message-id>{ok_note}")), "<datetime>"),
            (doc("<message-id>m</message-id><datetime>d</datetime>"), "got 0"),
            (
                doc(&format!("<message-id>m</message-id><datetime>d</datetime>{ok_note}{ok_note}")),
                "got 2",
            ),
            (
                doc(&format!("<message-id>m</message-id><message-id>n</message-id><datetime>d</datetime>{ok_note}")),
                "several",
            ),
            (
                doc("<message-id>m</message-id><datetime>d</datetime><display-notification><status><delivered/></status></display-notification>"),
                "displayed, forbidden, error",
            ),
            (
                doc("<message-id>m</message-id><datetime>d</datetime><delivery-notification><status/></delivery-notification>"),
                "got none",
            ),
            (
                doc("<message-id>m</message-id><datetime>d</datetime><delivery-notification><status><failed/><delivered/></status></delivery-notification>"),
                "2 status",
            ),
            (
                doc(&format!("<message-id>a&#10;b</message-id><datetime>d</datetime>{ok_note}")),
                "control",
            ),
            (
                format!(r#"<imdn xmlns="urn:other"><message-id>m</message-id><datetime>d</datetime>{ok_note}</imdn>"#),
                "urn:other",
            ),
            (
                format!(r#"<imdn><message-id>m</message-id><datetime>d</datetime>{ok_note}</imdn>"#),
                "no namespace",
            ),
            (
                doc(&format!("<message-id>m</message-id><datetime>d</datetime>{ok_note}")) + "<imdn/>",
                "after </imdn>",
            ),
            (doc(&format!("<message-id>m</message-id><datetime>d</datetime>{ok_note}{deep}")), "deep"),
            (doc("<message-id>m</message-id"), "well-formed"),
            (doc("<message-id>m</datetime>"), "well-formed"),
            (String::new(), "(none)"),
            ("\u{0}\u{1}".into(), ""),
        ];
        for (xml, want) in &cases {
            let err = parse(xml.as_bytes()).expect_err(xml);
            assert!(err.to_string().contains(want), "{xml}: {err}");
        }
        let big = doc(&format!(
            "<message-id>m</message-id><datetime>d</datetime>{ok_note}{}",
            " ".repeat(MAX_IMDN_BYTES)
        ));
        assert!(matches!(parse(big.as_bytes()), Err(ImdnError::TooLarge(_))));
    }

    #[test]
    fn statuses_per_kind_follow_the_schema() {
        assert!(Notification::new(Kind::Delivery, Status::Delivered).is_some());
        assert!(Notification::new(Kind::Delivery, Status::Displayed).is_none());
        assert!(Notification::new(Kind::Display, Status::Failed).is_none());
        assert!(Notification::new(Kind::Processing, Status::Stored).is_some());
        assert!(Notification::new(Kind::Display, Status::Stored).is_none());
        for k in [Kind::Delivery, Kind::Display, Kind::Processing] {
            assert!(k.statuses().contains(&Status::Forbidden));
            assert!(k.statuses().contains(&Status::Error));
        }
    }

    #[test]
    fn render_is_the_mapping_reference_layout_and_round_trips() {
        let i = Imdn {
            message_id: "Zq81mK0pR2".into(),
            datetime: "2025-11-21T14:03:07Z".into(),
            recipient_uri: Some("sip:alice%40mail.example.org@iwf.example.net".into()),
            original_recipient_uri: Some("sip:alice%40mail.example.org@iwf.example.net".into()),
            subject: None,
            notification: Notification::new(Kind::Delivery, Status::Failed).unwrap(),
        };
        let xml = render(&i);
        assert_eq!(
            xml,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <imdn xmlns=\"urn:ietf:params:xml:ns:imdn\">\n  \
             <message-id>Zq81mK0pR2</message-id>\n  \
             <datetime>2025-11-21T14:03:07Z</datetime>\n  \
             <recipient-uri>sip:alice%40mail.example.org@iwf.example.net</recipient-uri>\n  \
             <original-recipient-uri>sip:alice%40mail.example.org@iwf.example.net</original-recipient-uri>\n  \
             <delivery-notification><status><failed/></status></delivery-notification>\n\
             </imdn>\n"
        );
        assert_eq!(parse(xml.as_bytes()).unwrap(), i);
        let tricky = Imdn {
            message_id: "<a&b>\"'".into(),
            subject: Some("Ünïcödé & <tags>".into()),
            recipient_uri: None,
            original_recipient_uri: None,
            ..i
        };
        assert_eq!(parse(render(&tricky).as_bytes()).unwrap(), tricky);
    }

    #[test]
    fn recognises_the_imdn_entity() {
        let h = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert!(is_imdn(&h(&[
            ("Content-Type", "message/imdn+xml"),
            ("Content-Disposition", "notification"),
        ])));
        assert!(is_imdn(&h(&[
            ("content-type", "Message/IMDN+XML; charset=utf-8"),
            ("CONTENT-DISPOSITION", " Notification ; handling=required"),
            ("Content-Length", "300"),
        ])));
        assert!(!is_imdn(&h(&[("Content-Type", "message/imdn+xml")])));
        assert!(!is_imdn(&h(&[
            ("Content-Type", "text/plain"),
            ("Content-Disposition", "notification"),
        ])));
        assert!(!is_imdn(&h(&[
            ("Content-Type", "message/imdn+xml"),
            ("Content-Disposition", "render"),
        ])));
        assert!(!is_imdn(&[]));
    }

    #[test]
    fn cpim_body_of_an_imdn() {
        let xml = render(&Imdn {
            message_id: "k3q9".into(),
            datetime: "2025-11-21T14:03:07Z".into(),
            recipient_uri: None,
            original_recipient_uri: None,
            subject: None,
            notification: Notification::new(Kind::Display, Status::Displayed).unwrap(),
        });
        let doc = cpim_document(
            "sip:alice%40mail.example.org@iwf.example.net",
            "sip:+15551234567@ims.example.net",
            "n3w1d",
            "2025-11-21T15:00:00Z",
            &xml,
        )
        .unwrap();
        let text = String::from_utf8(doc.clone()).unwrap();
        assert_eq!(
            text,
            format!(
                "From: <sip:alice%40mail.example.org@iwf.example.net>\r\n\
                 To: <sip:+15551234567@ims.example.net>\r\n\
                 DateTime: 2025-11-21T15:00:00Z\r\n\
                 NS: imdn <urn:ietf:params:imdn>\r\n\
                 imdn.Message-ID: n3w1d\r\n\r\n\
                 Content-Type: message/imdn+xml\r\n\
                 Content-Disposition: notification\r\n\
                 Content-Length: {}\r\n\r\n{xml}",
                xml.len()
            )
        );
        assert!(!text.contains("Disposition-Notification"));
        // The CPIM parser of the CPM → e-mail direction reads it back as an IMDN.
        let c = crate::cpm_to_mail::content::parse(
            Some("message/cpim"),
            &doc,
            &["message/cpim".to_string()],
        )
        .unwrap();
        assert!(is_imdn(&c.inner_headers));
        assert_eq!(parse(&c.bytes).unwrap().message_id, "k3q9");
        // name-addr kept; header injection refused
        let named = cpim_document("Bob <im:bob@example.com>", "im:a@b", "x", "d", "<x/>").unwrap();
        assert!(named.starts_with(b"From: Bob <im:bob@example.com>\r\nTo: <im:a@b>\r\n"));
        assert!(cpim_document("sip:a@b\r\nX: y", "sip:c@d", "x", "d", "").is_err());
        assert!(cpim_document("sip:a@b", "sip:c@d", "x\ny", "d", "").is_err());
    }
}
