//! The node's own view of its etcd lease, on its monotonic clock (pure: every method
//! takes the time it reasons about, so tests drive it with made-up instants).
//!
//! etcd expires a lease `TTL` after the last keepalive it *received*. The node knows
//! only when it *sent* that keepalive, which is earlier, so `sent + TTL` is a lower
//! bound of the expiry in etcd (up to clock rate drift between the two machines). The
//! node treats its lease as usable only until `sent + TTL - margin`: the margin absorbs
//! the drift, the time between an ownership check and the acknowledgement it allows, and
//! a pipeline write still in flight (which is why writes time out under the margin).
//! Whatever etcd does later (a restart that refreshes every lease, a slow expiry loop)
//! only moves the real expiry later, never earlier.

use std::time::{Duration, Instant};

/// What the node may assume about its lease at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Certainly alive in etcd until at least `until` plus the margin; the node may act on it.
    Valid {
        /// The node's own deadline (`last keepalive sent + TTL - margin`).
        until: Instant,
    },
    /// The deadline passed without a renewal: the lease may still be alive in etcd, but the
    /// node must not rely on it. A later successful keepalive makes it valid again.
    Expiring,
    /// etcd answered that the lease does not exist (expired or revoked). Final.
    Lost,
}

impl LeaseState {
    /// Whether the node may acknowledge under this lease.
    pub fn is_valid(&self) -> bool {
        matches!(self, LeaseState::Valid { .. })
    }
}

/// The lease clock of one lease.
#[derive(Debug, Clone)]
pub struct LeaseClock {
    margin: Duration,
    /// `sent + granted TTL` of the most recent renewal: never moves backwards.
    lower_bound_expiry: Instant,
    lost: bool,
}

impl LeaseClock {
    /// A clock for a lease whose grant request was sent at `sent` and granted `ttl`.
    pub fn new(sent: Instant, ttl: Duration, margin: Duration) -> Self {
        LeaseClock {
            margin,
            lower_bound_expiry: sent + ttl,
            lost: false,
        }
    }

    /// A keepalive sent at `sent` was answered with a TTL of `ttl`. Answers to older
    /// keepalives arriving late never shorten the bound.
    pub fn renewed(&mut self, sent: Instant, ttl: Duration) {
        self.lower_bound_expiry = self.lower_bound_expiry.max(sent + ttl);
    }

    /// etcd said the lease is gone.
    pub fn lost(&mut self) {
        self.lost = true;
    }

    /// The node's own deadline: it acts on the lease only before this instant.
    pub fn deadline(&self) -> Instant {
        self.lower_bound_expiry
            .checked_sub(self.margin)
            .unwrap_or(self.lower_bound_expiry)
    }

    /// The lease's state at `now`.
    pub fn state_at(&self, now: Instant) -> LeaseState {
        if self.lost {
            LeaseState::Lost
        } else if now < self.deadline() {
            LeaseState::Valid {
                until: self.deadline(),
            }
        } else {
            LeaseState::Expiring
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn valid_until_ttl_minus_margin_after_the_last_send() {
        let t0 = Instant::now();
        let mut c = LeaseClock::new(t0, 5 * S, 2 * S);
        assert_eq!(c.state_at(t0), LeaseState::Valid { until: t0 + 3 * S });
        assert!(c.state_at(t0 + 3 * S - Duration::from_millis(1)).is_valid());
        assert_eq!(c.state_at(t0 + 3 * S), LeaseState::Expiring);
        // A renewal sent later moves the deadline; from its send time, not its answer.
        c.renewed(t0 + 2 * S, 5 * S);
        assert_eq!(c.deadline(), t0 + 5 * S);
        assert!(c.state_at(t0 + 4 * S).is_valid());
    }

    #[test]
    fn late_answers_never_shorten_and_expiring_recovers() {
        let t0 = Instant::now();
        let mut c = LeaseClock::new(t0, 5 * S, 2 * S);
        c.renewed(t0 + 2 * S, 5 * S);
        c.renewed(t0 + S, 5 * S);
        assert_eq!(c.deadline(), t0 + 5 * S);
        assert_eq!(c.state_at(t0 + 6 * S), LeaseState::Expiring);
        c.renewed(t0 + 6 * S, 5 * S);
        assert!(c.state_at(t0 + 6 * S).is_valid());
    }

    #[test]
    fn lost_is_final() {
        let t0 = Instant::now();
        let mut c = LeaseClock::new(t0, 5 * S, 2 * S);
        c.lost();
        c.renewed(t0 + S, 5 * S);
        assert_eq!(c.state_at(t0 + S), LeaseState::Lost);
        assert!(!c.state_at(t0).is_valid());
    }
}
