//! The non-INVITE client transaction of RFC 3261 §17.1.2, without I/O.
//!
//! iwf's pager-mode MESSAGE runs on this state machine; the driver
//! ([`client`](super::client)) owns the socket, the clock and the response channel and asks
//! the machine what to do:
//!
//! ```text
//!   new(now) ──► Trying ──1xx──► Proceeding
//!                  │ └─ E: retransmit, E = min(2E, T2)   │ └─ E: retransmit, E = T2
//!                  │                                     │
//!                  ├──── 200-699 ──► Completed ◄─────────┤  (final response to the TU)
//!                  │                   │ K = T4 (0 on TCP/TLS): absorbs retransmitted responses
//!                  └── F / transport error ──► Terminated ◄── K
//! ```
//!
//! Timer E runs only on an unreliable transport (§17.1.2.2). Timer F is 64·T1 from the start,
//! or the delivery's deadline when that is earlier (a redirect or digest follow-up shares the
//! first transaction's budget). [`NonInviteClient::poll_timeout`] says when to call
//! [`NonInviteClient::handle_timeout`]; nothing here reads a clock.

use std::time::Duration;

use tokio::time::Instant;

use super::config::Timers;

/// Where the transaction is (RFC 3261 Figure 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

/// What a timer asks the driver to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// Timer E: send the request again.
    Retransmit,
    /// Timer F: no final response in time; tell the TU and stop.
    TimedOut,
}

/// What a received response is to the transaction user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// A provisional response: passed up, nothing else to do.
    Provisional,
    /// The final response: passed up; the transaction is Completed.
    Final,
    /// A response the transaction swallows (a retransmitted final one, or one after the end).
    Absorbed,
}

/// One non-INVITE client transaction.
#[derive(Debug, Clone)]
pub struct NonInviteClient {
    state: State,
    t2: Duration,
    /// Unreliable transports retransmit (Timer E) and linger in Completed (Timer K = T4).
    t4: Option<Duration>,
    /// Timer E: when it fires next and the interval it was set with.
    timer_e: Option<(Instant, Duration)>,
    timer_f: Instant,
    timer_k: Option<Instant>,
}

