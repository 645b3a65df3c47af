//! Per-transmission values: Via branch, Call-ID, From tag, CSeq.

use crate::ids::Ids;
use crate::mail_to_cpm::plan::Stamp;

/// RFC 3261 §8.1.1.7 magic cookie.
pub const BRANCH_COOKIE: &str = "z9hG4bK";

/// `bits` random bits from `ids` as hex digits.
fn random_hex(ids: &dyn Ids, bits: usize) -> String {
    ids.hex(bits / 4)
}

/// A fresh branch: the magic cookie plus 96 random bits.
pub fn new_branch(ids: &dyn Ids) -> String {
    format!("{BRANCH_COOKIE}{}", random_hex(ids, 96))
}

/// The stamp of the first request of a delivery: fresh branch, random Call-ID at `host`,
/// random From tag, CSeq 1. `sent_by` is `host[:port]` (IPv6 in brackets).
pub fn first(ids: &dyn Ids, transport: &str, sent_by: &str, host: &str) -> Stamp {
    Stamp {
        transport: transport.to_string(),
        sent_by: sent_by.to_string(),
        branch: new_branch(ids),
        call_id: format!("{}@{}", random_hex(ids, 128), host),
        from_tag: random_hex(ids, 64),
        cseq: 1,
    }
}

/// The stamp of a follow-up request (redirect, authentication retry): same Call-ID and
/// From tag, new branch, CSeq + 1 (RFC 3261 §8.1.3.5, §22.2).
pub fn follow_up(ids: &dyn Ids, prev: &Stamp, transport: &str, sent_by: &str) -> Stamp {
    Stamp {
        transport: transport.to_string(),
        sent_by: sent_by.to_string(),
        branch: new_branch(ids),
        call_id: prev.call_id.clone(),
        from_tag: prev.from_tag.clone(),
        cseq: prev.cseq.saturating_add(1),
    }
}

/// `host:port` for Via sent-by, bracketing IPv6 literals.
pub fn sent_by(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::RandomIds;

    fn is_hex(s: &str) -> bool {
        s.chars().all(|c| c.is_ascii_hexdigit())
    }

    #[test]
    fn first_stamp_format() {
        let s = first(&RandomIds, "UDP", "192.0.2.10:5060", "192.0.2.10");
        assert_eq!(s.transport, "UDP");
        assert_eq!(s.sent_by, "192.0.2.10:5060");
        let rand = s.branch.strip_prefix("z9hG4bK").unwrap();
        assert!(rand.len() * 4 >= 64 && is_hex(rand), "{}", s.branch);
        let (id, host) = s.call_id.split_once('@').unwrap();
        assert_eq!(host, "192.0.2.10");
        assert!(id.len() == 32 && is_hex(id));
        assert!(s.from_tag.len() == 16 && is_hex(&s.from_tag));
        assert_eq!(s.cseq, 1);
    }

    #[test]
    fn stamps_are_unique() {
        let a = first(&RandomIds, "UDP", "h:1", "h");
        let b = first(&RandomIds, "UDP", "h:1", "h");
        assert_ne!(a.branch, b.branch);
        assert_ne!(a.call_id, b.call_id);
        assert_ne!(a.from_tag, b.from_tag);
    }

    #[test]
    fn follow_up_keeps_dialog_ids() {
        let a = first(&RandomIds, "UDP", "h:1", "h");
        let b = follow_up(&RandomIds, &a, "TCP", "h:2");
        assert_eq!(
            (b.call_id.as_str(), b.from_tag.as_str()),
            (a.call_id.as_str(), a.from_tag.as_str())
        );
        assert_ne!(a.branch, b.branch);
        assert_eq!(b.cseq, 2);
        assert_eq!(b.transport, "TCP");
    }

    #[test]
    fn sent_by_brackets_ipv6() {
        assert_eq!(sent_by("::1", 5060), "[::1]:5060");
        assert_eq!(sent_by("[::1]", 5060), "[::1]:5060");
        assert_eq!(sent_by("iwf.example.net", 5060), "iwf.example.net:5060");
    }
}
