//! The answer step of CPM → mail: pure. The smarthost's reply to the mail (or the failure
//! to reach it) becomes the SIP final response (phase `cpm_response`): 2xx only after its
//! 250.

use chrono::{DateTime, Utc};

use super::{SipAnswer, complete, phases};
use crate::ruleset::RuleSet;
use crate::ruleset::run::Fired;

/// Maps the smarthost's outcome to the SIP final response.
pub fn respond(
    rules: &RuleSet,
    outcome: &crate::smtp_client::SmtpOutcome,
    target: Option<&str>,
    now: DateTime<Utc>,
    explain: Option<&mut Vec<Fired>>,
) -> SipAnswer {
    complete(
        phases::map_response(rules, outcome, target, now, explain),
        rules,
    )
}
