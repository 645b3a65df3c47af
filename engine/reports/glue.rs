//! TEMPORARY until the codecs branch is merged: the calls into the IMDN / mail-report
//! parsers and the DSN / MDN / IMDN writers.

use chrono::{DateTime, Utc};

use super::from_mail::ReportBlock;
use super::records::{MailedRecord, SentRecipient, SentRecord};

#[derive(Debug, Clone)]
pub struct Kind(pub String);
impl Kind {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone)]
pub struct Imdn {
    pub message_id: String,
    pub recipient_uri: Option<String>,
    pub original_recipient_uri: Option<String>,
    pub kind: Kind,
    pub status: Kind,
}

pub fn parse_imdn(_xml: &[u8]) -> Result<Imdn, String> {
    Err("IMDN parser not merged".into())
}

pub fn report_blocks(_raw: &[u8]) -> Result<Vec<ReportBlock>, String> {
    Err("report parser not merged".into())
}

pub fn imdn_document(
    _rec: &MailedRecord,
    _kind: &str,
    _status: &str,
    _id: &str,
    _now: DateTime<Utc>,
) -> Result<Vec<u8>, String> {
    Err("IMDN writer not merged".into())
}

pub fn dsn(
    _reporting: &str,
    _rec: &SentRecord,
    _rcpt: &SentRecipient,
    _action: &str,
    _status: &str,
    _diagnostic: Option<&str>,
    _now: DateTime<Utc>,
) -> Vec<u8> {
    Vec::new()
}

pub fn mdn(
    _reporting: &str,
    _rec: &SentRecord,
    _rcpt: &SentRecipient,
    _disposition: &str,
    _now: DateTime<Utc>,
) -> Vec<u8> {
    Vec::new()
}

pub fn is_imdn(c: &crate::reverse::content::Content) -> bool {
    c.cpim.is_some() && c.media_type == "message/imdn+xml"
}
