//! Between the codecs and the phases: parsed reports → the facts the phases read, and the
//! phases' decisions → the DSN, MDN and IMDN documents that go out.

use chrono::{DateTime, SecondsFormat, Utc};

use super::from_mail::ReportBlock;
use super::imdn::{self, Imdn, Kind, Notification, Status};
use super::mail_report::{self, Report, Typed};
use super::records::{MailedRecord, SentRecipient, SentRecord};

/// Whether a MESSAGE body is an IMDN: a CPIM document whose inner entity is
/// `message/imdn+xml` with `Content-Disposition: notification` (RFC 5438 §7.1.2).
pub fn is_imdn(c: &crate::cpm_to_mail::content::Content) -> bool {
    c.cpim.is_some() && imdn::is_imdn(&c.inner_headers)
}

pub fn parse_imdn(xml: &[u8]) -> Result<Imdn, imdn::ImdnError> {
    imdn::parse(xml)
}

fn address(t: &Option<Typed>) -> Option<String> {
    t.as_ref().map(|t| t.value.trim().to_string())
}

/// The report blocks of a DSN (one per recipient) or the one of an MDN.
pub fn report_blocks(raw: &[u8]) -> Result<Vec<ReportBlock>, mail_report::MailReportError> {
    let r = mail_report::parse(raw)?;
    Ok(match r.report {
        Report::Delivery(d) => d
            .recipients
            .iter()
            .map(|b| ReportBlock {
                report_type: "delivery-status".into(),
                action: b.action.as_ref().map(|a| a.trim().to_ascii_lowercase()),
                status: b.status.clone(),
                disposition: None,
                final_recipient: address(&b.final_recipient),
                original_recipient: address(&b.original_recipient),
            })
            .collect(),
        Report::Disposition(m) => vec![ReportBlock {
            report_type: "disposition-notification".into(),
            action: None,
            status: None,
            disposition: m.disposition.as_ref().map(|d| d.kind.to_ascii_lowercase()),
            final_recipient: address(&m.final_recipient),
            original_recipient: address(&m.original_recipient),
        }],
    })
}

/// Why the IMDN a `mail_report` rule asked for cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImdnDocumentError {
    /// Not delivery, display or processing: what the rule gave.
    #[error("`{0}` is not an IMDN notification")]
    Kind(String),
    #[error("`{0}` is not an IMDN status")]
    Status(String),
    /// A status the notification kind does not have (RFC 5438 §7.2.1).
    #[error("`{}` is not a status of {} notifications", status.as_str(), kind.as_str())]
    StatusOfKind { kind: Kind, status: Status },
    #[error("{0}")]
    Encode(crate::render::encoder::EncodeError),
}

/// The message/cpim body of the IMDN `kind status` about the CPM message of `rec`
/// (RFC 5438 §7.2.1): from the mail user's URI to the CPM sender, a fresh `imdn.Message-ID`,
/// `DateTime` now; the XML carries the original's message-id and DateTime.
pub fn imdn_document(
    rec: &MailedRecord,
    kind: &str,
    status: &str,
    id: &str,
    now: DateTime<Utc>,
) -> Result<Vec<u8>, ImdnDocumentError> {
    let kind = [Kind::Delivery, Kind::Display, Kind::Processing]
        .into_iter()
        .find(|k| k.as_str() == kind)
        .ok_or_else(|| ImdnDocumentError::Kind(kind.to_string()))?;
    let status =
        Status::from_name(status).ok_or_else(|| ImdnDocumentError::Status(status.to_string()))?;
    let notification =
        Notification::new(kind, status).ok_or(ImdnDocumentError::StatusOfKind { kind, status })?;
    let xml = imdn::render(&Imdn {
        message_id: rec.imdn_message_id.clone(),
        datetime: rec.datetime.clone(),
        recipient_uri: Some(rec.recipient_uri.clone()),
        original_recipient_uri: rec.original_to.clone(),
        subject: None,
        notification,
    });
    imdn::cpim_document(
        &rec.recipient_uri,
        &rec.sender_uri,
        id,
        &now.to_rfc3339_opts(SecondsFormat::Secs, true),
        &xml,
    )
    .map_err(ImdnDocumentError::Encode)
}

/// The DSN about `rcpt` of the mail of `rec` (RFC 3464; RFC 4356 §2.1.4 layout), returning
/// what the record kept of the original per RET.
#[allow(clippy::too_many_arguments)]
pub fn dsn(
    reporting: &str,
    rec: &SentRecord,
    rcpt: &SentRecipient,
    action: &str,
    status: &str,
    diagnostic: Option<&str>,
    message_id: &str,
    now: DateTime<Utc>,
) -> Vec<u8> {
    use crate::reports::dsn::{DsnInput, DsnRecipient, Returned, build_dsn};
    let diagnostic = diagnostic.map(|d| match d.split_once(';') {
        Some((kind, text)) => (kind.trim(), text.trim()),
        None => ("X-IMDN", d.trim()),
    });
    let returned = if rec.returned.is_empty() {
        Returned::None
    } else if rec.returned_full {
        Returned::Full(&rec.returned)
    } else {
        Returned::Headers(&rec.returned)
    };
    build_dsn(&DsnInput {
        reporting_mta: reporting,
        reverse_path: &rec.mail_from,
        envid: rec.envid.as_deref(),
        arrival_date: DateTime::from_timestamp(rec.arrival, 0),
        recipients: vec![DsnRecipient {
            orcpt: rcpt.orcpt.as_deref(),
            final_rcpt: &rcpt.address,
            action,
            status,
            diagnostic,
        }],
        returned,
        now,
        message_id: Some(message_id),
    })
}

/// The MDN about `rcpt` of the mail of `rec` (RFC 3798 §3), to its
/// Disposition-Notification-To address.
pub fn mdn(
    reporting: &str,
    rec: &SentRecord,
    rcpt: &SentRecipient,
    disposition: &str,
    message_id: &str,
    now: DateTime<Utc>,
) -> Vec<u8> {
    let subject = match &rec.subject {
        Some(s) => format!("Displayed: {s}"),
        None => String::new(),
    };
    super::mdn::build(&super::mdn::MdnInput {
        from: rcpt.address.clone(),
        from_name: None,
        to: rec.dnt.clone().unwrap_or_default(),
        subject,
        reporting_ua: reporting.to_string(),
        original_message_id: rec.message_id.clone().unwrap_or_default(),
        original_recipient: rcpt.orcpt.clone(),
        final_recipient: rcpt.address.clone(),
        disposition: disposition.to_string(),
        text: format!(
            "The message you sent to <{}> was displayed on the recipient's CPM device.\r\n\
             This is no guarantee that the message has been read or understood.\r\n",
            rcpt.address
        ),
        original_headers: (!rec.returned.is_empty()).then(|| {
            let (h, _) = super::records::returned_part(&rec.returned, false);
            h
        }),
        message_id: Some(message_id.to_string()),
        date: now,
    })
}
