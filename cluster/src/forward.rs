//! Node-to-node forwarding, the pure part: the cluster token, the headers a
//! forwarded call carries, who may send one, and which owner answers are
//! worth waiting out. The HTTP side is `floe serve`'s; nothing here does I/O.
//!
//! Every node accepts every call. A node that does not own a call's shard
//! sends it on to the owner with two headers: [`FORWARDED_BY`] (its node id)
//! and [`CLUSTER_TOKEN_HEADER`] (the cluster token every node of the cluster is
//! configured with). The owner serves a forwarded call only with the right
//! token, and never forwards it again: one hop at most, so two nodes whose
//! views of the grants disagree cannot bounce a call between them.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The header naming the node that forwarded a call.
pub const FORWARDED_BY: &str = "x-floe-forwarded-by";
/// The header carrying the cluster token on a forwarded call.
pub const CLUSTER_TOKEN_HEADER: &str = "x-floe-cluster-token";
/// The header on an answer a node passed back from the owner: the owner's node id.
pub const FORWARDED_TO: &str = "x-floe-forwarded-to";
/// The environment variable that supplies (and overrides) `cluster.token`.
pub const CLUSTER_TOKEN_ENV: &str = "FLOE_CLUSTER_TOKEN";
/// The shortest cluster token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// The secret every node of a cluster shares to authenticate forwarded calls.
/// `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClusterToken(String);

impl fmt::Debug for ClusterToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterToken(<redacted>)")
    }
}

impl ClusterToken {
    /// Wraps a token; [`ClusterToken::validate`] checks it.
    pub fn new(token: impl Into<String>) -> ClusterToken {
        ClusterToken(token.into())
    }

    /// The token itself, to send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Long enough and usable as an HTTP header value (visible ASCII).
    pub fn validate(&self) -> Result<()> {
        let reason = if self.0.len() < MIN_TOKEN_LEN {
            Some("must be at least 16 characters")
        } else if !self.0.bytes().all(|b| b.is_ascii_graphic()) {
            Some("may hold only visible ASCII characters (no spaces)")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidClusterToken { reason }),
            None => Ok(()),
        }
    }

    /// Whether `presented` is this token, compared in constant time (the time
    /// taken does not tell how much of it matched).
    pub fn matches(&self, presented: &[u8]) -> bool {
        let mine = self.0.as_bytes();
        mine.len() == presented.len()
            && mine
                .iter()
                .zip(presented)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// A call that arrived marked as forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    /// The node that forwarded it.
    pub by: String,
}

/// Why a call marked as forwarded is refused (401: it changes nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ForwardRefusal {
    /// This node is not in cluster mode: no node forwards to it.
    #[error("this node is not a cluster node and takes no forwarded calls")]
    NotClustered,
    /// No cluster token on the call.
    #[error("a forwarded call needs the {CLUSTER_TOKEN_HEADER} header")]
    MissingToken,
    /// A cluster token that is not this cluster's.
    #[error("the cluster token of the forwarded call is wrong")]
    WrongToken,
}

/// Checks the forwarding headers of an incoming call. `by` is the
/// [`FORWARDED_BY`] header, `token` the [`CLUSTER_TOKEN_HEADER`] header,
/// `configured` this node's token (`None`: not in cluster mode). `Ok(None)`:
/// not a forwarded call (a token alone proves nothing: it marks nothing).
pub fn check_forwarded(
    configured: Option<&ClusterToken>,
    by: Option<&str>,
    token: Option<&[u8]>,
) -> std::result::Result<Option<Forwarded>, ForwardRefusal> {
    let Some(by) = by else {
        return Ok(None);
    };
    let configured = configured.ok_or(ForwardRefusal::NotClustered)?;
    let token = token.ok_or(ForwardRefusal::MissingToken)?;
    if !configured.matches(token) {
        return Err(ForwardRefusal::WrongToken);
    }
    Ok(Some(Forwarded { by: by.to_owned() }))
}

/// Whether an owner's answer means "not now, try again" rather than a result
/// to pass back: it does not (or not yet, or no longer) serve the shard, it
/// is still recovering, or it is shutting down. Every other answer, errors
/// included, is the call's outcome.
pub fn is_retry_answer(status: u16, code: Option<&str>) -> bool {
    status == 503
        && matches!(
            code,
            Some("not_owner" | "stale_routing" | "not_ready" | "shutting_down")
        )
}

/// The pause before forwarding attempt `attempt + 1`: 20 ms doubling up to
/// 400 ms. A handover takes a lease TTL or a restore, so waits stay short
/// compared to it while not hammering a node that is taking a shard over.
pub fn backoff(attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX);
    Duration::from_millis(20)
        .saturating_mul(factor)
        .min(Duration::from_millis(400))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> ClusterToken {
        ClusterToken::new("0123456789abcdef-secret")
    }

    #[test]
    fn tokens_are_checked_and_never_printed() {
        token().validate().unwrap();
        for (bad, reason) in [
            ("short", "must be at least 16 characters"),
            (
                "0123456789 abcdef",
                "may hold only visible ASCII characters (no spaces)",
            ),
        ] {
            match ClusterToken::new(bad).validate() {
                Err(Error::InvalidClusterToken { reason: r }) => assert_eq!(r, reason),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        let shown = format!("{:?}", token());
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[test]
    fn only_the_right_token_admits_a_forwarded_call() {
        let t = token();
        assert_eq!(check_forwarded(Some(&t), None, None), Ok(None));
        assert_eq!(
            check_forwarded(Some(&t), None, Some(b"anything")),
            Ok(None),
            "a token without the forwarded mark is not a forwarded call"
        );
        assert_eq!(
            check_forwarded(Some(&t), Some("n2"), Some(t.expose().as_bytes())),
            Ok(Some(Forwarded { by: "n2".into() }))
        );
        assert_eq!(
            check_forwarded(Some(&t), Some("n2"), None),
            Err(ForwardRefusal::MissingToken)
        );
        for forged in [
            &b"0123456789abcdef-secreT"[..],
            b"",
            b"0123456789abcdef-secret!",
        ] {
            assert_eq!(
                check_forwarded(Some(&t), Some("n2"), Some(forged)),
                Err(ForwardRefusal::WrongToken)
            );
        }
        assert_eq!(
            check_forwarded(None, Some("n2"), Some(t.expose().as_bytes())),
            Err(ForwardRefusal::NotClustered)
        );
    }

    #[test]
    fn only_not_now_answers_are_waited_out() {
        for code in ["not_owner", "stale_routing", "not_ready", "shutting_down"] {
            assert!(is_retry_answer(503, Some(code)), "{code}");
        }
        assert!(!is_retry_answer(503, Some("pipeline_unavailable")));
        assert!(!is_retry_answer(409, Some("version_conflict")));
        assert!(!is_retry_answer(404, Some("not_found")));
        assert!(!is_retry_answer(503, None));
    }

    #[test]
    fn backoff_doubles_to_a_cap() {
        let waits: Vec<u64> = (0..7).map(|a| backoff(a).as_millis() as u64).collect();
        assert_eq!(waits, [20, 40, 80, 160, 320, 400, 400]);
        assert_eq!(backoff(u32::MAX), Duration::from_millis(400));
    }
}
