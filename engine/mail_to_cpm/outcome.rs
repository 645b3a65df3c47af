//! What happened on the CPM side: the input of the response phase.

use serde::Serialize;

use crate::mail_to_cpm::plan::Mode;

/// The final outcome of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Outcome {
    /// A final SIP response (MESSAGE, or INVITE in large mode), or an MSRP
    /// transaction response when the session failed at the MSRP layer.
    Final {
        /// Which protocol answered: `sip` or `msrp`.
        protocol: Layer,
        status: u16,
        reason: String,
        /// Headers of the response the response rules may read (Contact, Retry-After, Accept).
        headers: Vec<(String, String)>,
        mode: Mode,
    },
    /// No final response: a timer fired or the transport failed.
    Failure {
        kind: FailureKind,
        detail: String,
        mode: Mode,
    },
}

/// Which protocol layer gave a final answer (the rules' `sip.protocol`). Not the
/// front end's [`crate::smtp::Protocol`] (SMTP or LMTP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    Sip,
    Msrp,
}

/// Why there was no final response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum FailureKind {
    /// SIP Timer F (non-INVITE) or Timer B (INVITE) expired.
    Timeout,
    /// TCP refused/reset, TLS failure, ICMP error, DNS failure for the next hop.
    Transport,
    /// MSRP: connection to the answer's `a=path` refused.
    MsrpConnect,
    /// MSRP: no 200 within the transaction timeout, or connection lost mid-message.
    MsrpLost,
    /// The DELIVERBY R deadline passed before delivery.
    Deadline,
    /// The whole large-mode session exceeded its cap.
    SessionCap,
}

impl FailureKind {
    /// The word the response rules compare `failure` against.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Timeout => "timeout",
            FailureKind::Transport => "transport",
            FailureKind::MsrpConnect => "msrp-connect",
            FailureKind::MsrpLost => "msrp-lost",
            FailureKind::Deadline => "deadline",
            FailureKind::SessionCap => "session-cap",
        }
    }

    pub const ALL: [FailureKind; 6] = [
        FailureKind::Timeout,
        FailureKind::Transport,
        FailureKind::MsrpConnect,
        FailureKind::MsrpLost,
        FailureKind::Deadline,
        FailureKind::SessionCap,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl Outcome {
    pub fn mode(&self) -> Mode {
        match self {
            Outcome::Final { mode, .. } | Outcome::Failure { mode, .. } => *mode,
        }
    }
}
