//! Threads across the protocol change: which mail a CPM conversation started from.
//!
//! When iwf turns a mail into a MESSAGE it sets Conversation-ID (the rules derive it) and
//! remembers the mail's Message-ID and References against it; a MESSAGE that comes back in
//! that conversation becomes a mail whose In-Reply-To/References point at the original
//! (fields `thread.in_reply_to`, `thread.references`). The store is behind [`ThreadStore`]:
//! in memory here, bounded; a durable one can take its place.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// The mail a conversation started from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thread {
    /// Message-ID without <>.
    pub message_id: String,
    /// The References of that mail, as written (each id in <>), possibly empty.
    pub references: String,
}

/// Conversation-ID → the mail of that conversation.
pub trait ThreadStore: Send + Sync {
    fn remember(&self, conversation_id: &str, thread: Thread);
    fn lookup(&self, conversation_id: &str) -> Option<Thread>;
}

/// In memory, the oldest forgotten first beyond `capacity` conversations.
pub struct MemoryThreads {
    capacity: usize,
    inner: Mutex<(HashMap<String, Thread>, VecDeque<String>)>,
}

impl MemoryThreads {
    pub fn new(capacity: usize) -> MemoryThreads {
        MemoryThreads {
            capacity: capacity.max(1),
            inner: Mutex::new((HashMap::new(), VecDeque::new())),
        }
    }
}

impl Default for MemoryThreads {
    fn default() -> Self {
        MemoryThreads::new(100_000)
    }
}

impl ThreadStore for MemoryThreads {
    fn remember(&self, conversation_id: &str, thread: Thread) {
        let Ok(mut g) = self.inner.lock() else { return };
        let (map, order) = &mut *g;
        if map.insert(conversation_id.to_string(), thread).is_none() {
            order.push_back(conversation_id.to_string());
        }
        while order.len() > self.capacity {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
    }

    fn lookup(&self, conversation_id: &str) -> Option<Thread> {
        self.inner.lock().ok()?.0.get(conversation_id).cloned()
    }
}

/// Wraps the SIP back end: for every request the CPM side accepts (2xx), remembers its
/// Conversation-ID against the mail's Message-ID (carried as Contribution-ID, percent-encoded
/// by the rules).
pub struct Remembering {
    pub inner: std::sync::Arc<dyn crate::sip::SipBackend>,
    pub threads: std::sync::Arc<dyn ThreadStore>,
}

impl Remembering {
    fn note(
        &self,
        d: &crate::mail_to_cpm::plan::Delivery,
        o: &crate::mail_to_cpm::outcome::Outcome,
    ) {
        let crate::mail_to_cpm::outcome::Outcome::Final { status, .. } = o else {
            return;
        };
        if status / 100 != 2 {
            return;
        }
        let get = |n: &str| {
            d.headers
                .iter()
                .find(|(h, _)| h.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.trim())
        };
        let (Some(conv), Some(contrib)) = (get("Conversation-ID"), get("Contribution-ID")) else {
            return;
        };
        let Ok(id) = percent_encoding::percent_decode_str(contrib).decode_utf8() else {
            return;
        };
        self.threads.remember(
            conv,
            Thread {
                message_id: id.into_owned(),
                references: String::new(),
            },
        );
    }
}

impl crate::sip::SipBackend for Remembering {
    fn send_message<'a>(
        &'a self,
        delivery: &'a crate::mail_to_cpm::plan::Delivery,
    ) -> futures::future::BoxFuture<'a, crate::mail_to_cpm::outcome::Outcome> {
        Box::pin(async move {
            let o = self.inner.send_message(delivery).await;
            self.note(delivery, &o);
            o
        })
    }

    fn send_invite<'a>(
        &'a self,
        delivery: &'a crate::mail_to_cpm::plan::Delivery,
        sdp_offer: Vec<u8>,
        contact: &'a str,
    ) -> futures::future::BoxFuture<'a, crate::sip::InviteOutcome> {
        Box::pin(async move {
            let o = self.inner.send_invite(delivery, sdp_offer, contact).await;
            self.note(delivery, &o.outcome);
            o
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_found() {
        let s = MemoryThreads::new(2);
        let t = |id: &str| Thread {
            message_id: id.into(),
            references: String::new(),
        };
        s.remember("c1", t("m1@x"));
        s.remember("c2", t("m2@x"));
        s.remember("c3", t("m3@x"));
        assert_eq!(s.lookup("c1"), None);
        assert_eq!(s.lookup("c3").unwrap().message_id, "m3@x");
    }
}
