//! When to send a failed call again, and after how long: a pure policy,
//! decided from the error, whether repeating the call is safe, the attempt
//! number and the time spent. The client drives it; no I/O here.

use std::time::Duration;

use crate::error::Error;

/// Capped exponential backoff within a deadline.
///
/// Attempt `n` (0 for the first retry) waits `initial_backoff * 2^n`, at
/// most `max_backoff`, scaled by a jitter in `[0.5, 1.0)` so that callers a
/// restart failed together do not come back together. No retry starts after
/// `deadline` from the first send: the last error is returned instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The wait before the first retry (before jitter).
    pub initial_backoff: Duration,
    /// The longest wait between two attempts (before jitter).
    pub max_backoff: Duration,
    /// How long a call may take, retries included, before it fails.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    /// 25 ms doubling to 1 s, for 30 s: long enough to ride out a node
    /// restart or a migration's cutover.
    fn default() -> Self {
        RetryPolicy {
            initial_backoff: Duration::from_millis(25),
            max_backoff: Duration::from_secs(1),
            deadline: Duration::from_secs(30),
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Return the error.
    No,
    /// Send the call again after `delay`, fetching the shard map first when
    /// `refresh_map`.
    After {
        /// The wait before the next attempt.
        delay: Duration,
        /// The error said the routing was stale.
        refresh_map: bool,
    },
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn none() -> Self {
        RetryPolicy {
            deadline: Duration::ZERO,
            ..RetryPolicy::default()
        }
    }

    /// The wait before retry `attempt` (0-based), before jitter.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }

    /// Whether and when to retry after `error` on attempt `attempt`
    /// (0: the first send failed), `elapsed` after the first send.
    /// `repeatable`: the call reads only, or carries an idempotency key, so
    /// sending it twice cannot apply it twice. `jitter` is in `[0, 1)`.
    pub fn decide(
        &self,
        error: &Error,
        repeatable: bool,
        attempt: u32,
        elapsed: Duration,
        jitter: f64,
    ) -> Retry {
        if !error.is_retryable() || !(repeatable || error.never_sent()) {
            return Retry::No;
        }
        let delay = self
            .backoff(attempt)
            .mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
        if elapsed.saturating_add(delay) >= self.deadline {
            return Retry::No;
        }
        Retry::After {
            delay,
            refresh_map: error.is_stale_routing(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unavailable() -> Error {
        Error::Unavailable {
            code: "not_ready".into(),
            message: "floe is recovering".into(),
        }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(200),
            deadline: Duration::from_secs(1),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = policy();
        let waits: Vec<u64> = (0..8).map(|n| p.backoff(n).as_millis() as u64).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 200, 200, 200]);
        // No overflow however many attempts.
        assert_eq!(p.backoff(u32::MAX), Duration::from_millis(200));
    }

    #[test]
    fn jitter_scales_the_wait_between_half_and_all_of_it() {
        let p = policy();
        let delay = |jitter| match p.decide(&unavailable(), true, 2, Duration::ZERO, jitter) {
            Retry::After { delay, .. } => delay,
            Retry::No => panic!("should retry"),
        };
        assert_eq!(delay(0.0), Duration::from_millis(20));
        assert_eq!(delay(0.5), Duration::from_millis(30));
        assert!(delay(0.999) < Duration::from_millis(40));
    }

    #[test]
    fn retries_stop_at_the_deadline() {
        let p = policy();
        assert!(matches!(
            p.decide(&unavailable(), true, 9, Duration::from_millis(700), 0.0),
            Retry::After { .. }
        ));
        // 900 ms spent + a 100 ms wait reaches the 1 s deadline.
        assert_eq!(
            p.decide(&unavailable(), true, 9, Duration::from_millis(900), 0.0),
            Retry::No
        );
        assert_eq!(
            RetryPolicy::none().decide(&unavailable(), true, 0, Duration::ZERO, 0.0),
            Retry::No
        );
    }

    #[test]
    fn final_errors_are_never_retried() {
        let p = policy();
        let conflict = Error::VersionConflict {
            message: "expected 1, is 2".into(),
        };
        assert_eq!(p.decide(&conflict, true, 0, Duration::ZERO, 0.0), Retry::No);
    }

    #[test]
    fn a_call_that_is_not_repeatable_is_retried_only_if_it_never_left() {
        let p = policy();
        let url = "http://127.0.0.1:9".to_string();
        let reset = Error::Transport {
            url: url.clone(),
            message: "connection reset".into(),
        };
        let refused = Error::Connect {
            url,
            message: "connection refused".into(),
        };
        assert_eq!(p.decide(&reset, false, 0, Duration::ZERO, 0.0), Retry::No);
        assert_eq!(
            p.decide(&unavailable(), false, 0, Duration::ZERO, 0.0),
            Retry::No
        );
        assert!(matches!(
            p.decide(&refused, false, 0, Duration::ZERO, 0.0),
            Retry::After {
                refresh_map: false,
                ..
            }
        ));
        assert!(matches!(
            p.decide(&reset, true, 0, Duration::ZERO, 0.0),
            Retry::After { .. }
        ));
    }

    #[test]
    fn stale_routing_refreshes_the_map() {
        let stale = Error::StaleRouting {
            code: "stale_routing".into(),
            message: "routed under epoch 3, shard at 4".into(),
        };
        assert!(matches!(
            policy().decide(&stale, true, 0, Duration::ZERO, 0.0),
            Retry::After {
                refresh_map: true,
                ..
            }
        ));
    }
}