impl NonInviteClient {
    /// A transaction whose request is sent at `now` (the caller sends it). `reliable` for
    /// TCP/TLS; `deadline` caps Timer F.
    pub fn new(now: Instant, reliable: bool, timers: Timers, deadline: Option<Instant>) -> Self {
        let own_f = now + timers.timer_f();
        NonInviteClient {
            state: State::Trying,
            t2: timers.t2,
            t4: (!reliable).then_some(timers.t4),
            timer_e: (!reliable).then(|| (now + timers.t1, timers.t1)),
            timer_f: deadline.map_or(own_f, |d| d.min(own_f)),
            timer_k: None,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// When Timer F fires: the latest the transaction can end without a final response.
    pub fn timer_f(&self) -> Instant {
        self.timer_f
    }

    /// The earliest armed timer, or `None` once Terminated.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Trying | State::Proceeding => Some(match self.timer_e {
                Some((e, _)) => e.min(self.timer_f),
                None => self.timer_f,
            }),
            State::Completed => self.timer_k,
            State::Terminated => None,
        }
    }

    /// Fires the timers due at `now`. At most one action comes back: Timer F wins over a
    /// Timer E due at the same time.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Timeout> {
        match self.state {
            State::Trying | State::Proceeding => {
                if now >= self.timer_f {
                    self.terminate();
                    return Some(Timeout::TimedOut);
                }
                let (due, interval) = self.timer_e?;
                if now < due {
                    return None;
                }
                let next = match self.state {
                    State::Trying => (interval * 2).min(self.t2),
                    _ => self.t2,
                };
                self.timer_e = Some((now + next, next));
                Some(Timeout::Retransmit)
            }
            State::Completed => {
                if self.timer_k.is_some_and(|k| now >= k) {
                    self.terminate();
                }
                None
            }
            State::Terminated => None,
        }
    }

    /// A response matched to this transaction (§17.1.3) arrived at `now` with `status`.
    pub fn on_response(&mut self, status: u16, now: Instant) -> Disposition {
        match self.state {
            State::Trying | State::Proceeding if status < 200 => {
                self.state = State::Proceeding;
                Disposition::Provisional
            }
            State::Trying | State::Proceeding => {
                self.state = State::Completed;
                self.timer_e = None;
                self.timer_k = Some(now + self.t4.unwrap_or(Duration::ZERO));
                Disposition::Final
            }
            State::Completed | State::Terminated => Disposition::Absorbed,
        }
    }

    /// §17.1.4: the transport could not send; the TU is told of a failure and the
    /// transaction ends.
    pub fn on_transport_error(&mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        self.state = State::Terminated;
        self.timer_e = None;
        self.timer_k = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timers() -> Timers {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }

    /// Runs the machine's own timers until `until`, returning (ms since start, action).
    fn run(tx: &mut NonInviteClient, start: Instant, until: Duration) -> Vec<(u128, Timeout)> {
        let mut out = Vec::new();
        while let Some(at) = tx.poll_timeout() {
            if at > start + until {
                break;
            }
            if let Some(a) = tx.handle_timeout(at) {
                out.push(((at - start).as_millis(), a));
            }
        }
        out
    }

    #[test]
    fn udp_retransmits_on_timer_e_doubling_to_t2_and_times_out_at_64_t1() {
        let start = Instant::now();
        let mut tx = NonInviteClient::new(start, false, timers(), None);
        let got = run(&mut tx, start, Duration::from_secs(60));
        let retransmits: Vec<u128> = got
            .iter()
            .filter(|(_, a)| *a == Timeout::Retransmit)
            .map(|(t, _)| *t)
            .collect();
        // 500, +1000, +2000, then every T2 = 4 s up to Timer F = 32 s.
        assert_eq!(
            retransmits,
            [
                500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
            ]
        );
        assert_eq!(got.last(), Some(&(32_000, Timeout::TimedOut)));
        assert_eq!(tx.state(), State::Terminated);
        assert_eq!(tx.poll_timeout(), None);
    }

    #[test]
    fn a_provisional_response_moves_to_proceeding_where_e_is_t2() {
        let start = Instant::now();
        let mut tx = NonInviteClient::new(start, false, timers(), None);
        assert_eq!(
            tx.handle_timeout(start + ms(500)),
            Some(Timeout::Retransmit)
        );
        assert_eq!(
            tx.on_response(100, start + ms(600)),
            Disposition::Provisional
        );
        assert_eq!(tx.state(), State::Proceeding);
        // E was set to 1 s in Trying; it fires at 1.5 s and is then reset to T2.
        assert_eq!(tx.poll_timeout(), Some(start + ms(1500)));
        assert_eq!(
            tx.handle_timeout(start + ms(1500)),
            Some(Timeout::Retransmit)
        );
        assert_eq!(tx.poll_timeout(), Some(start + ms(5500)));
        assert_eq!(
            tx.handle_timeout(start + ms(5500)),
            Some(Timeout::Retransmit)
        );
        assert_eq!(tx.poll_timeout(), Some(start + ms(9500)));
    }

    #[test]
    fn a_final_response_completes_absorbs_repeats_and_ends_after_t4() {
        let start = Instant::now();
        let mut tx = NonInviteClient::new(start, false, timers(), None);
        assert_eq!(tx.on_response(202, start + ms(40)), Disposition::Final);
        assert_eq!(tx.state(), State::Completed);
        assert_eq!(tx.on_response(202, start + ms(600)), Disposition::Absorbed);
        assert_eq!(tx.on_response(180, start + ms(700)), Disposition::Absorbed);
        // No retransmission after the final response; Timer K = T4.
        assert_eq!(tx.poll_timeout(), Some(start + ms(5040)));
        assert_eq!(tx.handle_timeout(start + ms(5039)), None);
        assert_eq!(tx.state(), State::Completed);
        assert_eq!(tx.handle_timeout(start + ms(5040)), None);
        assert_eq!(tx.state(), State::Terminated);
    }

    #[test]
    fn tcp_never_retransmits_and_completes_without_lingering() {
        let start = Instant::now();
        let mut tx = NonInviteClient::new(start, true, timers(), None);
        assert_eq!(tx.poll_timeout(), Some(start + ms(32_000)));
        assert_eq!(tx.handle_timeout(start + ms(31_999)), None);
        assert_eq!(tx.on_response(404, start + ms(31_999)), Disposition::Final);
        assert_eq!(tx.poll_timeout(), Some(start + ms(31_999)));
        tx.handle_timeout(start + ms(31_999));
        assert_eq!(tx.state(), State::Terminated);

        let mut tx = NonInviteClient::new(start, true, timers(), None);
        assert_eq!(
            run(&mut tx, start, Duration::from_secs(40)),
            [(32_000, Timeout::TimedOut)]
        );
    }

    #[test]
    fn an_earlier_deadline_caps_timer_f() {
        let start = Instant::now();
        let deadline = start + ms(2_000);
        let mut tx = NonInviteClient::new(start + ms(1_200), false, timers(), Some(deadline));
        assert_eq!(
            run(&mut tx, start, Duration::from_secs(40)),
            [(1_700, Timeout::Retransmit), (2_000, Timeout::TimedOut)]
        );
        // A later deadline does not stretch Timer F.
        let tx = NonInviteClient::new(start, true, timers(), Some(start + ms(90_000)));
        assert_eq!(tx.poll_timeout(), Some(start + ms(32_000)));
    }

    #[test]
    fn timer_f_wins_over_a_retransmission_due_at_the_same_time() {
        let start = Instant::now();
        let t = Timers {
            t1: Duration::from_millis(10),
            t2: Duration::from_millis(640),
            t4: Duration::from_millis(50),
        };
        // E: 10, 30, 70, 150, 310, 630; the deadline puts F at 630 too.
        let mut tx = NonInviteClient::new(start, false, t, Some(start + ms(630)));
        let got = run(&mut tx, start, Duration::from_secs(2));
        assert_eq!(got.len(), 6, "{got:?}");
        assert_eq!(got.last(), Some(&(630, Timeout::TimedOut)));
    }

    #[test]
    fn a_transport_error_terminates_and_later_responses_are_absorbed() {
        let start = Instant::now();
        let mut tx = NonInviteClient::new(start, false, timers(), None);
        tx.on_transport_error();
        assert_eq!(tx.state(), State::Terminated);
        assert_eq!(tx.poll_timeout(), None);
        assert_eq!(tx.handle_timeout(start + ms(60_000)), None);
        assert_eq!(tx.on_response(200, start + ms(10)), Disposition::Absorbed);
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }
}
