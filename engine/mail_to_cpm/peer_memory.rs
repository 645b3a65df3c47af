//! What each CPM peer refused, remembered for a while, so the next mail to it goes out in a
//! form it takes instead of failing the same way again (one 415 per peer, not per mail).
//!
//! The memory is keyed by the Request-URI (lower case) a delivery used. What a refusal
//! *means* is the rules' decision (the response phase's `learn:` action: `no-cpim` after a
//! 415 to a CPIM body, `no-msrp` after an INVITE refused for its media, `too-big` after a
//! 413); the message phase reads the result as `peer.accepts_cpim`, `peer.accepts_msrp`
//! and `peer.max_bytes`. Entries expire after a configurable time (the peer may be
//! upgraded, or the user may move to another device) and the memory is bounded. Time is
//! passed in: the lookups are pure functions of the memory and `now`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// What is known of one peer at one moment. The default is "takes everything".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub accepts_cpim: bool,
    pub accepts_msrp: bool,
    /// The smallest size (octets) it refused as too big, if any.
    pub max_bytes: Option<u64>,
}

impl Default for Caps {
    fn default() -> Self {
        Caps {
            accepts_cpim: true,
            accepts_msrp: true,
            max_bytes: None,
        }
    }
}

/// What a response rule learnt from one refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// A `message/cpim` body was refused (415).
    NoCpim,
    /// An INVITE for an MSRP session was refused for its media (488, 415, 606).
    NoMsrp,
    /// A request of this many octets was refused as too big (413, 513).
    TooBig(u64),
}

impl Learned {
    /// From the `learn:` action's word and the size of the refused request.
    pub fn from_word(word: &str, size: u64) -> Option<Learned> {
        match word {
            "no-cpim" => Some(Learned::NoCpim),
            "no-msrp" => Some(Learned::NoMsrp),
            "too-big" => Some(Learned::TooBig(size)),
            _ => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Learned::NoCpim => "no-cpim",
            Learned::NoMsrp => "no-msrp",
            Learned::TooBig(_) => "too-big",
        }
    }
}

/// What the message phase may ask: the capabilities of the peer behind a Request-URI.
pub trait PeerCaps {
    fn caps(&self, request_uri: &str) -> Caps;
}

/// Nothing known (dry runs, self-tests): every peer takes everything.
pub struct Unknown;

impl PeerCaps for Unknown {
    fn caps(&self, _: &str) -> Caps {
        Caps::default()
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Entry {
    no_cpim: Option<Instant>,
    no_msrp: Option<Instant>,
    too_big: Option<(u64, Instant)>,
}

impl Entry {
    fn newest(&self) -> Option<Instant> {
        [self.no_cpim, self.no_msrp, self.too_big.map(|(_, t)| t)]
            .into_iter()
            .flatten()
            .max()
    }
}

/// The memory: shared by every transaction of the process.
pub struct PeerMemory {
    entries: Mutex<HashMap<String, Entry>>,
    ttl: Duration,
    max: usize,
}

impl PeerMemory {
    /// Entries live `ttl` after the refusal that made them; at most `max` peers are kept.
    pub fn new(ttl: Duration, max: usize) -> Self {
        PeerMemory {
            entries: Mutex::new(HashMap::new()),
            ttl,
            max: max.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records what a refusal taught about the peer behind `request_uri`.
    pub fn learn(&self, request_uri: &str, what: Learned, now: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        let mut map = self.lock();
        if map.len() >= self.max && !map.contains_key(&request_uri.to_ascii_lowercase()) {
            let ttl = self.ttl;
            map.retain(|_, e| e.newest().is_some_and(|t| now.duration_since(t) < ttl));
            if map.len() >= self.max {
                // Still full of live entries: forget the one learnt longest ago.
                if let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, e)| e.newest())
                    .map(|(k, _)| k.clone())
                {
                    map.remove(&oldest);
                }
            }
        }
        let e = map.entry(request_uri.to_ascii_lowercase()).or_default();
        match what {
            Learned::NoCpim => e.no_cpim = Some(now),
            Learned::NoMsrp => e.no_msrp = Some(now),
            Learned::TooBig(size) => {
                let live = e
                    .too_big
                    .filter(|(_, t)| now.duration_since(*t) < self.ttl)
                    .map(|(s, _)| s);
                e.too_big = Some((live.map_or(size, |s| s.min(size)), now));
            }
        }
        let remembered = map.len();
        drop(map);
        crate::ops::metrics::peer_learned(what.label(), remembered);
    }

    /// The capabilities as of `now`.
    pub fn at(&self, now: Instant) -> Snapshot<'_> {
        Snapshot { memory: self, now }
    }

    /// Peers remembered now (live or not yet swept).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for PeerMemory {
    /// One hour, 100,000 peers.
    fn default() -> Self {
        PeerMemory::new(Duration::from_secs(3600), 100_000)
    }
}

/// [`PeerMemory`] read at one instant.
pub struct Snapshot<'a> {
    memory: &'a PeerMemory,
    now: Instant,
}

impl PeerCaps for Snapshot<'_> {
    fn caps(&self, request_uri: &str) -> Caps {
        let map = self.memory.lock();
        let Some(e) = map.get(&request_uri.to_ascii_lowercase()) else {
            return Caps::default();
        };
        let live = |t: Instant| self.now.duration_since(t) < self.memory.ttl;
        Caps {
            accepts_cpim: !e.no_cpim.is_some_and(live),
            accepts_msrp: !e.no_msrp.is_some_and(live),
            max_bytes: e.too_big.filter(|(_, t)| live(*t)).map(|(s, _)| s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;

    #[test]
    fn learns_expires_and_stays_bounded() {
        let m = PeerMemory::new(Duration::from_secs(60), 3);
        let t0 = crate::clock::SystemClock.instant();
        let uri = "tel:+15551234567";
        assert_eq!(m.at(t0).caps(uri), Caps::default());
        m.learn(uri, Learned::NoCpim, t0);
        m.learn("TEL:+15551234567", Learned::TooBig(5000), t0);
        m.learn(uri, Learned::TooBig(9000), t0);
        let c = m.at(t0 + Duration::from_secs(59)).caps(uri);
        assert!(!c.accepts_cpim && c.accepts_msrp);
        assert_eq!(c.max_bytes, Some(5000), "the smallest refused size");
        assert_eq!(
            m.at(t0 + Duration::from_secs(60)).caps(uri),
            Caps::default()
        );
        for i in 0..10 {
            m.learn(
                &format!("sip:u{i}@x"),
                Learned::NoMsrp,
                t0 + Duration::from_secs(i),
            );
        }
        assert!(m.len() <= 3, "{}", m.len());
        let now = t0 + Duration::from_secs(10);
        assert!(
            !m.at(now).caps("sip:u9@x").accepts_msrp,
            "the newest are kept"
        );
        let off = PeerMemory::new(Duration::ZERO, 3);
        off.learn(uri, Learned::NoCpim, t0);
        assert!(off.is_empty(), "ttl 0 turns the memory off");
    }
}
